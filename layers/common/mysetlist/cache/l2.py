"""The cache's second level: Valkey (ElastiCache Serverless), shared by every container.

Keys (see ``mysetlist.valkey`` for the naming rules):

- ``msl:c:<key>``: a value in the codec's format, expiring at its TTL plus the stale window;
- ``msl:tag:<tag>``: the set of keys stored under a tag (the tag index: invalidation reads it,
  never scans the keyspace); ``msl:tags`` lists the tags so ``optimize`` can prune the sets;
- ``msl:{tv}:<tag>``: a tag's version, raised by every invalidation; ``msl:{tv}:~epoch`` is raised
  by every invalidation and ``msl:{tv}:~gen`` by ``clear``. They share one hash slot so one MGET
  reads any set of them (containers compare them to what their L1 copies were loaded under);
- ``msl:index``: every stored key by write time, to hold the level to ``l2_max_entries``;
- ``msl:lock:<key>``: the short lock that lets one container in the fleet run a key's loader;
- ``msl:hot``: access counts (sampled, batched) that say which keys are hot.

Every call goes through a guard (the Valkey circuit breaker); any failure surfaces as
:class:`L2Unavailable`, which the cache treats as "no second level right now".
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mysetlist.valkey import plain_key, slot_key

if TYPE_CHECKING:
    from redis import Redis

# Runs a Valkey operation under the Valkey circuit breaker (``CircuitBreaker.call``).
Guard = Callable[[Callable[[], Any]], Any]

KEY_TAG_PREFIX = "~key:"
_EPOCH = slot_key("tv", "~epoch")
_GENERATION = slot_key("tv", "~gen")
_INDEX = plain_key("index")
_TAGS = plain_key("tags")
_HOT = plain_key("hot")
_DELETE_CHUNK = 500
_TRIM_EVERY_WRITES = 64

# Release a lock only if it is still ours (it may have expired and been taken by another).
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class L2Unavailable(Exception):
    """Valkey did not answer (down, slow, refused, or its circuit is open)."""


def entry_key(key: str) -> str:
    return plain_key("c", key)


def version_key(tag: str) -> str:
    return slot_key("tv", tag)


def key_tag(key: str) -> str:
    """The implicit tag every entry carries: ``delete(key)`` invalidates it everywhere."""
    return KEY_TAG_PREFIX + key


class ValkeyLayer:
    """Valkey operations of the cache. Thread-safe (redis-py's pool is)."""

    def __init__(self, client: Redis | Callable[[], Redis], guard: Guard, *, max_entries: int) -> None:
        # ``client`` may be a factory: the function then connects (and imports redis-py, about
        # 150 ms) on its first cache call, not at cold start.
        self._connect: Callable[[], Redis] | None = client if callable(client) else None
        # redis-py's reply types are unions of everything a reply can be: kept as Any here.
        self._connected: Any = None if callable(client) else client
        self._guard = guard
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._writes = 0
        self._unlock_script: Any = None
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self.evictions = 0
        self.bytes_read = 0
        self.bytes_written = 0

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def _client(self) -> Any:
        if self._connected is None:
            with self._lock:
                if self._connected is None and self._connect is not None:
                    self._connected = self._connect()
        return self._connected

    def _run(self, operation: Callable[[], Any]) -> Any:
        try:
            return self._guard(operation)
        except Exception as exc:  # redis errors, timeouts, CircuitOpenError: all mean "no L2 now"
            with self._lock:
                self.errors += 1
            raise L2Unavailable(f"{type(exc).__name__}: {exc}") from exc

    def _count(self, *, hit: bool, size: int = 0) -> None:
        with self._lock:
            if hit:
                self.hits += 1
                self.bytes_read += size
            else:
                self.misses += 1

    # -- values --------------------------------------------------------------------------------

    def read(self, key: str, tags: Sequence[str]) -> tuple[bytes | None, dict[str, int]]:
        """The stored value of ``key`` and the current versions of ``tags``, in one round trip."""
        names = [version_key(t) for t in tags]

        def operation() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            pipe.get(entry_key(key))
            if names:
                pipe.mget(names)
            return list(pipe.execute())

        replies = self._run(operation)
        blob = replies[0]
        versions = _versions(tags, replies[1] if names else [])
        self._count(hit=blob is not None, size=len(blob) if blob else 0)
        return blob, versions

    def versions(self, tags: Sequence[str]) -> dict[str, int]:
        if not tags:
            return {}
        names = [version_key(t) for t in tags]
        return _versions(tags, self._run(lambda: self._client.mget(names)))

    def markers(self) -> tuple[int, int]:
        """The invalidation epoch and the clear generation."""
        epoch, generation = self._run(lambda: self._client.mget([_EPOCH, _GENERATION]))
        return int(epoch or 0), int(generation or 0)

    def write(
        self, key: str, blob: bytes, *, ttl_seconds: float, tags: Sequence[str], stored_at: float
    ) -> None:
        ttl_ms = max(1, int(ttl_seconds * 1000))
        expire_seconds = max(1, int(ttl_seconds) + 1)

        def operation() -> None:
            pipe = self._client.pipeline(transaction=False)
            pipe.set(entry_key(key), blob, px=ttl_ms)
            pipe.zadd(_INDEX, {key: stored_at})
            for tag in tags:
                if tag.startswith(KEY_TAG_PREFIX):
                    continue
                members = plain_key("tag", tag)
                pipe.sadd(members, key)
                pipe.expire(members, expire_seconds, nx=True)
                pipe.expire(members, expire_seconds, gt=True)
                pipe.sadd(_TAGS, tag)
            pipe.execute()

        self._run(operation)
        with self._lock:
            self.bytes_written += len(blob)
            self._writes += 1
            trim = self._writes % _TRIM_EVERY_WRITES == 0
        if trim:
            self.trim()

    def delete(self, key: str) -> bool:
        def operation() -> int:
            pipe = self._client.pipeline(transaction=False)
            pipe.delete(entry_key(key))
            pipe.zrem(_INDEX, key)
            pipe.incr(version_key(key_tag(key)))
            pipe.incr(_EPOCH)
            return int(pipe.execute()[0])

        return bool(self._run(operation) > 0)

    def invalidate(self, tags: Iterable[str]) -> int:
        """Delete every key stored under ``tags`` and raise the tags' versions (so values loaded
        before the invalidation and written after it are ignored by readers)."""
        wanted = [t for t in dict.fromkeys(tags) if t]
        if not wanted:
            return 0

        def members() -> list[set[bytes]]:
            pipe = self._client.pipeline(transaction=False)
            for tag in wanted:
                pipe.smembers(plain_key("tag", tag))
            return list(pipe.execute())

        keys = sorted({_text(m) for found in self._run(members) for m in found})

        def operation() -> None:
            pipe = self._client.pipeline(transaction=False)
            for tag in wanted:
                pipe.incr(version_key(tag))
            pipe.incr(_EPOCH)
            for k in keys:
                pipe.unlink(entry_key(k))  # one key per command: the keys live in many slots
            for chunk in _chunks(keys, _DELETE_CHUNK):
                pipe.zrem(_INDEX, *chunk)
            for tag in wanted:
                pipe.delete(plain_key("tag", tag))
            pipe.srem(_TAGS, *wanted)
            pipe.execute()

        self._run(operation)
        return len(keys)

    def clear(self) -> int:
        """Delete every value this application stored, and tell every container to drop its L1."""
        keys = [_text(k) for k in self._run(lambda: self._client.zrange(_INDEX, 0, -1))]
        tags = [_text(t) for t in self._run(lambda: self._client.smembers(_TAGS))]

        def operation() -> None:
            pipe = self._client.pipeline(transaction=False)
            pipe.incr(_GENERATION)
            pipe.incr(_EPOCH)
            for k in keys:
                pipe.unlink(entry_key(k))
            for t in tags:
                pipe.unlink(plain_key("tag", t))
            pipe.unlink(_INDEX)
            pipe.unlink(_TAGS)
            pipe.execute()

        self._run(operation)
        return len(keys)

    def trim(self) -> int:
        """Hold the level to ``max_entries``: drop the oldest writes beyond it."""

        def operation() -> int:
            excess = int(self._client.zcard(_INDEX)) - self.max_entries
            if excess <= 0:
                return 0
            popped = self._client.zpopmin(_INDEX, excess)
            keys = [_text(member) for member, _ in popped]
            pipe = self._client.pipeline(transaction=False)
            for k in keys:
                pipe.unlink(entry_key(k))
            pipe.execute()
            return len(keys)

        dropped = int(self._run(operation))
        with self._lock:
            self.evictions += dropped
        return dropped

    def prune_tag_sets(self) -> int:
        """Remove keys that no longer exist from the tag sets (``optimize``)."""
        client = self._client
        removed = 0
        for tag in [_text(t) for t in self._run(lambda: client.smembers(_TAGS))]:
            name = plain_key("tag", tag)

            def prune(name: str = name, tag: str = tag) -> int:
                keys = [_text(m) for m in client.smembers(name)]
                if not keys:
                    client.srem(_TAGS, tag)
                    return 0
                pipe = client.pipeline(transaction=False)
                for k in keys:
                    pipe.exists(entry_key(k))
                gone = [k for k, present in zip(keys, pipe.execute(), strict=True) if not present]
                return int(client.srem(name, *gone)) if gone else 0

            removed += self._run(prune)
        return removed

    def entries(self) -> int:
        return int(self._run(lambda: self._client.zcard(_INDEX)))

    def ping(self) -> bool:
        return bool(self._run(self._client.ping))

    def used_memory(self) -> int | None:
        """The server's memory use in bytes, when it reports it (ElastiCache Serverless may not)."""
        try:
            info = self._run(lambda: self._client.info("memory"))
        except L2Unavailable:
            return None
        value = info.get("used_memory") if isinstance(info, Mapping) else None
        return int(value) if value is not None else None

    # -- cross-container loader lock ---------------------------------------------------------------

    def lock(self, key: str, ttl_ms: int) -> str | None:
        """Take ``key``'s loader lock for ``ttl_ms``; the token to release it, or None if taken."""
        token = secrets.token_hex(8)
        taken = self._run(lambda: self._client.set(plain_key("lock", key), token, nx=True, px=ttl_ms))
        return token if taken else None

    def unlock(self, key: str, token: str) -> None:
        if self._unlock_script is None:
            self._unlock_script = self._client.register_script(_UNLOCK)
        script = self._unlock_script
        self._run(lambda: script(keys=[plain_key("lock", key)], args=[token]))

    def locked(self, key: str) -> bool:
        return bool(self._run(lambda: self._client.exists(plain_key("lock", key))))

    # -- access counts ---------------------------------------------------------------------------

    def add_hits(self, counts: Mapping[str, float]) -> None:
        def operation() -> None:
            pipe = self._client.pipeline(transaction=False)
            for key, count in counts.items():
                pipe.zincrby(_HOT, count, key)
            pipe.execute()

        if counts:
            self._run(operation)

    def hot_keys(self, limit: int) -> list[tuple[str, float]]:
        found = self._run(lambda: self._client.zrevrange(_HOT, 0, max(0, limit - 1), withscores=True))
        return [(_text(member), float(score)) for member, score in found]

    def decay_hits(self, factor: float = 0.5, floor: float = 1.0) -> None:
        """Age the access counts (a key hot an hour ago is not hot now) and drop the cold tail."""

        def operation() -> None:
            pipe = self._client.pipeline(transaction=False)
            pipe.zunionstore(_HOT, {_HOT: factor})
            pipe.zremrangebyscore(_HOT, "-inf", f"({floor}")
            pipe.execute()

        self._run(operation)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            lookups = self.hits + self.misses
            return {
                "hits": self.hits,
                "misses": self.misses,
                "hit_rate": round(self.hits / lookups, 4) if lookups else 0.0,
                "errors": self.errors,
                "evictions": self.evictions,
                "bytes_read": self.bytes_read,
                "bytes_written": self.bytes_written,
                "max_entries": self.max_entries,
            }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _versions(tags: Sequence[str], replies: Sequence[Any]) -> dict[str, int]:
    return {tag: int(reply or 0) for tag, reply in zip(tags, replies, strict=True)}


def _chunks(values: Sequence[str], size: int) -> list[Sequence[str]]:
    return [values[i : i + size] for i in range(0, len(values), size)]
