"""Health checks' pure parts: degradation, aggregation, recommendations, probes (botocore
Stubber: the exact requests), the admin actions' validation. No network."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any, get_args

import boto3
import pytest
from botocore.stub import Stubber
from pydantic import TypeAdapter, ValidationError

from mysetlist.alerts import Alert, CheckResult, HealthStatus, HealthSummary, RecentCheck, Severity
from mysetlist.breaker import CircuitBreaker
from mysetlist.health import (
    DEPENDENCIES,
    PROBE_KEY,
    SERVICES,
    Check,
    Findings,
    MonitoringAction,
    NotificationKind,
    ServiceName,
    alert_severity,
    assess,
    breaker_status,
    check_entries,
    dynamodb_probe,
    notification_text,
    overall_status,
    percentile,
    public_status,
    recent_before,
    recommend,
    run_check,
    run_checks,
    s3_probe,
    ses_probe,
    sns_probe,
    updated_recent,
)
from mysetlist.settings import Settings

NOW = dt.datetime(2030, 6, 1, 12, 30, tzinfo=dt.UTC)


def own_breakers() -> Any:
    """Breakers of this test alone (the container's registry would share state through Valkey)."""
    made: dict[str, CircuitBreaker] = {}
    return lambda dependency: made.setdefault(str(dependency), CircuitBreaker(str(dependency)))


def result(
    service: str, status: HealthStatus = HealthStatus.PASS, latency: float | None = 5.0, **extra: Any
) -> CheckResult:
    return CheckResult(service=service, status=status, latency_ms=latency, observed_at=NOW, **extra)


def history(*statuses: HealthStatus, latency: float = 5.0) -> list[RecentCheck]:
    """Checks of the minutes before NOW, oldest first."""
    start = NOW - dt.timedelta(minutes=len(statuses))
    return [
        RecentCheck(at=start + dt.timedelta(minutes=i), status=s, latency_ms=latency)
        for i, s in enumerate(statuses)
    ]


PASS, WARN, FAIL = HealthStatus.PASS, HealthStatus.WARN, HealthStatus.FAIL


# ------------------------------------------------------------------ degradation


def test_a_check_within_its_budgets_passes() -> None:
    checked = assess(result("dynamodb", latency=40.0), DEPENDENCIES["dynamodb"], history(PASS, PASS, PASS))
    assert (checked.status, checked.reasons, checked.degraded_by) == (PASS, [], [])


def test_one_slow_probe_is_not_a_degradation_but_slow_probes_are() -> None:
    spec = DEPENDENCIES["dynamodb"]
    assert assess(result("dynamodb", latency=900.0), spec, history(PASS, PASS, latency=10.0)).status is PASS
    slow = assess(result("dynamodb", latency=340.0), spec, history(PASS, PASS, latency=250.0))
    assert slow.status is WARN
    assert slow.degraded_by == ["latency"]
    assert slow.reasons == ["median latency 250 ms over the last 3 checks is above the 100 ms budget"]
    assert alert_severity(slow, spec) is Severity.INFO
    # Without history (a check on demand) the one sample decides.
    assert assess(result("valkey", latency=25.0), DEPENDENCIES["valkey"], []).status is WARN


def test_the_error_budget_allows_one_failure_in_fifteen_minutes() -> None:
    spec = DEPENDENCIES["valkey"]
    one = assess(result("valkey"), spec, history(PASS, FAIL, PASS))
    assert one.status is PASS  # a blip: the alert it raised resolves now
    two = assess(result("valkey"), spec, history(FAIL, PASS, FAIL))
    assert two.status is WARN
    assert two.degraded_by == ["error_budget"]
    assert "2 of the last 4 checks failed" in two.reasons[0]
    assert alert_severity(two, spec) is Severity.WARNING
    # Only the 15 minutes before now are history.
    summary = HealthSummary(
        status=PASS,
        observed_at=NOW,
        checks={},
        recent={
            "valkey": [*history(FAIL, FAIL), RecentCheck(at=NOW - dt.timedelta(minutes=20), status=FAIL)]
        },
    )
    assert len(recent_before(summary, "valkey", NOW)) == 2
    assert recent_before(summary, "valkey", NOW + dt.timedelta(minutes=16)) == []


def test_failed_and_unconfigured_checks_are_left_as_they_are() -> None:
    failed = result("s3", FAIL, error="NoSuchBucket")
    assert assess(failed, DEPENDENCIES["s3"], history(FAIL, FAIL)) == failed
    absent = result("valkey", WARN, latency=None, configured=False)
    assert assess(absent, DEPENDENCIES["valkey"], []) == absent
    assert alert_severity(absent, DEPENDENCIES["valkey"]) is None


@pytest.mark.parametrize(
    ("service", "severity"),
    [
        ("dynamodb", Severity.CRITICAL),
        ("valkey", Severity.CRITICAL),
        ("s3", Severity.WARNING),
        ("sns", Severity.WARNING),
        ("ses", Severity.WARNING),
    ],
)
def test_a_failure_raises_its_dependencys_severity(service: str, severity: Severity) -> None:
    assert alert_severity(result(service, FAIL), DEPENDENCIES[service]) is severity
    assert alert_severity(result(service), DEPENDENCIES[service]) is None


# ------------------------------------------------------------------ the overall status


def everything(**changes: CheckResult) -> dict[str, CheckResult]:
    return {name: changes.get(name, result(name)) for name in SERVICES}


def test_only_a_critical_dependency_fails_the_service() -> None:
    assert overall_status(everything()) is PASS
    assert overall_status(everything(dynamodb=result("dynamodb", FAIL))) is FAIL
    assert overall_status(everything(valkey=result("valkey", FAIL))) is WARN  # served from L1 and DynamoDB
    assert overall_status(everything(ses=result("ses", FAIL), s3=result("s3", FAIL))) is WARN
    assert overall_status(everything(dynamodb=result("dynamodb", WARN))) is WARN


def test_an_l1_only_deployment_is_not_degraded() -> None:
    absent = result("valkey", WARN, latency=None, configured=False)
    assert overall_status(everything(valkey=absent)) is PASS


def test_this_containers_breakers() -> None:
    assert breaker_status({}) is PASS
    assert breaker_status({"dynamodb": "open"}) is FAIL
    assert breaker_status({"valkey": "open", "ses": "half_open"}) is WARN
    assert breaker_status({"dynamodb": "half_open"}) is WARN
    assert breaker_status({"model_store": "open"}) is PASS  # no health check of its own yet


def summary(status: HealthStatus, at: dt.datetime) -> HealthSummary:
    return HealthSummary(status=status, observed_at=at, checks={})


def test_the_public_status_trusts_a_fresh_summary_only() -> None:
    assert public_status(None, {}, NOW)[0] is WARN
    assert public_status(summary(PASS, NOW - dt.timedelta(seconds=70)), {}, NOW) == (PASS, [])
    stale, notes = public_status(summary(PASS, NOW - dt.timedelta(minutes=4)), {}, NOW)
    assert stale is WARN
    assert "stale" in notes[0]
    assert public_status(summary(FAIL, NOW - dt.timedelta(minutes=30)), {}, NOW)[0] is FAIL
    assert public_status(summary(PASS, NOW), {"dynamodb": "open"}, NOW)[0] is FAIL
    assert public_status(summary(FAIL, NOW), {}, NOW)[0] is FAIL


def test_recent_history_keeps_fifteen_minutes_and_one_check_per_minute() -> None:
    previous = {"valkey": history(*[PASS] * 20)}
    merged = updated_recent(previous, {"valkey": result("valkey", FAIL)}, NOW)
    assert len(merged["valkey"]) == 15
    assert merged["valkey"][-1].status is FAIL
    again = updated_recent(merged, {"valkey": result("valkey")}, NOW + dt.timedelta(seconds=30))
    assert len(again["valkey"]) == 15
    assert again["valkey"][-1].status is PASS  # the same minute, checked again: replaced


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.95) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([float(n) for n in range(1, 101)], 0.95) == 95.0
    assert percentile([1.0, 2.0, 3.0, 340.0], 0.95) == 340.0


