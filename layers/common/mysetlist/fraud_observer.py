"""Suspicious-activity detection wired to the votes: the VoteProcessor's observer and the sweep.

Both run the fraud engine (``mysetlist.fraud``) and act on what it reports the same way
(:class:`IncidentResponder`): one alert per incident in ``system_alerts``
(``PlatformStore.raise_alert``, fingerprint ``vote_fraud.<kind>#<entity>``, de-duplicated while
open), then the incident's votes quarantined (``mysetlist.moderation``), their flags naming
that alert.

* :class:`FraudObserver` (in the VoteProcessor) feeds the engine the votes *cast* in each
  counted batch: a new vote or a switched one whose new image is not flagged. The stream
  records that flags, releases and confirmations produce are not votes and are left out, so a
  moderator's decision is never mistaken for voting.
* :class:`FraudSweep` (the FraudSweeper, every 5 minutes) runs the engine's detectors over the
  active shows with their longer look-back: over the Valkey window (``engine.sweep``), or over
  the recent vote items read from the votes table's ByShow index (``engine.detect``) when the
  window is away or has a gap. It also resolves fraud alerts that have been quiet for an hour.
  It is idempotent: votes already flagged are skipped and an open alert is only repeated.

Gaps: the engine reports each vote once (its window remembers what it reported). Votes it could
not look at (the window was unavailable) or reported but that could not be flagged (DynamoDB
throttled past the retries) would be lost to the window; they are recorded as a *detection gap*
(:class:`DetectionGaps`, a warning alert), and while a gap is recent the sweeper reads the vote
items instead of the window, which finds them again.

Faults degrade: a Valkey or DynamoDB fault is logged and counted (``FraudDetectionDegraded``,
``FraudQuarantineFailed``, ``FraudAlertFailed``) and never raised out of the observer.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from aws_lambda_powertools.metrics import MetricUnit

from mysetlist import keys
from mysetlist.alerts import Alert, AlertIn, RaisedAlert, Severity, alert_fingerprint
from mysetlist.catalog_store import CatalogStore
from mysetlist.dynamo import from_item, to_item, unavailable_on_throttle
from mysetlist.fraud.window import WindowUnavailable
from mysetlist.models import Show
from mysetlist.moderation import QuarantineReport, evidence_excerpt, summarize
from mysetlist.observability import logger, metrics, remaining_time_ms
from mysetlist.reconcile import active_shows
from mysetlist.signals import Incident, VoteSignal, signal_from_item
from mysetlist.timestamps import epoch_of, parse_utc
from mysetlist.voting import voting_closes_at

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from mysetlist.stream_batch import CountedBatch

ALERT_TYPE = "vote_fraud"
# Gaps in window-based detection (DetectionGaps): alerts of this type, by reason.
GAP_ALERT_TYPE = "fraud_detection"
DETECTION_GAP = "detection"
QUARANTINE_GAP = "quarantine"
GAP_REASONS = (DETECTION_GAP, QUARANTINE_GAP)
# A container raises each gap alert at most this often (seconds): a Valkey outage would
# otherwise cost an alert update per batch.
GAP_RAISE_INTERVAL = 60.0
# Alert evidence keeps a few of the incident's vote ids (the full list is on the flagged votes).
ALERT_SAMPLE_VOTES = 5
# The sweeper: how many shows one run looks at, how many vote items its fallback reads in all,
# and how far back that fallback reads (the detectors' longest window, with a margin).
SWEEP_MAX_SHOWS = 300
SWEEP_MAX_VOTES = 20_000
# The ByShow index has no time key: older votes are read and filtered out, within this bound.
SWEEP_MAX_SCANNED = 200_000
# The default look-back; the FraudSweeper uses the engine's (FraudConfig.show_retention_seconds:
# its velocity and brigade baselines need that much history).
SWEEP_LOOKBACK = dt.timedelta(minutes=70)
# No show's vote items are read with less time than this left (seconds).
SWEEP_MIN_SECONDS_PER_SHOW = 3.0
# A fraud alert not raised again for this long is resolved by the sweeper: the next incident on
# the same entity opens (and notifies) a new one.
FRAUD_ALERT_QUIET = dt.timedelta(hours=1)
_OPEN_ALERTS_READ = 500
_PAGE = 500
_VOTE_TYPES = frozenset({"up", "down"})
# The ByShow index's projection: what a detector needs (see template.yaml).
_SIGNAL_ATTRIBUTES = (
    "show_id",
    "song_id",
    "user_id",
    "vote_type",
    "artist_id",
    "created_at",
    "updated_at",
    "moderation",
    "net",
    "ip_hash",
    "ua_hash",
    "device_hash",
    "account_created_at",
)


# ---------------------------------------------------------------------------------- ports


class FraudDetector(Protocol):
    """What the observer needs of the engine (``mysetlist.fraud.FraudEngine``)."""

    def observe(self, signals: Sequence[VoteSignal], now: float) -> list[Incident]: ...

    def forget(self, signals: Sequence[VoteSignal]) -> None: ...


class SweepingDetector(FraudDetector, Protocol):
    """What the sweeper needs of the engine: its windowed detectors over shows (the Valkey
    window) and the same detectors over votes it is given (the fallback)."""

    def sweep(self, show_ids: Sequence[str], now: float) -> list[Incident]: ...

    def detect(self, votes: Sequence[VoteSignal], now: float) -> list[Incident]: ...


class Quarantiner(Protocol):
    def quarantine(
        self,
        incident: Incident,
        now: dt.datetime,
        *,
        alert: Alert | None = None,
        expected: Mapping[str, str] | None = None,
        remaining_ms: Callable[[], int | None] = remaining_time_ms,
    ) -> QuarantineReport: ...


class AlertSink(Protocol):
    def raise_alert(self, alert: AlertIn, now: dt.datetime) -> RaisedAlert: ...


class AlertAdmin(AlertSink, Protocol):
    def open_alert(self, fingerprint: str) -> Alert | None: ...

    def open_alerts(self, limit: int = 100) -> list[Alert]: ...

    def resolve_alert(
        self, fingerprint: str, now: dt.datetime, resolution: str | None = None
    ) -> Alert | None: ...


Metric = Callable[[str, float], None]


def add_metric(name: str, value: float) -> None:
    """A count in the invocation's metrics (flushed by the entry point)."""
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


