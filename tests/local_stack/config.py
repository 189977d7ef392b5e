"""What the local stack is asked to run (no dependency on the shared package, so the command
line can be parsed before the template's layers are on ``sys.path``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tests.support.template import REPO_ROOT, TEMPLATE_PATH


def default_state_dir(port: int) -> Path:
    """Where a stack on ``port`` keeps its state and logs: ``.local/stack-<port>/`` (git-ignored)."""
    return REPO_ROOT / ".local" / f"stack-{port}"


@dataclass
class StackConfig:
    """What ``python -m tests.local_stack`` was asked to run."""

    port: int = 3000
    state_dir: Path | None = None
    template_path: Path = TEMPLATE_PATH
    seed: bool = True
    extra_data: list[Path] = field(default_factory=list)
    chaos: float = 0.0
    chaos_seed: int | None = None
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    region: str = "us-east-1"
    # The WebSocket API's port; 0 takes a free one (printed in the banner and /__local/health).
    ws_port: int = 0

    @property
    def state(self) -> Path:
        return (self.state_dir or default_state_dir(self.port)).resolve()
