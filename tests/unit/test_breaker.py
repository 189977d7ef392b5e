"""The circuit breaker's state machine, against the scenarios the established breakers test
(resilience4j's CircuitBreakerStateMachineTest, Polly's circuit-breaker specs, pybreaker's
tests): minimum calls, failure-rate and slow-call thresholds, count and time windows, the wait
in OPEN, half-open trial limits, recovery, abandoned trials, ignored errors, timeouts, fallbacks,
events and thread safety. Time is an injected clock; nothing here waits on the wall clock except
the call-timeout test, which waits for the breaker's own (tiny) timeout to pass."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import botocore.exceptions
import pytest
import redis.exceptions
from botocore.exceptions import ClientError
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from mysetlist import observability
from mysetlist.breaker import (
    DEFAULT_CONFIGS,
    BreakerConfig,
    BreakerState,
    CallTimeoutError,
    CircuitBreaker,
    CircuitOpenError,
    Dependency,
    Permit,
    Verdict,
    WindowKind,
    all_breakers,
    breaker_for,
    classify_error,
    reset_all,
)
from mysetlist.errors import Conflict, NotFound
from mysetlist.settings import load_settings
from tests.harness.events import LambdaContext


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Down(ConnectionError):
    """A dependency that cannot be reached (counts as a failure)."""


def state_of(b: CircuitBreaker) -> BreakerState:
    """The breaker's state, read through a call: the state changes under calls mypy cannot see."""
    return b.state


def config(**overrides: Any) -> BreakerConfig:
    base = BreakerConfig(
        window=WindowKind.COUNT,
        window_size=10,
        minimum_calls=4,
        failure_rate_threshold=0.5,
        slow_call_rate_threshold=0.5,
        slow_call_duration=2.0,
        wait_in_open=30.0,
        half_open_permitted_calls=2,
        half_open_max_wait=60.0,
    )
    return replace(base, **overrides)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock, **overrides: Any) -> CircuitBreaker:
    return CircuitBreaker(
        "test-dependency", config(**overrides), clock=clock, wall_clock=lambda: 1_900_000_000.0
    )


def succeed(b: CircuitBreaker, clock: Clock | None = None, took: float = 0.0) -> str:
    def work() -> str:
        if clock is not None:
            clock.advance(took)
        return "ok"

    return b.call(work)


def fail(b: CircuitBreaker, clock: Clock | None = None, took: float = 0.0) -> None:
    def work() -> None:
        if clock is not None:
            clock.advance(took)
        raise Down("refused")

    with pytest.raises(Down):
        b.call(work)


def client_error(code: str, status: int, **extra: Any) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "x"},
        "ResponseMetadata": {"HTTPStatusCode": status},
        **extra,
    }
    return ClientError(response, "PutItem")


# --------------------------------------------------------------------------- CLOSED: the window


def test_stays_closed_below_the_minimum_number_of_calls_even_at_100_percent_failures(clock: Clock) -> None:
    b = breaker(clock, minimum_calls=5)
    for _ in range(4):
        fail(b)
    assert state_of(b) is BreakerState.CLOSED
    snapshot = b.snapshot()
    assert (snapshot["calls"], snapshot["failures"], snapshot["failure_rate"]) == (4, 4, 1.0)


def test_opens_at_the_failure_rate_threshold_once_the_minimum_is_reached_and_not_one_call_before(
    clock: Clock,
) -> None:
    b = breaker(clock, minimum_calls=10, window_size=20, failure_rate_threshold=0.5)
    for _ in range(5):
        succeed(b)
    for _ in range(4):
        fail(b)
    assert state_of(b) is BreakerState.CLOSED  # 9 calls: under the minimum, whatever the rate
    fail(b)  # 10 calls, 5 failures: 50 % reaches the threshold
    assert state_of(b) is BreakerState.OPEN


def test_a_failure_rate_just_under_the_threshold_keeps_it_closed(clock: Clock) -> None:
    b = breaker(clock, minimum_calls=10, window_size=10, failure_rate_threshold=0.5)
    for _ in range(6):
        succeed(b)
    for _ in range(4):
        fail(b)
    assert state_of(b) is BreakerState.CLOSED
    assert b.snapshot()["failure_rate"] == 0.4


