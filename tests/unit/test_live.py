"""Live pushes without AWS: the tallies message, the pusher (a fake management client: one
post per connection, GoneException removes the connection, no fault ever raises) and the
VoteProcessor's observer (one message per show per batch, shows nobody watches skipped before
their tallies are read, the invocation's time respected)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from mysetlist.live import (
    DEFAULT_MAX_SUBSCRIPTIONS,
    MAX_MESSAGE_BYTES,
    Connection,
    LiveConfig,
    LiveObserver,
    LivePusher,
    changed_shows,
    encode,
    subscription_partitions,
    subscription_pk,
    tallies_message,
)
from mysetlist.settings import Settings, SettingsError, load_settings
from mysetlist.stream_batch import CountedBatch
from mysetlist.tallies import SongTallyCount, TallyDelta, VoteChange

NOW = dt.datetime(2026, 6, 1, 20, 0, tzinfo=dt.UTC)


def client_error(code: str, status: int) -> ClientError:
    error: Any = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(error, "PostToConnection")


@dataclass
class FakeManagement:
    """post_to_connection as API Gateway answers it: delivered, gone, or another fault."""

    gone: set[str] = field(default_factory=set)
    faults: dict[str, Exception] = field(default_factory=dict)
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post_to_connection(self, *, Data: bytes, ConnectionId: str) -> Any:
        if ConnectionId in self.gone:
            raise client_error("GoneException", 410)
        if ConnectionId in self.faults:
            raise self.faults[ConnectionId]
        with self.lock:
            self.posts.append((ConnectionId, json.loads(Data)))
        return {}


@dataclass
class FakeConnections:
    """Subscribers per show; ``disconnect`` records what the pusher removed."""

    watchers: dict[str, list[str]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    broken_shows: set[str] = field(default_factory=set)
    lookups: list[str] = field(default_factory=list)
    fail_disconnect: bool = False

    def connect(self, connection_id: str, user_id: str, now: dt.datetime) -> None:
        raise AssertionError("not used by pushes")

    def get(self, connection_id: str) -> Connection | None:
        raise AssertionError("not used by pushes")

    def subscribe(self, connection: Connection, show_id: str, now: dt.datetime, *, limit: int) -> None:
        raise AssertionError("not used by pushes")

    def unsubscribe(self, connection_id: str, show_id: str) -> None:
        raise AssertionError("not used by pushes")

    def disconnect(self, connection_id: str) -> int:
        if self.fail_disconnect:
            raise RuntimeError("DynamoDB is down")
        self.removed.append(connection_id)
        for ids in self.watchers.values():
            if connection_id in ids:
                ids.remove(connection_id)
        return 1

    def subscribers(self, show_id: str, now: dt.datetime) -> list[str]:
        self.lookups.append(show_id)
        if show_id in self.broken_shows:
            raise RuntimeError("throttled")
        return list(self.watchers.get(show_id, []))


@dataclass
class FakeTallies:
    counts: dict[str, list[SongTallyCount]] = field(default_factory=dict)
    reads: list[tuple[str, bool]] = field(default_factory=list)

    def read(
        self, show_id: str, *, consistent: bool = False, now: dt.datetime | None = None
    ) -> list[SongTallyCount]:
        self.reads.append((show_id, consistent))
        return list(self.counts.get(show_id, []))


def change(
    sequence: int, show: str, song: str, up: int = 1, down: int = 0
) -> tuple[dict[str, Any], VoteChange]:
    seq = f"{sequence:021d}"
    record = {"dynamodb": {"SequenceNumber": seq}, "eventSourceARN": "arn:stream"}
    delta = TallyDelta(show, song, up, down) if (up or down) else None
    return record, VoteChange(seq, delta)


def batch(
    records: Sequence[tuple[dict[str, Any], VoteChange]],
    remaining_ms: Callable[[], int | None] = lambda: 60_000,
) -> CountedBatch:
    return CountedBatch(records, 0, NOW, remaining_ms)


def observer(
    connections: FakeConnections,
    tallies: FakeTallies,
    management: FakeManagement,
    clock: Callable[[], float] = time.monotonic,
) -> LiveObserver:
    pusher = LivePusher(lambda: management, connections, workers=4, clock=clock)
    return LiveObserver(connections, pusher, tallies, wall_clock=lambda: NOW, clock=clock)


# ---------------------------------------------------------------------------------- messages


def test_the_message_is_the_whole_board_ranked_as_the_api_ranks_it() -> None:
    counts = [
        SongTallyCount("b", 3, 1, vote_velocity=0.4, trending_score=2.123456),
        SongTallyCount("a", 5, 0, vote_velocity=1.0, trending_score=4.0),
        SongTallyCount("c", 0, 0, vote_velocity=0.2, trending_score=0.0),  # votes cancelled out
        SongTallyCount("d", 1, 3, vote_velocity=0.0, trending_score=0.1),
    ]
    message = tallies_message("show-1", counts, sequence="42", processed_at=NOW)
    assert [s["song_id"] for s in message["songs"]] == ["a", "b", "d"]
    assert message["songs"][1] == {
        "song_id": "b",
        "upvotes": 3,
        "downvotes": 1,
        "net": 2,
        "vote_velocity": 0.4,
        "trending_score": 2.1235,
    }
    assert (message["total_upvotes"], message["total_downvotes"]) == (9, 4)
    assert message["vote_velocity"] == 1.6  # the cancelled-out song's votes still moved
    assert message["type"] == "tallies"
    assert message["sequence"] == "42"
    assert message["processed_at"] == "2026-06-01T20:00:00.000Z"
    assert message["truncated"] is False


def test_a_board_too_large_for_one_websocket_message_keeps_the_changed_songs_and_says_so() -> None:
    counts = [SongTallyCount(f"song-{n:04d}", 1000 - n, n % 7) for n in range(900)]
    limit = 20_000
    full = tallies_message("show-1", counts, sequence="1", processed_at=NOW, max_bytes=10**9)
    assert len(encode(full)) > limit
    message = tallies_message(
        "show-1", counts, sequence="1", processed_at=NOW, changed={"song-0899", "song-0450"}, max_bytes=limit
    )
    assert len(encode(message)) <= limit
    assert message["truncated"] is True
    kept = [s["song_id"] for s in message["songs"]]
    assert {"song-0899", "song-0450"} <= set(kept)
    assert "song-0000" in kept  # then the best ranked
    assert kept == [s["song_id"] for s in full["songs"] if s["song_id"] in set(kept)]  # still ranked
    assert message["total_upvotes"] == full["total_upvotes"]  # the totals stay whole
    assert MAX_MESSAGE_BYTES == 128 * 1024


def test_changed_shows_keep_the_last_sequence_per_show_and_skip_no_op_records() -> None:
    records = [change(1, "x", "s1"), change(2, "y", "s1"), change(3, "x", "s2"), change(4, "y", "s1", 0, 0)]
    shows = changed_shows(records)
    assert list(shows) == ["x", "y"]
    assert shows["x"].sequence == f"{3:021d}"
    assert shows["x"].songs == {"s1", "s2"}
    assert shows["y"].sequence == f"{2:021d}"  # the no-op record counted nothing


def test_subscriptions_spread_over_shards_that_one_query_each_reads() -> None:
    shards = {subscription_pk("show-1", f"conn-{n}") for n in range(200)}
    assert shards == set(subscription_partitions("show-1"))
    assert len(shards) > 1


# ---------------------------------------------------------------------------------- the pusher


def test_the_pusher_sends_once_to_each_connection_and_removes_the_gone_ones() -> None:
    management = FakeManagement(gone={"c2", "c4"}, faults={"c5": client_error("LimitExceededException", 429)})
    connections = FakeConnections(watchers={"show-1": [f"c{n}" for n in range(1, 7)]})
    pusher = LivePusher(lambda: management, connections, workers=3)
    outcome = pusher.push("show-1", {"type": "tallies", "n": 1}, now=NOW)
    assert sorted(c for c, _ in management.posts) == ["c1", "c3", "c6"]
    assert all(m == {"type": "tallies", "n": 1} for _, m in management.posts)
    assert (outcome.connections, outcome.sent, outcome.gone, outcome.failed) == (6, 3, 2, 1)
    assert sorted(connections.removed) == ["c2", "c4"]
    assert connections.watchers["show-1"] == ["c1", "c3", "c5", "c6"]  # c5 was only busy


def test_no_delivery_fault_escapes_the_pusher() -> None:
    management = FakeManagement(
        gone={"c1"},
        faults={
            "c2": EndpointConnectionError(endpoint_url="https://example.invalid"),
            "c3": TimeoutError("read timeout"),
            "c4": client_error("ForbiddenException", 403),
        },
    )
    connections = FakeConnections(watchers={"show-1": ["c1", "c2", "c3", "c4"]}, fail_disconnect=True)
    outcome = LivePusher(lambda: management, connections).push("show-1", {"n": 1}, now=NOW)
    assert (outcome.sent, outcome.gone, outcome.failed, outcome.cleanup_failed) == (0, 1, 3, 1)

    def no_client() -> FakeManagement:
        raise ValueError("invalid endpoint")

    outcome = LivePusher(no_client, FakeConnections(watchers={"s": ["a", "b"]})).push("s", {"n": 1}, now=NOW)
    assert (outcome.sent, outcome.failed) == (0, 2)
    broken = FakeConnections(broken_shows={"s"})
    assert LivePusher(lambda: management, broken).push("s", {"n": 1}, now=NOW).failed == 1


def test_connections_not_started_by_the_deadline_are_skipped() -> None:
    management = FakeManagement()
    ticks = iter([0.0, 0.5, 2.0, 2.5])
    pusher = LivePusher(lambda: management, FakeConnections(), workers=1, clock=lambda: next(ticks))
    outcome = pusher.send(["a", "b", "c", "d"], {"n": 1}, deadline=1.0)
    assert [c for c, _ in management.posts] == ["a", "b"]
    assert (outcome.sent, outcome.skipped) == (2, 2)


# ---------------------------------------------------------------------------------- the observer


def test_one_message_per_show_per_batch_built_from_a_fresh_consistent_read() -> None:
    management = FakeManagement()
    connections = FakeConnections(watchers={"x": ["w1", "w2"], "y": ["w3"]})
    tallies = FakeTallies(
        counts={
            "x": [SongTallyCount("s1", 30, 2), SongTallyCount("s2", 4, 0)],
            "y": [SongTallyCount("s1", 1, 0)],
        }
    )
    records = [change(n, "x" if n % 3 else "y", f"s{n % 2 + 1}") for n in range(1, 61)]
    records.append(change(61, "z", "s1"))  # nobody watches z
    observer(connections, tallies, management).observe(batch(records))

    per_connection: dict[str, int] = {}
    for connection_id, _ in management.posts:
        per_connection[connection_id] = per_connection.get(connection_id, 0) + 1
    assert per_connection == {"w1": 1, "w2": 1, "w3": 1}  # 61 votes, one message per show
    assert sorted(tallies.reads) == [("x", True), ("y", True)]  # z's tallies were never read
    assert sorted(connections.lookups) == ["x", "y", "z"]
    message_x = next(m for c, m in management.posts if c == "w1")
    last_x = max(n for n in range(1, 61) if n % 3)
    assert message_x["sequence"] == f"{last_x:021d}"
    assert [s["song_id"] for s in message_x["songs"]] == ["s1", "s2"]
    assert message_x["total_upvotes"] == 34


def test_a_failing_show_degrades_alone_and_the_observer_never_raises() -> None:
    management = FakeManagement(gone={"w2"})
    connections = FakeConnections(watchers={"x": ["w1"], "y": ["w2", "w3"]}, broken_shows={"x"})
    tallies = FakeTallies(counts={"y": [SongTallyCount("s1", 2, 0)]})
    observer(connections, tallies, management).observe(batch([change(1, "x", "s1"), change(2, "y", "s1")]))
    assert [c for c, _ in management.posts] == ["w3"]
    assert connections.removed == ["w2"]


def test_pushes_stop_short_of_the_invocation_deadline() -> None:
    management = FakeManagement()
    connections = FakeConnections(watchers={"x": ["w1"], "y": ["w2"]})
    tallies = FakeTallies(counts={"x": [SongTallyCount("s1", 1, 0)], "y": [SongTallyCount("s1", 1, 0)]})
    records = [change(1, "x", "s1"), change(2, "y", "s1")]
    observer(connections, tallies, management).observe(batch(records, remaining_ms=lambda: 2_500))
    assert management.posts == []  # 2.5 s left, 3 s kept back for the tallies' own work
    assert tallies.reads == []
    observer(connections, tallies, management).observe(batch(records, remaining_ms=lambda: None))
    assert sorted(c for c, _ in management.posts) == ["w1", "w2"]  # outside Lambda: the budget only


def test_a_slow_management_endpoint_cannot_hold_the_stream_past_the_budget() -> None:
    management = FakeManagement()
    connections = FakeConnections(watchers={"x": ["w1"], "y": ["w2"], "z": ["w3"]})
    tallies = FakeTallies(counts={show: [SongTallyCount("s1", 1, 0)] for show in "xyz"})
    now = [0.0]

    def clock() -> float:
        now[0] += 2.0  # every look at the clock finds two more seconds gone
        return now[0]

    live = LiveObserver(
        connections,
        LivePusher(lambda: management, connections, workers=1, clock=clock),
        tallies,
        clock=clock,
        wall_clock=lambda: NOW,
        budget_seconds=5.0,
    )
    live.observe(batch([change(1, "x", "s1"), change(2, "y", "s1"), change(3, "z", "s1")]))
    assert [c for c, _ in management.posts] == ["w1"]  # y and z wait for the next batch


# ---------------------------------------------------------------------------------- settings


def test_live_settings_are_validated_at_cold_start(monkeypatch: pytest.MonkeyPatch) -> None:
    config = LiveConfig.from_settings(Settings())
    assert config == LiveConfig(connections_table="", max_subscriptions=DEFAULT_MAX_SUBSCRIPTIONS)
    monkeypatch.setenv("CONNECTIONS_TABLE", "t")
    monkeypatch.setenv("LIVE_MANAGEMENT_ENDPOINT", "https://api.example/live/")
    monkeypatch.setenv("LIVE_MAX_SUBSCRIPTIONS", "3")
    monkeypatch.setenv("WEB_CLIENT_ORIGIN", "http://localhost:5173")
    load_settings.cache_clear()
    try:
        config = LiveConfig.from_settings(load_settings())
        assert config.management_endpoint == "https://api.example/live"
        assert (config.connections_table, config.max_subscriptions) == ("t", 3)
        assert config.allowed_origins == frozenset({"http://localhost:5173"})
        for bad in ("0", "101", "ten"):
            monkeypatch.setenv("LIVE_MAX_SUBSCRIPTIONS", bad)
            load_settings.cache_clear()
            with pytest.raises(SettingsError, match="live_max_subscriptions"):
                load_settings()
    finally:
        load_settings.cache_clear()
