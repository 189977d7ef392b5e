"""Catalogue use cases: reading artists, songs and shows; recording a show's actual setlist."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mysetlist import keys
from mysetlist.auth import Caller
from mysetlist.catalog_store import CatalogStore
from mysetlist.errors import InvalidRequest, NotFound, Unprocessable
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
    found = store.get_show_and_setlist(show_id)
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
    return Setlist(show_id=show_id, sets=built, recorded_by=recorded_by, recorded_at=recorded_at)


def record_setlist(
    store: CatalogStore, show_id: str, body: SetlistIn, caller: Caller, now: dt.datetime
) -> ShowDetail:
    """Record (or correct) a show's actual setlist; new songs join the artist's catalogue.

    The show becomes completed (voting closes) unless ``mark_completed`` is false. Song play
    statistics are recomputed from the artist's setlists, so a correction leaves them exact.
    """
    found = store.get_show_and_setlist(show_id)
    if found is None:
        raise NotFound(f"no show with id '{show_id}'")
    show, _previous = found
    if show.status is ShowStatus.CANCELLED:
        raise Unprocessable(f"show '{show_id}' was cancelled: it has no setlist to record")
    for s in body.sets:
        for title in s.songs:
            if not keys.slugify(title):
                raise InvalidRequest(f"song title '{title}' has no letters or digits")
    setlist = build_setlist(
        show.artist_id,
        show_id,
        ((s.name, s.songs, s.segues, s.encore or None) for s in body.sets),
        recorded_by=caller.user_id,
        recorded_at=now,
    )
    known = store.get_songs(show.artist_id, setlist.song_ids)
    new_songs: dict[str, Song] = {}
    for entry in (e for s in setlist.sets for e in s.songs):
        if entry.song_id not in known and entry.song_id not in new_songs:
            new_songs[entry.song_id] = Song(
                song_id=entry.song_id, artist_id=show.artist_id, title=entry.title
            )
    updated = show.model_copy(update={"status": ShowStatus.COMPLETED}) if body.mark_completed else show
    store.record_setlist(updated, setlist, list(new_songs.values()))
    refresh_artist_stats(store, show.artist_id)
    return get_show_detail(store, show_id)


@dataclass(frozen=True, slots=True)
class SongStats:
    times_played: int
    first_played: dt.date
    last_played: dt.date


def song_stats(dated_setlists: Iterable[tuple[str, Setlist]]) -> dict[str, SongStats]:
    """Per song id: in how many shows it was played, and the first and last dates."""
    stats: dict[str, SongStats] = {}
    for date_text, setlist in dated_setlists:
        date = dt.date.fromisoformat(date_text)
        for song_id in dict.fromkeys(setlist.song_ids):
            seen = stats.get(song_id)
            if seen is None:
                stats[song_id] = SongStats(1, date, date)
            else:
                stats[song_id] = SongStats(
                    seen.times_played + 1, min(seen.first_played, date), max(seen.last_played, date)
                )
    return stats


def with_stats(song: Song, stats: SongStats | None) -> Song:
    if stats is None:
        return song.model_copy(update={"times_played": 0, "first_played": None, "last_played": None})
    return song.model_copy(
        update={
            "times_played": stats.times_played,
            "first_played": stats.first_played,
            "last_played": stats.last_played,
        }
    )


def refresh_artist_stats(store: CatalogStore, artist_id: str) -> None:
    """Recompute the artist's song statistics and counts from its stored setlists."""
    stats = song_stats(store.artist_setlists(artist_id))
    songs = store.all_songs(artist_id)
    for song in songs:
        fresh = with_stats(song, stats.get(song.song_id))
        if fresh != song:
            store.update_song_stats(fresh)
    store.update_artist_counts(
        artist_id, song_count=len(songs), show_count=len(store.artist_shows(artist_id))
    )