def test_slow_successes_open_it_at_the_slow_call_rate_threshold(clock: Clock) -> None:
    b = breaker(clock, minimum_calls=4, slow_call_duration=2.0, slow_call_rate_threshold=0.75)
    succeed(b, clock, took=1.99)  # just under the slow duration
    succeed(b, clock, took=2.0)
    succeed(b, clock, took=5.0)
    assert state_of(b) is BreakerState.CLOSED  # 3 calls: under the minimum
    succeed(b, clock, took=3.0)  # 3 slow of 4 = 75 %
    assert state_of(b) is BreakerState.OPEN
    snapshot = b.snapshot()
    assert (snapshot["failures"], snapshot["slow_calls"], snapshot["slow_call_rate"]) == (0, 3, 0.75)
    assert snapshot["reason"] == "slow-call rate reached the threshold"


def test_slow_failures_count_as_failures_and_as_slow(clock: Clock) -> None:
    b = breaker(clock, minimum_calls=4, failure_rate_threshold=1.0, slow_call_rate_threshold=1.0)
    for _ in range(3):
        fail(b, clock, took=2.5)
    snapshot = b.snapshot()
    assert (snapshot["failures"], snapshot["slow_calls"]) == (3, 3)


def test_the_count_window_slides_old_outcomes_out(clock: Clock) -> None:
    b = breaker(clock, window_size=4, minimum_calls=4, failure_rate_threshold=0.5)
    fail(b)
    for _ in range(4):
        succeed(b)
    # The first failure has slid out: the window is four successes.
    assert (b.snapshot()["calls"], b.snapshot()["failures"]) == (4, 0)
    fail(b)
    assert state_of(b) is BreakerState.CLOSED  # S S S F: 25 %
    fail(b)  # S S F F: 50 % of the last four (3 of 7 since the start would be 43 %)
    assert state_of(b) is BreakerState.OPEN


def test_the_time_window_forgets_outcomes_older_than_its_size(clock: Clock) -> None:
    clock.now = 100.0
    b = breaker(clock, window=WindowKind.TIME, window_size=10, minimum_calls=3, failure_rate_threshold=0.5)
    fail(b)  # at 100.0
    clock.now = 101.0
    fail(b)
    clock.now = 109.9
    assert b.snapshot()["calls"] == 2  # both still in the last 10 s
    clock.now = 110.0
    assert b.snapshot()["calls"] == 1  # the one at 100.0 has left
    succeed(b)
    succeed(b)
    # F S S: 33 %. Had the first failure stayed, F F S S would have opened it.
    assert state_of(b) is BreakerState.CLOSED
    clock.now = 200.0
    assert b.snapshot()["calls"] == 0


def test_the_time_window_opens_on_failures_within_it(clock: Clock) -> None:
    b = breaker(clock, window=WindowKind.TIME, window_size=10, minimum_calls=3, failure_rate_threshold=0.6)
    for _ in range(3):
        fail(b, clock, took=0.5)
    assert state_of(b) is BreakerState.OPEN


# --------------------------------------------------------------------------- OPEN


def opened(clock: Clock, **overrides: Any) -> CircuitBreaker:
    b = breaker(clock, **overrides)
    for _ in range(b.config.minimum_calls):
        fail(b)
    assert state_of(b) is BreakerState.OPEN
    return b


def test_open_rejects_calls_without_making_them_and_says_when_to_retry(clock: Clock) -> None:
    b = opened(clock, wait_in_open=30.0)
    clock.advance(12.0)
    calls: list[int] = []
    with pytest.raises(CircuitOpenError) as rejected:
        b.call(lambda: calls.append(1))
    assert calls == []
    assert rejected.value.retry_after == pytest.approx(18.0)
    assert rejected.value.dependency == "test-dependency"
    assert rejected.value.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError), b.guard():
        calls.append(2)
    assert calls == []
    assert b.snapshot()["not_permitted"] == 2


def test_open_turns_half_open_when_the_wait_is_over(clock: Clock) -> None:
    b = opened(clock, wait_in_open=30.0)
    clock.advance(29.999)
    assert state_of(b) is BreakerState.OPEN
    clock.advance(0.001)
    assert state_of(b) is BreakerState.HALF_OPEN


# --------------------------------------------------------------------------- HALF_OPEN


def half_open(clock: Clock, **overrides: Any) -> CircuitBreaker:
    b = opened(clock, **overrides)
    clock.advance(b.config.wait_in_open)
    assert state_of(b) is BreakerState.HALF_OPEN
    return b


