"""Auth at the edge over HTTP: the gateway's JWT authorizer (401), the functions' role checks
(403), tokens sent to anonymous routes, API Gateway's own 404, and CORS preflight."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.conftest import LocalStackProcess

pytestmark = pytest.mark.e2e

SETLIST = {"sets": [{"name": "Set 1", "songs": ["Bertha", "Dark Star"]}]}


def _forged(stack: LocalStackProcess) -> str:
    """A token with the stack's key id and believable claims, signed by another key."""
    claims = jwt.decode(stack.token("mallory", ["admin"]), options={"verify_signature": False})
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, other, algorithm="RS256", headers={"kid": stack.key.kid})


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/api/votes"), ("PUT", "/api/shows/grateful-dead:1977-05-08/setlist")]
)
def test_protected_routes_refuse_missing_forged_and_expired_tokens(
    stack: LocalStackProcess, method: str, path: str
) -> None:
    expired = stack.token("alice", ["admin"], lifetime_seconds=-300)
    for headers in (
        {},
        {"Authorization": f"Bearer {_forged(stack)}"},
        {"Authorization": f"Bearer {expired}"},
    ):
        response = stack.request(method, path, headers=headers, json={})
        assert response.status_code == 401, (headers, response.text)
        assert response.json() == {"message": "Unauthorized"}


def test_a_plain_user_may_not_record_a_setlist(stack: LocalStackProcess) -> None:
    response = stack.request(
        "PUT",
        "/api/shows/grateful-dead:1965-05-26/setlist",
        headers=stack.auth("alice", ["user"]),
        json=SETLIST,
    )
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "forbidden"


def test_a_forged_token_on_an_anonymous_route_is_refused_by_the_function(stack: LocalStackProcess) -> None:
    show_id = "grateful-dead:1977-05-08"
    anonymous = stack.get("/api/votes", params={"show_id": show_id})
    assert anonymous.status_code == 200, anonymous.text
    assert anonymous.json()["my_votes"] is None
    signed_in = stack.get("/api/votes", params={"show_id": show_id}, headers=stack.auth("alice"))
    assert signed_in.status_code == 200, signed_in.text  # verified through the gateway's JWKS
    assert signed_in.json()["my_votes"] == {}
    forged = stack.get(
        "/api/votes", params={"show_id": show_id}, headers={"Authorization": f"Bearer {_forged(stack)}"}
    )
    assert forged.status_code == 401
    assert forged.json()["error"]["code"] == "unauthorized"


def test_undeclared_routes_get_api_gateways_404(stack: LocalStackProcess) -> None:
    for method, path in (("GET", "/api/nothing"), ("DELETE", "/api/votes"), ("GET", "/")):
        response = stack.request(method, path)
        assert response.status_code == 404
        assert response.json() == {"message": "Not Found"}


def test_cors_preflight_follows_the_templates_configuration(stack: LocalStackProcess) -> None:
    origin = "http://localhost:5173"  # the template's WebClientOrigin default
    response = stack.request(
        "OPTIONS",
        "/api/votes",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == origin
    assert "POST" in response.headers["access-control-allow-methods"].split(",")
    assert {"authorization", "content-type"} <= set(
        response.headers["access-control-allow-headers"].split(",")
    )
    assert response.headers["access-control-max-age"] == "600"
    actual = stack.get("/api/artists", headers={"Origin": origin})
    assert actual.headers["access-control-allow-origin"] == origin
    stranger = stack.request(
        "OPTIONS",
        "/api/votes",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in stranger.headers
