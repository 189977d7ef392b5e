"""A local replica of what ``sam build`` ships, runnable on this machine (x86_64), for the
cold-start benchmark.

Lambda runs the arm64 build; this machine cannot. The replica is the built artifacts copied
byte for byte (same sources, same bytecode or lack of it), except the distributions with native
code (pydantic-core, cryptography, ...), which are swapped for the same versions' wheels for this
machine and, if the artifact ships bytecode, compiled the way the artifact's other files are.
So the replica imports what Lambda imports, with the same bytecode policy.

The runtime's own packages (boto3 and its dependencies, preinstalled in Lambda's python3.12
runtime with their bytecode) are stood in for by the development environment's copies, compiled.

Layout under ``.build/replica/``: one folder per function and layer (named by logical id), plus
``_runtime`` (the runtime's packages) and ``_floor`` (the benchmark's floor function). Folders are
rebuilt only when their source changed (a fingerprint of the artifact's content).
"""

from __future__ import annotations

import compileall
import hashlib
import importlib.metadata
import platform
import py_compile
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.bench.artifacts import (
    Distribution,
    Invalidation,
    bytecode_policy,
    cached_pyc,
    distributions,
    elf_machine,
    import_roots,
    iter_files,
)
from tests.bench.built import Build, FunctionArtifact

REPLICA_DIR = Path(".build") / "replica"
FLOOR_SOURCE = Path(__file__).with_name("floor_app.py")
# What Lambda's python3.12 runtime preinstalls (outside /opt and /var/task).
RUNTIME_DISTRIBUTIONS = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3")
PIP_TIMEOUT_SECONDS = 600
_FINGERPRINT = ".replica-fingerprint"

Log = Callable[[str], None]


class ReplicaError(RuntimeError):
    """The replica cannot be made faithful (a wheel is missing for this machine, foreign code...)."""


@dataclass(frozen=True)
class Replica:
    """Where each replicated artifact lives, and the ``sys.path`` Lambda would give a function."""

    root: Path
    code: dict[str, Path]
    layers: dict[str, Path]
    runtime: Path
    floor: Path

    def sys_path(self, code: Path, layer_ids: Sequence[str]) -> list[Path]:
        """``/var/task``, then ``/opt/python/lib/python3.12/site-packages`` and ``/opt/python``
        (Lambda extracts the layers in order into one ``/opt``: a later layer's file wins), then
        the runtime's packages."""
        layers = [self.layers[layer_id] for layer_id in reversed(layer_ids)]
        site_packages = [
            p for layer in layers for p in import_roots(layer, is_layer=True) if p.name == "site-packages"
        ]
        python = [p for layer in layers for p in import_roots(layer, is_layer=True) if p.name == "python"]
        return [code, *site_packages, *python, self.runtime]


def host_machine() -> str:
    """This machine's instruction set, named as ELF headers name it (``x86_64``, ``aarch64``)."""
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def fingerprint(root: Path, *extra: str) -> str:
    """A digest of every file's path and content under ``root`` (and ``extra`` strings)."""
    digest = hashlib.sha256()
    for item in extra:
        digest.update(item.encode() + b"\0")
    for path in iter_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with path.open("rb") as stream:
            digest.update(hashlib.file_digest(stream, "sha256").digest())
    return digest.hexdigest()


def _up_to_date(folder: Path, print_: str) -> bool:
    marker = folder / _FINGERPRINT
    return marker.is_file() and marker.read_text(encoding="utf-8") == print_


def _mark(folder: Path, print_: str) -> None:
    (folder / _FINGERPRINT).write_text(print_, encoding="utf-8")


def _code_version() -> str:
    """Replicas made by another version of this module are rebuilt."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def replicate_artifact(source: Path, dest: Path, *, is_layer: bool, log: Log) -> None:
    """Copy the artifact ``source`` to ``dest`` and swap its native distributions for this
    machine's wheels (same versions, same bytecode policy). No-op when ``dest`` is current."""
    print_ = fingerprint(source, _code_version(), host_machine(), sys.version)
    if _up_to_date(dest, print_):
        return
    log(f"replica: {source} -> {dest}")
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, symlinks=True)
    policy = bytecode_policy(dest)
    for site in import_roots(dest, is_layer=is_layer):
        for dist in distributions(site):
            if not dist.is_pure:
                _swap_distribution(dist, site, policy, log)
    foreign = [p for p in iter_files(dest) if elf_machine(p) not in (None, host_machine())]
    if foreign:
        raise ReplicaError(
            f"{dest}: native files of no installed distribution, for another machine: {foreign[:3]}"
        )
    _mark(dest, print_)


