"""Canonical events from ``events/`` (shared with ``sam local invoke -e``) and builders of variants."""

from __future__ import annotations

import copy
import json
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).resolve().parents[2] / "events"


def load_event(name: str) -> dict[str, Any]:
    """A fresh copy of ``events/<name>`` (e.g. ``"votes_api/cast_vote.json"``)."""
    with (EVENTS_DIR / name).open(encoding="utf-8") as handle:
        event: dict[str, Any] = json.load(handle)
    return event


def http_event(
    route_key: str,
    *,
    path: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
    body: Any = None,
    raw_body: str | None = None,
    claims: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An HTTP API (payload 2.0) event for ``route_key`` ("GET /api/shows/{show_id}"), built from
    the canonical ``events/votes_api/show_votes.json`` with the route, parameters, body and (for a
    route behind the JWT authorizer) the verified ``claims`` replaced."""
    event = copy.deepcopy(load_event("votes_api/show_votes.json"))
    method, _, template = route_key.partition(" ")
    raw_path = template
    for name, value in (path or {}).items():
        raw_path = raw_path.replace("{" + name + "}", urllib.parse.quote(value, safe=":"))
    event["routeKey"] = route_key
    event["rawPath"] = raw_path
    event["requestContext"]["routeKey"] = route_key
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["http"]["path"] = raw_path
    event["requestContext"]["requestId"] = uuid.uuid4().hex
    event["rawQueryString"] = urllib.parse.urlencode(query or {})
    event.pop("queryStringParameters", None)
    if query:
        event["queryStringParameters"] = dict(query)
    event.pop("pathParameters", None)
    if path:
        event["pathParameters"] = dict(path)
    event.pop("body", None)
    if raw_body is not None:
        event["body"] = raw_body
    elif body is not None:
        event["body"] = json.dumps(body)
    event["headers"].update({k.lower(): v for k, v in (headers or {}).items()})
    if claims is not None:
        event["requestContext"]["authorizer"] = {"jwt": {"claims": dict(claims), "scopes": None}}
    return event


def claims_for(user_id: str, *groups: str) -> dict[str, Any]:
    """Claims as the HTTP API's JWT authorizer passes them (groups as '[a b]')."""
    return {
        "sub": user_id,
        "cognito:groups": f"[{' '.join(groups)}]",
        "username": user_id,
        "token_use": "access",
    }


@dataclass
class LambdaContext:
    """The parts of Lambda's context object that handlers and Powertools read."""

    function_name: str = "test-function"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"
    remaining_ms: int = 60_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def call_http(handler: Any, event: dict[str, Any]) -> tuple[int, Any]:
    """Invoke an HTTP handler; its status and decoded JSON body."""
    response = handler(event, LambdaContext())
    body = response.get("body")
    return int(response["statusCode"]), json.loads(body) if body else None