# ---------------------------------------------------------------------------------- pure parts


def cast_signal(record: Mapping[str, Any]) -> VoteSignal | None:
    """The signal of a stream record that is a vote being cast: a new vote, or a vote switched
    to the other type, whose new image is not flagged. None for removals, for the updates that
    flag, release or confirm a vote (its type is unchanged) and for anything that is not a vote."""
    body: Mapping[str, Any] = record.get("dynamodb") or {}
    new = body.get("NewImage")
    if not new:
        return None
    if (new.get("vote_type") or {}).get("S") not in _VOTE_TYPES or "moderation" in new:
        return None
    old = body.get("OldImage")
    if old and (old.get("vote_type") or {}).get("S") == new["vote_type"]["S"]:
        return None  # not a cast: a moderation update or another attribute change
    try:
        return signal_from_item(from_item(new))
    except (TypeError, ValueError):
        return None


def removal_signal(record: Mapping[str, Any]) -> VoteSignal | None:
    """The last state of a vote its voter removed (a record with only an old image)."""
    body: Mapping[str, Any] = record.get("dynamodb") or {}
    old = body.get("OldImage")
    if not old or body.get("NewImage"):
        return None
    try:
        return signal_from_item(from_item(old))
    except (TypeError, ValueError):
        return None


_TYPE_UNSAFE = re.compile(r"[^a-z0-9_.-]+")
_ENTITY_UNSAFE = re.compile(r"[^A-Za-z0-9:._#/@-]+")


def alert_type(kind: str) -> str:
    """``vote_fraud.<kind>``: the alert's type (what kind of incident), within the alert rules."""
    safe = _TYPE_UNSAFE.sub("_", kind.lower()).strip("_.-") or "unknown"
    return f"{ALERT_TYPE}.{safe}"[:64]


def alert_entity(entity: str) -> str:
    """The incident's entity as an alert entity (characters outside the alert rules replaced)."""
    safe = _ENTITY_UNSAFE.sub("-", entity.strip())
    if not safe or not safe[0].isalnum():
        safe = "x" + safe
    return safe[:200]


def severity_of(incident: Incident) -> Severity:
    try:
        return Severity(incident.severity)
    except ValueError:
        return Severity.WARNING


