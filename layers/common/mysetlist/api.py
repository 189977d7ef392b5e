"""The HTTP edge shared by every API function: app factory, error mapping, caller dependencies.

Errors are mapped here and only here: a :class:`DomainError` becomes its status with a typed
body ``{"error": {"code", "message", "details"}}`` (and its headers: ``Retry-After`` on a 429);
a validation error becomes 422 with the failing fields; anything else becomes a 500 that says
nothing internal (and is logged).

Rate limits: every route declares a budget with :func:`rate_limited` (see
:mod:`mysetlist.ratelimit`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from mangum import Mangum
from mangum.adapter import DEFAULT_TEXT_MIME_TYPES
from pydantic import BaseModel, Field

from mysetlist.auth import Caller, Role, caller_from_claims, caller_from_event
from mysetlist.breaker import CircuitOpenError
from mysetlist.cache import publish_metrics as publish_cache_metrics
from mysetlist.dynamo import unavailable_for_open_circuit
from mysetlist.errors import DomainError, Forbidden, Unauthorized
from mysetlist.jwt_verify import JwtVerifier
from mysetlist.observability import HTTP_CORRELATION, entrypoint, logger
from mysetlist.ratelimit import Decision, Scope, shared_limiter, subject_for

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. not_found, validation_error")
    message: str = Field(description="What was wrong, in words a client developer can act on")
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """The body of every error this API answers (API Gateway's own 401 is {"message": ...})."""

    error: ErrorDetail


_ERROR_TEXT = {
    400: "The request is malformed (for example a cursor from another list)",
    401: "No valid token: sign in",
    403: "The caller's groups do not allow this",
    404: "No such resource",
    409: "A concurrent change won; retry",
    422: "A field is invalid or a business rule refuses the request",
    429: "Over the route's rate limit: retry after Retry-After seconds (nothing was changed)",
    500: "Something went wrong on our side",
    503: "A dependency is busy; retry shortly (nothing was changed)",
}


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "integer", "minimum": 0}}


