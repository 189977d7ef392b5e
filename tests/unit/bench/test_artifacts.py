"""Bytecode headers, ELF machines, distributions and sizes, on small files made here."""

from __future__ import annotations

import py_compile
import struct
from pathlib import Path

import pytest

from tests.bench.artifacts import (
    Invalidation,
    bytecode_policy,
    cached_pyc,
    distributions,
    import_roots,
    parse_elf_machine,
    read_pyc_header,
    tree_size,
)
from tests.bench.build_check import check_artifact


def _module(folder: Path, name: str, mode: Invalidation | None) -> Path:
    path = folder / f"{name}.py"
    path.write_text("VALUE = 1\n", encoding="utf-8")
    if mode is not None:
        py_compile.compile(
            str(path), doraise=True, invalidation_mode=py_compile.PycInvalidationMode[mode.name]
        )
    return path


def _elf(machine: int, *, little_endian: bool = True) -> bytes:
    order = "<" if little_endian else ">"
    ident = b"\x7fELF" + bytes([2, 1 if little_endian else 2, 1]) + bytes(9)
    return ident + struct.pack(f"{order}HH", 3, machine) + bytes(44)


@pytest.mark.parametrize("mode", list(Invalidation))
def test_pyc_header_says_how_it_is_invalidated(tmp_path: Path, mode: Invalidation) -> None:
    source = _module(tmp_path, "mod", mode)

    header = read_pyc_header(cached_pyc(source))

    assert header.invalidation is mode
    assert header.matches_this_interpreter


def test_a_truncated_pyc_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pyc"
    broken.write_bytes(b"\x00" * 8)

    with pytest.raises(ValueError, match=r"not a \.pyc"):
        read_pyc_header(broken)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (_elf(183), "aarch64"),
        (_elf(62), "x86_64"),
        (_elf(62, little_endian=False), "x86_64"),
        (_elf(40), "elf-40"),
        (b"#!/bin/sh\n" + bytes(20), None),
        (b"\x7fELF", None),
    ],
)
def test_elf_machine(head: bytes, expected: str | None) -> None:
    assert parse_elf_machine(head[:20]) == expected


def test_bytecode_policy_is_what_most_files_ship(tmp_path: Path) -> None:
    _module(tmp_path, "a", Invalidation.UNCHECKED_HASH)
    _module(tmp_path, "b", Invalidation.UNCHECKED_HASH)
    _module(tmp_path, "c", None)

    assert bytecode_policy(tmp_path) is Invalidation.UNCHECKED_HASH


def test_no_bytecode_means_no_policy(tmp_path: Path) -> None:
    _module(tmp_path, "a", None)

    assert bytecode_policy(tmp_path) is None
    assert bytecode_policy(tmp_path / "missing") is None


def test_distributions_read_name_version_tags_and_record(tmp_path: Path) -> None:
    info = tmp_path / "pydantic_core-2.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pydantic_core\nVersion: 2.0.0\n\nbody: x\n")
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nTag: cp312-cp312-manylinux_2_17_aarch64\n")
    (info / "RECORD").write_text(
        "pydantic_core/__init__.py,sha256=x,1\npydantic_core-2.0.0.dist-info/RECORD,,\n"
    )
    pure = tmp_path / "six-1.0.dist-info"
    pure.mkdir()
    (pure / "WHEEL").write_text("Tag: py2-none-any\nTag: py3-none-any\n")

    native, six = distributions(tmp_path)

    assert (native.name, native.version, native.is_pure) == ("pydantic_core", "2.0.0", False)
    assert native.files()[0] == (tmp_path / "pydantic_core" / "__init__.py").resolve()
    assert (six.name, six.version, six.is_pure, six.files()) == ("six", "1.0", True, [])


def test_tree_size_counts_file_bytes(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 5)

    assert tree_size(tmp_path) == 15


def test_layer_import_roots_in_lambda_order(tmp_path: Path) -> None:
    site = tmp_path / "python" / "lib" / "python3.12" / "site-packages"
    site.mkdir(parents=True)

    assert import_roots(tmp_path, is_layer=True) == [site, tmp_path / "python"]
    assert import_roots(tmp_path, is_layer=False) == [tmp_path]


def test_build_check_accepts_unchecked_hash_and_the_right_machine(tmp_path: Path) -> None:
    _module(tmp_path, "app", Invalidation.UNCHECKED_HASH)
    (tmp_path / "native.so").write_bytes(_elf(183))

    report = check_artifact("Fn", tmp_path, "aarch64")

    assert (report.py_files, report.native_files, report.problems) == (1, 1, [])


def test_build_check_names_missing_or_stale_bytecode_and_foreign_code(tmp_path: Path) -> None:
    _module(tmp_path, "plain", None)
    _module(tmp_path, "stamped", Invalidation.TIMESTAMP)
    (tmp_path / "native.cpython-312-x86_64-linux-gnu.so").write_bytes(_elf(62))

    problems = check_artifact("Fn", tmp_path, "aarch64").problems

    assert len(problems) == 3
    assert any(p.startswith("plain.py: no ") for p in problems)
    assert any("stamped.py: bytecode is timestamp" in p for p in problems)
    assert any("native code for x86_64, not aarch64" in p for p in problems)


def test_build_check_skips_bytecode_of_source_only_layers_but_not_their_native_code(tmp_path: Path) -> None:
    _module(tmp_path, "plain", None)
    (tmp_path / "native.cpython-312-x86_64-linux-gnu.so").write_bytes(_elf(62))

    report = check_artifact("MlLayer", tmp_path, "aarch64")

    assert report.bytecode is False
    assert report.problems == ["native.cpython-312-x86_64-linux-gnu.so: native code for x86_64, not aarch64"]
