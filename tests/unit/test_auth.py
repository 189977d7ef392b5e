import pytest

from mysetlist.auth import Role, caller_from_claims, caller_from_event, parse_groups


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, []),
        (["admin", "user"], ["admin", "user"]),
        ("[admin user]", ["admin", "user"]),
        ("[moderator]", ["moderator"]),
        ('["admin","user"]', ["admin", "user"]),
        ("admin", ["admin"]),
        ("[]", []),
    ],
)
def test_groups_are_read_in_every_shape_api_gateway_passes_them(raw, expected):
    assert parse_groups(raw) == expected


def test_roles_come_from_groups_alone():
    caller = caller_from_claims(
        {"sub": "u1", "cognito:groups": "[moderator unknown]", "custom:role": "admin", "role": "admin"}
    )
    assert caller is not None
    assert caller.user_id == "u1"
    assert caller.roles == frozenset({Role.MODERATOR})
    assert not caller.has_any(Role.ADMIN)


def test_no_claims_or_no_subject_means_anonymous():
    assert caller_from_claims(None) is None
    assert caller_from_claims({"cognito:groups": "[admin]"}) is None
    assert caller_from_event({"requestContext": {}}) is None


def test_caller_from_an_http_api_event():
    event = {
        "requestContext": {
            "authorizer": {"jwt": {"claims": {"sub": "abc", "cognito:groups": "[admin]", "username": "ann"}}}
        }
    }
    caller = caller_from_event(event)
    assert caller is not None
    assert caller.roles == frozenset({Role.ADMIN})
    assert caller.username == "ann"
