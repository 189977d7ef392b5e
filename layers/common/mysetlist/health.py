"""Dependency health: checks with timeouts through the circuit breakers, degradation from
latency and error budgets, the overall status, recommendations, and the scheduled run that
records the history, raises and resolves alerts and notifies operators.

Dependencies and how much each matters (:data:`DEPENDENCIES`):

========== =================================== ========= =============== =====================
service    probe                               budget    fail means      alert on fail
========== =================================== ========= =============== =====================
dynamodb   GetItem of a key that cannot exist,  100 ms   overall fail    critical
           on each table
valkey     PING                                  20 ms   overall warn    critical
s3         ListObjectsV2 models/ MaxKeys 1      300 ms   overall warn    warning
           on the model bucket
sns        GetTopicAttributes of the alert      500 ms   overall warn    warning
           topic
ses        GetSendQuota (warn above 80 % of     500 ms   overall warn    warning
           the 24-hour quota)
========== =================================== ========= =============== =====================

Only DynamoDB holds data that requests cannot do without, so only it can make the service
fail. Without Valkey requests still succeed (L1 and DynamoDB; rate limits per container), but an
unreachable cache is an infrastructure incident operators must act on, hence a critical alert.
A dependency the deployment does not configure (no ``CACHE_URL``: the valid L1-only mode; no
model bucket; no topic) is reported as ``warn`` with ``configured: false``, is left out of the
overall status (the deployment works as designed) and raises no alert.

Degraded (``warn``): a check that passed is degraded when the median latency of its last few
successful probes is above its budget (one slow probe, a cold connection, is not), or when more
than :data:`ERROR_BUDGET` of the last 15 minutes' checks failed (two failures or more). An alert
resolves when its check passes again, within both budgets: after an outage of two minutes or
more it stays open (as instability) until the failures age out of the 15-minute window, so a
flapping dependency keeps one alert open instead of paging at every flap.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from aws_lambda_powertools.metrics import MetricUnit, single_metric
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from mysetlist.alerts import (
    RECENT_WINDOW,
    Alert,
    AlertIn,
    CheckResult,
    HealthRecord,
    HealthStatus,
    HealthSummary,
    PlatformStore,
    RecentCheck,
    Severity,
    alert_fingerprint,
    floor_minute,
    uptime_of,
    utc_iso,
    worst_status,
)
from mysetlist.aws import service_client
from mysetlist.breaker import BreakerState, CircuitBreaker, CircuitOpenError, Dependency, breaker_for
from mysetlist.dynamo import client_for
from mysetlist.models import Model
from mysetlist.observability import logger, metrics
from mysetlist.settings import Settings
from mysetlist.valkey import valkey_client

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_ses import SESClient
    from mypy_boto3_sns import SNSClient

HEALTH_MEDIA_TYPE = "application/health+json"
# A check slower than this is reported failed (the probe's thread runs on; its clients time out).
CHECK_TIMEOUT_SECONDS = 5.0
# A probe's read timeout (seconds); it gets one retry.
PROBE_READ_TIMEOUT = 2.0
# More than this share of the last 15 minutes' checks failed is degraded. The share is of the
# window's 15 checks (fewer recorded ones count as passed): one failure is a blip (7 %), two are
# instability (13 %); a new deployment's first checks are not judged on a handful of samples.
ERROR_BUDGET = 0.10
WINDOW_CHECKS = int(RECENT_WINDOW / dt.timedelta(minutes=1))
# The latency budget is judged on the median of this many latest successful probes.
LATENCY_SAMPLES = 3
# SES: warn when this share of the 24-hour sending quota is used.
SES_QUOTA_WARN = 0.8
# The public status trusts the HealthCheck's summary this long (it runs every minute).
SUMMARY_STALE_AFTER = dt.timedelta(minutes=3)
# A key no item has: the DynamoDB probe reads it from each table.
PROBE_KEY = "~health-probe~"
# The type of the alerts this module raises (fingerprint dependency#<service>).
DEPENDENCY_ALERT = "dependency"


class ComponentType(StrEnum):
    """componentType of the health-check response format."""

    DATASTORE = "datastore"
    COMPONENT = "component"


@dataclass(frozen=True, slots=True)
class DependencySpec:
    """How one dependency is checked and judged."""

    service: str
    dependency: Dependency
    component_type: ComponentType
    latency_budget_ms: float
    critical: bool  # a failure fails the whole service (else it only degrades it)
    fail_severity: Severity  # the alert a failed check raises
    setting: str  # the setting that configures it (for "not configured" advice)
    advice: str  # what an operator should look at when it fails


DEPENDENCIES: Mapping[str, DependencySpec] = {
    spec.service: spec
    for spec in (
        DependencySpec(
            "dynamodb",
            Dependency.DYNAMODB,
            ComponentType.DATASTORE,
            100.0,
            critical=True,
            fail_severity=Severity.CRITICAL,
            setting="CATALOG_TABLE",
            advice="check the AWS Health Dashboard for DynamoDB in the region, the tables' "
            "ThrottledRequests and SystemErrors metrics, and the functions' IAM policies",
        ),
        DependencySpec(
            "valkey",
            Dependency.VALKEY,
            ComponentType.DATASTORE,
            20.0,
            critical=False,
            fail_severity=Severity.CRITICAL,
            setting="CACHE_URL",
            advice="check the cache's CloudWatch metrics (ElastiCache Serverless: ThrottledCmds, "
            "ElastiCacheProcessingUnits, CurrConnections) and the security group between the "
            "functions and the cache; requests are served from L1 and DynamoDB meanwhile",
        ),
        DependencySpec(
            "s3",
            Dependency.S3,
            ComponentType.DATASTORE,
            300.0,
            critical=False,
            fail_severity=Severity.WARNING,
            setting="MODEL_BUCKET",
            advice="check that the model bucket exists and the function may list it (s3:ListBucket), "
            "and S3's status in the region",
        ),
        DependencySpec(
            "sns",
            Dependency.SNS,
            ComponentType.COMPONENT,
            500.0,
            critical=False,
            fail_severity=Severity.WARNING,
            setting="ALERT_TOPIC_ARN",
            advice="check that the alert topic exists and the function may use it (sns:GetTopicAttributes, "
            "sns:Publish); alerts are still recorded and listed by the health API",
        ),
        DependencySpec(
            "ses",
            Dependency.SES,
            ComponentType.COMPONENT,
            500.0,
            critical=False,
            fail_severity=Severity.WARNING,
            setting="AWS_REGION",
            advice="check the SES account's status (sending paused, sandbox) and the function's "
            "ses:GetSendQuota permission",
        ),
    )
}
SERVICES: tuple[str, ...] = tuple(DEPENDENCIES)


# ---------------------------------------------------------------------------------- probes


class NotConfigured(Exception):
    """The deployment has no such dependency (an empty setting): nothing to probe."""


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """What a probe that got an answer found. ``warning`` degrades the check (a quota nearly
    used); ``latency_ms`` replaces the measured time when the probe knows better (the slowest of
    several requests)."""

    detail: Mapping[str, Any] = field(default_factory=dict)
    warning: str | None = None
    latency_ms: float | None = None


Probe = Callable[[], ProbeOutcome]


class ProbeFailed(Exception):
    """The dependency answered, but not as a healthy one would (a missing table or bucket)."""


@dataclass(frozen=True, slots=True)
class Check:
    """A dependency's spec and its probe. ``guarded``: run the probe through the dependency's
    breaker here (False when the client already reports to the breaker itself)."""

    spec: DependencySpec
    probe: Probe
    guarded: bool = True


def dynamodb_probe(client: Callable[[], DynamoDBClient], tables: Mapping[str, str]) -> Probe:
    """GetItem of a key that cannot exist, on each table; the slowest read is the latency."""

    def probe() -> ProbeOutcome:
        if not tables:
            raise NotConfigured("no table is configured")
        latencies: dict[str, float] = {}
        for name, table in tables.items():
            started = time.perf_counter()
            client().get_item(
                TableName=table,
                Key={"PK": {"S": PROBE_KEY}, "SK": {"S": PROBE_KEY}},
                ProjectionExpression="PK",
            )
            latencies[name] = round((time.perf_counter() - started) * 1000, 2)
        return ProbeOutcome(detail={"tables_ms": latencies}, latency_ms=max(latencies.values()))

    return probe


def valkey_probe(settings: Settings) -> Probe:
    """PING on the container's Valkey client."""

    def probe() -> ProbeOutcome:
        client = valkey_client(settings)
        if client is None:
            raise NotConfigured("no cache endpoint (CACHE_URL) is configured: the cache runs L1 only")
        if not client.ping():
            raise ProbeFailed("PING was not answered with PONG")
        return ProbeOutcome()

    return probe


