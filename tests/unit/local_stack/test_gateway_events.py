"""The gateway's API Gateway behaviour: routing, payload 2.0 events, responses, CORS, the JWT
authorizer's answers. No sockets: :class:`Gateway.handle` is called directly."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mysetlist.jwt_verify import JwtVerifier
from tests.local_stack import apigw, tokens
from tests.local_stack.apigw import Cors, EventContext, Request, Response, RouteTable
from tests.local_stack.gateway import Gateway, json_endpoint, jwks_endpoint
from tests.support.template import HttpRoute

ISSUER = tokens.issuer_for(4000)


def route(method: str, path: str, *, auth: bool = False, function: str = "Fn") -> HttpRoute:
    return HttpRoute(function, f"{method}{path}", method, path, auth, "Jwt" if auth else None)


ROUTES = RouteTable(
    [
        route("GET", "/api/shows"),
        route("GET", "/api/shows/{show_id}"),
        route("GET", "/api/shows/upcoming", function="Literal"),
        route("PUT", "/api/shows/{show_id}/setlist", auth=True),
        route("ANY", "/files/{path+}", function="Files"),
        route("GET", "/files/{path+}", function="FilesGet"),
    ]
)


def test_literal_segments_beat_parameters() -> None:
    match = ROUTES.match("GET", "/api/shows/upcoming")
    assert match is not None
    assert match.route.function_id == "Literal"
    other = ROUTES.match("GET", "/api/shows/grateful-dead:1977-05-08")
    assert other is not None
    assert other.path_parameters == {"show_id": "grateful-dead:1977-05-08"}


def test_greedy_parameters_and_any_method() -> None:
    get = ROUTES.match("GET", "/files/a/b/c.txt")
    post = ROUTES.match("POST", "/files/a/b")
    assert get is not None
    assert get.route.function_id == "FilesGet"
    assert post is not None
    assert post.route.function_id == "Files"
    assert post.path_parameters == {"path": "a/b"}
    assert ROUTES.match("GET", "/files") is None


def test_unknown_paths_and_methods_do_not_match() -> None:
    assert ROUTES.match("POST", "/api/shows") is None
    assert ROUTES.match("GET", "/api/shows/x/setlist") is None
    assert ROUTES.match("GET", "/api/shows/") is None
    assert ROUTES.match("GET", "/api") is None


def test_default_route_catches_the_rest() -> None:
    table = RouteTable([route("GET", "/a"), route("ANY", "$default", function="Default")])
    match = table.match("DELETE", "/anything/else")
    assert match is not None
    assert match.route.function_id == "Default"


def test_event_is_payload_format_2() -> None:
    request = Request(
        method="GET",
        path="/api/shows/grateful-dead%3A1977-05-08",
        query="artist_id=grateful-dead&tag=a&tag=b&empty=",
        headers=[("Content-Type", "text/plain"), ("X-Multi", "1"), ("x-multi", "2"), ("Cookie", "a=1; b=2")],
        body=b"hello",
        source_ip="10.0.0.9",
    )
    match = ROUTES.match("GET", apigw.decode_path(request.path))
    assert match is not None
    event = apigw.build_event(
        request, match, context=EventContext(request_id="rid", epoch_ms=1_700_000_000_000)
    )
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /api/shows/{show_id}"
    assert event["rawPath"] == "/api/shows/grateful-dead:1977-05-08"
    assert event["rawQueryString"] == "artist_id=grateful-dead&tag=a&tag=b&empty="
    assert event["queryStringParameters"] == {"artist_id": "grateful-dead", "tag": "a,b", "empty": ""}
    assert event["pathParameters"] == {"show_id": "grateful-dead:1977-05-08"}
    assert event["headers"]["x-multi"] == "1,2"
    assert event["headers"]["content-type"] == "text/plain"
    assert "cookie" not in event["headers"]
    assert event["cookies"] == ["a=1", "b=2"]
    assert event["body"] == "hello"
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["http"] == {
        "method": "GET",
        "path": "/api/shows/grateful-dead:1977-05-08",
        "protocol": "HTTP/1.1",
        "sourceIp": "10.0.0.9",
        "userAgent": "",
    }
    assert (context["stage"], context["requestId"], context["timeEpoch"]) == (
        "$default",
        "rid",
        1_700_000_000_000,
    )
    assert context["time"] == "14/Nov/2023:22:13:20 +0000"
    assert "authorizer" not in context


def test_event_leaves_out_absent_parts_and_encodes_binary_bodies() -> None:
    match = ROUTES.match("GET", "/api/shows")
    assert match is not None
    bare = apigw.build_event(Request("GET", "/api/shows"), match)
    assert not {"queryStringParameters", "pathParameters", "cookies", "body"} & set(bare)
    binary = apigw.build_event(
        Request("GET", "/api/shows", headers=[("content-type", "image/png")], body=b"\x89PNG"), match
    )
    assert binary["isBase64Encoded"] is True
    assert base64.b64decode(binary["body"]) == b"\x89PNG"


def test_claims_are_strings_as_the_jwt_authorizer_passes_them() -> None:
    match = ROUTES.match("PUT", "/api/shows/x/setlist")
    assert match is not None
    claims = {"sub": "u1", "cognito:groups": ["admin", "user"], "exp": 1700, "scope": "a b", "flag": True}
    event = apigw.build_event(Request("PUT", "/api/shows/x/setlist"), match, claims=claims)
    jwt = event["requestContext"]["authorizer"]["jwt"]
    assert jwt["claims"] == {
        "sub": "u1",
        "cognito:groups": "[admin user]",
        "exp": "1700",
        "scope": "a b",
        "flag": "true",
    }
    assert jwt["scopes"] == ["a", "b"]


@pytest.mark.parametrize(
    ("result", "status", "body"),
    [
        ({"statusCode": 201, "headers": {"X-A": "1"}, "body": '{"ok":true}'}, 201, b'{"ok":true}'),
        ({"statusCode": 204}, 204, b""),
        (
            {"statusCode": 200, "body": base64.b64encode(b"\x00\x01").decode(), "isBase64Encoded": True},
            200,
            b"\x00\x01",
        ),
        ({"items": [1]}, 200, b'{"items": [1]}'),
        ("plain", 200, b"plain"),
        ({"statusCode": "200"}, 500, b'{"message": "Internal Server Error"}'),
    ],
)
def test_function_results_become_responses(result: Any, status: int, body: bytes) -> None:
    response = apigw.response_from_result(result)
    assert (response.status, response.body) == (status, body)


def test_cookies_become_set_cookie_headers() -> None:
    response = apigw.response_from_result(
        {"statusCode": 200, "cookies": ["a=1", "b=2"], "headers": {"X-A": "1"}}
    )
    assert [v for k, v in response.headers if k == "set-cookie"] == ["a=1", "b=2"]
    assert ("x-a", "1") in response.headers


CORS = Cors.from_config(
    {
        "AllowOrigins": ["http://localhost:5173"],
        "AllowHeaders": ["authorization", "content-type"],
        "AllowMethods": ["GET", "POST"],
        "ExposeHeaders": ["retry-after"],
        "MaxAge": 600,
    }
)


def test_preflight_allows_configured_origin_methods_and_headers() -> None:
    request = Request(
        "OPTIONS",
        "/api/votes",
        headers=[
            ("Origin", "http://localhost:5173"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "Authorization, Content-Type"),
        ],
    )
    response = CORS.preflight(request)
    headers = dict(response.headers)
    assert response.status == 204
    assert headers["access-control-allow-origin"] == "http://localhost:5173"
    assert headers["access-control-allow-methods"] == "GET,POST"
    assert headers["access-control-allow-headers"] == "authorization,content-type"
    assert headers["access-control-max-age"] == "600"


@pytest.mark.parametrize(
    "headers",
    [
        [("Origin", "http://evil.example"), ("Access-Control-Request-Method", "POST")],
        [("Origin", "http://localhost:5173"), ("Access-Control-Request-Method", "DELETE")],
        [
            ("Origin", "http://localhost:5173"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "x-secret"),
        ],
    ],
)
def test_preflight_for_anything_else_gets_no_cors_headers(headers: list[tuple[str, str]]) -> None:
    response = CORS.preflight(Request("OPTIONS", "/api/votes", headers=headers))
    assert response.status == 204
    assert not any(k.startswith("access-control-") for k, _ in response.headers)


def test_responses_to_allowed_origins_get_cors_headers_replacing_the_functions() -> None:
    response = Response(200, [("access-control-allow-origin", "*"), ("x-a", "1")], b"{}")
    allowed = CORS.decorate(Request("GET", "/x", headers=[("Origin", "http://localhost:5173")]), response)
    assert dict(allowed.headers)["access-control-allow-origin"] == "http://localhost:5173"
    assert dict(allowed.headers)["access-control-expose-headers"] == "retry-after"
    other = CORS.decorate(Request("GET", "/x", headers=[("Origin", "http://evil.example")]), response)
    assert not any(k.startswith("access-control-") for k, _ in other.headers)


# ---------------------------------------------------------------------------------- Gateway


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> tokens.SigningKey:
    return tokens.load_or_create_key(Path(tmp_path_factory.mktemp("keys")))


class FakeFunctions:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.fail = False

    def __call__(self, function_id: str, event: dict[str, Any]) -> Any:
        if self.fail:
            raise RuntimeError("boom")
        self.events.append((function_id, event))
        return {
            "statusCode": 200,
            "headers": {"content-type": "application/json"},
            "body": json.dumps({"ok": 1}),
        }


@pytest.fixture
def functions() -> FakeFunctions:
    return FakeFunctions()


@pytest.fixture
def gateway(signing_key: tokens.SigningKey, functions: FakeFunctions) -> Gateway:
    ready = threading.Event()
    ready.set()
    verifier = JwtVerifier(ISSUER, [tokens.AUDIENCE], keys={signing_key.kid: signing_key.public_key()})
    return Gateway(
        ROUTES,
        invoke=functions,
        verifier=verifier,
        cors=CORS,
        local_endpoints={
            "/__local/health": json_endpoint(lambda: (200, {"status": "ok"})),
            tokens.JWKS_PATH: jwks_endpoint(signing_key.jwks()),
        },
        port=4000,
        ready=ready,
    )


def _token(key: tokens.SigningKey, **kwargs: Any) -> str:
    return tokens.mint_token(key, issuer=ISSUER, user_id="alice", groups=["moderator"], **kwargs)


def test_undeclared_routes_get_api_gateways_404(gateway: Gateway) -> None:
    response = gateway.handle(Request("GET", "/api/nope"))
    assert (response.status, json.loads(response.body)) == (404, {"message": "Not Found"})


def test_anonymous_routes_reach_the_function_without_claims(
    gateway: Gateway, functions: FakeFunctions
) -> None:
    response = gateway.handle(Request("GET", "/api/shows", query="limit=2"))
    assert response.status == 200
    (function_id, event), *_ = functions.events
    assert function_id == "Fn"
    assert "authorizer" not in event["requestContext"]


def test_protected_routes_pass_verified_claims(
    gateway: Gateway, functions: FakeFunctions, signing_key: tokens.SigningKey
) -> None:
    token = _token(signing_key)
    response = gateway.handle(
        Request("PUT", "/api/shows/s1/setlist", headers=[("Authorization", f"Bearer {token}")])
    )
    assert response.status == 200
    claims = functions.events[-1][1]["requestContext"]["authorizer"]["jwt"]["claims"]
    assert claims["sub"] == "alice"
    assert claims["cognito:groups"] == "[moderator]"
    assert claims["client_id"] == tokens.AUDIENCE


def test_missing_forged_and_expired_tokens_get_401(
    gateway: Gateway, functions: FakeFunctions, signing_key: tokens.SigningKey
) -> None:
    forger = tokens.SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    forged = tokens.mint_token(forger, issuer=ISSUER, user_id="mallory", groups=["admin"])
    claims = jwt.decode(forged, options={"verify_signature": False})
    forged_same_kid = jwt.encode(
        claims, forger.private_key, algorithm="RS256", headers={"kid": signing_key.kid}
    )
    expired = _token(signing_key, lifetime_seconds=-120)
    wrong_issuer = tokens.mint_token(signing_key, issuer="http://elsewhere", user_id="alice")
    wrong_audience = tokens.mint_token(signing_key, issuer=ISSUER, user_id="alice", audience="other")
    for headers in (
        [],
        [("Authorization", f"Bearer {forged}")],
        [("Authorization", f"Bearer {forged_same_kid}")],
        [("Authorization", f"Bearer {expired}")],
        [("Authorization", f"Bearer {wrong_issuer}")],
        [("Authorization", f"Bearer {wrong_audience}")],
        [("Authorization", "Bearer not-a-jwt")],
    ):
        response = gateway.handle(Request("PUT", "/api/shows/s1/setlist", headers=headers))
        assert (response.status, json.loads(response.body)) == (401, {"message": "Unauthorized"}), headers
    assert functions.events == []


def test_a_failing_function_is_api_gateways_500(gateway: Gateway, functions: FakeFunctions) -> None:
    functions.fail = True
    response = gateway.handle(Request("GET", "/api/shows"))
    assert (response.status, json.loads(response.body)) == (500, {"message": "Internal Server Error"})


def test_routes_wait_for_ready_but_local_endpoints_do_not(gateway: Gateway) -> None:
    gateway.ready.clear()
    assert gateway.handle(Request("GET", "/api/shows")).status == 503
    assert gateway.handle(Request("GET", "/__local/health")).status == 200


def test_jwks_and_preflight_are_answered_by_the_gateway(
    gateway: Gateway, signing_key: tokens.SigningKey
) -> None:
    jwks = json.loads(gateway.handle(Request("GET", tokens.JWKS_PATH)).body)
    assert jwks["keys"][0]["kid"] == signing_key.kid
    assert "d" not in jwks["keys"][0]  # public key only
    preflight = gateway.handle(
        Request(
            "OPTIONS",
            "/api/anything",
            headers=[("Origin", "http://localhost:5173"), ("Access-Control-Request-Method", "GET")],
        )
    )
    assert preflight.status == 204
    assert dict(preflight.headers)["access-control-allow-origin"] == "http://localhost:5173"
