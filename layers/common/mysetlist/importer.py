"""Import setlists (the shared ``setlists/*.jsonl`` format) into the catalogue, idempotently.

Each line is one show: artist, date, venue, city, region, country, tour and its sets of song
titles (optional: ``show_id``, ``status``, ``local_time``, ``timezone``). A line with no songs
is a show without a setlist (an upcoming show when its date is ahead).

Per artist, the importer reads what is stored, merges the file into it and writes only items
that change, so importing twice writes nothing the second time. What people recorded through
the API wins over the file: a setlist recorded by a moderator is kept, and a completed show is
never turned back into an upcoming one. Malformed lines are reported with their number and
skipped; nothing already stored is removed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mysetlist import keys
from mysetlist.cache import build_cache
from mysetlist.catalog import build_setlist
from mysetlist.catalog_cache import CachedCatalogStore, tags_for_import
from mysetlist.catalog_store import (
    CatalogStore,
    artist_item,
    play_key,
    setlist_item,
    show_item,
    song_item,
    venue_item,
)
from mysetlist.dynamo import client_for, from_item, to_item
from mysetlist.models import Artist, Id, Setlist, Show, ShowStatus, Song, Venue
from mysetlist.settings import Settings

IMPORT_SOURCE = "import"


class SetIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: Annotated[str, Field(min_length=1, max_length=100)]
    songs: list[Annotated[str, Field(min_length=1, max_length=300)]] = []
    transitions: list[str | None] | None = None


class ShowLine(BaseModel):
    """One line of a setlist file."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)
    show_id: Id | None = None
    artist: Annotated[str, Field(min_length=1, max_length=200)]
    date: dt.date
    venue: str | None = None
    city: str | None = None
    region: str | None = None
    country: str | None = None
    tour: str | None = None
    status: ShowStatus | None = None
    local_time: Annotated[str | None, Field(pattern=r"^\d{2}:\d{2}$")] = None
    timezone: str | None = None
    sets: list[SetIn] = []

    def titles(self) -> list[str]:
        return [t for s in self.sets for t in s.songs]


@dataclass
class ImportReport:
    lines_read: int = 0
    shows: int = 0
    artists: int = 0
    written: dict[str, int] = field(default_factory=dict)
    unchanged: int = 0
    kept_from_api: int = 0
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        wrote = ", ".join(f"{n} {kind}" for kind, n in sorted(self.written.items())) or "nothing"
        return (
            f"{self.lines_read} lines, {self.shows} shows of {self.artists} artists: wrote {wrote}; "
            f"{self.unchanged} items unchanged; {self.kept_from_api} setlists recorded through the API kept; "
            f"{len(self.skipped)} lines skipped"
        )


def parse_lines(lines: Iterable[str], report: ImportReport, warn: Callable[[str], None]) -> list[ShowLine]:
    """Valid shows from JSON lines; each bad line is reported as 'line N: reason' and skipped."""
    shows: list[ShowLine] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        report.lines_read += 1
        text = raw.strip()
        if not text:
            continue
        problem: str | None = None
        try:
            line = ShowLine.model_validate(json.loads(text))
        except json.JSONDecodeError as exc:
            problem = f"not valid JSON ({exc.msg} at column {exc.colno})"
        except ValidationError as exc:
            problem = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'line'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
        else:
            if not keys.artist_id_for(line.artist):
                problem = f"artist name '{line.artist}' has no letters or digits"
            else:
                show_id = line.show_id or keys.show_id_for(
                    keys.artist_id_for(line.artist), line.date.isoformat()
                )
                if show_id in seen:
                    problem = f"show '{show_id}' already appears on line {seen[show_id]}"
                else:
                    seen[show_id] = number
                    shows.append(line.model_copy(update={"show_id": show_id}))
        if problem:
            message = f"line {number}: {problem}"
            report.skipped.append(message)
            warn(message)
    return shows