def test_half_open_admits_only_the_permitted_trials_and_rejects_the_rest(clock: Clock) -> None:
    b = half_open(clock, half_open_permitted_calls=3)
    trials = [b.acquire() for _ in range(3)]
    assert all(t.trial for t in trials)
    with pytest.raises(CircuitOpenError) as rejected:
        b.acquire()
    assert rejected.value.state is BreakerState.HALF_OPEN
    assert b.snapshot()["half_open_in_flight"] == 3
    trials[0].record()
    # A finished trial does not free a slot: the period has three trials in total.
    with pytest.raises(CircuitOpenError):
        b.acquire()


def test_successful_trials_close_it_with_an_empty_window(clock: Clock) -> None:
    b = half_open(clock, half_open_permitted_calls=2)
    succeed(b)
    assert state_of(b) is BreakerState.HALF_OPEN  # one trial of two
    succeed(b)
    assert state_of(b) is BreakerState.CLOSED
    snapshot = b.snapshot()
    assert (snapshot["calls"], snapshot["failures"], snapshot["opened_at"]) == (0, 0, None)
    # The old failures are gone: it takes the minimum number of calls again to judge.
    for _ in range(b.config.minimum_calls - 1):
        fail(b)
    assert state_of(b) is BreakerState.CLOSED


def test_a_failed_trial_over_the_threshold_opens_it_again_and_restarts_the_wait(clock: Clock) -> None:
    b = half_open(clock, half_open_permitted_calls=2, failure_rate_threshold=0.5, wait_in_open=30.0)
    clock.advance(7.0)
    fail(b)  # 1 of 2 trials failed: 50 % whatever the other does
    assert state_of(b) is BreakerState.OPEN
    with pytest.raises(CircuitOpenError) as rejected:
        b.acquire()
    assert rejected.value.retry_after == pytest.approx(30.0)
    assert b.snapshot()["reason"] == "trial calls failed"


def test_trials_below_the_threshold_close_it(clock: Clock) -> None:
    b = half_open(clock, half_open_permitted_calls=3, failure_rate_threshold=0.5)
    fail(b)  # 1 of 3 could still end at 33 %
    assert state_of(b) is BreakerState.HALF_OPEN
    succeed(b)
    succeed(b)
    assert state_of(b) is BreakerState.CLOSED


def test_slow_trials_open_it_again(clock: Clock) -> None:
    b = half_open(clock, half_open_permitted_calls=2, slow_call_rate_threshold=0.5, slow_call_duration=2.0)
    succeed(b, clock, took=3.0)
    assert state_of(b) is BreakerState.OPEN
    assert b.snapshot()["reason"] == "trial calls were slow"


def test_half_open_never_sticks_trials_that_never_report_are_abandoned(clock: Clock) -> None:
    b = half_open(clock, half_open_permitted_calls=1, half_open_max_wait=60.0, wait_in_open=30.0)
    lost = b.acquire()  # a trial whose outcome never comes back (a hung call, a leaked permit)
    clock.advance(59.0)
    with pytest.raises(CircuitOpenError):
        b.acquire()
    clock.advance(1.0)
    assert state_of(b) is BreakerState.OPEN
    assert b.snapshot()["reason"] == "trial calls were abandoned (no outcome in time)"
    clock.advance(30.0)
    assert state_of(b) is BreakerState.HALF_OPEN
    fresh = b.acquire()  # trials are admitted again
    lost.record()  # the abandoned trial's late success belongs to a finished period
    assert state_of(b) is BreakerState.HALF_OPEN
    fresh.record()
    assert state_of(b) is BreakerState.CLOSED


def test_half_open_without_traffic_waits_for_the_next_call_instead_of_reopening(clock: Clock) -> None:
    b = half_open(clock, half_open_permitted_calls=1, half_open_max_wait=60.0)
    clock.advance(3600.0)
    assert state_of(b) is BreakerState.HALF_OPEN
    assert succeed(b) == "ok"
    assert state_of(b) is BreakerState.CLOSED


def test_a_call_admitted_before_the_circuit_opened_does_not_count_after(clock: Clock) -> None:
    b = breaker(clock, minimum_calls=4)
    slow_caller = b.acquire()
    for _ in range(4):
        fail(b)
    assert state_of(b) is BreakerState.OPEN
    clock.advance(b.config.wait_in_open)
    slow_caller.record(Down("late"))  # admitted while CLOSED: not a trial of this period
    assert state_of(b) is BreakerState.HALF_OPEN
    assert b.snapshot()["calls"] == 0


# --------------------------------------------------------------------------- classification


