"""docs/openapi holds what the FastAPI apps generate (regenerate with ``make openapi``)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.template import REPO_ROOT


def test_committed_openapi_documents_are_current() -> None:
    # A process of its own: generating imports the handler modules with placeholder settings,
    # which must not leak into the settings cache or sys.modules of this test process.
    result = subprocess.run(
        [sys.executable, "-m", "tests.tools.openapi", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"docs/openapi is stale: run `make openapi`\n{result.stderr}"
