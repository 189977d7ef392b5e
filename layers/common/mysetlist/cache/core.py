"""The two-level cache: L1 in the container, L2 in Valkey, loaders called once per key.

Reading ``get(key, loader, ttl, ...)``:

1. **L1** (``l1.py``): a fresh copy is served if it is still valid. Valid means: this container
   checked within ``cache_l1_ttl_seconds`` that nothing invalidated it, or the invalidation
   epoch in Valkey (read at most every ``cache_version_check_seconds`` per container) has not
   moved since, or it moved but the entry's own tags (one MGET) have not. Without Valkey an L1
   copy is trusted for ``cache_l1_ttl_seconds`` only: that bounds how long another container's
   invalidation can go unseen after a freeze, a thaw, or with Valkey down.
2. **L2** (``l2.py``): one round trip reads the value and the current versions of its tags; a
   value whose recorded tag versions are behind (an invalidation overtook its loader) is a miss.
3. **Load**: one loader per key at a time. Within the container, concurrent callers wait for
   the first (single flight). Across containers, the first takes a short Valkey lock and the
   others poll L2 for its result (bounded by the lock and the Lambda's remaining time), so a
   stampede of misses calls the loader once.

Refresh-ahead: a hit on a value older than ``refresh_ahead_threshold`` of its TTL makes the
one caller who wins the key's lock reload it within its own request (a frozen Lambda runs no
background work); everyone else is served the current value meanwhile.

Stale values: past its TTL a value is kept for ``cache_stale_seconds`` more. When the loader
fails (its dependency's circuit is open, or it throws a dependency error) the stale value is
served instead of the error. Values that were invalidated are never served stale.

Values are JSON-ready (dicts, lists, strings, numbers, booleans, None); callers convert models.
Callers must not mutate what ``get`` returns (the L1 hands out its own copy).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from mysetlist.cache.codec import CodecError, Envelope, decode, dumps, encode
from mysetlist.cache.crypto import Encryptor
from mysetlist.cache.l1 import L1Cache, L1Entry, Priority
from mysetlist.cache.l2 import L2Unavailable, ValkeyLayer, key_tag
from mysetlist.errors import DomainError, Unavailable
from mysetlist.observability import logger

Loader = Callable[[], Any]

# Cross-container loader lock: long enough for a slow DynamoDB read, short enough that a
# crashed holder does not hold up a key for long.
LOCK_TTL_MS = 3000
# How long a caller waits for another container's loader before loading itself.
LOCK_WAIT_SECONDS = 2.0
_POLL_SECONDS = (0.005, 0.01, 0.02, 0.025)
# Hot-key counts are batched in the container and sent at most this often.
HIT_FLUSH_SECONDS = 10.0
HIT_FLUSH_KEYS = 500
# Leave this much of the Lambda's time when waiting on another container's loader.
_RESERVE_MS = 1000


@dataclass(frozen=True)
class CacheConfig:
    """The original design's defaults (l1MaxSize, l2MaxSize, maxMemoryMB, compressionThreshold,
    refreshAheadThreshold) and the Lambda-specific bounds."""

    l1_max_entries: int = 1000
    l2_max_entries: int = 5000
    max_memory_mb: float = 256.0
    compression_threshold: int = 1024
    refresh_ahead_threshold: float = 0.8
    l1_ttl_seconds: float = 5.0
    version_check_seconds: float = 1.0
    stale_seconds: float = 3600.0


@dataclass(frozen=True)
class WarmSpec:
    """A key to warm and how to load it (``warm_up``, ``prefetch_popular``)."""

    key: str
    loader: Loader
    ttl: float = 60.0
    priority: Priority = Priority.NORMAL
    tags: Sequence[str] = ()
    compress: bool | None = None
    encrypt: bool = False


@dataclass
class _Meta:
    """What an L1 entry was loaded under, to tell whether an invalidation overtook it."""

    versions: Mapping[str, int]
    epoch: int
    generation: int
    verified_until: float


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


@dataclass
class _LoaderStats:
    calls: int = 0
    errors: int = 0
    stale_served: int = 0
    refreshes: int = 0
    coalesced: int = 0
    waited_for_other_container: int = 0
    l2_unavailable: int = 0


def _no_remaining_time() -> int | None:
    return None


class Cache:
    """See the module docstring. Thread-safe."""

    def __init__(
        self,
        config: CacheConfig | None = None,
        *,
        l2: ValkeyLayer | None = None,
        encryptor: Encryptor | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        remaining_ms: Callable[[], int | None] = _no_remaining_time,
        l1_max_bytes: int | None = None,
    ) -> None:
        self.config = config or CacheConfig()
        max_bytes = l1_max_bytes if l1_max_bytes is not None else int(self.config.max_memory_mb * 2**20)
        self._l1 = L1Cache(self.config.l1_max_entries, max_bytes, clock=clock)
        self._l2 = l2
        self._encryptor = encryptor
        self._clock = clock
        self._sleep = sleep
        self._remaining_ms = remaining_ms
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}
        self._stats = _LoaderStats()
        self._markers: tuple[int, int] | None = None
        self._markers_at = float("-inf")
        self._pending_hits: Counter[str] = Counter()
        self._hits_flushed_at = clock()
        self._pending_invalidations: set[str] = set()
        self._reported: dict[str, int] = {}

    # -- reading -------------------------------------------------------------------------------

    def get(
        self,
        key: str,
        loader: Loader,
        ttl: float = 60.0,
        priority: Priority = Priority.NORMAL,
        tags: Sequence[str] = (),
        compress: bool | None = None,
        encrypt: bool = False,
        refresh_ahead: bool = True,
    ) -> Any:
        """The value of ``key``: from L1, else L2, else ``loader()`` (stored in both)."""
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        spec = WarmSpec(key, loader, ttl, priority, tuple(tags), compress, encrypt)
        self._note_access(key)
        self._retry_pending_invalidations()
        now = self._clock()
        stale: Any = _MISSING
        entry = self._l1.get(key)
        if entry is not None:
            if self._still_valid(key, entry, now):
                if now < entry.fresh_until:
                    if refresh_ahead and self._due_for_refresh(entry.stored_at, entry.fresh_until, now):
                        return self._refresh(spec, entry.value)
                    return entry.value
                stale = entry.value
            else:
                self._l1.delete(key)
        epoch_before = self._known_markers()
        found, versions = self._read_l2(spec)
        if found is not None:
            if now < found.fresh_until:
                self._keep_in_l1(spec, found.value, found, epoch_before)
                if refresh_ahead and self._due_for_refresh(found.stored_at, found.fresh_until, now):
                    return self._refresh(spec, found.value)
                return found.value
            stale = found.value
        return self._load(spec, stale, versions, epoch_before)

    def set(
        self,
        key: str,
        value: Any,
        ttl: float = 60.0,
        priority: Priority = Priority.NORMAL,
        tags: Sequence[str] = (),
        compress: bool | None = None,
        encrypt: bool = False,
    ) -> None:
        """Store ``value`` under ``key`` in both levels."""
        spec = WarmSpec(key, lambda: value, ttl, priority, tuple(tags), compress, encrypt)
        markers = self._known_markers()
        versions = self._current_versions(spec)
        self._store(spec, value, versions, markers)

    def delete(self, key: str) -> bool:
        """Remove ``key`` from both levels; other containers drop their L1 copies at their next
        version check."""
        removed = self._l1.delete(key)
        if self._l2 is not None:
            try:
                removed = self._l2.delete(key) or removed
            except L2Unavailable:
                self._defer_invalidation(key_tag(key))
        return removed

    def invalidate_tags(self, tags: Iterable[str]) -> int:
        """Drop every value stored under any of ``tags``, in this container and in Valkey; other
        containers drop their L1 copies at their next version check. Returns the number of
        values found (L2's count when it answered, else L1's)."""
        wanted = [t for t in dict.fromkeys(tags) if t]
        local = sum(self._l1.invalidate_tag(t) for t in wanted)
        if self._l2 is None or not wanted:
            return local
        try:
            return self._l2.invalidate(wanted)
        except L2Unavailable:
            for tag in wanted:
                self._defer_invalidation(tag)
            return local

    def clear(self) -> dict[str, int]:
        """Empty both levels (every container's L1 follows at its next version check)."""
        report = {"l1": self._l1.clear(), "l2": 0}
        if self._l2 is not None:
            try:
                report["l2"] = self._l2.clear()
            except L2Unavailable:
                logger.warning("cache clear: Valkey unavailable, only this container's L1 was cleared")
                report["l2"] = -1
        return report

    # -- operations ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Per layer: hits, misses, evictions, bytes, entries; and the loader's counters."""
        l2: dict[str, Any] = {"configured": self._l2 is not None, "available": False}
        if self._l2 is not None:
            l2.update(self._l2.stats())
            try:
                l2["entries"] = self._l2.entries()
                l2["available"] = True
            except L2Unavailable:
                l2["entries"] = None
            l2["bytes"] = self._l2.used_memory() if l2["available"] else None
        with self._lock:
            loader = dict(vars(self._stats))
        return {"l1": self._l1.stats(), "l2": l2, "loader": loader}

    def counter_deltas(self) -> dict[str, int]:
        """What happened since the last call (for per-invocation metrics): L1 and L2 hits and
        misses, loader calls and errors, stale values served. Cheap: no Valkey call."""
        l1 = self._l1.stats()
        l2 = self._l2.stats() if self._l2 is not None else {}
        with self._lock:
            now = {
                "CacheL1Hits": int(l1["hits"]),
                "CacheL1Misses": int(l1["misses"]),
                "CacheL2Hits": int(l2.get("hits", 0)),
                "CacheL2Misses": int(l2.get("misses", 0)),
                "CacheL2Errors": int(l2.get("errors", 0)),
                "CacheLoads": self._stats.calls,
                "CacheLoaderErrors": self._stats.errors,
                "CacheStaleServed": self._stats.stale_served,
            }
            previous, self._reported = self._reported, now
        return {name: value - previous.get(name, 0) for name, value in now.items()}

    def detailed_metrics(self, limit: int = 20) -> dict[str, Any]:
        """:meth:`hot_keys` and :meth:`stats` together."""
        return {**self.hot_keys(limit), "stats": self.stats()}

    def hot_keys(self, limit: int = 20) -> dict[str, Any]:
        """Top keys (this container's L1 hits and the fleet's sampled counts in Valkey) and hot
        key patterns (the key's namespace: the part before the first ``:``)."""
        self._flush_hits(force=True)
        local = self._l1.top_keys(limit)
        fleet: list[tuple[str, float]] = []
        if self._l2 is not None:
            try:
                fleet = self._l2.hot_keys(limit * 5)
            except L2Unavailable:
                fleet = []
        patterns: dict[str, float] = {}
        for key, count in fleet or [(k, float(c)) for k, c in local]:
            patterns[pattern_of(key)] = patterns.get(pattern_of(key), 0.0) + count
        ranked = sorted(patterns.items(), key=lambda item: -item[1])[:limit]
        return {
            "top_keys": [{"key": k, "hits": c} for k, c in local],
            "fleet_top_keys": [{"key": k, "hits": round(c, 1)} for k, c in fleet[:limit]],
            "hot_key_patterns": [{"pattern": p, "hits": round(c, 1)} for p, c in ranked],
        }

    def warm_up(self, specs: Iterable[WarmSpec]) -> dict[str, int]:
        """Load each key that is missing or due for refresh; leave fresh ones alone."""
        report = {"warmed": 0, "fresh": 0, "failed": 0}
        for spec in specs:
            now = self._clock()
            markers = self._known_markers()
            found, versions = self._read_l2(spec)
            if found is not None and not self._due_for_refresh(found.stored_at, found.fresh_until, now):
                self._keep_in_l1(spec, found.value, found, markers)
                report["fresh"] += 1
                continue
            try:
                value = self._call_loader(spec)
            except Exception as exc:  # one key's failure must not stop the others
                logger.warning("cache warm-up: loader failed", extra={"key": spec.key, "error": repr(exc)})
                report["failed"] += 1
                continue
            self._store(spec, value, versions, markers)
            report["warmed"] += 1
        return report

    def prefetch_popular(self, resolve: Callable[[str], WarmSpec | None], limit: int = 50) -> dict[str, int]:
        """Warm the keys the access counts say are hot. ``resolve(key)`` says how to load a key
        (None: not a key this function can load)."""
        self._flush_hits(force=True)
        hot: list[tuple[str, float]] = []
        if self._l2 is not None:
            try:
                hot = self._l2.hot_keys(limit)
            except L2Unavailable:
                hot = []
        if not hot:
            hot = [(k, float(c)) for k, c in self._l1.top_keys(limit)]
        specs = [s for s in (resolve(k) for k, _ in hot) if s is not None]
        report = self.warm_up(specs)
        report["hot_keys"] = len(hot)
        report["skipped"] = len(hot) - len(specs)
        return report

    def optimize(self) -> dict[str, Any]:
        """Housekeeping: purge expired L1 entries, hold L2 to its bound, prune dead keys from the
        tag sets, age the access counts."""
        report: dict[str, Any] = {"l1_expired_removed": self._l1.purge_expired()}
        if self._l2 is None:
            return report
        self._flush_hits(force=True)
        try:
            report["l2_trimmed"] = self._l2.trim()
            report["tag_members_pruned"] = self._l2.prune_tag_sets()
            self._l2.decay_hits()
            report["hot_counts_decayed"] = True
        except L2Unavailable as exc:
            report["l2_error"] = str(exc)
        return report

    # -- internals -------------------------------------------------------------------------------

    def _read_l2(self, spec: WarmSpec) -> tuple[Envelope | None, dict[str, int] | None]:
        """The L2 value if readable and not overtaken by an invalidation, and the tag versions
        (None when Valkey is unavailable: then nothing is written to it either)."""
        if self._l2 is None:
            return None, None
        tags = _all_tags(spec)
        try:
            blob, versions = self._l2.read(spec.key, tags)
        except L2Unavailable:
            with self._lock:
                self._stats.l2_unavailable += 1
            return None, None
        if blob is None:
            return None, versions
        try:
            found = decode(spec.key, blob, self._encryptor)
        except CodecError as exc:
            logger.warning("cache: unreadable L2 value ignored", extra={"key": spec.key, "error": str(exc)})
            return None, versions
        if any(found.tag_versions.get(t, 0) != v for t, v in versions.items()):
            return None, versions
        return found, versions

    def _current_versions(self, spec: WarmSpec) -> dict[str, int] | None:
        if self._l2 is None:
            return None
        try:
            return self._l2.versions(_all_tags(spec))
        except L2Unavailable:
            return None

    def _load(
        self, spec: WarmSpec, stale: Any, versions: dict[str, int] | None, markers: tuple[int, int] | None
    ) -> Any:
        flight, leader = self._join_flight(spec.key)
        if not leader:
            with self._lock:
                self._stats.coalesced += 1
            flight.done.wait()
            if flight.error is not None:
                if stale is not _MISSING and _may_serve_stale(flight.error):
                    return self._serve_stale(spec.key, stale, flight.error)
                raise flight.error
            return flight.value
        try:
            value = self._load_as_leader(spec, stale, versions, markers)
        except BaseException as exc:
            flight.error = exc
            raise
        else:
            flight.value = value
            return value
        finally:
            with self._lock:
                self._flights.pop(spec.key, None)
            flight.done.set()

    def _load_as_leader(
        self, spec: WarmSpec, stale: Any, versions: dict[str, int] | None, markers: tuple[int, int] | None
    ) -> Any:
        token: str | None = None
        if self._l2 is not None and versions is not None:
            try:
                token = self._l2.lock(spec.key, LOCK_TTL_MS)
                # With the lock taken (or not), another container may have stored the value
                # since our read: look again before loading.
                found = self._wait_for_other_container(spec) if token is None else self._fresh_in_l2(spec)
                if found is not None:
                    self._keep_in_l1(spec, found.value, found, markers)
                    return found.value
                versions = self._current_versions(spec)
            except L2Unavailable:
                versions = None
        try:
            value = self._call_loader(spec)
        except Exception as exc:
            if stale is not _MISSING and _may_serve_stale(exc):
                return self._serve_stale(spec.key, stale, exc)
            raise
        finally:
            if token is not None and self._l2 is not None:
                with suppress(L2Unavailable):  # else the lock expires by itself
                    self._l2.unlock(spec.key, token)
        self._store(spec, value, versions, markers)
        return value

    def _fresh_in_l2(self, spec: WarmSpec) -> Envelope | None:
        found, _ = self._read_l2(spec)
        return found if found is not None and self._clock() < found.fresh_until else None

    def _wait_for_other_container(self, spec: WarmSpec) -> Envelope | None:
        """Poll L2 while another container's loader holds the key's lock."""
        assert self._l2 is not None
        with self._lock:
            self._stats.waited_for_other_container += 1
        deadline = self._clock() + LOCK_WAIT_SECONDS
        remaining = self._remaining_ms()
        if remaining is not None:
            deadline = min(deadline, self._clock() + max(0, remaining - _RESERVE_MS) / 1000)
        step = 0
        while self._clock() < deadline:
            self._sleep(_POLL_SECONDS[min(step, len(_POLL_SECONDS) - 1)])
            step += 1
            found = self._fresh_in_l2(spec)
            if found is not None:
                return found
            if not self._l2.locked(spec.key):
                return self._fresh_in_l2(spec)
        return None

    def _call_loader(self, spec: WarmSpec) -> Any:
        with self._lock:
            self._stats.calls += 1
        try:
            return spec.loader()
        except Exception:
            with self._lock:
                self._stats.errors += 1
            raise

    def _serve_stale(self, key: str, value: Any, error: BaseException) -> Any:
        with self._lock:
            self._stats.stale_served += 1
        logger.warning(
            "cache: loader failed, serving the stale value", extra={"key": key, "error": repr(error)}
        )
        return value

    def _refresh(self, spec: WarmSpec, current: Any) -> Any:
        """Reload a value near its expiry, if this caller wins the key (else serve ``current``)."""
        flight, leader = self._join_flight(spec.key)
        if not leader:
            return current
        token: str | None = None
        try:
            markers = self._known_markers()
            versions = self._current_versions(spec)
            if self._l2 is not None and versions is not None:
                try:
                    token = self._l2.lock(spec.key, LOCK_TTL_MS)
                except L2Unavailable:
                    versions = None
                else:
                    if token is None:
                        return current  # another container is refreshing it
                found, _ = self._read_l2(spec)
                if found is not None and not self._due_for_refresh(
                    found.stored_at, found.fresh_until, self._clock()
                ):
                    self._keep_in_l1(spec, found.value, found, markers)  # another container just did
                    flight.value = found.value
                    return found.value
            try:
                value = self._call_loader(spec)
            except Exception as exc:
                logger.warning("cache refresh-ahead failed", extra={"key": spec.key, "error": repr(exc)})
                return current
            with self._lock:
                self._stats.refreshes += 1
            self._store(spec, value, versions, markers)
            flight.value = value
            return value
        finally:
            if token is not None and self._l2 is not None:
                with suppress(L2Unavailable):
                    self._l2.unlock(spec.key, token)
            with self._lock:
                self._flights.pop(spec.key, None)
            if flight.value is None:
                flight.value = current
            flight.done.set()

    def _join_flight(self, key: str) -> tuple[_Flight, bool]:
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = _Flight()
            return flight, True

    def _store(
        self, spec: WarmSpec, value: Any, versions: Mapping[str, int] | None, markers: tuple[int, int] | None
    ) -> None:
        payload = dumps(value)
        now = self._clock()
        compress = (
            spec.compress if spec.compress is not None else len(payload) > self.config.compression_threshold
        )
        stored_in_l2 = False
        if (
            self._l2 is not None
            and versions is not None
            and (not spec.encrypt or self._encryptor is not None)
        ):
            blob = encode(
                spec.key,
                payload,
                stored_at=now,
                ttl=spec.ttl,
                tag_versions=versions,
                compress=compress,
                encryptor=self._encryptor if spec.encrypt else None,
            )
            try:
                self._l2.write(
                    spec.key,
                    blob,
                    ttl_seconds=spec.ttl + self.config.stale_seconds,
                    tags=_all_tags(spec),
                    stored_at=now,
                )
                stored_in_l2 = True
            except L2Unavailable:
                stored_in_l2 = False
        epoch = markers[0] if markers and stored_in_l2 else -1
        self._put_l1(spec, value, len(payload), now, now + spec.ttl, versions or {}, epoch, markers)

    def _keep_in_l1(
        self, spec: WarmSpec, value: Any, found: Envelope, markers: tuple[int, int] | None
    ) -> None:
        epoch = markers[0] if markers else -1
        self._put_l1(
            spec, value, found.size, found.stored_at, found.fresh_until, found.tag_versions, epoch, markers
        )

    def _put_l1(
        self,
        spec: WarmSpec,
        value: Any,
        size: int,
        stored_at: float,
        fresh_until: float,
        versions: Mapping[str, int],
        epoch: int,
        markers: tuple[int, int] | None,
    ) -> None:
        meta = _Meta(
            versions=dict(versions),
            epoch=epoch,
            generation=markers[1] if markers else -1,
            verified_until=self._clock() + self.config.l1_ttl_seconds,
        )
        entry = L1Entry(
            value=value,
            size=size,
            priority=spec.priority,
            fresh_until=fresh_until,
            stale_until=fresh_until + self.config.stale_seconds,
            stored_at=stored_at,
            tags=tuple(spec.tags),
            meta=meta,
        )
        self._l1.put(spec.key, entry)

    def _still_valid(self, key: str, entry: L1Entry, now: float) -> bool:  # noqa: PLR0911 - one exit per rule
        meta = entry.meta
        if not isinstance(meta, _Meta):
            return False
        markers = self._known_markers()
        if markers is None or meta.epoch == -1:
            # No Valkey, Valkey down, or a copy Valkey never had: trust it for the L1 TTL only.
            return now < meta.verified_until
        epoch, generation = markers
        if generation != meta.generation:
            return False
        if epoch == meta.epoch:
            meta.verified_until = now + self.config.l1_ttl_seconds
            return True
        tags = (*entry.tags, key_tag(key))
        try:
            assert self._l2 is not None
            current = self._l2.versions(tags)
        except L2Unavailable:
            return now < meta.verified_until
        if any(meta.versions.get(t, 0) != v for t, v in current.items()):
            return False
        meta.epoch = epoch
        meta.verified_until = now + self.config.l1_ttl_seconds
        return True

    def _known_markers(self) -> tuple[int, int] | None:
        """Valkey's invalidation epoch and clear generation, read at most every
        ``version_check_seconds``; None without Valkey. A new generation empties the L1."""
        if self._l2 is None:
            return None
        now = self._clock()
        with self._lock:
            if now - self._markers_at < self.config.version_check_seconds:
                return self._markers
        try:
            markers: tuple[int, int] | None = self._l2.markers()
        except L2Unavailable:
            markers = None
        with self._lock:
            previous = self._markers
            self._markers, self._markers_at = markers, now
        if markers is not None and previous is not None and markers[1] != previous[1]:
            self._l1.clear()
        return markers

    def _due_for_refresh(self, stored_at: float, fresh_until: float, now: float) -> bool:
        ttl = fresh_until - stored_at
        return ttl > 0 and (now - stored_at) >= self.config.refresh_ahead_threshold * ttl

    def _note_access(self, key: str) -> None:
        if self._l2 is None:
            return
        with self._lock:
            self._pending_hits[key] += 1
            due = len(self._pending_hits) >= HIT_FLUSH_KEYS or (
                self._clock() - self._hits_flushed_at >= HIT_FLUSH_SECONDS
            )
        if due:
            self._flush_hits(force=True)

    def _flush_hits(self, *, force: bool) -> None:
        if self._l2 is None:
            return
        with self._lock:
            if not self._pending_hits or not force:
                return
            counts, self._pending_hits = dict(self._pending_hits), Counter()
            self._hits_flushed_at = self._clock()
        with suppress(L2Unavailable):  # access counts are a hint: a lost batch only delays prefetching
            self._l2.add_hits(counts)

    def _defer_invalidation(self, tag: str) -> None:
        logger.warning("cache: invalidation deferred, Valkey unavailable", extra={"tag": tag})
        with self._lock:
            self._pending_invalidations.add(tag)

    def _retry_pending_invalidations(self) -> None:
        if not self._pending_invalidations or self._l2 is None:
            return
        with self._lock:
            tags, self._pending_invalidations = sorted(self._pending_invalidations), set()
        try:
            self._l2.invalidate(tags)
        except L2Unavailable:
            with self._lock:
                self._pending_invalidations.update(tags)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _all_tags(spec: WarmSpec) -> tuple[str, ...]:
    return (*spec.tags, key_tag(spec.key))


def _may_serve_stale(error: BaseException) -> bool:
    """A dependency failure (an open circuit, throttling, a timeout: raw or already turned into
    :class:`Unavailable` by a store) may be answered from a stale value; a domain answer (not
    found, forbidden...) may not."""
    if isinstance(error, Unavailable):
        return True
    return isinstance(error, Exception) and not isinstance(error, DomainError)


def pattern_of(key: str) -> str:
    """A key's pattern for hot-key reports: its namespace (``show:123`` -> ``show:*``)."""
    head, sep, _ = key.partition(":")
    return f"{head}:*" if sep else head
