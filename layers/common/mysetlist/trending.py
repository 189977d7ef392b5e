"""Trending songs and shows, served from Valkey sorted sets (durable sums: the tally items).

The scores are defined in :mod:`mysetlist.activity`: each era's sums are exact integers
(billionths of a vote) on the tally items. Valkey keeps the same per-era sums in sorted sets, so a ranking is one command:

* ``msl:{tr:<show>}:songs:<era>``: the songs of a show;
* ``msl:{tr:shows}:all:<era>`` and ``msl:{tr:shows}:artist:<artist>:<era>``: shows.

A ranking at ``now`` is ``ZUNION`` of the current and the previous era, weighted by their decay
to ``now`` (older eras weigh under 2**-32 and are ignored). The VoteProcessor adds each batch's
new contributions (:class:`TrendingObserver`); the TallyReconciler rebuilds a show's sets from
the tally items (:meth:`TrendingBoard.replace_show`), which repairs anything a lost update or a
replayed batch left. Valkey is a view: when it is down, rankings of a show's songs come from the
tally items and rankings of shows answer 503.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit

from mysetlist.activity import SCALE, ActivityConfig, era_of
from mysetlist.breaker import Dependency, breaker_for
from mysetlist.observability import logger, metrics
from mysetlist.tallies import summed
from mysetlist.valkey import slot_key

if TYPE_CHECKING:
    from redis import Redis

    from mysetlist.stream_batch import CountedBatch

_SHOWS_GROUP = "tr:shows"
# Sets outlive their era by two more: the previous era is read throughout the current one.
_ERAS_KEPT = 3


def songs_key(show_id: str, era: int) -> str:
    return slot_key(f"tr:{show_id}", "songs", str(era))


def shows_key(era: int, artist_id: str | None = None) -> str:
    if artist_id:
        return slot_key(_SHOWS_GROUP, "artist", artist_id, str(era))
    return slot_key(_SHOWS_GROUP, "all", str(era))


@dataclass(frozen=True, slots=True)
class Ranked:
    id: str
    score: float


class TrendingBoard:
    """The sorted sets. Every call goes through the VALKEY circuit breaker; callers decide what
    a fault means (the observer logs it, the API falls back or answers 503)."""

    def __init__(self, client: Callable[[], Redis | None], config: ActivityConfig) -> None:
        self._client = client
        self.config = config

    def _redis(self) -> Redis:
        client = self._client()
        if client is None:
            raise LookupError("no Valkey endpoint is configured")
        return client

    def add(self, contributions: Iterable[tuple[str, str | None, str, Mapping[int, int]]]) -> int:
        """Add (show, artist, song, per-era sums) contributions; returns the commands sent."""
        client = self._redis()
        commands = 0

        # Songs one by one; shows (all, and the artist's) summed per show and era first, so a hot
        # show's batch costs one increment per set, not one per song. One EXPIRE per key.
        increments: dict[tuple[str, str], float] = {}
        for show_id, artist_id, song_id, sums in contributions:
            for era, amount in sums.items():
                value = amount / SCALE
                targets = [(songs_key(show_id, era), song_id), (shows_key(era), show_id)]
                if artist_id:
                    targets.append((shows_key(era, artist_id), show_id))
                for target in targets:
                    increments[target] = increments.get(target, 0.0) + value

        def send() -> None:
            nonlocal commands
            pipe = client.pipeline(transaction=False)
            ttl = math.ceil(self.config.era_seconds * _ERAS_KEPT)
            for (key, member), value in increments.items():
                pipe.zincrby(key, value, member)
            for key in {key for key, _ in increments}:
                pipe.expire(key, ttl)
            commands = len(increments) + len({key for key, _ in increments})
            if commands:
                pipe.execute()

        breaker_for(Dependency.VALKEY).call(send)
        return commands

    def replace_show(
        self,
        show_id: str,
        artist_id: str | None,
        song_sums: Mapping[str, Mapping[int, int]],
        now: dt.datetime,
    ) -> None:
        """Rebuild a show's song sets from durable sums, and its entries in the show sets."""
        client = self._redis()
        current = era_of(now.timestamp(), self.config)
        eras = range(current - _ERAS_KEPT + 1, current + 1)
        ttl = math.ceil(self.config.era_seconds * _ERAS_KEPT)

        def send() -> None:
            songs = client.pipeline(transaction=True)  # one slot: the show's song sets
            for era in eras:
                key = songs_key(show_id, era)
                songs.delete(key)
                members = {song: sums[era] / SCALE for song, sums in song_sums.items() if sums.get(era)}
                if members:
                    songs.zadd(key, members)
                    songs.expire(key, ttl)
            songs.execute()
            shows = client.pipeline(transaction=True)  # one slot: the show sets
            for era in eras:
                total = sum((sums.get(era, 0) for sums in song_sums.values()), 0)
                for key in [shows_key(era)] + ([shows_key(era, artist_id)] if artist_id else []):
                    if total:
                        shows.zadd(key, {show_id: total / SCALE})
                        shows.expire(key, ttl)
                    else:
                        shows.zrem(key, show_id)
            shows.execute()

        breaker_for(Dependency.VALKEY).call(send)

    def top_songs(self, show_id: str, now: dt.datetime, limit: int) -> list[Ranked]:
        return self._top(lambda era: songs_key(show_id, era), now, limit)

    def top_shows(self, now: dt.datetime, limit: int, artist_id: str | None = None) -> list[Ranked]:
        return self._top(lambda era: shows_key(era, artist_id), now, limit)

    def _top(self, key_of: Callable[[int], str], now: dt.datetime, limit: int) -> list[Ranked]:
        client = self._redis()
        at = now.timestamp()
        current = era_of(at, self.config)
        eras = (current, current - 1)
        weights = [
            2.0 ** ((era * self.config.era_seconds - at) / self.config.half_life_seconds) for era in eras
        ]

        def read() -> Any:
            return client.zunion(
                {key_of(era): weight for era, weight in zip(eras, weights, strict=True)}, withscores=True
            )

        raw = breaker_for(Dependency.VALKEY).call(read)
        pairs = _pairs(raw)
        pairs.sort(key=lambda p: (-p[1], p[0]))
        return [Ranked(member, score) for member, score in pairs[:limit] if score > 0]


