"""Circuit breakers, one per dependency per container, optionally sharing "open" through Valkey.

A breaker watches the outcomes of calls to one dependency and stops calling it while it is
failing, so a request fails fast (a 503 with ``Retry-After``, or a fallback such as a stale
cache entry) instead of waiting on timeouts, and the dependency gets room to recover.

States::

    CLOSED --(window full enough and failure or slow-call rate >= threshold)--> OPEN
    OPEN --(wait_in_open elapsed, checked lazily on the next call)--> HALF_OPEN
    HALF_OPEN --(all trial calls done, rates under the thresholds)--> CLOSED
    HALF_OPEN --(enough trials failed or were slow that the rate must reach a threshold)--> OPEN
    HALF_OPEN --(a trial still unfinished after half_open_max_wait: abandoned)--> OPEN

* **Window.** CLOSED keeps a sliding window of outcomes, by count (the last ``window_size``
  calls) or by time (the calls of the last ``window_size`` seconds, in one-second buckets). Rates
  are judged only once the window holds ``minimum_calls``.
* **Outcomes.** Each call is a success, a failure, or ignored (:func:`classify_error`); a call
  that took ``slow_call_duration`` or longer is also *slow*, whether it succeeded or failed.
* **Half-open.** ``half_open_permitted_calls`` trial calls are admitted (at most that many at a
  time and in total); others are rejected. An ignored outcome hands its slot to another trial.
  A trial that never reports back (a hung call, a leaked permit) cannot keep the breaker
  half-open for ever: after ``half_open_max_wait`` it is abandoned and the breaker opens again.
* **Permits.** Every admitted call holds a :class:`Permit` tagged with the breaker's generation
  (raised by each state change); outcomes of calls admitted before a state change are dropped,
  so a late answer from an abandoned trial cannot close a breaker that has moved on.
* **Timeout.** With ``call_timeout`` set, :meth:`CircuitBreaker.call` runs the call in a small
  shared thread pool and stops waiting after the timeout (:class:`CallTimeoutError`, a failure);
  the call itself runs on, its result dropped. ``None`` runs inline and relies on the client's own
  timeouts, which is what the AWS and Valkey clients here have.
* **Shared state.** When Valkey is configured, a breaker that opens on its own evidence writes
  ``msl:breaker:<name>`` (PX = its wait in OPEN); the other containers read that key at most once
  per ``shared_check_interval`` (on a call, never in the background: a frozen Lambda runs
  nothing) and open too, for what is left of the wait. :meth:`CircuitBreaker.reset` writes a reset
  marker there, which closes the breakers that opened before it. Shared-state calls go through
  the VALKEY breaker and never fail a call; the VALKEY breaker keeps no shared state.
* **Events.** Each state change is a log line (a warning when opening) and a metric
  (``CircuitOpened``, ``CircuitHalfOpened``, ``CircuitClosed``; dimensions ``dependency`` and
  Powertools' ``service``) in the namespace of POWERTOOLS_METRICS_NAMESPACE.

Default configurations (:data:`DEFAULT_CONFIGS`): a Lambda container serves one request at a
time, so it sees few calls, in bursts, with freezes in between. Time windows therefore suit the
AWS dependencies (outcomes from before a freeze age out instead of tipping the next request);
Valkey is called several times per request, so a count window refreshes quickly there.

* ``dynamodb``: time window 30 s, at least 10 calls, 50 % failures (throttling and 5xx after
  botocore's own retries, connection errors), slow calls at 80 % with slow = 2.5 s (the DynamoDB
  client's hook passes half its read timeout, so the local stack's 30 s timeout means 15 s);
  wait 5 s (throttling clears within seconds: a longer wait turns a blip into an outage);
  3 trials; a trial still unfinished after 30 s is abandoned (the client makes up to 4
  attempts, botocore's ``max_attempts=3`` retries after the first, of a 5 s read timeout).
* ``valkey``: count window 20, at least 5 calls (5 connect timeouts of 0.5 s is the most one
  request should pay before the cache steps aside), 50 % failures, slow = 100 ms at 50 % (a
  round trip is under a millisecond; a cache slower than the read it saves is worse than none);
  wait 5 s (the cache serves L1 only meanwhile); 2 trials, abandoned after 2 s (4x the socket
  timeouts).
* ``s3``: time window 60 s, 5 calls, 50 %, slow = 5 s at 100 %, wait 30 s, 1 trial, 60 s.
* ``sns``, ``ses`` (alerts, a few calls a minute from the scheduled check): time window 5 min,
  3 calls, 50 %, slow = 5 s at 100 %, wait 60 s, 1 trial, 30 s.
* ``model_store`` (loading a model: a download plus deserialisation, which has no client
  timeout): time window 5 min, 3 calls, 50 %, slow = 10 s at 100 %, wait 60 s, 1 trial, 60 s,
  and a 15 s call timeout so a prediction request answers before API Gateway's 29 s limit.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import itertools
import json
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from mysetlist.errors import DomainError
from mysetlist.observability import logger, metrics

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from redis import Redis

T = TypeVar("T")


class Dependency(StrEnum):
    DYNAMODB = "dynamodb"
    VALKEY = "valkey"
    S3 = "s3"
    SNS = "sns"
    SES = "ses"
    MODEL_STORE = "model_store"


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class WindowKind(StrEnum):
    COUNT = "count"
    TIME = "time"


class Verdict(StrEnum):
    """How an outcome counts: a success, a failure, or not at all (ignored)."""

    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"


class CircuitOpenError(Exception):
    """The breaker refused the call: its circuit is open (or half-open with every trial slot
    taken). Nothing was sent to the dependency. ``retry_after`` is the number of seconds until a
    trial call may be admitted."""

    def __init__(self, dependency: str, retry_after: float, state: BreakerState = BreakerState.OPEN) -> None:
        self.dependency = dependency
        self.retry_after = max(0.0, retry_after)
        self.state = state
        super().__init__(f"the {dependency} circuit is {state.value}; retry in {self.retry_after:.1f} s")


class CallTimeoutError(TimeoutError):
    """The guarded call did not finish within the breaker's ``call_timeout`` (counted as a
    failure). The call may still be running, and may still take effect."""

    def __init__(self, dependency: str, timeout: float) -> None:
        self.dependency = dependency
        self.timeout = timeout
        super().__init__(f"{dependency} did not answer within {timeout:g} s")


# --------------------------------------------------------------------------- classification

# Throttling codes of the AWS services used here besides DynamoDB's (mysetlist.dynamo has those):
# the request was refused because the service is overloaded, which is what a breaker is for.
AWS_THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException", "SlowDown"}
)
_REDIS_FAILURES = ("ConnectionError", "TimeoutError", "ClusterDownError", "TryAgainError", "MasterDownError")


def classify_error(exc: BaseException) -> Verdict:
    """The default classification of an exception raised by a guarded call.

    Failures (the dependency is unreachable, overloaded or broken): connection errors and
    timeouts (botocore's, redis-py's, the OS's, :class:`CallTimeoutError`), AWS throttling, and
    any AWS error with an HTTP status of 500 or more.

    Successes (the dependency answered, the request was wrong or lost a race): AWS client
    errors with a 4xx status, for example ConditionalCheckFailedException, ValidationException,
    ResourceNotFoundException, or a TransactionCanceledException for conditions or conflicts.

    Ignored (says nothing about the dependency): :class:`mysetlist.errors.DomainError` (raised
    by our own code inside a guarded block), any other exception (a bug of ours), and
    ``BaseException``\\ s that are not ``Exception``\\ s (an interrupt).
    """
    if isinstance(exc, CallTimeoutError):
        return Verdict.FAILURE
    if not isinstance(exc, Exception) or isinstance(exc, DomainError | CircuitOpenError):
        return Verdict.IGNORED
    verdict = _aws_verdict(exc)
    if verdict is not None:
        return verdict
    if _is_redis_failure(exc) or isinstance(exc, TimeoutError | ConnectionError):
        return Verdict.FAILURE
    return Verdict.IGNORED


def counts_as_failure(exc: BaseException) -> bool:
    """True when the default classification counts ``exc`` against the dependency (a transient
    fault: worth a retry if the operation is idempotent)."""
    return classify_error(exc) is Verdict.FAILURE


def _aws_verdict(exc: Exception) -> Verdict | None:
    # botocore is loaded whenever one of its exceptions exists: no import cost otherwise.
    botocore_errors = sys.modules.get("botocore.exceptions")
    if botocore_errors is None:
        return None
    if isinstance(exc, botocore_errors.ClientError):
        response: Any = exc.response
        return aws_response_verdict(response)
    if isinstance(exc, botocore_errors.ConnectionError | botocore_errors.HTTPClientError):
        return Verdict.FAILURE
    return None


def aws_response_verdict(response: Mapping[str, Any]) -> Verdict:
    """The verdict for a parsed AWS error response (``ClientError.response``, or what botocore
    hands to ``after-call`` handlers)."""
    from mysetlist.dynamo import THROTTLING_CODES, UNKNOWN_OUTCOME_CODES  # noqa: PLC0415 - dynamo imports this module

    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in THROTTLING_CODES or code in UNKNOWN_OUTCOME_CODES or code in AWS_THROTTLING_CODES:
        return Verdict.FAILURE
    if code == "TransactionCanceledException":
        reasons = {str(r.get("Code")) for r in response.get("CancellationReasons") or []}
        return Verdict.FAILURE if "ThrottlingError" in reasons else Verdict.SUCCESS
    return Verdict.FAILURE if status >= 500 else Verdict.SUCCESS


def _is_redis_failure(exc: Exception) -> bool:
    redis_errors = sys.modules.get("redis.exceptions")
    if redis_errors is None:
        return False
    kinds = tuple(getattr(redis_errors, name) for name in _REDIS_FAILURES if hasattr(redis_errors, name))
    return isinstance(exc, kinds)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """How one breaker judges its dependency (see the module docstring for the defaults)."""

    window: WindowKind = WindowKind.TIME
    # Calls (count window) or seconds (time window).
    window_size: int = 60
    # Rates are judged only once the window holds this many calls.
    minimum_calls: int = 5
    # Fractions (0, 1]: open when the failure rate or the slow-call rate reaches them.
    failure_rate_threshold: float = 0.5
    slow_call_rate_threshold: float = 1.0
    # A call that takes this long (seconds) or longer is slow.
    slow_call_duration: float = 5.0
    # Seconds in OPEN before trial calls are admitted.
    wait_in_open: float = 30.0
    # Trial calls in HALF_OPEN (at most this many at a time, and in total per half-open period).
    half_open_permitted_calls: int = 1
    # A trial unfinished after this many seconds is abandoned and the breaker opens again.
    half_open_max_wait: float = 60.0
    # Seconds to wait for a call made through CircuitBreaker.call (None: rely on client timeouts).
    call_timeout: float | None = None
    # Seconds between two reads of the shared state in Valkey.
    shared_check_interval: float = 1.0
    classify: Callable[[BaseException], Verdict] = field(default=classify_error, compare=False)

    def __post_init__(self) -> None:
        problems = []
        if self.window_size < 1:
            problems.append("window_size must be at least 1")
        if self.minimum_calls < 1:
            problems.append("minimum_calls must be at least 1")
        if self.window is WindowKind.COUNT and self.minimum_calls > self.window_size:
            problems.append("minimum_calls cannot exceed a count window's size (it would never open)")
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            if not 0 < getattr(self, name) <= 1:
                problems.append(f"{name} must be in (0, 1]")
        for name in ("slow_call_duration", "wait_in_open", "half_open_max_wait"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive")
        if self.half_open_permitted_calls < 1:
            problems.append("half_open_permitted_calls must be at least 1")
        if self.call_timeout is not None and not self.call_timeout > 0:
            problems.append("call_timeout must be positive (or None)")
        if self.shared_check_interval < 0:
            problems.append("shared_check_interval cannot be negative")
        if problems:
            raise ValueError("; ".join(problems))

    def describe(self) -> dict[str, Any]:
        """The settings as JSON-ready values (the classifier is named, not serialised)."""
        return {
            "window": self.window.value,
            "window_size": self.window_size,
            "minimum_calls": self.minimum_calls,
            "failure_rate_threshold": self.failure_rate_threshold,
            "slow_call_rate_threshold": self.slow_call_rate_threshold,
            "slow_call_duration": self.slow_call_duration,
            "wait_in_open": self.wait_in_open,
            "half_open_permitted_calls": self.half_open_permitted_calls,
            "half_open_max_wait": self.half_open_max_wait,
            "call_timeout": self.call_timeout,
            "classify": getattr(self.classify, "__name__", type(self.classify).__name__),
        }


_ALERTS = BreakerConfig(
    window=WindowKind.TIME,
    window_size=300,
    minimum_calls=3,
    slow_call_duration=5.0,
    wait_in_open=60.0,
    half_open_permitted_calls=1,
    half_open_max_wait=30.0,
)

DEFAULT_CONFIGS: Mapping[Dependency, BreakerConfig] = {
    Dependency.DYNAMODB: BreakerConfig(
        window=WindowKind.TIME,
        window_size=30,
        minimum_calls=10,
        failure_rate_threshold=0.5,
        slow_call_rate_threshold=0.8,
        slow_call_duration=2.5,
        wait_in_open=5.0,
        half_open_permitted_calls=3,
        half_open_max_wait=30.0,
    ),
    Dependency.VALKEY: BreakerConfig(
        window=WindowKind.COUNT,
        window_size=20,
        minimum_calls=5,
        failure_rate_threshold=0.5,
        slow_call_rate_threshold=0.5,
        slow_call_duration=0.1,
        wait_in_open=5.0,
        half_open_permitted_calls=2,
        half_open_max_wait=2.0,
    ),
    Dependency.S3: BreakerConfig(
        window=WindowKind.TIME,
        window_size=60,
        minimum_calls=5,
        slow_call_duration=5.0,
        wait_in_open=30.0,
        half_open_permitted_calls=1,
        half_open_max_wait=60.0,
    ),
    Dependency.SNS: _ALERTS,
    Dependency.SES: _ALERTS,
    Dependency.MODEL_STORE: BreakerConfig(
        window=WindowKind.TIME,
        window_size=300,
        minimum_calls=3,
        slow_call_duration=10.0,
        wait_in_open=60.0,
        half_open_permitted_calls=1,
        half_open_max_wait=60.0,
        call_timeout=15.0,
    ),
}


def default_config(name: str) -> BreakerConfig:
    """The default configuration for a dependency (a generic one for names not in :class:`Dependency`)."""
    try:
        return DEFAULT_CONFIGS[Dependency(name)]
    except ValueError:
        return BreakerConfig()


# --------------------------------------------------------------------------- windows


@dataclass(slots=True)
class _Counts:
    calls: int = 0
    failures: int = 0
    slow: int = 0

    def add(self, failed: bool, slow: bool, sign: int = 1) -> None:
        self.calls += sign
        self.failures += sign * failed
        self.slow += sign * slow

    def rates(self) -> tuple[float | None, float | None]:
        if not self.calls:
            return None, None
        return self.failures / self.calls, self.slow / self.calls


class _CountWindow:
    """The last ``size`` outcomes."""

    def __init__(self, size: int) -> None:
        self._outcomes: deque[tuple[bool, bool]] = deque()
        self._size = size
        self.counts = _Counts()

    def record(self, _now: float, failed: bool, slow: bool) -> None:
        if len(self._outcomes) == self._size:
            self.counts.add(*self._outcomes.popleft(), sign=-1)
        self._outcomes.append((failed, slow))
        self.counts.add(failed, slow)

    def totals(self, _now: float) -> _Counts:
        return _Counts(self.counts.calls, self.counts.failures, self.counts.slow)


class _TimeWindow:
    """The outcomes of the last ``size`` seconds, in one-second buckets (an outcome leaves the
    window between ``size - 1`` and ``size`` seconds after it was recorded)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._buckets: deque[tuple[int, _Counts]] = deque()
        self.counts = _Counts()

    def _expire(self, now: float) -> int:
        second = math.floor(now)
        while self._buckets and self._buckets[0][0] <= second - self._size:
            gone = self._buckets.popleft()[1]
            self.counts.calls -= gone.calls
            self.counts.failures -= gone.failures
            self.counts.slow -= gone.slow
        return second

    def record(self, now: float, failed: bool, slow: bool) -> None:
        second = self._expire(now)
        if not self._buckets or self._buckets[-1][0] < second:
            self._buckets.append((second, _Counts()))
        # An outcome recorded late (a long call) lands in the newest bucket: never out of order.
        self._buckets[-1][1].add(failed, slow)
        self.counts.add(failed, slow)

    def totals(self, now: float) -> _Counts:
        self._expire(now)
        return _Counts(self.counts.calls, self.counts.failures, self.counts.slow)


def _window(config: BreakerConfig) -> _CountWindow | _TimeWindow:
    return (
        _CountWindow(config.window_size)
        if config.window is WindowKind.COUNT
        else _TimeWindow(config.window_size)
    )


# --------------------------------------------------------------------------- shared state


@dataclass(frozen=True, slots=True)
class SharedEvent:
    """What one container told the others about a breaker: it opened, or it was reset."""

    kind: Literal["open", "reset"]
    id: str
    at: float  # wall-clock seconds when it happened
    seconds_left: float = 0.0  # how long the key still lives (for "open": the rest of the wait)
    info: Mapping[str, Any] = field(default_factory=dict)


class SharedState(Protocol):
    """Where breakers of several containers meet (Valkey). Implementations never raise."""

    def read(self, name: str) -> SharedEvent | None: ...

    def write(self, name: str, event: SharedEvent, ttl: float) -> None: ...


def _default_valkey() -> Redis | None:
    from mysetlist.settings import load_settings  # noqa: PLC0415 - read on first use, not at import
    from mysetlist.valkey import valkey_client  # noqa: PLC0415

    return valkey_client(load_settings())


def _default_guard() -> CircuitBreaker:
    return breaker_for(Dependency.VALKEY)


class ValkeySharedState:
    """Shared breaker state in one Valkey key per breaker, ``msl:breaker:<name>``: a JSON event
    that expires (PX) when it stops mattering. Calls go through ``guard`` (the VALKEY breaker);
    any failure reads as "nothing shared" and is logged at debug level."""

    def __init__(
        self,
        client: Callable[[], Redis | None] = _default_valkey,
        guard: Callable[[], CircuitBreaker] = _default_guard,
    ) -> None:
        self._client = client
        self._guard = guard

    @staticmethod
    def key(name: str) -> str:
        from mysetlist.valkey import plain_key  # noqa: PLC0415

        return plain_key("breaker", name)

    def read(self, name: str) -> SharedEvent | None:
        def fetch(client: Redis) -> tuple[Any, Any]:
            pipe = client.pipeline(transaction=False)  # one key: one round trip, one hash slot
            pipe.get(self.key(name))
            pipe.pttl(self.key(name))
            raw, ttl = pipe.execute()
            return raw, ttl

        found = self._run(fetch)
        if found is None:
            return None
        raw, ttl = found
        if raw is None or not isinstance(ttl, int) or ttl <= 0:
            return None
        try:
            body = json.loads(raw)
            kind = body["kind"]
            if kind not in ("open", "reset"):
                return None
            return SharedEvent(
                kind=kind,
                id=str(body["id"]),
                at=float(body["at"]),
                seconds_left=ttl / 1000,
                info=dict(body.get("info") or {}),
            )
        except (ValueError, KeyError, TypeError):
            logger.debug("unreadable shared breaker state", extra={"dependency": name})
            return None

    def write(self, name: str, event: SharedEvent, ttl: float) -> None:
        body = json.dumps({"kind": event.kind, "id": event.id, "at": event.at, "info": dict(event.info)})
        self._run(lambda client: client.set(self.key(name), body, px=max(1, math.ceil(ttl * 1000))))

    def _run(self, operation: Callable[[Redis], T]) -> T | None:
        try:
            client = self._client()
            if client is None:
                return None
            return self._guard().call(operation, client)
        except Exception as exc:  # Valkey down, slow, refused, circuit open: shared state is optional
            logger.debug("shared breaker state unavailable", extra={"error": repr(exc)})
            return None


# --------------------------------------------------------------------------- the breaker

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
# Calls with a timeout run here. Small: few calls need one (most clients have their own), and a
# call that hangs past its timeout keeps its thread until it ends.
_POOL_WORKERS = 4


def _executor() -> ThreadPoolExecutor:
    global _pool  # noqa: PLW0603 - one pool per container, created on first use
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 - only calls with a timeout need it

    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_POOL_WORKERS, thread_name_prefix="breaker-call")
        return _pool


