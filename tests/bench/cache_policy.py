"""Hit rate of the L1 cache's policy beside plain LRU and Belady's optimum (``make bench-cache``).

What is measured: each workload is a fixed trace of key reads (seeded, so every run replays the
same requests). Each trace is replayed against three caches of the SAME capacity in entries (all
entries the same size, so only the entry bound binds):

* ``l1``: the real ``mysetlist.cache.l1.L1Cache``, used as the two-level cache uses it: ``get``,
  and on a miss ``put`` (which the policy may refuse);
* ``lru``: plain LRU (an OrderedDict), the policy the original's in-process maps amounted to;
* ``belady``: Belady's MIN, the offline optimum: on a miss, of the cached keys and the newcomer,
  drop the one whose next use is farthest in the future (it may be the newcomer: like L1, MIN
  may decline to cache). Next uses are precomputed in one backward pass and kept in a max-heap
  with lazy deletion, so the whole trace costs O(n log capacity).

For the Zipf workloads the line also gives ``static_optimum``: the hit rate of a cache that
always holds the ``capacity`` truly most popular keys. Reads drawn independently from a fixed
popularity are the textbook case where that is the best any policy that cannot see the future
can do; the gap between it and Belady is what knowing the future is worth, which no real cache
can close. At Zipf 0.8 that gap alone is about 8.5 points, so the issue's "within 5 points of
the optimum" cannot hold there for any policy; the line reports it as measured (false), with
``static_optimum`` beside it to show how much of the distance is the policy's. Each line says
whether the issue's targets hold (never below LRU; within 5 points of Belady on the Zipf
workloads), and ``l1_us_per_request`` the L1's cost per read (get, plus put on a miss) on this
machine.

Workloads (300,000 reads each; capacity 1,000 entries: the original's ``l1MaxSize``; a
catalogue of 30,000 keys: 2,000 artists, 8,000 shows, 20,000 songs). The caches start empty, as
a new container's does, so the warm-up counts:

* ``zipf-0.8``: catalogue browsing. Web request popularity follows Zipf with exponent about
  0.64-0.83 (Breslau et al., "Web Caching and Zipf-like Distributions", 1999).
* ``zipf-1.1``: a show night: traffic concentrates on the pages and tallies of the shows being
  played, more skewed than browsing.
* ``loop``: every song page of tonight's shows, 1,500 keys (more than the cache holds), read in
  the same order again and again (a client paging through the whole list, the warmer). LRU
  evicts each key just before it comes back.
* ``burst``: shows go live one after another; each brings 400 new keys that take most of the
  traffic while it plays, the previous show keeps some, and the catalogue the rest. The working
  set moves, which favours recency.
* ``mix``: Zipf 0.9 background with a crawler's one-off scan of 3,000 unseen pages every 25,000
  reads and a show going live (300 new hot keys for 10,000 reads) every 50,000 reads.
* ``shift``: the extreme of recency: each show's 800 keys take every read for 10,000 reads, then
  the next show's, and nothing else is read. Here LRU *is* the optimum (Belady scores the same),
  so the best any policy can do is tie with it; what L1 loses is the time its window takes to
  grow from the 1% it starts with (it starts tuned for stable popularity).

The cache's sketch hashes keys with Python's salted string hash, so the last digit of ``l1`` can
move between runs; the traces themselves are fixed.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import random
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from mysetlist.cache.l1 import L1Cache, L1Entry, Priority

CAPACITY = 1000
REQUESTS = 300_000
ARTISTS, SHOWS, SONGS = 2_000, 8_000, 20_000
TARGET_POINTS_FROM_OPTIMUM = 0.05


@dataclass(frozen=True)
class Workload:
    """A named, reproducible trace."""

    name: str
    description: str
    trace: list[str]
    static_optimum: float | None = None  # Zipf workloads only (see the module docstring)


# -- reference policies -----------------------------------------------------------------------


def lru_hit_rate(trace: Sequence[Hashable], capacity: int) -> float:
    """Hit rate of plain LRU holding ``capacity`` keys."""
    cache: OrderedDict[Hashable, None] = OrderedDict()
    hits = 0
    for key in trace:
        if key in cache:
            cache.move_to_end(key)
            hits += 1
        else:
            cache[key] = None
            if len(cache) > capacity:
                cache.popitem(last=False)
    return hits / len(trace) if trace else 0.0


def next_uses(trace: Sequence[Hashable]) -> list[int]:
    """For each position, where its key is read next; ``len(trace) + position`` if never again
    (distinct values, all past the end, so the farthest "never" goes first)."""
    n = len(trace)
    following = [0] * n
    seen: dict[Hashable, int] = {}
    for position in range(n - 1, -1, -1):
        key = trace[position]
        following[position] = seen.get(key, n + position)
        seen[key] = position
    return following


def belady_hit_rate(trace: Sequence[Hashable], capacity: int) -> float:
    """Hit rate of Belady's MIN (with the option of not caching the newcomer)."""
    following = next_uses(trace)
    held: dict[Hashable, int] = {}  # key -> its next use
    farthest: list[tuple[int, int]] = []  # (-next use, position of the read that set it)
    hits = 0
    for position, key in enumerate(trace):
        if key in held:
            hits += 1
        held[key] = following[position]
        heapq.heappush(farthest, (-following[position], position))
        while len(held) > capacity:
            negative_use, at = heapq.heappop(farthest)
            stale = trace[at]
            if held.get(stale) == -negative_use:  # not superseded by a later read of that key
                del held[stale]
    return hits / len(trace) if trace else 0.0


