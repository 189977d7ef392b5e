"""API Gateway HTTP API behaviour, as pure functions: route matching, payload 2.0 events, the
reading of a Lambda's response, CORS, and API Gateway's own error answers.

The gateway (:mod:`tests.local_stack.gateway`) does the I/O; everything here is data in, data
out, so it is unit-tested without sockets.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from tests.support.template import HttpRoute

MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # HTTP API's request payload limit

_TEXT_TYPES = re.compile(r"^(text/|application/(json|.*\+json|xml|.*\+xml|javascript|x-www-form-urlencoded))")


@dataclass(frozen=True)
class Request:
    """An HTTP request as the gateway received it (path still percent-encoded)."""

    method: str
    path: str
    query: str = ""
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    source_ip: str = "127.0.0.1"

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive), or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)


@dataclass(frozen=True)
class Response:
    """An HTTP response to send back: status, header pairs (repeats allowed), body bytes."""

    status: int
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""

    @classmethod
    def json(cls, status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
        return cls(status, [("content-type", "application/json"), *headers], json.dumps(payload).encode())

    def with_headers(self, extra: Iterable[tuple[str, str]]) -> Response:
        """A copy with ``extra`` headers replacing any of the same names."""
        extra = list(extra)
        names = {k.lower() for k, _ in extra}
        return Response(
            self.status, [*(h for h in self.headers if h[0].lower() not in names), *extra], self.body
        )


# API Gateway's own answers (its bodies are {"message": ...}, not the API's error shape).
def not_found() -> Response:
    return Response.json(404, {"message": "Not Found"})


def unauthorized(reason: str) -> Response:
    challenge = f'Bearer error="invalid_token", error_description="{reason.replace(chr(34), chr(39))}"'
    return Response.json(401, {"message": "Unauthorized"}, [("www-authenticate", challenge)])


def forbidden() -> Response:
    return Response.json(403, {"message": "Forbidden"})


def internal_error() -> Response:
    return Response.json(500, {"message": "Internal Server Error"})


def service_unavailable() -> Response:
    return Response.json(503, {"message": "Service Unavailable"})


def payload_too_large() -> Response:
    return Response.json(413, {"message": "Request Entity Too Large"})


# ---------------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class RouteMatch:
    route: HttpRoute
    path_parameters: Mapping[str, str]


@dataclass(frozen=True)
class _CompiledRoute:
    route: HttpRoute
    segments: tuple[str, ...]

    def match(self, parts: Sequence[str]) -> dict[str, str] | None:
        params: dict[str, str] = {}
        for index, segment in enumerate(self.segments):
            if segment.startswith("{") and segment.endswith("+}"):
                if index >= len(parts):
                    return None
                params[segment[1:-2]] = "/".join(parts[index:])
                return params
            if index >= len(parts):
                return None
            if segment.startswith("{") and segment.endswith("}"):
                if not parts[index]:
                    return None
                params[segment[1:-1]] = parts[index]
            elif segment != parts[index]:
                return None
        return params if len(parts) == len(self.segments) else None

    def specificity(self) -> tuple[int, ...]:
        """Higher is more specific: literal segments beat ``{param}``, which beats ``{proxy+}``."""
        ranks = [0 if s.endswith("+}") else 1 if s.startswith("{") else 2 for s in self.segments]
        return (*ranks, len(ranks))


class RouteTable:
    """Matches requests to routes the way API Gateway HTTP APIs do: the most specific path wins
    (literal segments before ``{param}`` before ``{greedy+}``), a route's own method before
    ``ANY``, and ``$default`` catches the rest. Unknown path or method -> no match (404)."""

    def __init__(self, routes: Iterable[HttpRoute]) -> None:
        self.routes = list(routes)
        self._compiled = [
            _CompiledRoute(r, tuple(r.path.split("/")[1:])) for r in self.routes if r.path != "$default"
        ]
        self._compiled.sort(key=_CompiledRoute.specificity, reverse=True)
        self._default = [r for r in self.routes if r.path == "$default"]

    def match(self, method: str, path: str) -> RouteMatch | None:
        """The route for ``method`` and the decoded ``path``, with its path parameters."""
        parts = path.split("/")[1:] if path.startswith("/") else [path]
        method = method.upper()
        best: RouteMatch | None = None
        best_rank: tuple[int, ...] | None = None
        for compiled in self._compiled:
            if compiled.route.method not in (method, "ANY"):
                continue
            params = compiled.match(parts)
            if params is None:
                continue
            rank = (*compiled.specificity(), compiled.route.method == method)
            if best_rank is None or rank > best_rank:
                best, best_rank = RouteMatch(compiled.route, params), rank
        if best is None:
            default = next((r for r in self._default if r.method in (method, "ANY")), None)
            if default is not None:
                best = RouteMatch(default, {})
        return best


# ---------------------------------------------------------------------------------- events


def decode_path(raw_path: str) -> str:
    """HTTP APIs hand the function a percent-decoded path (``rawPath`` too)."""
    return unquote(raw_path)


def query_parameters(raw_query: str) -> dict[str, str]:
    """``queryStringParameters``: decoded, repeated keys joined with commas as API Gateway does."""
    params: dict[str, list[str]] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        params.setdefault(key, []).append(value)
    return {key: ",".join(values) for key, values in params.items()}


def claims_for_event(claims: Mapping[str, Any]) -> dict[str, str]:
    """JWT claims as the JWT authorizer passes them: every value a string; lists as ``[a b]``."""
    flattened: dict[str, str] = {}
    for name, value in claims.items():
        if isinstance(value, list):
            flattened[name] = "[" + " ".join(str(v) for v in value) + "]"
        elif isinstance(value, bool):
            flattened[name] = "true" if value else "false"
        elif isinstance(value, dict):
            flattened[name] = json.dumps(value)
        else:
            flattened[name] = str(value)
    return flattened


def _is_text(content_type: str | None) -> bool:
    return content_type is None or bool(_TEXT_TYPES.match(content_type.strip().lower()))


@dataclass(frozen=True)
class EventContext:
    """Per-request values API Gateway adds (ids and times); defaults are fresh values."""

    request_id: str = field(
        default_factory=lambda: base64.b64encode(secrets.token_bytes(12)).decode().rstrip("=")
    )
    epoch_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    api_id: str = "local"
    account_id: str = "123456789012"
    domain_name: str = "127.0.0.1"
    port: int = 3000


def build_event(
    request: Request,
    match: RouteMatch,
    *,
    claims: Mapping[str, Any] | None = None,
    context: EventContext | None = None,
) -> dict[str, Any]:
    """The API Gateway HTTP API payload 2.0 event for ``request`` on the matched route.

    Headers are lower-cased and repeated headers joined with commas; cookies move from the
    ``cookie`` header to ``cookies``; absent parts (query, cookies, path parameters, body) are
    left out as API Gateway leaves them out. ``claims`` are set for routes with an authorizer.
    """
    context = context or EventContext()
    path = decode_path(request.path)
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in request.headers:
        lower = name.lower()
        if lower == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        headers[lower] = f"{headers[lower]},{value}" if lower in headers else value
    headers.setdefault("x-forwarded-for", request.source_ip)
    headers.setdefault("x-forwarded-proto", "http")
    headers.setdefault("x-forwarded-port", str(context.port))
    headers.setdefault("x-amzn-trace-id", f"Root=1-{context.epoch_ms // 1000:08x}-{secrets.token_hex(12)}")
    route_key = match.route.route_key if match.route.path != "$default" else "$default"
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": request.query,
        "headers": headers,
        "requestContext": {
            "accountId": context.account_id,
            "apiId": context.api_id,
            "domainName": context.domain_name,
            "domainPrefix": context.domain_name.split(".")[0],
            "http": {
                "method": request.method.upper(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": request.source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": context.request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(context.epoch_ms / 1000)),
            "timeEpoch": context.epoch_ms,
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if request.query:
        event["queryStringParameters"] = query_parameters(request.query)
    if match.path_parameters:
        event["pathParameters"] = {k: unquote(v) for k, v in match.path_parameters.items()}
    if claims is not None:
        scope = claims.get("scope")
        event["requestContext"]["authorizer"] = {
            "jwt": {"claims": claims_for_event(claims), "scopes": str(scope).split() if scope else None}
        }
    if request.body:
        if _is_text(headers.get("content-type")):
            try:
                event["body"] = request.body.decode("utf-8")
            except UnicodeDecodeError:
                event["body"], event["isBase64Encoded"] = base64.b64encode(request.body).decode(), True
        else:
            event["body"], event["isBase64Encoded"] = base64.b64encode(request.body).decode(), True
    return event


def response_from_result(result: Any) -> Response:
    """The HTTP response API Gateway makes of a function's payload 2.0 result.

    A dict with ``statusCode`` is used as is (headers, cookies as ``set-cookie``, body,
    ``isBase64Encoded``); anything else is taken as a JSON body with status 200, as API Gateway
    does. A malformed result is a 500, as it is in AWS.
    """
    if isinstance(result, dict) and "statusCode" in result:
        status = result["statusCode"]
        if not isinstance(status, int) or not 100 <= status <= 599:
            return internal_error()
        headers = [(str(k).lower(), str(v)) for k, v in (result.get("headers") or {}).items()]
        headers.extend(("set-cookie", str(c)) for c in result.get("cookies") or [])
        body = result.get("body")
        if body is None:
            payload = b""
        elif result.get("isBase64Encoded"):
            try:
                payload = base64.b64decode(str(body), validate=True)
            except ValueError:
                return internal_error()
        else:
            payload = str(body).encode("utf-8")
        return Response(status, headers, payload)
    body_text = result if isinstance(result, str) else json.dumps(result)
    return Response(200, [("content-type", "application/json")], body_text.encode("utf-8"))


# ---------------------------------------------------------------------------------- CORS


@dataclass(frozen=True)
class Cors:
    """An HTTP API's ``CorsConfiguration`` (resolved), applied as API Gateway applies it: it
    answers every preflight itself and sets the CORS headers on every response to an allowed
    origin, replacing any the function set."""

    allow_origins: tuple[str, ...]
    allow_headers: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None
    allow_credentials: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Cors:
        def strings(key: str) -> tuple[str, ...]:
            return tuple(str(v) for v in config.get(key) or ())

        max_age = config.get("MaxAge")
        return cls(
            allow_origins=strings("AllowOrigins"),
            allow_headers=tuple(h.lower() for h in strings("AllowHeaders")),
            allow_methods=tuple(m.upper() for m in strings("AllowMethods")),
            expose_headers=tuple(h.lower() for h in strings("ExposeHeaders")),
            max_age=int(max_age) if max_age is not None else None,
            allow_credentials=bool(config.get("AllowCredentials", False)),
        )

    def _allowed_origin(self, origin: str | None) -> str | None:
        if origin is None:
            return None
        if "*" in self.allow_origins:
            return "*" if not self.allow_credentials else origin
        return origin if origin in self.allow_origins else None

    def is_preflight(self, request: Request) -> bool:
        return request.method.upper() == "OPTIONS"

    def preflight(self, request: Request) -> Response:
        """API Gateway's answer to an OPTIONS request: 204, with CORS headers if the origin,
        method and headers asked for are allowed."""
        origin = self._allowed_origin(request.header("origin"))
        method = (request.header("access-control-request-method") or "").upper()
        wanted = [
            h.strip().lower() for h in (request.header("access-control-request-headers") or "").split(",")
        ]
        wanted = [h for h in wanted if h]
        method_ok = method in self.allow_methods or "*" in self.allow_methods
        headers_ok = "*" in self.allow_headers or all(h in self.allow_headers for h in wanted)
        if origin is None or not method_ok or not headers_ok:
            return Response(204)
        headers = [
            ("access-control-allow-origin", origin),
            ("access-control-allow-methods", ",".join(self.allow_methods)),
        ]
        if self.allow_headers:
            headers.append(("access-control-allow-headers", ",".join(self.allow_headers)))
        if self.max_age is not None:
            headers.append(("access-control-max-age", str(self.max_age)))
        if self.allow_credentials:
            headers.append(("access-control-allow-credentials", "true"))
        return Response(204, headers)

    def decorate(self, request: Request, response: Response) -> Response:
        """``response`` with API Gateway's CORS headers for the request's origin (if allowed)."""
        stripped = Response(
            response.status,
            [h for h in response.headers if not h[0].lower().startswith("access-control-")],
            response.body,
        )
        origin = self._allowed_origin(request.header("origin"))
        if origin is None:
            return stripped
        extra = [("access-control-allow-origin", origin)]
        if self.expose_headers:
            extra.append(("access-control-expose-headers", ",".join(self.expose_headers)))
        if self.allow_credentials:
            extra.append(("access-control-allow-credentials", "true"))
        return stripped.with_headers(extra)
