"""History snapshots (JSON round trip) and set roles from either source."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mysetlist.predictions.history import (
    ROLE_ENCORE,
    ROLE_MAIN,
    ROLE_OPENER,
    ArtistHistory,
    Show,
    roles_for_sets,
    show_from_record,
    show_parts,
)


def _history() -> ArtistHistory:
    records: list[dict[str, Any]] = [
        {
            "show_id": "b",
            "artist": "A",
            "date": "2020-02-01",
            "venue": "Hall",
            "city": "Leeds",
            "country": "GB",
            "tour": "T1",
            "sets": [{"name": "Set 1", "songs": ["x", "y"]}, {"name": "Encore", "songs": ["z"]}],
        },
        {
            "show_id": "a",
            "artist": "A",
            "date": "2020-01-01",
            "sets": [{"name": "Set 1", "songs": ["y", "w"]}],
        },
        {"show_id": "c", "artist": "A", "date": "2020-02-01", "songs": ["q"]},
        {"show_id": "empty", "artist": "A", "date": "2020-03-01", "songs": []},
    ]
    return ArtistHistory.build("A", [show_from_record(r) for r in records])


def test_snapshot_round_trip() -> None:
    history = _history()
    assert [s.show_id for s in history.shows] == ["a", "b", "c"]
    data = json.loads(json.dumps(history.to_json()))
    restored = ArtistHistory.from_json(data)
    assert restored == history
    assert restored.titles == ["y", "w", "x", "z", "q"]
    assert restored.shows[1].roles == (ROLE_OPENER, ROLE_MAIN, ROLE_ENCORE)
    assert restored.shows[1].slots == ("set 1", "set 1", "encore")
    assert restored.shows[1].venue == "Hall"
    assert restored.shows[1].tour == "T1"
    # Compact: each title once, songs as indices.
    assert data["shows"][1][6] == [2, 0, 3]


def test_snapshot_of_another_format_is_refused() -> None:
    data = _history().to_json()
    data["format"] = 99
    with pytest.raises(ValueError, match="format"):
        ArtistHistory.from_json(data)


def test_catalogue_sets_map_to_the_same_roles_as_the_files() -> None:
    from_file = show_from_record(
        {
            "show_id": "s",
            "artist": "A",
            "date": "2020-01-01",
            "sets": [
                {"name": "Set 1", "songs": ["a", "b"]},
                {"name": "Set 2", "songs": ["c", "a", "d"]},
                {"name": "Set 3", "songs": ["e"]},
            ],
        }
    )
    # The catalogue flags its encore and may name it anything.
    songs, roles = roles_for_sets(
        [("Set 1", False, ["a", "b"]), ("Set 2", False, ["c", "a", "d"]), ("Bis", True, ["e"])]
    )
    assert songs == from_file.songs == ("a", "b", "c", "d", "e")
    assert from_file.slots == ("set 1", "set 1", "set 2", "set 2", "set 3")
    assert show_parts([("  Surprise   Songs ", False, ["x"])]).slots == ("surprise songs",)
    assert roles == from_file.roles == (ROLE_OPENER, ROLE_MAIN, ROLE_MAIN, ROLE_MAIN, ROLE_ENCORE)
    show = Show("s", "A", from_file.date, songs=songs, roles=roles)
    assert show.roles[-1] == ROLE_ENCORE
    # The catalogue's flag wins over the name and the length.
    long_encore = roles_for_sets([("Set 1", False, ["a", "b"]), ("Set 2", True, ["c", "d", "e", "f"])])
    assert long_encore[1] == (ROLE_OPENER, ROLE_MAIN, ROLE_ENCORE, ROLE_ENCORE, ROLE_ENCORE, ROLE_ENCORE)
