"""The in-process cache's policy and bookkeeping (``mysetlist.cache.l1``), and the reference
policies of its benchmark (``tests/bench/cache_policy.py``). Clocks are injected; no timing."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mysetlist.cache.l1 import L1Cache, L1Entry, Priority
from tests.bench.cache_policy import (
    belady_hit_rate,
    l1_hit_rate,
    lru_hit_rate,
    next_uses,
    static_hit_rate,
)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_entry(
    size: int = 1,
    priority: Priority = Priority.NORMAL,
    *,
    tags: tuple[str, ...] = (),
    value: object = None,
    fresh_until: float = float("inf"),
    stale_until: float = float("inf"),
) -> L1Entry:
    return L1Entry(
        value=value,
        size=size,
        priority=priority,
        fresh_until=fresh_until,
        stale_until=stale_until,
        stored_at=0.0,
        tags=tags,
    )


def read(cache: L1Cache, key: str, size: int = 1, priority: Priority = Priority.NORMAL) -> bool:
    """What the two-level cache does: get, and put on a miss. True on a hit."""
    if cache.get(key) is not None:
        return True
    cache.put(key, make_entry(size, priority))
    return False


def held(cache: L1Cache, keys: Iterable[str]) -> set[str]:
    return {key for key in keys if key in cache}


def assert_consistent(
    cache: L1Cache, universe: Iterable[str], tags: Iterable[str] = (), clock: Clock | None = None
) -> None:
    """Bytes, entries and the tag index agree with what the cache holds (read through peek;
    with ``clock``, expired entries not dropped yet are seen too)."""
    now = clock.now if clock else 0.0
    if clock:
        clock.now = float("-inf")
    present = {key: entry for key in universe if (entry := cache.peek(key)) is not None}
    if clock:
        clock.now = now
    stats = cache.stats()
    assert stats["entries"] == len(cache) == len(present)
    assert stats["bytes"] == sum(entry.size for entry in present.values())
    assert stats["entries"] <= stats["max_entries"]
    assert stats["bytes"] <= stats["max_bytes"]
    for tag in tags:
        assert cache.keys_with_tag(tag) == sorted(key for key, entry in present.items() if tag in entry.tags)


# -- bounds -----------------------------------------------------------------------------------


def test_the_entry_bound_holds_whatever_is_put():
    cache = L1Cache(max_entries=10)
    keys = [f"k{n}" for n in range(200)]
    for key in keys:
        read(cache, key)
        assert len(cache) <= 10
    assert len(cache) == 10
    assert_consistent(cache, keys)


def test_the_byte_bound_holds_and_bytes_are_the_sum_of_sizes():
    cache = L1Cache(max_entries=1000, max_bytes=1000)
    rng = random.Random(7)
    keys = [f"k{n}" for n in range(300)]
    for _ in range(3000):
        read(cache, rng.choice(keys), size=rng.randrange(1, 120))
        assert cache.stats()["bytes"] <= 1000
    assert_consistent(cache, keys)
    assert len(cache) < 1000  # the byte bound, not the entry bound, is what limited it


def test_an_entry_bigger_than_the_byte_bound_is_refused_and_drops_the_value_it_replaces():
    cache = L1Cache(max_entries=10, max_bytes=100)
    assert cache.put("k", make_entry(size=40, value="old"))
    assert not cache.put("k", make_entry(size=101, value="new"))
    assert cache.peek("k") is None  # the old value is superseded: never served again
    assert cache.stats()["rejections"] == 1
    assert cache.stats()["bytes"] == 0


def test_a_large_newcomer_must_beat_the_victims_it_would_displace():
    cache = L1Cache(max_entries=100, max_bytes=1000)
    hot = [f"hot{n}" for n in range(10)]
    for _ in range(4):
        for key in hot:
            read(cache, key, size=90)
    assert held(cache, hot) == set(hot)
    # Read once, 900 bytes: storing it would flush nine frequent entries.
    assert not read(cache, "big", size=900)
    assert "big" not in cache
    assert held(cache, hot) == set(hot)
    assert cache.stats()["bytes"] <= 1000


def test_replacing_a_key_updates_value_bytes_and_tags_in_place():
    cache = L1Cache(max_entries=10, max_bytes=10_000)
    cache.put("k", make_entry(size=100, value=1, tags=("a", "b")))
    cache.put("other", make_entry(size=50))
    assert cache.put("k", make_entry(size=300, value=2, tags=("b", "c")))
    found = cache.peek("k")
    assert found is not None
    assert found.value == 2
    assert len(cache) == 2
    assert cache.stats()["bytes"] == 350
    assert cache.keys_with_tag("a") == []
    assert cache.keys_with_tag("b") == ["k"]
    assert cache.keys_with_tag("c") == ["k"]
    assert_consistent(cache, ["k", "other"], ["a", "b", "c"])


def test_bad_bounds_and_sizes_are_refused():
    with pytest.raises(ValueError, match="positive"):
        L1Cache(max_entries=0)
    with pytest.raises(ValueError, match="positive"):
        L1Cache(max_bytes=0)
    with pytest.raises(ValueError, match="negative"):
        L1Cache().put("k", make_entry(size=-1))


# -- admission and eviction -------------------------------------------------------------------


def fill_with_frequent_keys(cache: L1Cache, keys: list[str], rounds: int = 4) -> None:
    for _ in range(rounds):
        for key in keys:
            read(cache, key)


def test_a_one_hit_wonder_is_refused_and_a_frequent_newcomer_admitted():
    cache = L1Cache(max_entries=20)
    regulars = [f"r{n}" for n in range(10)]
    fill_with_frequent_keys(cache, regulars)
    once = [f"once{n}" for n in range(50)]
    for key in once:  # one-hit wonders: each read once; the first ten find room
        read(cache, key)
    assert held(cache, regulars) == set(regulars)
    assert len(held(cache, once)) == 10
    # Each later one pushed its predecessor out of the window, to be refused at the door.
    assert cache.stats()["rejections"] == 40
    assert cache.stats()["evictions"] == 0

    # A key read often while it was not held (its loader kept failing, say) is let in.
    for _ in range(8):
        assert cache.get("popular") is None
    cache.put("popular", make_entry())
    read(cache, "next")  # pushes "popular" out of the window: it duels a one-hit wonder and wins
    assert "popular" in cache
    assert held(cache, regulars) == set(regulars)
    assert cache.stats()["evictions"] == 1


def test_a_long_scan_does_not_flush_the_hot_set():
    cache = L1Cache(max_entries=100)
    hot = [f"hot{n}" for n in range(60)]
    fill_with_frequent_keys(cache, hot, rounds=5)
    for n in range(5000):
        read(cache, f"crawl{n}")
    assert held(cache, hot) == set(hot)
    # Plain LRU of the same size keeps none of them.
    assert lru_hit_rate([*hot, *(f"crawl{n}" for n in range(5000)), *hot], 100) == 0.0


@pytest.mark.parametrize("songs", [150, 800])
def test_a_loop_larger_than_the_cache_keeps_hitting(songs):
    # With 800 keys the sketch's counters do not saturate: a candidate, just read, leads each
    # victim (about to be read again) by one, which must not count as a win.
    cache = L1Cache(max_entries=100)
    loop = [f"song{n}" for n in range(songs)] * 20
    hits = sum(read(cache, key) for key in loop)
    assert lru_hit_rate(loop, 100) == 0.0
    assert hits / len(loop) >= 0.95 * belady_hit_rate(loop, 100)


def test_the_window_grows_when_the_working_set_moves():
    cache = L1Cache(max_entries=100)
    rng = random.Random(3)
    assert cache.stats()["window_fraction"] == pytest.approx(0.01)
    late_hits = late_reads = 0
    for phase in range(40):
        current = [f"p{phase}:{n}" for n in range(80)]
        for _ in range(1000):
            hit = read(cache, rng.choice(current))
            if phase >= 30:
                late_hits += hit
                late_reads += 1
    assert cache.stats()["window_fraction"] > 0.5
    # LRU scores 1 - 80/1000 = 0.92 here (every phase costs its 80 first reads).
    assert late_hits / late_reads > 0.9


def test_the_window_stays_small_on_stable_skewed_traffic():
    cache = L1Cache(max_entries=100)
    rng = random.Random(4)
    keys = [f"k{n}" for n in range(3000)]
    weights = [1 / (rank + 1) for rank in range(len(keys))]
    fractions = []
    for n, key in enumerate(rng.choices(keys, weights=weights, k=30_000)):
        read(cache, key)
        if n % 100 == 0:
            fractions.append(cache.stats()["window_fraction"])
    assert max(fractions) < 0.25
    assert sum(fractions) / len(fractions) < 0.05


def duel_setup(newcomer: Priority, *, victim: Priority = Priority.NORMAL) -> L1Cache:
    """A 4-entry cache: a (priority ``victim``), b, c, then d (priority ``newcomer``), each read
    once; reading e pushes d out of the window to duel a, the oldest of equals."""
    cache = L1Cache(max_entries=4)
    read(cache, "a", priority=victim)
    read(cache, "b")
    read(cache, "c")
    read(cache, "d", priority=newcomer)
    read(cache, "e")
    return cache


def test_on_equal_frequency_the_higher_priority_wins_the_duel():
    assert held(duel_setup(Priority.HIGH), "abcde") == set("bcde")
    assert held(duel_setup(Priority.NORMAL), "abcde") == set("abce")  # a full tie: the incumbent stays
    assert held(duel_setup(Priority.LOW), "abcde") == set("abce")
    assert held(duel_setup(Priority.NORMAL, victim=Priority.LOW), "abcde") == set("bcde")
    # a and d both HIGH: the victim is b, the lower priority of the equally frequent.
    assert held(duel_setup(Priority.HIGH, victim=Priority.HIGH), "abcde") == set("acde")


def test_the_victim_is_the_least_frequent_of_the_oldest_not_simply_the_oldest():
    cache = L1Cache(max_entries=4)
    cache.get("a")
    cache.get("a")  # read twice while not held: a is frequent
    for key in "abcd":
        read(cache, key)
    for _ in range(3):
        cache.get("x")
    cache.put("x", make_entry())  # d duels b (least frequent, older than c) and loses a tie
    read(cache, "y")  # x duels b and wins
    assert held(cache, "abcdxy") == set("acxy")


def test_on_equal_frequency_the_lower_priority_entry_is_the_victim():
    cache = L1Cache(max_entries=4)
    for key in "abcd":
        read(cache, key, priority=Priority.LOW if key == "c" else Priority.NORMAL)
    read(cache, "e")  # d duels c (as frequent as a and b, lower priority) and wins the tie
    assert held(cache, "abcde") == set("abde")


# -- priority ---------------------------------------------------------------------------------


def test_critical_entries_survive_pressure_from_frequent_keys():
    cache = L1Cache(max_entries=20)
    critical = [f"crit{n}" for n in range(5)]
    for key in critical:
        assert cache.put(key, make_entry(priority=Priority.CRITICAL))
    others = [f"k{n}" for n in range(200)]
    for _ in range(5):
        for key in others:
            read(cache, key)
    assert held(cache, critical) == set(critical)
    assert cache.stats()["critical_entries"] == 5


def test_critical_entries_may_hold_at_most_half_the_entries():
    cache = L1Cache(max_entries=10)
    normal = [f"n{n}" for n in range(4)]
    fill_with_frequent_keys(cache, normal)
    critical = [f"crit{n}" for n in range(8)]
    for key in critical:
        cache.put(key, make_entry(priority=Priority.CRITICAL))
    assert held(cache, critical) == set(critical[3:])  # the five most recent; the oldest went
    assert held(cache, normal) == set(normal)  # the cap left them their half
    assert cache.stats()["critical_entries"] == 5


def test_critical_entries_may_hold_at_most_half_the_bytes():
    cache = L1Cache(max_entries=100, max_bytes=1000)
    for n in range(6):
        cache.put(f"crit{n}", make_entry(size=200, priority=Priority.CRITICAL))
    assert cache.stats()["critical_entries"] == 2
    assert cache.stats()["bytes"] == 400
    # Too big for the critical half: stored like a high-priority entry, which can be evicted.
    assert cache.put("huge", make_entry(size=600, priority=Priority.CRITICAL))
    assert cache.stats()["critical_entries"] == 2
    assert cache.stats()["bytes"] <= 1000


def test_a_critical_entry_is_never_evicted_while_a_normal_one_can_be():
    cache = L1Cache(max_entries=4)
    cache.put("crit", make_entry(priority=Priority.CRITICAL))
    for n in range(100):
        read(cache, f"k{n}")
        assert "crit" in cache
    # A key that turns critical moves to the critical segment and keeps its hits.
    cache.put("k99", make_entry(priority=Priority.CRITICAL))
    assert cache.stats()["critical_entries"] == 2


# -- tags -------------------------------------------------------------------------------------


def test_invalidate_tag_removes_exactly_the_tagged_keys():
    cache = L1Cache(max_entries=100)
    cache.put("show:1", make_entry(tags=("show:1",)))
    cache.put("show:1:songs", make_entry(tags=("show:1", "artist:9")))
    cache.put("show:2", make_entry(tags=("show:2", "artist:9")))
    cache.put("plain", make_entry())
    assert cache.keys_with_tag("show:1") == ["show:1", "show:1:songs"]
    assert cache.invalidate_tag("show:1") == 2
    assert held(cache, ["show:1", "show:1:songs", "show:2", "plain"]) == {"show:2", "plain"}
    assert cache.keys_with_tag("show:1") == []
    assert cache.keys_with_tag("artist:9") == ["show:2"]
    assert cache.invalidate_tag("show:1") == 0
    assert_consistent(cache, ["show:1", "show:1:songs", "show:2", "plain"], ["show:1", "show:2", "artist:9"])


def test_the_tag_index_follows_evictions_replacements_and_deletes():
    cache = L1Cache(max_entries=20, max_bytes=500)
    rng = random.Random(11)
    keys = [f"k{n}" for n in range(80)]
    tags = [f"t{n}" for n in range(6)]
    for step in range(4000):
        key = rng.choice(keys)
        roll = rng.random()
        if roll < 0.8:
            if cache.get(key) is None or roll < 0.1:  # sometimes replace a held key
                chosen = tuple(rng.sample(tags, rng.randrange(0, 3)))
                cache.put(key, make_entry(size=rng.randrange(1, 60), tags=chosen))
        elif roll < 0.9:
            cache.delete(key)
        elif roll < 0.92:
            cache.invalidate_tag(rng.choice(tags))
        if step % 100 == 0:
            assert_consistent(cache, keys, tags)
    assert_consistent(cache, keys, tags)


# -- expiry -----------------------------------------------------------------------------------


def test_fresh_then_stale_then_gone():
    clock = Clock(1000.0)
    cache = L1Cache(max_entries=10, clock=clock)
    cache.put("k", make_entry(value="v", fresh_until=1010.0, stale_until=1020.0))
    found = cache.get("k")
    assert found is not None
    assert found.fresh_until > clock.now  # fresh
    clock.now = 1015.0
    found = cache.get("k")
    assert found is not None  # stale, still served: the caller decides
    assert found.fresh_until <= clock.now
    clock.now = 1020.0
    assert cache.peek("k") is None  # gone; peek does not drop it
    assert len(cache) == 1
    assert cache.get("k") is None  # get drops it
    assert len(cache) == 0
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["expirations"]) == (2, 1, 1)


def test_purge_expired_drops_only_what_is_gone():
    clock = Clock(0.0)
    cache = L1Cache(max_entries=100, clock=clock)
    for n in range(10):
        cache.put(f"k{n}", make_entry(size=10, stale_until=float(n), tags=("t",)))
    clock.now = 5.0
    assert cache.purge_expired() == 6  # stale_until 0..5
    assert held(cache, [f"k{n}" for n in range(10)]) == {f"k{n}" for n in range(6, 10)}
    assert cache.stats()["bytes"] == 40
    assert cache.stats()["expirations"] == 6
    assert cache.keys_with_tag("t") == ["k6", "k7", "k8", "k9"]
    assert cache.purge_expired() == 0


# -- stats, peek, clear, top keys -------------------------------------------------------------


def test_stats_count_hits_misses_and_the_rate():
    cache = L1Cache(max_entries=10)
    for key in ["a", "b", "a", "a", "c", "b"]:
        read(cache, key)
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (3, 3)
    assert stats["hit_rate"] == 0.5
    assert (stats["entries"], stats["max_entries"]) == (3, 10)
    assert L1Cache().stats()["hit_rate"] == 0.0


def test_every_entry_stored_is_held_evicted_or_rejected():
    cache = L1Cache(max_entries=50)
    rng = random.Random(5)
    new_keys = 0
    for _ in range(5000):
        key = f"k{int(rng.paretovariate(1.0))}"
        if cache.get(key) is None:
            new_keys += 1
            cache.put(key, make_entry())
    stats = cache.stats()
    assert new_keys == stats["entries"] + stats["evictions"] + stats["rejections"]
    assert stats["evictions"] > 0
    assert stats["rejections"] > 0


def test_peek_has_no_effect_on_stats_or_policy():
    cache = L1Cache(max_entries=10)
    cache.put("k", make_entry(value=1))
    before = cache.stats()
    for _ in range(50):
        found = cache.peek("k")
        assert found is not None
        assert cache.peek("missing") is None
    assert "k" in cache
    assert 42 not in cache
    assert cache.stats() == before
    assert cache.top_keys() == [("k", 0)]


def test_top_keys_rank_held_keys_by_hits():
    cache = L1Cache(max_entries=10)
    for key, reads in [("a", 5), ("b", 9), ("c", 2), ("d", 1)]:
        for _ in range(reads):
            read(cache, key)
    assert cache.top_keys(3) == [("b", 8), ("a", 4), ("c", 1)]


def test_delete_and_clear():
    cache = L1Cache(max_entries=10)
    for key in "abc":
        cache.put(key, make_entry(size=5, tags=("t",)))
    assert cache.delete("a")
    assert not cache.delete("a")
    assert cache.clear() == 2
    assert len(cache) == 0
    assert cache.stats()["bytes"] == 0
    assert cache.keys_with_tag("t") == []
    assert cache.put("a", make_entry())


# -- concurrency ------------------------------------------------------------------------------


def test_many_threads_keep_the_invariants():
    cache = L1Cache(max_entries=50, max_bytes=5000)
    keys = [f"k{n}" for n in range(300)]
    tags = ["t0", "t1", "t2"]
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(3000):
                key = rng.choice(keys)
                roll = rng.random()
                if roll < 0.85:
                    if cache.get(key) is None:
                        priority = Priority.CRITICAL if roll < 0.02 else Priority.NORMAL
                        entry = make_entry(
                            size=rng.randrange(1, 200), priority=priority, tags=(rng.choice(tags),)
                        )
                        cache.put(key, entry)
                elif roll < 0.95:
                    cache.delete(key)
                elif roll < 0.97:
                    cache.invalidate_tag(rng.choice(tags))
                else:
                    cache.stats()
                    cache.top_keys(5)
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert_consistent(cache, keys, tags)
    assert cache.stats()["critical_entries"] <= 25


# -- properties -------------------------------------------------------------------------------

operations = st.lists(
    st.tuples(
        st.sampled_from(["read", "put", "delete", "invalidate", "tick", "purge"]),
        st.integers(0, 29),  # key
        st.integers(0, 120),  # size
        st.sampled_from(list(Priority)),
        st.sampled_from([(), ("a",), ("b",), ("a", "b")]),
    ),
    max_size=150,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations, st.integers(1, 12), st.integers(1, 400))
def test_invariants_hold_for_any_sequence(ops, max_entries, max_bytes):
    clock = Clock(0.0)
    cache = L1Cache(max_entries=max_entries, max_bytes=max_bytes, clock=clock)
    universe = [f"k{n}" for n in range(30)]
    for op, n, size, priority, tags in ops:
        key = universe[n]
        entry = make_entry(size=size, priority=priority, tags=tags, stale_until=clock.now + 5)
        if op == "read":
            if cache.get(key) is None:
                cache.put(key, entry)
        elif op == "put":
            stored = cache.put(key, entry)
            assert stored == (key in cache)
            if size > max_bytes:
                assert not stored
        elif op == "delete":
            cache.delete(key)
        elif op == "invalidate":
            cache.invalidate_tag(tags[0] if tags else "a")
        elif op == "tick":
            clock.now += 1
        else:
            cache.purge_expired()
        assert_consistent(cache, universe, ["a", "b"], clock)
        stats = cache.stats()
        assert stats["critical_entries"] <= max_entries // 2


# -- the benchmark's reference policies -------------------------------------------------------


def test_lru_on_a_hand_computed_trace():
    # capacity 2: A miss, B miss, A hit, C miss (evicts B), B miss (evicts A), A miss.
    assert lru_hit_rate(list("ABACBA"), 2) == pytest.approx(1 / 6)
    assert lru_hit_rate(list("ABCABC"), 2) == 0.0
    assert lru_hit_rate(list("AAAA"), 1) == 0.75
    assert lru_hit_rate([], 2) == 0.0


def test_next_uses_point_at_the_next_read_or_past_the_end():
    assert next_uses(list("ABAB")) == [2, 3, 4 + 2, 4 + 3]
    assert next_uses(list("AAA")) == [1, 2, 3 + 2]


def test_belady_on_hand_computed_traces():
    # capacity 2, "ABACBA": at C the farthest next use is C's own (never): C is not kept,
    # so B and A hit again: 3 hits. (Demand paging, forced to keep C, would get 2.)
    assert belady_hit_rate(list("ABACBA"), 2) == pytest.approx(3 / 6)
    # A loop of 3 keys in 2 slots: at C drop C (next use farthest), A and B hit, then C misses.
    assert belady_hit_rate(list("ABCABC"), 2) == pytest.approx(2 / 6)
    # "ABCBDAB" capacity 2: A, B miss; C miss (drop C: used never); B hit; D miss (drop D);
    # A hit; B hit.
    assert belady_hit_rate(list("ABCBDAB"), 2) == pytest.approx(3 / 7)
    assert belady_hit_rate([], 2) == 0.0


def test_static_hit_rate_counts_reads_of_the_held_set():
    assert static_hit_rate(list("ABCAB"), {"A", "B"}) == pytest.approx(4 / 5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 12), max_size=120), st.integers(1, 6))
def test_belady_is_never_beaten_by_lru_or_the_l1_policy(keys, capacity):
    trace = [f"k{n}" for n in keys]
    optimum = belady_hit_rate(trace, capacity)
    assert lru_hit_rate(trace, capacity) <= optimum
    assert l1_hit_rate(trace, capacity)[0] <= optimum


def test_every_reference_policy_agrees_when_everything_fits():
    trace = [f"k{n % 7}" for n in range(70)]
    expected = 63 / 70  # 7 compulsory misses
    assert lru_hit_rate(trace, 7) == pytest.approx(expected)
    assert belady_hit_rate(trace, 7) == pytest.approx(expected)
    assert l1_hit_rate(trace, 7)[0] == pytest.approx(expected)
