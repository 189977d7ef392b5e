"""Voting use cases: cast (toggle) a vote, and read a show's tallies with the caller's votes."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aws_lambda_powertools.metrics import MetricUnit

from mysetlist.auth import Caller
from mysetlist.cache import Cache
from mysetlist.catalog_store import CatalogStore
from mysetlist.errors import NotFound, Unprocessable
from mysetlist.models import Show, ShowStatus, ShowVotes, SongTally, VoteIn, VoteOut
from mysetlist.observability import metrics
from mysetlist.tallies import TallyStore
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
    catalog: CatalogStore, votes: VotesStore, caller: Caller, request: VoteIn, now: dt.datetime
) -> VoteOut:
    """Toggle the caller's vote on a song of an upcoming show (see VotesStore.toggle)."""
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
    )
    metrics.add_metric(name=f"Votes{written.action.value.capitalize()}", unit=MetricUnit.Count, value=1)
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
    counts = [c for c in tallies.read(show_id) if c.up or c.down]
    titles = catalog.song_titles(show.artist_id, [c.song_id for c in counts])
    songs = sorted(
        (
            SongTally(
                song_id=c.song_id,
                title=titles.get(c.song_id),
                upvotes=c.up,
                downvotes=c.down,
                net=c.up - c.down,
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
        my_votes=None,
    )