def s3_probe(client: Callable[[], S3Client], bucket: str) -> Probe:
    """ListObjectsV2 of the model bucket's ``models/`` prefix, one key at most."""

    def probe() -> ProbeOutcome:
        if not bucket:
            raise NotConfigured("no model bucket (MODEL_BUCKET) is configured")
        response = client().list_objects_v2(Bucket=bucket, Prefix="models/", MaxKeys=1)
        return ProbeOutcome(detail={"bucket": bucket, "has_models": response.get("KeyCount", 0) > 0})

    return probe


def sns_probe(client: Callable[[], SNSClient], topic_arn: str) -> Probe:
    """GetTopicAttributes of the alert topic (and how many subscriptions are confirmed)."""

    def probe() -> ProbeOutcome:
        if not topic_arn:
            raise NotConfigured("no alert topic (ALERT_TOPIC_ARN) is configured")
        attributes = client().get_topic_attributes(TopicArn=topic_arn)["Attributes"]
        confirmed = int(attributes.get("SubscriptionsConfirmed", "0") or 0)
        return ProbeOutcome(detail={"topic_arn": topic_arn, "subscriptions_confirmed": confirmed})

    return probe


def ses_probe(client: Callable[[], SESClient]) -> Probe:
    """GetSendQuota: the 24-hour quota and how much of it is used (warn above 80 %).

    SES v2's GetAccount would also say whether sending is paused, but moto (the tests' and the
    local stack's AWS) does not implement it; a paused account shows in SES's own notifications
    and the account's reputation metrics.
    """

    def probe() -> ProbeOutcome:
        quota = client().get_send_quota()
        limit = float(quota.get("Max24HourSend", 0.0))
        sent = float(quota.get("SentLast24Hours", 0.0))
        used = sent / limit if limit > 0 else None  # -1: no limit
        detail: dict[str, Any] = {
            "max_24h_send": limit,
            "sent_last_24h": sent,
            "max_send_rate": quota.get("MaxSendRate"),
            "quota_used": None if used is None else round(used, 4),
        }
        warning = None
        if used is not None and used > SES_QUOTA_WARN:
            warning = f"{used:.0%} of the 24-hour sending quota is used ({sent:.0f} of {limit:.0f})"
        return ProbeOutcome(detail=detail, warning=warning)

    return probe


# ---------------------------------------------------------------------------------- clients


def aws_client(service: str, settings: Settings) -> Any:
    """The container's probe client of ``service`` ("dynamodb", "s3", "sns", "ses"): short
    timeouts and one retry, so a probe sees a failing dependency fast. DynamoDB's is the shared
    client kind (``dynamo.client_for``), which reports each request to the DYNAMODB breaker."""
    if service == "dynamodb":
        return client_for(settings, read_timeout=PROBE_READ_TIMEOUT)
    return service_client(service, settings, connect_timeout=1.0, read_timeout=PROBE_READ_TIMEOUT, attempts=2)


def table_names(settings: Settings) -> dict[str, str]:
    """The configured tables by setting name (``catalog_table`` -> its name)."""
    names = ("catalog_table", "votes_table", "tallies_table", "users_table", "platform_table")
    return {n: str(getattr(settings, n)) for n in names if getattr(settings, n)}


def default_checks(settings: Settings) -> dict[str, Check]:
    """The checks of every dependency for ``settings``; clients are made on first use."""

    def aws(service: str) -> Callable[[], Any]:
        return lambda: aws_client(service, settings)

    tables = table_names(settings)
    return {
        "dynamodb": Check(
            DEPENDENCIES["dynamodb"],
            dynamodb_probe(aws("dynamodb"), tables),
            guarded=False,  # the client reports each request to the breaker itself
        ),
        "valkey": Check(DEPENDENCIES["valkey"], valkey_probe(settings)),
        "s3": Check(DEPENDENCIES["s3"], s3_probe(aws("s3"), settings.model_bucket)),
        "sns": Check(DEPENDENCIES["sns"], sns_probe(aws("sns"), settings.alert_topic_arn)),
        "ses": Check(DEPENDENCIES["ses"], ses_probe(aws("ses"))),
    }


# ---------------------------------------------------------------------------------- running checks


BreakerLookup = Callable[[Dependency], CircuitBreaker]


def run_check(check: Check, now: dt.datetime, breakers: BreakerLookup = breaker_for) -> CheckResult:
    """Probe one dependency (through its breaker) and report what happened; never raises."""
    spec = check.spec
    breaker = breakers(spec.dependency)
    started = time.perf_counter()
    try:
        outcome = breaker.call(check.probe) if check.guarded else check.probe()
    except NotConfigured as exc:
        return CheckResult(
            service=spec.service,
            status=HealthStatus.WARN,
            observed_at=now,
            configured=False,
            breaker_state=breaker.state.value,
            reasons=[str(exc)],
            degraded_by=["not_configured"],
        )
    except CircuitOpenError as exc:
        return CheckResult(
            service=spec.service,
            status=HealthStatus.FAIL,
            observed_at=now,
            breaker_state=exc.state.value,
            error=str(exc),
            reasons=["the circuit breaker refused the probe"],
        )
    except Exception as exc:  # any failure of the probe is the finding
        return CheckResult(
            service=spec.service,
            status=HealthStatus.FAIL,
            latency_ms=_elapsed_ms(started),
            observed_at=now,
            breaker_state=breaker.state.value,
            error=_describe(exc),
        )
    latency = outcome.latency_ms if outcome.latency_ms is not None else _elapsed_ms(started)
    return CheckResult(
        service=spec.service,
        status=HealthStatus.WARN if outcome.warning else HealthStatus.PASS,
        latency_ms=round(latency, 2),
        observed_at=now,
        breaker_state=breaker.state.value,
        reasons=[outcome.warning] if outcome.warning else [],
        degraded_by=["probe"] if outcome.warning else [],
        detail=dict(outcome.detail),
    )