def _event_id() -> str:
    return os.urandom(16).hex()


@dataclass(slots=True, eq=False)
class Permit:
    """Admission of one call. Report its outcome once with :meth:`record` (or give the slot back
    with :meth:`release`); later reports are ignored."""

    breaker: CircuitBreaker
    generation: int
    started: float
    trial: bool
    id: int
    done: bool = False

    def record(
        self, error: BaseException | None = None, *, slow_call_duration: float | None = None
    ) -> Verdict:
        """Report the call's outcome: ``error`` None for a success, else the exception it raised
        (classified by the breaker's config). ``slow_call_duration`` overrides the config's for
        this call. Returns the verdict."""
        return self.breaker._finish(self, error, slow_call_duration)

    def release(self) -> None:
        """Give the permit back without counting the call (it was not a test of the dependency)."""
        self.breaker._finish(self, None, None, verdict=Verdict.IGNORED)


@dataclass(slots=True)
class _Transition:
    old: BreakerState
    new: BreakerState
    reason: str
    counts: _Counts
    retry_after: float
    publish: SharedEvent | None = None
    publish_ttl: float = 0.0


class CircuitBreaker:
    """A circuit breaker for one dependency (see the module docstring). Thread-safe."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        shared: SharedState | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.config = config or default_config(name)
        # The VALKEY breaker guards the shared state itself: it cannot also depend on it.
        self._shared = shared if name != Dependency.VALKEY else None
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._window = _window(self.config)
        self._trials = _Counts()
        self._in_flight: dict[int, float] = {}
        self._open_until = 0.0
        self._opened_at: float | None = None  # wall clock
        self._tripped = _Counts()
        self._reason = ""
        self._not_permitted = 0
        self._last_shared_check = -math.inf
        self._last_shared_id = ""

    # ------------------------------------------------------------------ public API

    @property
    def state(self) -> BreakerState:
        """The current state (OPEN turns HALF_OPEN once its wait is over, on this read)."""
        transitions: list[_Transition] = []
        with self._lock:
            state = self._advance(self._clock(), transitions)
        self._emit(transitions)
        return state

    def acquire(self) -> Permit:
        """Admit one call or raise :class:`CircuitOpenError`. The caller must report the outcome
        on the returned permit (:meth:`Permit.record` or :meth:`Permit.release`)."""
        self._refresh_shared()
        transitions: list[_Transition] = []
        rejected: CircuitOpenError | None = None
        with self._lock:
            now = self._clock()
            state = self._advance(now, transitions)
            if state is BreakerState.OPEN:
                rejected = CircuitOpenError(self.name, self._open_until - now, state)
            elif (
                state is BreakerState.HALF_OPEN
                and len(self._in_flight) + self._trials.calls >= self.config.half_open_permitted_calls
            ):
                # Every trial slot is taken: one frees up when a trial ends or is abandoned.
                oldest = min(self._in_flight.values(), default=now)
                wait = min(oldest + self.config.half_open_max_wait - now, self.config.wait_in_open)
                rejected = CircuitOpenError(self.name, wait, state)
            if rejected is not None:
                self._not_permitted += 1
            else:
                trial = state is BreakerState.HALF_OPEN
                permit = Permit(self, self._generation, now, trial=trial, id=next(self._ids))
                if trial:
                    self._in_flight[permit.id] = now
        self._emit(transitions)
        if rejected is not None:
            raise rejected
        return permit

    def call(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        fallback: Callable[[BaseException], T] | None = None,
        **kwargs: Any,
    ) -> T:
        """Call ``fn(*args, **kwargs)`` through the breaker and return its result.

        Raises :class:`CircuitOpenError` without calling when the circuit is open,
        :class:`CallTimeoutError` when ``call_timeout`` is set and passes, or whatever ``fn``
        raised. With ``fallback``, a rejection or a counted failure returns ``fallback(exc)``
        instead (ignored and successful-verdict errors are always re-raised).
        """
        try:
            permit = self.acquire()
        except CircuitOpenError as exc:
            if fallback is None:
                raise
            return fallback(exc)
        try:
            if self.config.call_timeout is None:
                result = fn(*args, **kwargs)
            else:
                result = self._call_with_timeout(fn, args, kwargs, self.config.call_timeout)
        except BaseException as exc:
            verdict = permit.record(exc)
            if verdict is Verdict.FAILURE and fallback is not None:
                return fallback(exc)
            raise
        permit.record()
        return result

    @contextmanager
    def guard(self) -> Iterator[None]:
        """The accounting of :meth:`call` for a ``with`` block: raises :class:`CircuitOpenError`
        on entry when open; the block's exception (if any) is classified and re-raised.
        ``call_timeout`` does not apply (a block cannot be abandoned); slow blocks count."""
        permit = self.acquire()
        try:
            yield
        except BaseException as exc:
            permit.record(exc)
            raise
        permit.record()

    def force_open(self, seconds: float | None = None, reason: str = "forced open") -> None:
        """Open the circuit now for ``seconds`` (default: the config's wait), telling the other
        containers when shared state is on (operators; tests)."""
        transitions: list[_Transition] = []
        with self._lock:
            self._open(self._clock(), reason, transitions, seconds=seconds, publish=True)
        self._emit(transitions)

    def reset(self) -> None:
        """Back to CLOSED with an empty window, here and (through the shared state) in the other
        containers whose breaker opened before now."""
        transitions: list[_Transition] = []
        with self._lock:
            if self._state is not BreakerState.CLOSED:
                self._close("reset", transitions)
            else:
                self._generation += 1
                self._window = _window(self.config)
            self._not_permitted = 0
            self._last_shared_check = -math.inf
            event = SharedEvent(kind="reset", id=_event_id(), at=self._wall())
            self._last_shared_id = event.id
        self._emit(transitions)
        # Containers opened before the reset close when they read it; it matters only as long as
        # an open wait lasts.
        self._write_shared(event, self.config.wait_in_open)

    def snapshot(self) -> dict[str, Any]:
        """The breaker as JSON-ready values: state, the current measurement (the sliding window
        when CLOSED, the trials when HALF_OPEN, what tripped it when OPEN), when it opened and
        how long until a trial may be made."""
        transitions: list[_Transition] = []
        with self._lock:
            now = self._clock()
            state = self._advance(now, transitions)
            if state is BreakerState.CLOSED:
                counts = self._window.totals(now)
            elif state is BreakerState.HALF_OPEN:
                counts = _Counts(self._trials.calls, self._trials.failures, self._trials.slow)
            else:
                counts = _Counts(self._tripped.calls, self._tripped.failures, self._tripped.slow)
            failure_rate, slow_rate = counts.rates()
            retry_after = max(0.0, self._open_until - now) if state is BreakerState.OPEN else 0.0
            snapshot = {
                "name": self.name,
                "state": state.value,
                "failure_rate": None if failure_rate is None else round(failure_rate, 4),
                "slow_call_rate": None if slow_rate is None else round(slow_rate, 4),
                "calls": counts.calls,
                "failures": counts.failures,
                "slow_calls": counts.slow,
                "opened_at": _iso(self._opened_at) if state is not BreakerState.CLOSED else None,
                "retry_after": round(retry_after, 3),
                "reason": self._reason or None,
                "not_permitted": self._not_permitted,
                "half_open_in_flight": len(self._in_flight) if state is BreakerState.HALF_OPEN else 0,
                "shared_state": self._shared is not None,
                "config": self.config.describe(),
            }
        self._emit(transitions)
        return snapshot

    # ------------------------------------------------------------------ internals

    def _call_with_timeout(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float
    ) -> T:
        # The worker runs in a copy of this context (log keys, the invocation's remaining time).
        from concurrent.futures import wait  # noqa: PLC0415 - loaded by _executor already

        context = contextvars.copy_context()
        future = _executor().submit(context.run, fn, *args, **kwargs)
        done, _ = wait([future], timeout=timeout)
        if not done:
            future.cancel()  # only helps if it has not started; a running call runs on
            raise CallTimeoutError(self.name, timeout)
        return future.result()

    def _finish(
        self,
        permit: Permit,
        error: BaseException | None,
        slow_call_duration: float | None,
        verdict: Verdict | None = None,
    ) -> Verdict:
        if verdict is None:
            verdict = Verdict.SUCCESS if error is None else self.config.classify(error)
        transitions: list[_Transition] = []
        with self._lock:
            if permit.done:
                return verdict
            permit.done = True
            now = self._clock()
            threshold = self.config.slow_call_duration if slow_call_duration is None else slow_call_duration
            slow = now - permit.started >= threshold
            self._settle(permit, verdict, slow, now, transitions)
        self._emit(transitions)
        return verdict

    def _settle(
        self, permit: Permit, verdict: Verdict, slow: bool, now: float, transitions: list[_Transition]
    ) -> None:
        self._advance(now, transitions)
        if permit.generation != self._generation:
            return  # admitted before a state change: its outcome belongs to a finished period
        failed = verdict is Verdict.FAILURE
        config = self.config
        if self._state is BreakerState.CLOSED:
            if verdict is Verdict.IGNORED:
                return
            self._window.record(now, failed, slow)
            counts = self._window.totals(now)
            if counts.calls >= config.minimum_calls:
                failure_rate, slow_rate = counts.rates()
                if failure_rate is not None and failure_rate >= config.failure_rate_threshold:
                    self._open(now, "failure rate reached the threshold", transitions, counts=counts)
                elif slow_rate is not None and slow_rate >= config.slow_call_rate_threshold:
                    self._open(now, "slow-call rate reached the threshold", transitions, counts=counts)
        elif self._state is BreakerState.HALF_OPEN:
            self._in_flight.pop(permit.id, None)
            if verdict is Verdict.IGNORED:
                return  # the slot goes to another trial
            self._trials.add(failed, slow)
            trials = config.half_open_permitted_calls
            counts = _Counts(self._trials.calls, self._trials.failures, self._trials.slow)
            # Decided as soon as the remaining trials cannot bring the rate under the threshold.
            if self._trials.failures / trials >= config.failure_rate_threshold:
                self._open(now, "trial calls failed", transitions, counts=counts)
            elif self._trials.slow / trials >= config.slow_call_rate_threshold:
                self._open(now, "trial calls were slow", transitions, counts=counts)
            elif self._trials.calls >= trials:
                self._close("trial calls succeeded", transitions)

    def _advance(self, now: float, transitions: list[_Transition]) -> BreakerState:
        """Time-driven transitions: OPEN -> HALF_OPEN after the wait; HALF_OPEN -> OPEN when a
        trial has been out longer than ``half_open_max_wait`` (abandoned)."""
        if self._state is BreakerState.OPEN and now >= self._open_until:
            old = self._state
            self._state = BreakerState.HALF_OPEN
            self._generation += 1
            self._trials = _Counts()
            self._in_flight = {}
            self._reason = "wait in open elapsed"
            transitions.append(_Transition(old, self._state, self._reason, _Counts(), 0.0))
        if self._state is BreakerState.HALF_OPEN and self._in_flight:
            oldest = min(self._in_flight.values())
            if now - oldest >= self.config.half_open_max_wait:
                self._open(now, "trial calls were abandoned (no outcome in time)", transitions, publish=True)
        return self._state

    def _open(
        self,
        now: float,
        reason: str,
        transitions: list[_Transition],
        *,
        counts: _Counts | None = None,
        seconds: float | None = None,
        publish: bool = True,
    ) -> None:
        old = self._state
        wait = self.config.wait_in_open if seconds is None else seconds
        self._state = BreakerState.OPEN
        self._generation += 1
        self._open_until = now + wait
        self._opened_at = self._wall()
        self._tripped = counts or _Counts()
        self._trials = _Counts()
        self._in_flight = {}
        self._reason = reason
        self._not_permitted = 0
        transition = _Transition(old, BreakerState.OPEN, reason, self._tripped, wait)
        if publish and self._shared is not None:
            failure_rate, slow_rate = self._tripped.rates()
            transition.publish = SharedEvent(
                kind="open",
                id=_event_id(),
                at=self._opened_at,
                info={
                    "reason": reason,
                    "failure_rate": failure_rate,
                    "slow_call_rate": slow_rate,
                    "calls": self._tripped.calls,
                },
            )
            transition.publish_ttl = wait
            self._last_shared_id = transition.publish.id
        transitions.append(transition)

    def _close(self, reason: str, transitions: list[_Transition]) -> None:
        old = self._state
        self._state = BreakerState.CLOSED
        self._generation += 1
        self._window = _window(self.config)
        self._trials = _Counts()
        self._in_flight = {}
        self._opened_at = None
        self._tripped = _Counts()
        self._reason = reason
        self._not_permitted = 0
        transitions.append(_Transition(old, BreakerState.CLOSED, reason, _Counts(), 0.0))

    def _refresh_shared(self) -> None:
        """At most once per ``shared_check_interval``: adopt another container's open, or its
        reset when this breaker opened before it. Valkey is read outside the lock."""
        if self._shared is None:
            return
        with self._lock:
            now = self._clock()
            if now - self._last_shared_check < self.config.shared_check_interval:
                return
            self._last_shared_check = now
        try:
            event = self._shared.read(self.name)
        except Exception:  # implementations should not raise; a call must not fail for it anyway
            logger.exception("shared breaker state could not be read", extra={"dependency": self.name})
            return
        if event is None:
            return
        transitions: list[_Transition] = []
        with self._lock:
            if event.id == self._last_shared_id:
                return
            self._last_shared_id = event.id
            now = self._clock()
            state = self._advance(now, transitions)
            if event.kind == "open" and state is not BreakerState.OPEN:
                self._open(
                    now, "opened by another container", transitions, seconds=event.seconds_left, publish=False
                )
            elif (
                event.kind == "reset"
                and state is not BreakerState.CLOSED
                and (self._opened_at is None or event.at >= self._opened_at)
            ):
                self._close("reset in another container", transitions)
        self._emit(transitions)

    def _emit(self, transitions: list[_Transition]) -> None:
        """Logs, metrics and shared-state writes for state changes (outside the lock)."""
        for change in transitions:
            failure_rate, slow_rate = change.counts.rates()
            fields = {
                "dependency": self.name,
                "from_state": change.old.value,
                "to_state": change.new.value,
                "reason": change.reason,
                "calls": change.counts.calls,
                "failure_rate": failure_rate,
                "slow_call_rate": slow_rate,
            }
            if change.new is BreakerState.OPEN:
                logger.warning("circuit opened", extra={**fields, "retry_after": change.retry_after})
            elif change.new is BreakerState.HALF_OPEN:
                logger.info("circuit half-open: admitting trial calls", extra=fields)
            else:
                logger.info("circuit closed", extra=fields)
            _state_metric(_METRIC_NAMES[change.new], self.name)
            if change.publish is not None and self._shared is not None:
                self._write_shared(change.publish, change.publish_ttl)

    def _write_shared(self, event: SharedEvent, ttl: float) -> None:
        if self._shared is None:
            return
        try:
            self._shared.write(self.name, event, ttl)
        except Exception:  # implementations should not raise; a call must not fail for it anyway
            logger.exception("shared breaker state could not be written", extra={"dependency": self.name})


_METRIC_NAMES = {
    BreakerState.OPEN: "CircuitOpened",
    BreakerState.HALF_OPEN: "CircuitHalfOpened",
    BreakerState.CLOSED: "CircuitClosed",
}


def _state_metric(name: str, dependency: str) -> None:
    namespace = metrics.namespace  # POWERTOOLS_METRICS_NAMESPACE
    if not namespace:
        logger.debug("no metrics namespace: state-change metric not emitted", extra={"metric": name})
        return
    try:
        with single_metric(name=name, unit=MetricUnit.Count, value=1, namespace=namespace) as metric:
            metric.add_dimension(name="dependency", value=dependency)
    except Exception:  # a metric must never break the call that changed the state
        logger.exception("could not emit a breaker metric", extra={"metric": name})


def _iso(wall: float | None) -> str | None:
    if wall is None:
        return None
    return dt.datetime.fromtimestamp(wall, dt.UTC).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- the registry

_registry_lock = threading.Lock()
_registry: dict[str, CircuitBreaker] = {}


def breaker_for(dependency: Dependency | str) -> CircuitBreaker:
    """The container's breaker for ``dependency`` (created on first use with its default
    config; shared state in Valkey for every dependency but Valkey itself)."""
    name = str(dependency)
    found = _registry.get(name)
    if found is not None:
        return found
    with _registry_lock:
        found = _registry.get(name)
        if found is None:
            shared = None if name == Dependency.VALKEY else ValkeySharedState()
            found = _registry[name] = CircuitBreaker(name, default_config(name), shared=shared)
        return found


def all_breakers() -> dict[str, CircuitBreaker]:
    """Every breaker of this container by name (the six dependencies' always included)."""
    for dependency in Dependency:
        breaker_for(dependency)
    with _registry_lock:
        return dict(_registry)


def reset_all() -> None:
    """Reset every breaker of this container (and tell the other containers)."""
    for breaker in all_breakers().values():
        breaker.reset()
