"""HealthApi in-process: the anonymous status, the admin views, and every POST action."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest

from mysetlist.alerts import (
    AlertIn,
    CheckResult,
    HealthStatus,
    HealthSummary,
    PlatformStore,
    Severity,
    floor_minute,
)
from mysetlist.breaker import BreakerState, Dependency, breaker_for
from mysetlist.cache import shared_cache
from mysetlist.health import SERVICES
from tests.harness.events import LambdaContext, call_http, claims_for, http_event, load_event
from tests.integration.conftest import Issuer

ROUTE = "/api/monitoring/health"


def now_minute() -> dt.datetime:
    return floor_minute(dt.datetime.now(dt.UTC))


def run_health_check(health_check: Any, at: dt.datetime) -> dict[str, Any]:
    event = load_event("health_check/scheduled.json")
    event["scheduled_time"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    result: dict[str, Any] = health_check(event, LambdaContext())
    return result


def invoke(handler: Any, event: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
    """Status, decoded body and headers (Mangum base64-encodes media types it does not know as
    text; API Gateway decodes them for the client)."""
    response = handler(event, LambdaContext())
    raw = response.get("body") or ""
    if response.get("isBase64Encoded"):
        raw = base64.b64decode(raw).decode()
    return (
        int(response["statusCode"]),
        json.loads(raw) if raw else None,
        {k.lower(): v for k, v in response["headers"].items()},
    )


def get(
    handler: Any, query: dict[str, str] | None = None, token: str | None = None
) -> tuple[int, Any, dict[str, str]]:
    headers = {"authorization": f"Bearer {token}"} if token else None
    return invoke(handler, http_event(f"GET {ROUTE}", query=query, headers=headers))


def post(handler: Any, body: Any, *groups: str, user: str = "ops-1") -> tuple[int, Any]:
    claims = claims_for(user, *groups) if groups else None
    raw = body if isinstance(body, str) else None
    event = http_event(f"POST {ROUTE}", body=None if raw else body, raw_body=raw, claims=claims)
    return call_http(handler, event)


def summary_with(status: HealthStatus, observed_at: dt.datetime) -> HealthSummary:
    checks = {
        name: CheckResult(
            service=name,
            status=HealthStatus.FAIL
            if status is HealthStatus.FAIL and name == "dynamodb"
            else HealthStatus.PASS,
            latency_ms=3.0,
            breaker_state="closed",
            observed_at=observed_at,
            error="ResourceNotFoundException: table gone"
            if status is HealthStatus.FAIL and name == "dynamodb"
            else None,
        )
        for name in SERVICES
    }
    return HealthSummary(status=status, observed_at=observed_at, checks=checks)


# ------------------------------------------------------------------ anonymous


def test_anonymous_callers_get_only_the_status_from_the_last_check(
    health_api: Any, health_check: Any, platform: PlatformStore
) -> None:
    status, body, headers = get(health_api)
    assert (status, body) == (200, {"status": "warn"})  # nothing recorded yet: cannot vouch for it
    assert headers["content-type"] == "application/health+json"
    assert headers["cache-control"] == "no-store"
    assert "ratelimit-limit" in headers

    run_health_check(health_check, now_minute())
    status, body, _ = invoke(health_api, load_event("health_api/status.json"))
    assert status == 200
    assert list(body) == ["status"]
    assert body["status"] in ("pass", "warn")


def test_a_failing_critical_dependency_is_a_503_and_a_stale_check_a_warn(
    health_api: Any, platform: PlatformStore
) -> None:
    now = dt.datetime.now(dt.UTC)
    platform.record_health([], summary_with(HealthStatus.FAIL, now), now)
    assert get(health_api)[:2] == (503, {"status": "fail"})

    platform.record_health([], summary_with(HealthStatus.PASS, now), now)
    assert get(health_api)[:2] == (200, {"status": "pass"})

    old = now - dt.timedelta(minutes=10)
    platform.record_health([], summary_with(HealthStatus.PASS, old), old)
    assert get(health_api)[:2] == (200, {"status": "warn"})


def test_an_open_circuit_in_this_container_shows_in_the_status(
    health_api: Any, platform: PlatformStore
) -> None:
    now = dt.datetime.now(dt.UTC)
    platform.record_health([], summary_with(HealthStatus.PASS, now), now)
    breaker_for(Dependency.SES).force_open(30)
    assert get(health_api)[:2] == (200, {"status": "warn"})
    breaker_for(Dependency.SES).reset()
    assert get(health_api)[:2] == (200, {"status": "pass"})


def test_a_bad_token_on_the_anonymous_route_is_a_401(health_api: Any, platform: PlatformStore) -> None:
    status, body, _ = get(health_api, token="not-a-jwt")
    assert status == 401
    assert body["error"]["code"] == "unauthorized"


# ------------------------------------------------------------------ admin views


@pytest.mark.parametrize("query", [{"detailed": "true"}, {"service": "valkey"}, {"service": "nope"}])
def test_the_detailed_views_need_an_admin(
    health_api: Any, platform: PlatformStore, issuer: Issuer, query: dict[str, str]
) -> None:
    status, body, _ = get(health_api, query)
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    status, body, _ = get(health_api, query, token=issuer.token("fan-1", "user", "moderator"))
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert "admin" in body["error"]["message"]


def test_the_detailed_view_has_every_section(
    health_api: Any, health_check: Any, platform: PlatformStore, issuer: Issuer
) -> None:
    start = now_minute() - dt.timedelta(minutes=3)
    for n in range(3):
        run_health_check(health_check, start + dt.timedelta(minutes=n))
    platform.raise_alert(
        AlertIn(type="vote_fraud", entity="show:gd-1", severity=Severity.WARNING, summary="burst of votes"),
        dt.datetime.now(dt.UTC),
    )
    event = load_event("health_api/detailed.json")
    event["headers"]["authorization"] = f"Bearer {issuer.token('ops-1', 'admin')}"
    status, body, headers = invoke(health_api, event)
    assert status == 200
    assert headers["content-type"] == "application/health+json"
    assert body["status"] in ("pass", "warn")
    assert set(body["checks"]) == {f"{s}:responseTime" for s in SERVICES}
    [dynamodb] = body["checks"]["dynamodb:responseTime"]
    assert dynamodb["componentType"] == "datastore"
    assert dynamodb["observedUnit"] == "ms"
    assert dynamodb["latencyBudgetMs"] == 100.0
    assert dynamodb["breakerState"] == "closed"
    assert dynamodb["time"].startswith((start + dt.timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M"))
    for service in SERVICES:
        day = body["uptime"][service]["24h"]
        assert (day["observed_minutes"], day["down_minutes"], day["uptime"]) == (3, 0, 1.0)
        assert body["uptime"][service]["7d"]["observed_minutes"] == 3
        assert body["errorRates"][service]["checks15m"] == 0.0
        assert body["errorRates"][service]["checks24h"] == 0.0
    assert set(body["cache"]) >= {"l1", "l2", "loader"}
    assert body["cache"]["l2"]["configured"] is True
    assert set(body["cacheHotKeys"]) == {"top_keys", "fleet_top_keys", "hot_key_patterns"}
    assert set(body["breakers"]) >= {d.value for d in Dependency}
    assert body["breakers"]["valkey"]["state"] == "closed"
    assert "config" not in body["breakers"]["valkey"]
    assert [a["fingerprint"] for a in body["alerts"] if a["severity"] != "info"] == ["vote_fraud#show:gd-1"]


def test_one_service_and_an_unknown_one(
    health_api: Any, health_check: Any, platform: PlatformStore, issuer: Issuer
) -> None:
    run_health_check(health_check, now_minute())
    admin = issuer.token("ops-1", "admin")
    status, body, headers = get(health_api, {"service": "valkey"}, token=admin)
    assert status == 200
    assert headers["content-type"] == "application/health+json"
    assert list(body["checks"]) == ["valkey:responseTime"]
    assert body["breaker"]["name"] == "valkey"
    assert set(body["uptime"]) == {"valkey"}
    assert len(body["recent"]) == 1
    assert body["alerts"] == []
    assert body["alertHistory"] == []

    status, body, _ = get(health_api, {"service": "mongodb"}, token=admin)
    assert status == 404
    assert body["error"]["details"]["services"] == list(SERVICES)
    assert "dynamodb, valkey, s3, sns, ses" in body["error"]["message"]


# ------------------------------------------------------------------ actions


def test_clear_cache_all_and_by_tag(health_api: Any, platform: PlatformStore) -> None:
    cache = shared_cache()
    cache.set("it-health:a", {"v": 1}, ttl=300, tags=["it-health-tag"])
    cache.set("it-health:b", {"v": 2}, ttl=300)
    status, reply = post(health_api, {"action": "clear_cache", "tags": ["it-health-tag"]}, "admin")
    assert status == 200
    assert (reply["action"], reply["result"]["tags"], reply["result"]["invalidated"]) == (
        "clear_cache",
        ["it-health-tag"],
        1,
    )
    loads: list[str] = []

    def loader(key: str) -> Any:
        loads.append(key)
        return {"v": "again"}

    assert cache.get("it-health:a", lambda: loader("a")) == {"v": "again"}
    assert cache.get("it-health:b", lambda: loader("b")) == {"v": 2}
    assert loads == ["a"]

    status, reply = call_http(health_api, load_event("health_api/clear_cache.json"))
    assert status == 200
    status, reply = post(health_api, {"action": "clear_cache"}, "admin")
    assert status == 200
    assert set(reply["result"]["cleared"]) == {"l1", "l2"}
    assert cache.get("it-health:b", lambda: {"v": "reloaded"}) == {"v": "reloaded"}


def test_reset_circuit_breakers_some_or_all(health_api: Any, platform: PlatformStore) -> None:
    breaker_for(Dependency.S3).force_open(60)
    breaker_for(Dependency.SNS).force_open(60)
    status, reply = post(health_api, {"action": "reset_circuit_breakers", "services": ["s3"]}, "admin")
    assert (status, reply["result"]["reset"], reply["result"]["breakers"]) == (200, ["s3"], {"s3": "closed"})
    assert breaker_for(Dependency.SNS).state is BreakerState.OPEN
    status, reply = post(health_api, {"action": "reset_circuit_breakers"}, "admin")
    assert status == 200
    assert set(reply["result"]["reset"]) == {d.value for d in Dependency}
    assert breaker_for(Dependency.SNS).state is BreakerState.CLOSED


def test_check_service_runs_the_check_now(health_api: Any, platform: PlatformStore) -> None:
    status, reply = post(health_api, {"action": "check_service", "service": "sns"}, "admin")
    assert status == 200
    result = reply["result"]
    assert (result["service"], result["configured"], result["breaker_state"]) == ("sns", True, "closed")
    assert result["status"] in ("pass", "warn")
    assert result["detail"]["topic_arn"].endswith("it-mysetlist-local-alarms")
    assert platform.latest_summary() is None  # a check on demand records nothing


def test_run_diagnostics_checks_everything_and_recommends(health_api: Any, platform: PlatformStore) -> None:
    breaker_for(Dependency.SES).force_open(45, reason="test: forced open")
    status, reply = call_http(health_api, load_event("health_api/run_diagnostics.json"))
    assert status == 200
    result = reply["result"]
    assert set(result["checks"]) == set(SERVICES)
    assert result["checks"]["ses"]["status"] == "fail"  # its breaker refused the probe
    assert result["status"] == "warn"  # SES is not critical
    findings = [r["finding"] for r in result["recommendations"]]
    assert any(f.startswith("ses circuit open since ") and "test: forced open" in f for f in findings), (
        findings
    )
    assert any(f.startswith("ses check failed: the ses circuit is open") for f in findings), findings
    assert result["breakers"]["ses"]["state"] == "open"


def test_optimize_performance_reports_what_it_did(health_api: Any, platform: PlatformStore) -> None:
    status, reply = post(health_api, {"action": "optimize_performance"}, "admin")
    assert status == 200
    assert "l1_expired_removed" in reply["result"]["report"]
    assert "hits" in reply["result"]["l1_after"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"action": "reboot_everything"}, "action"),
        ({"action": "check_service", "service": "mongodb"}, "service"),
        ({"action": "check_service"}, "service"),
        ({"action": "clear_cache", "tags": []}, "tags"),
        ({"action": "clear_cache", "tags": ["bad tag with spaces"]}, "tags"),
        ({"action": "reset_circuit_breakers", "services": ["mainframe"]}, "services"),
        ({"action": "run_diagnostics", "force": True}, "force"),
        ({}, "action"),
        ("{not json", "JSON"),
    ],
)
def test_bad_actions_are_refused_and_change_nothing(
    health_api: Any, platform: PlatformStore, body: Any, fragment: str
) -> None:
    cache = shared_cache()
    cache.set("it-health:kept", "kept", ttl=300)
    breaker_for(Dependency.S3).force_open(60)
    status, reply = post(health_api, body, "admin")
    assert status == 422, reply
    assert reply["error"]["code"] == "validation_error"
    assert fragment in reply["error"]["message"]
    assert breaker_for(Dependency.S3).state is BreakerState.OPEN
    assert cache.get("it-health:kept", lambda: "reloaded") == "kept"


def test_actions_need_an_admin(health_api: Any, platform: PlatformStore) -> None:
    breaker_for(Dependency.S3).force_open(60)
    status, reply = post(health_api, {"action": "reset_circuit_breakers"})
    assert (status, reply["error"]["code"]) == (401, "unauthorized")
    status, reply = post(health_api, {"action": "reset_circuit_breakers"}, "user", "moderator")
    assert (status, reply["error"]["code"]) == (403, "forbidden")
    assert breaker_for(Dependency.S3).state is BreakerState.OPEN