def alert_for(incident: Incident) -> AlertIn:
    """The alert of one incident: ``vote_fraud.<kind>`` about its entity, with the detector's
    evidence and the votes it reports now (an open alert keeps the latest)."""
    votes = sorted(set(incident.vote_ids))
    evidence: dict[str, Any] = {
        "kind": incident.kind,
        "show_id": incident.show_id,
        "votes": len(votes),
        "vote_ids_sample": votes[:ALERT_SAMPLE_VOTES],
        "detector": evidence_excerpt(incident.evidence),
    }
    summary = incident.summary.strip()[:300] or f"{incident.kind} on {incident.entity}"
    return AlertIn(
        type=alert_type(incident.kind),
        entity=alert_entity(incident.entity),
        severity=severity_of(incident),
        summary=summary,
        evidence={k: v for k, v in evidence.items() if v is not None},
    )


# ---------------------------------------------------------------------------------- gaps


class DetectionGaps:
    """Records that window-based detection missed something, as a warning alert
    ``fraud_detection#<reason>`` (listed for operators, de-duplicated while open):

    * ``detection``: the engine could not look at some votes (the window was unavailable);
    * ``quarantine``: votes the engine reported (and will not report again) were not flagged.

    While such an alert was raised less than the sweep's look-back ago, the sweeper reads the
    vote items from DynamoDB instead of the window, which finds those votes again; then it
    resolves the alert. A container raises each reason at most once per ``interval`` seconds.
    """

    SUMMARIES: ClassVar[Mapping[str, str]] = {
        DETECTION_GAP: "Fraud detection skipped votes (its Valkey window was unavailable); the sweeper "
        "checks the recent vote items from DynamoDB until the gap is covered",
        QUARANTINE_GAP: "Votes reported by fraud detection could not be quarantined; the sweeper checks "
        "the recent vote items from DynamoDB until they are",
    }

    def __init__(
        self,
        alerts: AlertSink,
        *,
        interval: float = GAP_RAISE_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._alerts = alerts
        self._interval = interval
        self._monotonic = monotonic
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def record(self, reason: str, now: dt.datetime, detail: str) -> None:
        """Raise (or repeat) the gap alert of ``reason``; never raises."""
        at = self._monotonic()
        with self._lock:
            last = self._last.get(reason)
            if last is not None and at - last < self._interval:
                return
            self._last[reason] = at
        alert = AlertIn(
            type=GAP_ALERT_TYPE,
            entity=reason,
            severity=Severity.WARNING,
            summary=self.SUMMARIES[reason],
            evidence={"detail": detail[:300]},
        )
        try:
            self._alerts.raise_alert(alert, now)
        except Exception:
            with self._lock:
                self._last.pop(reason, None)  # try again with the next gap
            logger.exception("could not record a fraud detection gap", extra={"reason": reason})


# ---------------------------------------------------------------------------------- acting


@dataclass(slots=True)
class ResponseReport:
    """What was done about a list of incidents."""

    incidents: int = 0
    quarantines: list[QuarantineReport] = field(default_factory=list)
    quarantine_errors: int = 0
    alerts_opened: int = 0
    alerts_repeated: int = 0
    alert_failures: int = 0

    @property
    def votes_failed(self) -> int:
        return sum(len(r.failed) for r in self.quarantines)

    def summary(self) -> dict[str, Any]:
        return {
            "incidents": self.incidents,
            "votes": summarize(self.quarantines),
            "quarantine_errors": self.quarantine_errors,
            "alerts_opened": self.alerts_opened,
            "alerts_repeated": self.alerts_repeated,
            "alert_failures": self.alert_failures,
        }


class IncidentResponder:
    """Raises each incident's alert, then quarantines its votes (the flags name the alert);
    never raises for a fault. Votes left unflagged are recorded as a ``quarantine`` gap."""

    def __init__(
        self,
        moderation: Quarantiner,
        alerts: AlertSink,
        *,
        gaps: DetectionGaps | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        metric: Metric = add_metric,
    ) -> None:
        self._moderation = moderation
        self._alerts = alerts
        self._gaps = gaps or DetectionGaps(alerts)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._metric = metric

    def respond(
        self,
        incidents: Iterable[Incident],
        *,
        expected: Mapping[str, str] | None = None,
        remaining_ms: Callable[[], int | None] = remaining_time_ms,
    ) -> ResponseReport:
        report = ResponseReport()
        for incident in incidents:
            report.incidents += 1
            now = self._clock()
            alert = self._raise(incident, now, report)
            quarantined: QuarantineReport | None = None
            if incident.vote_ids:
                try:
                    quarantined = self._moderation.quarantine(
                        incident, now, alert=alert, expected=expected, remaining_ms=remaining_ms
                    )
                    report.quarantines.append(quarantined)
                except Exception as exc:  # the store reports write faults itself; this is anything else
                    report.quarantine_errors += 1
                    logger.exception(
                        "could not quarantine an incident's votes",
                        extra={"kind": incident.kind, "entity": incident.entity},
                    )
                    self._gaps.record(QUARANTINE_GAP, now, f"{type(exc).__name__}: {exc}")
            if quarantined is not None and (quarantined.failed or quarantined.invalid):
                logger.warning(
                    "some votes of an incident were not quarantined",
                    extra={
                        **quarantined.summary(),
                        "failed": dict(list(quarantined.failed.items())[:10]),
                        "invalid": quarantined.invalid[:10],
                    },
                )
            if quarantined is not None and quarantined.failed:
                reasons = sorted(set(quarantined.failed.values()))
                self._gaps.record(
                    QUARANTINE_GAP, now, f"{len(quarantined.failed)} votes not flagged: {'; '.join(reasons)}"
                )
            logger.info(
                "fraud incident",
                extra={
                    "kind": incident.kind,
                    "entity": incident.entity,
                    "severity": incident.severity,
                    "show_id": incident.show_id,
                    "votes": len(incident.vote_ids),
                    "alert": alert.fingerprint if alert else None,
                    "quarantine": quarantined.summary() if quarantined else None,
                },
            )
        self._publish(report)
        return report

    def _raise(self, incident: Incident, now: dt.datetime, report: ResponseReport) -> Alert | None:
        try:
            raised = self._alerts.raise_alert(alert_for(incident), now)
        except Exception:
            report.alert_failures += 1
            logger.exception(
                "could not raise a fraud alert", extra={"kind": incident.kind, "entity": incident.entity}
            )
            return None
        if raised.created:
            report.alerts_opened += 1
        else:
            report.alerts_repeated += 1
        return raised.alert

    def _publish(self, report: ResponseReport) -> None:
        if not report.incidents:
            return
        totals = summarize(report.quarantines)
        self._metric("FraudIncidents", report.incidents)
        self._metric("VotesQuarantined", totals["flagged"])
        failed = totals["failed"] + totals["invalid"] + report.quarantine_errors
        if failed:
            self._metric("FraudQuarantineFailed", failed)
        if report.alerts_opened:
            self._metric("FraudAlertsOpened", report.alerts_opened)
        if report.alert_failures:
            self._metric("FraudAlertFailed", report.alert_failures)


# ---------------------------------------------------------------------------------- the observer


class FraudObserver:
    """The VoteProcessor's fraud detection (a ``stream_batch.BatchObserver``).

    Every record of the counted batch is looked at, those an earlier attempt counted included
    (its observers may not have run): the engine's window keeps a vote once and reports a vote
    once, quarantining is idempotent and a repeated alert only counts again. When the engine
    cannot run (the window is unavailable), the batch is recorded as a ``detection`` gap.
    """

    name = "fraud"

    def __init__(
        self,
        engine: FraudDetector,
        moderation: Quarantiner,
        alerts: AlertSink,
        clock: Callable[[], dt.datetime] | None = None,
        *,
        metric: Metric = add_metric,
        gaps: DetectionGaps | None = None,
    ) -> None:
        self._engine = engine
        self._metric = metric
        self._gaps = gaps or DetectionGaps(alerts)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._responder = IncidentResponder(moderation, alerts, gaps=self._gaps, clock=clock, metric=metric)

    def observe(self, batch: CountedBatch) -> None:
        removed = [s for s in (removal_signal(record) for record, _ in batch.records) if s is not None]
        if removed:
            # Removed votes leave the window, flags included: a voter who removes a quarantined
            # vote and casts it again is judged again, like any new vote.
            try:
                self._engine.forget(removed)
            except Exception as exc:
                logger.warning(
                    "removed votes not forgotten by the fraud window", extra={"error": repr(exc)[:300]}
                )
        signals = [s for s in (cast_signal(record) for record, _ in batch.records) if s is not None]
        if not signals:
            return
        try:
            incidents = self._engine.observe(signals, batch.now.timestamp())
        except WindowUnavailable as exc:  # Valkey away: the sweeper reads the vote items instead
            logger.warning(
                "fraud detection skipped a batch: the window is unavailable",
                extra={"votes": len(signals), "error": str(exc)[:300]},
            )
            self._degraded(f"window unavailable: {exc}")
            return
        except Exception as exc:  # a bug or an unexpected fault: detection degrades, tallies do not
            logger.exception("fraud detection failed for a batch", extra={"votes": len(signals)})
            self._degraded(f"{type(exc).__name__}: {exc}")
            return
        if incidents:
            self._responder.respond(
                incidents,
                expected={s.vote_id: s.vote_type for s in signals},
                remaining_ms=batch.remaining_ms,
            )

    def _degraded(self, detail: str) -> None:
        self._metric("FraudDetectionDegraded", 1)
        self._gaps.record(DETECTION_GAP, self._clock(), detail)


# ---------------------------------------------------------------------------------- the sweep


@dataclass(frozen=True, slots=True)
class RecentRead:
    """Recent votes of one show, how many index items were read for them, and whether a
    bound stopped the read."""

    votes: list[VoteSignal]
    scanned: int
    truncated: bool


class ShowVotesReader:
    """Recent vote items of a show from the ByShow index (its projection holds the signals)."""

    def __init__(self, client: DynamoDBClient, votes_table: str) -> None:
        self._db = client
        self._table = votes_table

    def recent(self, show_id: str, since: dt.datetime, limit: int, scan_limit: int) -> RecentRead:
        """Votes of ``show_id`` whose current state is from ``since`` on: at most ``limit``
        returned and about ``scan_limit`` index items read (the index has no time key: older
        votes are read and filtered out). The index is sharded by user, so a partial read is
        the votes of a subset of the show's voters."""
        names = {f"#a{i}": name for i, name in enumerate(_SIGNAL_ATTRIBUTES)}
        found: list[VoteSignal] = []
        scanned = 0
        for shard in range(keys.VOTE_INDEX_SHARDS):
            request: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": "ByShow",
                "KeyConditionExpression": "ShowShard = :pk",
                "FilterExpression": "#since >= :since",
                "ProjectionExpression": ", ".join(names),
                "ExpressionAttributeNames": {**names, "#since": "updated_at"},
                "ExpressionAttributeValues": to_item(
                    {":pk": f"{show_id}#{shard:02d}", ":since": since.astimezone(dt.UTC).isoformat()}
                ),
            }
            while True:
                request["Limit"] = max(1, min(_PAGE, scan_limit - scanned))
                with unavailable_on_throttle("the votes table"):
                    response = self._db.query(**request)
                scanned += int(response.get("ScannedCount", 0))
                for raw in response.get("Items", []):
                    signal = signal_from_item(from_item(raw))
                    if signal is not None:
                        found.append(signal)
                last = response.get("LastEvaluatedKey")
                if len(found) >= limit or (last and scanned >= scan_limit):
                    return RecentRead(found[:limit], scanned, truncated=True)
                if not last:
                    break
                request["ExclusiveStartKey"] = last
        return RecentRead(found, scanned, truncated=False)


