"""The live WebSocket API's routes (``LiveApi``) with in-memory connections: $connect checks
the ``token`` query parameter as the JWT authorizer would (401) and the browser's origin (403);
subscribe validates the show id, checks the show exists, limits subscriptions and answers with
the board; unsubscribe, $disconnect, and $default's error naming the actions."""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from mysetlist.errors import Unauthorized
from mysetlist.live import Connection, ConnectionUnknown, LiveApi, SubscriptionLimit
from mysetlist.models import Show, ShowStatus
from mysetlist.tallies import SongTallyCount
from tests.harness.events import load_event

NOW = dt.datetime(2026, 6, 1, 20, 0, tzinfo=dt.UTC)
SHOW = "grateful-dead:2030-06-01"
GOOD_TOKEN = "good-token"


@dataclass
class MemoryConnections:
    """The connections table's behaviour, in memory."""

    connections: dict[str, Connection] = field(default_factory=dict)
    subscriptions: dict[str, set[str]] = field(default_factory=dict)

    def connect(self, connection_id: str, user_id: str, now: dt.datetime) -> None:
        self.connections[connection_id] = Connection(connection_id, user_id, now.isoformat())

    def get(self, connection_id: str) -> Connection | None:
        return self.connections.get(connection_id)

    def subscribe(self, connection: Connection, show_id: str, now: dt.datetime, *, limit: int) -> None:
        current = self.connections.get(connection.connection_id)
        if current is None:
            raise ConnectionUnknown("this connection is not registered: reconnect")
        if show_id not in current.shows and len(current.shows) >= limit:
            raise SubscriptionLimit(f"a connection may watch at most {limit} shows")
        self.connections[connection.connection_id] = Connection(
            current.connection_id, current.user_id, current.connected_at, current.shows | {show_id}
        )
        self.subscriptions.setdefault(show_id, set()).add(connection.connection_id)

    def unsubscribe(self, connection_id: str, show_id: str) -> None:
        self.subscriptions.get(show_id, set()).discard(connection_id)
        current = self.connections.get(connection_id)
        if current is not None:
            self.connections[connection_id] = Connection(
                current.connection_id, current.user_id, current.connected_at, current.shows - {show_id}
            )

    def disconnect(self, connection_id: str) -> int:
        current = self.connections.pop(connection_id, None)
        if current is None:
            return 0
        for show in current.shows:
            self.subscriptions.get(show, set()).discard(connection_id)
        return 1 + len(current.shows)

    def subscribers(self, show_id: str, now: dt.datetime) -> list[str]:
        return sorted(self.subscriptions.get(show_id, set()))


class Verifier:
    def verify(self, authorization: str | None) -> dict[str, Any]:
        if authorization != GOOD_TOKEN:
            raise Unauthorized("the token has expired: sign in again")
        return {"sub": "fan-1", "cognito:groups": "[user]"}


class Catalog:
    def get_show(self, show_id: str) -> Show | None:
        if not show_id.startswith("grateful-dead:"):
            return None
        day = dt.date.fromisoformat(show_id.split(":")[1])
        return Show(show_id=show_id, artist_id="grateful-dead", date=day, status=ShowStatus.UPCOMING)


class Tallies:
    def read(
        self, show_id: str, *, consistent: bool = False, now: dt.datetime | None = None
    ) -> list[SongTallyCount]:
        return [SongTallyCount("grateful-dead:ripple", 4, 1, vote_velocity=0.6, trending_score=3.2)]


@pytest.fixture
def store() -> MemoryConnections:
    return MemoryConnections()


@pytest.fixture
def api(store: MemoryConnections) -> LiveApi:
    return LiveApi(
        store=store,
        verifier=Verifier(),
        catalog=Catalog(),
        tallies=Tallies(),
        max_subscriptions=2,
        allowed_origins={"http://localhost:5173"},
        clock=lambda: NOW,
    )


def connect(api: LiveApi, token: str | None = GOOD_TOKEN, origin: str | None = None) -> dict[str, Any]:
    event = copy.deepcopy(load_event("live_updates/connect.json"))
    event.pop("queryStringParameters")
    if token is not None:
        event["queryStringParameters"] = {"token": token}
    event["headers"].pop("Origin")
    if origin is not None:
        event["headers"]["Origin"] = origin
    return api.handle(event)


def send(api: LiveApi, route: str, body: Any) -> tuple[int, dict[str, Any]]:
    event = copy.deepcopy(load_event("live_updates/subscribe.json"))
    event["requestContext"]["routeKey"] = route
    event["body"] = body if isinstance(body, str) else json.dumps(body)
    result = api.handle(event)
    return result["statusCode"], json.loads(result["body"])


CONNECTION = load_event("live_updates/connect.json")["requestContext"]["connectionId"]


def test_connect_needs_a_valid_token_in_the_query_string(api: LiveApi, store: MemoryConnections) -> None:
    refused = connect(api, token=None)
    assert refused["statusCode"] == 401
    assert "?token=" in json.loads(refused["body"])["message"]
    expired = connect(api, token="stale")
    assert (expired["statusCode"], json.loads(expired["body"])["message"]) == (
        401,
        "the token has expired: sign in again",
    )
    assert store.connections == {}
    assert connect(api) == {"statusCode": 200}
    assert store.connections[CONNECTION].user_id == "fan-1"


