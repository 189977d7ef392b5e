"""The local issuer (stable key, Cognito-like access tokens) and the in-process Lambda runtime."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from mysetlist.auth import Role, caller_from_claims
from mysetlist.errors import Unauthorized
from mysetlist.jwt_verify import JwtVerifier
from tests.local_stack import tokens
from tests.local_stack.runtime import FunctionContainer, ResponseNotSerializable


def test_the_signing_key_is_created_once_and_reused(tmp_path: Path) -> None:
    first = tokens.load_or_create_key(tmp_path)
    second = tokens.load_or_create_key(tmp_path)
    assert first.kid == second.kid
    assert (tmp_path / tokens.KEY_FILE_NAME).stat().st_mode & 0o777 == 0o600
    assert list(tmp_path.iterdir()) == [tmp_path / tokens.KEY_FILE_NAME]  # no temporary files left


def test_tokens_look_like_cognito_access_tokens_and_verify(tmp_path: Path) -> None:
    key = tokens.load_or_create_key(tmp_path)
    issuer = tokens.issuer_for(3001)
    token = tokens.mint_token(
        key, issuer=issuer, user_id="bob", groups=["moderator", "user"], now=time.time()
    )
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == ("RS256", key.kid)
    claims = JwtVerifier(issuer, [tokens.AUDIENCE], keys={key.kid: key.public_key()}).verify(
        f"Bearer {token}"
    )
    assert claims["sub"] == "bob"
    assert claims["cognito:groups"] == ["moderator", "user"]
    assert (claims["token_use"], claims["client_id"], claims["aud"]) == (
        "access",
        tokens.AUDIENCE,
        tokens.AUDIENCE,
    )
    assert claims["exp"] - claims["iat"] == 3600
    caller = caller_from_claims(claims)
    assert caller is not None
    assert caller.roles == {Role.MODERATOR, Role.USER}


def test_expired_tokens_are_refused(tmp_path: Path) -> None:
    key = tokens.load_or_create_key(tmp_path)
    issuer = tokens.issuer_for(3001)
    token = tokens.mint_token(key, issuer=issuer, user_id="bob", lifetime_seconds=-60)
    with pytest.raises(Unauthorized, match="expired"):
        JwtVerifier(issuer, [tokens.AUDIENCE], keys={key.kid: key.public_key()}).verify(f"Bearer {token}")


def test_the_cli_prints_a_token_for_the_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert tokens.main(["--user", "carol", "--role", "admin", "--port", "3999"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "http://127.0.0.1:3999/local-issuer"
    assert claims["cognito:groups"] == ["admin"]
    with pytest.raises(SystemExit):
        tokens.main(["--user", "carol", "--role", "superuser"])


def _container(handler: Any, timeout: int = 3) -> FunctionContainer:
    return FunctionContainer(
        "Fn",
        handler,
        function_name="fn",
        timeout_seconds=timeout,
        memory_mb=128,
        region="us-east-1",
        account_id="1",
    )


def test_the_container_runs_handlers_with_an_event_loop_and_a_context() -> None:
    seen: dict[str, Any] = {}

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen["loop"] = asyncio.get_event_loop()
        seen["remaining"] = context.get_remaining_time_in_millis()
        event["mutated"] = True
        return {"arn": context.invoked_function_arn, "memory": context.memory_limit_in_mb}

    container = _container(handler)
    event = {"a": 1}
    try:
        assert container.invoke(event) == {"arn": "arn:aws:lambda:us-east-1:1:function:fn", "memory": 128}
    finally:
        container.close()
    assert event == {"a": 1}  # the handler got a copy, as from Lambda's JSON
    assert 0 < seen["remaining"] <= 3000
    assert seen["loop"] is not None


def test_the_container_raises_function_errors_and_unserialisable_results() -> None:
    def boom(event: dict[str, Any], context: Any) -> None:
        raise ValueError("boom")

    failing = _container(boom)
    odd = _container(lambda event, context: {"when": object()})
    try:
        with pytest.raises(ValueError, match="boom"):
            failing.invoke({})
        with pytest.raises(ResponseNotSerializable):
            odd.invoke({})
    finally:
        failing.close()
        odd.close()
