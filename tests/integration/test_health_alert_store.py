"""PlatformStore against moto (the table from template.yaml): alerts raised once, escalated,
listed by severity, resolved into history; health minutes and uptime."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from mysetlist.alerts import (
    AlertIn,
    CheckResult,
    HealthRecord,
    HealthStatus,
    HealthSummary,
    PlatformStore,
    RecentCheck,
    Severity,
)
from mysetlist.settings import Settings
from tests.integration.conftest import wipe

T = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)


def at(minutes: float) -> dt.datetime:
    return T + dt.timedelta(minutes=minutes)


@pytest.fixture
def store(aws: dict[str, str], dynamodb: Any, settings: Settings) -> Iterator[PlatformStore]:
    wipe(dynamodb, settings.platform_table)
    yield PlatformStore(dynamodb, settings.platform_table)
    wipe(dynamodb, settings.platform_table)


def fraud(severity: Severity, show: str = "show:gd-2030-06-01", **evidence: Any) -> AlertIn:
    return AlertIn(
        type="vote_fraud", entity=show, severity=severity, summary=f"vote burst on {show}", evidence=evidence
    )


def test_an_alert_is_raised_once_and_repeats_count(store: PlatformStore) -> None:
    first = store.raise_alert(fraud(Severity.WARNING, votes=120), at(0))
    assert (first.created, first.escalated, first.alert.count) == (True, False, 1)
    again = store.raise_alert(fraud(Severity.WARNING, votes=180), at(1))
    assert (again.created, again.escalated) == (False, False)
    alert = again.alert
    assert (alert.count, alert.opened_at, alert.last_seen) == (2, at(0), at(1))
    assert alert.evidence == {"votes": 180}  # the latest evidence
    assert store.open_alert(alert.fingerprint) == alert


def test_severity_escalates_and_never_drops(store: PlatformStore) -> None:
    store.raise_alert(fraud(Severity.INFO), at(0))
    up = store.raise_alert(fraud(Severity.CRITICAL), at(1))
    assert (up.escalated, up.alert.severity) == (True, Severity.CRITICAL)
    down = store.raise_alert(fraud(Severity.WARNING), at(2))
    assert (down.escalated, down.alert.severity, down.alert.count) == (False, Severity.CRITICAL, 3)


def test_open_alerts_are_listed_critical_first_then_oldest(store: PlatformStore) -> None:
    store.raise_alert(fraud(Severity.WARNING, show="show:a"), at(0))
    store.raise_alert(fraud(Severity.CRITICAL, show="show:b"), at(1))
    store.raise_alert(fraud(Severity.INFO, show="show:c"), at(2))
    store.raise_alert(fraud(Severity.CRITICAL, show="show:d"), at(3))
    store.raise_alert(fraud(Severity.CRITICAL, show="show:a"), at(4))  # escalated: moves up, keeps its age
    assert [a.entity for a in store.open_alerts()] == ["show:a", "show:b", "show:d", "show:c"]
    assert [a.entity for a in store.open_alerts(limit=2)] == ["show:a", "show:b"]


def test_resolving_moves_the_alert_to_history_in_one_step(store: PlatformStore, dynamodb: Any) -> None:
    raised = store.raise_alert(fraud(Severity.CRITICAL), at(0)).alert
    store.mark_notified(raised, Severity.CRITICAL, at(0))
    store.raise_alert(fraud(Severity.CRITICAL), at(1))
    resolved = store.resolve_alert(raised.fingerprint, at(5), resolution="false positive")
    assert resolved is not None
    assert (resolved.resolved_at, resolved.count, resolved.notified_severity) == (at(5), 2, Severity.CRITICAL)
    assert store.open_alert(raised.fingerprint) is None
    assert store.open_alerts() == []
    assert store.alert_history(raised.fingerprint) == [resolved]
    assert store.resolve_alert(raised.fingerprint, at(6)) is None  # nothing open: nothing to do
    # The history item carries no index keys and expires 90 days after resolution.
    item = dynamodb.get_item(
        TableName=store._table,
        Key={"PK": {"S": f"ALERT#{raised.fingerprint}"}, "SK": {"S": "2030-06-01T12:00:00.000000+00:00"}},
    )["Item"]
    assert "GSI1PK" not in item
    assert int(item["expires_at"]["N"]) == int((at(5) + dt.timedelta(days=90)).timestamp())


def test_a_new_incident_after_a_resolution_is_a_new_alert(store: PlatformStore) -> None:
    store.raise_alert(fraud(Severity.WARNING), at(0))
    store.resolve_alert(fraud(Severity.WARNING).fingerprint, at(3))
    again = store.raise_alert(fraud(Severity.WARNING), at(10))
    assert (again.created, again.alert.count, again.alert.opened_at) == (True, 1, at(10))
    store.resolve_alert(again.alert.fingerprint, at(12))
    assert [a.opened_at for a in store.alert_history(again.alert.fingerprint)] == [at(10), at(0)]


def test_notification_state_and_recovery_are_recorded_on_the_open_alert(store: PlatformStore) -> None:
    alert = store.raise_alert(fraud(Severity.CRITICAL), at(0)).alert
    assert store.record_notification_failure(alert, "NotFound (Publish): topic gone", at(0))
    assert store.mark_recovered(alert, at(1))
    assert store.mark_recovered(alert, at(2))  # keeps the first recovery time
    found = store.open_alert(alert.fingerprint)
    assert found is not None
    assert (found.notification_error, found.notified_severity, found.recovered_at) == (
        "NotFound (Publish): topic gone",
        None,
        at(1),
    )
    assert found.needs_notification(Severity.CRITICAL)
    repeated = store.raise_alert(fraud(Severity.CRITICAL), at(3)).alert
    assert repeated.recovered_at is None  # failing again: not recovering any more
    store.resolve_alert(alert.fingerprint, at(4))
    assert not store.mark_notified(alert, Severity.CRITICAL, at(5))  # resolved meanwhile: no-op


def test_health_minutes_summary_and_uptime(store: PlatformStore) -> None:
    for n in range(10):
        status = HealthStatus.FAIL if n in (3, 4) else HealthStatus.PASS
        check = CheckResult(service="sns", status=status, latency_ms=12.5, observed_at=at(n))
        summary = HealthSummary(
            status=HealthStatus.WARN if status is HealthStatus.FAIL else HealthStatus.PASS,
            observed_at=at(n),
            checks={"sns": check},
            recent={"sns": [RecentCheck(at=at(n), status=status, latency_ms=12.5)]},
        )
        record = HealthRecord(
            service="sns", minute=at(n), status=status, latency_ms=12.5, breaker_state="closed"
        )
        store.record_health([record], summary, at(n))
    latest = store.latest_summary()
    assert latest is not None
    assert (latest.observed_at, latest.checks["sns"].latency_ms) == (at(9), 12.5)
    records = store.health_records("sns", at(2), at(5))
    assert [(r.minute, r.status) for r in records] == [
        (at(2), HealthStatus.PASS),
        (at(3), HealthStatus.FAIL),
        (at(4), HealthStatus.FAIL),
        (at(5), HealthStatus.PASS),
    ]
    uptime = store.uptime("sns", at(0), at(14))
    assert (uptime.expected_minutes, uptime.observed_minutes, uptime.down_minutes) == (15, 10, 2)
    assert uptime.uptime == pytest.approx(0.8)
    assert store.health_records("valkey", at(0), at(9)) == []