def run_checks(
    checks: Mapping[str, Check],
    now: dt.datetime,
    timeout_seconds: float = CHECK_TIMEOUT_SECONDS,
    breakers: BreakerLookup = breaker_for,
) -> dict[str, CheckResult]:
    """Run ``checks`` in parallel; one still running after ``timeout_seconds`` is reported failed
    (its thread finishes on its own: the clients have their own timeouts)."""
    if not checks:
        return {}
    pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="health-check")
    try:
        futures: dict[str, Future[CheckResult]] = {
            name: pool.submit(run_check, check, now, breakers) for name, check in checks.items()
        }
        wait_for(futures.values(), timeout=max(0.0, timeout_seconds))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    results: dict[str, CheckResult] = {}
    for name, future in futures.items():
        if future.done():
            results[name] = future.result()
        else:
            spec = checks[name].spec
            results[name] = CheckResult(
                service=spec.service,
                status=HealthStatus.FAIL,
                latency_ms=round(timeout_seconds * 1000, 2),
                observed_at=now,
                breaker_state=breakers(spec.dependency).state.value,
                error=f"no answer within {timeout_seconds:g} s",
            )
    return results


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _describe(exc: BaseException) -> str:
    """A short account of a probe's failure: ``NoSuchBucket (ListObjectsV2): <message>`` for an AWS
    error, ``<exception type>: <message>`` otherwise."""
    error = getattr(exc, "response", None)
    if isinstance(error, dict) and isinstance(error.get("Error"), dict):
        code = error["Error"].get("Code") or type(exc).__name__
        operation = getattr(exc, "operation_name", None)
        text = f"{code} ({operation}): {error['Error'].get('Message', '')}" if operation else f"{code}: {exc}"
        return text[:300]
    return f"{type(exc).__name__}: {exc}"[:300]


# ---------------------------------------------------------------------------------- judging


def assess(result: CheckResult, spec: DependencySpec, recent: Sequence[RecentCheck]) -> CheckResult:
    """``result`` judged against its latency and error budgets, given the checks of the last
    15 minutes before it (oldest first). Failed and unconfigured checks are left as they are."""
    if not result.configured or result.status is HealthStatus.FAIL:
        return result
    reasons, degraded_by = list(result.reasons), list(result.degraded_by)
    latency = result.latency_ms
    if latency is not None:
        earlier = [
            r.latency_ms for r in recent if r.status is not HealthStatus.FAIL and r.latency_ms is not None
        ]
        samples = [*earlier[-(LATENCY_SAMPLES - 1) :], latency]
        median = statistics.median(samples)
        if median > spec.latency_budget_ms:
            reasons.append(
                f"median latency {median:.0f} ms over the last {len(samples)} checks is above "
                f"the {spec.latency_budget_ms:.0f} ms budget"
            )
            degraded_by.append("latency")
    failed, total = error_count(recent)
    total += 1  # this check, which did not fail
    if over_error_budget(failed, total):
        reasons.append(
            f"{failed} of the last {total} checks failed, more than {ERROR_BUDGET:.0%} of "
            f"{max(total, WINDOW_CHECKS)} (the error budget)"
        )
        degraded_by.append("error_budget")
    if not degraded_by:
        return result
    return result.model_copy(
        update={"status": HealthStatus.WARN, "reasons": reasons, "degraded_by": degraded_by}
    )


def error_count(recent: Sequence[RecentCheck]) -> tuple[int, int]:
    """(failed checks, checks) among ``recent``."""
    return sum(1 for r in recent if r.status is HealthStatus.FAIL), len(recent)


def over_error_budget(failed: int, total: int) -> bool:
    """Whether ``failed`` of ``total`` checks in the window exceed the error budget (judged
    against a full window of :data:`WINDOW_CHECKS`)."""
    return failed / max(total, WINDOW_CHECKS, 1) > ERROR_BUDGET


def alert_severity(result: CheckResult, spec: DependencySpec) -> Severity | None:
    """The alert a check raises: its spec's severity when it failed, a warning when it used up
    its error budget or its probe warned, info when only its latency is over budget; None when
    it passed or the dependency is not configured."""
    if not result.configured or result.status is HealthStatus.PASS:
        return None
    if result.status is HealthStatus.FAIL:
        return spec.fail_severity
    if {"error_budget", "probe"} & set(result.degraded_by):
        return Severity.WARNING
    return Severity.INFO


def component_status(result: CheckResult, spec: DependencySpec) -> HealthStatus | None:
    """What a check contributes to the overall status (None: not configured, left out)."""
    if not result.configured:
        return None
    if result.status is HealthStatus.FAIL and not spec.critical:
        return HealthStatus.WARN
    return result.status


def overall_status(results: Mapping[str, CheckResult]) -> HealthStatus:
    """The worst contribution of the checks (only a critical dependency's failure is a fail)."""
    found = (component_status(r, DEPENDENCIES[name]) for name, r in results.items() if name in DEPENDENCIES)
    return worst_status(s for s in found if s is not None)


def breaker_status(states: Mapping[str, str]) -> HealthStatus:
    """What this container's breakers say: an open circuit of a critical dependency fails the
    service, any other open or half-open circuit degrades it."""
    statuses = []
    for service, spec in DEPENDENCIES.items():
        state = states.get(spec.dependency.value) or states.get(service)
        if state == BreakerState.OPEN:
            statuses.append(HealthStatus.FAIL if spec.critical else HealthStatus.WARN)
        elif state == BreakerState.HALF_OPEN:
            statuses.append(HealthStatus.WARN)
    return worst_status(statuses)


def public_status(
    summary: HealthSummary | None, breaker_states: Mapping[str, str], now: dt.datetime
) -> tuple[HealthStatus, list[str]]:
    """The anonymous status: the HealthCheck's last summary (warn when it is missing or stale)
    combined with this container's breakers; and notes saying why."""
    notes: list[str] = []
    if summary is None:
        from_summary = HealthStatus.WARN
        notes.append("no health check has been recorded yet")
    elif now - summary.observed_at > SUMMARY_STALE_AFTER:
        from_summary = worst_status([summary.status, HealthStatus.WARN])
        notes.append(f"the last health check ran at {utc_iso(summary.observed_at)}: the checks are stale")
    else:
        from_summary = summary.status
    from_breakers = breaker_status(breaker_states)
    if from_breakers is not HealthStatus.PASS:
        notes.append(f"this container's circuit breakers: {from_breakers.value}")
    return worst_status([from_summary, from_breakers]), notes


