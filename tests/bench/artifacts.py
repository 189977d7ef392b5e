"""Inspection of build artifacts (layer and function folders): bytecode, native code, sizes,
installed distributions. Standard library only; shared by the build check, the size report and
the cold-start replica.

A ``.pyc`` header (PEP 552) is 16 bytes: the interpreter's magic number, a flags word (bit 0:
hash-based, bit 1: check the source), then either the source mtime and size or its hash. Only
``unchecked-hash`` files stay valid whatever happens to mtimes on the way to Lambda.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

MIB = 1024 * 1024

# ELF e_machine values of Lambda's two instruction sets (System V ABI, "Machine" field).
_ELF_MACHINES = {62: "x86_64", 183: "aarch64"}
# Lambda's architecture names -> the machine names above.
LAMBDA_ARCHITECTURES = {"arm64": "aarch64", "x86_64": "x86_64"}


class Invalidation(StrEnum):
    """How the import system decides a ``.pyc`` is current (``py_compile.PycInvalidationMode``)."""

    TIMESTAMP = "timestamp"
    CHECKED_HASH = "checked-hash"
    UNCHECKED_HASH = "unchecked-hash"


@dataclass(frozen=True, slots=True)
class PycHeader:
    """The first 16 bytes of a ``.pyc`` file, decoded."""

    magic: bytes
    invalidation: Invalidation

    @property
    def matches_this_interpreter(self) -> bool:
        """True when the running interpreter (the benchmark's and the build's 3.12) can load it."""
        return self.magic == importlib.util.MAGIC_NUMBER


def read_pyc_header(path: Path) -> PycHeader:
    """Decode the header of the ``.pyc`` at ``path``; ``ValueError`` when it is too short."""
    with path.open("rb") as stream:
        head = stream.read(16)
    if len(head) < 16:
        raise ValueError(f"{path}: not a .pyc file (header of {len(head)} bytes)")
    return parse_pyc_header(head)


def parse_pyc_header(head: bytes) -> PycHeader:
    """Decode the 16-byte header of a ``.pyc`` file (magic number and invalidation mode)."""
    (flags,) = struct.unpack("<I", head[4:8])
    if not flags & 0b01:
        mode = Invalidation.TIMESTAMP
    elif flags & 0b10:
        mode = Invalidation.CHECKED_HASH
    else:
        mode = Invalidation.UNCHECKED_HASH
    return PycHeader(magic=head[:4], invalidation=mode)


def elf_machine(path: Path) -> str | None:
    """The instruction set of an ELF file (``aarch64``, ``x86_64``, or ``elf-<n>``); None if not ELF."""
    with path.open("rb") as stream:
        head = stream.read(20)
    return parse_elf_machine(head)


def parse_elf_machine(head: bytes) -> str | None:
    """The ``e_machine`` field of an ELF header (its first 20 bytes), or None if not ELF."""
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    byte_order = "<" if head[5] == 1 else ">"  # EI_DATA: 1 little-endian, 2 big-endian
    (machine,) = struct.unpack(f"{byte_order}H", head[18:20])
    return _ELF_MACHINES.get(machine, f"elf-{machine}")


def iter_files(root: Path) -> Iterator[Path]:
    """Every regular file under ``root`` (symbolic links are not followed), in a stable order."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder, name)
            if path.is_file() and not path.is_symlink():
                yield path


def tree_size(root: Path) -> int:
    """Bytes of every file under ``root``: what Lambda counts against the unzipped limit."""
    return sum(path.stat().st_size for path in iter_files(root))


def cached_pyc(source: Path) -> Path:
    """Where this interpreter (CPython 3.12) looks for the bytecode of ``source``."""
    return Path(importlib.util.cache_from_source(str(source)))


def bytecode_policy(root: Path) -> Invalidation | None:
    """How the ``.py`` files under ``root`` ship: the invalidation mode of most of their ``.pyc``
    files, or None when most have none (the interpreter then compiles them at every cold start)."""
    modes: Counter[Invalidation | None] = Counter()
    for path in iter_files(root):
        if path.suffix != ".py":
            continue
        pyc = cached_pyc(path)
        modes[read_pyc_header(pyc).invalidation if pyc.is_file() else None] += 1
    if not modes:
        return None
    return modes.most_common(1)[0][0]


@dataclass(frozen=True, slots=True)
class Distribution:
    """One installed distribution (a ``*.dist-info`` folder) inside an artifact."""

    name: str
    version: str
    dist_info: Path
    tags: tuple[str, ...]

    @property
    def is_pure(self) -> bool:
        """True when every wheel tag is platform-independent (``py3-none-any``)."""
        return bool(self.tags) and all(tag.endswith("-any") for tag in self.tags)

    def files(self) -> list[Path]:
        """The files its RECORD lists, as paths (the RECORD is relative to the folder holding it)."""
        site = self.dist_info.parent
        record = self.dist_info / "RECORD"
        if not record.is_file():
            return []
        with record.open(newline="", encoding="utf-8") as stream:
            return [(site / row[0]).resolve() for row in csv.reader(stream) if row and row[0]]


def _header_fields(path: Path) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    if not path.is_file():
        return fields
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            break  # the end of the headers (METADATA's body follows)
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), []).append(value.strip())
    return fields


def distributions(site: Path) -> list[Distribution]:
    """Every distribution installed directly in ``site`` (a folder on ``sys.path``)."""
    found: list[Distribution] = []
    for dist_info in sorted(site.glob("*.dist-info")):
        meta = _header_fields(dist_info / "METADATA")
        wheel = _header_fields(dist_info / "WHEEL")
        found.append(
            Distribution(
                name=(meta.get("Name") or [dist_info.name.split("-")[0]])[0],
                version=(meta.get("Version") or [dist_info.name.removesuffix(".dist-info").split("-")[-1]])[
                    0
                ],
                dist_info=dist_info,
                tags=tuple(wheel.get("Tag") or ()),
            )
        )
    return found


def import_roots(artifact: Path, *, is_layer: bool) -> list[Path]:
    """The folders of an artifact that Lambda puts on ``sys.path``, in Lambda's order.

    A function's code is ``/var/task``; a Python layer contributes
    ``/opt/python/lib/python3.12/site-packages`` then ``/opt/python``.
    """
    if not is_layer:
        return [artifact]
    candidates = [artifact / "python" / "lib" / "python3.12" / "site-packages", artifact / "python"]
    return [path for path in candidates if path.is_dir()]
