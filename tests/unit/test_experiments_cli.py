"""python -m mysetlist.experiments.cli: JSON in, JSON out, exit 2 and a message for invalid input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mysetlist.experiments.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = {
    "metric": "proportion",
    "method": "frequentist",
    "relative": True,
    "alpha": 0.05,
    "weights": [50, 50],
    "variants": [
        {"name": "control", "n": 5_000, "sum": 400, "sum_squares": 400},
        {"name": "treatment", "n": 5_020, "sum": 470, "sum_squares": 470},
    ],
}


def _run(text: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    status = main(io.StringIO(text), stdout, stderr)
    return status, stdout.getvalue(), stderr.getvalue()


def test_the_module_runs_as_a_program() -> None:
    env = os.environ | {"PYTHONPATH": str(ROOT / "layers" / "common")}
    done = subprocess.run(
        [sys.executable, "-m", "mysetlist.experiments.cli"],
        input=json.dumps(DOCUMENT),
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    row = result["variants"][0]
    assert row["name"] == "treatment"
    assert set(row) >= {"lift", "ci_low", "ci_high", "p_value", "srm_p"}
    assert row["lift"] == pytest.approx((470 / 5_020 - 0.08) / 0.08)
    assert result["srm_ok"] is True


def test_adjustment_document() -> None:
    status, out, _ = _run('{"adjust": "holm", "p_values": [0.01, 0.04, 0.03]}')
    assert status == 0
    assert json.loads(out)["adjusted"] == pytest.approx([0.03, 0.06, 0.06])


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('{"adjust": "holm", "p_values": [NaN]}', "NaN"),
        ('{"metric": "proportion", "variants": []}', "variants"),
        (json.dumps(DOCUMENT | {"alpha": 2}), "alpha"),
    ],
)
def test_invalid_input_exits_2_with_a_message(text: str, fragment: str) -> None:
    status, out, err = _run(text)
    assert status == 2
    assert out == ""
    assert fragment in err
    assert err.startswith("ab-stats:")