def _pairs(raw: Any) -> list[tuple[str, float]]:
    """ZUNION ... WITHSCORES as (member, score) pairs (RESP2 flat list or RESP3 pairs)."""
    items = list(raw or [])
    if items and isinstance(items[0], list | tuple):
        return [(_text(m), float(s)) for m, s in items]
    return [(_text(items[i]), float(items[i + 1])) for i in range(0, len(items) - 1, 2)]


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class TrendingObserver:
    """The VoteProcessor's feed of the sorted sets: each batch's new trending contributions."""

    name = "trending"

    def __init__(self, board: TrendingBoard) -> None:
        self._board = board

    def observe(self, batch: CountedBatch) -> None:
        new = batch.new_records
        if not new:
            return
        artists: dict[str, str] = {}
        for record, change in new:
            if change.delta is None:
                continue
            image = (
                (record.get("dynamodb") or {}).get("NewImage")
                or (record.get("dynamodb") or {}).get("OldImage")
                or {}
            )
            artist = (image.get("artist_id") or {}).get("S")
            if artist:
                artists[change.delta.show_id] = artist
        deltas = summed([change for _, change in new], self._board.config, batch.now)
        contributions = [(d.show_id, artists.get(d.show_id), d.song_id, d.trend) for d in deltas if d.trend]
        if not contributions:
            return
        try:
            self._board.add(contributions)
        except Exception as exc:  # a view: the reconciler's rebuild repairs what is missed here
            logger.warning("trending sets not updated", extra={"error": repr(exc)[:300]})
            metrics.add_metric(name="TrendingUpdateFailed", unit=MetricUnit.Count, value=1)


def rank_songs_from_tallies(counts: Sequence[Any], limit: int) -> list[Ranked]:
    """The fallback ranking of a show's songs (Valkey down): from the tally items' scores."""
    ranked = [Ranked(c.song_id, c.trending_score) for c in counts if c.trending_score > 0]
    ranked.sort(key=lambda r: (-r.score, r.id))
    return ranked[:limit]
