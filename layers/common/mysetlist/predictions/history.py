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
from typing import Any

ROLE_OPENER = "opener"
ROLE_MAIN = "main"
ROLE_ENCORE = "encore"


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

    @property
    def ordinal(self) -> int:
        return self.date.toordinal()


def _set_role(name: str, index: int, n_sets: int, n_songs: int) -> str:
    lowered = name.strip().lower()
    if lowered.startswith("encore"):
        return ROLE_ENCORE
    # Positional sets (Set 1, Set 2, ...): a short last set after others is an encore.
    if n_sets >= 2 and index == n_sets - 1 and n_songs < 3 and lowered.startswith("set"):
        return ROLE_ENCORE
    return ROLE_MAIN


def _sets_of(record: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    if isinstance(record.get("sets"), list):
        return [
            (str(s.get("name") or "Set 1"), [str(t) for t in s.get("songs") or []]) for s in record["sets"]
        ]
    if isinstance(record.get("setlist"), list):
        grouped: dict[str, list[str]] = {}
        for row in record["setlist"]:
            title = row.get("title") or row.get("song_title") or row.get("song")
            if title:
                grouped.setdefault(str(row.get("set_name") or "Set 1"), []).append(str(title))
        return list(grouped.items())
    return [("Set 1", [str(t) for t in record.get("songs") or []])]


def show_from_record(record: Mapping[str, Any]) -> Show:
    """A :class:`Show` from a JSONL line or a catalogue-shaped show record."""
    sets = _sets_of(record)
    songs: list[str] = []
    roles: list[str] = []
    seen: set[str] = set()
    for index, (name, titles) in enumerate(sets):
        role = _set_role(name, index, len(sets), len(titles))
        for title in titles:
            if title in seen:
                continue
            seen.add(title)
            songs.append(title)
            roles.append(ROLE_OPENER if not roles and role == ROLE_MAIN else role)
    return Show(
        show_id=str(record.get("show_id") or record.get("id") or ""),
        artist=str(record.get("artist") or record.get("artist_name") or ""),
        date=dt.date.fromisoformat(str(record.get("date"))[:10]),
        venue=record.get("venue") if isinstance(record.get("venue"), str) else None,
        city=record.get("city") if isinstance(record.get("city"), str) else None,
        country=record.get("country") if isinstance(record.get("country"), str) else None,
        tour=record.get("tour") if isinstance(record.get("tour"), str) else None,
        songs=tuple(songs),
        roles=tuple(roles),
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