# ------------------------------------------------------------------ recommendations


def findings(**overrides: Any) -> Findings:
    base: dict[str, Any] = {
        "checks": everything(),
        "recent": {name: history(PASS, PASS) for name in SERVICES},
        "breakers": {name: {"state": "closed"} for name in SERVICES},
        "cache_stats": {
            "l1": {"hits": 900, "misses": 100, "evictions": 3},
            "l2": {"configured": True, "available": True},
        },
        "settings": Settings(cache_url="redis://cache:6379/0"),
    }
    return Findings(**(base | overrides))


def test_a_healthy_platform_gets_no_recommendations() -> None:
    assert recommend(findings()) == []


def test_an_open_circuit_says_since_when_and_what_to_look_at() -> None:
    breakers = {
        "valkey": {
            "state": "open",
            "opened_at": "2030-06-01T12:03:00.000+00:00",
            "retry_after": 4.2,
            "reason": "failure rate reached the threshold",
        }
    }
    [found] = [r for r in recommend(findings(breakers=breakers)) if r.component == "valkey"]
    assert (
        found.finding
        == "valkey circuit open since 12:03:00 UTC (failure rate reached the threshold); trial calls in 4 s"
    )
    assert "CloudWatch metrics" in found.action
    assert found.severity is Severity.WARNING