def test_ignored_errors_count_neither_way(clock: Clock) -> None:
    b = breaker(clock, minimum_calls=4)
    for _ in range(20):
        with pytest.raises(NotFound):
            b.call(_raise, NotFound("no such show"))
        with pytest.raises(KeyError):
            b.call(_raise, KeyError("a bug of ours"))
    assert b.snapshot()["calls"] == 0
    assert state_of(b) is BreakerState.CLOSED


def test_an_ignored_error_gives_its_half_open_slot_to_another_trial(clock: Clock) -> None:
    b = half_open(clock, half_open_permitted_calls=1)
    with pytest.raises(Conflict):
        b.call(_raise, Conflict("raced"))
    assert state_of(b) is BreakerState.HALF_OPEN
    assert b.snapshot()["half_open_in_flight"] == 0
    assert succeed(b) == "ok"  # admitted: the slot was released
    assert state_of(b) is BreakerState.CLOSED


def test_an_interrupt_releases_the_permit_and_propagates(clock: Clock) -> None:
    b = half_open(clock, half_open_permitted_calls=1)
    with pytest.raises(KeyboardInterrupt):
        b.call(_raise, KeyboardInterrupt())
    assert b.snapshot()["half_open_in_flight"] == 0
    succeed(b)
    assert state_of(b) is BreakerState.CLOSED


def test_a_client_error_is_an_answer_so_a_trial_that_gets_one_closes_the_circuit(clock: Clock) -> None:
    b = half_open(clock, half_open_permitted_calls=1)
    with pytest.raises(ClientError):
        b.call(_raise, client_error("ConditionalCheckFailedException", 400))
    assert state_of(b) is BreakerState.CLOSED


def test_a_custom_classifier_decides(clock: Clock) -> None:
    b = breaker(clock, minimum_calls=2, classify=lambda exc: Verdict.FAILURE)
    for _ in range(2):
        with pytest.raises(ValueError, match="bad"):
            b.call(_raise, ValueError("bad"))
    assert state_of(b) is BreakerState.OPEN


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (Down("refused"), Verdict.FAILURE),
        (TimeoutError("socket"), Verdict.FAILURE),
        (CallTimeoutError("x", 1.0), Verdict.FAILURE),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="https://x"), Verdict.FAILURE),
        (botocore.exceptions.ConnectTimeoutError(endpoint_url="https://x"), Verdict.FAILURE),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="https://x"), Verdict.FAILURE),
        (botocore.exceptions.ConnectionClosedError(endpoint_url="https://x"), Verdict.FAILURE),
        (redis.exceptions.ConnectionError("refused"), Verdict.FAILURE),
        (redis.exceptions.TimeoutError("slow"), Verdict.FAILURE),
        (redis.exceptions.ResponseError("WRONGTYPE"), Verdict.IGNORED),
        (client_error("ThrottlingException", 400), Verdict.FAILURE),
        (client_error("ProvisionedThroughputExceededException", 400), Verdict.FAILURE),
        (client_error("RequestLimitExceeded", 400), Verdict.FAILURE),
        (client_error("InternalServerError", 500), Verdict.FAILURE),
        (client_error("ServiceUnavailable", 503), Verdict.FAILURE),
        (client_error("SomethingNew", 502), Verdict.FAILURE),
        (client_error("Throttling", 400), Verdict.FAILURE),  # SNS, SES
        (client_error("SlowDown", 503), Verdict.FAILURE),  # S3
        (client_error("ConditionalCheckFailedException", 400), Verdict.SUCCESS),
        (client_error("ValidationException", 400), Verdict.SUCCESS),
        (client_error("ResourceNotFoundException", 400), Verdict.SUCCESS),
        (
            client_error(
                "TransactionCanceledException",
                400,
                CancellationReasons=[{"Code": "None"}, {"Code": "ConditionalCheckFailed"}],
            ),
            Verdict.SUCCESS,
        ),
        (
            client_error(
                "TransactionCanceledException",
                400,
                CancellationReasons=[{"Code": "ThrottlingError"}, {"Code": "None"}],
            ),
            Verdict.FAILURE,
        ),
        (NotFound("no such show"), Verdict.IGNORED),
        (ValueError("a bug"), Verdict.IGNORED),
        (KeyboardInterrupt(), Verdict.IGNORED),
        (CircuitOpenError("other", 1.0), Verdict.IGNORED),
    ],
)
def test_default_classification(error: BaseException, verdict: Verdict) -> None:
    assert classify_error(error) is verdict


