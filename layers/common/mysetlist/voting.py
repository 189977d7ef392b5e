"""Voting use cases: cast (toggle) a vote, and read a show's tallies with the caller's votes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aws_lambda_powertools.metrics import MetricUnit

from mysetlist.auth import Caller
from mysetlist.cache import Cache
from mysetlist.catalog_store import CatalogStore
from mysetlist.errors import InvalidRequest, NotFound, Unavailable, Unprocessable
from mysetlist.models import (
    Show,
    ShowStatus,
    ShowVotes,
    SongTally,
    Trending,
    TrendingItem,
    TrendingScope,
    VoteAction,
    VoteIn,
    VoteOut,
)
from mysetlist.observability import logger, metrics
from mysetlist.signals import ClientSignals
from mysetlist.tallies import TallyStore
from mysetlist.trending import Ranked, TrendingBoard, rank_songs_from_tallies
from mysetlist.votes_store import VotesStore

# Without a known venue time zone, a show's day ends at the latest midnight on Earth (UTC-12).
_LATEST_OFFSET = dt.timezone(dt.timedelta(hours=-12))


def voting_closes_at(show: Show) -> dt.datetime:
    """When votes stop: the show's start when known, else the end of its local day."""
    if show.starts_at is not None:
        return show.starts_at if show.starts_at.tzinfo else show.starts_at.replace(tzinfo=dt.UTC)
    zone: dt.tzinfo = _LATEST_OFFSET
    if show.timezone:
        try:
            zone = ZoneInfo(show.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = _LATEST_OFFSET
    return dt.datetime.combine(show.date + dt.timedelta(days=1), dt.time.min, tzinfo=zone)


def ensure_open_for_votes(show: Show, now: dt.datetime) -> None:
    if show.status is ShowStatus.COMPLETED:
        raise Unprocessable(
            f"show '{show.show_id}' is completed: voting is closed", details={"status": "completed"}
        )
    if show.status is ShowStatus.CANCELLED:
        raise Unprocessable(
            f"show '{show.show_id}' was cancelled: voting is closed", details={"status": "cancelled"}
        )
    closes = voting_closes_at(show)
    if now >= closes:
        raise Unprocessable(
            f"show '{show.show_id}' has started: voting closed at {closes.isoformat()}",
            details={"closed_at": closes.isoformat()},
        )


def cast_vote(
    catalog: CatalogStore,
    votes: VotesStore,
    caller: Caller,
    request: VoteIn,
    now: dt.datetime,
    signals: ClientSignals | None = None,
    on_cast: Callable[[str], object] | None = None,
) -> VoteOut:
    """Toggle the caller's vote on a song of an upcoming show (see VotesStore.toggle). The
    client's ``signals`` are stored with the vote for suspicious-activity detection.

    ``on_cast`` is called with the show's artist id once a vote is created or switched: not when
    the toggle removed it, never for a refused vote. The votes API records there that the caller
    follows the artist (``mysetlist.fans``). The vote is stored by then, so the callback must
    not raise (``FanStore.record`` never does)."""
    show = catalog.get_show(request.show_id)
    if show is None:
        raise NotFound(f"no show with id '{request.show_id}'")
    ensure_open_for_votes(show, now)
    if not catalog.song_exists(show.artist_id, request.song_id):
        raise Unprocessable(
            f"song '{request.song_id}' is not in the catalogue of '{show.artist_id}', who plays this show",
            details={"artist_id": show.artist_id},
        )
    written = votes.toggle(
        show_id=show.show_id,
        song_id=request.song_id,
        user_id=caller.user_id,
        vote_type=request.vote_type,
        now=now,
        attributes={"artist_id": show.artist_id, **(signals or ClientSignals()).item_attributes()},
    )
    metrics.add_metric(name=f"Votes{written.action.value.capitalize()}", unit=MetricUnit.Count, value=1)
    if on_cast is not None and written.action is not VoteAction.REMOVED:
        on_cast(show.artist_id)
    return VoteOut(
        action=written.action, show_id=show.show_id, song_id=request.song_id, vote_type=written.vote_type
    )


def show_votes(
    catalog: CatalogStore,
    votes: VotesStore,
    tallies: TallyStore,
    show_id: str,
    caller: Caller | None,
    cache: Cache | None = None,
    ttl: float = 2.0,
) -> ShowVotes:
    """A show's tallies per song (most wanted first) and, for a signed-in caller, their votes.

    The tallies part is the same for everyone. With a cache it is served from there for ``ttl``
    seconds (``TALLIES_CACHE_SECONDS``): a hot show's tally partitions are then read a few times
    a second by the whole fleet, not once per viewer. The caller's own votes are always fresh.
    """

    def load() -> dict[str, Any]:
        return _tallies_of(catalog, tallies, show_id).model_dump(mode="json")

    if cache is None or ttl <= 0:
        board = _tallies_of(catalog, tallies, show_id)
    else:
        board = ShowVotes.model_validate(
            cache.get(f"show-votes:{show_id}", load, ttl=ttl, tags=[f"show:{show_id}"])
        )
    if caller is None:
        return board
    return board.model_copy(update={"my_votes": votes.votes_of(show_id, caller.user_id)})


def _tallies_of(catalog: CatalogStore, tallies: TallyStore, show_id: str) -> ShowVotes:
    show = catalog.get_show(show_id)
    if show is None:
        raise NotFound(f"no show with id '{show_id}'")
    counts = tallies.read(show_id)
    # The velocity of the whole show includes songs whose standing votes cancelled out.
    show_velocity = sum(c.vote_velocity for c in counts)
    counts = [c for c in counts if c.up or c.down]
    titles = catalog.song_titles(show.artist_id, [c.song_id for c in counts])
    songs = sorted(
        (
            SongTally(
                song_id=c.song_id,
                title=titles.get(c.song_id),
                upvotes=c.up,
                downvotes=c.down,
                net=c.up - c.down,
                vote_velocity=round(c.vote_velocity, 3),
                trending_score=round(c.trending_score, 4),
                positive_ratio=round(c.up / (c.up + c.down), 4) if c.up + c.down > 0 else None,
            )
            for c in counts
        ),
        key=lambda t: (-t.net, -t.upvotes, t.title or t.song_id),
    )
    return ShowVotes(
        show_id=show_id,
        songs=songs,
        total_upvotes=sum(s.upvotes for s in songs),
        total_downvotes=sum(s.downvotes for s in songs),
        vote_velocity=round(show_velocity, 3),
        trending_score=round(sum(c.trending_score for c in counts), 4),
        my_votes=None,
    )


def trending(
    catalog: CatalogStore,
    votes: VotesStore,
    tallies: TallyStore,
    board: TrendingBoard,
    *,
    scope: TrendingScope,
    show_id: str | None,
    artist_id: str | None,
    limit: int,
    now: dt.datetime,
    cache: Cache | None = None,
    ttl: float = 2.0,
) -> Trending:
    """The trending songs of a show, or the trending shows (of one artist, or all).

    The ranking comes from Valkey's sorted sets; each item's metrics from the show's tallies
    board (the same, cached, as ``GET /api/votes``). Songs are ranked from the tally items when
    Valkey is down; shows cannot be (that would read every show), so that answers 503.
    """
    if scope is TrendingScope.SONGS:
        if not show_id:
            raise InvalidRequest("scope=songs needs show_id: the show whose songs to rank")
        if artist_id:
            raise InvalidRequest("artist_id filters scope=shows; leave it out with scope=songs")
    elif show_id:
        raise InvalidRequest("show_id is for scope=songs; use artist_id to filter scope=shows")

    def board_of(show: str) -> ShowVotes:
        return show_votes(catalog, votes, tallies, show, None, cache, ttl)

    ranked_by: Literal["valkey", "tallies"] = "valkey"
    if scope is TrendingScope.SONGS:
        assert show_id is not None
        show_board = board_of(show_id)  # 404 for an unknown show
        try:
            ranked = board.top_songs(show_id, now, limit)
        except Exception as exc:
            logger.warning(
                "trending songs ranked from the tallies: Valkey unavailable", extra={"error": repr(exc)[:200]}
            )
            ranked, ranked_by = rank_songs_from_tallies(show_board.songs, limit), "tallies"
        songs = {song.song_id: song for song in show_board.songs}
        items = [_song_item(show_id, songs.get(r.id), r) for r in ranked]
    else:
        try:
            ranked = board.top_shows(now, limit, artist_id)
        except Exception as exc:
            raise Unavailable(
                "trending shows are served from the cache, which is unavailable; retry shortly",
                details={"outcome": "unchanged", "retryable": True, "retry_after_seconds": 5},
            ) from exc
        items = []
        for entry in ranked:
            try:
                show_board = board_of(entry.id)
            except NotFound:
                continue  # a show deleted since it was voted on
            items.append(_show_item(show_board, entry))
    return Trending(
        scope=scope,
        show_id=show_id,
        artist_id=artist_id,
        half_life_hours=round(board.config.half_life_seconds / 3600, 4),
        generated_at=now,
        ranked_by=ranked_by,
        items=items,
    )


def _song_item(show_id: str, song: SongTally | None, ranked: Ranked) -> TrendingItem:
    if song is None:  # ranked in Valkey, but no standing votes in the tallies (all removed)
        return TrendingItem(
            show_id=show_id,
            song_id=ranked.id,
            trending_score=round(ranked.score, 4),
            vote_velocity=0.0,
            total_votes=0,
        )
    return TrendingItem(
        show_id=show_id,
        song_id=song.song_id,
        title=song.title,
        trending_score=round(ranked.score, 4),
        vote_velocity=song.vote_velocity,
        total_votes=song.upvotes + song.downvotes,
        positive_ratio=song.positive_ratio,
    )


def _show_item(board: ShowVotes, ranked: Ranked) -> TrendingItem:
    total = board.total_upvotes + board.total_downvotes
    return TrendingItem(
        show_id=board.show_id,
        trending_score=round(ranked.score, 4),
        vote_velocity=board.vote_velocity,
        total_votes=total,
        positive_ratio=round(board.total_upvotes / total, 4) if total > 0 else None,
    )
