"""VotesApi in-process: the toggle, the business rules, auth, and the tallies read."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from mysetlist.catalog_store import CatalogStore
from mysetlist.importer import import_lines
from mysetlist.profiles import ProfileStore, UserProfile
from mysetlist.signals import keyed_hash
from mysetlist.votes_store import VotesStore
from tests.harness.events import call_http, claims_for, http_event, load_event
from tests.integration.conftest import Issuer

FUTURE = (dt.date.today() + dt.timedelta(days=20)).isoformat()
SHOW = f"grateful-dead:{FUTURE}"
SONG = "grateful-dead:mindbender"


@pytest.fixture(scope="module")
def catalog(aws: dict[str, str], dynamodb: Any, settings: Any, sample_lines: list[str]) -> CatalogStore:
    store = CatalogStore(dynamodb, settings.catalog_table)
    lines = [
        *sample_lines,
        json.dumps({"artist": "Grateful Dead", "date": FUTURE, "venue": "Fillmore", "sets": []}),
        json.dumps(
            {"artist": "Phish", "date": "1990-01-01", "sets": [{"name": "Set 1", "songs": ["Tweezer"]}]}
        ),
    ]
    import_lines(store, lines, warn=lambda _: None)
    return store


@pytest.fixture
def votes(dynamodb: Any, settings: Any) -> VotesStore:
    return VotesStore(dynamodb, settings.votes_table)


def vote(user: str, body: dict[str, Any], *groups: str) -> dict[str, Any]:
    return http_event("POST /api/votes", body=body, claims=claims_for(user, *(groups or ("user",))))


def test_the_canonical_event_has_the_right_shape(votes_api: Any, catalog: CatalogStore) -> None:
    status, body = call_http(votes_api, load_event("votes_api/cast_vote.json"))
    assert status == 404  # its show (in 2030) is not in this catalogue
    assert body["error"]["code"] == "not_found"


def test_toggle_create_remove_and_switch(votes_api: Any, catalog: CatalogStore, votes: VotesStore) -> None:
    body = {"show_id": SHOW, "song_id": SONG, "vote_type": "up"}
    assert call_http(votes_api, vote("t1", body)) == (
        200,
        {"action": "created", "show_id": SHOW, "song_id": SONG, "vote_type": "up"},
    )
    assert call_http(votes_api, vote("t1", body))[1]["action"] == "removed"
    assert votes.votes_of(SHOW, "t1") == {}
    assert call_http(votes_api, vote("t1", body))[1]["action"] == "created"
    status, reply = call_http(votes_api, vote("t1", dict(body, vote_type="DOWN")))
    assert (status, reply["action"], reply["vote_type"]) == (200, "updated", "down")
    assert votes.votes_of(SHOW, "t1") == {SONG: "down"}


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (
            {"show_id": SHOW, "song_id": "phish:tweezer", "vote_type": "up"},
            422,
            "not in the catalogue of 'grateful-dead'",
        ),
        (
            {"show_id": SHOW, "song_id": "grateful-dead:no-such-song", "vote_type": "up"},
            422,
            "not in the catalogue",
        ),
        (
            {"show_id": "grateful-dead:1966-01-07", "song_id": SONG, "vote_type": "up"},
            422,
            "voting is closed",
        ),
        ({"show_id": "nope:2030-01-01", "song_id": SONG, "vote_type": "up"}, 404, "no show"),
        ({"show_id": SHOW, "song_id": SONG, "vote_type": "sideways"}, 422, "vote_type"),
        ({"show_id": SHOW, "song_id": SONG}, 422, "vote_type"),
        ({"show_id": SHOW, "song_id": SONG, "vote_type": "up", "user_id": "someone-else"}, 422, "user_id"),
        ({"show_id": "../etc", "song_id": SONG, "vote_type": "up"}, 422, "show_id"),
    ],
)
def test_bad_votes_are_refused_and_change_nothing(
    votes_api: Any, catalog: CatalogStore, votes: VotesStore, body: dict[str, Any], status: int, fragment: str
) -> None:
    call_http(votes_api, vote("t2", {"show_id": SHOW, "song_id": SONG, "vote_type": "up"}))
    before = votes.votes_of(SHOW, "t2")
    got, reply = call_http(votes_api, vote("t2", body))
    assert got == status, reply
    assert fragment in reply["error"]["message"]
    assert votes.votes_of(SHOW, "t2") == before


def test_malformed_json_is_a_422(votes_api: Any, catalog: CatalogStore) -> None:
    event = http_event("POST /api/votes", raw_body="{not json", claims=claims_for("t3", "user"))
    status, reply = call_http(votes_api, event)
    assert status == 422
    assert reply["error"]["code"] == "validation_error"


def test_voting_needs_a_signed_in_caller(votes_api: Any, catalog: CatalogStore) -> None:
    event = http_event("POST /api/votes", body={"show_id": SHOW, "song_id": SONG, "vote_type": "up"})
    status, reply = call_http(votes_api, event)
    assert status == 401
    assert reply["error"]["code"] == "unauthorized"


def test_tallies_are_public_and_my_votes_need_a_valid_token(
    votes_api: Any, vote_processor: Any, catalog: CatalogStore, issuer: Issuer
) -> None:
    call_http(
        votes_api,
        vote("reader", {"show_id": SHOW, "song_id": "grateful-dead:sick-and-tired", "vote_type": "down"}),
    )
    status, anonymous = call_http(votes_api, http_event("GET /api/votes", query={"show_id": SHOW}))
    assert status == 200
    assert anonymous["my_votes"] is None
    signed = http_event(
        "GET /api/votes",
        query={"show_id": SHOW},
        headers={"authorization": f"Bearer {issuer.token('reader')}"},
    )
    status, mine = call_http(votes_api, signed)
    assert status == 200
    assert mine["my_votes"] == {"grateful-dead:sick-and-tired": "down"}
    for bad in [
        issuer.token("reader", lifetime=-120),
        issuer.token("reader", client_id="other"),
        "abc.def.ghi",
    ]:
        event = http_event(
            "GET /api/votes", query={"show_id": SHOW}, headers={"authorization": f"Bearer {bad}"}
        )
        assert call_http(votes_api, event)[0] == 401


def test_tallies_of_an_unknown_show_are_404(votes_api: Any, catalog: CatalogStore) -> None:
    status, reply = call_http(votes_api, http_event("GET /api/votes", query={"show_id": "nope:2030-01-01"}))
    assert status == 404
    status, reply = call_http(votes_api, http_event("GET /api/votes"))
    assert status == 422
    assert "show_id" in reply["error"]["message"]


@pytest.mark.parametrize("header", ["Basic YWxhZGRpbjpvcGVu", "Bearer", "Bearer   "])
def test_a_malformed_authorization_header_is_a_401_not_anonymous(
    votes_api: Any, catalog: CatalogStore, header: str
) -> None:
    event = http_event("GET /api/votes", query={"show_id": SHOW}, headers={"authorization": header})
    status, reply = call_http(votes_api, event)
    assert status == 401
    assert reply["error"]["code"] == "unauthorized"


def test_a_vote_records_the_clients_signals_for_fraud_detection(
    votes_api: Any, catalog: CatalogStore, dynamodb: Any, settings: Any
) -> None:
    created = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    ProfileStore(dynamodb, settings.users_table).create_if_absent(
        UserProfile(user_id="sig1", username="sig1", created_at=created)
    )
    event = vote("sig1", {"show_id": SHOW, "song_id": SONG, "vote_type": "up"})
    event["headers"] |= {"user-agent": "Fan/1.0", "x-device-id": "device-0001"}
    event["requestContext"]["http"]["sourceIp"] = "198.51.100.23"
    assert call_http(votes_api, event)[0] == 200
    item = dynamodb.get_item(
        TableName=settings.votes_table, Key={"PK": {"S": f"{SHOW}#sig1"}, "SK": {"S": SONG}}
    )["Item"]
    assert item["net"] == {"S": "198.51.100.0/24"}
    assert item["ip_hash"] == {"S": keyed_hash("198.51.100.23")}
    assert item["ua_hash"] == {"S": keyed_hash("Fan/1.0")}
    assert item["device_hash"] == {"S": keyed_hash("device-0001")}
    assert float(item["account_created_at"]["N"]) == created.timestamp()
    assert item["artist_id"] == {"S": "grateful-dead"}
    assert "198.51.100.23" not in str(item)  # the address itself is never stored


def test_a_malformed_device_id_is_refused_and_nothing_is_stored(
    votes_api: Any, catalog: CatalogStore, votes: VotesStore
) -> None:
    event = vote("sig2", {"show_id": SHOW, "song_id": SONG, "vote_type": "up"})
    event["headers"] |= {"x-device-id": "no spaces allowed"}
    status, body = call_http(votes_api, event)
    assert status == 400
    assert "x-device-id" in body["error"]["message"]
    assert votes.votes_of(SHOW, "sig2") == {}