def updated_recent(
    previous: Mapping[str, Sequence[RecentCheck]], results: Mapping[str, CheckResult], now: dt.datetime
) -> dict[str, list[RecentCheck]]:
    """The last 15 minutes of checks per dependency with ``results`` added (a check of the same
    minute replaces the earlier one: a repeated run is one minute of history)."""
    cutoff, minute = now - RECENT_WINDOW, floor_minute(now)
    merged: dict[str, list[RecentCheck]] = {}
    for name, result in results.items():
        kept = [r for r in previous.get(name, ()) if r.at > cutoff and floor_minute(r.at) != minute]
        kept.append(RecentCheck(at=now, status=result.status, latency_ms=result.latency_ms))
        merged[name] = kept
    return merged


def recent_before(summary: HealthSummary | None, service: str, now: dt.datetime) -> list[RecentCheck]:
    """The checks of ``service`` in the 15 minutes before ``now`` (minute ``now`` excluded)."""
    if summary is None:
        return []
    cutoff, minute = now - RECENT_WINDOW, floor_minute(now)
    return [r for r in summary.recent.get(service, ()) if r.at > cutoff and floor_minute(r.at) < minute]


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


# ---------------------------------------------------------------------------------- recommendations


class Recommendation(Model):
    severity: Severity
    component: str
    finding: str
    action: str


# A low L1 hit rate is worth a recommendation only over this many lookups (a cold container
# has a low rate that means nothing).
MIN_LOOKUPS_FOR_HIT_RATE = 1000
LOW_HIT_RATE = 0.5


@dataclass(frozen=True, slots=True)
class Findings:
    """What run_diagnostics looked at."""

    checks: Mapping[str, CheckResult]
    recent: Mapping[str, Sequence[RecentCheck]]
    breakers: Mapping[str, Mapping[str, Any]]
    cache_stats: Mapping[str, Any]
    settings: Settings


def recommend(found: Findings) -> list[Recommendation]:
    """Concrete recommendations derived from ``found``, most severe first."""
    out: list[Recommendation] = []
    _breaker_findings(found, out)
    _check_findings(found, out)
    _cache_findings(found, out)
    return sorted(out, key=lambda r: -r.severity.level)


def _breaker_findings(found: Findings, out: list[Recommendation]) -> None:
    advice = {spec.dependency.value: spec.advice for spec in DEPENDENCIES.values()}
    advice[Dependency.MODEL_STORE.value] = "check the model bucket and the model files of the current version"
    for name, snap in sorted(found.breakers.items()):
        state = snap.get("state")
        if state not in (BreakerState.OPEN, BreakerState.HALF_OPEN):
            continue
        since = _clock_time(snap.get("opened_at"))
        why = f" ({snap['reason']})" if snap.get("reason") else ""
        if state == BreakerState.OPEN:
            finding = f"{name} circuit open since {since}{why}; trial calls in {float(snap.get('retry_after') or 0):.0f} s"
        else:
            finding = (
                f"{name} circuit half-open (opened at {since}): trial calls are deciding whether it closes"
            )
        out.append(
            Recommendation(
                severity=Severity.CRITICAL if name == Dependency.DYNAMODB else Severity.WARNING,
                component=name,
                finding=finding,
                action=advice.get(name, "check the dependency's metrics and logs")
                + "; reset_circuit_breakers closes it at once once the cause is fixed",
            )
        )


def _check_findings(found: Findings, out: list[Recommendation]) -> None:
    for name, result in found.checks.items():
        spec = DEPENDENCIES.get(name)
        if spec is None:
            continue
        if not result.configured:
            out.append(_not_configured(spec, result))
            continue
        if result.status is HealthStatus.FAIL:
            out.append(
                Recommendation(
                    severity=spec.fail_severity,
                    component=name,
                    finding=f"{name} check failed: {result.error or 'no answer'}",
                    action=spec.advice,
                )
            )
        _latency_finding(spec, result, found.recent.get(name, ()), out)
        failed, total = error_count(found.recent.get(name, ()))
        if over_error_budget(failed, total):
            out.append(
                Recommendation(
                    severity=Severity.WARNING,
                    component=name,
                    finding=f"{failed} of {total} {name} checks in the last 15 minutes failed "
                    f"(error budget: {ERROR_BUDGET:.0%} of {max(total, WINDOW_CHECKS)})",
                    action=spec.advice,
                )
            )
        if result.status is HealthStatus.WARN and "probe" in result.degraded_by:
            out.append(
                Recommendation(
                    severity=Severity.WARNING,
                    component=name,
                    finding="; ".join(result.reasons),
                    action="request a higher SES sending quota (Service Quotas) or send less",
                )
            )
        if (
            name == "sns"
            and result.status is not HealthStatus.FAIL
            and int(result.detail.get("subscriptions_confirmed", 1)) == 0
        ):
            out.append(
                Recommendation(
                    severity=Severity.WARNING,
                    component=name,
                    finding="the alert topic has no confirmed subscription: critical alerts reach nobody",
                    action="deploy with AlarmEmail=<address> (and confirm the e-mail) or subscribe the "
                    "on-call tool to the topic",
                )
            )


def _latency_finding(
    spec: DependencySpec, result: CheckResult, recent: Sequence[RecentCheck], out: list[Recommendation]
) -> None:
    samples = [r.latency_ms for r in recent if r.status is not HealthStatus.FAIL and r.latency_ms is not None]
    if result.status is not HealthStatus.FAIL and result.latency_ms is not None:
        samples.append(result.latency_ms)
    p95 = percentile(samples, 0.95)
    if p95 is None or p95 <= spec.latency_budget_ms:
        return
    label = {"dynamodb": "DynamoDB", "valkey": "Valkey", "s3": "S3", "sns": "SNS", "ses": "SES"}[spec.service]
    what = f"p95 latency {p95:.0f} ms" if len(samples) > 1 else f"latency {p95:.0f} ms"
    actions = {
        "dynamodb": "look for hot partitions (CloudWatch Contributor Insights) and throttling; if the "
        "functions run in a VPC, check that the DynamoDB gateway endpoint is in the route tables",
        "valkey": "check the cache's ElastiCacheProcessingUnits and network; a cache slower than "
        "DynamoDB should be bypassed (its breaker opens on slow calls)",
    }
    out.append(
        Recommendation(
            severity=Severity.WARNING,
            component=spec.service,
            finding=f"{label} {what} above its {spec.latency_budget_ms:.0f} ms budget "
            f"({len(samples)} check{'s' if len(samples) != 1 else ''})",
            action=actions.get(spec.service, spec.advice),
        )
    )


