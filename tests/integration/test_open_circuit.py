"""An open DynamoDB circuit at the HTTP edge: a 503 the client can act on (Retry-After, nothing
changed), while what the cache holds is still served."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest

from mysetlist.breaker import Dependency, breaker_for
from mysetlist.catalog_store import CatalogStore
from mysetlist.importer import import_lines
from tests.harness.events import LambdaContext, call_http, http_event

ARTIST = "Circuit Band"
DAY = (dt.date.today() + dt.timedelta(days=45)).isoformat()
SHOW = f"circuit-band:{DAY}"


@pytest.fixture
def open_dynamodb_circuit(aws: dict[str, str]) -> Iterator[None]:
    breaker = breaker_for(Dependency.DYNAMODB)
    breaker.force_open(seconds=30, reason="test")
    try:
        yield
    finally:
        breaker.reset()


@pytest.fixture(scope="module")
def catalog(aws: dict[str, str], dynamodb: Any, settings: Any) -> CatalogStore:
    store = CatalogStore(dynamodb, settings.catalog_table)
    line = json.dumps({"artist": ARTIST, "date": DAY, "venue": "Arena"})
    import_lines(store, [line], warn=lambda _: None)
    return store


def test_an_open_circuit_is_a_503_with_retry_after_and_cached_reads_still_answer(
    catalog_api: Any, catalog: CatalogStore, request: pytest.FixtureRequest
) -> None:
    cached = call_http(catalog_api, http_event("GET /api/shows/{show_id}", path={"show_id": SHOW}))
    assert cached[0] == 200
    request.getfixturevalue("open_dynamodb_circuit")

    response = catalog_api(
        http_event("GET /api/artists/{artist_id}", path={"artist_id": "never-cached"}), LambdaContext()
    )
    body = json.loads(response["body"])
    assert response["statusCode"] == 503
    assert int(response["headers"]["retry-after"]) >= 1
    assert body["error"]["code"] == "unavailable"
    assert body["error"]["details"]["outcome"] == "unchanged"
    assert body["error"]["details"]["dependency"] == "dynamodb"

    assert call_http(catalog_api, http_event("GET /api/shows/{show_id}", path={"show_id": SHOW})) == cached