def test_a_low_l1_hit_rate_with_evictions_asks_for_more_room() -> None:
    stats = {
        "l1": {"hits": 120, "misses": 880, "evictions": 700},
        "l2": {"configured": True, "available": True},
    }
    [found] = recommend(findings(cache_stats=stats))
    assert found.finding == "L1 hit rate 12% over 1,000 lookups"
    assert "CACHE_L1_MAX_ENTRIES (now 1,000)" in found.action
    quiet = {"l1": {"hits": 12, "misses": 88, "evictions": 0}, "l2": {"configured": True, "available": True}}
    assert recommend(findings(cache_stats=quiet)) == []  # 100 lookups say nothing yet


def test_slow_dynamodb_is_reported_at_its_p95() -> None:
    recent = {name: history(PASS, PASS) for name in SERVICES}
    recent["dynamodb"] = [*history(*[PASS] * 10, latency=20.0), *history(PASS, latency=340.0)]
    [found] = recommend(findings(recent=recent))
    assert found.finding == "DynamoDB p95 latency 340 ms above its 100 ms budget (12 checks)"
    assert "hot partitions" in found.action


def test_no_cache_endpoint_recommends_deploying_with_a_vpc() -> None:
    absent = result("valkey", WARN, latency=None, configured=False, reasons=["no cache endpoint"])
    [found] = recommend(findings(checks=everything(valkey=absent), settings=Settings()))
    assert found.finding.startswith("no cache endpoint configured")
    assert (
        found.action == "deploy with VpcId/PrivateSubnetIds to enable L2 (ElastiCache Serverless for Valkey)"
    )
    assert found.severity is Severity.INFO


def test_a_failing_check_and_an_unstable_one() -> None:
    recent = {name: history(PASS) for name in SERVICES}
    recent["s3"] = history(FAIL, PASS, FAIL, FAIL)
    checks = everything(s3=result("s3", FAIL, error="NoSuchBucket: the bucket does not exist"))
    found = recommend(findings(checks=checks, recent=recent))
    assert [r.finding for r in found] == [
        "s3 check failed: NoSuchBucket: the bucket does not exist",
        "3 of 4 s3 checks in the last 15 minutes failed (error budget: 10% of 15)",
    ]
    assert all("s3:ListBucket" in r.action for r in found)


