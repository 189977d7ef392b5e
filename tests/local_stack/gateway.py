"""The local HTTP API: serves every ``HttpApi`` route of the template by building payload 2.0
events and invoking the functions, checks tokens as the JWT authorizer does, answers CORS
preflights, and serves the local issuer's key set plus a few ``/__local/...`` endpoints.

:class:`Gateway` is the logic (request in, response out); :class:`GatewayServer` is a
``ThreadingHTTPServer`` around it, so requests are served concurrently and a function may call
back into the gateway (the VotesApi fetches the JWKS from it).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mysetlist.errors import Unauthorized
from mysetlist.jwt_verify import JwtVerifier
from tests.local_stack import apigw
from tests.local_stack.apigw import Cors, EventContext, Request, Response, RouteTable

log = logging.getLogger("local_stack.gateway")

Invoker = Callable[[str, dict[str, Any]], Any]
LocalEndpoint = Callable[[Request], Response]


class Gateway:
    """Request -> response, as API Gateway HTTP API would answer.

    ``invoke(function_id, event)`` runs a function; ``local_endpoints`` maps exact paths to
    handlers for the stack's own endpoints (health, streams, the issuer's JWKS). Until
    ``ready`` is set, API routes answer 503 so a client never sees a half-seeded catalogue.
    """

    def __init__(
        self,
        routes: RouteTable,
        *,
        invoke: Invoker,
        verifier: JwtVerifier,
        cors: Cors | None,
        local_endpoints: Mapping[str, LocalEndpoint],
        port: int,
        ready: threading.Event,
    ) -> None:
        self.routes = routes
        self.invoke = invoke
        self.verifier = verifier
        self.cors = cors
        self.local_endpoints = dict(local_endpoints)
        self.port = port
        self.ready = ready

    def handle(self, request: Request) -> Response:
        """Answer one request (never raises: a failing function becomes API Gateway's 500)."""
        endpoint = self.local_endpoints.get(request.path)
        if endpoint is not None:
            return endpoint(request)
        if self.cors is not None and self.cors.is_preflight(request):
            return self.cors.preflight(request)
        response = self._route(request)
        return self.cors.decorate(request, response) if self.cors is not None else response

    def _route(self, request: Request) -> Response:
        match = self.routes.match(request.method, apigw.decode_path(request.path))
        if match is None:
            return apigw.not_found()
        if len(request.body) > apigw.MAX_PAYLOAD_BYTES:
            return apigw.payload_too_large()
        if not self.ready.is_set():
            return apigw.service_unavailable()
        claims: dict[str, Any] | None = None
        if match.route.auth_required:
            claims, refusal = self._authorize(request, match.route.scopes)
            if refusal is not None:
                return refusal
        event = apigw.build_event(request, match, claims=claims, context=EventContext(port=self.port))
        started = time.perf_counter()
        try:
            result = self.invoke(match.route.function_id, event)
        except Exception:
            log.exception("%s %s: %s failed", request.method, request.path, match.route.function_id)
            return apigw.internal_error()
        response = apigw.response_from_result(result)
        log.info(
            "%s %s -> %s (%s, %.1f ms)",
            request.method,
            request.path,
            response.status,
            match.route.function_id,
            (time.perf_counter() - started) * 1000,
        )
        return response

    def _authorize(self, request: Request, scopes: tuple[str, ...]) -> tuple[dict[str, Any], Response | None]:
        """The JWT authorizer: the token's claims, or API Gateway's 401 (bad token) / 403 (scopes)."""
        try:
            claims = self.verifier.verify(request.header("authorization"))
        except Unauthorized as exc:
            return {}, apigw.unauthorized(exc.message)
        if scopes and set(str(claims.get("scope", "")).split()).isdisjoint(scopes):
            return claims, apigw.forbidden()
        return claims, None


def json_endpoint(produce: Callable[[], tuple[int, Any]]) -> LocalEndpoint:
    """A local endpoint answering ``GET`` with the JSON ``produce()`` returns."""

    def endpoint(request: Request) -> Response:
        if request.method.upper() != "GET":
            return Response.json(405, {"message": "Method Not Allowed"})
        status, payload = produce()
        return Response.json(status, payload)

    return endpoint


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    server: GatewayServer

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        try:
            body = self._read_body()
        except ValueError:
            self._send(Response.json(400, {"message": "Bad Request"}))
            return
        request = Request(
            method=self.command,
            path=path,
            query=query,
            headers=list(self.headers.items()),
            body=body,
            source_ip=self.client_address[0],
        )
        self._send(self.server.gateway.handle(request))

    def _read_body(self) -> bytes:
        if (self.headers.get("transfer-encoding") or "").lower() == "chunked":
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                total += size
                if total > apigw.MAX_PAYLOAD_BYTES + 1:
                    raise ValueError("payload too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        if length < 0 or length > apigw.MAX_PAYLOAD_BYTES + 1:
            raise ValueError("bad content-length")
        return self.rfile.read(length) if length else b""

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("content-length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.client_address[0], format % args)


class GatewayServer(ThreadingHTTPServer):
    """Serves a :class:`Gateway` on ``127.0.0.1:port`` (one thread per connection)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, gateway: Gateway | None = None) -> None:
        super().__init__(("127.0.0.1", port), _RequestHandler)
        self._gateway = gateway

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            raise RuntimeError("the gateway server has no gateway yet")
        return self._gateway

    @gateway.setter
    def gateway(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def start(self) -> threading.Thread:
        """Serve in a background thread (stop with ``shutdown()`` then ``server_close()``)."""
        thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="gateway", daemon=True
        )
        thread.start()
        return thread


def jwks_endpoint(jwks: Mapping[str, Any]) -> LocalEndpoint:
    body = json.dumps(jwks).encode()

    def endpoint(request: Request) -> Response:
        return Response(200, [("content-type", "application/json"), ("cache-control", "max-age=300")], body)

    return endpoint