def l1_hit_rate(trace: Sequence[str], capacity: int) -> tuple[float, float]:
    """Hit rate of ``L1Cache`` used as the two-level cache uses it, and microseconds per read."""
    cache = L1Cache(max_entries=capacity, clock=lambda: 0.0)
    entry = L1Entry(
        value=None,
        size=1,
        priority=Priority.NORMAL,
        fresh_until=float("inf"),
        stale_until=float("inf"),
        stored_at=0.0,
    )
    get, put = cache.get, cache.put
    started = time.perf_counter()
    for key in trace:
        if get(key) is None:
            put(key, entry)
    elapsed = time.perf_counter() - started
    hits = int(cache.stats()["hits"])
    return (hits / len(trace) if trace else 0.0), (elapsed / len(trace) * 1e6 if trace else 0.0)


def static_hit_rate(trace: Sequence[str], held: set[str]) -> float:
    """Hit rate of a cache that always holds exactly ``held``."""
    return sum(1 for key in trace if key in held) / len(trace) if trace else 0.0


# -- workloads --------------------------------------------------------------------------------


def catalogue_keys() -> list[str]:
    """The catalogue's cache keys, in a fixed order."""
    return (
        [f"artist:{n}" for n in range(ARTISTS)]
        + [f"show:{n}" for n in range(SHOWS)]
        + [f"song:{n}" for n in range(SONGS)]
    )


class ZipfKeys:
    """Keys drawn by Zipf popularity (rank r has weight 1/r**skew); which key has which rank
    is a seeded shuffle, so popularity does not follow the key's kind or number."""

    def __init__(self, keys: Sequence[str], skew: float, rng: random.Random) -> None:
        self.by_rank = list(keys)
        rng.shuffle(self.by_rank)
        self.cumulative = list(itertools.accumulate(1.0 / rank**skew for rank in range(1, len(keys) + 1)))
        self._rng = rng

    def draw(self, count: int) -> list[str]:
        ranks = self._rng.choices(range(len(self.by_rank)), cum_weights=self.cumulative, k=count)
        return [self.by_rank[rank] for rank in ranks]

    def most_popular(self, count: int) -> set[str]:
        return set(self.by_rank[:count])


def zipf_workload(skew: float, requests: int, capacity: int, seed: int, description: str) -> Workload:
    zipf = ZipfKeys(catalogue_keys(), skew, random.Random(seed))
    trace = zipf.draw(requests)
    return Workload(
        name=f"zipf-{skew}",
        description=description,
        trace=trace,
        static_optimum=static_hit_rate(trace, zipf.most_popular(capacity)),
    )


def loop_workload(requests: int, songs: int) -> Workload:
    keys = [f"song:tonight:{n}" for n in range(songs)]
    trace = list(itertools.islice(itertools.cycle(keys), requests))
    return Workload(
        name="loop",
        description=f"every song page of tonight's shows ({songs} keys) read in order, again and again",
        trace=trace,
    )


def burst_workload(requests: int, seed: int) -> Workload:
    rng = random.Random(seed)
    background = ZipfKeys(catalogue_keys(), 0.8, rng)
    phase, hot = 15_000, 400
    trace: list[str] = []
    previous: list[str] = []
    for show in itertools.count():
        if len(trace) >= requests:
            break
        current = [f"live:{show}:{n}" for n in range(hot)]
        catalogue = iter(background.draw(phase))
        for _ in range(phase):
            roll = rng.random()
            if roll < 0.6:
                trace.append(rng.choice(current))
            elif roll < 0.8 and previous:
                trace.append(rng.choice(previous))
            else:
                trace.append(next(catalogue))
        previous = current
    return Workload(
        name="burst",
        description=(
            f"shows go live one after another: {hot} new keys per show take 60% of the reads for "
            f"{phase} reads, the previous show 20%, a Zipf 0.8 catalogue the rest"
        ),
        trace=trace[:requests],
    )