def test_quota_and_subscriptions() -> None:
    checks = everything(
        ses=result(
            "ses",
            WARN,
            reasons=["85% of the 24-hour sending quota is used (170 of 200)"],
            degraded_by=["probe"],
        ),
        sns=result("sns", detail={"subscriptions_confirmed": 0}),
    )
    found = {r.component: r for r in recommend(findings(checks=checks))}
    assert found["ses"].finding == "85% of the 24-hour sending quota is used (170 of 200)"
    assert "quota" in found["ses"].action
    assert (
        found["sns"].finding == "the alert topic has no confirmed subscription: critical alerts reach nobody"
    )


def test_critical_findings_come_first() -> None:
    checks = everything(dynamodb=result("dynamodb", FAIL, error="ResourceNotFoundException"))
    stats = {"l1": {"hits": 1, "misses": 2000, "evictions": 0}, "l2": {"configured": True, "available": True}}
    found = recommend(findings(checks=checks, cache_stats=stats))
    assert [r.severity for r in found] == [Severity.CRITICAL, Severity.WARNING]


# ------------------------------------------------------------------ the response format and notices


def test_a_check_in_the_health_check_response_format() -> None:
    entries = check_entries(
        result("valkey", FAIL, latency=250.0, breaker_state="open", error="ConnectionError: refused")
    )
    assert entries == {
        "valkey:responseTime": [
            {
                "componentId": "valkey",
                "componentType": "datastore",
                "observedValue": 250.0,
                "observedUnit": "ms",
                "status": "fail",
                "time": "2030-06-01T12:30:00.000000+00:00",
                "breakerState": "open",
                "configured": True,
                "latencyBudgetMs": 20.0,
                "output": "ConnectionError: refused",
            }
        ]
    }
    assert "output" not in check_entries(result("sns"))["sns:responseTime"][0]


def test_notices_fit_sns_limits_and_say_what_happened() -> None:
    alert = Alert(
        fingerprint="dependency#valkey",
        type="dependency",
        entity="valkey",
        severity=Severity.CRITICAL,
        summary="valkey check failing: " + "ConnectionError " * 20,
        evidence={"error": "ConnectionError"},
        opened_at=NOW,
        last_seen=NOW + dt.timedelta(minutes=4),
        count=5,
    )
    subject, body = notification_text(alert, NotificationKind.OPENED, "prod")
    assert subject.startswith("[CRITICAL] mysetlist-prod: valkey check failing")
    assert len(subject) <= 100
    assert "\n" not in subject
    assert "(5 times)" in body
    subject, body = notification_text(alert, NotificationKind.RESOLVED, "prod")
    assert subject.startswith("[RESOLVED]")
    assert "could not be sent at the time" in body  # never notified of its opening


# ------------------------------------------------------------------ probes: the exact requests


