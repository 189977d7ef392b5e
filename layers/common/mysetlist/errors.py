"""Domain errors. Handlers map them to HTTP status codes in one place (:mod:`mysetlist.api`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


class DomainError(Exception):
    """Base of every error the domain raises on purpose; ``status`` is the HTTP mapping."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    @property
    def headers(self) -> Mapping[str, str]:
        """HTTP headers the response must carry (none for most errors)."""
        return {}


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
    """A dependency is throttled or down; the client may retry later. ``details.outcome`` says
    whether anything may have changed. With ``details.retry_after_seconds`` (an open circuit)
    the response carries ``Retry-After``."""

    status = 503
    code = "unavailable"

    @property
    def headers(self) -> Mapping[str, str]:
        seconds = self.details.get("retry_after_seconds")
        return {"retry-after": str(seconds)} if seconds else {}


class TooManyRequests(DomainError):
    """The caller is over a rate-limit budget. Nothing was done; retry after ``retry_after``.

    ``headers`` carry ``Retry-After`` (whole seconds, rounded up, at least 1) and the
    ``RateLimit-*`` fields of the IETF draft (limit, remaining, reset in seconds, and the policy).
    """

    status = 429
    code = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        limit: int,
        period_seconds: int,
        reset_after: float,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.retry_after_seconds = max(1, math.ceil(retry_after))
        self.limit = limit
        self.period_seconds = period_seconds
        self.reset_seconds = max(self.retry_after_seconds, math.ceil(reset_after))
        super().__init__(
            message, details={**(details or {}), "retry_after_seconds": self.retry_after_seconds}
        )

    @property
    def headers(self) -> Mapping[str, str]:
        return {
            "retry-after": str(self.retry_after_seconds),
            "ratelimit-limit": str(self.limit),
            "ratelimit-remaining": "0",
            "ratelimit-reset": str(self.reset_seconds),
            "ratelimit-policy": f"{self.limit};w={self.period_seconds}",
        }
