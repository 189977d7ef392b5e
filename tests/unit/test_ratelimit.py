"""Rate limits without a network: the GCRA arithmetic, the per-container buckets on an injected
clock, budgets and their overrides, subjects, the 429, and the degradation to local buckets."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from mysetlist.breaker import BreakerConfig, BreakerState, CircuitBreaker, WindowKind
from mysetlist.errors import TooManyRequests
from mysetlist.ratelimit import (
    CATALOG_WRITE,
    DEFAULT_BUDGETS,
    EVENTS_TRACK,
    PREDICTIONS_REQUEST,
    VOTES_CAST,
    Budget,
    LocalBuckets,
    RateLimiter,
    Scope,
    Subject,
    Verdict,
    address_of,
    gcra,
    parse_overrides,
    subject_for,
)
from mysetlist.settings import Settings, SettingsError

S = 1_000_000  # microseconds


class Clock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder:
    """Collects the metrics a limiter emits."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []

    def __call__(self, name: str, dimensions: Mapping[str, str]) -> None:
        self.seen.append((name, dict(dimensions)))

    def count(self, name: str) -> int:
        return sum(1 for seen, _ in self.seen if seen == name)


def budget(limit: int, period: int, scope: Scope = Scope.USER, name: str = "test.budget") -> Budget:
    return Budget(name, limit, period, scope, "test requests")


USER_A = Subject(Scope.USER, "user-a")
USER_B = Subject(Scope.USER, "user-b")


# ------------------------------------------------------------------ the algorithm


def test_gcra_allows_a_burst_of_the_limit_then_refuses_with_the_exact_wait() -> None:
    spec = budget(60, 60)
    tat: int | None = None
    now = 5_000 * S
    for expected_remaining in range(59, -1, -1):
        verdict, tat = gcra(tat, now, spec.interval_us, spec.period_us)
        assert verdict.allowed
        assert verdict.remaining == expected_remaining
    refused, stored = gcra(tat, now, spec.interval_us, spec.period_us)
    assert refused == Verdict(allowed=False, remaining=0, retry_after_us=1 * S, reset_after_us=60 * S)
    assert stored is None  # a refusal stores nothing
    later, _ = gcra(tat, now + 1 * S, spec.interval_us, spec.period_us)
    assert (later.allowed, later.remaining) == (True, 0)


def test_gcra_refills_at_the_sustained_rate_and_never_above_the_limit() -> None:
    spec = budget(10, 60)  # one request every 6 s
    tat: int | None = None
    now = 0
    for _ in range(10):
        _, tat = gcra(tat, now, spec.interval_us, spec.period_us)
    refused, _ = gcra(tat, now + 5 * S, spec.interval_us, spec.period_us)
    assert (refused.allowed, refused.retry_after_us) == (False, 1 * S)
    one_back, _ = gcra(tat, now + 6 * S, spec.interval_us, spec.period_us)
    assert (one_back.allowed, one_back.remaining) == (True, 0)
    full, _ = gcra(tat, now + 3600 * S, spec.interval_us, spec.period_us)
    assert (full.allowed, full.remaining) == (True, 9)  # idle for an hour: a full bucket, no more


def test_a_limit_that_does_not_divide_the_period_still_allows_exactly_the_limit() -> None:
    spec = budget(7, 60)
    tat: int | None = None
    allowed = 0
    for _ in range(20):
        verdict, new_tat = gcra(tat, 0, spec.interval_us, spec.period_us)
        if verdict.allowed:
            allowed += 1
            tat = new_tat
    assert allowed == 7


# ------------------------------------------------------------------ per-container buckets


def test_local_buckets_burst_refuse_and_refill_on_an_injected_clock() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    spec = budget(60, 60)
    results = [buckets.check("k", spec.interval_us, spec.period_us) for _ in range(61)]
    assert all(r.allowed for r in results[:60])
    assert results[60] == Verdict(False, 0, 1 * S, 60 * S)
    clock.advance(0.25)
    again = buckets.check("k", spec.interval_us, spec.period_us)
    assert (again.allowed, again.retry_after_us) == (False, 750_000)  # refusals did not push it back
    clock.advance(0.75)
    assert buckets.check("k", spec.interval_us, spec.period_us).allowed
    assert not buckets.check("k", spec.interval_us, spec.period_us).allowed
    clock.advance(60)
    refilled = buckets.check("k", spec.interval_us, spec.period_us)
    assert (refilled.allowed, refilled.remaining) == (True, 59)


