"""``python -m tests.local_stack [--port 3000]``: run the local stack until Ctrl-C or SIGTERM.

Environment: ``PORT`` (default port), ``WS_PORT`` (the WebSocket API's port; default: a free
one), ``LOCAL_STREAM_CHAOS`` (0..1, the probability per batch
of a duplicate, crashed or truncated stream delivery), ``LOCAL_STREAM_CHAOS_SEED``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from tests.local_stack.config import StackConfig
from tests.support.template import TEMPLATE_PATH, Template


def _parse_overrides(values: Sequence[str]) -> dict[str, str]:
    overrides = {}
    for value in values:
        for pair in value.split():
            name, sep, setting = pair.partition("=")
            if not sep or not name:
                raise argparse.ArgumentTypeError(f"parameter override {pair!r} is not Name=Value")
            overrides[name] = setting
    return overrides


def parse_args(argv: Sequence[str] | None) -> StackConfig:
    """The stack's configuration from the command line and the environment."""
    parser = argparse.ArgumentParser(prog="python -m tests.local_stack", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 3000), help="gateway port")
    parser.add_argument(
        "--ws-port",
        type=int,
        default=int(os.environ.get("WS_PORT") or 0),
        help="the WebSocket API's port (default: a free one)",
    )
    parser.add_argument("--state-dir", type=Path, help="state and logs (default .local/stack-<port>/; wiped)")
    parser.add_argument("--template", type=Path, default=TEMPLATE_PATH, help="the SAM template to serve")
    parser.add_argument("--no-seed", action="store_true", help="start with an empty catalogue")
    parser.add_argument("--data", type=Path, action="append", default=[], help="extra setlist file to import")
    parser.add_argument("--chaos", type=float, default=float(os.environ.get("LOCAL_STREAM_CHAOS") or 0.0))
    parser.add_argument("--chaos-seed", type=int, default=None)
    parser.add_argument(
        "--parameter-overrides",
        action="append",
        default=[],
        help="template parameters, e.g. WebClientOrigin=http://x",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.ws_port <= 65535:
        parser.error("--ws-port / WS_PORT must be a port number (0: a free one)")
    if not 0.0 <= args.chaos <= 1.0:
        parser.error("LOCAL_STREAM_CHAOS / --chaos must be between 0 and 1")
    seed_text = os.environ.get("LOCAL_STREAM_CHAOS_SEED")
    try:
        overrides = _parse_overrides(args.parameter_overrides)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if not args.template.is_file():
        parser.error(f"--template {args.template}: no such file")
    for path in args.data:
        if not path.is_file():
            parser.error(f"--data {path}: no such file")
    return StackConfig(
        port=args.port,
        ws_port=args.ws_port,
        state_dir=args.state_dir,
        template_path=args.template,
        seed=not args.no_seed,
        extra_data=list(args.data),
        chaos=args.chaos,
        chaos_seed=args.chaos_seed
        if args.chaos_seed is not None
        else (int(seed_text) if seed_text else None),
        parameter_overrides=overrides,
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stack until interrupted; 0 after a clean stop, 1 if it could not start."""
    config = parse_args(argv)
    # The shared package lives in the template's layer: import the stack (which uses it) after.
    Template.load(config.template_path).add_layers_to_path()
    from tests.local_stack.seed import ImporterMissing
    from tests.local_stack.stack import LocalStack

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack = LocalStack(config)
    except (OSError, ValueError) as exc:  # an unreadable or invalid template
        sys.stderr.write(f"The local stack could not start: {exc}\n")
        return 1
    try:
        stack.start()
        stack.say(stack.banner())
        forever = threading.Event()
        while not forever.wait(3600):  # until Ctrl-C / SIGTERM (KeyboardInterrupt)
            pass
    except KeyboardInterrupt:
        stack.say("Stopping the local stack...")
    except (ImporterMissing, OSError, RuntimeError, ValueError) as exc:  # ValueError: template errors
        stack.say(f"The local stack could not start: {exc}")
        return 1
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
