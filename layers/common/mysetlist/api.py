"""The HTTP edge shared by every API function: app factory, error mapping, caller dependencies.

Errors are mapped here and only here: a :class:`DomainError` becomes its status with a typed
body ``{"error": {"code", "message", "details"}}``; a validation error becomes 422 with the
failing fields; anything else becomes a 500 that says nothing internal (and is logged).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from mangum import Mangum
from pydantic import BaseModel, Field

from mysetlist.auth import Caller, Role, caller_from_event
from mysetlist.errors import DomainError, Forbidden, Unauthorized
from mysetlist.observability import HTTP_CORRELATION, entrypoint, logger

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
    500: "Something went wrong on our side",
    503: "A dependency is busy; retry shortly (nothing was changed)",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI response entries for error ``codes`` (all with :class:`ErrorBody`)."""
    return {code: {"model": ErrorBody, "description": _ERROR_TEXT[code]} for code in codes}


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
        headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(error_body(exc.code, exc.message, exc.details), exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"), "problem": err.get("msg")}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{p['field'] or 'body'}: {p['problem']}" for p in problems)
        return JSONResponse(error_body("validation_error", summary, {"fields": problems}), 422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", extra={"error_type": type(exc).__name__})
        return JSONResponse(error_body("internal_error", "something went wrong on our side; try again"), 500)

    return app


def lambda_handler(app: FastAPI) -> LambdaHandler:
    """Mangum around ``app`` (built once per container), with the platform's observability."""
    asgi = Mangum(app, lifespan="off", api_gateway_base_path="/")

    @entrypoint(correlation_id_path=HTTP_CORRELATION)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return asgi(event, context)

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