def test_local_buckets_are_bounded_and_forget_the_least_recently_charged() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock, max_subjects=2)
    spec = budget(1, 60)
    for key in ("a", "b"):
        assert buckets.check(key, spec.interval_us, spec.period_us).allowed
    assert not buckets.check("a", spec.interval_us, spec.period_us).allowed
    assert buckets.check("c", spec.interval_us, spec.period_us).allowed  # evicts "a" (charged first)
    assert len(buckets) == 2
    assert not buckets.check("b", spec.interval_us, spec.period_us).allowed
    assert buckets.check("a", spec.interval_us, spec.period_us).allowed


# ------------------------------------------------------------------ the limiter


def local_limiter(clock: Clock, recorder: Recorder, **budgets: Budget) -> RateLimiter:
    registry = {**DEFAULT_BUDGETS, **{b.name: b for b in budgets.values()}}
    return RateLimiter(registry, lambda: None, clock=clock, emit=recorder)


def test_subjects_and_budgets_are_independent() -> None:
    clock, recorder = Clock(), Recorder()
    limiter = local_limiter(clock, recorder)
    for _ in range(60):
        assert limiter.check(VOTES_CAST, USER_A).allowed
    refused = limiter.check(VOTES_CAST, USER_A)
    assert not refused.allowed
    assert refused.retry_after == 1.0
    assert limiter.check(VOTES_CAST, USER_B).allowed  # another user: a budget of their own
    assert limiter.check(CATALOG_WRITE, USER_A).allowed  # another budget: counted apart
    assert limiter.check(VOTES_CAST, Subject(Scope.ADDRESS, "user-a")).allowed  # an address named alike
    assert recorder.seen.count(("RateLimited", {"budget": VOTES_CAST})) == 1


def test_a_refusal_says_what_the_limit_is_and_when_to_retry() -> None:
    clock = Clock()
    limiter = local_limiter(clock, Recorder())
    for _ in range(60):
        limiter.check(VOTES_CAST, USER_A)
    clock.advance(0.4)
    decision = limiter.check(VOTES_CAST, USER_A)
    error = decision.refusal()
    assert isinstance(error, TooManyRequests)
    assert (error.status, error.code) == (429, "rate_limited")
    assert error.message == (
        "too many vote requests: the limit is 60 per 60 seconds per user; retry in 1 second"
    )
    assert error.details == {
        "budget": "votes.cast",
        "limit": 60,
        "period_seconds": 60,
        "scope": "user",
        "retry_after_seconds": 1,
    }
    assert error.headers == {
        "retry-after": "1",  # 0.6 s rounded up
        "ratelimit-limit": "60",
        "ratelimit-remaining": "0",
        "ratelimit-reset": "60",  # 59.6 s rounded up
        "ratelimit-policy": "60;w=60",
    }


def test_a_long_wait_is_rounded_up_to_whole_seconds() -> None:
    clock = Clock()
    limiter = local_limiter(clock, Recorder())
    for _ in range(10):
        limiter.check(PREDICTIONS_REQUEST, USER_A)
    clock.advance(0.5)
    error = limiter.check(PREDICTIONS_REQUEST, USER_A).refusal()
    assert error.retry_after_seconds == 6  # 5.5 s
    assert error.message.endswith("per user; retry in 6 seconds")
    anonymous = subject_for(DEFAULT_BUDGETS[EVENTS_TRACK], None, "198.51.100.7")
    for _ in range(100):
        assert limiter.check(EVENTS_TRACK, anonymous).allowed
    refused = limiter.check(EVENTS_TRACK, anonymous).refusal()
    assert "the limit is 100 per 60 seconds per client address; retry in 1 second" in refused.message
    assert refused.details["scope"] == "address"


def test_allowed_decisions_carry_the_ratelimit_headers() -> None:
    limiter = local_limiter(Clock(), Recorder())
    decision = limiter.check(VOTES_CAST, USER_A)
    assert decision.headers() == {
        "ratelimit-limit": "60",
        "ratelimit-remaining": "59",
        "ratelimit-reset": "1",
        "ratelimit-policy": "60;w=60",
    }


def test_an_unknown_budget_is_a_programming_error_naming_the_known_ones() -> None:
    limiter = local_limiter(Clock(), Recorder())
    with pytest.raises(KeyError, match=r"votes\.cast"):
        limiter.check("votes.typo", USER_A)