def _not_configured(spec: DependencySpec, result: CheckResult) -> Recommendation:
    if spec.service == "valkey":
        return Recommendation(
            severity=Severity.INFO,
            component="valkey",
            finding="no cache endpoint configured (CACHE_URL is empty): the cache runs L1 only and rate "
            "limits are counted per container",
            action="deploy with VpcId/PrivateSubnetIds to enable L2 (ElastiCache Serverless for Valkey)",
        )
    return Recommendation(
        severity=Severity.INFO,
        component=spec.service,
        finding="; ".join(result.reasons) or f"{spec.service} is not configured",
        action=f"set {spec.setting} (the template does) if this deployment needs it",
    )


def _cache_findings(found: Findings, out: list[Recommendation]) -> None:
    l1 = found.cache_stats.get("l1") or {}
    hits, misses = int(l1.get("hits") or 0), int(l1.get("misses") or 0)
    lookups = hits + misses
    if lookups >= MIN_LOOKUPS_FOR_HIT_RATE and hits / lookups < LOW_HIT_RATE:
        evictions = int(l1.get("evictions") or 0)
        settings = found.settings
        if evictions > hits:
            action = (
                f"the L1 evicted {evictions:,} entries: raise CACHE_L1_MAX_ENTRIES (now "
                f"{settings.cache_l1_max_entries:,}) or CACHE_MAX_MEMORY_MB (now {settings.cache_max_memory_mb:g})"
            )
        else:
            action = (
                "few evictions, so the keys are rarely read twice within CACHE_L1_TTL_SECONDS "
                f"({settings.cache_l1_ttl_seconds:g} s): lengthen the TTLs of hot keys or rely on L2"
            )
        out.append(
            Recommendation(
                severity=Severity.WARNING,
                component="cache",
                finding=f"L1 hit rate {hits / lookups:.0%} over {lookups:,} lookups",
                action=action,
            )
        )
    l2 = found.cache_stats.get("l2") or {}
    valkey = found.checks.get("valkey")
    if (
        l2.get("configured")
        and not l2.get("available")
        and (valkey is None or valkey.status is not HealthStatus.FAIL)
    ):
        out.append(
            Recommendation(
                severity=Severity.WARNING,
                component="cache",
                finding="the cache's L2 (Valkey) did not answer this container",
                action=DEPENDENCIES["valkey"].advice,
            )
        )
    loader = found.cache_stats.get("loader") or {}
    calls, errors = int(loader.get("calls") or 0), int(loader.get("errors") or 0)
    if calls >= 20 and errors / calls > ERROR_BUDGET:
        out.append(
            Recommendation(
                severity=Severity.WARNING,
                component="cache",
                finding=f"{errors:,} of {calls:,} cache loads failed ({errors / calls:.0%}); "
                f"{int(loader.get('stale_served') or 0):,} stale values were served instead",
                action="the loaders read DynamoDB: see the dynamodb findings and the functions' logs",
            )
        )


def _clock_time(iso: Any) -> str:
    if not iso:
        return "an unknown time"
    try:
        return dt.datetime.fromisoformat(str(iso)).astimezone(dt.UTC).strftime("%H:%M:%S UTC")
    except ValueError:
        return str(iso)


# ---------------------------------------------------------------------------------- notifications


class NotificationKind(StrEnum):
    OPENED = "opened"
    ESCALATED = "escalated"
    RESOLVED = "resolved"


class AlertNotifier(Protocol):
    """Tells operators about an alert; raises when it could not."""

    def notify(self, alert: Alert, kind: NotificationKind) -> None: ...


class SnsNotifier:
    """Publishes alerts to the operators' SNS topic (through the SNS breaker)."""

    def __init__(self, client: Callable[[], SNSClient], topic_arn: str, environment: str) -> None:
        self._client = client
        self._topic_arn = topic_arn
        self._environment = environment

    def notify(self, alert: Alert, kind: NotificationKind) -> None:
        subject, message = notification_text(alert, kind, self._environment)
        breaker_for(Dependency.SNS).call(
            self._client().publish,
            TopicArn=self._topic_arn,
            Subject=subject,
            Message=message,
            MessageAttributes={
                "severity": {"DataType": "String", "StringValue": alert.severity.value},
                "kind": {"DataType": "String", "StringValue": kind.value},
                "fingerprint": {"DataType": "String", "StringValue": alert.fingerprint},
            },
        )


def notification_text(alert: Alert, kind: NotificationKind, environment: str) -> tuple[str, str]:
    """The subject (at most 100 characters, as SNS requires) and body of a notification."""
    head = "RESOLVED" if kind is NotificationKind.RESOLVED else alert.severity.value.upper()
    subject = f"[{head}] mysetlist-{environment}: {alert.summary}"
    subject = subject if len(subject) <= 100 else subject[:99] + "…"
    lines = [
        f"{alert.summary}",
        "",
        f"alert:      {alert.fingerprint} ({alert.type}, {alert.entity})",
        f"severity:   {alert.severity.value}"
        + (" (escalated)" if kind is NotificationKind.ESCALATED else ""),
        f"opened at:  {utc_iso(alert.opened_at)}",
        f"last seen:  {utc_iso(alert.last_seen)} ({alert.count} time{'s' if alert.count != 1 else ''})",
    ]
    if kind is NotificationKind.RESOLVED:
        lines.append(f"recovered:  {utc_iso(alert.recovered_at or alert.last_seen)}")
        if alert.notified_severity is None:
            lines.append("(the notice of its opening could not be sent at the time)")
    lines += [
        "",
        "evidence:",
        json.dumps(alert.evidence, indent=2, sort_keys=True, default=str),
        "",
        "Open alerts: GET /api/monitoring/health?detailed=true (admin). Runbook: docs/operations.md, 'Alerts'.",
    ]
    return subject, "\n".join(lines)


# ---------------------------------------------------------------------------------- the scheduled run


class RunReport(BaseModel):
    """What one HealthCheck run did (filled in as the run goes)."""

    model_config = ConfigDict(extra="forbid")

    status: HealthStatus
    observed_at: dt.datetime
    checks: dict[str, CheckResult]
    raised: list[str] = []
    resolved: list[str] = []
    notified: list[str] = []
    notification_failures: list[str] = []
    problems: list[str] = []


class HealthCheckIncomplete(Exception):
    """The run could not record its findings or manage its alerts (the invocation fails, so the
    function's error alarm fires; the next run tries again)."""


