"""The platform store (PlatformTable): system alerts and the health-check history.

Items (docs/data-model.md, "PlatformTable"); only this module knows their shapes:

- open alert ``ALERT#<fingerprint>`` / ``OPEN``: raised once (a conditional put), a repeat updates
  ``last_seen``, ``count``, the latest ``evidence`` and escalates ``severity`` (never lowers it);
  it carries the sparse GSI1 keys ``ALERTS#open`` / ``<severity rank>#<opened_at>``, so one query
  lists the open alerts by severity, critical first.
- alert history ``ALERT#<fingerprint>`` / ``<opened_at>``: written in the same transaction that
  deletes the open alert, with ``resolved_at``; expires 90 days after resolution.
- health check ``HEALTH#<service>`` / ``<minute>``: one per dependency per minute, from the
  HealthCheck function; expires after 30 days. Uptime over a window is a ``Query``.
- latest summary ``HEALTH`` / ``LATEST``: what the HealthCheck found on its last run and the last
  15 minutes of checks per dependency, so the public health endpoint costs one ``GetItem``.

The store is generic: the HealthCheck raises ``dependency`` alerts; issue 5 raises fraud alerts
(type, severity, entity, evidence) through the same calls.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from botocore.exceptions import ClientError
from pydantic import Field, StringConstraints

from mysetlist.dynamo import error_code, from_item, to_item, unavailable_on_throttle
from mysetlist.errors import Conflict, Unavailable
from mysetlist.models import Model

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ALERT_OPEN_SK = "OPEN"
OPEN_ALERTS_GSI1PK = "ALERTS#open"
HEALTH_SUMMARY_PK = "HEALTH"
HEALTH_SUMMARY_SK = "LATEST"
HEALTH_RECORD_TTL = dt.timedelta(days=30)
ALERT_HISTORY_TTL = dt.timedelta(days=90)
# The summary keeps this much history per dependency: the error budget's window.
RECENT_WINDOW = dt.timedelta(minutes=15)

_BATCH_WRITE_LIMIT = 25
_BATCH_WRITE_ATTEMPTS = 4
_RACE_ATTEMPTS = 3


# ---------------------------------------------------------------------------------- values


class Severity(StrEnum):
    """How urgently an operator must act: critical pages (SNS), warning and info are listed."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def level(self) -> int:
        """1 (info) to 3 (critical): higher is more severe."""
        return _SEVERITY_LEVELS[self]

    @property
    def rank(self) -> int:
        """1 (critical) to 3 (info): the GSI1 sort-key prefix, so an ascending query lists critical first."""
        return len(_SEVERITY_LEVELS) + 1 - self.level


_SEVERITY_LEVELS = {Severity.INFO: 1, Severity.WARNING: 2, Severity.CRITICAL: 3}


class HealthStatus(StrEnum):
    """The three states of the health-check response format for HTTP APIs."""

    PASS = "pass"  # noqa: S105 - a status, not a password
    WARN = "warn"
    FAIL = "fail"

    @property
    def level(self) -> int:
        return _STATUS_LEVELS[self]


_STATUS_LEVELS = {HealthStatus.PASS: 0, HealthStatus.WARN: 1, HealthStatus.FAIL: 2}


def worst_status(statuses: Iterable[HealthStatus]) -> HealthStatus:
    """The worst of ``statuses``; pass when there are none."""
    return max(statuses, key=lambda s: s.level, default=HealthStatus.PASS)


AlertType = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
AlertEntity = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9:._#/@-]*$")
]


def alert_fingerprint(alert_type: str, entity: str) -> str:
    """What makes two raises the same incident: its type and the entity it is about
    (``dependency#valkey``, ``vote_fraud.network_cluster#net:203.0.113.0/24``)."""
    return f"{alert_type}#{entity}"


