"""The in-process (L1) cache: bounded by entries and bytes, frequency-aware, priority-aware.

One ``L1Cache`` per container, shared by every request the container serves (and by threads, so
every public method takes one lock). It stores ``L1Entry`` objects the caller builds: the value,
its size in bytes (the caller measures it, e.g. the length of the serialized form), its priority,
its freshness deadlines, its tags and an opaque ``meta``. L1 decides only which entries stay;
what an entry means is the two-level cache's business.

The policy, a window TinyLFU written for this project from the published design:

* **Frequency sketch.** Every ``get`` (hit or miss) counts the key in a count-min sketch: four
  rows of 16 x ``max_entries`` counters (at most 65,536) saturating at 15, conservative update (only the
  counters at the key's current minimum grow). After a sample of increments every counter is
  halved, so the sketch estimates *recent* popularity and a formerly hot key fades. It costs 64
  bytes per entry of capacity and remembers keys the cache no longer holds, which is what lets
  it judge a newcomer.
* **Window, probation, protected.** A newcomer enters a small LRU *window*. When the cache is
  full and the window over its share, the window's oldest entry becomes a *candidate* for the
  main region and duels a *victim*: of the four least recently used entries of *probation*, the
  one with the lowest estimated frequency (then the lowest priority, then the oldest). The
  candidate wins on frequency only if it leads by more than one access: its latest access was
  counted as it arrived, while the victim's next one may be imminent (without this slack a loop
  over more keys than the cache holds keeps replacing the key about to be read, as LRU does). A
  lead of zero or one is a tie, which goes to the higher priority, then to the incumbent. A
  candidate that loses is a *rejection* (refused admission), a victim that loses an *eviction*.
  The main region is a segmented LRU: a hit in probation moves the entry to *protected* (80% of
  the main region), protected overflow drops back to probation, so one-hit wonders only ever
  churn probation. A long one-off scan passes through the window and is refused at the door; a
  loop keeps the part of it that is already in.
* **Adaptive window.** Frequency is the wrong signal when the working set moves (a show goes
  live and its keys are new): there recency wins, and a bigger window behaves like LRU. The
  cache remembers (keys only) the last ``max_entries / 8`` keys refused at the door and the last
  ``max_entries / 8`` keys evicted from the main region. A miss on a key refused a moment ago
  means a bigger window would have held it: the window grows. A miss on a key evicted from main
  a moment ago means a bigger main region would have: the window shrinks. Each such miss moves
  it by one entry plus a tenth of its size, so it can go from 1% to 80% of the cache within a
  few thousand reads. The two ghost lists measure, on the same traffic at the same time, what the next slots
  are worth in each region. The window ranges from one entry to 80% of the non-critical
  capacity; while it grows, the main region yields its least recent entries. The sketch's
  memory follows the window: with a small window (a frequency regime) it keeps about 40 x
  ``max_entries`` increments of history, from a window of a quarter of the cache on 10 x, so a
  stable popularity is estimated over a long history and a moving working set is forgotten
  quickly. Hill climbing on the hit rate, the usual way to size the window, was measured on the
  same traces and rejected: hit rates from one period to the next move with the traffic far more
  than with the window, so it wandered on stable traffic and could not follow moving traffic
  (on a working set replaced every 10,000 reads it reached 0.55 where LRU reaches 0.920 and
  this policy 0.919).
* **Priority.** ``CRITICAL`` entries bypass the duel and live in their own LRU segment; they are
  never evicted while a non-critical entry could be evicted instead, except that they may hold
  at most half the entries and half the bytes, so they cannot starve everything else: past
  either half, the least recently used critical entry goes, whether or not the cache is full
  (critical entries compete only with each other). A critical entry too big for the critical
  half (or in a cache of one entry) is stored like a ``HIGH`` one. In a duel ``HIGH`` beats
  ``NORMAL`` and ``LOW`` (and ``NORMAL`` beats ``LOW``) on a tie, and the victim is chosen
  lowest frequency first, lowest priority next.
* **Bounds.** After every insert or replacement entries are removed until both the entry bound
  and the byte bound hold. When only the byte bound is exceeded and the entry just stored is in
  the window, that entry is the candidate: it must beat each victim it would displace, one by
  one, so a large one-hit wonder cannot flush the main region. An entry larger than
  ``max_bytes`` is refused outright.
* **Expiry.** An entry is gone from ``stale_until`` on: ``get`` drops it on access (a miss,
  counted as an expiration) and ``purge_expired`` drops all of them. Between ``fresh_until`` and
  ``stale_until`` the entry is stale but served: the caller decides what to do with it.

Python's string hash is salted per process, so nobody outside can aim keys at one sketch
counter; the admission needs no random element.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from operator import itemgetter
from typing import Any, Final


class Priority(IntEnum):
    """How hard an entry holds on to its place (see the module docstring)."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3


