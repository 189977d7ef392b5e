# Shared by the Makefiles that `sam build` runs for the layers and functions (BuildMethod:
# makefile in template.yaml). SAM runs `make --makefile <the original Makefile> build-<LogicalId>`
# in a scratch copy of the code folder, with ARTIFACTS_DIR set to the artifact's output folder,
# so a Makefile includes this file by a path relative to its own location:
#     include $(dir $(lastword $(MAKEFILE_LIST)))<relative path>/lambda-build.mk
#
# Why not SAM's python3.12 builder: its output has no bytecode, and /opt and /var/task are
# read-only in Lambda, so every cold start compiled every module again (imports 2-3x slower,
# docs/TOOLING-NOTES). Here the bytecode is compiled once, for CPython 3.12 (the runtime's magic
# number), with hash-based invalidation that never looks at mtimes ("unchecked-hash"): zipping
# and Lambda's extraction change mtimes, which would make timestamp-based .pyc files stale.
# `make build` puts python3.12 on PATH and then checks every artifact (tests/bench/build_check.py).

PYTHON ?= python3.12
# Lambda's instruction set, as ELF names it (template: Architectures [arm64]; x86_64 otherwise).
LAMBDA_ARCH ?= aarch64
# Lambda python3.12 runs on Amazon Linux 2023 (glibc 2.34): any manylinux wheel up to 2_34
# runs there. pip matches the platform tags literally, so list them all (2_17 is manylinux2014).
GLIBC_MINORS := 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34
PLATFORMS := --platform manylinux2014_$(LAMBDA_ARCH) \
	$(foreach minor,$(GLIBC_MINORS),--platform manylinux_2_$(minor)_$(LAMBDA_ARCH))
# The runtime ships the AWS SDK (the requirements leave it out on purpose); aws-xray-sdk still
# pulls botocore in. A second botocore in /opt/python would shadow the runtime's and pair it with
# the runtime's boto3 at another version, and takes tens of MB of the 250 MB limit: drop it.
RUNTIME_PROVIDED := boto3 botocore s3transfer

# Fails early outside `sam build`, or with a Python whose bytecode the runtime would not load.
define check_build_environment
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set: run this through sam build (make build)"; exit 2; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' \
		|| { echo "$(PYTHON) is not Python 3.12: the bytecode would not load in the python3.12 runtime"; exit 2; }
endef

# $(call install_requirements,SITE): requirements.txt's wheels for Lambda's platform into SITE.
define install_requirements
	rm -rf "$(1)"
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-compile \
		--implementation cp --python-version 3.12 --only-binary=:all: $(PLATFORMS) \
		--target "$(1)" -r requirements.txt
	$(PYTHON) -c "$$STRIP_RUNTIME_PROVIDED" "$(1)" $(RUNTIME_PROVIDED)
	rm -rf "$(1)/bin"
endef

# $(call compile_bytecode,DIR,PATH_IN_LAMBDA): drop caches and test folders, then compile DIR as
# it will be seen in Lambda (so tracebacks name /opt/python/... or /var/task/...).
define compile_bytecode
	find "$(1)" -depth -type d \( -name __pycache__ -o -name tests \) -exec rm -rf {} +
	$(PYTHON) -m compileall -q -f -j 0 --invalidation-mode unchecked-hash -s "$(1)" -p $(2) "$(1)"
endef

# Removes the named distributions (files listed in their RECORD, then the dist-info) if present:
# those the Lambda runtime provides, or (MlLayer) numpy, which the NumpyLayer provides.
define STRIP_RUNTIME_PROVIDED
import csv, pathlib, shutil, sys
site = pathlib.Path(sys.argv[1])
wanted = {n.lower().replace("-", "_") for n in sys.argv[2:]}
for info in site.glob("*.dist-info"):
    if info.name.split("-")[0].lower() not in wanted:
        continue
    with (info / "RECORD").open(newline="") as record:
        files = [(site / row[0]).resolve() for row in csv.reader(record) if row]
    for path in files:
        path.unlink(missing_ok=True)
    shutil.rmtree(info, ignore_errors=True)
    # Folders left empty (a shared namespace folder keeps the other distributions' files).
    for folder in sorted({p.parent for p in files}, key=lambda p: len(p.parts), reverse=True):
        while folder != site.resolve() and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    print("removed (provided by the runtime or another layer):", info.name)
endef
export STRIP_RUNTIME_PROVIDED