def minute_key(moment: dt.datetime) -> str:
    """The minute of ``moment`` in UTC, ISO 8601 (``2026-11-24T09:57Z``): health-check sort keys."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def floor_minute(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(second=0, microsecond=0)


def ceil_minute(moment: dt.datetime) -> dt.datetime:
    floor = floor_minute(moment)
    return floor if floor == moment.astimezone(dt.UTC) else floor + dt.timedelta(minutes=1)


def utc_iso(moment: dt.datetime) -> str:
    """Timestamps as stored: UTC, microseconds (two raises in one second stay distinct)."""
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


# ---------------------------------------------------------------------------------- alerts


class AlertIn(Model):
    """What a raiser reports: the incident (type and entity), how bad it is and the evidence."""

    type: AlertType = Field(description="Kind of incident, e.g. dependency or vote_fraud")
    entity: AlertEntity = Field(description="What it is about, e.g. valkey or show:<show id>")
    severity: Severity
    summary: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
    evidence: dict[str, Any] = Field(default_factory=dict, description="The latest observation (JSON)")

    @property
    def fingerprint(self) -> str:
        return alert_fingerprint(self.type, self.entity)


class Alert(Model):
    """An open alert, or (with ``resolved_at``) one from the history."""

    fingerprint: str
    type: str
    entity: str
    severity: Severity = Field(description="The highest severity seen since it opened")
    summary: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    opened_at: dt.datetime
    last_seen: dt.datetime
    count: int = Field(ge=1, description="How many times it was raised while open")
    notified_severity: Severity | None = Field(
        default=None, description="The severity operators were last notified of (None: not notified)"
    )
    notified_at: dt.datetime | None = None
    notification_error: str | None = Field(
        default=None, description="Why the last notification failed (it is retried on the next run)"
    )
    recovered_at: dt.datetime | None = Field(
        default=None, description="The condition cleared; the alert resolves once its notice is sent"
    )
    resolved_at: dt.datetime | None = None
    resolution: str | None = None

    def needs_notification(self, threshold: Severity) -> bool:
        """Whether operators have not yet been told about this alert at its current severity
        (and that severity reaches ``threshold``)."""
        if self.severity.level < threshold.level:
            return False
        return self.notified_severity is None or self.notified_severity.level < self.severity.level


@dataclass(frozen=True, slots=True)
class RaisedAlert:
    """The open alert after a raise: ``created`` for a new incident, ``escalated`` when the raise
    made an open one more severe."""

    alert: Alert
    created: bool
    escalated: bool


# ---------------------------------------------------------------------------------- health


class CheckResult(Model):
    """One dependency's check: what the HealthCheck records and the health API reports."""

    service: str
    status: HealthStatus
    latency_ms: float | None = Field(default=None, description="Time the probe took (None: not run)")
    breaker_state: str | None = None
    observed_at: dt.datetime
    error: str | None = None
    configured: bool = Field(default=True, description="False when the deployment has no such dependency")
    reasons: list[str] = Field(default_factory=list, description="Why the status is not pass")
    degraded_by: list[str] = Field(
        default_factory=list,
        description="What made a passing probe a warn: latency, error_budget, probe, not_configured",
    )
    detail: dict[str, Any] = Field(default_factory=dict)


class HealthRecord(Model):
    """One stored minute of a dependency's history."""

    service: str
    minute: dt.datetime
    status: HealthStatus
    latency_ms: float | None = None
    breaker_state: str | None = None
    error: str | None = None


class RecentCheck(Model):
    at: dt.datetime
    status: HealthStatus
    latency_ms: float | None = None


class HealthSummary(Model):
    """The HealthCheck's last run: overall status, each check, the last 15 minutes per dependency."""

    status: HealthStatus
    observed_at: dt.datetime
    checks: dict[str, CheckResult]
    recent: dict[str, list[RecentCheck]] = Field(default_factory=dict)


