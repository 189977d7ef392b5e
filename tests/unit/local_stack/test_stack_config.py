"""The local stack's command line, state folder and demo shows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.local_stack.__main__ import parse_args
from tests.local_stack.config import default_state_dir
from tests.local_stack.seed import demo_show_lines, write_demo_shows
from tests.local_stack.stack import STATE_MARKER, prepare_state_dir
from tests.support.template import REPO_ROOT


def test_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "3100")
    monkeypatch.setenv("LOCAL_STREAM_CHAOS", "0.3")
    monkeypatch.setenv("LOCAL_STREAM_CHAOS_SEED", "9")
    config = parse_args([])
    assert (config.port, config.chaos, config.chaos_seed, config.seed) == (3100, 0.3, 9, True)
    assert config.state == REPO_ROOT / ".local" / "stack-3100"
    assert default_state_dir(3100) == config.state


def test_options_override_and_are_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LOCAL_STREAM_CHAOS", raising=False)
    monkeypatch.delenv("LOCAL_STREAM_CHAOS_SEED", raising=False)
    config = parse_args(
        ["--port", "3200", "--no-seed", "--state-dir", str(tmp_path), "--parameter-overrides", "A=1 B=x=y"]
    )
    assert (config.port, config.seed, config.chaos, config.state) == (3200, False, 0.0, tmp_path.resolve())
    assert config.parameter_overrides == {"A": "1", "B": "x=y"}
    for bad in (
        ["--chaos", "1.5"],
        ["--parameter-overrides", "novalue"],
        ["--data", str(tmp_path / "none.jsonl")],
    ):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_the_state_folder_is_wiped_but_a_foreign_folder_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "stack"
    prepare_state_dir(state)
    (state / "leftover.txt").write_text("old run")
    prepare_state_dir(state)
    assert sorted(p.name for p in state.iterdir()) == sorted([STATE_MARKER, "logs"])
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(RuntimeError, match="not made by the local stack"):
        prepare_state_dir(foreign)
    assert (foreign / "thesis.tex").exists()


def test_demo_shows_are_upcoming_relative_to_today(tmp_path: Path) -> None:
    today = dt.date(2030, 1, 31)
    lines = demo_show_lines(today)
    assert len(lines) >= 3
    assert all(dt.date.fromisoformat(line["date"]) > today for line in lines)
    assert all(line["sets"] == [] and line["artist"] == "Grateful Dead" for line in lines)
    assert len({line["show_id"] for line in lines}) == len(lines)
    path = write_demo_shows(tmp_path, today)
    assert path.read_text().count("\n") == len(lines)
