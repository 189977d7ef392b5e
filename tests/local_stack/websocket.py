"""The local WebSocket API: serves the template's ``AWS::ApiGatewayV2::Api`` of protocol
``WEBSOCKET`` as API Gateway does, and its management endpoint (``/@connections/{id}``).

* :class:`WebSocketApiSpec` reads the API from the template: its route selection expression,
  its routes (route key -> function, through the route's integration), which routes are
  two-way (they have a route response: the function's answer goes back to the client), and
  its stage.
* :func:`connect_event`, :func:`message_event`, :func:`disconnect_event` build the Lambda
  proxy events API Gateway sends (``requestContext`` with ``connectionId``, ``routeKey``,
  ``eventType``, ``domainName``, ``stage``...; query parameters on ``$connect``).
* :class:`LocalWebSocketApi` is the I/O: a WebSocket server (``websockets``) on its own event
  loop thread, and the management endpoint on another port (``ThreadingHTTPServer``):
  ``POST`` sends to a connection, ``GET`` describes it, ``DELETE`` closes it, and an unknown
  or closed connection answers ``410 GoneException`` -- so boto3's ``apigatewaymanagementapi``
  client works against it unchanged (``endpoint_url`` = :attr:`management_url`).

A ``$connect`` whose function answers a status other than 2xx refuses the handshake with that
status, as API Gateway does; until the stack is ready every handshake gets 503.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as HandshakeRequest
from websockets.http11 import Response as HandshakeResponse

from tests.local_stack.apigw import query_parameters
from tests.support.template import Template, TemplateError

log = logging.getLogger("local_stack.websocket")

Invoker = Callable[[str, dict[str, Any]], Any]

# API Gateway's limits for WebSocket APIs.
MAX_MESSAGE_BYTES = 128 * 1024
DEFAULT_STAGE = "local"
_INTEGRATION_TARGET = re.compile(r"^integrations/\$\{(?P<id>[A-Za-z0-9]+)\}$")
_FUNCTION_ARN = re.compile(r"\$\{(?P<id>[A-Za-z0-9]+)\.Arn\}")
_SELECTION = re.compile(r"^\$request\.body\.(?P<path>[A-Za-z0-9_.-]+)$")


# ---------------------------------------------------------------------------------- the template


@dataclass(frozen=True)
class WebSocketRoute:
    """One route: its key, the function its integration invokes, and whether the function's
    answer is sent back to the client (a route response exists)."""

    route_key: str
    function_id: str
    two_way: bool = False


@dataclass(frozen=True)
class WebSocketApiSpec:
    """A WebSocket API of the template (see the module docstring)."""

    logical_id: str
    selection_expression: str
    routes: Mapping[str, WebSocketRoute]
    stage: str = DEFAULT_STAGE

    @classmethod
    def from_template(cls, template: Template) -> list[WebSocketApiSpec]:
        """Every WebSocket API of ``template`` (none is fine: the stack then serves none)."""
        apis = {
            logical_id: props
            for logical_id, props in template.resources_of_type("AWS::ApiGatewayV2::Api").items()
            if str(props.get("ProtocolType", "")).upper() == "WEBSOCKET"
        }
        if not apis:
            return []
        integrations = template.resources_of_type("AWS::ApiGatewayV2::Integration")
        route_props = template.resources_of_type("AWS::ApiGatewayV2::Route")
        answered = {
            _ref(props.get("RouteId"), "RouteResponse RouteId")
            for props in template.resources_of_type("AWS::ApiGatewayV2::RouteResponse").values()
        }
        stages = template.resources_of_type("AWS::ApiGatewayV2::Stage")
        specs = []
        for api_id, props in apis.items():
            routes: dict[str, WebSocketRoute] = {}
            for route_id, route in route_props.items():
                if _ref(route.get("ApiId"), f"{route_id}.ApiId") != api_id:
                    continue
                integration_id = _integration_of(route_id, route.get("Target"))
                if integration_id not in integrations:
                    raise TemplateError(f"{route_id}: its target {integration_id!r} is not an integration")
                key = str(route["RouteKey"])
                routes[key] = WebSocketRoute(
                    route_key=key,
                    function_id=_function_of(integration_id, integrations[integration_id]),
                    two_way=route_id in answered,
                )
            stage = next(
                (
                    str(s["StageName"])
                    for s in stages.values()
                    if _ref(s.get("ApiId"), "Stage ApiId") == api_id and isinstance(s.get("StageName"), str)
                ),
                DEFAULT_STAGE,
            )
            specs.append(
                cls(
                    logical_id=api_id,
                    selection_expression=str(props.get("RouteSelectionExpression", "$request.body.action")),
                    routes=routes,
                    stage=stage,
                )
            )
        return specs

    def select(self, body: str) -> WebSocketRoute | None:
        """The route of a message, as the route selection expression picks it: the value at
        ``$request.body.<path>`` when the body is a JSON object and that value names a route,
        else ``$default`` (None when there is no ``$default``)."""
        match = _SELECTION.match(self.selection_expression)
        if match is None:
            raise TemplateError(f"route selection expression {self.selection_expression!r} is not supported")
        try:
            value: Any = json.loads(body)
        except ValueError:
            value = None
        for part in match.group("path").split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str) and value in self.routes and not value.startswith("$"):
            return self.routes[value]
        return self.routes.get("$default")


def _ref(value: Any, what: str) -> str:
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    raise TemplateError(f"{what} must be !Ref <resource>, got {value!r}")


def _integration_of(route_id: str, target: Any) -> str:
    """The integration a route targets: ``!Sub integrations/${X}`` or ``!Join ["/", ["integrations", !Ref X]]``."""
    if isinstance(target, dict) and isinstance(target.get("Fn::Sub"), str):
        match = _INTEGRATION_TARGET.match(target["Fn::Sub"])
        if match:
            return match.group("id")
    if isinstance(target, dict) and "Fn::Join" in target:
        separator, parts = target["Fn::Join"]
        if separator == "/" and len(parts) == 2 and parts[0] == "integrations":
            return _ref(parts[1], f"{route_id}.Target")
    raise TemplateError(f"{route_id}: Target must be !Sub integrations/${{Integration}}, got {target!r}")


def _function_of(integration_id: str, props: Mapping[str, Any]) -> str:
    """The function of a Lambda proxy integration (``${Function.Arn}`` in its IntegrationUri)."""
    if str(props.get("IntegrationType", "")).upper() != "AWS_PROXY":
        raise TemplateError(
            f"{integration_id}: only AWS_PROXY (Lambda proxy) integrations are served locally"
        )
    uri = props.get("IntegrationUri")
    text = uri.get("Fn::Sub") if isinstance(uri, dict) else None
    match = _FUNCTION_ARN.search(text) if isinstance(text, str) else None
    if match is None:
        raise TemplateError(f"{integration_id}: IntegrationUri must name ${{Function.Arn}}, got {uri!r}")
    return match.group("id")


# ---------------------------------------------------------------------------------- events


def new_connection_id() -> str:
    """An id shaped like API Gateway's (16 characters of base64)."""
    return base64.b64encode(secrets.token_bytes(11)).decode()


