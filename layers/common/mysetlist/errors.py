"""Domain errors. Handlers map them to HTTP status codes in one place (:mod:`mysetlist.api`)."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error the domain raises on purpose; ``status`` is the HTTP mapping."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidRequest(DomainError):
    status = 400
    code = "invalid_request"


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class Unprocessable(DomainError):
    """The request is well formed but breaks a business rule (for example voting on a past show)."""

    status = 422
    code = "unprocessable"


class Unavailable(DomainError):
    """A dependency is throttled or down; the client may retry later. Nothing was changed."""

    status = 503
    code = "unavailable"
