"""Rate limits shared by every container: GCRA buckets in Valkey, per-container ones without it.

Each budget (``votes.cast``, ``catalog.read`` ...) allows ``limit`` requests per ``period``
seconds to one subject: a user (the token's ``sub``) or a client address. The algorithm is
GCRA, the generic cell rate algorithm: a token bucket of ``limit`` tokens refilled at
``limit / period`` per second, kept as one number per subject, the theoretical arrival time
(TAT) of the next request. A subject may send ``limit`` requests at once, then one every
``period / limit`` seconds; a refused request changes nothing, so a client that keeps
hammering still gets the sustained rate and no worse.

Shared state: one Valkey key per budget and subject (``msl:rl:<budget>:<scope>:<subject>``)
updated by one Lua script, so a check is atomic, one round trip, and touches one key (fine on a
cluster). The script reads Valkey's own clock (``TIME``): the containers' clocks never matter.
The key expires when its bucket would be full again (at most one period).

Degradation: with Valkey not configured, down, slow (the client's socket timeout) or its
circuit open, the same budget is enforced by this container alone with the same algorithm in
Python (:class:`LocalBuckets`), never an error. N containers then allow up to N times the
budget between them: the API Gateway stage throttle stays the outer guard. A degraded decision
is logged at most once a minute per container and counted (``RateLimitDegraded`` by ``reason``);
every refusal is counted (``RateLimited`` by ``budget``).
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from mysetlist.breaker import CircuitOpenError, Dependency, breaker_for
from mysetlist.errors import TooManyRequests
from mysetlist.observability import logger, metrics
from mysetlist.settings import Settings, SettingsError, load_settings
from mysetlist.valkey import plain_key, valkey_client

if TYPE_CHECKING:
    from redis import Redis
    from redis.commands.core import Script

# Budget names (the registry below holds their defaults). The predictions and event-tracking
# budgets are for later issues' routes; they are here so that their limits are set and
# overridable in one place from the start.
VOTES_CAST = "votes.cast"
VOTES_READ = "votes.read"
CATALOG_READ = "catalog.read"
CATALOG_WRITE = "catalog.write"
MONITORING_READ = "monitoring.read"
MONITORING_ADMIN = "monitoring.admin"
PREDICTIONS_REQUEST = "predictions.request"
EVENTS_TRACK = "events.track"
# Issue 5, the moderation API (helper C): moderators reading and deciding on flagged votes.
MODERATION_READ = "moderation.read"
MODERATION_WRITE = "moderation.write"
# Issue 7, A/B testing: serving a placement's content (every page view) and managing experiments.
EXPERIMENTS_SERVE = "experiments.serve"
EXPERIMENTS_MANAGE = "experiments.manage"

_US = 1_000_000
# A degraded decision is logged at most this often per container (seconds).
DEGRADED_LOG_INTERVAL = 60.0
# Per-container buckets kept at most (about 100 bytes each); the least recently charged go first.
LOCAL_MAX_SUBJECTS = 10_000
# Override bounds: a budget must stay a budget (and its interval a whole microsecond or more).
MAX_LIMIT = 1_000_000
MAX_PERIOD_SECONDS = 24 * 3600


class Scope(StrEnum):
    """Whom a budget is counted for."""

    USER = "user"  # the verified caller's sub; an anonymous caller is counted by address
    ADDRESS = "address"  # the client address API Gateway saw (requestContext.http.sourceIp)


@dataclass(frozen=True, slots=True)
class Budget:
    """``limit`` requests per ``period_seconds`` per subject of ``scope``; ``what`` names the
    requests in a refusal ("too many vote requests")."""

    name: str
    limit: int
    period_seconds: int
    scope: Scope
    what: str

    @property
    def period_us(self) -> int:
        return self.period_seconds * _US

    @property
    def interval_us(self) -> int:
        """Microseconds between two requests at the sustained rate (the bucket's refill time)."""
        return self.period_us // self.limit


DEFAULT_BUDGETS: Mapping[str, Budget] = {
    b.name: b
    for b in (
        # The figure. A fan voting through a whole setlist in a minute stays far below.
        Budget(VOTES_CAST, 60, 60, Scope.USER, "vote requests"),
        # Live pages poll the tallies (every few seconds each); one address can be a venue's
        # Wi-Fi or a carrier's NAT with many fans behind it.
        Budget(VOTES_READ, 1200, 60, Scope.ADDRESS, "tally reads"),
        # Browsing pages several lists at a time; a scraper walking the catalogue is refused.
        Budget(CATALOG_READ, 600, 60, Scope.ADDRESS, "catalogue requests"),
        # Moderators recording and correcting setlists.
        Budget(CATALOG_WRITE, 30, 60, Scope.USER, "setlist changes"),
        # The health API (anonymous status for probes and dashboards; admin detail).
        Budget(MONITORING_READ, 120, 60, Scope.ADDRESS, "health requests"),
        Budget(MONITORING_ADMIN, 30, 60, Scope.USER, "monitoring actions"),
        # Later issues' routes (predictions, event tracking): the issue's figures.
        Budget(PREDICTIONS_REQUEST, 10, 60, Scope.USER, "prediction requests"),
        Budget(EVENTS_TRACK, 100, 60, Scope.ADDRESS, "tracking events"),
        # Issue 5: moderators paging through a show's queue, and releasing or confirming votes
        # one by one (a sustained 2 decisions a second per moderator).
        Budget(MODERATION_READ, 300, 60, Scope.USER, "moderation queue requests"),
        Budget(MODERATION_WRITE, 120, 60, Scope.USER, "moderation decisions"),
        # Issue 7: every page view asks for its placements' content (a few per page, one address
        # may be a venue's Wi-Fi); content managers creating, changing and analysing experiments.
        Budget(EXPERIMENTS_SERVE, 1200, 60, Scope.ADDRESS, "content requests"),
        Budget(EXPERIMENTS_MANAGE, 120, 60, Scope.USER, "experiment requests"),
    )
}

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_overrides(raw: str, known: Mapping[str, Budget] = DEFAULT_BUDGETS) -> dict[str, Budget]:
    """The budgets ``known`` with the overrides of ``raw`` applied.

    ``raw`` is ``RATE_LIMIT_OVERRIDES``: empty, or a JSON object mapping a budget name to
    ``"<limit>/<period seconds>"`` (``{"votes.cast": "120/60"}``). Raises :class:`SettingsError`
    naming the problem (bad JSON, an unknown budget, a malformed or out-of-range rate), so a
    bad deployment fails at cold start rather than limiting the wrong thing.
    """
    budgets = dict(known)
    if not raw.strip():
        return budgets
    try:
        overrides = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"RATE_LIMIT_OVERRIDES is not JSON: {exc}") from exc
    if not isinstance(overrides, dict):
        raise SettingsError('RATE_LIMIT_OVERRIDES must be a JSON object like {"votes.cast": "120/60"}')
    for name, rate in overrides.items():
        if name not in known:
            raise SettingsError(
                f"RATE_LIMIT_OVERRIDES: {name!r} is not a budget (known: {', '.join(sorted(known))})"
            )
        match = _RATE.match(rate) if isinstance(rate, str) else None
        if match is None:
            raise SettingsError(
                f"RATE_LIMIT_OVERRIDES: {name!r} must be '<limit>/<period seconds>' like \"120/60\", not {rate!r}"
            )
        limit, period = int(match[1]), int(match[2])
        if not 1 <= limit <= MAX_LIMIT or not 1 <= period <= MAX_PERIOD_SECONDS:
            raise SettingsError(
                f"RATE_LIMIT_OVERRIDES: {name!r} = {rate!r}: the limit must be 1 to {MAX_LIMIT} "
                f"and the period 1 to {MAX_PERIOD_SECONDS} seconds"
            )
        budgets[name] = replace(known[name], limit=limit, period_seconds=period)
    return budgets