def _request_id() -> str:
    return base64.b64encode(secrets.token_bytes(11)).decode()


@dataclass(frozen=True)
class ConnectionContext:
    """What API Gateway knows of a connection, repeated in every event of it."""

    connection_id: str
    connected_at_ms: int
    source_ip: str
    user_agent: str
    stage: str
    domain_name: str = "127.0.0.1"
    api_id: str = "local"


def _request_context(
    context: ConnectionContext, route_key: str, event_type: str, now_ms: int
) -> dict[str, Any]:
    request_id = _request_id()
    return {
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": request_id,
        "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now_ms / 1000)),
        "messageDirection": "IN",
        "stage": context.stage,
        "connectedAt": context.connected_at_ms,
        "requestTimeEpoch": now_ms,
        "identity": {"sourceIp": context.source_ip, "userAgent": context.user_agent},
        "requestId": request_id,
        "domainName": context.domain_name,
        "connectionId": context.connection_id,
        "apiId": context.api_id,
    }


def connect_event(
    context: ConnectionContext,
    headers: Iterable[tuple[str, str]],
    raw_query: str,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """The ``$connect`` event: headers (the last value, and all values) and query parameters."""
    now_ms = now_ms if now_ms is not None else context.connected_at_ms
    multi: dict[str, list[str]] = {}
    for name, value in headers:
        multi.setdefault(name, []).append(value)
    event: dict[str, Any] = {
        "headers": {name: values[-1] for name, values in multi.items()},
        "multiValueHeaders": multi,
        "requestContext": _request_context(context, "$connect", "CONNECT", now_ms),
        "isBase64Encoded": False,
    }
    if raw_query:
        single = query_parameters(raw_query)
        event["queryStringParameters"] = {k: v.split(",")[-1] for k, v in single.items()}
        event["multiValueQueryStringParameters"] = {k: v.split(",") for k, v in single.items()}
    return event


def message_event(context: ConnectionContext, route_key: str, body: str, now_ms: int) -> dict[str, Any]:
    request_context = _request_context(context, route_key, "MESSAGE", now_ms)
    request_context["messageId"] = _request_id()
    return {"requestContext": request_context, "body": body, "isBase64Encoded": False}


def disconnect_event(
    context: ConnectionContext, status_code: int, reason: str, now_ms: int
) -> dict[str, Any]:
    request_context = _request_context(context, "$disconnect", "DISCONNECT", now_ms)
    request_context["disconnectStatusCode"] = status_code
    request_context["disconnectReason"] = reason
    return {
        "headers": {"Host": context.domain_name, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""},
        "multiValueHeaders": {
            "Host": [context.domain_name],
            "x-api-key": [""],
            "X-Forwarded-For": [""],
            "x-restapi": [""],
        },
        "requestContext": request_context,
        "isBase64Encoded": False,
    }


def status_of(result: Any) -> int:
    """The status a Lambda proxy result stands for (API Gateway takes 200 without one)."""
    if isinstance(result, dict) and "statusCode" in result:
        status = result["statusCode"]
        return status if isinstance(status, int) and 100 <= status <= 599 else 500
    return 200


def reply_of(result: Any) -> str | None:
    """What a two-way route sends back: the result's ``body`` (a proxy result), else the
    result itself as JSON; nothing for an empty body."""
    if isinstance(result, dict) and "statusCode" in result:
        body = result.get("body")
        if body is None or body == "":
            return None
        if result.get("isBase64Encoded"):
            return base64.b64decode(str(body)).decode("utf-8", "replace")
        return str(body)
    return result if isinstance(result, str) else json.dumps(result)


# ---------------------------------------------------------------------------------- the server


@dataclass
class _Live:
    context: ConnectionContext
    socket: ServerConnection
    last_active: float = field(default_factory=time.time)


class LocalWebSocketApi:
    """The WebSocket API and its management endpoint (see the module docstring).

    ``invoke(function_id, event)`` runs a function; ``ready`` gates handshakes (503 before).
    :meth:`start` binds both ports and returns at once; :meth:`stop` closes every connection
    without invoking ``$disconnect`` (the functions are being stopped too).
    """

    def __init__(
        self,
        spec: WebSocketApiSpec,
        invoke: Invoker,
        *,
        ready: threading.Event,
        port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.spec = spec
        self.invoke = invoke
        self.ready = ready
        self.host = host
        self._requested_port = port
        self.port = 0
        self._connections: dict[str, _Live] = {}
        self._handshakes: dict[Any, ConnectionContext] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._stopping = False
        # Function calls leave the event loop (a container answers one invocation at a time).
        self._calls = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ws-invoke")
        self._management = _ManagementServer(self, host)
        self._management_thread: threading.Thread | None = None
        self.counters = {"connects": 0, "refused": 0, "messages": 0, "pushes": 0, "gone": 0, "disconnects": 0}

    def _count(self, name: str) -> None:
        with self._lock:  # the event loop and the management server's threads both count
            self.counters[name] += 1

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/{self.spec.stage}"

    @property
    def management_url(self) -> str:
        """What ``LIVE_MANAGEMENT_ENDPOINT`` is locally (``https://<api>.execute-api.../<stage>`` in AWS)."""
        return f"http://{self.host}:{self._management.server_address[1]}/{self.spec.stage}"

    def status(self) -> dict[str, Any]:
        with self._lock:
            open_connections = len(self._connections)
            counters = dict(self.counters)
        return {
            "url": self.url,
            "management_url": self.management_url,
            "routes": sorted(self.spec.routes),
            "connections": open_connections,
            **counters,
        }

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run, name="websocket", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError("the local WebSocket API did not start")
        if self._start_error is not None:
            raise RuntimeError(f"the local WebSocket API could not start: {self._start_error}")
        self._management_thread = threading.Thread(
            target=self._management.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="websocket-management",
            daemon=True,
        )
        self._management_thread.start()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(self._serve())
            self.port = self._server.sockets[0].getsockname()[1] if self._server.sockets else 0
        except OSError as exc:
            self._start_error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> Server:
        return await serve(
            self._handle,
            self.host,
            self._requested_port,
            process_request=self._handshake,
            max_size=MAX_MESSAGE_BYTES,
            compression=None,
            logger=logging.getLogger("local_stack.websocket.protocol"),
        )

    def stop(self) -> None:
        self._stopping = True
        if self._management_thread is not None:
            self._management.shutdown()
            self._management_thread.join(5)
        self._management.server_close()
        loop, server = self._loop, self._server
        if loop is not None and server is not None and loop.is_running():

            async def close() -> None:
                server.close()
                await server.wait_closed()

            try:
                asyncio.run_coroutine_threadsafe(close(), loop).result(10)
            except Exception:
                log.warning("the WebSocket server did not close cleanly", exc_info=True)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._calls.shutdown(wait=False, cancel_futures=True)

    # -- the WebSocket side ---------------------------------------------------------------

    async def _call(self, function_id: str, event: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._calls, self.invoke, function_id, event)

    async def _handshake(
        self, socket: ServerConnection, request: HandshakeRequest
    ) -> HandshakeResponse | None:
        """``$connect``: refuse (503) until ready, 403 off the stage, else what the function says."""
        path, _, raw_query = request.path.partition("?")
        if not self.ready.is_set():
            return socket.respond(503, '{"message": "Service Unavailable"}\n')
        if path.rstrip("/") != f"/{self.spec.stage}":
            return socket.respond(403, '{"message": "Forbidden"}\n')
        route = self.spec.routes.get("$connect")
        peer = socket.remote_address
        context = ConnectionContext(
            connection_id=new_connection_id(),
            connected_at_ms=int(time.time() * 1000),
            source_ip=str(peer[0]) if peer else "127.0.0.1",
            user_agent=request.headers.get("User-Agent", ""),
            stage=self.spec.stage,
        )
        if route is not None:
            event = connect_event(context, request.headers.raw_items(), raw_query)
            try:
                result = await self._call(route.function_id, event)
            except Exception:
                log.exception("$connect: %s failed", route.function_id)
                self._count("refused")
                return socket.respond(500, '{"message": "Internal server error"}\n')
            status = status_of(result)
            if not 200 <= status < 300:
                self._count("refused")
                log.info("$connect refused with %s", status)
                return socket.respond(status, (reply_of(result) or "") + "\n")
        with self._lock:
            self._handshakes[socket.id] = context
        return None

    async def _handle(self, socket: ServerConnection) -> None:
        with self._lock:
            context = self._handshakes.pop(socket.id)
            self._connections[context.connection_id] = _Live(context, socket)
        self._count("connects")
        log.info("connected %s", context.connection_id)
        try:
            async for raw in socket:
                text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
                await self._message(context, socket, text)
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._connections.pop(context.connection_id, None)
            await self._disconnected(context, socket)

    async def _message(self, context: ConnectionContext, socket: ServerConnection, text: str) -> None:
        self._count("messages")
        with self._lock:
            live = self._connections.get(context.connection_id)
            if live is not None:
                live.last_active = time.time()
        route = self.spec.select(text)
        now_ms = int(time.time() * 1000)
        if route is None:  # no route and no $default: API Gateway's own answer
            await socket.send(json.dumps({"message": "Forbidden", "connectionId": context.connection_id}))
            return
        event = message_event(context, route.route_key, text, now_ms)
        try:
            result = await self._call(route.function_id, event)
        except Exception:
            log.exception("%s: %s failed", route.route_key, route.function_id)
            await socket.send(
                json.dumps(
                    {
                        "message": "Internal server error",
                        "connectionId": context.connection_id,
                        "requestId": event["requestContext"]["requestId"],
                    }
                )
            )
            return
        reply = reply_of(result) if route.two_way else None
        if reply is not None:
            await socket.send(reply)

    async def _disconnected(self, context: ConnectionContext, socket: ServerConnection) -> None:
        self._count("disconnects")
        route = self.spec.routes.get("$disconnect")
        if route is None or self._stopping:
            return
        # 1005: the client sent a close frame without a code; 1006: none at all.
        code = socket.close_code if socket.close_code is not None else 1006
        reason = socket.close_reason or "Connection closed"
        event = disconnect_event(context, code, reason, int(time.time() * 1000))
        try:
            await self._call(route.function_id, event)
        except Exception:
            log.exception("$disconnect: %s failed", route.function_id)

    # -- the management side (called from the management server's threads) ------------------

    def _live(self, connection_id: str) -> _Live | None:
        with self._lock:
            return self._connections.get(connection_id)

    def post(self, connection_id: str, data: bytes) -> int:
        """Send ``data`` to a connection: 200, 410 (gone) or 413 (too large)."""
        live = self._live(connection_id)
        if live is None or self._loop is None:
            self._count("gone")
            return 410
        if len(data) > MAX_MESSAGE_BYTES:
            return 413
        try:
            message: str | bytes = data.decode("utf-8")
        except UnicodeDecodeError:
            message = data
        try:
            asyncio.run_coroutine_threadsafe(live.socket.send(message), self._loop).result(10)
        except (ConnectionClosed, RuntimeError, TimeoutError):
            self._count("gone")
            return 410
        self._count("pushes")
        return 200

    def describe(self, connection_id: str) -> dict[str, Any] | None:
        live = self._live(connection_id)
        if live is None:
            return None

        def iso(seconds: float) -> str:
            return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds")

        # GetConnection's wire names (boto3 shows them as ConnectedAt, Identity, LastActiveAt).
        return {
            "connectedAt": iso(live.context.connected_at_ms / 1000),
            "identity": {"sourceIp": live.context.source_ip, "userAgent": live.context.user_agent},
            "lastActiveAt": iso(live.last_active),
        }

    def close(self, connection_id: str) -> bool:
        live = self._live(connection_id)
        if live is None or self._loop is None:
            return False
        try:
            asyncio.run_coroutine_threadsafe(
                live.socket.close(1000, "closed by the server"), self._loop
            ).result(10)
        except (ConnectionClosed, RuntimeError, TimeoutError):
            return False
        return True


class _ManagementHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ManagementServer

    def _connection_id(self) -> str | None:
        path = urlsplit(self.path).path
        prefix = f"/{self.server.api.spec.stage}/@connections/"
        if not path.startswith(prefix) or len(path) == len(prefix) or "/" in path[len(prefix) :]:
            return None
        return unquote(path[len(prefix) :])

    def _answer(self, status: int, body: Any = None, error: str | None = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if error is not None:
            self.send_header("x-amzn-ErrorType", error)
        if payload:
            self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def do_POST(self) -> None:
        connection_id = self._connection_id()
        data = self._body()
        if connection_id is None:
            self._answer(403, {"message": "Forbidden"}, "ForbiddenException")
            return
        status = self.server.api.post(connection_id, data)
        if status == 410:
            self._answer(410, {"message": None}, "GoneException")
        elif status == 413:
            self._answer(413, {"message": "Message too long"}, "PayloadTooLargeException")
        else:
            self._answer(200)

    def do_GET(self) -> None:
        connection_id = self._connection_id()
        if connection_id is None:
            self._answer(403, {"message": "Forbidden"}, "ForbiddenException")
            return
        described = self.server.api.describe(connection_id)
        if described is None:
            self._answer(410, {"message": None}, "GoneException")
        else:
            self._answer(200, described)

    def do_DELETE(self) -> None:
        connection_id = self._connection_id()
        if connection_id is None:
            self._answer(403, {"message": "Forbidden"}, "ForbiddenException")
            return
        if self.server.api.close(connection_id):
            self._answer(204)
        else:
            self._answer(410, {"message": None}, "GoneException")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("management %s - %s", self.client_address[0], format % args)


class _ManagementServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: LocalWebSocketApi, host: str) -> None:
        super().__init__((host, 0), _ManagementHandler)
        self.api = api
