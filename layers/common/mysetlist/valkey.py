"""The container's Valkey client (ElastiCache Serverless for Valkey in AWS, a private server locally).

One client per container, created on first use: redis-py costs about 150 ms to import, so a
function pays for it with its first cache access, not at cold start. ``None`` when no endpoint is
configured: every user of Valkey (cache, rate limits, shared breaker state) then runs on its
per-container fallback.

Key naming: ElastiCache Serverless is a cluster behind one endpoint, so a command or script that
touches several keys must keep them in one hash slot. Keys that are used together carry the same
``{hash tag}`` (see :func:`slot_key`); everything else is single-key.
"""

from __future__ import annotations

import threading
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from mysetlist.settings import Settings

if TYPE_CHECKING:
    from redis import Redis

# Every key this application writes starts with this prefix (one Valkey may serve several apps).
KEY_PREFIX = "msl"

_lock = threading.Lock()
_clients: dict[tuple[str, float, float], Redis] = {}


def valkey_client(settings: Settings) -> Redis | None:
    """The container's client for ``settings.cache_url``, or None when none is configured.

    Socket timeouts are short (a cache that answers slowly must cost less than the read it
    saves); redis-py's own retries are off, because the callers' circuit breaker decides.
    """
    url = settings.cache_url
    if not url:
        return None
    key = (url, settings.valkey_timeout_seconds, settings.valkey_connect_timeout_seconds)
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = _clients[key] = _connect(
                url, settings.valkey_timeout_seconds, settings.valkey_connect_timeout_seconds
            )
        return found


def _connect(url: str, timeout: float, connect_timeout: float) -> Redis:
    import redis  # noqa: PLC0415 - deferred: see the module docstring
    from redis.backoff import NoBackoff  # noqa: PLC0415
    from redis.retry import Retry  # noqa: PLC0415

    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        # A connection idle across a freeze may have been closed by the server: check it first.
        "health_check_interval": 30,
        "client_name": "mysetlist",
    }
    return redis.Redis.from_url(url, **options)


def slot_key(group: str, *parts: str) -> str:
    """A key in the hash slot of ``group``: ``msl:{group}:part:part``."""
    return ":".join((KEY_PREFIX, "{" + group + "}", *parts))


def plain_key(*parts: str) -> str:
    """A key for single-key commands: ``msl:part:part``."""
    return ":".join((KEY_PREFIX, *parts))


def reset_clients() -> None:
    """Forget the container's clients (tests that restart Valkey on a new port)."""
    with _lock:
        for found in _clients.values():
            with suppress(Exception):  # closing a dead connection may fail; nothing to do
                found.close()
        _clients.clear()
