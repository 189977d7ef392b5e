"""Check what ``sam build`` produced before anything ships it (``make build`` runs this).

For every function and layer of ``.aws-sam/build/template.yaml``:

- every ``.py`` file has bytecode for this interpreter's version (CPython 3.12, the runtime's)
  compiled ``unchecked-hash``, so it stays valid after zipping and extraction (Lambda's ``/opt``
  and ``/var/task`` are read-only: bytecode that is missing or stale is recompiled at every cold
  start);
- every native library (ELF file) is built for the function's or layer's architecture (arm64
  wheels for pydantic-core, cryptography, ...), since an x86_64 wheel would fail at import.

Artifacts in ``SOURCE_ONLY`` ship without bytecode on purpose (the reason is beside each); their
native code is still checked.

Prints one JSON line per artifact; exits 1 and names the first offending files otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.artifacts import (
    Invalidation,
    cached_pyc,
    elf_machine,
    iter_files,
    read_pyc_header,
)
from tests.bench.built import BUILD_DIR, load_build

_SHOWN_PROBLEMS = 10

# Artifacts shipped as source on purpose, with the reason (see their Makefiles).
SOURCE_ONLY = {
    "MlLayer": "scikit-learn and scipy's bytecode would put the ModelTrainer over Lambda's 250 MB; "
    "it runs on a schedule, so compiling at cold start is harmless (layers/ml/Makefile)",
}


@dataclass
class ArtifactReport:
    """The findings for one artifact folder."""

    name: str
    architecture: str
    bytecode: bool = True
    py_files: int = 0
    native_files: int = 0
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "artifact": self.name,
            "architecture": self.architecture,
            "bytecode": self.bytecode,
            "py_files": self.py_files,
            "native_files": self.native_files,
            "problems": len(self.problems),
        }


def check_artifact(name: str, root: Path, architecture: str) -> ArtifactReport:
    """Findings for the artifact folder ``root``, expected to run on ``architecture`` (aarch64...)."""
    report = ArtifactReport(name=name, architecture=architecture, bytecode=name not in SOURCE_ONLY)
    for path in iter_files(root):
        relative = path.relative_to(root)
        if path.suffix == ".py":
            report.py_files += 1
            if not report.bytecode:
                continue
            pyc = cached_pyc(path)
            if not pyc.is_file():
                report.problems.append(f"{relative}: no {pyc.name}")
                continue
            header = read_pyc_header(pyc)
            if not header.matches_this_interpreter:
                report.problems.append(f"{relative}: bytecode is for another Python version")
            elif header.invalidation is not Invalidation.UNCHECKED_HASH:
                report.problems.append(f"{relative}: bytecode is {header.invalidation}, not unchecked-hash")
        elif path.suffix in (".so", "") or ".so." in path.name:
            machine = elf_machine(path)
            if machine is None:
                continue
            report.native_files += 1
            if machine != architecture:
                report.problems.append(f"{relative}: native code for {machine}, not {architecture}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Check every artifact of the build; 0 when all pass."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--build-dir", type=Path, default=BUILD_DIR)
    args = parser.parse_args(argv)
    if sys.version_info[:2] != (3, 12):
        print("run this with Python 3.12: it checks bytecode for the python3.12 runtime", file=sys.stderr)
        return 2
    build = load_build(args.build_dir)
    targets = [(f.logical_id, f.path, f.architecture) for f in build.functions]
    targets += [(layer.logical_id, layer.path, layer.architecture) for layer in build.layers]
    failed = False
    for name, root, architecture in targets:
        report = check_artifact(name, root, architecture)
        print(json.dumps(report.as_json()))
        for problem in report.problems[:_SHOWN_PROBLEMS]:
            print(f"  {name}: {problem}", file=sys.stderr)
        if report.problems:
            failed = True
            hidden = len(report.problems) - _SHOWN_PROBLEMS
            if hidden > 0:
                print(f"  {name}: ... and {hidden} more", file=sys.stderr)
    if failed:
        print(
            "the build does not ship valid bytecode and native code for Lambda: build every function and "
            "layer with its Makefile (template.yaml Metadata: BuildMethod: makefile)",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