# --------------------------------------------------------------------------- timeout, fallback


def test_the_call_timeout_stops_waiting_and_counts_a_failure(clock: Clock) -> None:
    b = breaker(clock, call_timeout=0.05, minimum_calls=1, failure_rate_threshold=1.0)
    release = threading.Event()
    try:
        with pytest.raises(CallTimeoutError) as timed_out:
            b.call(release.wait, 30)
    finally:
        release.set()  # let the abandoned call end
    assert timed_out.value.timeout == 0.05
    assert state_of(b) is BreakerState.OPEN
    assert b.snapshot()["failures"] == 1


def test_with_a_timeout_the_call_result_and_errors_come_through_and_context_follows(clock: Clock) -> None:
    b = breaker(clock, call_timeout=30.0)
    assert b.call(lambda x, *, y: x + y, 1, y=2) == 3
    with pytest.raises(NotFound):
        b.call(_raise, NotFound("x"))
    with pytest.raises(TimeoutError) as own:  # the call's own timeout is not the breaker's
        b.call(_raise, TimeoutError("socket"))
    assert not isinstance(own.value, CallTimeoutError)

    @observability.entrypoint()
    def handler(event: dict[str, Any], context: Any) -> int | None:
        return b.call(observability.remaining_time_ms)

    assert handler({}, LambdaContext(remaining_ms=4321)) == 4321


def test_fallback_answers_for_an_open_circuit_and_for_counted_failures_only(clock: Clock) -> None:
    b = breaker(clock, minimum_calls=3, failure_rate_threshold=0.6)
    seen: list[BaseException] = []

    def fallback(exc: BaseException) -> str:
        seen.append(exc)
        return "stale"

    assert b.call(_raise, Down("x"), fallback=fallback) == "stale"
    with pytest.raises(NotFound):  # ignored: the caller's problem, not the dependency's
        b.call(_raise, NotFound("x"), fallback=fallback)
    with pytest.raises(ClientError):  # an answer from the dependency: no fallback either
        b.call(_raise, client_error("ValidationException", 400), fallback=fallback)
    assert b.call(_raise, Down("x"), fallback=fallback) == "stale"
    assert state_of(b) is BreakerState.OPEN  # F, S, F: 67 % of 3 calls
    assert b.call(lambda: "fresh", fallback=fallback) == "stale"
    assert [type(e) for e in seen] == [Down, Down, CircuitOpenError]
    with pytest.raises(CircuitOpenError):  # without a fallback the rejection surfaces
        b.call(lambda: "fresh")


def test_guard_accounts_for_a_block(clock: Clock) -> None:
    b = breaker(clock, minimum_calls=3, failure_rate_threshold=0.6, slow_call_duration=2.0)
    with b.guard():
        clock.advance(2.0)  # a slow block
    for _ in range(2):
        with pytest.raises(Down), b.guard():
            raise Down("x")
    assert state_of(b) is BreakerState.OPEN
    snapshot = b.snapshot()
    assert (snapshot["calls"], snapshot["failures"], snapshot["slow_calls"]) == (3, 2, 1)
    entered = []
    with pytest.raises(CircuitOpenError), b.guard():
        entered.append(1)
    assert entered == []


def test_a_permit_counts_once(clock: Clock) -> None:
    b = breaker(clock, minimum_calls=2)
    permit = b.acquire()
    permit.record(Down("x"))
    permit.record(Down("x"))
    permit.release()
    assert b.snapshot()["calls"] == 1


# --------------------------------------------------------------------------- events, reset, snapshot


@dataclass
class Captured:
    records: list[logging.LogRecord] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)