@dataclass
class Monitor:
    """The HealthCheck: check everything, record the minute, raise/resolve alerts, notify."""

    store: PlatformStore
    checks: Mapping[str, Check]
    notifier: AlertNotifier | None
    timeout_seconds: float = CHECK_TIMEOUT_SECONDS
    notify_at: Severity = Severity.CRITICAL

    def run(self, now: dt.datetime) -> RunReport:
        """One run at ``now``. Raises :class:`HealthCheckIncomplete` after doing all it could
        when the history or the alerts could not be written."""
        raw = run_checks(self.checks, now, self.timeout_seconds)
        problems: list[str] = []
        previous = self._previous_summary(problems)
        assessed = {
            name: assess(result, self.checks[name].spec, recent_before(previous, name, now))
            for name, result in raw.items()
        }
        status = overall_status(assessed)
        emit_check_metrics(assessed)
        summary = HealthSummary(
            status=status,
            observed_at=now,
            checks=assessed,
            recent=updated_recent(previous.recent if previous else {}, assessed, now),
        )
        records = [
            HealthRecord(
                service=name,
                minute=floor_minute(now),
                status=r.status,
                latency_ms=r.latency_ms,
                breaker_state=r.breaker_state,
                error=r.error,
            )
            for name, r in assessed.items()
        ]
        try:
            self.store.record_health(records, summary, now)
        except Exception as exc:  # DynamoDB down: the metrics above still tell CloudWatch
            logger.exception("health history could not be recorded")
            problems.append(f"history: {_describe(exc)}")
        report = RunReport(status=status, observed_at=now, checks=assessed, problems=problems)
        self._manage_alerts(assessed, now, report)
        log = logger.warning if status is not HealthStatus.PASS else logger.info
        log(
            "health check",
            extra={
                "status": status.value,
                "checks": {n: r.status.value for n, r in assessed.items()},
                "raised": report.raised,
                "resolved": report.resolved,
            },
        )
        if report.problems:
            raise HealthCheckIncomplete("; ".join(report.problems))
        return report

    def _previous_summary(self, problems: list[str]) -> HealthSummary | None:
        try:
            return self.store.latest_summary()
        except Exception as exc:
            logger.exception("the previous health summary could not be read")
            problems.append(f"summary: {_describe(exc)}")
            return None

    def _manage_alerts(self, results: Mapping[str, CheckResult], now: dt.datetime, report: RunReport) -> None:
        try:
            open_alerts = {a.fingerprint: a for a in self.store.open_alerts()}
        except Exception as exc:
            logger.exception("open alerts could not be listed")
            report.problems.append(f"alerts: {_describe(exc)}")
            return
        handled: set[str] = set()
        for name, result in results.items():
            spec = self.checks[name].spec
            fingerprint = alert_fingerprint(DEPENDENCY_ALERT, name)
            handled.add(fingerprint)
            severity = alert_severity(result, spec)
            try:
                if severity is None:
                    self._recover(open_alerts.get(fingerprint), fingerprint, now, report)
                else:
                    self._raise(_dependency_alert(result, spec, severity), now, report)
            except Exception as exc:
                logger.exception("alert could not be updated", extra={"fingerprint": fingerprint})
                report.problems.append(f"alert {fingerprint}: {_describe(exc)}")
        # Any other open alert (issue 5's, say) whose notification is still due is retried here.
        for fingerprint, alert in open_alerts.items():
            if fingerprint not in handled and alert.needs_notification(self.notify_at):
                self._notify(alert, _kind_for(alert), now, report)

    def _raise(self, alert: AlertIn, now: dt.datetime, report: RunReport) -> None:
        raised = self.store.raise_alert(alert, now)
        if raised.created or raised.escalated:
            report.raised.append(alert.fingerprint)
            logger.warning(
                "alert raised" if raised.created else "alert escalated",
                extra={"fingerprint": alert.fingerprint, "severity": raised.alert.severity.value},
            )
        if raised.alert.needs_notification(self.notify_at):
            self._notify(raised.alert, _kind_for(raised.alert), now, report)

    def _recover(self, alert: Alert | None, fingerprint: str, now: dt.datetime, report: RunReport) -> None:
        if alert is None:
            return
        if alert.severity.level >= self.notify_at.level:
            # Operators were paged (or should have been): they get a resolution notice, and the
            # alert stays open (recovered) until it is sent.
            self.store.mark_recovered(alert, now)
            recovered = alert.recovered_at or now
            alert = alert.model_copy(update={"recovered_at": recovered})
            if not self._notify(alert, NotificationKind.RESOLVED, now, report, mark=False):
                return
        if self.store.resolve_alert(fingerprint, now, resolution="recovered") is not None:
            report.resolved.append(fingerprint)
            logger.info("alert resolved", extra={"fingerprint": fingerprint})

    def _notify(
        self, alert: Alert, kind: NotificationKind, now: dt.datetime, report: RunReport, *, mark: bool = True
    ) -> bool:
        """Send one notification; on failure record it on the alert (retried next run)."""
        if self.notifier is None:
            self._notification_failed(alert, "no alert topic is configured", now, report)
            return False
        try:
            self.notifier.notify(alert, kind)
        except Exception as exc:
            logger.exception("alert notification failed", extra={"fingerprint": alert.fingerprint})
            self._notification_failed(alert, _describe(exc), now, report)
            return False
        report.notified.append(f"{alert.fingerprint}:{kind.value}")
        if mark:
            self.store.mark_notified(alert, alert.severity, now)
        return True

    def _notification_failed(self, alert: Alert, error: str, now: dt.datetime, report: RunReport) -> None:
        report.notification_failures.append(alert.fingerprint)
        _count_metric("AlertNotificationFailed", {"severity": alert.severity.value})
        try:
            self.store.record_notification_failure(alert, error, now)
        except Exception:
            logger.exception(
                "could not record a failed notification", extra={"fingerprint": alert.fingerprint}
            )


def _kind_for(alert: Alert) -> NotificationKind:
    return NotificationKind.OPENED if alert.notified_severity is None else NotificationKind.ESCALATED


def _dependency_alert(result: CheckResult, spec: DependencySpec, severity: Severity) -> AlertIn:
    if result.status is HealthStatus.FAIL:
        summary = f"{spec.service} check failing: {result.error or 'no answer'}"
    else:
        summary = f"{spec.service} degraded: {'; '.join(result.reasons)}"
    return AlertIn(
        type=DEPENDENCY_ALERT,
        entity=spec.service,
        severity=severity,
        summary=summary[:300],
        evidence={
            "status": result.status.value,
            "error": result.error,
            "latency_ms": result.latency_ms,
            "latency_budget_ms": spec.latency_budget_ms,
            "breaker_state": result.breaker_state,
            "reasons": result.reasons,
            "observed_at": utc_iso(result.observed_at),
        },
    )


# ---------------------------------------------------------------------------------- metrics


def emit_check_metrics(results: Mapping[str, CheckResult]) -> None:
    """EMF metrics per dependency: latency, failed (0/1) and degraded (0/1)."""
    for name, result in results.items():
        if not result.configured:
            continue
        if result.latency_ms is not None:
            _metric("DependencyLatency", MetricUnit.Milliseconds, result.latency_ms, {"dependency": name})
        _metric(
            "DependencyCheckFailed",
            MetricUnit.Count,
            1.0 if result.status is HealthStatus.FAIL else 0.0,
            {"dependency": name},
        )
        _metric(
            "DependencyDegraded",
            MetricUnit.Count,
            1.0 if result.status is HealthStatus.WARN else 0.0,
            {"dependency": name},
        )


def _count_metric(name: str, dimensions: Mapping[str, str]) -> None:
    _metric(name, MetricUnit.Count, 1.0, dimensions)