# ------------------------------------------------------------------ subjects


@dataclass(frozen=True, slots=True)
class Subject:
    """Whom one request is charged to: a user id or a client address (see :func:`subject_for`)."""

    scope: Scope
    value: str

    @property
    def key(self) -> str:
        return f"{self.scope.value}:{self.value}"


def address_of(source_ip: str | None) -> str:
    """The client address a budget counts: the IPv4 address, or the /64 network of an IPv6 one
    (a single host is given a whole /64 and can pick any address in it); ``unknown`` when the
    event carries none."""
    if not source_ip:
        return "unknown"
    try:
        address = ipaddress.ip_address(source_ip.strip())
    except ValueError:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def subject_for(budget: Budget, user_id: str | None, source_ip: str | None) -> Subject:
    """The subject of a request under ``budget``: the user for a user budget when the caller is
    signed in (``user_id`` must come from verified claims), else the client address."""
    if budget.scope is Scope.USER and user_id:
        return Subject(Scope.USER, user_id)
    return Subject(Scope.ADDRESS, address_of(source_ip))


# ------------------------------------------------------------------ the algorithm


class Verdict(NamedTuple):
    """One GCRA decision, in microseconds."""

    allowed: bool
    remaining: int  # further requests allowed right now
    retry_after_us: int  # until this request would be allowed (0 when it is)
    reset_after_us: int  # until the bucket is full again