@dataclass(slots=True)
class L1Entry:
    """One cached value and what the policy needs to know about it."""

    value: Any
    size: int  # bytes, measured by the caller
    priority: Priority
    fresh_until: float  # clock seconds; from then on the value is stale (the caller decides whether to serve)
    stale_until: float  # from then on the entry is gone
    stored_at: float
    tags: tuple[str, ...] = ()
    meta: Any = None  # opaque to L1


# Segments: each an OrderedDict from key to entry, least recently used first.
_WINDOW: Final = 0
_PROBATION: Final = 1
_PROTECTED: Final = 2
_CRITICAL: Final = 3

# Protected share of the main region (the rest is probation).
PROTECTED_FRACTION: Final = 0.8
# The window's share of the non-critical capacity: at start, and at most.
INITIAL_WINDOW_FRACTION: Final = 0.01
MAX_WINDOW_FRACTION: Final = 0.8
# Each ghost list remembers this many keys per entry of capacity.
GHOST_FRACTION: Final = 0.125
# How many of probation's least recent entries the victim is chosen from.
VICTIM_CHOICES: Final = 4
# A candidate leading its victim by at most this many accesses only ties (see the docstring).
TIE_SLACK: Final = 1
# Each ghost hit moves the window by one entry plus this share of its size.
WINDOW_STEP_GAIN: Final = 0.1
# Sketch: counters per row per entry of capacity; history (increments between halvings, per
# entry of capacity) with a minimal window and from a window of REGIME_WINDOW_FRACTION on.
SKETCH_WIDTH_FACTOR: Final = 16
LONG_HISTORY: Final = 40
SHORT_HISTORY: Final = 10
REGIME_WINDOW_FRACTION: Final = 0.25

_COUNTER_MAX: Final = 15
_HALVE: Final = bytes(i >> 1 for i in range(256))


class _FrequencySketch:
    """Count-min sketch of counters saturating at 15 (one byte each), aged by halving.

    Four rows, each indexed by its own 16 bits of the key's 64-bit ``hash()`` (so a row holds
    at most 65,536 counters: beyond 4,096 entries of capacity the width per entry shrinks);
    conservative increments. Written for CPython's speed: bit slices and conditional
    expressions cost about a third of double hashing and ``min()``.
    """

    __slots__ = ("_additions", "_mask", "_row0", "_row1", "_row2", "_row3", "sample_size")

    def __init__(self, capacity: int, sample_size: int) -> None:
        bits = min(16, max(4, (capacity * SKETCH_WIDTH_FACTOR - 1).bit_length()))
        self._mask = (1 << bits) - 1
        self._row0 = bytearray(1 << bits)
        self._row1 = bytearray(1 << bits)
        self._row2 = bytearray(1 << bits)
        self._row3 = bytearray(1 << bits)
        self._additions = 0
        self.sample_size = sample_size  # increments between halvings

    def increment(self, h: int) -> None:
        m = self._mask
        i0, i1, i2, i3 = h & m, (h >> 16) & m, (h >> 32) & m, (h >> 48) & m
        r0, r1, r2, r3 = self._row0, self._row1, self._row2, self._row3
        v0, v1, v2, v3 = r0[i0], r1[i1], r2[i2], r3[i3]
        low01 = v0 if v0 < v1 else v1
        low23 = v2 if v2 < v3 else v3
        low = low01 if low01 < low23 else low23
        if low >= _COUNTER_MAX:
            return
        up = low + 1
        if v0 == low:
            r0[i0] = up
        if v1 == low:
            r1[i1] = up
        if v2 == low:
            r2[i2] = up
        if v3 == low:
            r3[i3] = up
        self._additions += 1
        if self._additions >= self.sample_size:
            self._halve()

    def frequency(self, h: int) -> int:
        m = self._mask
        v0, v1 = self._row0[h & m], self._row1[(h >> 16) & m]
        v2, v3 = self._row2[(h >> 32) & m], self._row3[(h >> 48) & m]
        low01 = v0 if v0 < v1 else v1
        low23 = v2 if v2 < v3 else v3
        return low01 if low01 < low23 else low23

    def _halve(self) -> None:
        self._row0 = self._row0.translate(_HALVE)
        self._row1 = self._row1.translate(_HALVE)
        self._row2 = self._row2.translate(_HALVE)
        self._row3 = self._row3.translate(_HALVE)
        # The counters now hold half the history: the next halving comes after half a sample.
        self._additions //= 2