class VoteReader(Protocol):
    def recent(self, show_id: str, since: dt.datetime, limit: int, scan_limit: int) -> RecentRead: ...


class TallyActivity:
    """When a show's tallies last changed (the VoteProcessor stamps each song's tally item with
    ``updated_at``): shows with no counted change since the look-back have no recent votes.
    One small query per tally partition of the show."""

    def __init__(self, client: DynamoDBClient, tallies_table: str) -> None:
        self._db = client
        self._table = tallies_table

    def last_change(self, show_id: str) -> dt.datetime | None:
        latest: str | None = None
        for pk in keys.tally_partitions(show_id):
            request: dict[str, Any] = {
                "TableName": self._table,
                "KeyConditionExpression": "PK = :pk",
                "ExpressionAttributeValues": to_item({":pk": pk}),
                "ProjectionExpression": "updated_at",
            }
            while True:
                with unavailable_on_throttle("the tallies"):
                    response = self._db.query(**request)
                for raw in response.get("Items", []):
                    stamp = from_item(raw).get("updated_at")
                    if stamp and (latest is None or epoch_of(str(stamp)) > epoch_of(latest)):
                        latest = str(stamp)
                last = response.get("LastEvaluatedKey")
                if not last:
                    break
                request["ExclusiveStartKey"] = last
        return parse_utc(latest) if latest else None


