"""The platform store's pure parts: severities, statuses, fingerprints, keys, uptime math."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from mysetlist.alerts import (
    Alert,
    AlertIn,
    HealthRecord,
    HealthStatus,
    Severity,
    alert_fingerprint,
    ceil_minute,
    floor_minute,
    minute_key,
    uptime_of,
    utc_iso,
    worst_status,
)

T = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)


def minute(n: int) -> dt.datetime:
    return T + dt.timedelta(minutes=n)


def record(n: int, status: HealthStatus) -> HealthRecord:
    return HealthRecord(service="valkey", minute=minute(n), status=status)


# ------------------------------------------------------------------ severities and statuses


def test_the_open_alert_index_lists_critical_first() -> None:
    ranks = {s: s.rank for s in Severity}
    assert ranks == {Severity.CRITICAL: 1, Severity.WARNING: 2, Severity.INFO: 3}
    # GSI1SK = "<rank>#<opened_at>": an ascending query puts critical first, then oldest first.
    keys = sorted(
        f"{s.rank}#{utc_iso(minute(n))}"
        for n, s in [(0, Severity.INFO), (5, Severity.CRITICAL), (1, Severity.CRITICAL)]
    )
    assert keys == [f"1#{utc_iso(minute(1))}", f"1#{utc_iso(minute(5))}", f"3#{utc_iso(minute(0))}"]


def test_worst_status() -> None:
    assert worst_status([HealthStatus.PASS, HealthStatus.WARN]) is HealthStatus.WARN
    assert worst_status([HealthStatus.WARN, HealthStatus.FAIL, HealthStatus.PASS]) is HealthStatus.FAIL
    assert worst_status([]) is HealthStatus.PASS


def test_fingerprints_name_the_incident_not_its_severity() -> None:
    low = AlertIn(type="dependency", entity="valkey", severity=Severity.INFO, summary="slow")
    high = AlertIn(type="dependency", entity="valkey", severity=Severity.CRITICAL, summary="down")
    assert (
        low.fingerprint
        == high.fingerprint
        == alert_fingerprint("dependency", "valkey")
        == "dependency#valkey"
    )
    fraud = AlertIn.model_validate(
        {
            "type": "vote_fraud",
            "entity": "show:grateful-dead:2030-06-01",
            "severity": "warning",
            "summary": "burst",
        }
    )
    assert fraud.fingerprint == "vote_fraud#show:grateful-dead:2030-06-01"


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "Dependency"},  # types are lower-case names
        {"type": "dep endency"},
        {"entity": ""},
        {"entity": "../etc"},
        {"entity": "a" * 201},
        {"severity": "fatal"},
        {"summary": "   "},
        {"colour": "red"},
    ],
)
def test_bad_alerts_are_refused(fields: dict[str, object]) -> None:
    good: dict[str, object] = {
        "type": "dependency",
        "entity": "valkey",
        "severity": "warning",
        "summary": "x",
    }
    with pytest.raises(ValidationError):
        AlertIn.model_validate(good | fields)


def alert(severity: Severity, notified: Severity | None) -> Alert:
    return Alert(
        fingerprint="dependency#valkey",
        type="dependency",
        entity="valkey",
        severity=severity,
        summary="valkey check failing",
        opened_at=T,
        last_seen=T,
        count=1,
        notified_severity=notified,
    )


@pytest.mark.parametrize(
    ("severity", "notified", "due"),
    [
        (Severity.CRITICAL, None, True),  # a new critical alert
        (Severity.CRITICAL, Severity.WARNING, True),  # escalated since the last notice
        (Severity.CRITICAL, Severity.CRITICAL, False),  # already told: never once a minute
        (Severity.WARNING, None, False),  # below the threshold
        (Severity.INFO, None, False),
    ],
)
def test_a_notification_is_due_once_per_severity(
    severity: Severity, notified: Severity | None, due: bool
) -> None:
    assert alert(severity, notified).needs_notification(Severity.CRITICAL) is due


# ------------------------------------------------------------------ time keys


def test_minute_keys_are_utc_and_sort_in_time_order() -> None:
    local = dt.datetime(2030, 6, 1, 14, 7, 59, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert minute_key(local) == "2030-06-01T12:07Z"
    keys = [minute_key(T + dt.timedelta(minutes=n)) for n in (0, 9, 10, 61, 60 * 24)]
    assert keys == sorted(keys)
    assert floor_minute(local) == dt.datetime(2030, 6, 1, 12, 7, tzinfo=dt.UTC)
    assert ceil_minute(local) == dt.datetime(2030, 6, 1, 12, 8, tzinfo=dt.UTC)
    assert ceil_minute(T) == T


def test_timestamps_keep_microseconds_so_two_raises_in_a_second_differ() -> None:
    assert utc_iso(T) == "2030-06-01T12:00:00.000000+00:00"
    assert utc_iso(T + dt.timedelta(microseconds=1)) > utc_iso(T)


# ------------------------------------------------------------------ uptime


def test_uptime_counts_pass_and_warn_as_up_and_gaps_as_unknown() -> None:
    records = [record(0, HealthStatus.PASS), record(1, HealthStatus.FAIL), record(2, HealthStatus.WARN)]
    records += [record(n, HealthStatus.PASS) for n in range(5, 10)]  # minutes 3 and 4 were not checked
    uptime = uptime_of("valkey", records, minute(0), minute(9))
    assert (uptime.expected_minutes, uptime.observed_minutes) == (10, 8)
    assert (uptime.up_minutes, uptime.degraded_minutes, uptime.down_minutes) == (7, 1, 1)
    assert uptime.uptime == pytest.approx(7 / 8, abs=1e-6)
    assert uptime.coverage == pytest.approx(8 / 10, abs=1e-6)


def test_uptime_windows_use_whole_minutes_and_ignore_records_outside() -> None:
    records = [record(n, HealthStatus.FAIL if n == 0 else HealthStatus.PASS) for n in range(-5, 20)]
    # From 12:00:30 (so 12:01 is the first whole minute) to 12:10:15 (12:10 the last).
    uptime = uptime_of(
        "valkey", records, minute(0) + dt.timedelta(seconds=30), minute(10) + dt.timedelta(seconds=15)
    )
    assert (uptime.expected_minutes, uptime.observed_minutes, uptime.down_minutes) == (10, 10, 0)
    assert uptime.uptime == 1.0


def test_a_day_of_minutes_and_a_repeated_minute() -> None:
    records = [record(n, HealthStatus.FAIL if n < 72 else HealthStatus.PASS) for n in range(1440)]
    records.append(record(0, HealthStatus.PASS))  # the same minute again: counted once (the last one)
    uptime = uptime_of("valkey", records, minute(0), minute(1439))
    assert (uptime.expected_minutes, uptime.observed_minutes, uptime.down_minutes) == (1440, 1440, 71)
    assert uptime.uptime == pytest.approx(1 - 71 / 1440, abs=1e-6)


def test_an_unobserved_window_has_no_uptime() -> None:
    uptime = uptime_of("valkey", [], minute(0), minute(59))
    assert (uptime.uptime, uptime.coverage, uptime.expected_minutes) == (None, 0.0, 60)
    empty = uptime_of(
        "valkey", [], minute(0) + dt.timedelta(seconds=10), minute(0) + dt.timedelta(seconds=50)
    )
    assert (empty.expected_minutes, empty.coverage) == (0, 0.0)