def _metric(name: str, unit: MetricUnit, value: float, dimensions: Mapping[str, str]) -> None:
    namespace = metrics.namespace
    if not namespace:
        return
    try:
        with single_metric(name=name, unit=unit, value=value, namespace=namespace) as metric:
            for key, dimension in dimensions.items():
                metric.add_dimension(name=key, value=dimension)
    except Exception:  # a metric must never break the health check
        logger.exception("could not emit a health metric", extra={"metric": name})


# ---------------------------------------------------------------------------------- the health API


DESCRIPTION = "MySetlist backend: catalogue, votes and tallies"
UPTIME_WINDOWS: Mapping[str, dt.timedelta] = {"24h": dt.timedelta(hours=24), "7d": dt.timedelta(days=7)}


@dataclass(frozen=True, slots=True)
class HealthDocument:
    """A body in the health-check response format and the HTTP status it goes with."""

    body: dict[str, Any]

    @property
    def status(self) -> HealthStatus:
        return HealthStatus(self.body["status"])

    @property
    def http_status(self) -> int:
        """200 for pass and warn, 503 for fail (as the format asks)."""
        return 503 if self.status is HealthStatus.FAIL else 200


class UnknownService(ValueError):
    """A service name that is not one of :data:`SERVICES`."""


class HealthReporter:
    """What the health API answers, from the HealthCheck's records, this container's breakers
    and cache, and (for the admin actions) checks run now.

    The anonymous status costs one eventually consistent ``GetItem`` of the summary the
    HealthCheck writes each minute, never a probe of every dependency: probes from every
    container on every hit would load the dependencies in proportion to the traffic of a public
    endpoint, and their answer would be no better than a minute-old check of everything combined
    with this container's breakers, which see every real call as it happens. Reading the summary
    is itself a DynamoDB request: when it fails, the status is fail.
    """

    def __init__(
        self,
        store: PlatformStore,
        checks: Mapping[str, Check],
        settings: Settings,
        *,
        breakers: Callable[[], Mapping[str, Any]],
        cache_stats: Callable[[], Mapping[str, Any]],
        cache_hot_keys: Callable[[], Mapping[str, Any]] | None = None,
        timeout_seconds: float = CHECK_TIMEOUT_SECONDS,
    ) -> None:
        self._store = store
        self._checks = checks
        self._settings = settings
        self._breakers = breakers
        self._cache_stats = cache_stats
        self._cache_hot_keys = cache_hot_keys
        self._timeout = timeout_seconds
        # Uptime reads a week of minutes per dependency: computed again only when a new check
        # was recorded or the minute changed.
        self._uptime_memo: tuple[tuple[dt.datetime | None, dt.datetime], dict[str, dict[str, Any]]] | None = (
            None
        )

    # ------------------------------------------------------------------ reads
    def public(self, now: dt.datetime) -> HealthDocument:
        """Only the overall status (anonymous callers)."""
        summary, problem = self._summary()
        status, _ = self._status(summary, problem, now)
        return HealthDocument({"status": status.value})

    def detailed(self, now: dt.datetime) -> HealthDocument:
        """Everything: each dependency's last check, error rates, uptime, cache statistics,
        this container's breakers and the open alerts (admins)."""
        summary, problem = self._summary()
        status, notes = self._status(summary, problem, now)
        checks = summary.checks if summary else {}
        breakers = self._breaker_snapshots()
        uptime = self._uptime(summary, now)
        body: dict[str, Any] = {
            "status": status.value,
            "description": DESCRIPTION,
            "notes": notes,
            "checks": {k: v for r in checks.values() for k, v in check_entries(r).items()},
            "lastCheckAt": utc_iso(summary.observed_at) if summary else None,
            "errorRates": {
                name: error_rates(summary, name, uptime.get(name, {}), breakers.get(name))
                for name in SERVICES
            },
            "uptime": uptime,
            "cache": dict(self._cache_stats()),
            "breakers": breakers,
            "alerts": [a.model_dump(mode="json") for a in self._store.open_alerts()],
        }
        if self._cache_hot_keys is not None:
            body["cacheHotKeys"] = dict(self._cache_hot_keys())
        return HealthDocument(body)

    def service(self, name: str, now: dt.datetime) -> HealthDocument:
        """One dependency: its last check, recent checks, error rates, uptime, breaker, alerts."""
        spec = _spec(name)
        summary, problem = self._summary()
        result = summary.checks.get(name) if summary else None
        breaker = _without_config(breaker_for(spec.dependency).snapshot())
        uptime = self._uptime(summary, now).get(name, {})
        fingerprint = alert_fingerprint(DEPENDENCY_ALERT, name)
        open_alert = self._store.open_alert(fingerprint)
        notes = [problem] if problem else []
        if result is None:
            notes.append(f"no recorded check of {name} yet")
        body: dict[str, Any] = {
            "status": (HealthStatus.WARN if result is None else result.status).value,
            "description": f"{name}: {spec.component_type.value}, latency budget {spec.latency_budget_ms:.0f} ms; "
            + (
                "critical: its failure fails the service"
                if spec.critical
                else "its failure degrades the service"
            ),
            "notes": notes,
            "checks": check_entries(result) if result else {},
            "recent": [r.model_dump(mode="json") for r in (summary.recent.get(name, []) if summary else [])],
            "errorRates": {name: error_rates(summary, name, uptime, breaker)},
            "uptime": {name: uptime},
            "breaker": breaker,
            "alerts": [open_alert.model_dump(mode="json")] if open_alert else [],
            "alertHistory": [
                a.model_dump(mode="json") for a in self._store.alert_history(fingerprint, limit=10)
            ],
        }
        return HealthDocument(body)

    # ------------------------------------------------------------------ actions
    def check_now(self, name: str, now: dt.datetime) -> CheckResult:
        """Run one dependency's check now (through its breaker), judged with the recorded
        history. Nothing is recorded: the HealthCheck keeps the history and the alerts."""
        spec = _spec(name)
        result = run_checks({name: self._checks[name]}, now, self._timeout)[name]
        summary, _ = self._summary()
        return assess(result, spec, recent_before(summary, name, now))

    def diagnostics(self, now: dt.datetime) -> dict[str, Any]:
        """Real checks of everything now, and recommendations derived from what they found."""
        summary, _ = self._summary()
        raw = run_checks(self._checks, now, self._timeout)
        checks = {
            name: assess(result, DEPENDENCIES[name], recent_before(summary, name, now))
            for name, result in raw.items()
        }
        recent = {
            name: [
                *recent_before(summary, name, now),
                RecentCheck(at=now, status=r.status, latency_ms=r.latency_ms),
            ]
            for name, r in checks.items()
        }
        breakers = self._breaker_snapshots()
        cache_stats = dict(self._cache_stats())
        findings = Findings(
            checks=checks, recent=recent, breakers=breakers, cache_stats=cache_stats, settings=self._settings
        )
        return {
            "status": overall_status(checks).value,
            "checks": {name: r.model_dump(mode="json") for name, r in checks.items()},
            "recommendations": [r.model_dump(mode="json") for r in recommend(findings)],
            "cache": cache_stats,
            "breakers": breakers,
        }

    # ------------------------------------------------------------------ internals
    def _status(
        self, summary: HealthSummary | None, problem: str | None, now: dt.datetime
    ) -> tuple[HealthStatus, list[str]]:
        if problem is not None:
            # The summary lives in DynamoDB: not reading it is DynamoDB failing this container.
            return HealthStatus.FAIL, [problem]
        states = {name: str(snap.get("state")) for name, snap in self._breaker_snapshots().items()}
        return public_status(summary, states, now)

    def _summary(self) -> tuple[HealthSummary | None, str | None]:
        try:
            return self._store.latest_summary(), None
        except Exception as exc:
            logger.warning("health summary unreadable", extra={"error": _describe(exc)})
            return None, f"the health records could not be read: {_describe(exc)}"

    def _breaker_snapshots(self) -> dict[str, Any]:
        return {name: _without_config(b.snapshot()) for name, b in sorted(self._breakers().items())}

    def _uptime(self, summary: HealthSummary | None, now: dt.datetime) -> dict[str, dict[str, Any]]:
        key = (summary.observed_at if summary else None, floor_minute(now))
        if self._uptime_memo is not None and self._uptime_memo[0] == key:
            return self._uptime_memo[1]
        longest = max(UPTIME_WINDOWS.values())

        def one(service: str) -> dict[str, Any]:
            records = self._store.health_records(service, now - longest, now)
            return {
                label: uptime_of(service, records, now - window, now).model_dump(mode="json")
                for label, window in UPTIME_WINDOWS.items()
            }

        with ThreadPoolExecutor(max_workers=len(SERVICES), thread_name_prefix="uptime") as pool:
            found = dict(zip(SERVICES, pool.map(one, SERVICES), strict=True))
        self._uptime_memo = (key, found)
        return found


