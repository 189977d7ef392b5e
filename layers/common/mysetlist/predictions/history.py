"""A per-artist chronological history of actual setlists.

Input is either the shared ``setlists`` JSON Lines format (one show per line with ``sets``:
``[{"name", "songs"}]``) or a catalogue-shaped show (``setlist``: ``[{"title", "set_name"}]``
or a flat ``songs`` list). Shows are ordered by date, input order breaking ties; shows with no
songs are dropped. Songs get ids in order of first appearance, so a later show never changes the
id of an earlier song.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

ROLE_OPENER = "opener"
ROLE_MAIN = "main"
ROLE_ENCORE = "encore"
SNAPSHOT_FORMAT = 1


@dataclass(frozen=True)
class Show:
    """One show: metadata and its distinct songs in first-play order, each with a set role."""

    show_id: str
    artist: str
    date: dt.date
    venue: str | None = None
    city: str | None = None
    country: str | None = None
    tour: str | None = None
    songs: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    # Per song, the name of the set it was played in (lower case), when known: where in the
    # show it was placed, which the features relate to how often the artist repeats a song.
    slots: tuple[str, ...] = ()

    @property
    def ordinal(self) -> int:
        return self.date.toordinal()


def _set_role(name: str, index: int, n_sets: int, n_songs: int, encore: bool = False) -> str:
    lowered = name.strip().lower()
    if encore or lowered.startswith("encore"):
        return ROLE_ENCORE
    # Positional sets (Set 1, Set 2, ...): a short last set after others is an encore.
    if n_sets >= 2 and index == n_sets - 1 and n_songs < 3 and lowered.startswith("set"):
        return ROLE_ENCORE
    return ROLE_MAIN


class ShowParts(NamedTuple):
    """A show's distinct songs in first-play order, each one's role and its set's name."""

    songs: tuple[str, ...]
    roles: tuple[str, ...]
    slots: tuple[str, ...]


def show_parts(sets: Sequence[tuple[str, bool, Sequence[str]]]) -> ShowParts:
    """The distinct songs of a show in first-play order, each one's role and set name.

    ``sets`` is ``(name, encore, songs)`` per set in the order played: the JSONL files name their
    encores ("Encore", or a short last "Set 3"), the catalogue flags them (``SetlistSet.encore``);
    both map to the same roles. The first song of the main set is the opener; a song played
    twice keeps its first role and set. ``Show(..., **show_parts(sets)._asdict())``.
    """
    songs: list[str] = []
    roles: list[str] = []
    slots: list[str] = []
    seen: set[str] = set()
    for index, (name, encore, keys) in enumerate(sets):
        role = _set_role(name, index, len(sets), len(keys), encore)
        slot = " ".join(name.lower().split()) or role
        for key in keys:
            if key in seen:
                continue
            seen.add(key)
            songs.append(key)
            roles.append(ROLE_OPENER if not roles and role == ROLE_MAIN else role)
            slots.append(slot)
    return ShowParts(tuple(songs), tuple(roles), tuple(slots))