class L1Cache:
    """A thread-safe in-process cache bounded by ``max_entries`` and ``max_bytes``.

    ``clock`` gives the time the entries' deadlines are compared with (injected in tests).
    Raises ValueError when a bound is not positive.
    """

    def __init__(
        self,
        max_entries: int = 1000,
        max_bytes: int = 256 * 2**20,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._critical_max_entries = max_entries // 2
        self._critical_max_bytes = max_bytes // 2
        self._clock = clock
        self._lock = threading.Lock()
        self._segments: tuple[OrderedDict[str, L1Entry], ...] = (
            OrderedDict(),
            OrderedDict(),
            OrderedDict(),
            OrderedDict(),
        )
        self._where: dict[str, int] = {}  # key -> segment
        self._hits_of: dict[str, int] = {}  # key -> hits since stored
        self._tagged: dict[str, set[str]] = {}  # tag -> keys
        self._bytes = 0
        self._segment_bytes = [0, 0, 0, 0]
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._rejections = 0
        self._expirations = 0
        # Window adaptation: keys refused at the door, keys evicted from main (oldest first).
        self._refused: OrderedDict[str, None] = OrderedDict()
        self._evicted: OrderedDict[str, None] = OrderedDict()
        self._ghost_size = max(1, int(max_entries * GHOST_FRACTION))
        self._window_fraction = INITIAL_WINDOW_FRACTION
        self._sketch = _FrequencySketch(max_entries, self._history())
        self._window_cap = self._protected_cap = 1
        self._resize()

    # -- reads ------------------------------------------------------------------------------

    def get(self, key: str) -> L1Entry | None:
        """The live entry for ``key`` or None. Counts a hit or a miss, records the access in the
        frequency sketch (also on a miss) and refreshes the entry's recency. An entry past its
        ``stale_until`` is dropped and reported as a miss (and an expiration)."""
        with self._lock:
            self._sketch.increment(hash(key))
            segment_id = self._where.get(key)
            if segment_id is None:
                self._misses += 1
                self._adapt_window(key)
                return None
            segment = self._segments[segment_id]
            entry = segment[key]
            if self._clock() >= entry.stale_until:
                self._remove(key, segment_id)
                self._expirations += 1
                self._misses += 1
                return None
            self._hits += 1
            self._hits_of[key] += 1
            if segment_id == _PROBATION:
                self._promote(key)
            else:
                segment.move_to_end(key)
            return entry

    def peek(self, key: str) -> L1Entry | None:
        """The live entry for ``key`` or None, with no effect on statistics or policy."""
        with self._lock:
            segment_id = self._where.get(key)
            if segment_id is None:
                return None
            entry = self._segments[segment_id][key]
            return None if self._clock() >= entry.stale_until else entry

    def __contains__(self, key: object) -> bool:
        """True when ``key`` has a live entry (like ``peek``: no effect on the policy)."""
        return isinstance(key, str) and self.peek(key) is not None

    def __len__(self) -> int:
        """Entries held, including expired ones not dropped yet."""
        with self._lock:
            return len(self._where)

    def keys_with_tag(self, tag: str) -> list[str]:
        """The keys held under ``tag``, sorted."""
        with self._lock:
            return sorted(self._tagged.get(tag, ()))

    def top_keys(self, n: int = 10) -> list[tuple[str, int]]:
        """The ``n`` held keys with the most hits since they were stored, most first (exact
        counts: the sketch's counters saturate at 15, too low to rank hot keys)."""
        with self._lock:
            return heapq.nlargest(n, self._hits_of.items(), key=itemgetter(1))

    def stats(self) -> dict[str, int | float]:
        """Counters since construction and the current occupancy.

        ``evictions`` counts entries removed as victims to respect the bounds (from any
        segment); ``rejections`` counts admission refusals: window candidates that lost their
        duel, and entries refused outright (bigger than ``max_bytes``). They do not overlap.
        Expirations and explicit deletes are in neither.
        """
        with self._lock:
            reads = self._hits + self._misses
            return {
                "hits": self._hits,
                "misses": self._misses,
                "hit_rate": self._hits / reads if reads else 0.0,
                "evictions": self._evictions,
                "rejections": self._rejections,
                "expirations": self._expirations,
                "bytes": self._bytes,
                "entries": len(self._where),
                "max_entries": self._max_entries,
                "max_bytes": self._max_bytes,
                "critical_entries": len(self._segments[_CRITICAL]),
                "window_fraction": round(self._window_fraction, 4),
            }

    # -- writes -----------------------------------------------------------------------------

    def put(self, key: str, entry: L1Entry) -> bool:
        """Store ``entry`` under ``key``; True if it is held afterwards.

        A new key enters the window (a critical one its own segment) and entries are removed
        until both bounds hold, which may refuse the newcomer itself. Replacing a held key
        updates it in place (value, size, tags) and refreshes its recency, not its frequency.
        An entry bigger than ``max_bytes`` is refused, and the value it would have replaced is
        dropped (it is superseded). Raises ValueError on a negative size.
        """
        if entry.size < 0:
            raise ValueError("entry size must not be negative")
        with self._lock:
            segment_id = self._where.get(key)
            if entry.size > self._max_bytes:
                if segment_id is not None:
                    self._remove(key, segment_id)
                self._rejections += 1
                return False
            target = _CRITICAL if self._is_critical(entry) else _WINDOW
            if segment_id is not None and (segment_id == _CRITICAL) == (target == _CRITICAL):
                self._replace(key, segment_id, entry)
            else:
                hits = 0
                if segment_id is not None:
                    hits = self._hits_of[key]
                    self._remove(key, segment_id)
                self._insert(key, target, entry, hits)
            self._enforce_bounds(key)
            return key in self._where

    def delete(self, key: str) -> bool:
        """Drop ``key``; True if it was held."""
        with self._lock:
            segment_id = self._where.get(key)
            if segment_id is None:
                return False
            self._remove(key, segment_id)
            return True

    def clear(self) -> int:
        """Drop every entry; how many. The frequency sketch stays (it describes the traffic,
        not the contents); the ghost lists go (they describe evictions)."""
        with self._lock:
            removed = len(self._where)
            for segment in self._segments:
                segment.clear()
            self._where.clear()
            self._hits_of.clear()
            self._tagged.clear()
            self._refused.clear()
            self._evicted.clear()
            self._bytes = 0
            self._segment_bytes = [0, 0, 0, 0]
            return removed

    def invalidate_tag(self, tag: str) -> int:
        """Drop every entry stored with ``tag`` (through the tag index); how many."""
        with self._lock:
            keys = self._tagged.pop(tag, None)
            if not keys:
                return 0
            for key in list(keys):
                self._remove(key, self._where[key])
            return len(keys)

    def purge_expired(self) -> int:
        """Drop every entry past its ``stale_until``; how many."""
        with self._lock:
            now = self._clock()
            gone = [
                (key, segment_id)
                for segment_id, segment in enumerate(self._segments)
                for key, entry in segment.items()
                if now >= entry.stale_until
            ]
            for key, segment_id in gone:
                self._remove(key, segment_id)
            self._expirations += len(gone)
            return len(gone)

    # -- bookkeeping (called with the lock held) --------------------------------------------

    def _is_critical(self, entry: L1Entry) -> bool:
        return (
            entry.priority >= Priority.CRITICAL
            and self._critical_max_entries > 0
            and entry.size <= self._critical_max_bytes
        )

    def _insert(self, key: str, segment_id: int, entry: L1Entry, hits: int) -> None:
        self._segments[segment_id][key] = entry
        self._where[key] = segment_id
        self._hits_of[key] = hits
        self._bytes += entry.size
        self._segment_bytes[segment_id] += entry.size
        for tag in entry.tags:
            self._tagged.setdefault(tag, set()).add(key)
        if segment_id == _CRITICAL:
            self._resize()

    def _replace(self, key: str, segment_id: int, entry: L1Entry) -> None:
        segment = self._segments[segment_id]
        old = segment[key]
        segment[key] = entry
        segment.move_to_end(key)
        delta = entry.size - old.size
        self._bytes += delta
        self._segment_bytes[segment_id] += delta
        if old.tags != entry.tags:
            self._untag(key, old.tags)
            for tag in entry.tags:
                self._tagged.setdefault(tag, set()).add(key)

    def _remove(self, key: str, segment_id: int) -> None:
        entry = self._segments[segment_id].pop(key)
        del self._where[key]
        del self._hits_of[key]
        self._bytes -= entry.size
        self._segment_bytes[segment_id] -= entry.size
        self._untag(key, entry.tags)
        if segment_id == _CRITICAL:
            self._resize()

    def _untag(self, key: str, tags: tuple[str, ...]) -> None:
        for tag in tags:
            keys = self._tagged.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._tagged[tag]

    def _move(self, key: str, source: int, target: int) -> None:
        entry = self._segments[source].pop(key)
        self._segments[target][key] = entry
        self._where[key] = target
        self._segment_bytes[source] -= entry.size
        self._segment_bytes[target] += entry.size

    # -- policy (called with the lock held) -------------------------------------------------

    def _resize(self) -> None:
        """Recompute the window's and protected's shares (the window fraction or the number of
        critical entries changed)."""
        normal = self._max_entries - len(self._segments[_CRITICAL])
        self._window_cap = max(1, int(normal * self._window_fraction))
        self._protected_cap = max(1, int((normal - self._window_cap) * PROTECTED_FRACTION))
        protected = self._segments[_PROTECTED]
        while len(protected) > self._protected_cap:
            self._move(next(iter(protected)), _PROTECTED, _PROBATION)

    def _history(self) -> int:
        """Sketch increments between halvings for the current window (see the docstring)."""
        regime = min(1.0, self._window_fraction / REGIME_WINDOW_FRACTION)
        factor = LONG_HISTORY - (LONG_HISTORY - SHORT_HISTORY) * regime
        return max(16, int(self._max_entries * factor))

    def _adapt_window(self, key: str) -> None:
        """A miss: was ``key`` refused at the door, or evicted from main, a moment ago?"""
        step = (1 + WINDOW_STEP_GAIN * self._window_cap) / self._max_entries
        if key in self._refused:
            del self._refused[key]
            self._window_fraction = min(MAX_WINDOW_FRACTION, self._window_fraction + step)
        elif key in self._evicted:
            del self._evicted[key]
            self._window_fraction = max(1 / self._max_entries, self._window_fraction - step)
        else:
            return
        self._sketch.sample_size = self._history()
        self._resize()

    def _remember(self, ghost: OrderedDict[str, None], key: str) -> None:
        ghost[key] = None
        ghost.move_to_end(key)
        if len(ghost) > self._ghost_size:
            ghost.popitem(last=False)

    def _promote(self, key: str) -> None:
        """A hit in probation: the entry moves to protected; protected overflow drops back."""
        self._move(key, _PROBATION, _PROTECTED)
        protected = self._segments[_PROTECTED]
        while len(protected) > self._protected_cap:
            self._move(next(iter(protected)), _PROTECTED, _PROBATION)

    def _victim(self) -> tuple[str, int, int] | None:
        """The main region's victim and its estimated frequency: of probation's least recent
        entries (protected's when probation is empty), the least frequent, then the lowest
        priority, then the oldest."""
        segment_id = _PROBATION if self._segments[_PROBATION] else _PROTECTED
        frequency = self._sketch.frequency
        chosen: tuple[str, int, int] | None = None
        rank = (0, 0)
        for key, entry in itertools.islice(self._segments[segment_id].items(), VICTIM_CHOICES):
            estimate = frequency(hash(key))
            if chosen is None or (estimate, entry.priority) < rank:
                chosen, rank = (key, segment_id, estimate), (estimate, entry.priority)
        return chosen

    def _admit(self, candidate: str, victim: str, victim_segment: int, victim_frequency: int) -> bool:
        """Does the window's candidate beat the main region's victim?"""
        lead = self._sketch.frequency(hash(candidate)) - victim_frequency
        if lead > TIE_SLACK:
            return True
        if lead < 0:
            return False
        candidate_priority = self._segments[_WINDOW][candidate].priority
        return candidate_priority > self._segments[victim_segment][victim].priority

    def _evict(self, key: str, segment_id: int) -> None:
        self._remove(key, segment_id)
        self._evictions += 1
        if segment_id in (_PROBATION, _PROTECTED):
            self._remember(self._evicted, key)
        elif segment_id == _WINDOW:
            self._remember(self._refused, key)

    def _enforce_bounds(self, newcomer: str) -> None:
        """Remove entries until both bounds hold; ``newcomer`` is the key just stored."""
        window, probation, protected, critical = self._segments
        while (
            len(critical) > self._critical_max_entries
            or self._segment_bytes[_CRITICAL] > self._critical_max_bytes
        ):
            self._evict(next(iter(critical)), _CRITICAL)
        while len(self._where) > self._max_entries or self._bytes > self._max_bytes:
            main = probation or protected
            if len(self._where) > self._max_entries:
                if window and (len(window) > self._window_cap or not main):
                    self._duel(next(iter(window)))
                elif main:
                    # The window is within its share (it is growing): the main region yields
                    # its least recent entry (an older working set goes first, however
                    # frequent it was).
                    self._evict_least_recent_of_main()
                else:  # only critical entries are left (unreachable while the caps hold)
                    self._evict(next(iter(critical)), _CRITICAL)
            # Over the byte bound only: the entry just stored caused it.
            elif main and self._where.get(newcomer) == _WINDOW:
                self._duel(newcomer)  # it must beat every victim it displaces
            elif main:
                self._evict_least_recent_of_main()  # a held entry grew
            elif window:
                self._evict(next(iter(window)), _WINDOW)
            else:
                self._evict(next(iter(critical)), _CRITICAL)
        # Window overflow that needed no duel (the cache had room) joins probation.
        while len(window) > self._window_cap:
            self._move(next(iter(window)), _WINDOW, _PROBATION)

    def _evict_least_recent_of_main(self) -> None:
        segment_id = _PROBATION if self._segments[_PROBATION] else _PROTECTED
        self._evict(next(iter(self._segments[segment_id])), segment_id)

    def _duel(self, candidate: str) -> None:
        """A window entry against the main region's victim: the loser leaves."""
        victim = self._victim()
        if victim is None:
            self._evict(candidate, _WINDOW)
        elif self._admit(candidate, *victim):
            self._evict(victim[0], victim[1])
        else:
            self._remove(candidate, _WINDOW)
            self._rejections += 1
            self._remember(self._refused, candidate)