def _without_config(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """A breaker snapshot without its static configuration (docs/operations.md lists it)."""
    return {k: v for k, v in snapshot.items() if k != "config"}


def _spec(name: str) -> DependencySpec:
    spec = DEPENDENCIES.get(name)
    if spec is None:
        raise UnknownService(name)
    return spec


def check_entries(result: CheckResult) -> dict[str, list[dict[str, Any]]]:
    """One dependency's entries of the format's ``checks`` object (``<component>:responseTime``)."""
    spec = DEPENDENCIES.get(result.service)
    entry: dict[str, Any] = {
        "componentId": result.service,
        "componentType": (spec.component_type if spec else ComponentType.COMPONENT).value,
        "observedValue": result.latency_ms,
        "observedUnit": "ms",
        "status": result.status.value,
        "time": utc_iso(result.observed_at),
        "breakerState": result.breaker_state,
        "configured": result.configured,
    }
    if spec is not None:
        entry["latencyBudgetMs"] = spec.latency_budget_ms
    if result.status is not HealthStatus.PASS:
        entry["output"] = "; ".join(x for x in [result.error, *result.reasons] if x)
    if result.detail:
        entry["detail"] = result.detail
    return {f"{result.service}:responseTime": [entry]}


def error_rates(
    summary: HealthSummary | None,
    service: str,
    uptime: Mapping[str, Any],
    breaker: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Failed-check shares over 15 minutes (the summary) and 24 hours (the history), and the
    failure rate in this container's breaker window."""
    recent = summary.recent.get(service, []) if summary else []
    failed, total = error_count(recent)
    day = uptime.get("24h") or {}
    observed = int(day.get("observed_minutes") or 0)
    return {
        "checks15m": round(failed / total, 4) if total else None,
        "checks24h": round(int(day.get("down_minutes") or 0) / observed, 4) if observed else None,
        "breaker": (breaker or {}).get("failure_rate"),
    }


# ---------------------------------------------------------------------------------- admin actions

ServiceName = Literal["dynamodb", "valkey", "s3", "sns", "ses"]
Tag = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9:._#/@-]*$")
]


class ClearCache(Model):
    """Empty the cache (both levels), or drop the values stored under ``tags``."""

    action: Literal["clear_cache"]
    tags: Annotated[list[Tag], Field(min_length=1, max_length=100)] | None = None


class ResetCircuitBreakers(Model):
    """Close breakers (all, or those of ``services``), here and in every container."""

    action: Literal["reset_circuit_breakers"]
    services: Annotated[list[Dependency], Field(min_length=1)] | None = None


class CheckService(Model):
    """Run one dependency's check now."""

    action: Literal["check_service"]
    service: ServiceName


class RunDiagnostics(Model):
    """Run every check now and derive recommendations."""

    action: Literal["run_diagnostics"]


class OptimizePerformance(Model):
    """Cache housekeeping: purge expired L1 entries, trim L2, prune tag sets, age hot-key counts."""

    action: Literal["optimize_performance"]


MonitoringAction = Annotated[
    ClearCache | ResetCircuitBreakers | CheckService | RunDiagnostics | OptimizePerformance,
    Field(discriminator="action"),
]


class ActionOut(Model):
    action: str
    performed_at: dt.datetime
    result: dict[str, Any]


class CacheAdmin(Protocol):
    """The cache operations the admin actions use (:class:`mysetlist.cache.Cache`)."""

    def clear(self) -> Mapping[str, Any]: ...

    def invalidate_tags(self, tags: Iterable[str]) -> int: ...

    def optimize(self) -> Mapping[str, Any]: ...

    def stats(self) -> Mapping[str, Any]: ...


def perform(
    action: ClearCache | ResetCircuitBreakers | CheckService | RunDiagnostics | OptimizePerformance,
    reporter: HealthReporter,
    cache: Callable[[], CacheAdmin],
    now: dt.datetime,
) -> ActionOut:
    """Carry out one admin action and report what it did (logged with its outcome)."""
    result: dict[str, Any]
    match action:
        case ClearCache(tags=None):
            result = {"cleared": dict(cache().clear())}
        case ClearCache(tags=tags):
            result = {"tags": tags, "invalidated": cache().invalidate_tags(tags or [])}
        case ResetCircuitBreakers(services=services):
            names = [d.value for d in (services or list(Dependency))]
            for name in names:
                breaker_for(name).reset()
            result = {"reset": names, "breakers": {n: breaker_for(n).snapshot()["state"] for n in names}}
        case CheckService(service=service):
            result = reporter.check_now(service, now).model_dump(mode="json")
        case RunDiagnostics():
            result = reporter.diagnostics(now)
        case OptimizePerformance():
            before = dict(cache().stats())
            report = dict(cache().optimize())
            after = dict(cache().stats())
            result = {"report": report, "l1_before": before.get("l1"), "l1_after": after.get("l1")}
    logger.info("monitoring action", extra={"action": action.action, "result": result})
    return ActionOut(action=action.action, performed_at=now, result=result)
