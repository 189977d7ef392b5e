"""The importer against moto: idempotent, reports bad lines, never loses what people recorded."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mysetlist.catalog_store import CatalogStore
from mysetlist.importer import import_lines

ARTIST = "Import Test Band"
ARTIST_ID = "import-test-band"


def show(date: str, *songs: str, **extra: Any) -> str:
    line = {
        "artist": ARTIST,
        "date": date,
        "venue": "Hall",
        "city": "Town",
        "country": "US",
        "sets": [{"name": "Set 1", "songs": list(songs)}] if songs else [],
        **extra,
    }
    return json.dumps(line)


@pytest.fixture
def store(aws: dict[str, str], dynamodb: Any, settings: Any) -> CatalogStore:
    return CatalogStore(dynamodb, settings.catalog_table)


def scan_artist(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    items = dynamodb.scan(TableName=table)["Items"]
    return sorted(
        (i for i in items if ARTIST_ID in json.dumps(i)), key=lambda i: (i["PK"]["S"], i["SK"]["S"])
    )


def test_importing_twice_changes_nothing(
    store: CatalogStore, dynamodb: Any, settings: Any, sample_lines: list[str]
) -> None:
    lines = [show("2001-01-01", "A", "B"), show("2001-01-02", "B", "C"), show("2031-01-01")]
    first = import_lines(store, lines, warn=lambda _: None)
    assert first.written == {"artists": 1, "venues": 1, "shows": 3, "setlists": 2, "songs": 3}
    snapshot = scan_artist(dynamodb, settings.catalog_table)
    second = import_lines(store, lines, warn=lambda _: None)
    assert second.written == {}
    assert second.unchanged == sum(first.written.values())
    assert scan_artist(dynamodb, settings.catalog_table) == snapshot
    songs = {s.song_id: s for s in store.all_songs(ARTIST_ID)}
    assert songs[f"{ARTIST_ID}:b"].times_played == 2
    assert str(songs[f"{ARTIST_ID}:b"].last_played) == "2001-01-02"
    statuses = {s.show_id: s.status.value for s in store.artist_shows(ARTIST_ID)}
    assert statuses == {
        f"{ARTIST_ID}:2001-01-01": "completed",
        f"{ARTIST_ID}:2001-01-02": "completed",
        f"{ARTIST_ID}:2031-01-01": "upcoming",
    }


def test_malformed_lines_are_reported_with_their_number_and_skipped(store: CatalogStore) -> None:
    warnings: list[str] = []
    lines = [
        show("2002-01-01", "A"),
        "{not json",
        json.dumps({"artist": ARTIST, "date": "2002-13-45", "sets": []}),
        json.dumps({"date": "2002-01-03", "sets": []}),
        "",
        show("2002-01-01", "B"),  # the same show again
        json.dumps({"artist": "!!!", "date": "2002-01-04"}),
        show("2002-01-05", "C"),
    ]
    report = import_lines(store, lines, warn=warnings.append)
    assert [w.split(":")[0] for w in warnings] == ["line 2", "line 3", "line 4", "line 6", "line 7"]
    assert "not valid JSON" in warnings[0]
    assert "date" in warnings[1]
    assert "artist" in warnings[2]
    assert "already appears on line 1" in warnings[3]
    assert report.shows == 2
    shows = {s.show_id for s in store.artist_shows(ARTIST_ID)}
    assert {f"{ARTIST_ID}:2002-01-01", f"{ARTIST_ID}:2002-01-05"} <= shows


def test_what_people_recorded_wins_over_the_file(store: CatalogStore, catalog_api: Any) -> None:
    from tests.harness.events import call_http, claims_for, http_event

    import_lines(store, [show("2003-01-01", "A", "B"), show("2033-01-01")], warn=lambda _: None)
    for show_id in [f"{ARTIST_ID}:2003-01-01", f"{ARTIST_ID}:2033-01-01"]:
        body = {"sets": [{"name": "Set 1", "songs": ["Corrected Song"]}]}
        event = http_event(
            "PUT /api/shows/{show_id}/setlist",
            path={"show_id": show_id},
            body=body,
            claims=claims_for("mod", "moderator"),
        )
        assert call_http(catalog_api, event)[0] == 200
    report = import_lines(store, [show("2003-01-01", "A", "B"), show("2033-01-01")], warn=lambda _: None)
    assert report.kept_from_api == 2
    found = store.get_show_and_setlist(f"{ARTIST_ID}:2003-01-01")
    assert found is not None
    assert found[1] is not None
    assert [e.title for s in found[1].sets for e in s.songs] == ["Corrected Song"]
    upcoming = store.get_show(f"{ARTIST_ID}:2033-01-01")
    assert upcoming is not None
    assert upcoming.status.value == "completed"  # recorded: not reopened by the file


def test_the_sample_imports_with_segues_encores_and_repeats(
    store: CatalogStore, sample_lines: list[str]
) -> None:
    report = import_lines(store, sample_lines, warn=lambda _: None)
    assert report.skipped == []
    setlists = {s.show_id: s for _, s in store.artist_setlists("grateful-dead")}
    with_segue = [s for s in setlists.values() if any(e.segue for st in s.sets for e in st.songs)]
    with_encore = [s for s in setlists.values() if any(st.encore for st in s.sets)]
    assert with_segue
    assert with_encore
    assert all(st.name.lower().startswith("encore") for s in with_encore for st in s.sets if st.encore)
