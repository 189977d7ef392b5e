"""The local stack's token issuer: a stand-in for the Cognito user pool.

Tokens mimic Cognito *access* tokens (``sub``, ``cognito:groups``, ``client_id``,
``token_use: access``, ``scope``, ``username``, ``iss``, ``iat``, ``exp`` one hour later) and
also carry ``aud``, so a check of either ``aud`` or ``client_id`` accepts them, as API Gateway's
JWT authorizer does. Locally the user id you pass is the ``sub`` verbatim (Cognito uses a UUID).

Fixed values, documented here because tools and tests depend on them:

- issuer: ``http://127.0.0.1:<PORT>/local-issuer`` (``PORT`` is the gateway's port; the gateway
  serves the key set at ``<issuer>/.well-known/jwks.json``, where the VotesApi fetches it);
- audience / app client id: ``mysetlist-local-web``;
- signing key: RS256, generated once per checkout into ``.local/keys/`` (git-ignored) and reused,
  so a token minted before the stack starts is valid once it runs.

Print a token: ``python -m tests.local_stack.tokens --user alice --role moderator [--port 3000]``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.template import REPO_ROOT

ISSUER_PATH = "/local-issuer"
JWKS_PATH = f"{ISSUER_PATH}/.well-known/jwks.json"
AUDIENCE = "mysetlist-local-web"
DEFAULT_PORT = 3000
TOKEN_LIFETIME_SECONDS = 3600
KEYS_DIR = REPO_ROOT / ".local" / "keys"
KEY_FILE_NAME = "local-issuer-rsa.pem"
GROUPS = ("user", "moderator", "content_manager", "admin")


def issuer_for(port: int) -> str:
    """The local issuer URL of a gateway listening on ``port``."""
    return f"http://127.0.0.1:{port}{ISSUER_PATH}"


@dataclass(frozen=True)
class SigningKey:
    """The local issuer's RSA key; ``kid`` is its RFC 7638 thumbprint (stable across runs)."""

    private_key: rsa.RSAPrivateKey

    @cached_property
    def public_jwk(self) -> dict[str, Any]:
        numbers = self.private_key.public_key().public_numbers()
        jwk = {"kty": "RSA", "e": _b64_uint(numbers.e), "n": _b64_uint(numbers.n)}
        canonical = json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()
        kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
        return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}

    @property
    def kid(self) -> str:
        return str(self.public_jwk["kid"])

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set the gateway serves (public key only)."""
        return {"keys": [self.public_jwk]}

    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()


def _b64_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def load_or_create_key(keys_dir: Path = KEYS_DIR) -> SigningKey:
    """The checkout's signing key, generated on first use.

    Creation is atomic (write a temporary file, then hard-link it into place), so two stacks
    starting at once agree on one key.
    """
    path = keys_dir / KEY_FILE_NAME
    if not path.exists():
        keys_dir.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd, tmp_name = tempfile.mkstemp(dir=keys_dir, prefix=".key-")
        try:
            os.write(fd, pem)
            os.close(fd)
            os.chmod(tmp_name, 0o600)
            with contextlib.suppress(FileExistsError):  # another process won the race: use its key
                os.link(tmp_name, path)
        finally:
            os.unlink(tmp_name)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"{path} is not an RSA private key")
    return SigningKey(loaded)


def mint_token(
    key: SigningKey,
    *,
    issuer: str,
    user_id: str,
    groups: Sequence[str] = ("user",),
    audience: str = AUDIENCE,
    lifetime_seconds: int = TOKEN_LIFETIME_SECONDS,
    now: float | None = None,
    username: str | None = None,
) -> str:
    """A signed access token for ``user_id`` in ``groups``. A negative lifetime gives an expired
    token (useful to test the 401)."""
    issued_at = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": user_id,
        "cognito:groups": list(groups),
        "iss": issuer,
        "client_id": audience,
        "aud": audience,
        "token_use": "access",
        "scope": "aws.cognito.signin.user.admin",
        "auth_time": issued_at,
        "iat": issued_at,
        "exp": issued_at + lifetime_seconds,
        "jti": str(uuid.uuid4()),
        "username": username or user_id,
    }
    return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})


def _parse_groups(values: Sequence[str]) -> list[str]:
    groups = [g.strip() for value in values for g in value.split(",") if g.strip()]
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown group(s) {', '.join(unknown)}; known: {', '.join(GROUPS)}")
    return list(dict.fromkeys(groups)) or ["user"]


def main(argv: Sequence[str] | None = None) -> int:
    """Print a token for the local stack on ``--port`` (default ``$PORT`` or 3000)."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.local_stack.tokens", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--user", required=True, help="the user id (the token's sub)")
    parser.add_argument(
        "--role",
        action="append",
        default=[],
        help=f"group(s), comma-separated or repeated: {', '.join(GROUPS)}",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or DEFAULT_PORT))
    parser.add_argument("--lifetime", type=int, default=TOKEN_LIFETIME_SECONDS, help="seconds until expiry")
    args = parser.parse_args(argv)
    if not args.user.strip():
        parser.error("--user must not be empty")
    try:
        groups = _parse_groups(args.role)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    token = mint_token(
        load_or_create_key(),
        issuer=issuer_for(args.port),
        user_id=args.user.strip(),
        groups=groups,
        lifetime_seconds=args.lifetime,
    )
    sys.stdout.write(token + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