def import_lines(
    store: CatalogStore,
    lines: Iterable[str],
    *,
    today: dt.date | None = None,
    warn: Callable[[str], None] = print,
) -> ImportReport:
    """Merge the shows in ``lines`` into the catalogue (see the module docstring)."""
    report = ImportReport()
    shows = parse_lines(lines, report, warn)
    by_artist: dict[str, list[ShowLine]] = {}
    for line in shows:
        by_artist.setdefault(line.artist, []).append(line)
    report.shows = len(shows)
    report.artists = len(by_artist)
    for name, artist_lines in by_artist.items():
        _import_artist(store, name, artist_lines, today or dt.datetime.now(dt.UTC).date(), report)
    if isinstance(store, CachedCatalogStore) and shows:
        # Coarse but rare: everything of the imported artists and shows leaves the cache.
        artist_ids = [keys.artist_id_for(name) for name in by_artist]
        store.cache.invalidate_tags(tags_for_import(artist_ids, [line.show_id or "" for line in shows]))
    return report


def import_file(path: Path, settings: Settings, *, report: Callable[[str], None] = print) -> ImportReport:
    """Import one JSON Lines file into the catalogue table named by ``settings``."""
    settings.require("catalog_table")
    # Through the stack's cache when this machine can reach it (the local stack; a deployed
    # stack's cache is inside its VPC: from outside, cached catalogue values expire on their own,
    # within minutes, see mysetlist/catalog_cache.py).
    store = CachedCatalogStore(
        client_for(settings, read_timeout=120), settings.catalog_table, build_cache(settings)
    )
    with path.open(encoding="utf-8") as handle:
        result = import_lines(store, handle, warn=report)
    report(f"{path.name}: {result.summary()}")
    return result


@dataclass
class _ArtistState:
    """What is stored for one artist, and what it becomes once the file is merged in."""

    artist_id: str
    stored_shows: dict[str, Show]
    stored_setlists: dict[str, tuple[str, Setlist]]
    stored_songs: dict[str, dict[str, Any]]  # raw song items (with their plays)
    venues: dict[str, Venue] = field(default_factory=dict)
    shows: dict[str, Show] = field(default_factory=dict)
    setlists: dict[str, tuple[str, Setlist]] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)


def _import_artist(
    store: CatalogStore, name: str, lines: list[ShowLine], today: dt.date, report: ImportReport
) -> None:
    artist_id = keys.artist_id_for(name)
    state = _ArtistState(
        artist_id=artist_id,
        stored_shows={s.show_id: s for s in store.artist_shows(artist_id)},
        stored_setlists={s.show_id: (date, s) for date, s in store.artist_setlists(artist_id)},
        stored_songs={i["song_id"]: i for i in store.raw_songs(artist_id)},
    )
    state.shows = dict(state.stored_shows)
    state.setlists = dict(state.stored_setlists)
    state.titles = {song_id: str(i["title"]) for song_id, i in state.stored_songs.items()}
    for line in lines:
        _merge_line(state, line, today, report)

    plays: dict[str, set[str]] = {}
    for date, setlist in state.setlists.values():
        for song_id in set(setlist.song_ids):
            plays.setdefault(song_id, set()).add(play_key(date, setlist.show_id))
    songs = [
        song_item(Song(song_id=sid, artist_id=artist_id, title=title), plays.get(sid, ()))
        for sid, title in state.titles.items()
    ]
    artist = Artist(artist_id=artist_id, name=name, song_count=len(songs), show_count=len(state.shows))
    desired: list[tuple[str, dict[str, Any]]] = [("artists", artist_item(artist))]
    desired += [("venues", venue_item(v)) for v in state.venues.values()]
    desired += [("shows", show_item(s)) for s in state.shows.values()]
    desired += [("setlists", setlist_item(state.shows[sid], sl)) for sid, (_, sl) in state.setlists.items()]
    desired += [("songs", item) for item in songs]
    _write_changed(store, state, desired, report)