def test_the_issue_figures_are_the_defaults() -> None:
    assert (DEFAULT_BUDGETS[VOTES_CAST].limit, DEFAULT_BUDGETS[VOTES_CAST].period_seconds) == (60, 60)
    assert DEFAULT_BUDGETS[VOTES_CAST].scope is Scope.USER
    assert (DEFAULT_BUDGETS[PREDICTIONS_REQUEST].limit, DEFAULT_BUDGETS[PREDICTIONS_REQUEST].scope) == (
        10,
        Scope.USER,
    )
    assert (DEFAULT_BUDGETS[EVENTS_TRACK].limit, DEFAULT_BUDGETS[EVENTS_TRACK].scope) == (100, Scope.ADDRESS)
    assert all(b.period_seconds == 60 for b in DEFAULT_BUDGETS.values())


# ------------------------------------------------------------------ subjects


@pytest.mark.parametrize(
    ("source_ip", "expected"),
    [
        ("203.0.113.10", "203.0.113.10"),
        (" 203.0.113.10 ", "203.0.113.10"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),  # same /64: same subject
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("", "unknown"),
        (None, "unknown"),
        ("not-an-address", "unknown"),
    ],
)
def test_addresses_are_normalised(source_ip: str | None, expected: str) -> None:
    assert address_of(source_ip) == expected


def test_a_user_budget_counts_the_user_and_falls_back_to_the_address() -> None:
    votes = DEFAULT_BUDGETS[VOTES_CAST]
    assert subject_for(votes, "sub-1", "203.0.113.10") == Subject(Scope.USER, "sub-1")
    assert subject_for(votes, None, "203.0.113.10") == Subject(Scope.ADDRESS, "203.0.113.10")
    events = DEFAULT_BUDGETS[EVENTS_TRACK]
    assert subject_for(events, "sub-1", "203.0.113.10") == Subject(Scope.ADDRESS, "203.0.113.10")
    assert Subject(Scope.USER, "sub-1").key == "user:sub-1"


# ------------------------------------------------------------------ overrides


def test_overrides_replace_limit_and_period_and_keep_the_rest() -> None:
    budgets = parse_overrides(json.dumps({"votes.cast": "120/60", "events.track": " 5 / 10 "}))
    assert (budgets[VOTES_CAST].limit, budgets[VOTES_CAST].period_seconds) == (120, 60)
    assert budgets[VOTES_CAST].scope is Scope.USER
    assert (budgets[EVENTS_TRACK].limit, budgets[EVENTS_TRACK].period_seconds) == (5, 10)
    assert budgets[CATALOG_WRITE] == DEFAULT_BUDGETS[CATALOG_WRITE]
    assert parse_overrides("") == dict(DEFAULT_BUDGETS)
    assert parse_overrides("  ") == dict(DEFAULT_BUDGETS)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("{votes.cast: 1}", "not JSON"),
        ('["votes.cast", "120/60"]', "must be a JSON object"),
        ('{"votes.cats": "120/60"}', "'votes.cats' is not a budget (known: catalog.read"),
        ('{"votes.cast": "120"}', "must be '<limit>/<period seconds>'"),
        ('{"votes.cast": 120}', "must be '<limit>/<period seconds>'"),
        ('{"votes.cast": "-1/60"}', "must be '<limit>/<period seconds>'"),
        ('{"votes.cast": "0/60"}', "the limit must be 1 to"),
        ('{"votes.cast": "10/0"}', "the period 1 to 86400 seconds"),
        ('{"votes.cast": "10000000/60"}', "the limit must be 1 to 1000000"),
    ],
)
def test_bad_overrides_are_a_settings_error_naming_the_problem(raw: str, fragment: str) -> None:
    with pytest.raises(SettingsError, match="RATE_LIMIT_OVERRIDES") as raised:
        parse_overrides(raw)
    assert fragment in str(raised.value)


def test_the_limiter_takes_its_overrides_from_the_settings_at_construction() -> None:
    settings = Settings(rate_limit_overrides='{"votes.cast": "2/60"}')
    limiter = RateLimiter.from_settings(settings, guard=lambda call: call(), emit=Recorder())
    assert [limiter.check(VOTES_CAST, USER_A).allowed for _ in range(3)] == [True, True, False]
    with pytest.raises(SettingsError, match=r"votes\.cats"):
        RateLimiter.from_settings(Settings(rate_limit_overrides='{"votes.cats": "2/60"}'))