def shift_workload(requests: int, seed: int) -> Workload:
    rng = random.Random(seed)
    phase, hot = 10_000, 800
    trace: list[str] = []
    for show in itertools.count():
        if len(trace) >= requests:
            break
        current = [f"live:{show}:{n}" for n in range(hot)]
        trace.extend(rng.choice(current) for _ in range(phase))
    return Workload(
        name="shift",
        description=(
            f"each show's {hot} keys take every read for {phase} reads, then the next show's; "
            "nothing else (LRU is optimal here)"
        ),
        trace=trace[:requests],
    )


def mix_workload(requests: int, seed: int) -> Workload:
    rng = random.Random(seed)
    background = ZipfKeys(catalogue_keys(), 0.9, rng)
    scan_every, scan_length = 25_000, 3_000
    burst_every, burst_length, burst_keys, burst_share = 50_000, 10_000, 300, 0.5
    draws = iter(background.draw(requests))
    trace: list[str] = []
    scans = 0
    while len(trace) < requests:
        position = len(trace)
        if position and position % scan_every == 0:
            trace.extend(f"crawl:{scans}:{n}" for n in range(scan_length))
            scans += 1
        burst = position // burst_every
        if position % burst_every < burst_length and rng.random() < burst_share:
            trace.append(f"live:{burst}:{rng.randrange(burst_keys)}")
        else:
            trace.append(next(draws))
    return Workload(
        name="mix",
        description=(
            f"Zipf 0.9 catalogue; a one-off scan of {scan_length} unseen pages every {scan_every} reads; "
            f"{burst_keys} new hot keys taking {burst_share:.0%} of the reads for {burst_length} reads "
            f"every {burst_every}"
        ),
        trace=trace[:requests],
    )


def workloads(requests: int, capacity: int) -> list[Workload]:
    """The benchmark's workloads, in output order."""
    return [
        zipf_workload(0.8, requests, capacity, 8, "catalogue browsing: Zipf 0.8 over 30,000 keys"),
        zipf_workload(1.1, requests, capacity, 11, "a show night: Zipf 1.1 over 30,000 keys"),
        loop_workload(requests, songs=capacity * 3 // 2),
        burst_workload(requests, seed=21),
        mix_workload(requests, seed=31),
        shift_workload(requests, seed=41),
    ]


# -- report -----------------------------------------------------------------------------------


def measure(workload: Workload, capacity: int) -> dict[str, object]:
    """One output line for ``workload``."""
    l1, us_per_read = l1_hit_rate(workload.trace, capacity)
    lru = lru_hit_rate(workload.trace, capacity)
    belady = belady_hit_rate(workload.trace, capacity)
    zipf = workload.static_optimum is not None
    line: dict[str, object] = {
        "bench": "cache_policy",
        "workload": workload.name,
        "description": workload.description,
        "capacity": capacity,
        "keys": len(set(workload.trace)),
        "requests": len(workload.trace),
        "l1": round(l1, 4),
        "lru": round(lru, 4),
        "belady": round(belady, 4),
    }
    if zipf:
        line["static_optimum"] = round(workload.static_optimum or 0.0, 4)
    line |= {
        "l1_minus_lru": round(l1 - lru, 4),
        "belady_minus_l1": round(belady - l1, 4),
        "l1_us_per_request": round(us_per_read, 2),
        "targets": {
            "not_below_lru": l1 >= lru,
            "within_5_points_of_optimum": (belady - l1 <= TARGET_POINTS_FROM_OPTIMUM) if zipf else None,
        },
    }
    return line


def main(argv: Sequence[str] | None = None, out: Callable[[str], object] = print) -> int:
    """Print one JSON line per workload; always 0 (the lines say whether targets hold)."""
    parser = argparse.ArgumentParser(description="L1 policy hit rate vs LRU and Belady's optimum.")
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--capacity", type=int, default=CAPACITY)
    parser.add_argument("--only", action="append", help="run only this workload (repeatable)")
    args = parser.parse_args(argv)
    for workload in workloads(args.requests, args.capacity):
        if args.only and workload.name not in args.only:
            continue
        out(json.dumps(measure(workload, args.capacity)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
