"""JWT verification as API Gateway's JWT authorizer does it: signature (RS256, keys from the
issuer's JWKS), issuer, audience (``aud``, or ``client_id`` for Cognito access tokens), expiry.

Protected routes are verified by API Gateway before the function runs. This module serves the
two places that must verify a token themselves: anonymous routes that personalise their answer
when a token is sent (``GET /api/votes``), and the local stack's gateway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mysetlist.errors import Unauthorized

if TYPE_CHECKING:
    import jwt

_LEEWAY_SECONDS = 5


class JwtVerifier:
    """Verifies bearer tokens for one issuer. Keys are fetched once and cached per container.

    PyJWT and cryptography are imported with the first token, not at cold start: most requests
    to an anonymous route carry none.
    """

    def __init__(
        self,
        issuer: str,
        audiences: Sequence[str],
        *,
        jwks_url: str | None = None,
        keys: Mapping[str, Any] | None = None,
    ) -> None:
        if not issuer or not audiences:
            raise ValueError("a JWT verifier needs an issuer and at least one audience")
        self.issuer = issuer.rstrip("/")
        self.audiences = frozenset(audiences)
        self._static_keys = dict(keys or {})
        self._jwks_url = jwks_url or f"{self.issuer}/.well-known/jwks.json"
        self._jwks: jwt.PyJWKClient | None = None

    def verify(self, authorization: str | None) -> dict[str, Any]:
        """Claims of a valid ``Bearer`` token; :class:`Unauthorized` with the reason otherwise."""
        token = _bearer(authorization)
        import jwt  # noqa: PLC0415 - deferred: see the class docstring

        try:
            key = self._signing_key(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                issuer=self.issuer,
                leeway=_LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "sub"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the token has expired: sign in again") from exc
        except jwt.PyJWKClientError as exc:
            raise Unauthorized("the token's signing key is unknown") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"the token is not valid: {exc}") from exc
        audience = claims.get("aud", claims.get("client_id"))
        audience_values = set(audience) if isinstance(audience, list) else {audience}
        if self.audiences.isdisjoint(audience_values):
            raise Unauthorized("the token was issued for another client")
        return claims

    def _signing_key(self, token: str) -> Any:
        import jwt  # noqa: PLC0415 - deferred: see the class docstring

        if not self._static_keys:
            if self._jwks is None:
                self._jwks = jwt.PyJWKClient(self._jwks_url, cache_keys=True, lifespan=3600, timeout=3)
            return self._jwks.get_signing_key_from_jwt(token).key
        kid = jwt.get_unverified_header(token).get("kid")
        if kid not in self._static_keys:
            raise Unauthorized("the token's signing key is unknown")
        return self._static_keys[kid]


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("sign in: this route needs an 'Authorization: Bearer <token>' header")
    scheme, _, token = authorization.strip().partition(" ")
    if not token:
        # API Gateway's JWT authorizer also accepts the bare token.
        scheme, token = "bearer", scheme
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()