def _remove_files(files: Iterable[Path], site: Path) -> None:
    """Delete ``files`` (and their bytecode), then the folders left empty (up to ``site``)."""
    folders: set[Path] = set()
    for path in files:
        if path.suffix == ".py":
            cached_pyc(path).unlink(missing_ok=True)
            folders.add(cached_pyc(path).parent)
        path.unlink(missing_ok=True)
        folders.add(path.parent)
    stop = site.resolve()
    for deepest_first in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        folder = deepest_first
        while folder != stop and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent


def _swap_distribution(dist: Distribution, site: Path, policy: Invalidation | None, log: Log) -> None:
    log(f"replica:   {dist.name}=={dist.version}: the wheel for {host_machine()}")
    _remove_files(dist.files(), site)
    shutil.rmtree(dist.dist_info, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="replica-wheel-") as tmp:
        command = [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--no-compile", "--only-binary=:all:", "--target", tmp, f"{dist.name}=={dist.version}",
        ]  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS, check=False
        )
        if done.returncode != 0:
            raise ReplicaError(
                f"no {dist.name}=={dist.version} wheel for this machine:\n{done.stderr[-2000:]}"
            )
        for entry in Path(tmp).iterdir():
            if entry.name == "bin":
                continue  # console scripts: never on sys.path
            target = site / entry.name
            if entry.is_dir():
                shutil.copytree(entry, target, dirs_exist_ok=True)
            else:
                shutil.copy2(entry, target)
    (swapped,) = [d for d in distributions(site) if _same_name(d.name, dist.name)]
    if policy is not None:
        for path in swapped.files():
            if path.suffix == ".py":
                _compile(path, policy)


def _same_name(left: str, right: str) -> bool:
    def norm(name: str) -> str:
        return name.lower().replace("-", "_").replace(".", "_")

    return norm(left) == norm(right)


def _compile(path: Path, policy: Invalidation) -> None:
    py_compile.compile(
        str(path),
        cfile=str(cached_pyc(path)),
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode[policy.name],
    )


def replicate_runtime(dest: Path, log: Log) -> None:
    """The runtime's preinstalled packages, copied from this environment and compiled (the
    runtime ships their bytecode). ``ReplicaError`` when one is not installed here."""
    versions = []
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            versions.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError as exc:
            raise ReplicaError(f"{name} is not installed in {sys.prefix}: run `make venv`") from exc
    print_ = hashlib.sha256("\n".join([*versions, _code_version(), sys.version]).encode()).hexdigest()
    if _up_to_date(dest, print_):
        return
    log(f"replica: the runtime's packages ({', '.join(versions)}) -> {dest}")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in RUNTIME_DISTRIBUTIONS:
        dist = importlib.metadata.distribution(name)
        for file in dist.files or ():
            relative = Path(str(file))
            if ".." in relative.parts or "__pycache__" in relative.parts or relative.suffix == ".pyc":
                continue  # console scripts outside site-packages; bytecode is compiled below
            source = Path(str(dist.locate_file(file)))
            if source.is_file():
                (dest / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest / relative)
    if not compileall.compile_dir(
        str(dest), quiet=1, workers=0, ddir="/var/lang/lib/python3.12/site-packages"
    ):
        raise ReplicaError(f"{dest}: the runtime's packages do not compile")
    _mark(dest, print_)


def replicate_floor(dest: Path, policy: Invalidation | None) -> None:
    """The floor function (``tests/bench/floor_app.py`` as ``app.py``), compiled like the
    functions' own code."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    app = dest / "app.py"
    shutil.copy2(FLOOR_SOURCE, app)
    if policy is not None:
        _compile(app, policy)


def ensure_replica(build: Build, functions: Sequence[FunctionArtifact], root: Path, log: Log) -> Replica:
    """Make (or reuse) the replica of ``functions``, their layers and the runtime under ``root``."""
    code: dict[str, Path] = {}
    layers: dict[str, Path] = {}
    for function in functions:
        code[function.logical_id] = root / function.logical_id
        replicate_artifact(function.path, code[function.logical_id], is_layer=False, log=log)
        for layer in function.layers:
            if layer.logical_id not in layers:
                layers[layer.logical_id] = root / layer.logical_id
                replicate_artifact(layer.path, layers[layer.logical_id], is_layer=True, log=log)
    runtime = root / "_runtime"
    replicate_runtime(runtime, log)
    floor = root / "_floor"
    policy = bytecode_policy(build.functions[0].path) if build.functions else None
    replicate_floor(floor, policy)
    return Replica(root=root, code=code, layers=layers, runtime=runtime, floor=floor)