def gcra(tat_us: int | None, now_us: int, interval_us: int, period_us: int) -> tuple[Verdict, int | None]:
    """Charge one request at ``now_us`` to a bucket whose theoretical arrival time is ``tat_us``
    (None: never charged). Returns the verdict and the new TAT to store (None when refused:
    a refusal stores nothing). :data:`GCRA_SCRIPT` is the same computation in Lua."""
    tat = now_us if tat_us is None or tat_us < now_us else tat_us
    new_tat = tat + interval_us
    if new_tat - now_us > period_us:
        return Verdict(False, 0, new_tat - now_us - period_us, tat - now_us), None
    return Verdict(True, (period_us - (new_tat - now_us)) // interval_us, 0, new_tat - now_us), new_tat


# KEYS[1]: the bucket. ARGV[1]: interval (us), ARGV[2]: period (us). Valkey's clock, not ours.
# Numbers are doubles in Lua: microseconds since 1970 (~1.8e15) are exact below 2^53, and
# '%.0f' writes them without the exponent tostring() would use.
GCRA_SCRIPT = """
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then
  tat = now
end
local new_tat = tat + interval
if new_tat - now > period then
  return {0, 0, new_tat - now - period, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((period - (new_tat - now)) / interval), 0, new_tat - now}
"""


class LocalBuckets:
    """Per-container GCRA buckets: the fallback when Valkey is away. Thread-safe and bounded
    (the least recently charged subject is forgotten first, which only ever gives it a full
    bucket again)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_subjects: int = LOCAL_MAX_SUBJECTS
    ) -> None:
        self._clock = clock
        self._max = max_subjects
        self._tats: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, key: str, interval_us: int, period_us: int) -> Verdict:
        with self._lock:
            now = round(self._clock() * _US)
            verdict, new_tat = gcra(self._tats.get(key), now, interval_us, period_us)
            if new_tat is not None:
                self._tats[key] = new_tat
                self._tats.move_to_end(key)
                while len(self._tats) > self._max:
                    self._tats.popitem(last=False)
            return verdict

    def __len__(self) -> int:
        return len(self._tats)


class ValkeyBuckets:
    """GCRA buckets in Valkey: one script call per check (EVALSHA; redis-py loads the script
    again when the server answers NOSCRIPT, after a restart say)."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        # Computes the script's SHA locally: no round trip until the first check.
        self._script: Script = client.register_script(GCRA_SCRIPT)

    def check(self, key: str, interval_us: int, period_us: int) -> Verdict:
        reply = self._script(keys=[key], args=[interval_us, period_us])
        allowed, remaining, retry_after, reset_after = (int(v) for v in reply)
        return Verdict(bool(allowed), remaining, retry_after, reset_after)


# ------------------------------------------------------------------ decisions


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of charging one request to a budget."""

    budget: Budget
    subject: Subject
    allowed: bool
    remaining: int
    retry_after: float  # seconds until a refused request would be allowed (0 when allowed)
    reset_after: float  # seconds until the subject's bucket is full again
    degraded: bool  # decided by this container alone (Valkey not configured or away)

    def headers(self) -> dict[str, str]:
        """The IETF draft's ``RateLimit-*`` fields: limit, remaining, seconds to a full bucket,
        and the policy (``60;w=60``)."""
        return {
            "ratelimit-limit": str(self.budget.limit),
            "ratelimit-remaining": str(self.remaining),
            "ratelimit-reset": str(math.ceil(self.reset_after)),
            "ratelimit-policy": f"{self.budget.limit};w={self.budget.period_seconds}",
        }

    def refusal(self) -> TooManyRequests:
        """The 429 for a refused request: what the limit is, for whom, and when to retry."""
        budget = self.budget
        whom = "user" if self.subject.scope is Scope.USER else "client address"
        wait = max(1, math.ceil(self.retry_after))
        unit = "second" if wait == 1 else "seconds"
        return TooManyRequests(
            f"too many {budget.what}: the limit is {budget.limit} per {budget.period_seconds} seconds "
            f"per {whom}; retry in {wait} {unit}",
            retry_after=self.retry_after,
            limit=budget.limit,
            period_seconds=budget.period_seconds,
            reset_after=self.reset_after,
            details={
                "budget": budget.name,
                "limit": budget.limit,
                "period_seconds": budget.period_seconds,
                "scope": self.subject.scope.value,
            },
        )


def emit_metric(name: str, dimensions: Mapping[str, str]) -> None:
    """One count of ``name`` with ``dimensions``, in its own EMF line (Powertools'
    ``single_metric``, in the namespace of POWERTOOLS_METRICS_NAMESPACE)."""
    namespace = metrics.namespace
    if not namespace:  # no namespace configured (a script): CloudWatch could not take it
        return
    try:
        with single_metric(name=name, unit=MetricUnit.Count, value=1, namespace=namespace) as metric:
            for key, value in dimensions.items():
                metric.add_dimension(name=key, value=value)
    except Exception:  # a metric must never fail the request it counts
        logger.exception("could not emit a rate-limit metric", extra={"metric": name})


Guard = Callable[[Callable[[], Verdict]], Verdict]


def _unguarded(call: Callable[[], Verdict]) -> Verdict:
    return call()


def valkey_guard() -> Guard:
    """Calls to Valkey go through the container's VALKEY circuit breaker: while it is open the
    limiter does not wait on a dead server, it decides locally at once."""
    breaker = breaker_for(Dependency.VALKEY)
    return breaker.call


class RateLimiter:
    """Charges requests to budgets, in Valkey when it answers, else in this container.

    ``client`` returns the container's Valkey client or None (not configured); ``guard`` wraps
    each Valkey call (the circuit breaker); ``clock`` drives the local buckets and the log
    throttle; ``emit`` records a metric. :meth:`check` never raises for a Valkey problem.
    """

    def __init__(
        self,
        budgets: Mapping[str, Budget] = DEFAULT_BUDGETS,
        client: Callable[[], Redis | None] = lambda: None,
        *,
        guard: Guard | None = None,
        clock: Callable[[], float] = time.monotonic,
        local: LocalBuckets | None = None,
        emit: Callable[[str, Mapping[str, str]], None] = emit_metric,
    ) -> None:
        self.budgets: Mapping[str, Budget] = dict(budgets)
        self._client = client
        self._guard = guard
        self._clock = clock
        self.local = local or LocalBuckets(clock)
        self._emit = emit
        self._shared: ValkeyBuckets | None = None
        self._lock = threading.Lock()
        self._last_degraded_log: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> RateLimiter:
        """The default budgets with ``settings.rate_limit_overrides`` (SettingsError when bad),
        on the container's Valkey client (``settings.cache_url``) behind the VALKEY breaker."""
        budgets = parse_overrides(settings.rate_limit_overrides)
        options.setdefault("guard", valkey_guard())
        return cls(budgets, lambda: valkey_client(settings), **options)

    def budget(self, name: str) -> Budget:
        """The budget called ``name``; KeyError naming the known ones otherwise."""
        try:
            return self.budgets[name]
        except KeyError:
            raise KeyError(
                f"no rate-limit budget {name!r} (known: {', '.join(sorted(self.budgets))})"
            ) from None

    def check(self, name: str, subject: Subject) -> Decision:
        """Charge one request by ``subject`` to budget ``name``. A refused request charges nothing."""
        budget = self.budget(name)
        key = plain_key("rl", budget.name, subject.key)
        verdict = self._shared_verdict(key, budget)
        degraded = verdict is None
        if verdict is None:
            verdict = self.local.check(key, budget.interval_us, budget.period_us)
        if not verdict.allowed:
            self._emit("RateLimited", {"budget": budget.name})
        return Decision(
            budget=budget,
            subject=subject,
            allowed=verdict.allowed,
            remaining=verdict.remaining,
            retry_after=verdict.retry_after_us / _US,
            reset_after=verdict.reset_after_us / _US,
            degraded=degraded,
        )

    def _shared_verdict(self, key: str, budget: Budget) -> Verdict | None:
        """The verdict of the shared bucket, or None (after logging and counting why) when
        Valkey cannot give one."""
        try:
            buckets = self._valkey_buckets()
            if buckets is None:
                self._degraded("not_configured", None)
                return None
            guard = self._guard or _unguarded
            return guard(lambda: buckets.check(key, budget.interval_us, budget.period_us))
        except Exception as exc:  # any Valkey fault (down, slow, circuit open): never the caller's error
            self._degraded("circuit_open" if isinstance(exc, CircuitOpenError) else "unavailable", exc)
            return None

    def _valkey_buckets(self) -> ValkeyBuckets | None:
        client = self._client()
        if client is None:
            return None
        with self._lock:
            if self._shared is None or self._shared.client is not client:
                self._shared = ValkeyBuckets(client)
            return self._shared

    def _degraded(self, reason: str, error: BaseException | None) -> None:
        self._emit("RateLimitDegraded", {"reason": reason})
        now = self._clock()
        with self._lock:
            if self._last_degraded_log is not None and now - self._last_degraded_log < DEGRADED_LOG_INTERVAL:
                return
            self._last_degraded_log = now
        extra: dict[str, Any] = {"reason": reason}
        if error is not None:
            extra |= {"error_type": type(error).__name__, "error": str(error)[:300]}
        if reason == "not_configured":
            logger.info("rate limits are per container: no Valkey endpoint is configured", extra=extra)
        else:
            logger.warning(
                "rate limits degraded to per-container buckets: Valkey is unavailable", extra=extra
            )


# ------------------------------------------------------------------ the container's limiter

_container_lock = threading.Lock()
_container: RateLimiter | None = None


def shared_limiter() -> RateLimiter:
    """The container's limiter, built on first use from :func:`load_settings` (SettingsError
    when ``RATE_LIMIT_OVERRIDES`` is bad). No Valkey connection is made until the first check."""
    global _container  # noqa: PLW0603 - one limiter per container, like the Valkey client
    with _container_lock:
        if _container is None:
            _container = RateLimiter.from_settings(load_settings())
        return _container


def use_limiter(limiter: RateLimiter | None) -> RateLimiter | None:
    """Make ``limiter`` the container's (tests and tools); None rebuilds it from the settings on
    next use. Returns the one it replaces."""
    global _container
    with _container_lock:
        previous, _container = _container, limiter
        return previous
