"""Catalogue use cases: reading artists, songs and shows; recording a show's actual setlist."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from mysetlist import keys
from mysetlist.auth import Caller
from mysetlist.catalog_store import CatalogStore, ChangedConcurrently, SetlistChange
from mysetlist.errors import Conflict, InvalidRequest, NotFound, Unprocessable
from mysetlist.models import (
    Artist,
    Page,
    Setlist,
    SetlistEntry,
    SetlistIn,
    SetlistSet,
    Show,
    ShowDetail,
    ShowStatus,
    Song,
)


def get_artist(store: CatalogStore, artist_id: str) -> Artist:
    artist = store.get_artist(artist_id)
    if artist is None:
        raise NotFound(f"no artist with id '{artist_id}'")
    return artist


def list_artist_songs(store: CatalogStore, artist_id: str, limit: int, cursor: str | None) -> Page[Song]:
    get_artist(store, artist_id)
    return store.list_songs(artist_id, limit, cursor)


def list_shows(
    store: CatalogStore,
    *,
    artist_id: str | None,
    status: ShowStatus | None,
    date_from: dt.date | None,
    date_to: dt.date | None,
    limit: int,
    cursor: str | None,
) -> Page[Show]:
    """Shows of an artist (any status unless given) or of the platform (upcoming unless given).

    Upcoming shows come soonest first; completed and mixed lists come most recent first.
    """
    if date_from and date_to and date_from > date_to:
        raise InvalidRequest("'from' must not be after 'to'")
    if artist_id:
        get_artist(store, artist_id)
    effective = status if (status or artist_id) else ShowStatus.UPCOMING
    return store.list_shows(
        artist_id=artist_id,
        status=effective,
        date_from=date_from,
        date_to=date_to,
        descending=effective is not ShowStatus.UPCOMING,
        limit=limit,
        cursor=cursor,
    )


def get_show_detail(store: CatalogStore, show_id: str) -> ShowDetail:
    found = store.read_show_and_setlist(show_id)
    if found is None:
        raise NotFound(f"no show with id '{show_id}'")
    show, setlist = found
    artist, venue = store.get_artist_and_venue(show.artist_id, show.venue_id)
    if artist is None:  # a show always has its artist; a missing one is a data fault, not a 404
        raise RuntimeError(f"show {show_id} refers to missing artist {show.artist_id}")
    return ShowDetail(show=show, venue=venue, artist=artist, setlist=setlist)


def is_encore(set_name: str) -> bool:
    return set_name.strip().lower().startswith("encore")


def build_setlist(
    artist_id: str,
    show_id: str,
    sets: Iterable[tuple[str, Sequence[str], Sequence[bool] | None, bool | None]],
    *,
    recorded_by: str | None,
    recorded_at: dt.datetime | None,
    revision: int = 0,
) -> Setlist:
    """A setlist from (set name, titles, segues, encore flag) in play order; positions run over
    the whole show. Song ids are derived from the title, so spelling variants that differ only
    in case or punctuation are the same song."""
    built: list[SetlistSet] = []
    position = 0
    for name, titles, segues, encore in sets:
        entries = []
        for i, title in enumerate(titles):
            position += 1
            entries.append(
                SetlistEntry(
                    position=position,
                    song_id=keys.song_id_for(artist_id, title),
                    title=title,
                    segue=bool(segues[i]) if segues else False,
                )
            )
        built.append(
            SetlistSet(name=name, encore=is_encore(name) if encore is None else encore, songs=entries)
        )
    return Setlist(
        show_id=show_id, sets=built, recorded_by=recorded_by, recorded_at=recorded_at, revision=revision
    )


def record_setlist(
    store: CatalogStore, show_id: str, body: SetlistIn, caller: Caller, now: dt.datetime
) -> ShowDetail:
    """Record (or correct) a show's actual setlist; new songs join the artist's catalogue.

    The show becomes completed (voting closes) unless ``mark_completed`` is false. The setlist,
    the show, new songs and the plays of every song it adds or drops are written in one
    transaction, so play statistics stay exact and a retried request changes nothing more.
    """
    for attempt in range(2):
        found = store.get_show_and_setlist(show_id)
        if found is None:
            raise NotFound(f"no show with id '{show_id}'")
        show, previous = found
        if show.status is ShowStatus.CANCELLED:
            raise Unprocessable(f"show '{show_id}' was cancelled: it has no setlist to record")
        setlist = build_setlist(
            show.artist_id,
            show_id,
            ((s.name, s.songs, s.segues, s.encore or None) for s in body.sets),
            recorded_by=caller.user_id,
            recorded_at=now,
            revision=previous.revision + 1 if previous else 1,
        )
        new_ids = dict.fromkeys(setlist.song_ids)
        old_ids = set(previous.song_ids) if previous else set()
        titles = {e.song_id: e.title for st in setlist.sets for e in st.songs}
        added = {sid: titles[sid] for sid in new_ids if sid not in old_ids}
        known = store.song_titles(show.artist_id, added)
        updated = show.model_copy(update={"status": ShowStatus.COMPLETED}) if body.mark_completed else show
        change = SetlistChange(
            show=updated,
            setlist=setlist,
            added=added,
            removed=frozenset(old_ids - set(new_ids)),
            new_song_ids=frozenset(sid for sid in added if sid not in known),
            previous_revision=previous.revision if previous else None,
        )
        try:
            store.record_setlist(change)
        except ChangedConcurrently:
            if attempt:
                raise Conflict(
                    "this show's setlist is being recorded by someone else; retry",
                    details={"retryable": True},
                ) from None
            continue  # another moderator changed this setlist or created one of its songs: read again
        return get_show_detail(store, show_id)
    raise AssertionError("unreachable")  # pragma: no cover