class Uptime(Model):
    """A dependency's availability over a window, from its per-minute history.

    A minute is up when its check passed or warned, down when it failed; minutes without a
    record (the HealthCheck did not run) are unknown and only lower ``coverage``.
    """

    service: str
    start: dt.datetime
    end: dt.datetime
    expected_minutes: int
    observed_minutes: int
    up_minutes: int
    degraded_minutes: int
    down_minutes: int
    uptime: float | None = Field(description="Up minutes / observed minutes (None: nothing observed)")
    coverage: float = Field(description="Observed minutes / minutes in the window")


def uptime_of(service: str, records: Iterable[HealthRecord], start: dt.datetime, end: dt.datetime) -> Uptime:
    """Uptime over the whole minutes from ``start`` (rounded up) to ``end`` (rounded down),
    from ``records`` (those outside the window and duplicate minutes are ignored)."""
    first, last = ceil_minute(start), floor_minute(end)
    expected = max(0, int((last - first).total_seconds() // 60) + 1) if last >= first else 0
    by_minute: dict[dt.datetime, HealthStatus] = {}
    for record in records:
        minute = floor_minute(record.minute)
        if first <= minute <= last:
            by_minute[minute] = record.status
    statuses = list(by_minute.values())
    down = sum(1 for s in statuses if s is HealthStatus.FAIL)
    degraded = sum(1 for s in statuses if s is HealthStatus.WARN)
    observed = len(statuses)
    up = observed - down
    return Uptime(
        service=service,
        start=start,
        end=end,
        expected_minutes=expected,
        observed_minutes=observed,
        up_minutes=up,
        degraded_minutes=degraded,
        down_minutes=down,
        uptime=round(up / observed, 6) if observed else None,
        coverage=round(observed / expected, 6) if expected else 0.0,
    )


# ---------------------------------------------------------------------------------- the store


def _alert_pk(fingerprint: str) -> str:
    return f"ALERT#{fingerprint}"


def _health_pk(service: str) -> str:
    return f"HEALTH#{service}"


def _ttl(moment: dt.datetime, keep: dt.timedelta) -> int:
    return math.ceil((moment + keep).timestamp())


class PlatformStore:
    """Reads and writes alerts and health history in the PlatformTable.

    DynamoDB throttling and server errors become :class:`Unavailable` (retryable).
    """

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._db = client
        self._table = table

    # ------------------------------------------------------------------ alerts
    def raise_alert(self, alert: AlertIn, now: dt.datetime) -> RaisedAlert:
        """Open ``alert`` once; a repeat of an open one bumps ``count`` and ``last_seen``, keeps
        the latest evidence and summary, escalates the severity if higher and clears a pending
        recovery. Raises :class:`Conflict` if it keeps racing a resolution of the same alert."""
        with unavailable_on_throttle("the alert store"):
            for _ in range(_RACE_ATTEMPTS):
                current = self.open_alert(alert.fingerprint)
                if current is None:
                    created = self._create(alert, now)
                    if created is not None:
                        return RaisedAlert(created, created=True, escalated=False)
                    continue  # opened concurrently: repeat it
                repeated = self._repeat(current, alert, now)
                if repeated is not None:
                    return repeated
        raise Conflict(f"alert {alert.fingerprint} changed concurrently; raise it again")

    def _create(self, alert: AlertIn, now: dt.datetime) -> Alert | None:
        opened = utc_iso(now)
        item = {
            "PK": _alert_pk(alert.fingerprint),
            "SK": ALERT_OPEN_SK,
            "GSI1PK": OPEN_ALERTS_GSI1PK,
            "GSI1SK": f"{alert.severity.rank}#{opened}",
            "fingerprint": alert.fingerprint,
            "type": alert.type,
            "entity": alert.entity,
            "severity": alert.severity.value,
            "severity_level": alert.severity.level,
            "summary": alert.summary,
            "evidence": alert.evidence,
            "opened_at": opened,
            "last_seen": opened,
            "count": 1,
        }
        try:
            self._db.put_item(
                TableName=self._table, Item=to_item(item), ConditionExpression="attribute_not_exists(PK)"
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return _alert_from_item(item)

    def _repeat(self, current: Alert, alert: AlertIn, now: dt.datetime) -> RaisedAlert | None:
        escalate = alert.severity.level > current.severity.level
        sets = ["last_seen = :now", "#count = #count + :one", "evidence = :evidence", "summary = :summary"]
        values: dict[str, Any] = {
            ":now": utc_iso(now),
            ":one": 1,
            ":evidence": alert.evidence,
            ":summary": alert.summary,
            ":opened": utc_iso(current.opened_at),
        }
        if escalate:
            sets += ["severity = :severity", "severity_level = :level", "GSI1SK = :gsi1sk"]
            values.update(
                {
                    ":severity": alert.severity.value,
                    ":level": alert.severity.level,
                    ":gsi1sk": f"{alert.severity.rank}#{utc_iso(current.opened_at)}",
                }
            )
        try:
            response = self._db.update_item(
                TableName=self._table,
                Key=to_item({"PK": _alert_pk(current.fingerprint), "SK": ALERT_OPEN_SK}),
                UpdateExpression=f"SET {', '.join(sets)} REMOVE recovered_at",
                # Still the same incident: it was not resolved (and reopened) since we read it.
                ConditionExpression="opened_at = :opened",
                ExpressionAttributeNames={"#count": "count"},
                ExpressionAttributeValues=to_item(values),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return RaisedAlert(
            _alert_from_item(from_item(response["Attributes"])), created=False, escalated=escalate
        )

    def open_alert(self, fingerprint: str) -> Alert | None:
        """The open alert with ``fingerprint`` (a strongly consistent read), or None."""
        with unavailable_on_throttle("the alert store"):
            response = self._db.get_item(
                TableName=self._table,
                Key=to_item({"PK": _alert_pk(fingerprint), "SK": ALERT_OPEN_SK}),
                ConsistentRead=True,
            )
        item = response.get("Item")
        return _alert_from_item(from_item(item)) if item else None

    def open_alerts(self, limit: int = 100) -> list[Alert]:
        """Open alerts, most severe first, then oldest first (the sparse GSI1; eventually consistent)."""
        items = self._query(
            index="GSI1",
            condition="GSI1PK = :pk",
            values={":pk": OPEN_ALERTS_GSI1PK},
            limit=limit,
        )
        return [_alert_from_item(i) for i in items]

    def alert_history(self, fingerprint: str, limit: int = 20) -> list[Alert]:
        """Resolved alerts with ``fingerprint``, newest first."""
        # History sort keys are timestamps ("2026-..."), which sort before "OPEN".
        items = self._query(
            index=None,
            condition="PK = :pk AND SK < :open",
            values={":pk": _alert_pk(fingerprint), ":open": ALERT_OPEN_SK},
            limit=limit,
            descending=True,
        )
        return [_alert_from_item(i) for i in items]

    def mark_notified(self, alert: Alert, severity: Severity, now: dt.datetime) -> bool:
        """Record that operators were told about ``alert`` at ``severity``; False if it is no
        longer open (resolved meanwhile)."""
        return self._update_open(
            alert,
            "SET notified_severity = :severity, notified_at = :now REMOVE notification_error",
            {":severity": severity.value, ":now": utc_iso(now)},
        )

    def record_notification_failure(self, alert: Alert, error: str, now: dt.datetime) -> bool:
        """Record that a notification about ``alert`` failed (the next run retries it)."""
        return self._update_open(
            alert,
            "SET notification_error = :error, notification_failed_at = :now",
            {":error": error[:500], ":now": utc_iso(now)},
        )

    def mark_recovered(self, alert: Alert, now: dt.datetime) -> bool:
        """Record when the condition cleared (kept if already set); the alert stays open until
        :meth:`resolve_alert`, e.g. while its resolution notice is pending."""
        return self._update_open(
            alert, "SET recovered_at = if_not_exists(recovered_at, :now)", {":now": utc_iso(now)}
        )

    def _update_open(self, alert: Alert, expression: str, values: dict[str, Any]) -> bool:
        try:
            with unavailable_on_throttle("the alert store"):
                self._db.update_item(
                    TableName=self._table,
                    Key=to_item({"PK": _alert_pk(alert.fingerprint), "SK": ALERT_OPEN_SK}),
                    UpdateExpression=expression,
                    ConditionExpression="opened_at = :opened",
                    ExpressionAttributeValues=to_item({**values, ":opened": utc_iso(alert.opened_at)}),
                )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def resolve_alert(
        self, fingerprint: str, now: dt.datetime, resolution: str | None = None
    ) -> Alert | None:
        """Close the open alert: delete it and write its history item in one transaction.

        Returns the history entry, or None when no such alert was open (or a concurrent call
        resolved it first).
        """
        current = self.open_alert(fingerprint)
        if current is None:
            return None
        resolved = current.model_copy(update={"resolved_at": now, "resolution": resolution})
        history = _alert_to_item(resolved) | {
            "PK": _alert_pk(fingerprint),
            "SK": utc_iso(current.opened_at),
            "expires_at": _ttl(now, ALERT_HISTORY_TTL),
        }
        try:
            with unavailable_on_throttle("the alert store"):
                self._db.transact_write_items(
                    TransactItems=[
                        {
                            "Delete": {
                                "TableName": self._table,
                                "Key": to_item({"PK": _alert_pk(fingerprint), "SK": ALERT_OPEN_SK}),
                                "ConditionExpression": "opened_at = :opened",
                                "ExpressionAttributeValues": to_item({":opened": utc_iso(current.opened_at)}),
                            }
                        },
                        {
                            "Put": {
                                "TableName": self._table,
                                "Item": to_item(history),
                                "ConditionExpression": "attribute_not_exists(PK)",
                            }
                        },
                    ]
                )
        except ClientError as exc:
            reasons = {str(r.get("Code")) for r in exc.response.get("CancellationReasons") or []}
            if error_code(exc) == "TransactionCanceledException" and "ConditionalCheckFailed" in reasons:
                return None  # resolved (or reopened and resolved) by a concurrent call
            if error_code(exc) == "TransactionCanceledException":
                raise Unavailable(
                    "the alert store is busy; retry shortly (nothing was changed)",
                    details={"retryable": True, "outcome": "unchanged"},
                ) from exc
            raise
        return resolved

    # ------------------------------------------------------------------ health
    def record_health(
        self, records: Sequence[HealthRecord], summary: HealthSummary, now: dt.datetime
    ) -> None:
        """Write each dependency's minute and the latest summary (one batch; a run repeated in
        the same minute overwrites that minute). Raises :class:`Unavailable` when DynamoDB keeps
        some of them unprocessed."""
        expires_at = _ttl(now, HEALTH_RECORD_TTL)
        items = [
            {
                "PK": _health_pk(r.service),
                "SK": minute_key(r.minute),
                "status": r.status.value,
                "latency_ms": None if r.latency_ms is None else round(r.latency_ms, 3),
                "breaker_state": r.breaker_state,
                "error": r.error[:500] if r.error else None,
                "expires_at": expires_at,
            }
            for r in records
        ]
        items.append(
            {
                "PK": HEALTH_SUMMARY_PK,
                "SK": HEALTH_SUMMARY_SK,
                "observed_at": utc_iso(summary.observed_at),
                "status": summary.status.value,
                # One JSON attribute: read whole, never queried, and far smaller than a map.
                "document": summary.model_dump_json(),
            }
        )
        for start in range(0, len(items), _BATCH_WRITE_LIMIT):
            self._batch_put(items[start : start + _BATCH_WRITE_LIMIT])

    def _batch_put(self, items: Sequence[Mapping[str, Any]]) -> None:
        pending: list[Any] = [{"PutRequest": {"Item": to_item(i)}} for i in items]
        for attempt in range(_BATCH_WRITE_ATTEMPTS):
            with unavailable_on_throttle("the health store"):
                response = self._db.batch_write_item(RequestItems={self._table: pending})
            pending = list((response.get("UnprocessedItems") or {}).get(self._table, []))
            if not pending:
                return
            time.sleep(0.05 * 2**attempt)  # DynamoDB asks for backoff on unprocessed items
        raise Unavailable(
            "the health store is busy; retry shortly", details={"retryable": True, "outcome": "partial"}
        )

    def latest_summary(self) -> HealthSummary | None:
        """The HealthCheck's last summary (eventually consistent: it changes once a minute)."""
        with unavailable_on_throttle("the health store"):
            response = self._db.get_item(
                TableName=self._table, Key=to_item({"PK": HEALTH_SUMMARY_PK, "SK": HEALTH_SUMMARY_SK})
            )
        item = response.get("Item")
        if not item:
            return None
        return HealthSummary.model_validate_json(str(from_item(item)["document"]))

    def health_records(self, service: str, start: dt.datetime, end: dt.datetime) -> list[HealthRecord]:
        """The recorded minutes of ``service`` from ``start`` to ``end`` (inclusive), oldest first."""
        items = self._query(
            index=None,
            condition="PK = :pk AND SK BETWEEN :low AND :high",
            values={":pk": _health_pk(service), ":low": minute_key(start), ":high": minute_key(end)},
            projection="SK, #status, latency_ms, breaker_state, #error",
            names={"#status": "status", "#error": "error"},
        )
        return [
            HealthRecord(
                service=service,
                minute=dt.datetime.strptime(str(i["SK"]), "%Y-%m-%dT%H:%MZ").replace(tzinfo=dt.UTC),
                status=HealthStatus(i["status"]),
                latency_ms=i.get("latency_ms"),
                breaker_state=i.get("breaker_state"),
                error=i.get("error"),
            )
            for i in items
        ]

    def uptime(self, service: str, start: dt.datetime, end: dt.datetime) -> Uptime:
        """Uptime of ``service`` over the window, from its recorded minutes (one paginated Query)."""
        return uptime_of(service, self.health_records(service, start, end), start, end)

    # ------------------------------------------------------------------ plumbing
    def _query(
        self,
        *,
        index: str | None,
        condition: str,
        values: Mapping[str, Any],
        limit: int | None = None,
        descending: bool = False,
        projection: str | None = None,
        names: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for item in self._pages(index, condition, values, limit, descending, projection, names):
            found.append(item)
            if limit is not None and len(found) >= limit:
                break
        return found

    def _pages(
        self,
        index: str | None,
        condition: str,
        values: Mapping[str, Any],
        limit: int | None,
        descending: bool,
        projection: str | None,
        names: Mapping[str, str] | None,
    ) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": to_item(values),
            "ScanIndexForward": not descending,
        }
        if index:
            request["IndexName"] = index
        if limit is not None:
            request["Limit"] = limit
        if projection:
            request["ProjectionExpression"] = projection
        if names:
            request["ExpressionAttributeNames"] = dict(names)
        while True:
            with unavailable_on_throttle("the platform store"):
                response = self._db.query(**request)
            for item in response.get("Items", []):
                yield from_item(item)
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last


def _alert_to_item(alert: Alert) -> dict[str, Any]:
    data = {
        name: utc_iso(value) if isinstance(value, dt.datetime) else value
        for name, value in alert.model_dump(mode="python").items()
    }
    data["severity_level"] = alert.severity.level
    return data


def _alert_from_item(item: Mapping[str, Any]) -> Alert:
    fields = {k: v for k, v in item.items() if k in Alert.model_fields}
    fields.setdefault("evidence", {})
    return Alert.model_validate(fields)
