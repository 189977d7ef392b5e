"""The health API over HTTP on the local stack: the anonymous status (from the scheduled
HealthCheck's record), the admin's detailed view and actions, and the role checks."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import LocalStackProcess, _poll

pytestmark = pytest.mark.e2e

ROUTE = "/api/monitoring/health"
SERVICES = {"dynamodb", "valkey", "s3", "sns", "ses"}


@pytest.fixture(scope="module")
def checked(stack: LocalStackProcess) -> LocalStackProcess:
    """The stack once its HealthCheck has run (fired now rather than waiting for its minute)."""
    fired = stack.request("POST", "/__local/schedules/run", params={"event": "HealthCheck.EveryMinute"})
    assert fired.status_code == 200, fired.text

    def recorded() -> bool:
        response = stack.get(ROUTE, params={"detailed": "true"}, headers=stack.auth("ops", ["admin"]))
        return response.status_code in (200, 503) and response.json().get("lastCheckAt") is not None

    _poll(recorded, timeout=30, what="a recorded health check")
    return stack


def test_anonymous_callers_get_only_the_status(checked: LocalStackProcess) -> None:
    response = checked.get(ROUTE)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/health+json"
    assert response.json() in ({"status": "pass"}, {"status": "warn"})


def test_an_admin_sees_every_dependency(checked: LocalStackProcess) -> None:
    response = checked.get(ROUTE, params={"detailed": "true"}, headers=checked.auth("ops", ["admin"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] in ("pass", "warn")
    assert set(body["checks"]) == {f"{s}:responseTime" for s in SERVICES}
    for service in SERVICES:
        [check] = body["checks"][f"{service}:responseTime"]
        assert check["status"] in ("pass", "warn"), check
        assert body["uptime"][service]["24h"]["observed_minutes"] >= 1
    assert body["cache"]["l2"]["configured"] is True  # the stack runs a private Valkey
    assert body["breakers"]["dynamodb"]["state"] == "closed"


def test_one_dependency_and_an_action(checked: LocalStackProcess) -> None:
    admin = checked.auth("ops", ["admin"])
    one = checked.get(ROUTE, params={"service": "valkey"}, headers=admin)
    assert one.status_code == 200, one.text
    assert list(one.json()["checks"]) == ["valkey:responseTime"]
    action = checked.request(
        "POST", ROUTE, headers=admin, json={"action": "check_service", "service": "dynamodb"}
    )
    assert action.status_code == 200, action.text
    assert action.json()["result"]["service"] == "dynamodb"
    assert action.json()["result"]["status"] in ("pass", "warn")


def test_the_detail_and_the_actions_are_for_admins_only(checked: LocalStackProcess) -> None:
    fan = checked.auth("alice", ["user"])
    assert checked.get(ROUTE, params={"detailed": "true"}).status_code == 401
    refused = checked.get(ROUTE, params={"detailed": "true"}, headers=fan)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "forbidden"
    assert (
        checked.request("POST", ROUTE, json={"action": "run_diagnostics"}).status_code == 401
    )  # the gateway
    posted = checked.request("POST", ROUTE, headers=fan, json={"action": "run_diagnostics"})
    assert posted.status_code == 403, posted.text
