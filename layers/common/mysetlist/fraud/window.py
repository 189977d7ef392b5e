"""The recent-vote window: the last hour or so of votes, indexed the way the detectors read them.

Every vote signal is kept under several indexes, each ordered by the time of the vote:

- ``show``: the show's votes (velocity per minute, the sweep);
- ``user``: the account's votes on every show (account bursts);
- ``net``, ``device``: the show's votes from one network, from one device (coordinated accounts);
- ``up``, ``down``: the show's votes on one song in one direction (down-vote brigades).

Show and song indexes keep ``show_retention`` seconds (the velocity and brigade baselines);
user, network and device indexes keep ``key_retention`` seconds (the sweep's look-back). A vote
that changes (up to down) replaces its earlier state. The window also remembers, per show, which
votes were already flagged (by the engine) or moderated (a signal that arrives with a
``moderation`` state), so that no vote is returned twice, and short-lived *claims* so an
incident without new votes is not reported on every batch.

Windows return signals as they were added but with ``moderation`` cleared: the moderation state
is answered by :meth:`RecentVotes.flagged`.

Two implementations:

- :class:`InMemoryRecentVotes`: one process (the evaluation, tests, the sweeper's DynamoDB
  fallback through :meth:`mysetlist.fraud.engine.FraudEngine.detect`);
- :class:`ValkeyRecentVotes`: shared by every VoteProcessor container and the sweeper.

Valkey layout (``mysetlist.valkey`` naming; ElastiCache Serverless is a cluster, and every
command here touches one key, so nothing needs a common slot; a show's keys share the hash tag
``{fw:<show_id>}`` so they live on one shard and a batch's commands for a show go to one node):

- ``msl:{fw:<show>}:v`` ZSET: every vote of the show, score = the vote's time;
- ``msl:{fw:<show>}:n:<net>`` / ``:d:<device hash>`` ZSETs: the show's votes of one network or
  device;
- ``msl:{fw:<show>}:su:<song>`` / ``:sd:<song>`` ZSETs: the show's up / down votes on one song;
- ``msl:{fw:<show>}:f`` HASH: vote id -> "flagged" or its moderation state;
- ``msl:{fu:<user>}:v`` ZSET: the account's votes on every show;
- ``msl:fw:claim:<name>``: a claim (SET NX EX).

Members are compact: the signal's fields joined by ``\\x1f`` (the time is the score, so a vote
added again, a retried batch, only updates the score). Each batch is one pipelined round trip
(ZADD, then ZREMRANGEBYSCORE below the retention and EXPIRE once per touched key); reads are one
pipelined round trip per call. A vote whose signals changed between two states (a new network)
can leave its older member behind until it is trimmed: reads keep the latest state per vote id,
counts may include it (rare: a vote changes direction, from another network, within the hour).

Degradation: every Valkey call goes through a guard (the container's VALKEY circuit breaker) and
any fault (refused, timed out, circuit open) raises :class:`WindowUnavailable`. The caller
decides: the VoteProcessor's observer skips detection for that batch (the sweeper looks again
over DynamoDB), the sweeper falls back to ``FraudEngine.detect`` over the vote items.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from mysetlist.fraud.config import FraudConfig
from mysetlist.signals import VoteSignal, vote_id
from mysetlist.valkey import plain_key, slot_key

if TYPE_CHECKING:
    from redis import Redis

    from mysetlist.settings import Settings

T = TypeVar("T")
# Runs a Valkey operation under the Valkey circuit breaker (``CircuitBreaker.call``).
Guard = Callable[[Callable[[], Any]], Any]

FLAGGED = "flagged"
_SEP = "\x1f"
_MEMBER_VERSION = "1"
# Keys expire this long after the retention (seconds): a key not written for that long is dead.
_EXPIRY_MARGIN = 60
# Decoded members remembered per container (a few hundred bytes each).
_DECODED_CACHE = 50_000


class WindowUnavailable(Exception):
    """The window store did not answer (Valkey down, slow, refused, or its circuit open)."""


class Index(StrEnum):
    """What a window is of (see the module docstring)."""

    SHOW = "show"
    USER = "user"
    NET = "net"
    DEVICE = "device"
    UP = "up"
    DOWN = "down"


_SHOW_INDEXES = frozenset({Index.SHOW, Index.UP, Index.DOWN})


@dataclass(frozen=True, slots=True)
class WindowKey:
    """One index of one show (``show_id`` is empty for a user's index): ``key`` is the user id,
    the network, the device hash or the song id (empty for the show's own index)."""

    index: Index
    show_id: str
    key: str = ""

    @classmethod
    def show(cls, show_id: str) -> WindowKey:
        return cls(Index.SHOW, show_id)

    @classmethod
    def user(cls, user_id: str) -> WindowKey:
        return cls(Index.USER, "", user_id)

    @classmethod
    def net(cls, show_id: str, net: str) -> WindowKey:
        return cls(Index.NET, show_id, net)

    @classmethod
    def device(cls, show_id: str, device_hash: str) -> WindowKey:
        return cls(Index.DEVICE, show_id, device_hash)

    @classmethod
    def song(cls, show_id: str, song_id: str, vote_type: str) -> WindowKey:
        return cls(Index.DOWN if vote_type == "down" else Index.UP, show_id, song_id)


@dataclass(frozen=True, slots=True)
class Span:
    """The votes of ``key`` cast at ``since`` or later and before ``until`` (epoch seconds)."""

    key: WindowKey
    since: float
    until: float = math.inf


def keys_of(signal: VoteSignal) -> list[WindowKey]:
    """The indexes a vote is kept under."""
    keys = [
        WindowKey.show(signal.show_id),
        WindowKey.user(signal.user_id),
        WindowKey.song(signal.show_id, signal.song_id, signal.vote_type),
    ]
    if signal.net:
        keys.append(WindowKey.net(signal.show_id, signal.net))
    if signal.device_hash:
        keys.append(WindowKey.device(signal.show_id, signal.device_hash))
    return keys


def latest_per_vote(signals: Iterable[VoteSignal]) -> list[VoteSignal]:
    """One signal per vote id (the latest state; on a tie, the last given), ordered by time."""
    latest: dict[str, VoteSignal] = {}
    for signal in signals:
        found = latest.get(signal.vote_id)
        if found is None or signal.at >= found.at:
            latest[signal.vote_id] = signal
    return sorted(latest.values(), key=lambda s: (s.at, s.vote_id))


class RecentVotes(Protocol):
    """The window store the engine reads (see the module docstring)."""

    show_retention: float
    key_retention: float

    def add(self, signals: Sequence[VoteSignal], now: float) -> None:
        """Keep ``signals`` (the latest state of each vote) and trim what is older than the
        retention at ``now``. Signals with a moderation state are recorded as flagged."""
        ...

    def remove(self, signals: Sequence[VoteSignal]) -> None:
        """Forget these votes (removed by their voter: give their last known states), and that
        they were flagged: a vote cast again is a new vote, judged again."""
        ...

    def votes(self, spans: Sequence[Span]) -> list[list[VoteSignal]]:
        """For each span, its votes (latest state per vote, ordered by time)."""
        ...

    def counts(self, spans: Sequence[Span]) -> list[int]:
        """For each span, how many votes it holds."""
        ...

    def flagged(self, ids_by_show: Mapping[str, Collection[str]]) -> set[str]:
        """Which of these vote ids (grouped by show) were already flagged or moderated."""
        ...

    def mark_flagged(self, ids_by_show: Mapping[str, Collection[str]]) -> None:
        """Remember these vote ids as flagged (they are not returned again)."""
        ...

    def claim(self, name: str, ttl_seconds: float, now: float) -> bool:
        """True once per ``ttl_seconds`` for ``name`` (the first caller wins)."""
        ...

    def show_window(self, show_id: str, since: float) -> list[VoteSignal]: ...

    def user_window(self, user_id: str, since: float) -> list[VoteSignal]: ...

    def minute_counts(self, show_id: str, since_minute: int, until_minute: int) -> dict[int, int]: ...


class _Conveniences:
    """Single-window reads on top of ``votes`` and ``counts``."""

    def votes(self, spans: Sequence[Span]) -> list[list[VoteSignal]]:
        raise NotImplementedError

    def counts(self, spans: Sequence[Span]) -> list[int]:
        raise NotImplementedError

    def show_window(self, show_id: str, since: float) -> list[VoteSignal]:
        """The show's votes since ``since``."""
        return self.votes([Span(WindowKey.show(show_id), since)])[0]

    def user_window(self, user_id: str, since: float) -> list[VoteSignal]:
        """The account's votes (every show) since ``since``."""
        return self.votes([Span(WindowKey.user(user_id), since)])[0]

    def net_window(self, show_id: str, net: str, since: float) -> list[VoteSignal]:
        return self.votes([Span(WindowKey.net(show_id, net), since)])[0]

    def device_window(self, show_id: str, device_hash: str, since: float) -> list[VoteSignal]:
        return self.votes([Span(WindowKey.device(show_id, device_hash), since)])[0]

    def minute_counts(self, show_id: str, since_minute: int, until_minute: int) -> dict[int, int]:
        """Votes per epoch minute of the show, for the minutes ``since_minute`` to
        ``until_minute`` inclusive (minute m holds the votes of [60 m, 60 m + 60))."""
        minutes = list(range(since_minute, until_minute + 1))
        spans = [Span(WindowKey.show(show_id), m * 60.0, (m + 1) * 60.0) for m in minutes]
        return dict(zip(minutes, self.counts(spans), strict=True))


# ------------------------------------------------------------------------------- in memory


class InMemoryRecentVotes(_Conveniences):
    """The window in this process: sorted lists per index. Thread-safe."""

    def __init__(self, show_retention: float, key_retention: float) -> None:
        self.show_retention = show_retention
        self.key_retention = key_retention
        # index -> [(at, vote_id)] sorted, and the signal of each vote id
        self._lists: dict[WindowKey, list[tuple[float, str]]] = {}
        self._current: dict[str, VoteSignal] = {}
        self._flagged: dict[str, dict[str, str]] = {}
        self._claims: dict[str, float] = {}
        self._lock = threading.Lock()
        self._last_full_trim = -math.inf

    @classmethod
    def for_config(cls, config: FraudConfig) -> InMemoryRecentVotes:
        return cls(config.show_retention_seconds, config.key_retention_seconds)

    def __len__(self) -> int:
        return len(self._current)

    def add(self, signals: Sequence[VoteSignal], now: float) -> None:
        with self._lock:
            touched: set[WindowKey] = set()
            for signal in latest_per_vote(signals):
                if signal.moderation is not None:
                    self._flagged.setdefault(signal.show_id, {})[signal.vote_id] = signal.moderation
                    signal = dataclasses.replace(signal, moderation=None)  # noqa: PLW2901
                found = self._current.get(signal.vote_id)
                if found is not None:
                    if found.at > signal.at or found == signal:
                        continue  # an older state, or a retried batch
                    self._unindex(found)
                self._current[signal.vote_id] = signal
                for key in keys_of(signal):
                    bisect.insort(self._lists.setdefault(key, []), (signal.at, signal.vote_id))
                    touched.add(key)
            if now - self._last_full_trim >= 60.0:
                self._last_full_trim = now
                touched = set(self._lists)
            for key in touched:
                self._trim(key, now)

    def remove(self, signals: Sequence[VoteSignal]) -> None:
        with self._lock:
            for signal in signals:
                self._flagged.get(signal.show_id, {}).pop(signal.vote_id, None)
                found = self._current.pop(signal.vote_id, None)
                if found is not None:
                    self._unindex(found)

    def _unindex(self, signal: VoteSignal) -> None:
        entry = (signal.at, signal.vote_id)
        for key in keys_of(signal):
            entries = self._lists.get(key)
            if not entries:
                continue
            at = bisect.bisect_left(entries, entry)
            if at < len(entries) and entries[at] == entry:
                del entries[at]

    def _trim(self, key: WindowKey, now: float) -> None:
        entries = self._lists.get(key)
        if entries is None:
            return
        retention = self.show_retention if key.index in _SHOW_INDEXES else self.key_retention
        cut = bisect.bisect_left(entries, (now - retention, ""))
        if cut:
            if key.index is Index.SHOW:
                for _, gone in entries[:cut]:
                    found = self._current.get(gone)
                    if found is not None and found.at < now - retention:
                        del self._current[gone]
            del entries[:cut]
        if not entries:
            del self._lists[key]
            if key.index is Index.SHOW:
                self._flagged.pop(key.show_id, None)

    def _slice(self, span: Span) -> list[tuple[float, str]]:
        entries = self._lists.get(span.key, [])
        lo = bisect.bisect_left(entries, (span.since, ""))
        hi = len(entries) if span.until == math.inf else bisect.bisect_left(entries, (span.until, ""))
        return entries[lo:hi]

    def votes(self, spans: Sequence[Span]) -> list[list[VoteSignal]]:
        with self._lock:
            found: list[list[VoteSignal]] = []
            for span in spans:
                signals = [self._current.get(v) for _, v in self._slice(span)]
                found.append([s for s in signals if s is not None])
            return found

    def counts(self, spans: Sequence[Span]) -> list[int]:
        with self._lock:
            return [len(self._slice(span)) for span in spans]

    def flagged(self, ids_by_show: Mapping[str, Collection[str]]) -> set[str]:
        with self._lock:
            found: set[str] = set()
            for show_id, ids in ids_by_show.items():
                known = self._flagged.get(show_id, {})
                found.update(i for i in ids if i in known)
            return found

    def mark_flagged(self, ids_by_show: Mapping[str, Collection[str]]) -> None:
        with self._lock:
            for show_id, ids in ids_by_show.items():
                known = self._flagged.setdefault(show_id, {})
                for i in ids:
                    known.setdefault(i, FLAGGED)

    def claim(self, name: str, ttl_seconds: float, now: float) -> bool:
        with self._lock:
            until = self._claims.get(name)
            if until is not None and until > now:
                return False
            self._claims[name] = now + ttl_seconds
            if len(self._claims) > 10_000:  # forget expired claims now and then
                self._claims = {k: v for k, v in self._claims.items() if v > now}
            return True


# ------------------------------------------------------------------------------- Valkey


def encode_member(signal: VoteSignal) -> str:
    """The compact member of a vote (its time is the score)."""
    created = "" if signal.account_created_at is None else repr(float(signal.account_created_at))
    fields = (
        _MEMBER_VERSION,
        signal.show_id,
        signal.song_id,
        signal.user_id,
        signal.vote_type,
        signal.artist_id or "",
        signal.net or "",
        signal.ip_hash or "",
        signal.ua_hash or "",
        signal.device_hash or "",
        created,
    )
    return _SEP.join(fields)


def decode_member(member: bytes | str, at: float) -> VoteSignal | None:
    """The signal of a member (None for a member this version cannot read)."""
    text = member.decode("utf-8") if isinstance(member, bytes) else member
    fields = text.split(_SEP)
    if len(fields) != 11 or fields[0] != _MEMBER_VERSION:
        return None
    _, show_id, song_id, user_id, vote_type, artist, net, ip_hash, ua_hash, device, created = fields
    return VoteSignal(
        vote_id=vote_id(show_id, user_id, song_id),
        show_id=show_id,
        song_id=song_id,
        user_id=user_id,
        vote_type=vote_type,
        at=at,
        artist_id=artist or None,
        net=net or None,
        ip_hash=ip_hash or None,
        ua_hash=ua_hash or None,
        device_hash=device or None,
        account_created_at=float(created) if created else None,
    )


@functools.lru_cache(maxsize=_DECODED_CACHE)
def _decoded(member: bytes, at: float) -> VoteSignal | None:
    """:func:`decode_member`, remembered: a container reads the same windows batch after batch."""
    return decode_member(member, at)


def redis_key(key: WindowKey) -> str:
    """The Valkey key of an index (see the module docstring)."""
    if key.index is Index.USER:
        return slot_key(f"fu:{key.key}", "v")
    group = f"fw:{key.show_id}"
    match key.index:
        case Index.SHOW:
            return slot_key(group, "v")
        case Index.NET:
            return slot_key(group, "n", key.key)
        case Index.DEVICE:
            return slot_key(group, "d", key.key)
        case Index.UP:
            return slot_key(group, "su", key.key)
        case Index.DOWN:
            return slot_key(group, "sd", key.key)
    raise ValueError(f"unknown index {key.index!r}")  # pragma: no cover - the match is exhaustive


def flagged_key(show_id: str) -> str:
    return slot_key(f"fw:{show_id}", "f")


def claim_key(name: str) -> str:
    return plain_key("fw", "claim", name)


def _bound(value: float, *, exclusive: bool = False) -> str:
    if value == math.inf:
        return "+inf"
    if value == -math.inf:
        return "-inf"
    return f"({value!r}" if exclusive else repr(value)


class ValkeyRecentVotes(_Conveniences):
    """The window in Valkey (see the module docstring). Raises :class:`WindowUnavailable`
    for any Valkey fault. ``client`` may be a factory (connect on first use); ``guard``
    wraps every round trip (the VALKEY circuit breaker by default)."""

    def __init__(
        self,
        client: Redis | Callable[[], Redis | None],
        *,
        show_retention: float,
        key_retention: float,
        guard: Guard | None = None,
    ) -> None:
        self._connect: Callable[[], Redis | None] | None = client if callable(client) else None
        self._connected: Any = None if callable(client) else client
        self.show_retention = show_retention
        self.key_retention = key_retention
        self._guard = guard
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, config: FraudConfig, *, guard: Guard | None = None
    ) -> ValkeyRecentVotes:
        """On the container's Valkey client (``CACHE_URL``) behind the VALKEY breaker.
        Without an endpoint every call raises :class:`WindowUnavailable`."""
        from mysetlist.valkey import valkey_client  # noqa: PLC0415 - redis-py loads on first use

        if guard is None:
            guard = _breaker_guard
        return cls(
            lambda: valkey_client(settings),
            show_retention=config.show_retention_seconds,
            key_retention=config.key_retention_seconds,
            guard=guard,
        )

    @classmethod
    def for_config(
        cls, client: Redis, config: FraudConfig, *, guard: Guard | None = None
    ) -> ValkeyRecentVotes:
        return cls(
            client,
            show_retention=config.show_retention_seconds,
            key_retention=config.key_retention_seconds,
            guard=guard,
        )

    # -- plumbing ------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._connected is None:
            with self._lock:
                if self._connected is None and self._connect is not None:
                    self._connected = self._connect()
            if self._connected is None:
                raise WindowUnavailable("no Valkey endpoint is configured (CACHE_URL)")
        return self._connected

    def _run(self, operation: Callable[[], T]) -> T:
        try:
            if self._guard is None:
                return operation()
            result: T = self._guard(operation)
            return result
        except WindowUnavailable:
            raise
        except Exception as exc:  # redis errors, timeouts, CircuitOpenError: "no window now"
            raise WindowUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def _pipeline(self, fill: Callable[[Any], None]) -> list[Any]:
        def operation() -> list[Any]:
            pipe = self._client().pipeline(transaction=False)
            fill(pipe)
            return list(pipe.execute())

        return self._run(operation)

    def _retention(self, key: WindowKey) -> float:
        return self.show_retention if key.index in _SHOW_INDEXES else self.key_retention

    # -- writes --------------------------------------------------------------------------

    def add(self, signals: Sequence[VoteSignal], now: float) -> None:
        latest = latest_per_vote(signals)
        if not latest:
            return
        members: dict[str, dict[str, float]] = {}
        retention: dict[str, float] = {}
        stale: dict[str, list[str]] = {}
        moderated: dict[str, dict[str, str]] = {}
        for signal in latest:
            if signal.moderation is not None:
                moderated.setdefault(signal.show_id, {})[signal.vote_id] = signal.moderation
            member = encode_member(signal)
            for key in keys_of(signal):
                name = redis_key(key)
                members.setdefault(name, {})[member] = signal.at
                retention[name] = self._retention(key)
            # The same vote in the other direction (switched): drop that state's member.
            other = dataclasses.replace(signal, vote_type="up" if signal.vote_type == "down" else "down")
            other_member = encode_member(other)
            for key in keys_of(other):
                stale.setdefault(redis_key(key), []).append(other_member)

        def fill(pipe: Any) -> None:
            for name, gone in stale.items():
                pipe.zrem(name, *gone)
            for name, mapping in members.items():
                pipe.zadd(name, mapping)
            for name, keep in retention.items():
                pipe.zremrangebyscore(name, "-inf", _bound(now - keep, exclusive=True))
                pipe.expire(name, math.ceil(keep) + _EXPIRY_MARGIN)
            for show_id, states in moderated.items():
                pipe.hset(flagged_key(show_id), mapping=states)
                pipe.expire(flagged_key(show_id), math.ceil(self.show_retention) + _EXPIRY_MARGIN)

        self._pipeline(fill)

    def remove(self, signals: Sequence[VoteSignal]) -> None:
        gone: dict[str, list[str]] = {}
        for signal in signals:
            member = encode_member(signal)
            for key in keys_of(signal):
                gone.setdefault(redis_key(key), []).append(member)
        if not gone:
            return

        flags: dict[str, list[str]] = {}
        for signal in signals:
            flags.setdefault(flagged_key(signal.show_id), []).append(signal.vote_id)

        def fill(pipe: Any) -> None:
            for name, names in gone.items():
                pipe.zrem(name, *names)
            for name, ids in flags.items():
                pipe.hdel(name, *ids)

        self._pipeline(fill)

    # -- reads ---------------------------------------------------------------------------

    def votes(self, spans: Sequence[Span]) -> list[list[VoteSignal]]:
        if not spans:
            return []

        def fill(pipe: Any) -> None:
            for span in spans:
                pipe.zrangebyscore(
                    redis_key(span.key),
                    _bound(span.since),
                    _bound(span.until, exclusive=True),
                    withscores=True,
                )

        found: list[list[VoteSignal]] = []
        for reply in self._pipeline(fill):
            decoded = [
                s for s in (_decoded(member, float(score)) for member, score in reply) if s is not None
            ]
            # In time order already; two states of one vote (rare) are resolved to the latest.
            unique = len({s.vote_id for s in decoded}) == len(decoded)
            found.append(decoded if unique else latest_per_vote(decoded))
        return found

    def counts(self, spans: Sequence[Span]) -> list[int]:
        if not spans:
            return []

        def fill(pipe: Any) -> None:
            for span in spans:
                pipe.zcount(redis_key(span.key), _bound(span.since), _bound(span.until, exclusive=True))

        return [int(n) for n in self._pipeline(fill)]

    def flagged(self, ids_by_show: Mapping[str, Collection[str]]) -> set[str]:
        asked = [(show_id, list(ids)) for show_id, ids in ids_by_show.items() if ids]
        if not asked:
            return set()

        def fill(pipe: Any) -> None:
            for show_id, ids in asked:
                pipe.hmget(flagged_key(show_id), ids)

        found: set[str] = set()
        for (_, ids), states in zip(asked, self._pipeline(fill), strict=True):
            found.update(i for i, state in zip(ids, states, strict=True) if state is not None)
        return found

    def mark_flagged(self, ids_by_show: Mapping[str, Collection[str]]) -> None:
        marked = {show_id: list(ids) for show_id, ids in ids_by_show.items() if ids}
        if not marked:
            return

        def fill(pipe: Any) -> None:
            for show_id, ids in marked.items():
                name = flagged_key(show_id)
                for i in ids:
                    pipe.hsetnx(name, i, FLAGGED)
                pipe.expire(name, math.ceil(self.show_retention) + _EXPIRY_MARGIN)

        self._pipeline(fill)

    def claim(self, name: str, ttl_seconds: float, now: float) -> bool:
        # ``now`` is not used: the claim expires on Valkey's clock.
        ttl = max(1, math.ceil(ttl_seconds))
        return bool(self._run(lambda: self._client().set(claim_key(name), "1", nx=True, ex=ttl)))


def _breaker_guard(operation: Callable[[], Any]) -> Any:
    from mysetlist.breaker import Dependency, breaker_for  # noqa: PLC0415 - light import on first use

    return breaker_for(Dependency.VALKEY).call(operation)


def split_by_show(vote_ids: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(show_id, vote_id) pairs grouped by show."""
    grouped: dict[str, list[str]] = {}
    for show_id, vote in vote_ids:
        grouped.setdefault(show_id, []).append(vote)
    return grouped
