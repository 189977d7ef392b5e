"""retry_call: exponential backoff with full jitter, bounded by the invocation's remaining time.
Sleeps and the remaining time are injected: nothing here waits."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st

from mysetlist.breaker import CircuitOpenError
from mysetlist.catalog_store import CatalogStore
from mysetlist.errors import NotFound, Unavailable
from mysetlist.observability import entrypoint, remaining_time_ms
from mysetlist.retry import backoff_cap, pause_before_retry, retry_call
from tests.harness.events import LambdaContext


class Flaky:
    """Fails with ``errors`` in turn, then answers."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def throttled() -> ClientError:
    response: Any = {"Error": {"Code": "ThrottlingException"}, "ResponseMetadata": {"HTTPStatusCode": 400}}
    return ClientError(response, "GetItem")


def no_limit() -> int | None:
    return None


def run(fn: Callable[[], str], **options: Any) -> tuple[str, list[float]]:
    slept: list[float] = []
    options.setdefault("remaining_ms", no_limit)
    result = retry_call(fn, sleep=slept.append, **options)
    return result, slept


def test_transient_errors_are_retried_until_it_answers() -> None:
    fn = Flaky(ConnectionError("refused"), throttled())
    result, slept = run(fn, attempts=3, rng=lambda: 0.5)
    assert (result, fn.calls) == ("done", 3)
    assert slept == [0.025, 0.05]


def test_the_last_error_is_raised_when_attempts_run_out() -> None:
    fn = Flaky(*(ConnectionError(f"refused {n}") for n in range(5)))
    with pytest.raises(ConnectionError, match="refused 2"):
        run(fn, attempts=3)
    assert fn.calls == 3


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a bug"),
        NotFound("no such show"),
        ClientError({"Error": {"Code": "ConditionalCheckFailedException"}}, "PutItem"),
    ],
)
def test_errors_that_are_not_transient_are_not_retried(error: Exception) -> None:
    fn = Flaky(error)
    with pytest.raises(type(error)):
        run(fn, attempts=5)
    assert fn.calls == 1


def test_an_open_circuit_is_never_retried_whatever_the_predicate_says() -> None:
    fn = Flaky(CircuitOpenError("dynamodb", 4.0))
    with pytest.raises(CircuitOpenError):
        run(fn, attempts=5, retryable=lambda exc: True)
    assert fn.calls == 1


def test_the_predicate_decides_what_is_retried() -> None:
    fn = Flaky(KeyError("eventually consistent"))
    result, _ = run(fn, retryable=lambda exc: isinstance(exc, KeyError))
    assert (result, fn.calls) == ("done", 2)


def test_the_cap_doubles_up_to_the_maximum_delay() -> None:
    fn = Flaky(*(TimeoutError() for _ in range(7)))
    _, slept = run(fn, attempts=8, base_delay=0.05, max_delay=1.0, rng=lambda: 1.0)
    assert slept == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff_cap(10_000, 0.05, 1.0) == 1.0  # no overflow after very many retries


def test_full_jitter_draws_each_sleep_uniformly_under_the_cap_with_a_seeded_rng() -> None:
    fn = Flaky(*(TimeoutError() for _ in range(6)))
    _, slept = run(fn, attempts=7, base_delay=0.1, max_delay=2.0, rng=random.Random(42).random)
    same = random.Random(42)
    assert slept == [same.random() * min(2.0, 0.1 * 2**n) for n in range(6)]
    assert len(set(slept)) == 6  # jittered, not in step


@given(seed=st.integers(), base=st.floats(0.001, 1.0), ceiling=st.floats(0.001, 5.0))
def test_every_sleep_is_within_zero_and_its_cap(seed: int, base: float, ceiling: float) -> None:
    fn = Flaky(*(TimeoutError() for _ in range(9)))
    _, slept = run(fn, attempts=10, base_delay=base, max_delay=ceiling, rng=random.Random(seed).random)
    assert len(slept) == 9
    for n, delay in enumerate(slept):
        assert 0 <= delay <= min(ceiling, base * 2**n)


