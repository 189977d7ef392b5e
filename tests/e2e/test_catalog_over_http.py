"""Anonymous catalogue reads over HTTP on the local stack (the seeded Grateful Dead sample)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.e2e.conftest import LocalStackProcess

pytestmark = pytest.mark.e2e

ARTIST = "grateful-dead"
CORNELL = "grateful-dead:1977-05-08"


def _pages(
    stack: LocalStackProcess, path: str, params: dict[str, Any], *, max_pages: int = 50
) -> list[list[dict[str, Any]]]:
    """Every page of a paginated list, following ``next_cursor`` (bounded)."""
    pages = []
    cursor: str | None = None
    for _ in range(max_pages):
        response = stack.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        cursor = body.get("next_cursor")
        if not cursor:
            return pages
    raise AssertionError(f"{path} still had pages after {max_pages}")


def test_artist_search_finds_the_sample_artist(stack: LocalStackProcess) -> None:
    response = stack.get("/api/artists", params={"query": "grateful", "limit": 5})
    assert response.status_code == 200, response.text
    assert ARTIST in [a["artist_id"] for a in response.json()["items"]]
    artist = stack.get(f"/api/artists/{ARTIST}").json()
    assert artist["name"] == "Grateful Dead"


def test_unknown_ids_are_404_with_the_apis_error_body(stack: LocalStackProcess) -> None:
    response = stack.get("/api/artists/no-such-artist")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert stack.get("/api/shows/grateful-dead:1800-01-01").status_code == 404


def test_songs_of_an_artist_page_through_every_title_once(stack: LocalStackProcess) -> None:
    pages = _pages(stack, f"/api/artists/{ARTIST}/songs", {"limit": 100})
    songs = [s for page in pages for s in page]
    assert len(pages) > 1
    assert all(len(page) <= 100 for page in pages)
    ids = [s["song_id"] for s in songs]
    assert len(ids) == len(set(ids)) == 436  # the sample's distinct titles
    assert {s["artist_id"] for s in songs} == {ARTIST}
    assert "Dark Star" in {s["title"] for s in songs}


def test_shows_list_filters_and_paginates(stack: LocalStackProcess) -> None:
    params = {
        "artist_id": ARTIST,
        "status": "completed",
        "from": "1977-05-01",
        "to": "1977-05-31",
        "limit": 4,
    }
    pages = _pages(stack, "/api/shows", params)
    shows = [s for page in pages for s in page]
    assert len(pages) > 1
    assert all(len(page) <= 4 for page in pages)
    dates = [s["date"] for s in shows]
    assert all("1977-05-01" <= d <= "1977-05-31" for d in dates)
    assert len({s["show_id"] for s in shows}) == len(shows)
    assert CORNELL in {s["show_id"] for s in shows}
    assert {s["status"] for s in shows} == {"completed"}


def test_upcoming_demo_shows_are_listed(stack: LocalStackProcess) -> None:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    params = {"artist_id": ARTIST, "status": "upcoming", "from": today, "limit": 20}
    response = stack.get("/api/shows", params=params)
    assert response.status_code == 200, response.text
    shows = response.json()["items"]
    assert len(shows) >= 5
    assert all(s["date"] > today and s["status"] == "upcoming" for s in shows)


def test_show_detail_has_venue_artist_and_setlist(stack: LocalStackProcess) -> None:
    response = stack.get(f"/api/shows/{CORNELL}")
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["show"]["show_id"] == CORNELL
    assert detail["artist"]["artist_id"] == ARTIST
    assert detail["venue"]["name"] == "Barton Hall, Cornell University"
    titles = [e["title"] for s in detail["setlist"]["sets"] for e in s["songs"]]
    assert "Scarlet Begonias" in titles
    assert [e["position"] for s in detail["setlist"]["sets"] for e in s["songs"]] == list(
        range(1, len(titles) + 1)
    )
