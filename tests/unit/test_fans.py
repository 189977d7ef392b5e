"""FanStore's own logic, on an in-memory users table and an L1-only cache with a test clock: the
first vote's time is kept, at most one write per user and artist per hour (even once the cache's
L1 stops trusting its copy), a new fan's cached set is dropped, reads paginate and stop at
MAX_ARTISTS, and faults are counted and never raised."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mysetlist.cache import Cache, CacheConfig
from mysetlist.dynamo import from_item, to_item
from mysetlist.fans import (
    MAX_ARTISTS,
    RECORD_TTL_SECONDS,
    FanStore,
    RecentKeys,
    Recorded,
)
from tests.harness.fakes import throttled

TABLE = "users"
T0 = dt.datetime(2030, 5, 1, 20, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class UsersTable:
    """The DynamoDB calls FanStore makes, on a dict, with their semantics: the conditional put
    refuses an existing key, the query walks the partition in sort-key order, ``Limit`` items
    (and at most ``page_size``) per page. ``faults`` are raised, one per call, first."""

    def __init__(self, page_size: int = 1000) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        self.faults: list[Exception] = []
        self.page_size = page_size

    def _fault(self) -> None:
        if self.faults:
            raise self.faults.pop(0)

    def put_item(self, *, TableName: str, Item: dict[str, Any], ConditionExpression: str) -> dict[str, Any]:
        self.calls["put_item"] += 1
        self._fault()
        assert (TableName, ConditionExpression) == (TABLE, "attribute_not_exists(PK)")
        item = from_item(Item)
        key = (item["PK"], item["SK"])
        if key in self.items:
            raise ClientError(
                {"Error": {"Code": "ConditionalCheckFailedException", "Message": "exists"}}, "PutItem"
            )
        self.items[key] = item
        return {}

    def query(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["query"] += 1
        self._fault()
        assert kwargs["TableName"] == TABLE
        assert kwargs["KeyConditionExpression"] == "PK = :pk AND begins_with(SK, :fan)"
        assert kwargs["ConsistentRead"] is True
        values = from_item(kwargs["ExpressionAttributeValues"])
        start = from_item(kwargs["ExclusiveStartKey"])["SK"] if "ExclusiveStartKey" in kwargs else ""
        matching = sorted(
            (sk, item)
            for (pk, sk), item in self.items.items()
            if pk == values[":pk"] and sk.startswith(values[":fan"]) and sk > start
        )
        page = matching[: min(kwargs["Limit"], self.page_size)]
        response: dict[str, Any] = {"Items": [to_item({"artist_id": item["artist_id"]}) for _, item in page]}
        if len(page) < len(matching):
            response["LastEvaluatedKey"] = to_item({"PK": values[":pk"], "SK": page[-1][0]})
        return response

    def add_fan(self, user: str, artist: str, since: str = "2030-01-01T00:00:00+00:00") -> None:
        self.items[(f"USER#{user}", f"FAN#{artist}")] = {"artist_id": artist, "since": since}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def table() -> UsersTable:
    return UsersTable()


@pytest.fixture
def counted() -> Counter[str]:
    return Counter()


@pytest.fixture
def cache(clock: Clock) -> Cache:
    return Cache(clock=clock)  # no Valkey: L1 copies are trusted for 5 seconds only


def fans_of(table: UsersTable, cache: Cache, clock: Clock, counted: Counter[str]) -> FanStore:
    def metric(name: str, value: float) -> None:
        counted[name] += int(value)

    return FanStore(table, TABLE, cache, metric=metric, clock=clock)  # type: ignore[arg-type]


def test_the_first_vote_is_recorded_once_and_its_time_kept(
    table: UsersTable, cache: Cache, clock: Clock, counted: Counter[str]
) -> None:
    fans = fans_of(table, cache, clock, counted)
    assert fans.record("u1", "phish", T0) is Recorded.CREATED
    assert table.items[("USER#u1", "FAN#phish")] == {
        "PK": "USER#u1",
        "SK": "FAN#phish",
        "artist_id": "phish",
        "since": T0.isoformat(),
    }
    clock.now += 10  # past the L1's 5 seconds: the container's memo still knows
    assert fans.record("u1", "phish", T0 + dt.timedelta(minutes=1)) is Recorded.KNOWN
    clock.now += RECORD_TTL_SECONDS - 20
    assert fans.record("u1", "phish", T0 + dt.timedelta(minutes=59)) is Recorded.KNOWN
    assert table.calls["put_item"] == 1
    clock.now += 11  # an hour on: one conditional write, which keeps the first time
    assert fans.record("u1", "phish", T0 + dt.timedelta(hours=2)) is Recorded.KNOWN
    assert table.calls["put_item"] == 2
    assert table.items[("USER#u1", "FAN#phish")]["since"] == T0.isoformat()
    assert counted == Counter({"FansRecorded": 1})


def test_another_container_with_an_empty_memo_writes_only_once_the_marker_is_gone(
    table: UsersTable, cache: Cache, clock: Clock, counted: Counter[str]
) -> None:
    fans_of(table, cache, clock, counted).record("u1", "phish", T0)
    other = fans_of(table, cache, clock, counted)  # same cache, its own memo
    assert other.record("u1", "phish", T0) is Recorded.KNOWN
    assert table.calls["put_item"] == 1
    cache.delete("fan:u1:phish")  # as a Valkey that trimmed it early
    third = fans_of(table, cache, clock, counted)
    assert third.record("u1", "phish", T0 + dt.timedelta(days=1)) is Recorded.KNOWN
    assert table.calls["put_item"] == 2
    assert table.items[("USER#u1", "FAN#phish")]["since"] == T0.isoformat()


def test_a_marker_near_its_expiry_is_not_rewritten_early(
    table: UsersTable, clock: Clock, counted: Counter[str]
) -> None:
    """The cache reloads a value read late in its TTL (refresh-ahead); a marker must not be:
    that would be a second write within the hour."""
    kept = Cache(CacheConfig(l1_ttl_seconds=2 * RECORD_TTL_SECONDS), clock=clock)  # as Valkey keeps it
    fans_of(table, kept, clock, counted).record("u1", "phish", T0)
    clock.now += 0.9 * RECORD_TTL_SECONDS
    assert fans_of(table, kept, clock, counted).record("u1", "phish", T0) is Recorded.KNOWN
    assert table.calls["put_item"] == 1


def test_each_artist_and_each_user_is_its_own_relation(
    table: UsersTable, cache: Cache, clock: Clock, counted: Counter[str]
) -> None:
    fans = fans_of(table, cache, clock, counted)
    assert fans.record("u1", "phish", T0) is Recorded.CREATED
    assert fans.record("u1", "wilco", T0) is Recorded.CREATED
    assert fans.record("u2", "phish", T0) is Recorded.CREATED
    assert fans.artists_of("u1") == {"phish", "wilco"}
    assert fans.artists_of("u2") == {"phish"}
    assert fans.artists_of("u3") == frozenset()


def test_a_failed_write_is_counted_remembers_nothing_and_the_next_vote_writes(
    table: UsersTable, cache: Cache, clock: Clock, counted: Counter[str]
) -> None:
    fans = fans_of(table, cache, clock, counted)
    table.faults = [throttled()]
    assert fans.record("u1", "phish", T0) is Recorded.FAILED
    assert table.items == {}
    assert counted == Counter({"FanRecordFailed": 1})
    later = T0 + dt.timedelta(minutes=3)
    assert fans.record("u1", "phish", later) is Recorded.CREATED
    assert table.items[("USER#u1", "FAN#phish")]["since"] == later.isoformat()
    assert table.calls["put_item"] == 2


def test_the_followed_set_is_cached_and_a_new_fan_drops_it(
    table: UsersTable, cache: Cache, clock: Clock, counted: Counter[str]
) -> None:
    fans = fans_of(table, cache, clock, counted)
    table.add_fan("u1", "phish")
    assert fans.artists_of("u1") == {"phish"}
    table.add_fan("u1", "written-behind-its-back")
    assert fans.artists_of("u1") == {"phish"}  # served from the cache
    assert table.calls["query"] == 1
    assert fans.record("u1", "wilco", T0) is Recorded.CREATED
    assert fans.artists_of("u1") == {"phish", "wilco", "written-behind-its-back"}
    assert table.calls["query"] == 2


def test_a_vote_that_finds_the_relation_stored_drops_the_cached_set_too(
    table: UsersTable, cache: Cache, clock: Clock, counted: Counter[str]
) -> None:
    """A writer that stored the relation but died before dropping the set: the next write that
    finds it stored drops the set instead."""
    fans = fans_of(table, cache, clock, counted)
    assert fans.artists_of("u1") == frozenset()
    table.add_fan("u1", "phish")
    assert fans.record("u1", "phish", T0) is Recorded.KNOWN
    assert fans.artists_of("u1") == {"phish"}


def test_reads_paginate_and_stop_at_max_artists(clock: Clock, counted: Counter[str]) -> None:
    table = UsersTable(page_size=120)
    for n in range(MAX_ARTISTS + 20):
        table.add_fan("u1", f"artist-{n:04d}")
    table.add_fan("u2", "not-theirs")
    fans = fans_of(table, Cache(clock=clock), clock, counted)
    found = fans.artists_of("u1")
    assert found == {f"artist-{n:04d}" for n in range(MAX_ARTISTS)}  # the first in sort-key order
    assert table.calls["query"] == 5  # 120 + 120 + 120 + 120 + 20


def test_a_failed_read_is_an_empty_set_counted_and_not_cached(
    table: UsersTable, cache: Cache, clock: Clock, counted: Counter[str]
) -> None:
    fans = fans_of(table, cache, clock, counted)
    table.add_fan("u1", "phish")
    table.faults = [throttled()]
    assert fans.artists_of("u1") == frozenset()
    assert counted == Counter({"FanReadFailed": 1})
    assert fans.artists_of("u1") == {"phish"}


def test_a_failing_cache_never_fails_the_caller(
    table: UsersTable, clock: Clock, counted: Counter[str]
) -> None:
    class BrokenCache(Cache):
        def get(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("cache bug")

    fans = fans_of(table, BrokenCache(clock=clock), clock, counted)
    assert fans.record("u1", "phish", T0) is Recorded.FAILED
    assert fans.artists_of("u1") == frozenset()
    assert counted == Counter({"FanRecordFailed": 1, "FanReadFailed": 1})


def test_recent_keys_expire_and_hold_their_capacity() -> None:
    clock = Clock()
    recent = RecentKeys(60, 3, clock)
    for key in "abc":
        recent.add(key)
        clock.now += 1
    recent.add("a")  # refreshed: now the newest
    recent.add("d")  # over capacity: the least recently added ("b") goes
    assert [k for k in "abcd" if recent.fresh(k)] == ["a", "c", "d"]
    assert len(recent) == 3
    clock.now += 59.5  # "c" was added at +2 (so expired at +62), "a" and "d" at +3
    assert [k for k in "acd" if recent.fresh(k)] == ["a", "d"]
    assert len(recent) == 2  # the expired key is dropped when found
    clock.now += 1
    assert not recent.fresh("a")
    with pytest.raises(ValueError, match="positive"):
        RecentKeys(0, 1)
