"""The local WebSocket API's pure parts: the API read from template.yaml (routes, their
function, two-way routes, stage), route selection as API Gateway does it, the Lambda events of
each kind, and how a function's result is read."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.local_stack.__main__ import parse_args
from tests.local_stack.websocket import (
    ConnectionContext,
    WebSocketApiSpec,
    WebSocketRoute,
    connect_event,
    disconnect_event,
    message_event,
    new_connection_id,
    reply_of,
    status_of,
)
from tests.support.template import TemplateError, default_template

CONTEXT = ConnectionContext(
    connection_id="L0SM9cOFvHcCIhw=",
    connected_at_ms=1_795_507_200_000,
    source_ip="127.0.0.1",
    user_agent="pytest",
    stage="live",
)


@pytest.fixture(scope="module")
def spec() -> WebSocketApiSpec:
    (api,) = WebSocketApiSpec.from_template(default_template())
    return api


def test_the_template_s_websocket_api_is_read_as_declared(spec: WebSocketApiSpec) -> None:
    assert spec.logical_id == "LiveWebSocketApi"
    assert spec.selection_expression == "$request.body.action"
    assert spec.stage == "live"
    assert spec.routes == {
        "$connect": WebSocketRoute("$connect", "LiveUpdates", two_way=False),
        "$disconnect": WebSocketRoute("$disconnect", "LiveUpdates", two_way=False),
        "subscribe": WebSocketRoute("subscribe", "LiveUpdates", two_way=True),
        "unsubscribe": WebSocketRoute("unsubscribe", "LiveUpdates", two_way=True),
        "$default": WebSocketRoute("$default", "LiveUpdates", two_way=True),
    }


@pytest.mark.parametrize(
    ("body", "route"),
    [
        ('{"action": "subscribe", "show_id": "x"}', "subscribe"),
        ('{"action": "unsubscribe"}', "unsubscribe"),
        ('{"action": "vote"}', "$default"),
        ('{"action": "$connect"}', "$default"),  # special routes are never selected by a message
        ('{"action": 7}', "$default"),
        ('["subscribe"]', "$default"),
        ("subscribe", "$default"),
        ("", "$default"),
    ],
)
def test_messages_are_routed_by_the_selection_expression(
    spec: WebSocketApiSpec, body: str, route: str
) -> None:
    selected = spec.select(body)
    assert selected is not None
    assert selected.route_key == route


def test_a_nested_selection_path_and_an_api_without_default() -> None:
    spec = WebSocketApiSpec(
        "Api", "$request.body.meta.kind", {"ping": WebSocketRoute("ping", "Fn", two_way=True)}
    )
    assert spec.select('{"meta": {"kind": "ping"}}') == spec.routes["ping"]
    assert spec.select('{"kind": "ping"}') is None  # no route: API Gateway answers Forbidden
    with pytest.raises(TemplateError, match="not supported"):
        WebSocketApiSpec("Api", "$request.header.x", {}).select("{}")


def test_the_connect_event_carries_headers_and_query_parameters() -> None:
    event = connect_event(
        CONTEXT, [("Host", "127.0.0.1"), ("X-Seen", "a"), ("X-Seen", "b")], "token=abc%2Bdef&x=1&x=2"
    )
    context = event["requestContext"]
    assert (context["routeKey"], context["eventType"], context["connectionId"]) == (
        "$connect",
        "CONNECT",
        CONTEXT.connection_id,
    )
    assert (context["stage"], context["domainName"], context["connectedAt"]) == (
        "live",
        "127.0.0.1",
        CONTEXT.connected_at_ms,
    )
    assert context["identity"] == {"sourceIp": "127.0.0.1", "userAgent": "pytest"}
    assert event["queryStringParameters"] == {"token": "abc+def", "x": "2"}
    assert event["multiValueQueryStringParameters"]["x"] == ["1", "2"]
    assert event["headers"]["X-Seen"] == "b"
    assert event["multiValueHeaders"]["X-Seen"] == ["a", "b"]
    assert "queryStringParameters" not in connect_event(CONTEXT, [], "")


def test_message_and_disconnect_events() -> None:
    message = message_event(CONTEXT, "subscribe", '{"action": "subscribe"}', 1_795_507_201_000)
    assert message["body"] == '{"action": "subscribe"}'
    assert message["requestContext"]["eventType"] == "MESSAGE"
    assert message["requestContext"]["messageId"]
    assert message["requestContext"]["requestTimeEpoch"] == 1_795_507_201_000
    gone = disconnect_event(CONTEXT, 1001, "Going away", 1_795_510_800_000)
    assert gone["requestContext"]["routeKey"] == "$disconnect"
    assert (gone["requestContext"]["disconnectStatusCode"], gone["requestContext"]["disconnectReason"]) == (
        1001,
        "Going away",
    )
    json.dumps([message, gone])  # Lambda events are JSON


def test_connection_ids_look_like_api_gateway_s() -> None:
    ids = {new_connection_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 16 and i.endswith("=") for i in ids)


@pytest.mark.parametrize(
    ("result", "status", "reply"),
    [
        ({"statusCode": 200, "body": '{"type": "subscribed"}'}, 200, '{"type": "subscribed"}'),
        ({"statusCode": 401}, 401, None),
        ({"statusCode": 200, "body": "aGk=", "isBase64Encoded": True}, 200, "hi"),
        ({"statusCode": "oops"}, 500, None),
        ({"type": "raw"}, 200, '{"type": "raw"}'),
        (None, 200, "null"),
    ],
)
def test_function_results_are_read_as_api_gateway_reads_them(
    result: Any, status: int, reply: str | None
) -> None:
    assert status_of(result) == status
    assert reply_of(result) == reply


def test_the_websocket_port_is_free_by_default_or_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WS_PORT", raising=False)
    assert parse_args([]).ws_port == 0
    assert parse_args(["--ws-port", "3001"]).ws_port == 3001
    monkeypatch.setenv("WS_PORT", "3002")
    assert parse_args([]).ws_port == 3002
    with pytest.raises(SystemExit):
        parse_args(["--ws-port", "70000"])
