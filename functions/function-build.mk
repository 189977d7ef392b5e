# Build of one function's own code (template.yaml: BuildMethod: makefile), included by the
# Makefile in each functions/<name>/ folder. The target is build-<LogicalId>; SAM runs it in a
# scratch copy of the folder with ARTIFACTS_DIR set to the function's output (Lambda's
# /var/task). Dependencies live in the layers, not here. Bytecode as for the layers.
include $(dir $(lastword $(MAKEFILE_LIST)))../layers/lambda-build.mk

build-%:
	$(check_build_environment)
	$(PYTHON) -c 'import shutil, sys; shutil.copytree(".", sys.argv[1], dirs_exist_ok=True, ignore=shutil.ignore_patterns("Makefile", "__pycache__", "*.pyc", "tests"))' "$(ARTIFACTS_DIR)"
	$(call compile_bytecode,$(ARTIFACTS_DIR),/var/task)