@dataclass(slots=True)
class SweepReport:
    shows: int = 0
    source: str = "none"  # window | votes_table | none
    fallback_reason: str | None = None
    votes_read: int = 0
    items_scanned: int = 0
    shows_read: int = 0
    truncated: bool = False
    detection_failed: bool = False
    response: ResponseReport = field(default_factory=ResponseReport)
    alerts_resolved: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """The run left work undone that the next one must do (the error alarm counts these)."""
        r = self.response
        return self.detection_failed or bool(r.votes_failed or r.quarantine_errors or r.alert_failures)

    def summary(self) -> dict[str, Any]:
        return {
            "shows": self.shows,
            "source": self.source,
            "fallback_reason": self.fallback_reason,
            "votes_read": self.votes_read,
            "items_scanned": self.items_scanned,
            "shows_read": self.shows_read,
            "truncated": self.truncated,
            "detection_failed": self.detection_failed,
            **self.response.summary(),
            "alerts_resolved": self.alerts_resolved,
        }


def resolve_quiet_alerts(store: AlertAdmin, now: dt.datetime, quiet_after: dt.timedelta) -> list[str]:
    """Resolve the open fraud alerts not raised again for ``quiet_after``; their fingerprints.
    A fault is logged and leaves them open for the next run."""
    resolved: list[str] = []
    minutes = int(quiet_after.total_seconds() // 60)
    try:
        quiet = [
            a
            for a in store.open_alerts(limit=_OPEN_ALERTS_READ)
            if a.type.startswith(f"{ALERT_TYPE}.") and now - a.last_seen >= quiet_after
        ]
        for alert in quiet:
            closed = store.resolve_alert(alert.fingerprint, now, resolution=f"quiet for {minutes} minutes")
            if closed is not None:
                resolved.append(alert.fingerprint)
    except Exception:
        logger.exception("quiet fraud alerts could not be resolved")
    return resolved


def sweep_candidates(
    catalog: CatalogStore, now: dt.datetime, *, lookback: dt.timedelta, limit: int
) -> tuple[list[Show], bool]:
    """Shows that may hold recent votes: voting open now, or closed less than ``lookback`` ago
    (the reconciler's active shows, narrowed); and whether the list stopped at ``limit``."""
    shows, truncated = active_shows(catalog, now, limit=limit)
    return [s for s in shows if voting_closes_at(s) >= now - lookback], truncated


class FraudSweep:
    """One FraudSweeper run (see the module docstring).

    The window is used when Valkey is configured, no detection gap was recorded within the
    look-back (:class:`DetectionGaps`) and it answers; otherwise the vote items of the shows
    whose tallies changed within the look-back are read (most recently changed first) within
    ``max_votes`` votes and ``max_scanned`` index items per run, and given to
    ``engine.detect``. A gap older than the look-back has been covered by those reads and is
    resolved.
    """

    def __init__(
        self,
        engine: SweepingDetector,
        moderation: Quarantiner,
        alerts: AlertAdmin,
        catalog: CatalogStore,
        votes: VoteReader,
        *,
        window_configured: bool,
        last_change: Callable[[str], dt.datetime | None] | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        metric: Metric = add_metric,
        lookback: dt.timedelta = SWEEP_LOOKBACK,
        quiet_after: dt.timedelta = FRAUD_ALERT_QUIET,
        max_shows: int = SWEEP_MAX_SHOWS,
        max_votes: int = SWEEP_MAX_VOTES,
        max_scanned: int = SWEEP_MAX_SCANNED,
    ) -> None:
        self._engine = engine
        self._alerts = alerts
        self._gaps = DetectionGaps(alerts)
        self._responder = IncidentResponder(moderation, alerts, gaps=self._gaps, clock=clock, metric=metric)
        self._catalog = catalog
        self._votes = votes
        self._window_configured = window_configured
        self._last_change = last_change
        self._metric = metric
        self._lookback = lookback
        self._quiet_after = quiet_after
        self._max_shows = max_shows
        self._max_votes = max_votes
        self._max_scanned = max_scanned

    def run(self, now: dt.datetime, *, time_left: Callable[[], float] = lambda: float("inf")) -> SweepReport:
        """Sweep the active shows. ``time_left`` is the invocation's remaining time in seconds."""
        report = SweepReport()
        report.alerts_resolved = resolve_quiet_alerts(self._alerts, now, self._quiet_after)
        shows, truncated = sweep_candidates(
            self._catalog, now, lookback=self._lookback, limit=self._max_shows
        )
        report.shows, report.truncated = len(shows), truncated
        if not shows:
            return report
        incidents: list[Incident] | None = None
        expected: dict[str, str] = {}
        report.fallback_reason = self._window_unusable(now, report)
        if report.fallback_reason is None:
            try:
                incidents = self._engine.sweep([s.show_id for s in shows], now.timestamp())
                report.source = "window"
            except Exception as exc:  # WindowUnavailable above all; a bug must not stop the sweep
                if isinstance(exc, WindowUnavailable):
                    logger.warning("the fraud window is unavailable", extra={"error": str(exc)[:300]})
                else:
                    logger.exception("the fraud window could not be swept")
                report.fallback_reason = "window_unavailable"
                self._metric("FraudDetectionDegraded", 1)
                self._gaps.record(DETECTION_GAP, now, f"sweep: {type(exc).__name__}: {exc}")
        if incidents is None:
            report.source = "votes_table"
            incidents, expected = self._from_votes(shows, now, report, time_left)

        def remaining_ms() -> int | None:
            left = time_left()
            return None if left == float("inf") else int(left * 1000)

        report.response = self._responder.respond(incidents, expected=expected, remaining_ms=remaining_ms)
        return report

    def _window_unusable(self, now: dt.datetime, report: SweepReport) -> str | None:
        """Why the window cannot be trusted now (None: it can)."""
        if not self._window_configured:
            return "no_window"
        for reason in GAP_REASONS:
            fingerprint = alert_fingerprint(GAP_ALERT_TYPE, reason)
            try:
                gap = self._alerts.open_alert(fingerprint)
                if gap is None:
                    continue
                if now - gap.last_seen < self._lookback:
                    return f"gap:{reason}"
                covered = self._alerts.resolve_alert(
                    fingerprint, now, resolution="covered by the sweeper's reads of the vote items"
                )
                if covered is not None:
                    report.alerts_resolved.append(fingerprint)
            except Exception:
                logger.exception("detection gaps could not be read: reading the vote items")
                return "gaps_unknown"
        return None

    def _from_votes(
        self, shows: Sequence[Show], now: dt.datetime, report: SweepReport, time_left: Callable[[], float]
    ) -> tuple[list[Incident], dict[str, str]]:
        since = now - self._lookback
        signals: list[VoteSignal] = []
        failures = 0
        for show in self._recently_changed(shows, since):
            budget = self._max_votes - len(signals)
            scan_budget = self._max_scanned - report.items_scanned
            if budget <= 0 or scan_budget <= 0 or time_left() < SWEEP_MIN_SECONDS_PER_SHOW:
                report.truncated = True
                break
            try:
                read = self._votes.recent(show.show_id, since, budget, scan_budget)
            except Exception:
                failures += 1
                logger.exception("could not read a show's recent votes", extra={"show_id": show.show_id})
                continue
            report.shows_read += 1
            report.items_scanned += read.scanned
            signals += read.votes
            report.truncated |= read.truncated
        report.votes_read = len(signals)
        if failures:
            report.detection_failed = True  # the shows not read wait for the next run
            self._gaps.record(DETECTION_GAP, now, f"sweep: {failures} shows' vote items could not be read")
        if not signals:
            return [], {}
        try:
            incidents = self._engine.detect(signals, now.timestamp())
        except Exception as exc:
            logger.exception("fraud detection over the vote items failed", extra={"votes": len(signals)})
            report.detection_failed = True
            self._gaps.record(DETECTION_GAP, now, f"sweep: {type(exc).__name__}: {exc}")
            return [], {}
        return incidents, {s.vote_id: s.vote_type for s in signals}

    def _recently_changed(self, shows: Sequence[Show], since: dt.datetime) -> list[Show]:
        """The shows whose tallies changed since ``since``, most recently changed first; every
        show, in its order, when the tallies cannot tell."""
        if self._last_change is None:
            return list(shows)
        changed: list[tuple[dt.datetime, int, Show]] = []
        for index, show in enumerate(shows):
            try:
                last = self._last_change(show.show_id)
            except Exception:
                logger.warning("tallies unavailable: reading every active show's votes", exc_info=True)
                return list(shows)
            if last is not None and last >= since:
                changed.append((last, -index, show))
        return [show for *_, show in sorted(changed, key=lambda c: (c[0], c[1]), reverse=True)]
