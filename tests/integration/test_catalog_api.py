"""CatalogApi in-process: anonymous reads, pagination, 404s, and recording a setlist."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from mysetlist.catalog_store import CatalogStore
from mysetlist.importer import import_lines
from tests.harness.events import call_http, claims_for, http_event, load_event

FUTURE = (dt.date.today() + dt.timedelta(days=30)).isoformat()
UPCOMING = f"grateful-dead:{FUTURE}"


@pytest.fixture(scope="module")
def catalog(aws: dict[str, str], dynamodb: Any, settings: Any, sample_lines: list[str]) -> CatalogStore:
    store = CatalogStore(dynamodb, settings.catalog_table)
    upcoming = {
        "artist": "Grateful Dead",
        "date": FUTURE,
        "venue": "Greek Theatre",
        "city": "Berkeley",
        "region": "CA",
        "country": "US",
        "timezone": "America/Los_Angeles",
        "local_time": "19:30",
        "sets": [],
    }
    import_lines(store, [*sample_lines, json.dumps(upcoming)], warn=lambda _: None)
    return store


def test_the_canonical_events_answer(catalog_api: Any, catalog: CatalogStore) -> None:
    for name in ["list_artists", "get_artist", "list_artist_songs", "list_shows"]:
        status, body = call_http(catalog_api, load_event(f"catalog_api/{name}.json"))
        assert status == 200, (name, body)


def test_artist_search_by_prefix(catalog_api: Any, catalog: CatalogStore) -> None:
    for query in ["grate", "GRATEFUL", "the grateful"]:
        status, body = call_http(catalog_api, http_event("GET /api/artists", query={"query": query}))
        assert status == 200
        assert [a["artist_id"] for a in body["items"]] == ["grateful-dead"], query
    # Other tests of the session import other artists: an empty query lists them all, in order.
    status, body = call_http(catalog_api, http_event("GET /api/artists", query={"query": ""}))
    names = [a["artist_id"] for a in body["items"]]
    assert status == 200
    assert "grateful-dead" in names
    assert names == sorted(names, key=lambda n: n.removeprefix("the-"))
    status, body = call_http(catalog_api, http_event("GET /api/artists", query={"query": "no such band"}))
    assert (status, body["items"]) == (200, [])


def test_unknown_ids_are_404_with_a_clear_message(catalog_api: Any, catalog: CatalogStore) -> None:
    cases = [
        http_event("GET /api/artists/{artist_id}", path={"artist_id": "nobody"}),
        http_event("GET /api/artists/{artist_id}/songs", path={"artist_id": "nobody"}),
        http_event("GET /api/shows/{show_id}", path={"show_id": "grateful-dead:1900-01-01"}),
    ]
    for event in cases:
        status, body = call_http(catalog_api, event)
        assert status == 404
        assert body["error"]["code"] == "not_found"
        assert "no " in body["error"]["message"]


def test_songs_page_through_every_song_once(catalog_api: Any, catalog: CatalogStore) -> None:
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(100):
        query = {"limit": "7", **({"cursor": cursor} if cursor else {})}
        status, body = call_http(
            catalog_api,
            http_event(
                "GET /api/artists/{artist_id}/songs", path={"artist_id": "grateful-dead"}, query=query
            ),
        )
        assert status == 200
        assert len(body["items"]) <= 7
        seen += [s["song_id"] for s in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == len(catalog.all_songs("grateful-dead"))
    status, body = call_http(
        catalog_api, http_event("GET /api/artists/{artist_id}", path={"artist_id": "grateful-dead"})
    )
    assert body["song_count"] == len(seen)


def test_shows_by_artist_status_and_dates(catalog_api: Any, catalog: CatalogStore) -> None:
    query = {
        "artist_id": "grateful-dead",
        "status": "completed",
        "from": "1967-01-01",
        "to": "1967-12-31",
        "limit": "100",
    }
    status, body = call_http(catalog_api, http_event("GET /api/shows", query=query))
    assert status == 200
    dates = [s["date"] for s in body["items"]]
    assert dates, body
    assert all("1967-01-01" <= d <= "1967-12-31" for d in dates)
    assert dates == sorted(dates, reverse=True)  # completed: most recent first
    assert {s["status"] for s in body["items"]} == {"completed"}


def test_platform_upcoming_shows_soonest_first(catalog_api: Any, catalog: CatalogStore) -> None:
    status, body = call_http(catalog_api, http_event("GET /api/shows"))
    assert status == 200
    assert UPCOMING in [s["show_id"] for s in body["items"]]
    assert all(s["status"] == "upcoming" for s in body["items"])


def test_show_detail_has_venue_artist_and_setlist(catalog_api: Any, catalog: CatalogStore) -> None:
    show_id = "grateful-dead:1966-01-07"
    status, body = call_http(catalog_api, http_event("GET /api/shows/{show_id}", path={"show_id": show_id}))
    assert status == 200
    assert body["artist"]["name"] == "Grateful Dead"
    assert body["venue"]["name"] == "Matrix"
    titles = [e["title"] for s in body["setlist"]["sets"] for e in s["songs"]]
    assert titles[:3] == ["I Know It's A Sin", "Sick And Tired", "Mindbender"]
    assert [e["position"] for s in body["setlist"]["sets"] for e in s["songs"]] == list(
        range(1, len(titles) + 1)
    )


@pytest.mark.parametrize(
    ("query", "status", "fragment"),
    [
        ({"cursor": "garbage!"}, 400, "cursor"),
        ({"from": "2030-01-02", "to": "2030-01-01"}, 400, "'from' must not be after 'to'"),
        ({"status": "someday"}, 422, "status"),
        ({"from": "yesterday"}, 422, "from"),
        ({"limit": "0"}, 422, "limit"),
        ({"limit": "1000"}, 422, "limit"),
    ],
)
def test_bad_list_queries_are_4xx_with_a_reason(
    catalog_api: Any, catalog: CatalogStore, query: dict[str, str], status: int, fragment: str
) -> None:
    got, body = call_http(catalog_api, http_event("GET /api/shows", query=query))
    assert got == status
    assert fragment in body["error"]["message"]


def test_a_cursor_from_another_list_is_refused(catalog_api: Any, catalog: CatalogStore) -> None:
    status, body = call_http(
        catalog_api, http_event("GET /api/shows", query={"artist_id": "grateful-dead", "limit": "1"})
    )
    cursor = body["next_cursor"]
    status, body = call_http(
        catalog_api, http_event("GET /api/shows", query={"status": "completed", "cursor": cursor})
    )
    assert status == 400


def status_of(catalog: CatalogStore, show_id: str) -> str:
    show = catalog.get_show(show_id)
    assert show is not None
    return show.status.value


def setlist_event(
    show_id: str, claims: dict[str, Any] | None, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    event = load_event("catalog_api/put_setlist.json")
    payload = body or json.loads(event["body"])
    return http_event(
        "PUT /api/shows/{show_id}/setlist", path={"show_id": show_id}, body=payload, claims=claims
    )


def test_recording_a_setlist_needs_a_moderator(catalog_api: Any, catalog: CatalogStore) -> None:
    status, body = call_http(catalog_api, setlist_event(UPCOMING, None))
    assert status == 401
    status, body = call_http(catalog_api, setlist_event(UPCOMING, claims_for("fan", "user")))
    assert status == 403
    assert "moderator" in body["error"]["message"]
    assert status_of(catalog, UPCOMING) == "upcoming"  # nothing changed


def test_a_bad_setlist_is_refused_and_changes_nothing(catalog_api: Any, catalog: CatalogStore) -> None:
    mod = claims_for("mod", "moderator")
    bodies: list[dict[str, Any]] = [
        {"sets": []},
        {"sets": [{"name": "Set 1", "songs": []}]},
        {"sets": [{"songs": ["x"]}], "extra": 1},
        {"sets": [{"name": "Set 1", "songs": ["a", "b"], "segues": [True]}]},
    ]
    for body in bodies:
        status, reply = call_http(catalog_api, setlist_event(UPCOMING, mod, body))
        assert status == 422, (body, reply)
    status, reply = call_http(catalog_api, setlist_event("grateful-dead:1900-01-01", mod))
    assert status == 404
    assert status_of(catalog, UPCOMING) == "upcoming"


def test_a_moderator_records_the_setlist_and_new_songs_join_the_catalogue(
    catalog_api: Any, catalog: CatalogStore
) -> None:
    show_id = "grateful-dead:1966-01-07"
    before = {s.song_id: s for s in catalog.all_songs("grateful-dead")}
    body = {
        "sets": [
            {"name": "Set 1", "songs": ["Mindbender", "A Brand New Song"]},
            {"name": "Encore", "songs": ["Mindbender"]},
        ]
    }
    status, reply = call_http(catalog_api, setlist_event(show_id, claims_for("mod-1", "moderator"), body))
    assert status == 200, reply
    assert reply["show"]["status"] == "completed"
    assert reply["setlist"]["recorded_by"] == "mod-1"
    assert [s["encore"] for s in reply["setlist"]["sets"]] == [False, True]
    after = {s.song_id: s for s in catalog.all_songs("grateful-dead")}
    new = after["grateful-dead:a-brand-new-song"]
    assert (new.times_played, new.title) == (1, "A Brand New Song")
    # the show's old songs lost a play, its kept ones did not double count the encore repeat
    assert (
        after["grateful-dead:sick-and-tired"].times_played
        == before["grateful-dead:sick-and-tired"].times_played - 1
    )
    assert after["grateful-dead:mindbender"].times_played == before["grateful-dead:mindbender"].times_played


def test_filtered_pages_have_no_gaps_or_repeats(catalog_api: Any, catalog: CatalogStore) -> None:
    expected = sorted(
        (s.date.isoformat(), s.show_id)
        for s in catalog.artist_shows("grateful-dead")
        if s.status.value == "completed"
    )
    seen: list[tuple[str, str]] = []
    cursor: str | None = None
    for _ in range(200):
        query = {
            "artist_id": "grateful-dead",
            "status": "completed",
            "limit": "7",
            **({"cursor": cursor} if cursor else {}),
        }
        status, body = call_http(catalog_api, http_event("GET /api/shows", query=query))
        assert status == 200
        assert len(body["items"]) <= 7
        seen += [(s["date"], s["show_id"]) for s in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(expected, reverse=True)


def test_an_unexpected_fault_is_an_opaque_500(catalog_api: Any, catalog: CatalogStore) -> None:
    import sys

    from tests.support.template import module_name_for

    module: Any = sys.modules[module_name_for("CatalogApi")]
    real = module.store

    class Broken:
        def get_artist(self, artist_id: str) -> None:
            raise RuntimeError("secret internal detail: table mysetlist-prod-catalog")

    module.store = Broken()
    try:
        status, body = call_http(
            catalog_api, http_event("GET /api/artists/{artist_id}", path={"artist_id": "x"})
        )
    finally:
        module.store = real
    assert status == 500
    assert body == {
        "error": {
            "code": "internal_error",
            "message": "something went wrong on our side; try again",
            "details": {},
        }
    }
