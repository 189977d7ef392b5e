"""The caller, read from the claims the HTTP API's JWT authorizer has already verified.

API Gateway checks the token (signature, issuer, audience, expiry) before the function runs and
puts its claims in ``requestContext.authorizer.jwt.claims``. Roles come from Cognito groups
alone (``cognito:groups``); nothing in a query string or body can change who the caller is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    USER = "user"
    MODERATOR = "moderator"
    CONTENT_MANAGER = "content_manager"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Caller:
    """A signed-in caller: the token's subject and the roles its groups grant."""

    user_id: str
    roles: frozenset[Role]
    username: str | None = None

    def has_any(self, *roles: Role) -> bool:
        return not self.roles.isdisjoint(roles)


def parse_groups(raw: Any) -> list[str]:
    """Cognito groups as API Gateway passes them: a JSON list, or a string such as '[admin user]'."""
    if raw is None:
        return []
    if isinstance(raw, list | tuple):
        return [str(g) for g in raw]
    text = str(raw).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [g.strip().strip('"') for g in text.replace(",", " ").split() if g.strip().strip('"')]


def caller_from_claims(claims: Mapping[str, Any] | None) -> Caller | None:
    """The caller for verified claims, or None when the request carries no token."""
    if not claims or not claims.get("sub"):
        return None
    known = {r.value for r in Role}
    roles = frozenset(Role(g) for g in parse_groups(claims.get("cognito:groups")) if g in known)
    username = claims.get("cognito:username") or claims.get("username")
    return Caller(user_id=str(claims["sub"]), roles=roles, username=str(username) if username else None)


def caller_from_event(event: Mapping[str, Any]) -> Caller | None:
    """The caller of an API Gateway HTTP API (payload 2.0) event, if the request was signed."""
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    claims = (authorizer.get("jwt") or {}).get("claims")
    return caller_from_claims(claims)