class _ListHandler(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(level=logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


@pytest.fixture
def captured(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[[], Captured]]:
    monkeypatch.setattr(observability.metrics, "namespace", "BreakerTests")
    records: list[logging.LogRecord] = []
    handler = _ListHandler(records)
    std_logger = logging.getLogger(observability.logger.name)
    level = std_logger.level
    std_logger.addHandler(handler)
    std_logger.setLevel(logging.INFO)

    def read() -> Captured:
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
        return Captured(records=list(records), metrics=[json.loads(line) for line in lines])

    yield read
    std_logger.removeHandler(handler)
    std_logger.setLevel(level)


def test_state_changes_are_logged_and_emitted_as_metrics(
    clock: Clock, captured: Callable[[], Captured]
) -> None:
    b = half_open(clock, half_open_permitted_calls=1)
    succeed(b)
    seen = captured()
    changes = [(r.levelname, r.getMessage(), getattr(r, "to_state", None)) for r in seen.records]
    assert changes == [
        ("WARNING", "circuit opened", "open"),
        ("INFO", "circuit half-open: admitting trial calls", "half_open"),
        ("INFO", "circuit closed", "closed"),
    ]
    opened_record = seen.records[0]
    assert opened_record.dependency == "test-dependency"  # type: ignore[attr-defined]
    assert opened_record.failure_rate == 1.0  # type: ignore[attr-defined]
    names = [next(k for k in m if k.startswith("Circuit")) for m in seen.metrics]
    assert names == ["CircuitOpened", "CircuitHalfOpened", "CircuitClosed"]
    for metric in seen.metrics:
        directive = metric["_aws"]["CloudWatchMetrics"][0]
        assert directive["Namespace"] == "BreakerTests"
        assert "dependency" in directive["Dimensions"][0]
        assert metric["dependency"] == "test-dependency"


def test_reset_closes_it_clears_the_window_and_drops_calls_in_flight(
    clock: Clock, captured: Callable[[], Captured]
) -> None:
    b = opened(clock)
    b.reset()
    assert state_of(b) is BreakerState.CLOSED
    assert b.snapshot()["calls"] == 0
    assert [m for m in captured().metrics if "CircuitClosed" in m]
    in_flight = b.acquire()
    fail(b)
    b.reset()
    in_flight.record(Down("late"))
    assert b.snapshot()["calls"] == 0


def test_force_open(clock: Clock) -> None:
    b = breaker(clock)
    b.force_open(120.0, reason="maintenance")
    with pytest.raises(CircuitOpenError) as rejected:
        b.acquire()
    assert rejected.value.retry_after == pytest.approx(120.0)
    assert b.snapshot()["reason"] == "maintenance"


def test_snapshot_is_json_ready_and_describes_the_current_measurement(clock: Clock) -> None:
    b = breaker(clock, minimum_calls=4, window_size=10)
    succeed(b)
    fail(b)
    closed = b.snapshot()
    assert json.loads(json.dumps(closed)) == closed
    assert closed | {"config": None} == {
        "name": "test-dependency",
        "state": "closed",
        "failure_rate": 0.5,
        "slow_call_rate": 0.0,
        "calls": 2,
        "failures": 1,
        "slow_calls": 0,
        "opened_at": None,
        "retry_after": 0.0,
        "reason": None,
        "not_permitted": 0,
        "half_open_in_flight": 0,
        "shared_state": False,
        "config": None,
    }
    assert closed["config"]["window"] == "count"
    assert closed["config"]["classify"] == "classify_error"
    fail(b)
    fail(b)  # 3 of 4: opens
    clock.advance(10.0)
    opened_snapshot = b.snapshot()
    assert opened_snapshot["state"] == "open"
    assert (opened_snapshot["calls"], opened_snapshot["failures"]) == (4, 3)  # what tripped it
    assert opened_snapshot["opened_at"] == "2030-03-17T17:46:40.000+00:00"
    assert opened_snapshot["retry_after"] == 20.0


def test_empty_window_has_no_rates(clock: Clock) -> None:
    snapshot = breaker(clock).snapshot()
    assert (snapshot["failure_rate"], snapshot["slow_call_rate"]) == (None, None)


# --------------------------------------------------------------------------- threads


def test_concurrent_callers_get_exactly_the_permitted_trials(clock: Clock) -> None:
    b = half_open(clock, half_open_permitted_calls=3)
    start = threading.Barrier(16)
    admitted: list[Permit] = []
    rejected: list[CircuitOpenError] = []
    lock = threading.Lock()

    def try_one() -> None:
        start.wait()
        try:
            permit = b.acquire()
        except CircuitOpenError as exc:
            with lock:
                rejected.append(exc)
            return
        with lock:
            admitted.append(permit)

    threads = [threading.Thread(target=try_one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(admitted), len(rejected)) == (3, 13)
    for permit in admitted:
        permit.record()
    assert state_of(b) is BreakerState.CLOSED


def test_concurrent_outcomes_are_all_counted(clock: Clock) -> None:
    b = breaker(clock, window_size=5000, minimum_calls=5000, failure_rate_threshold=1.0)
    start = threading.Barrier(8)

    def work(index: int) -> None:
        start.wait()
        for n in range(250):
            if (index + n) % 4 == 0:
                with pytest.raises(Down):
                    b.call(_raise, Down("x"))
            else:
                b.call(lambda: None)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snapshot = b.snapshot()
    assert (snapshot["calls"], snapshot["failures"]) == (2000, 500)


# --------------------------------------------------------------------------- configuration, registry


@pytest.mark.parametrize(
    "overrides",
    [
        {"window_size": 0},
        {"minimum_calls": 0},
        {"window": WindowKind.COUNT, "window_size": 5, "minimum_calls": 6},
        {"failure_rate_threshold": 0.0},
        {"slow_call_rate_threshold": 1.5},
        {"slow_call_duration": 0.0},
        {"wait_in_open": -1.0},
        {"half_open_permitted_calls": 0},
        {"half_open_max_wait": 0.0},
        {"call_timeout": 0.0},
    ],
)
def test_config_rejects_settings_that_cannot_work(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message lists every problem
        config(**overrides)


def test_every_dependency_has_a_valid_default_and_the_registry_keeps_one_breaker_each() -> None:
    assert set(DEFAULT_CONFIGS) == set(Dependency)
    try:
        breakers = all_breakers()
        assert set(Dependency) <= set(breakers)
        assert breaker_for(Dependency.DYNAMODB) is breaker_for("dynamodb") is breakers["dynamodb"]
        assert breakers["valkey"].snapshot()["shared_state"] is False  # it guards the shared state
        assert breakers["dynamodb"].snapshot()["shared_state"] is True
        assert breakers["model_store"].config.call_timeout is not None
        assert breaker_for("kms").config == BreakerConfig()  # a dependency not listed: generic defaults
        breakers["sns"].force_open(3600.0)
        reset_all()
        assert state_of(breakers["sns"]) is BreakerState.CLOSED
    finally:
        reset_all()
        # The registry's breakers read the settings (for shared state) from this test's
        # environment: forget them, later tests in this process have their own.
        load_settings.cache_clear()


# --------------------------------------------------------------------------- a reference model


class ReferenceBreaker:
    """The specification, written the slow and obvious way: every outcome kept in a list, rates
    recomputed from it, no running totals and no buckets."""

    def __init__(self, cfg: BreakerConfig) -> None:
        self.cfg = cfg
        self.state = BreakerState.CLOSED
        self.generation = 0
        self.outcomes: list[tuple[float, bool, bool]] = []  # (when, failed, slow), all of them
        self.trials: list[tuple[bool, bool]] = []
        self.in_flight: dict[int, float] = {}
        self.open_until = 0.0

    def window(self, now: float) -> list[tuple[float, bool, bool]]:
        if self.cfg.window is WindowKind.COUNT:
            return self.outcomes[-self.cfg.window_size :]
        return [o for o in self.outcomes if int(o[0] // 1) > int(now // 1) - self.cfg.window_size]

    def tick(self, now: float) -> None:
        if self.state is BreakerState.OPEN and now >= self.open_until:
            self.state, self.generation, self.trials, self.in_flight = (
                BreakerState.HALF_OPEN,
                self.generation + 1,
                [],
                {},
            )
        if (
            self.state is BreakerState.HALF_OPEN
            and self.in_flight
            and any(now - started >= self.cfg.half_open_max_wait for started in self.in_flight.values())
        ):
            self.open(now)

    def open(self, now: float) -> None:
        self.state, self.generation, self.trials, self.in_flight = (
            BreakerState.OPEN,
            self.generation + 1,
            [],
            {},
        )
        self.open_until = now + self.cfg.wait_in_open

    def acquire(self, now: float, ident: int) -> int | None:
        self.tick(now)
        if self.state is BreakerState.OPEN:
            return None
        if self.state is BreakerState.HALF_OPEN:
            if len(self.in_flight) + len(self.trials) >= self.cfg.half_open_permitted_calls:
                return None
            self.in_flight[ident] = now
        return self.generation

    def finish(self, now: float, ident: int, generation: int, started: float, verdict: Verdict) -> None:
        self.tick(now)
        if generation != self.generation:
            return
        failed, slow = verdict is Verdict.FAILURE, now - started >= self.cfg.slow_call_duration
        if self.state is BreakerState.CLOSED:
            if verdict is Verdict.IGNORED:
                return
            self.outcomes.append((now, failed, slow))
            window = self.window(now)
            if len(window) >= self.cfg.minimum_calls and (
                sum(o[1] for o in window) / len(window) >= self.cfg.failure_rate_threshold
                or sum(o[2] for o in window) / len(window) >= self.cfg.slow_call_rate_threshold
            ):
                self.open(now)
        elif self.state is BreakerState.HALF_OPEN:
            del self.in_flight[ident]
            if verdict is Verdict.IGNORED:
                return
            self.trials.append((failed, slow))
            n = self.cfg.half_open_permitted_calls
            if (
                sum(t[0] for t in self.trials) / n >= self.cfg.failure_rate_threshold
                or sum(t[1] for t in self.trials) / n >= self.cfg.slow_call_rate_threshold
            ):
                self.open(now)
            elif len(self.trials) == n:
                self.state, self.generation, self.outcomes, self.trials = (
                    BreakerState.CLOSED,
                    self.generation + 1,
                    [],
                    [],
                )

    def counts(self, now: float) -> tuple[int, int, int] | None:
        self.tick(now)
        if self.state is BreakerState.CLOSED:
            window = self.window(now)
            return len(window), sum(o[1] for o in window), sum(o[2] for o in window)
        if self.state is BreakerState.HALF_OPEN:
            return len(self.trials), sum(t[0] for t in self.trials), sum(t[1] for t in self.trials)
        return None  # OPEN shows what tripped it; the model does not keep that


_ERRORS: dict[Verdict, Callable[[], BaseException | None]] = {
    Verdict.SUCCESS: lambda: None,
    Verdict.FAILURE: lambda: Down("refused"),
    Verdict.IGNORED: lambda: NotFound("no such thing"),
}


class BreakerAgainstModel(RuleBasedStateMachine):
    """Random interleavings of calls starting, calls ending (success, failure, ignored; fast or
    slow) and time passing: the breaker must agree with the reference model at every step."""

    window_kind = WindowKind.COUNT

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock(0.0)
        self.cfg = BreakerConfig(
            window=self.window_kind,
            window_size=5,
            minimum_calls=3,
            failure_rate_threshold=0.5,
            slow_call_rate_threshold=0.6,
            slow_call_duration=2.0,
            wait_in_open=10.0,
            half_open_permitted_calls=2,
            half_open_max_wait=30.0,
        )
        self.breaker = CircuitBreaker("model", self.cfg, clock=self.clock)
        self.model = ReferenceBreaker(self.cfg)
        self.held: list[tuple[Permit, int, int, float]] = []
        self.next_id = 0

    @initialize()
    def start(self) -> None:
        self.clock.now = 0.0

    @rule()
    def begin_call(self) -> None:
        self.next_id += 1
        expected = self.model.acquire(self.clock.now, self.next_id)
        try:
            permit = self.breaker.acquire()
        except CircuitOpenError:
            assert expected is None, "the breaker rejected a call the model admits"
            return
        assert expected is not None, "the breaker admitted a call the model rejects"
        self.held.append((permit, self.next_id, expected, self.clock.now))

    @precondition(lambda self: bool(self.held))
    @rule(index=st.integers(min_value=0), verdict=st.sampled_from(list(Verdict)))
    def end_call(self, index: int, verdict: Verdict) -> None:
        permit, ident, generation, started = self.held.pop(index % len(self.held))
        self.model.finish(self.clock.now, ident, generation, started, verdict)
        assert permit.record(_ERRORS[verdict]()) is verdict

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 5.0, 9.5, 10.0, 31.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def same_state_and_counts(self) -> None:
        expected = self.model.counts(self.clock.now)
        snapshot = self.breaker.snapshot()
        assert snapshot["state"] == self.model.state.value
        if expected is not None:
            assert (snapshot["calls"], snapshot["failures"], snapshot["slow_calls"]) == expected

    @invariant()
    def trials_never_exceed_the_limit(self) -> None:
        assert self.breaker.snapshot()["half_open_in_flight"] <= self.cfg.half_open_permitted_calls


class TimeWindowBreakerAgainstModel(BreakerAgainstModel):
    window_kind = WindowKind.TIME


TestBreakerAgainstModel = BreakerAgainstModel.TestCase
TestBreakerAgainstModel.settings = hypothesis_settings(
    max_examples=150, stateful_step_count=60, deadline=None
)
TestTimeWindowBreakerAgainstModel = TimeWindowBreakerAgainstModel.TestCase
TestTimeWindowBreakerAgainstModel.settings = hypothesis_settings(
    max_examples=150, stateful_step_count=60, deadline=None
)


def _raise(exc: BaseException) -> Any:
    raise exc