# ------------------------------------------------------------------ degradation


class BrokenScript:
    def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")


class BrokenClient:
    """Stands for a redis client whose server is gone: every script call raises."""

    def __init__(self) -> None:
        self.registered = 0

    def register_script(self, script: str) -> BrokenScript:
        self.registered += 1
        return BrokenScript()


def degraded_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    found = [r for r in caplog.records if r.getMessage().startswith("rate limits")]
    caplog.clear()
    return found


def test_a_failing_valkey_degrades_to_local_buckets_never_to_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, recorder, client = Clock(), Recorder(), BrokenClient()
    limiter = RateLimiter(DEFAULT_BUDGETS, lambda: client, clock=clock, emit=recorder)  # type: ignore[arg-type,return-value]
    decisions = [limiter.check(VOTES_CAST, USER_A) for _ in range(61)]
    assert all(d.degraded for d in decisions)
    assert [d.allowed for d in decisions] == [True] * 60 + [False]  # the same budget, in this container
    assert decisions[-1].retry_after == 1.0
    assert client.registered == 1  # the script object is made once per client
    assert recorder.count("RateLimitDegraded") == 61
    assert recorder.seen[0] == ("RateLimitDegraded", {"reason": "unavailable"})
    assert recorder.count("RateLimited") == 1
    logged = degraded_lines(caplog)
    assert len(logged) == 1  # at most once a minute per container
    assert logged[0].levelno == logging.WARNING
    assert (logged[0].__dict__["reason"], logged[0].__dict__["error_type"]) == (
        "unavailable",
        "ConnectionError",
    )
    clock.advance(59)
    limiter.check(VOTES_CAST, USER_B)
    assert degraded_lines(caplog) == []
    clock.advance(1)
    limiter.check(VOTES_CAST, USER_B)
    assert len(degraded_lines(caplog)) == 1


def test_the_breaker_opens_on_a_failing_valkey_and_then_spares_it() -> None:
    clock, recorder = Clock(), Recorder()
    breaker = CircuitBreaker(
        "valkey",
        BreakerConfig(window=WindowKind.COUNT, window_size=4, minimum_calls=4, wait_in_open=5.0),
        clock=clock,
    )
    calls: list[str] = []

    class CountingScript(BrokenScript):
        def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
            calls.append(keys[0])
            return super().__call__(keys, args, client)

    class Client(BrokenClient):
        def register_script(self, script: str) -> BrokenScript:
            return CountingScript()

    client = Client()
    limiter = RateLimiter(DEFAULT_BUDGETS, lambda: client, guard=breaker.call, clock=clock, emit=recorder)  # type: ignore[arg-type,return-value]
    decisions = [limiter.check(VOTES_CAST, USER_A) for _ in range(10)]
    assert all(d.allowed and d.degraded for d in decisions)
    assert len(calls) == 4  # then the circuit is open: Valkey is not called at all
    assert breaker.state is BreakerState.OPEN
    reasons = [dims["reason"] for name, dims in recorder.seen if name == "RateLimitDegraded"]
    assert reasons == ["unavailable"] * 4 + ["circuit_open"] * 6
    assert limiter.check(VOTES_CAST, USER_A).remaining == 49  # one local bucket all along


def test_without_valkey_configured_the_limits_are_per_container() -> None:
    recorder = Recorder()
    limiter = RateLimiter(DEFAULT_BUDGETS, lambda: None, clock=Clock(), emit=recorder)
    decisions = [limiter.check(CATALOG_WRITE, USER_A) for _ in range(31)]
    assert [d.allowed for d in decisions] == [True] * 30 + [False]
    assert recorder.seen[0] == ("RateLimitDegraded", {"reason": "not_configured"})


def test_a_client_that_cannot_even_be_built_degrades_too() -> None:
    def no_client() -> Any:
        raise ValueError("Redis URL must specify one of the following schemes")

    recorder = Recorder()
    limiter = RateLimiter(DEFAULT_BUDGETS, no_client, clock=Clock(), emit=recorder)
    assert limiter.check(VOTES_CAST, USER_A).allowed
    assert recorder.seen == [("RateLimitDegraded", {"reason": "unavailable"})]