def test_a_browser_from_another_origin_is_refused(api: LiveApi, store: MemoryConnections) -> None:
    assert connect(api, origin="https://evil.example")["statusCode"] == 403
    assert store.connections == {}
    assert connect(api, origin="http://localhost:5173/")["statusCode"] == 200


def test_subscribe_answers_with_the_board_and_is_idempotent(api: LiveApi, store: MemoryConnections) -> None:
    connect(api)
    status, body = send(api, "subscribe", {"action": "subscribe", "show_id": SHOW})
    assert status == 200
    assert (body["type"], body["show_id"], body["subscriptions"]) == ("subscribed", SHOW, [SHOW])
    board = body["board"]
    assert (board["type"], board["show_id"], board["sequence"]) == ("tallies", SHOW, None)
    assert board["songs"] == [
        {
            "song_id": "grateful-dead:ripple",
            "upvotes": 4,
            "downvotes": 1,
            "net": 3,
            "vote_velocity": 0.6,
            "trending_score": 3.2,
        }
    ]
    assert store.subscribers(SHOW, NOW) == [CONNECTION]
    assert send(api, "subscribe", {"action": "subscribe", "show_id": SHOW})[0] == 200
    assert store.connections[CONNECTION].shows == {SHOW}


@pytest.mark.parametrize(
    ("body", "status", "error", "says"),
    [
        ("not json", 400, "invalid_request", "needs a JSON object"),
        ({"action": "subscribe"}, 400, "invalid_request", "needs a show_id"),
        ({"action": "subscribe", "show_id": "../etc/passwd"}, 400, "invalid_request", "show_id must be"),
        ({"action": "subscribe", "show_id": 42}, 400, "invalid_request", "show_id must be"),
        ({"action": "subscribe", "show_id": "phish:2030-01-01"}, 404, "not_found", "no show with id"),
    ],
)
def test_bad_subscriptions_get_a_clear_error(
    api: LiveApi, body: Any, status: int, error: str, says: str
) -> None:
    connect(api)
    got_status, got = send(api, "subscribe", body)
    assert (got_status, got["type"], got["error"], got["action"]) == (status, "error", error, "subscribe")
    assert says in got["message"]


def test_subscriptions_per_connection_are_limited(api: LiveApi, store: MemoryConnections) -> None:
    connect(api)
    for day in ("2030-06-01", "2030-06-02"):
        assert send(api, "subscribe", {"action": "subscribe", "show_id": f"grateful-dead:{day}"})[0] == 200
    status, body = send(api, "subscribe", {"action": "subscribe", "show_id": "grateful-dead:2030-06-03"})
    assert (status, body["error"]) == (429, "too_many_subscriptions")
    status, body = send(api, "unsubscribe", {"action": "unsubscribe", "show_id": "grateful-dead:2030-06-01"})
    assert (status, body["type"], body["subscriptions"]) == (
        200,
        "unsubscribed",
        ["grateful-dead:2030-06-02"],
    )
    assert send(api, "subscribe", {"action": "subscribe", "show_id": "grateful-dead:2030-06-03"})[0] == 200


def test_a_connection_the_table_does_not_know_must_reconnect(api: LiveApi) -> None:
    status, body = send(api, "subscribe", {"action": "subscribe", "show_id": SHOW})
    assert (status, body["error"]) == (410, "connection_unknown")
    assert "reconnect" in body["message"]


def test_unknown_actions_are_told_what_the_api_understands(api: LiveApi) -> None:
    for body, problem in (
        ({"action": "vote", "show_id": SHOW}, "unknown action 'vote'"),
        ({"show_id": SHOW}, "the message has no action"),
        ("hello", "messages must be JSON objects"),
    ):
        status, got = send(api, "$default", body)
        assert (status, got["error"]) == (400, "unknown_action")
        assert got["message"].startswith(problem)
        assert '"action": "subscribe"' in got["message"]
        assert got["details"] == {"actions": ["subscribe", "unsubscribe"]}


def test_a_ping_keeps_a_quiet_connection_open(api: LiveApi) -> None:
    assert send(api, "$default", {"action": "ping"}) == (200, {"type": "pong"})


def test_disconnect_removes_the_connection_and_its_subscriptions(
    api: LiveApi, store: MemoryConnections
) -> None:
    connect(api)
    send(api, "subscribe", {"action": "subscribe", "show_id": SHOW})
    assert api.handle(load_event("live_updates/disconnect.json")) == {"statusCode": 200}
    assert store.connections == {}
    assert store.subscribers(SHOW, NOW) == []
    assert api.handle(load_event("live_updates/disconnect.json")) == {"statusCode": 200}  # idempotent


def test_an_event_without_a_connection_is_refused(api: LiveApi) -> None:
    result = api.handle({"requestContext": {"routeKey": "subscribe"}})
    assert result["statusCode"] == 400