# The headers of a 429 (declared in the OpenAPI documents).
_RATE_LIMIT_HEADERS = {
    "Retry-After": _header("Seconds to wait before retrying (at least 1)"),
    "RateLimit-Limit": _header("Requests the budget allows per period"),
    "RateLimit-Remaining": _header("Requests left now (0 on a 429)"),
    "RateLimit-Reset": _header("Seconds until the budget is whole again"),
    "RateLimit-Policy": {
        "description": "The budget as '<limit>;w=<period seconds>' (IETF draft)",
        "schema": {"type": "string"},
    },
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI response entries for error ``codes`` (all with :class:`ErrorBody`)."""
    entries: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entries[code] = {"model": ErrorBody, "description": _ERROR_TEXT[code]}
        if code == 429:
            entries[code]["headers"] = _RATE_LIMIT_HEADERS
    return entries


bearer = HTTPBearer(auto_error=False, description="A Cognito access token: Authorization: Bearer <token>")


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": dict(details or {})}}


def create_app(title: str, description: str = "") -> FastAPI:
    """A FastAPI app with the platform's error handlers. Docs pages are off in Lambda."""
    app = FastAPI(
        title=title,
        description=description,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        responses=errors(422, 500, 503),
    )

    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> JSONResponse:
        headers = dict(exc.headers)
        if exc.status == 401:
            headers.setdefault("www-authenticate", "Bearer")
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details), exc.status, headers=headers or None
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"), "problem": err.get("msg")}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{p['field'] or 'body'}: {p['problem']}" for p in problems)
        return JSONResponse(error_body("validation_error", summary, {"fields": problems}), 422)

    @app.exception_handler(CircuitOpenError)
    async def _circuit_open(_: Request, exc: CircuitOpenError) -> JSONResponse:
        # A store that does not translate it itself: the dependency was not called.
        error = unavailable_for_open_circuit(exc, "a service this request needs")
        return JSONResponse(
            error_body(error.code, error.message, error.details), 503, headers=dict(error.headers)
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", extra={"error_type": type(exc).__name__})
        return JSONResponse(error_body("internal_error", "something went wrong on our side; try again"), 500)

    return app


def lambda_handler(app: FastAPI) -> LambdaHandler:
    """Mangum around ``app`` (built once per container), with the platform's observability."""
    # "+json": structured JSON types (application/health+json) go out as text, not base64.
    asgi = Mangum(
        app, lifespan="off", api_gateway_base_path="/", text_mime_types=[*DEFAULT_TEXT_MIME_TYPES, "+json"]
    )

    @entrypoint(correlation_id_path=HTTP_CORRELATION)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            return asgi(event, context)
        finally:
            publish_cache_metrics()  # hits, misses, loads of this invocation, with its other metrics

    return handler


def event_of(request: Request) -> Mapping[str, Any]:
    """The API Gateway event behind a request (Mangum puts it in the ASGI scope)."""
    return request.scope.get("aws.event") or {}


async def optional_caller(request: Request) -> Caller | None:
    """The caller when the gateway's JWT authorizer verified a token, else None."""
    return caller_from_event(event_of(request))


async def current_caller(
    request: Request, _token: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None
) -> Caller:
    """The signed-in caller; 401 when the request carries no verified token.

    API Gateway's JWT authorizer has verified the token (``_token`` only declares the scheme in
    the OpenAPI document); the identity comes from the claims it passes on, never the request.
    """
    caller = caller_from_event(event_of(request))
    if caller is None:
        raise Unauthorized("sign in: this route needs an 'Authorization: Bearer <token>' header")
    return caller


def token_caller(verifier: JwtVerifier) -> Callable[..., Awaitable[Caller | None]]:
    """A dependency for routes that are anonymous at the gateway but personalised when a token is
    sent: the token is verified here, as the JWT authorizer would. A header that is not a valid
    bearer token is a 401, never silently anonymous."""

    async def dependency(
        request: Request, _token: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None
    ) -> Caller | None:
        authorization = request.headers.get("authorization")
        if authorization is None:
            return None
        return caller_from_claims(verifier.verify(authorization))

    return dependency


def require_roles(*roles: Role) -> Callable[[Request], Awaitable[Caller]]:
    """A dependency that lets through signed-in callers holding any of ``roles``."""
    names = ", ".join(r.value for r in roles)

    async def dependency(
        request: Request, _token: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None
    ) -> Caller:
        caller = await current_caller(request)
        if not caller.has_any(*roles):
            raise Forbidden(f"this action needs one of these roles: {names}")
        return caller

    return dependency


def source_ip(request: Request) -> str | None:
    """The client address API Gateway saw (``requestContext.http.sourceIp``): the TCP peer, not
    a header a client can write (``X-Forwarded-For`` is never trusted)."""
    http = (event_of(request).get("requestContext") or {}).get("http") or {}
    found = http.get("sourceIp")
    if found:
        return str(found)
    return request.client.host if request.client else None


Identity = Callable[..., Awaitable[Caller | None]]


def charge_budget(budget: str, request: Request, response: Response, caller: Caller | None) -> Decision:
    """Charge one request to ``budget`` (the caller for a user budget, else the client address):
    429 over budget, else the ``RateLimit-*`` headers on the response. For routes whose budget
    depends on what the request asks for (one path serving anonymous and management calls);
    the others declare :func:`rate_limited` in their decorator."""
    limiter = shared_limiter()
    spec = limiter.budget(budget)
    user_id = caller.user_id if caller is not None and spec.scope is Scope.USER else None
    decision = limiter.check(budget, subject_for(spec, user_id, source_ip(request)))
    if not decision.allowed:
        raise decision.refusal()
    response.headers.update(decision.headers())
    return decision


def rate_limited(budget: str, identity: Identity | None = None) -> Callable[..., Awaitable[Decision]]:
    """A dependency that charges the request to rate-limit ``budget``.

    Over budget it raises :class:`~mysetlist.errors.TooManyRequests` (429 with ``Retry-After``
    and the ``RateLimit-*`` headers); within budget it sets the ``RateLimit-*`` headers on the
    response. Declare it in the route decorator (``dependencies=[Depends(rate_limited(...))]``)
    so it runs before the route's parameters are validated: a refused request does nothing.

    A user budget counts the verified caller (``identity``, the route's auth dependency, runs
    first, so a 401 or 403 costs no budget; without it, the claims the gateway verified); an
    anonymous caller is counted by client address. An address budget needs no identity and is
    charged before anything else, a bad token included. An unknown ``budget``, or bad
    ``RATE_LIMIT_OVERRIDES``, fails here, at import: at cold start.
    """
    shared_limiter().budget(budget)

    async def charge(request: Request, response: Response, caller: Caller | None) -> Decision:
        return charge_budget(budget, request, response, caller)

    if identity is None:

        async def by_claims(request: Request, response: Response) -> Decision:
            return await charge(request, response, caller_from_event(event_of(request)))

        return by_claims

    # The annotation is a string under ``from __future__ import annotations`` and ``identity``
    # is a closure variable FastAPI could not resolve from one: give it the real object.
    async def by_identity(request: Request, response: Response, caller: Caller | None) -> Decision:
        return await charge(request, response, caller)

    by_identity.__annotations__["caller"] = Annotated[Caller | None, Depends(identity)]
    return by_identity
