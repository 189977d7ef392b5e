"""The local stack's WebSocket API around the real LiveUpdates handler (moto, the integration
issuer's tokens): a refused and an accepted handshake, subscribe over the socket, and the
management endpoint driven by boto3's unchanged ``apigatewaymanagementapi`` client -- a post
reaches the socket, an unknown connection answers GoneException (so LivePusher removes its
items), DELETE closes the socket and $disconnect clears the table."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from mysetlist.live import Connection, ConnectionStore, LivePusher, management_client_factory
from tests.harness.events import LambdaContext
from tests.integration.conftest import Issuer, wipe
from tests.integration.test_live_updates import NOW, SHOWS, catalogue, connections_table, live_updates
from tests.local_stack.websocket import LocalWebSocketApi, WebSocketApiSpec
from tests.support.template import default_template

__all__ = ["catalogue", "connections_table", "live_updates"]  # fixtures shared with that module


def _poll(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)  # polling a condition with a deadline, not a fixed wait
    return result


@pytest.fixture
def server(live_updates: Any, dynamodb: Any, connections_table: str) -> Iterator[LocalWebSocketApi]:
    wipe(dynamodb, connections_table)
    (spec,) = WebSocketApiSpec.from_template(default_template())
    ready = threading.Event()
    ready.set()

    def invoke(function_id: str, event: dict[str, Any]) -> Any:
        assert function_id == "LiveUpdates"
        return json.loads(json.dumps(live_updates(json.loads(json.dumps(event)), LambdaContext())))

    api = LocalWebSocketApi(spec, invoke, ready=ready)
    api.start()
    yield api
    api.stop()
    wipe(dynamodb, connections_table)


def management(server: LocalWebSocketApi) -> Any:
    make: Any = boto3.client
    return make("apigatewaymanagementapi", region_name="us-east-1", endpoint_url=server.management_url)


def open_socket(server: LocalWebSocketApi, token: str) -> ClientConnection:
    return connect(f"{server.url}?token={token}", proxy=None, open_timeout=10)


def subscribe(socket: ClientConnection, show_id: str) -> dict[str, Any]:
    socket.send(json.dumps({"action": "subscribe", "show_id": show_id}))
    reply: dict[str, Any] = json.loads(socket.recv(timeout=10))
    return reply


def test_handshakes_are_refused_without_a_valid_token(server: LocalWebSocketApi, issuer: Issuer) -> None:
    for url in (
        server.url,
        f"{server.url}?token=garbage",
        f"{server.url}?token={issuer.token('x', lifetime=-60)}",
    ):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, proxy=None)
        assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as off_stage:
        connect(server.url.replace("/live", "/prod") + f"?token={issuer.token('x')}", proxy=None)
    assert off_stage.value.response.status_code == 403
    assert server.status()["refused"] == 3  # the stage check comes before the function


def test_the_management_endpoint_works_with_boto3_unchanged(
    server: LocalWebSocketApi, issuer: Issuer, dynamodb: Any, connections_table: str
) -> None:
    store = ConnectionStore(dynamodb, connections_table)
    client = management(server)
    with open_socket(server, issuer.token("fan-1", "user")) as socket:
        reply = subscribe(socket, SHOWS[0])
        assert (reply["type"], reply["show_id"]) == ("subscribed", SHOWS[0])
        (connection_id,) = store.subscribers(SHOWS[0], NOW)

        client.post_to_connection(ConnectionId=connection_id, Data=b'{"type": "hello"}')
        assert json.loads(socket.recv(timeout=5)) == {"type": "hello"}
        described = client.get_connection(ConnectionId=connection_id)
        assert described["Identity"]["SourceIp"] == "127.0.0.1"
        assert described["ConnectedAt"] <= described["LastActiveAt"]
        with pytest.raises(client.exceptions.GoneException):
            client.post_to_connection(ConnectionId="nobody+/=", Data=b"{}")
        with pytest.raises(client.exceptions.PayloadTooLargeException):
            client.post_to_connection(ConnectionId=connection_id, Data=b"x" * (128 * 1024 + 1))

        # A subscription whose socket is long gone (its $disconnect never ran): one push
        # finds it gone and removes it, while the open socket gets the message.
        store.connect("ghost=", "fan-2", NOW)
        store.subscribe(Connection("ghost=", "fan-2", ""), SHOWS[0], NOW, limit=5)
        pusher = LivePusher(management_client_factory(server.management_url, "us-east-1"), store)
        outcome = pusher.push(SHOWS[0], {"type": "tallies", "show_id": SHOWS[0]}, now=NOW)
        assert (outcome.sent, outcome.gone, outcome.failed) == (1, 1, 0)
        assert json.loads(socket.recv(timeout=5))["type"] == "tallies"
        assert store.get("ghost=") is None
        assert store.subscribers(SHOWS[0], NOW) == [connection_id]

        client.delete_connection(ConnectionId=connection_id)
        _poll(lambda: store.get(connection_id) is None)  # $disconnect ran
    assert store.subscribers(SHOWS[0], NOW) == []
    assert server.status()["connections"] == 0


def test_a_client_that_closes_is_disconnected(
    server: LocalWebSocketApi, issuer: Issuer, dynamodb: Any, connections_table: str
) -> None:
    store = ConnectionStore(dynamodb, connections_table)
    with open_socket(server, issuer.token("fan-3", "user")) as socket:
        assert subscribe(socket, SHOWS[1])["type"] == "subscribed"
        socket.send("not json")
        error = json.loads(socket.recv(timeout=5))
        assert (error["type"], error["error"]) == ("error", "unknown_action")
        assert len(store.subscribers(SHOWS[1], NOW)) == 1
    _poll(lambda: store.subscribers(SHOWS[1], NOW) == [])