def client(service: str) -> Any:
    make: Any = boto3.client
    return make(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def test_the_dynamodb_probe_reads_a_key_that_cannot_exist_from_each_table() -> None:
    db = client("dynamodb")
    with Stubber(db) as stub:
        for table in ("t-catalog", "t-votes"):
            stub.add_response(
                "get_item",
                {},
                {
                    "TableName": table,
                    "Key": {"PK": {"S": PROBE_KEY}, "SK": {"S": PROBE_KEY}},
                    "ProjectionExpression": "PK",
                },
            )
        outcome = dynamodb_probe(lambda: db, {"catalog_table": "t-catalog", "votes_table": "t-votes"})()
        stub.assert_no_pending_responses()
    assert set(outcome.detail["tables_ms"]) == {"catalog_table", "votes_table"}
    assert outcome.latency_ms == max(outcome.detail["tables_ms"].values())


def test_the_s3_probe_lists_one_model_key() -> None:
    s3 = client("s3")
    with Stubber(s3) as stub:
        stub.add_response(
            "list_objects_v2", {"KeyCount": 1}, {"Bucket": "models-b", "Prefix": "models/", "MaxKeys": 1}
        )
        outcome = s3_probe(lambda: s3, "models-b")()
    assert outcome.detail == {"bucket": "models-b", "has_models": True}


def test_the_ses_probe_warns_above_80_percent_of_the_quota() -> None:
    ses = client("ses")
    with Stubber(ses) as stub:
        stub.add_response(
            "get_send_quota", {"Max24HourSend": 200.0, "MaxSendRate": 1.0, "SentLast24Hours": 170.0}, {}
        )
        stub.add_response(
            "get_send_quota", {"Max24HourSend": 200.0, "MaxSendRate": 1.0, "SentLast24Hours": 160.0}, {}
        )
        stub.add_response(
            "get_send_quota", {"Max24HourSend": -1.0, "MaxSendRate": 14.0, "SentLast24Hours": 9000.0}, {}
        )
        busy, fine, unlimited = (ses_probe(lambda: ses)() for _ in range(3))
    assert busy.warning == "85% of the 24-hour sending quota is used (170 of 200)"
    assert fine.warning is None
    assert fine.detail["quota_used"] == 0.8
    assert (unlimited.warning, unlimited.detail["quota_used"]) == (None, None)


def test_the_sns_probe_counts_confirmed_subscriptions() -> None:
    sns = client("sns")
    arn = "arn:aws:sns:us-east-1:123456789012:alarms"
    with Stubber(sns) as stub:
        stub.add_response(
            "get_topic_attributes", {"Attributes": {"SubscriptionsConfirmed": "2"}}, {"TopicArn": arn}
        )
        outcome = sns_probe(lambda: sns, arn)()
    assert outcome.detail == {"topic_arn": arn, "subscriptions_confirmed": 2}


def test_a_probe_that_fails_or_has_nothing_to_probe() -> None:
    s3 = client("s3")
    with Stubber(s3) as stub:
        stub.add_client_error("list_objects_v2", "NoSuchBucket", "The specified bucket does not exist", 404)
        failed = run_check(Check(DEPENDENCIES["s3"], s3_probe(lambda: s3, "gone")), NOW, own_breakers())
    assert failed.status is FAIL
    assert failed.error is not None
    assert failed.error == "NoSuchBucket (ListObjectsV2): The specified bucket does not exist"
    assert failed.breaker_state == "closed"  # a 404 is an answer: the breaker does not count it
    absent = run_check(Check(DEPENDENCIES["sns"], sns_probe(lambda: client("sns"), "")), NOW, own_breakers())
    assert (absent.status, absent.configured, absent.degraded_by) == (WARN, False, ["not_configured"])
    assert "ALERT_TOPIC_ARN" in absent.reasons[0]


def test_a_check_that_does_not_answer_in_time_fails() -> None:
    release = threading.Event()

    def hangs() -> Any:
        release.wait(30)
        raise TimeoutError("released")

    try:
        results = run_checks({"sns": Check(DEPENDENCIES["sns"], hangs)}, NOW, 0.05, own_breakers())
    finally:
        release.set()
    assert results["sns"].status is FAIL
    assert results["sns"].error == "no answer within 0.05 s"


# ------------------------------------------------------------------ admin actions


def test_the_service_names_are_the_checked_dependencies() -> None:
    assert get_args(ServiceName) == SERVICES


@pytest.mark.parametrize(
    "body",
    [
        {"action": "clear_cache"},
        {"action": "clear_cache", "tags": ["show:gd-1"]},
        {"action": "reset_circuit_breakers"},
        {"action": "reset_circuit_breakers", "services": ["valkey", "model_store"]},
        {"action": "check_service", "service": "ses"},
        {"action": "run_diagnostics"},
        {"action": "optimize_performance"},
    ],
)
def test_each_action_parses(body: dict[str, Any]) -> None:
    parsed = TypeAdapter(MonitoringAction).validate_python(body)
    assert parsed.action == body["action"]


@pytest.mark.parametrize(
    "body",
    [
        {"action": "restart"},
        {"action": "check_service", "service": "model_store"},  # has a breaker, not a check
        {"action": "reset_circuit_breakers", "services": []},
        {"action": "clear_cache", "tags": ["x" * 201]},
        {"action": "optimize_performance", "aggressive": True},
    ],
)
def test_bad_actions_do_not_parse(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(MonitoringAction).validate_python(body)