def roles_for_sets(
    sets: Sequence[tuple[str, bool, Sequence[str]]],
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The distinct songs of a show in first-play order and each one's role (see
    :func:`show_parts`, which also gives each song's set name)."""
    parts = show_parts(sets)
    return parts.songs, parts.roles


def _sets_of(record: Mapping[str, Any]) -> list[tuple[str, bool, list[str]]]:
    if isinstance(record.get("sets"), list):
        return [
            (str(s.get("name") or "Set 1"), s.get("encore") is True, [str(t) for t in s.get("songs") or []])
            for s in record["sets"]
        ]
    if isinstance(record.get("setlist"), list):
        grouped: dict[str, list[str]] = {}
        for row in record["setlist"]:
            title = row.get("title") or row.get("song_title") or row.get("song")
            if title:
                grouped.setdefault(str(row.get("set_name") or "Set 1"), []).append(str(title))
        return [(name, False, titles) for name, titles in grouped.items()]
    return [("Set 1", False, [str(t) for t in record.get("songs") or []])]


def show_from_record(record: Mapping[str, Any]) -> Show:
    """A :class:`Show` from a JSONL line or a catalogue-shaped show record."""
    parts = show_parts(_sets_of(record))
    return Show(
        show_id=str(record.get("show_id") or record.get("id") or ""),
        artist=str(record.get("artist") or record.get("artist_name") or ""),
        date=dt.date.fromisoformat(str(record.get("date"))[:10]),
        venue=record.get("venue") if isinstance(record.get("venue"), str) else None,
        city=record.get("city") if isinstance(record.get("city"), str) else None,
        country=record.get("country") if isinstance(record.get("country"), str) else None,
        tour=record.get("tour") if isinstance(record.get("tour"), str) else None,
        songs=parts.songs,
        roles=parts.roles,
        slots=parts.slots,
    )


@dataclass
class ArtistHistory:
    """An artist's shows in chronological order, with song ids by first appearance."""

    artist: str
    shows: list[Show] = field(default_factory=list)
    song_ids: dict[str, int] = field(default_factory=dict)
    titles: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, artist: str, shows: Iterable[Show]) -> ArtistHistory:
        ordered = sorted(
            (s for s in enumerate(shows) if s[1].songs), key=lambda item: (item[1].date, item[0])
        )
        history = cls(artist=artist)
        for _, show in ordered:
            history.shows.append(show)
            for title in show.songs:
                if title not in history.song_ids:
                    history.song_ids[title] = len(history.titles)
                    history.titles.append(title)
        return history

    def index_of(self, show_id: str) -> int:
        for i, show in enumerate(self.shows):
            if show.show_id == show_id:
                return i
        raise KeyError(show_id)

    def prefix(self, n: int) -> ArtistHistory:
        """The history of the first ``n`` shows only (nothing later is reachable from it)."""
        return ArtistHistory.build(self.artist, self.shows[:n])

    def to_json(self) -> dict[str, Any]:
        """A compact JSON-ready snapshot: songs as indices into ``titles``, roles as one letter
        each (o, m, e). :meth:`from_json` restores an equal history."""
        letters = {ROLE_OPENER: "o", ROLE_MAIN: "m", ROLE_ENCORE: "e"}
        slot_names: dict[str, int] = {}
        for show in self.shows:
            for slot in show.slots:
                slot_names.setdefault(slot, len(slot_names))
        return {
            "format": SNAPSHOT_FORMAT,
            "artist": self.artist,
            "titles": list(self.titles),
            "slots": list(slot_names),
            "shows": [
                [
                    show.show_id,
                    show.date.isoformat(),
                    show.venue,
                    show.city,
                    show.country,
                    show.tour,
                    [self.song_ids[song] for song in show.songs],
                    "".join(letters[role] for role in show.roles),
                    [slot_names[slot] for slot in show.slots],
                ]
                for show in self.shows
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ArtistHistory:
        """The history of a :meth:`to_json` snapshot. Raises ValueError on another format."""
        if data.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unsupported history snapshot format {data.get('format')!r}")
        roles = {"o": ROLE_OPENER, "m": ROLE_MAIN, "e": ROLE_ENCORE}
        artist = str(data["artist"])
        titles = [str(t) for t in data["titles"]]
        slot_names = [str(s) for s in data.get("slots") or []]
        shows = [
            Show(
                show_id=show_id,
                artist=artist,
                date=dt.date.fromisoformat(date),
                venue=venue,
                city=city,
                country=country,
                tour=tour,
                songs=tuple(titles[i] for i in songs),
                roles=tuple(roles[letter] for letter in letters),
                slots=tuple(slot_names[i] for i in slots),
            )
            for show_id, date, venue, city, country, tour, songs, letters, slots in data["shows"]
        ]
        return cls.build(artist, shows)


def histories_from_records(records: Iterable[Mapping[str, Any]]) -> dict[str, ArtistHistory]:
    by_artist: dict[str, list[Show]] = {}
    for record in records:
        show = show_from_record(record)
        by_artist.setdefault(show.artist, []).append(show)
    return {artist: ArtistHistory.build(artist, shows) for artist, shows in by_artist.items()}


def load_jsonl(paths: Sequence[str | Path]) -> dict[str, ArtistHistory]:
    """Per-artist histories from setlists JSON Lines files."""
    records: list[dict[str, Any]] = []
    for path in paths:
        with Path(path).open(encoding="utf-8") as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    return histories_from_records(records)