def test_it_gives_up_rather_than_sleep_into_the_reserve() -> None:
    fn = Flaky(*(TimeoutError() for _ in range(5)))
    with pytest.raises(TimeoutError) as caught:
        run(fn, attempts=5, base_delay=0.2, rng=lambda: 1.0, reserve_ms=500, remaining_ms=lambda: 650)
    assert fn.calls == 1  # a 200 ms sleep would leave 450 ms, under the 500 ms reserve
    assert "gave up after 1 attempt(s)" in caught.value.__notes__[0]


def test_the_deadline_counts_down_with_the_time_spent() -> None:
    left = [1500.0]

    def remaining() -> int:
        return int(left[0])

    def spend(seconds: float) -> None:
        left[0] -= seconds * 1000

    fn = Flaky(*(TimeoutError() for _ in range(9)))
    with pytest.raises(TimeoutError):
        retry_call(
            fn, attempts=10, base_delay=0.2, max_delay=1.0, rng=lambda: 1.0, reserve_ms=500,
            remaining_ms=remaining, sleep=spend,
        )  # fmt: skip
    # Sleeps of 200 and 400 ms fit in 1000 ms of budget; the next (800 ms) would not.
    assert fn.calls == 3
    assert left[0] == 900.0


def test_with_no_time_left_the_first_attempt_is_still_made() -> None:
    fn = Flaky()
    result, _ = run(fn, remaining_ms=lambda: 0)
    assert result == "done"


def test_arguments_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="attempts"):
        retry_call(lambda: 1, attempts=0)
    with pytest.raises(ValueError, match="negative"):
        retry_call(lambda: 1, base_delay=-1.0)


def test_the_remaining_time_comes_from_the_invocation_in_progress() -> None:
    seen: list[int | None] = []

    @entrypoint()
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(remaining_time_ms())
        return {"ok": True}

    assert remaining_time_ms() is None  # outside an invocation: no limit known
    assert handler({}, LambdaContext(remaining_ms=12_345)) == {"ok": True}
    assert seen == [12_345]
    assert remaining_time_ms() is None  # reset after the invocation


def test_the_remaining_time_is_reset_when_the_handler_raises() -> None:
    @entrypoint()
    def handler(event: dict[str, Any], context: Any) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        handler({}, LambdaContext(remaining_ms=5))
    assert remaining_time_ms() is None


def test_a_pause_sleeps_full_jitter_within_the_cap() -> None:
    slept: list[float] = []
    assert pause_before_retry(3, base_delay=0.05, max_delay=1.0, rng=lambda: 0.5, sleep=slept.append)
    assert slept == [0.5 * 0.4]


def test_no_pause_when_it_would_eat_into_the_reserve() -> None:
    slept: list[float] = []
    allowed = pause_before_retry(
        5,
        base_delay=0.05,
        max_delay=1.0,
        reserve_ms=500,
        remaining_ms=lambda: 900,
        rng=lambda: 1.0,
        sleep=slept.append,
    )
    assert allowed is False
    assert slept == []


class PartlyProcessing:
    """A DynamoDB client that leaves some keys unprocessed ``busy`` times, as a table at its
    limit does."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.calls = 0

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        ((table, wanted),) = RequestItems.items()
        keys = wanted["Keys"]
        if self.calls <= self.busy:
            served, left = keys[:1], keys[1:]
        else:
            served, left = keys, []
        unprocessed = {table: {**wanted, "Keys": left}} if left else {}
        return {"Responses": {table: served}, "UnprocessedKeys": unprocessed}


def test_unprocessed_keys_are_asked_again_after_a_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[int] = []

    def pause(retry: int) -> bool:
        pauses.append(retry)
        return True

    monkeypatch.setattr("mysetlist.catalog_store.pause_before_retry", pause)
    client = PartlyProcessing(busy=2)
    store = CatalogStore(client, "catalog")  # type: ignore[arg-type]
    found = store.get_many([("A", "1"), ("A", "2"), ("A", "3"), ("A", "4")])
    assert len(found) == 4
    assert client.calls == 3
    assert pauses == [0, 1]


def test_unprocessed_keys_with_no_time_left_are_a_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mysetlist.catalog_store.pause_before_retry", lambda retry: False)
    store = CatalogStore(PartlyProcessing(busy=5), "catalog")  # type: ignore[arg-type]
    with pytest.raises(Unavailable):
        store.get_many([("A", "1"), ("A", "2")])