def _merge_line(state: _ArtistState, line: ShowLine, today: dt.date, report: ImportReport) -> None:
    show_id = str(line.show_id)
    venue_id = keys.venue_id_for(line.venue, line.city, line.country) if line.venue else None
    if venue_id and line.venue and venue_id not in state.venues:
        state.venues[venue_id] = Venue(
            venue_id=venue_id, name=line.venue, city=line.city, region=line.region, country=line.country
        )
    before = state.stored_shows.get(show_id)
    recorded = state.stored_setlists.get(show_id)
    has_songs = bool(line.titles())
    status = line.status or (ShowStatus.COMPLETED if has_songs or line.date < today else ShowStatus.UPCOMING)
    if before is not None and before.status is ShowStatus.COMPLETED:
        status = ShowStatus.COMPLETED  # never reopen a show people have closed
    state.shows[show_id] = Show(
        show_id=show_id,
        artist_id=state.artist_id,
        venue_id=venue_id,
        date=line.date,
        local_time=line.local_time,
        timezone=line.timezone,
        starts_at=_starts_at(line),
        status=status,
        tour=line.tour,
        name=before.name if before else None,
    )
    if recorded is not None and (recorded[1].recorded_by or IMPORT_SOURCE) != IMPORT_SOURCE:
        report.kept_from_api += 1  # a moderator's setlist wins over the file
    elif has_songs:
        state.setlists[show_id] = (
            line.date.isoformat(),
            build_setlist(
                state.artist_id,
                show_id,
                ((s.name, s.songs, _segues(s), None) for s in line.sets if s.songs),
                recorded_by=IMPORT_SOURCE,
                recorded_at=None,
            ),
        )
    for title in line.titles():
        state.titles.setdefault(keys.song_id_for(state.artist_id, title), title)


def _write_changed(
    store: CatalogStore, state: _ArtistState, desired: list[tuple[str, dict[str, Any]]], report: ImportReport
) -> None:
    """Write the desired items that differ from what is stored (nothing, on a second import)."""
    stored: dict[tuple[str, str], dict[str, Any]] = {}
    for raw in store.get_many([(i["PK"], i["SK"]) for kind, i in desired if kind in {"artists", "venues"}]):
        stored[(raw["PK"], raw["SK"])] = raw
    for show in state.stored_shows.values():
        stored[(keys.show_pk(show.show_id), keys.META)] = show_item(show)
    for sid, (_, setlist) in state.stored_setlists.items():
        if sid in state.stored_shows:
            stored[(keys.show_pk(sid), keys.ACTUAL_SETLIST_SK)] = setlist_item(
                state.stored_shows[sid], setlist
            )
    for raw in state.stored_songs.values():
        stored[(raw["PK"], raw["SK"])] = raw
    changed: list[dict[str, Any]] = []
    for kind, item in desired:
        before = stored.get((item["PK"], item["SK"]))
        if before is not None and _same(before, item):
            report.unchanged += 1
            continue
        changed.append(item)
        report.written[kind] = report.written.get(kind, 0) + 1
    store.put_many(changed)


def _same(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Equal as DynamoDB would store them (numbers normalised, sets compared as sets)."""
    return from_item(to_item(stored)) == from_item(to_item(wanted))


def _segues(set_in: SetIn) -> list[bool] | None:
    if not set_in.transitions or len(set_in.transitions) != len(set_in.songs):
        return None
    return [t in {">", "->"} for t in set_in.transitions]


def _starts_at(line: ShowLine) -> dt.datetime | None:
    """UTC start when the line gives a local time and a valid IANA zone."""
    if not (line.local_time and line.timezone):
        return None
    try:
        zone = ZoneInfo(line.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    hour, minute = (int(p) for p in line.local_time.split(":"))
    local = dt.datetime.combine(line.date, dt.time(hour, minute), tzinfo=zone)
    return local.astimezone(dt.UTC)
