import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mysetlist.errors import Unauthorized
from mysetlist.jwt_verify import JwtVerifier

ISSUER = "https://issuer.example/pool"
CLIENT = "client-1"


@pytest.fixture(scope="module")
def keypair():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def verifier(keypair):
    return JwtVerifier(ISSUER, [CLIENT], keys={"k1": keypair.public_key()})


def token(key, kid="k1", **overrides):
    now = int(time.time())
    claims = {
        "sub": "u1",
        "iss": ISSUER,
        "client_id": CLIENT,
        "iat": now,
        "exp": now + 600,
        "token_use": "access",
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def test_a_valid_access_token(verifier, keypair):
    claims = verifier.verify(f"Bearer {token(keypair)}")
    assert claims["sub"] == "u1"


def test_an_id_token_with_aud_is_accepted(verifier, keypair):
    assert verifier.verify(f"Bearer {token(keypair, client_id=None, aud=CLIENT)}")["sub"] == "u1"


def test_the_bare_token_is_accepted_as_api_gateway_does(verifier, keypair):
    assert verifier.verify(token(keypair))["sub"] == "u1"


@pytest.mark.parametrize(
    ("header", "reason"),
    [(None, "sign in"), ("", "sign in"), ("Basic abc", "Bearer"), ("Bearer not.a.jwt", "not valid")],
)
def test_missing_or_malformed(verifier, header, reason):
    with pytest.raises(Unauthorized, match=reason):
        verifier.verify(header)


def test_expired(verifier, keypair):
    past = int(time.time()) - 3600
    with pytest.raises(Unauthorized, match="expired"):
        verifier.verify(f"Bearer {token(keypair, iat=past - 600, exp=past)}")


def test_forged_with_another_key(verifier):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthorized, match="not valid"):
        verifier.verify(f"Bearer {token(other)}")


def test_unknown_key_id(verifier, keypair):
    with pytest.raises(Unauthorized, match="unknown"):
        verifier.verify(f"Bearer {token(keypair, kid='k2')}")


def test_wrong_issuer(verifier, keypair):
    with pytest.raises(Unauthorized, match="not valid"):
        verifier.verify(f"Bearer {token(keypair, iss='https://evil.example')}")


def test_wrong_audience(verifier, keypair):
    with pytest.raises(Unauthorized, match="another client"):
        verifier.verify(f"Bearer {token(keypair, client_id='someone-else')}")


def test_alg_none_is_refused(verifier):
    now = int(time.time())
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": "k1"}).encode()).decode().rstrip("=")
    body = {"sub": "u1", "iss": ISSUER, "client_id": CLIENT, "iat": now, "exp": now + 600}
    payload = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    unsigned = f"{header}.{payload}."
    with pytest.raises(Unauthorized):
        verifier.verify(f"Bearer {unsigned}")
