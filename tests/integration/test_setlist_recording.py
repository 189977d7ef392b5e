"""Recording setlists through the use case: exact plays, concurrent song creation, limits."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest

from mysetlist.auth import Caller, Role
from mysetlist.catalog import record_setlist
from mysetlist.catalog_store import CatalogStore
from mysetlist.errors import Unprocessable
from mysetlist.importer import import_lines
from mysetlist.models import SetlistIn, Song

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
MOD = Caller(user_id="mod", roles=frozenset({Role.MODERATOR}))
ARTIST = "recording-band"


@pytest.fixture(scope="module")
def store(aws: dict[str, str], dynamodb: Any, settings: Any) -> CatalogStore:
    store = CatalogStore(dynamodb, settings.catalog_table)
    lines = [
        json.dumps(
            {
                "artist": "Recording Band",
                "date": "2010-01-01",
                "sets": [{"name": "Set 1", "songs": ["A", "B"]}],
            }
        ),
        json.dumps(
            {
                "artist": "Recording Band",
                "date": "2010-02-01",
                "sets": [{"name": "Set 1", "songs": ["B", "C"]}],
            }
        ),
    ] + [
        json.dumps({"artist": "Recording Band", "date": f"2011-01-{d:02d}", "sets": []}) for d in range(1, 10)
    ]
    import_lines(store, lines, warn=lambda _: None)
    return store


def songs(store: CatalogStore) -> dict[str, Song]:
    return {s.song_id.split(":")[1]: s for s in store.all_songs(ARTIST)}


def body(*titles: str) -> SetlistIn:
    return SetlistIn.model_validate({"sets": [{"name": "Set 1", "songs": list(titles)}]})


def test_a_correction_moves_plays_exactly(store: CatalogStore) -> None:
    record_setlist(store, f"{ARTIST}:2010-02-01", body("A", "C"), MOD, NOW)  # B dropped, A added
    after = songs(store)
    assert (after["a"].times_played, str(after["a"].last_played)) == (2, "2010-02-01")
    assert (after["b"].times_played, str(after["b"].first_played), str(after["b"].last_played)) == (
        1,
        "2010-01-01",
        "2010-01-01",
    )
    record_setlist(store, f"{ARTIST}:2010-02-01", body("A", "C"), MOD, NOW)  # the same again: no change
    assert songs(store) == after


def test_new_songs_are_created_once_and_counted_on_the_artist(store: CatalogStore) -> None:
    before = store.get_artist(ARTIST)
    assert before is not None
    record_setlist(store, f"{ARTIST}:2011-01-01", body("Brand New", "A"), MOD, NOW)
    after = store.get_artist(ARTIST)
    assert after is not None
    assert after.song_count == before.song_count + 1
    assert songs(store)["brand-new"].times_played == 1


def racing(dynamodb: Any, settings: Any, race: Callable[[], object]) -> CatalogStore:
    """A store whose first read of song titles lets ``race`` (another moderator's request) run
    between this request's reads and its write."""

    class Racing(CatalogStore):
        raced = False

        def song_titles(self, artist_id: str, song_ids: Any) -> dict[str, str]:
            found = super().song_titles(artist_id, song_ids)
            if not self.raced:
                self.raced = True
                race()
            return found

    return Racing(dynamodb, settings.catalog_table)


def test_a_song_created_concurrently_is_read_again_not_duplicated(
    store: CatalogStore, dynamodb: Any, settings: Any
) -> None:
    racing_store = racing(
        dynamodb, settings, lambda: record_setlist(store, f"{ARTIST}:2011-01-02", body("Racy"), MOD, NOW)
    )
    count = store.get_artist(ARTIST)
    assert count is not None
    record_setlist(racing_store, f"{ARTIST}:2011-01-03", body("Racy"), MOD, NOW)
    after = store.get_artist(ARTIST)
    assert after is not None
    assert after.song_count == count.song_count + 1
    assert songs(store)["racy"].times_played == 2


def test_a_change_too_large_for_one_transaction_is_refused_whole(store: CatalogStore) -> None:
    record_setlist(store, f"{ARTIST}:2011-01-04", body(*[f"Old {i}" for i in range(60)]), MOD, NOW)
    before = songs(store)
    with pytest.raises(Unprocessable, match="two steps"):
        record_setlist(store, f"{ARTIST}:2011-01-04", body(*[f"New {i}" for i in range(60)]), MOD, NOW)
    assert songs(store) == before


def test_two_corrections_of_one_show_at_once_leave_plays_exact(
    store: CatalogStore, dynamodb: Any, settings: Any
) -> None:
    show_id = f"{ARTIST}:2011-01-05"
    record_setlist(store, show_id, body("A"), MOD, NOW)

    racing_store = racing(
        dynamodb, settings, lambda: record_setlist(store, show_id, body("C"), MOD, NOW)
    )  # A -> C
    before = songs(store)
    detail = record_setlist(racing_store, show_id, body("B"), MOD, NOW)  # read A, then C, retried on C
    assert [e.title for s in (detail.setlist.sets if detail.setlist else []) for e in s.songs] == ["B"]
    assert detail.setlist is not None
    assert detail.setlist.revision == 3
    after = songs(store)
    assert after["a"].times_played == before["a"].times_played - 1
    assert after["b"].times_played == before["b"].times_played + 1
    assert after["c"].times_played == before["c"].times_played  # C came and went with the racing write
