"""The two-level cache against a real Valkey: two ``Cache`` objects on one server stand for two
Lambda containers. Time is a fake clock (freshness, version checks); Valkey's own expiry is real
but far away (TTL plus the stale window)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

from mysetlist.cache import Cache, CacheConfig, Priority, WarmSpec
from mysetlist.cache.codec import FLAG_COMPRESSED, FLAG_ENCRYPTED
from mysetlist.cache.crypto import KmsEnvelope
from mysetlist.cache.l2 import ValkeyLayer, entry_key
from mysetlist.errors import NotFound, Unavailable
from tests.support.valkey import LocalValkey, running_valkey


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Flaky:
    """A guard that can be switched off, as a broken network to Valkey would be."""

    def __init__(self) -> None:
        self.down = False

    def __call__(self, operation: Callable[[], Any]) -> Any:
        if self.down:
            raise redis.ConnectionError("valkey unreachable (test)")
        return operation()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalValkey]:
    with running_valkey(tmp_path / "valkey") as valkey:
        yield valkey


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_cache(
    server: LocalValkey, clock: Clock, guard: Callable[[Callable[[], Any]], Any] | None = None, **config: Any
) -> Cache:
    encryptor = config.pop("encryptor", None)
    client = redis.Redis.from_url(server.url)
    layer = ValkeyLayer(client, guard or (lambda op: op()), max_entries=config.get("l2_max_entries", 5000))
    return Cache(CacheConfig(**config), l2=layer, clock=clock, encryptor=encryptor)


class Counted:
    """A loader that counts its calls and returns the next value of a sequence."""

    def __init__(self, *values: Any) -> None:
        self.values = list(values) or [{"v": 1}]
        self.calls = 0

    def __call__(self) -> Any:
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return value


def test_a_miss_loads_once_and_both_levels_then_serve_it(server: LocalValkey, clock: Clock) -> None:
    a, b = make_cache(server, clock), make_cache(server, clock)
    loader = Counted({"title": "Dark Star"})

    assert a.get("song:1", loader, ttl=60) == {"title": "Dark Star"}
    assert a.get("song:1", loader, ttl=60) == {"title": "Dark Star"}  # L1
    assert b.get("song:1", loader, ttl=60) == {"title": "Dark Star"}  # L2, another container

    assert loader.calls == 1
    assert a.stats()["l1"]["hits"] == 1
    assert b.stats()["l2"]["hits"] == 1
    assert b.stats()["l2"]["entries"] == 1


def test_values_expire_at_their_ttl(server: LocalValkey, clock: Clock) -> None:
    cache = make_cache(server, clock, refresh_ahead_threshold=0.99)
    loader = Counted({"n": 1}, {"n": 2})
    cache.get("show:1", loader, ttl=10)
    clock.advance(11)
    assert cache.get("show:1", loader, ttl=10) == {"n": 2}
    assert loader.calls == 2


def test_an_invalidated_tag_reaches_another_containers_l1_at_its_next_version_check(
    server: LocalValkey, clock: Clock
) -> None:
    a, b = make_cache(server, clock), make_cache(server, clock)
    loader = Counted({"status": "upcoming"}, {"status": "completed"})
    a.get("show:7", loader, ttl=300, tags=["show:7"])
    b.get("show:7", loader, ttl=300, tags=["show:7"])  # b's L1 now holds it

    assert a.invalidate_tags(["show:7"]) == 1

    # Within the version-check interval b may still serve its copy; after it, never.
    clock.advance(1.1)
    assert b.get("show:7", loader, ttl=300, tags=["show:7"]) == {"status": "completed"}
    assert loader.calls == 2


def test_without_valkey_an_l1_copy_lives_only_its_short_ttl(clock: Clock) -> None:
    cache = Cache(CacheConfig(l1_ttl_seconds=5), clock=clock)
    loader = Counted({"n": 1}, {"n": 2})
    cache.get("artist:1", loader, ttl=600)
    clock.advance(4)
    assert cache.get("artist:1", loader, ttl=600) == {"n": 1}
    clock.advance(2)
    assert cache.get("artist:1", loader, ttl=600) == {"n": 2}


def test_a_value_loaded_before_an_invalidation_is_not_served_after_it(
    server: LocalValkey, clock: Clock
) -> None:
    """The race every tag cache must handle: the loader read the old row, the writer invalidated,
    then the loader stored what it read. Readers must not trust that value."""
    a, b = make_cache(server, clock), make_cache(server, clock)
    sneaky_invalidation_done = False

    def slow_loader() -> Any:
        nonlocal sneaky_invalidation_done
        if not sneaky_invalidation_done:
            sneaky_invalidation_done = True
            b.invalidate_tags(["show:9"])  # the write lands while the load is in flight
            return {"status": "old"}
        return {"status": "new"}

    assert a.get("show:9", slow_loader, ttl=300, tags=["show:9"]) == {"status": "old"}
    clock.advance(1.1)
    assert b.get("show:9", slow_loader, ttl=300, tags=["show:9"]) == {"status": "new"}
    assert a.get("show:9", slow_loader, ttl=300, tags=["show:9"]) == {"status": "new"}


def test_delete_and_clear_reach_every_container(server: LocalValkey, clock: Clock) -> None:
    a, b = make_cache(server, clock), make_cache(server, clock)
    loader = Counted({"n": 1}, {"n": 2}, {"n": 3})
    b.get("k:1", loader, ttl=300)
    b.get("k:2", Counted({"x": 1}, {"x": 2}), ttl=300)

    a.delete("k:1")
    clock.advance(1.1)
    assert b.get("k:1", loader, ttl=300) == {"n": 2}

    second = Counted({"x": 9})
    assert a.clear()["l2"] == 2
    clock.advance(1.1)
    assert b.get("k:2", second, ttl=300) == {"x": 9}
    assert second.calls == 1


def test_values_above_the_threshold_are_compressed(server: LocalValkey, clock: Clock) -> None:
    cache = make_cache(server, clock, compression_threshold=1024)
    big = {"songs": [f"song number {i}" for i in range(200)]}
    cache.get("big", lambda: big, ttl=60)
    cache.get("small", lambda: {"a": 1}, ttl=60)
    raw = redis.Redis.from_url(server.url)
    big_blob = raw.get(entry_key("big"))
    small_blob = raw.get(entry_key("small"))
    assert isinstance(big_blob, bytes)
    assert isinstance(small_blob, bytes)
    assert big_blob[1] & FLAG_COMPRESSED
    assert not small_blob[1] & FLAG_COMPRESSED
    assert len(big_blob) < len(str(big))
    assert make_cache(server, clock).get("big", lambda: None, ttl=60) == big


def test_sensitive_values_are_encrypted_under_a_kms_data_key(
    server: LocalValkey, clock: Clock, aws: dict[str, str]
) -> None:
    kms = boto3.client("kms")
    key_id = kms.create_key(Description="cache test")["KeyMetadata"]["KeyId"]
    writer = make_cache(server, clock, encryptor=KmsEnvelope(lambda: kms, key_id))
    reader_envelope = KmsEnvelope(lambda: kms, key_id)
    reader = make_cache(server, clock, encryptor=reader_envelope)
    secret = {"email": "fan@example.com", "note": "x" * 2000}

    writer.get("profile:1", lambda: secret, ttl=60, encrypt=True)
    blob = redis.Redis.from_url(server.url).get(entry_key("profile:1"))
    assert isinstance(blob, bytes)
    assert blob[1] & FLAG_ENCRYPTED
    assert blob[1] & FLAG_COMPRESSED
    assert b"fan@example.com" not in blob

    assert reader.get("profile:1", lambda: None, ttl=60, encrypt=True) == secret
    assert reader.get("profile:2", lambda: {"n": 1}, ttl=60, encrypt=True) == {"n": 1}
    assert reader_envelope.kms_calls == 2  # one unwrap of the writer's key, one key of its own


def test_sensitive_values_stay_out_of_valkey_without_a_key(server: LocalValkey, clock: Clock) -> None:
    cache = make_cache(server, clock)
    assert cache.get("secret", lambda: {"token": "t"}, ttl=60, encrypt=True) == {"token": "t"}
    assert redis.Redis.from_url(server.url).get(entry_key("secret")) is None


def test_a_stampede_of_concurrent_misses_calls_the_loader_once(server: LocalValkey) -> None:
    containers = [make_cache(server, Clock()) for _ in range(2)]
    calls = 0
    calls_lock = threading.Lock()
    start = threading.Barrier(100)

    def loader() -> Any:
        nonlocal calls
        with calls_lock:
            calls += 1
        time.sleep(0.05)  # a DynamoDB read
        return {"hot": True}

    results: list[Any] = []

    def worker(index: int) -> None:
        start.wait()
        results.append(containers[index % 2].get("show:hot", loader, ttl=60))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == 1
    assert results == [{"hot": True}] * 100


def test_refresh_ahead_reloads_once_near_expiry_inside_a_request(server: LocalValkey, clock: Clock) -> None:
    a, b = make_cache(server, clock), make_cache(server, clock)
    loader = Counted({"n": 1}, {"n": 2})
    a.get("tallies:1", loader, ttl=10)
    clock.advance(7)  # 70%: not yet
    assert b.get("tallies:1", loader, ttl=10) == {"n": 1}
    clock.advance(1.5)  # 85%: the next caller reloads
    assert b.get("tallies:1", loader, ttl=10) == {"n": 2}
    assert a.get("tallies:1", loader, ttl=10) in ({"n": 1}, {"n": 2})
    assert loader.calls == 2
    assert b.stats()["loader"]["refreshes"] == 1


def test_a_failing_loader_is_answered_from_the_stale_value(server: LocalValkey, clock: Clock) -> None:
    cache = make_cache(server, clock)
    cache.get("show:3", lambda: {"status": "upcoming"}, ttl=10)
    clock.advance(11)

    def broken() -> Any:
        raise ConnectionError("DynamoDB unreachable")

    assert cache.get("show:3", broken, ttl=10) == {"status": "upcoming"}
    assert cache.stats()["loader"]["stale_served"] == 1
    # Another container (L1 empty) also gets the stale copy from L2.
    assert make_cache(server, clock).get("show:3", broken, ttl=10) == {"status": "upcoming"}


def test_a_dependency_failure_a_store_already_turned_into_a_503_is_answered_stale(
    server: LocalValkey, clock: Clock
) -> None:
    cache = make_cache(server, clock)
    cache.get("show:5", lambda: {"status": "upcoming"}, ttl=10)
    clock.advance(11)

    def throttled() -> Any:
        raise Unavailable("the catalogue is busy", details={"outcome": "unchanged"})

    assert cache.get("show:5", throttled, ttl=10) == {"status": "upcoming"}


def test_a_domain_answer_is_never_replaced_by_a_stale_value(server: LocalValkey, clock: Clock) -> None:
    cache = make_cache(server, clock)
    cache.get("show:4", lambda: {"status": "upcoming"}, ttl=10)
    clock.advance(11)

    def gone() -> Any:
        raise NotFound("no show with id '4'")

    with pytest.raises(NotFound):
        cache.get("show:4", gone, ttl=10)


def test_with_valkey_unreachable_requests_still_succeed_from_the_loader(
    server: LocalValkey, clock: Clock
) -> None:
    guard = Flaky()
    cache = make_cache(server, clock, guard=guard)
    loader = Counted({"n": 1}, {"n": 2})
    guard.down = True
    assert cache.get("artist:5", loader, ttl=60) == {"n": 1}
    assert cache.get("artist:5", loader, ttl=60) == {"n": 1}  # L1 still works
    assert cache.invalidate_tags(["artist:5"]) == 0
    assert cache.stats()["l2"]["available"] is False
    guard.down = False
    assert cache.stats()["l2"]["available"] is True


def test_l2_is_held_to_its_entry_bound(server: LocalValkey, clock: Clock) -> None:
    cache = make_cache(server, clock, l2_max_entries=100)
    for i in range(300):
        clock.advance(0.001)
        cache.set(f"k:{i}", {"i": i}, ttl=600)
    report = cache.optimize()
    assert cache.stats()["l2"]["entries"] <= 100
    assert report["l2_trimmed"] >= 0
    raw = redis.Redis.from_url(server.url)
    assert raw.get(entry_key("k:0")) is None  # the oldest went first
    assert raw.get(entry_key("k:299")) is not None


def test_critical_entries_outlive_others_in_l1(clock: Clock) -> None:
    cache = Cache(CacheConfig(l1_max_entries=10), clock=clock)
    cache.set("config", {"feature": True}, ttl=600, priority=Priority.CRITICAL)
    for i in range(100):
        cache.set(f"noise:{i}", {"i": i}, ttl=600)
    assert cache.get("config", lambda: pytest.fail("evicted"), ttl=600) == {"feature": True}


def test_warm_up_loads_missing_and_aging_keys_only(server: LocalValkey, clock: Clock) -> None:
    cache = make_cache(server, clock)
    fresh, missing = Counted({"f": 1}), Counted({"m": 1})
    cache.get("fresh", fresh, ttl=100)
    report = cache.warm_up([WarmSpec("fresh", fresh, ttl=100), WarmSpec("missing", missing, ttl=100)])
    assert report == {"warmed": 1, "fresh": 1, "failed": 0}
    assert (fresh.calls, missing.calls) == (1, 1)


def test_prefetch_warms_what_the_access_counts_say_is_hot(server: LocalValkey, clock: Clock) -> None:
    reader, warmer = make_cache(server, clock), make_cache(server, clock)
    for _ in range(5):
        reader.get("show:hot", lambda: {"n": 1}, ttl=100)
    reader.get("show:cold", lambda: {"n": 1}, ttl=100)
    reader.detailed_metrics()  # flushes the access counts
    clock.advance(90)  # both near expiry
    loaded: list[str] = []

    def resolve(key: str) -> WarmSpec | None:
        if not key.startswith("show:"):
            return None

        def load() -> Any:
            loaded.append(key)
            return {"n": 2}

        return WarmSpec(key, load, ttl=100)

    report = warmer.prefetch_popular(resolve, limit=1)
    assert loaded == ["show:hot"]
    assert report["warmed"] == 1
    metrics = reader.detailed_metrics()
    assert metrics["hot_key_patterns"][0]["pattern"] == "show:*"
