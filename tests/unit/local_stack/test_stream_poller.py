"""The stream poller's delivery logic (Lambda's event source mapping semantics) against fake
functions and a fake clock: batching, checkpoints, partial failures, bisection, give-up,
record age, and chaos."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.local_stack.poller import (
    Chaos,
    ChaosKind,
    DeliverySettings,
    Outcome,
    Record,
    ShardConsumer,
    failure_message,
    lambda_record,
    sequence_number,
)

NOW = 1_800_000_000.0


def records(count: int, *, start: int = 100, created: float = NOW) -> list[Record]:
    return [
        {
            "eventID": f"e{n}",
            "eventName": "INSERT",
            "dynamodb": {"SequenceNumber": str(n), "ApproximateCreationDateTime": int(created), "Keys": {}},
        }
        for n in range(start, start + count)
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Function:
    """A fake stream function: records what it saw; ``behaviour`` decides each response."""

    def __init__(self, behaviour: Callable[[list[str]], Any] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.behaviour = behaviour

    def __call__(self, event: dict[str, Any]) -> Any:
        seqs = [sequence_number(r) for r in event["Records"]]
        self.calls.append(seqs)
        return self.behaviour(seqs) if self.behaviour else None


class GiveUps:
    def __init__(self) -> None:
        self.batches: list[tuple[list[str], str, int]] = []

    def __call__(self, batch: Sequence[Record], condition: str, attempts: int) -> None:
        self.batches.append(([sequence_number(r) for r in batch], condition, attempts))


def consumer(
    function: Function,
    *,
    clock: Clock | None = None,
    chaos: Chaos | None = None,
    give_up: GiveUps | None = None,
    wall: float = NOW,
    **overrides: Any,
) -> ShardConsumer:
    values: dict[str, Any] = {
        "batch_size": 4,
        "batching_window_seconds": 0.0,
        "report_batch_item_failures": True,
        "bisect_on_error": True,
        "maximum_retry_attempts": 3,
        "maximum_record_age_seconds": -1,
    }
    values.update(overrides)
    return ShardConsumer(
        DeliverySettings(**values),
        function,
        give_up=give_up or GiveUps(),
        chaos=chaos,
        clock=clock or Clock(),
        wall_clock=lambda: wall,
    )


def drain(target: ShardConsumer, clock: Clock | None = None, *, limit: int = 200) -> None:
    for _ in range(limit):
        if target.pending_count == 0:
            return
        if target.deliver() is None and clock is not None:
            clock.now += 1.0
    raise AssertionError("the consumer did not drain")


def test_batches_follow_batch_size_and_move_the_checkpoint() -> None:
    function = Function()
    target = consumer(function)
    target.add(records(10))
    drain(target)
    assert [len(c) for c in function.calls] == [4, 4, 2]
    assert target.checkpoint == "109"


def test_the_batching_window_waits_for_more_records() -> None:
    clock = Clock()
    function = Function()
    target = consumer(function, clock=clock, batching_window_seconds=1.0)
    target.add(records(2))
    assert target.deliver() is None
    clock.now = 0.5
    target.add(records(1, start=102))
    assert target.deliver() is None
    clock.now = 1.0
    delivery = target.deliver()
    assert delivery is not None
    assert delivery.outcome is Outcome.OK
    assert function.calls == [["100", "101", "102"]]
    target.add(records(4, start=103))
    assert target.deliver() is not None  # a full batch does not wait
    assert function.calls[-1] == ["103", "104", "105", "106"]


def test_partial_failure_checkpoints_before_the_lowest_failed_record() -> None:
    responses = iter(
        [
            {"batchItemFailures": [{"itemIdentifier": "103"}, {"itemIdentifier": "102"}]},
            None,
        ]
    )
    function = Function(lambda seqs: next(responses))
    clock = Clock()
    target = consumer(function, clock=clock)
    target.add(records(4))
    first = target.deliver()
    assert first is not None
    assert first.outcome is Outcome.PARTIAL
    assert first.consumed == 2
    assert target.checkpoint == "101"
    drain(target, clock)
    assert function.calls == [["100", "101", "102", "103"], ["102", "103"]]
    assert target.checkpoint == "103"


@pytest.mark.parametrize(
    "response",
    [
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"itemIdentifier": "999"}]},
        {"batchItemFailures": [{"id": "101"}]},
    ],
)
def test_invalid_item_identifiers_fail_the_whole_batch(response: dict[str, Any]) -> None:
    calls = iter([response, None, None])
    function = Function(lambda seqs: next(calls))
    clock = Clock()
    target = consumer(function, clock=clock)
    target.add(records(4))
    delivery = target.deliver()
    assert delivery is not None
    assert delivery.outcome is Outcome.ERROR
    assert target.checkpoint is None
    drain(target, clock)
    assert function.calls == [["100", "101", "102", "103"], ["100", "101"], ["102", "103"]]


@pytest.mark.parametrize(
    "response",
    [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}, "text", {"statusCode": 200}],
)
def test_empty_or_null_responses_are_complete_successes(response: Any) -> None:
    target = consumer(Function(lambda seqs: response))
    target.add(records(3))
    delivery = target.deliver()
    assert delivery is not None
    assert delivery.outcome is Outcome.OK
    assert target.checkpoint == "102"


def test_failures_are_ignored_without_report_batch_item_failures() -> None:
    target = consumer(
        Function(lambda seqs: {"batchItemFailures": [{"itemIdentifier": "100"}]}),
        report_batch_item_failures=False,
    )
    target.add(records(2))
    delivery = target.deliver()
    assert delivery is not None
    assert delivery.outcome is Outcome.OK


def test_a_function_error_bisects_the_batch_until_the_poison_record_is_alone() -> None:
    def fail_on_102(seqs: list[str]) -> Any:
        if "102" in seqs:
            raise RuntimeError("poison")
        return None

    function = Function(fail_on_102)
    give_up = GiveUps()
    clock = Clock()
    target = consumer(function, clock=clock, give_up=give_up, batch_size=8, maximum_retry_attempts=5)
    target.add(records(8))
    drain(target, clock)
    assert function.calls[:4] == [
        [str(n) for n in range(100, 108)],
        ["100", "101", "102", "103"],
        ["100", "101"],
        ["102", "103"],
    ]
    assert ["102"] in function.calls
    (abandoned, condition, attempts) = give_up.batches[0]
    assert abandoned == ["102"]
    assert condition == "RetryAttemptsExhausted"
    assert attempts == 6
    assert target.checkpoint == "107"
    processed = {s for call in function.calls for s in call if "102" not in call}
    assert processed == {str(n) for n in range(100, 108)} - {"102"}


def test_without_bisection_the_whole_batch_is_retried_then_given_up() -> None:
    function = Function(lambda seqs: (_ for _ in ()).throw(RuntimeError("down")))
    give_up = GiveUps()
    clock = Clock()
    target = consumer(function, clock=clock, give_up=give_up, bisect_on_error=False, maximum_retry_attempts=2)
    target.add(records(3))
    drain(target, clock)
    assert function.calls == [["100", "101", "102"]] * 3
    assert give_up.batches == [(["100", "101", "102"], "RetryAttemptsExhausted", 3)]


def test_records_older_than_the_maximum_age_are_given_up() -> None:
    give_up = GiveUps()
    function = Function()
    target = consumer(function, give_up=give_up, maximum_record_age_seconds=60, wall=NOW + 61)
    target.add(records(2, created=NOW))
    target.add(records(1, start=102, created=NOW + 30))
    expired = target.deliver()
    assert expired is not None
    assert expired.outcome is Outcome.EXPIRED
    assert give_up.batches == [(["100", "101"], "RecordAgeExceeded", 0)]
    drain(target)
    assert function.calls == [["102"]]


class ScriptedChaos(Chaos):
    """Chaos that follows a script of kinds (None = behave) and cuts at fixed lengths."""

    def __init__(self, script: list[ChaosKind | None], cut_to: int) -> None:
        super().__init__(1.0, random.Random(0))
        self.script = script
        self.cut_to = cut_to

    def pick(self, batch_len: int, *, can_duplicate: bool) -> ChaosKind | None:
        return self.script.pop(0) if self.script else None

    def cut(self, low: int, high: int) -> int:
        return max(low, min(high, self.cut_to))


def test_chaos_duplicate_delivers_a_successful_batch_again() -> None:
    function = Function()
    clock = Clock()
    target = consumer(function, clock=clock, chaos=ScriptedChaos([ChaosKind.DUPLICATE], cut_to=1))
    target.add(records(3))
    drain(target, clock)
    assert function.calls == [["100", "101", "102"], ["100", "101", "102"]]
    assert target.counters.chaos["duplicate"] == 1


def test_chaos_crash_runs_a_prefix_then_retries_the_whole_batch_bisected() -> None:
    function = Function()
    clock = Clock()
    target = consumer(function, clock=clock, chaos=ScriptedChaos([ChaosKind.CRASH], cut_to=3))
    target.add(records(4))
    drain(target, clock)
    assert function.calls == [["100", "101", "102"], ["100", "101"], ["102", "103"]]
    assert target.counters.function_errors == 1


def test_chaos_truncate_sends_later_records_in_another_batch() -> None:
    function = Function()
    target = consumer(function, chaos=ScriptedChaos([ChaosKind.TRUNCATE], cut_to=1))
    target.add(records(4))
    drain(target)
    assert function.calls == [["100"], ["101", "102", "103"]]


def test_chaos_picks_only_kinds_that_apply() -> None:
    chaos = Chaos(1.0, random.Random(7))
    kinds = {chaos.pick(1, can_duplicate=False) for _ in range(50)}
    assert kinds == {ChaosKind.CRASH}
    assert Chaos(0.0, random.Random(7)).pick(5, can_duplicate=True) is None
    with pytest.raises(ValueError, match="between 0 and 1"):
        Chaos(1.5, random.Random(0))


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(min_value=1, max_value=40),
    batch_size=st.integers(min_value=1, max_value=10),
    probability=st.sampled_from([0.0, 0.3, 0.7]),
    seed=st.integers(min_value=0, max_value=2**16),
    failing=st.sets(st.integers(min_value=100, max_value=139), max_size=3),
)
def test_every_record_is_processed_in_order_at_least_once(
    total: int, batch_size: int, probability: float, seed: int, failing: set[int]
) -> None:
    """An idempotent function (it skips what it has done, as a checkpointing processor would)
    sees every record, in shard order, however chaos and transient failures interleave."""
    done: list[str] = []
    flaky = {str(n) for n in failing}

    def idempotent(seqs: list[str]) -> Any:
        for seq in seqs:
            if seq in flaky:
                flaky.discard(seq)  # fails once, then succeeds
                return {"batchItemFailures": [{"itemIdentifier": seq}]}
            if seq not in done:
                done.append(seq)
        return None

    clock = Clock()
    target = consumer(
        Function(idempotent),
        clock=clock,
        chaos=Chaos(probability, random.Random(seed)),
        batch_size=batch_size,
        maximum_retry_attempts=-1,
    )
    target.add(records(total))
    drain(target, clock, limit=5000)
    assert done == [str(n) for n in range(100, 100 + total)]
    assert target.checkpoint == str(100 + total - 1)


def test_moto_records_are_converted_to_lambdas_shape() -> None:
    created = dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.UTC)
    raw: dict[str, Any] = {
        "eventID": "1",
        "eventName": "MODIFY",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": created,
            "SequenceNumber": "7",
            "Keys": {"PK": {"S": "a"}},
            "NewImage": {"blob": {"B": b"\x00\xff"}},
        },
    }
    record = lambda_record(raw, stream_arn="arn:stream", region="eu-west-1")
    assert record["dynamodb"]["ApproximateCreationDateTime"] == int(created.timestamp())
    assert record["eventSourceARN"] == "arn:stream"
    assert record["awsRegion"] == "eu-west-1"
    assert record["dynamodb"]["NewImage"]["blob"]["B"] == "AP8="
    assert raw["dynamodb"]["ApproximateCreationDateTime"] is created  # the input is not changed


def test_failure_message_has_lambdas_stream_batch_info() -> None:
    batch = records(3)
    message = failure_message(
        batch,
        condition="RetryAttemptsExhausted",
        attempts=11,
        shard_id="shard-1",
        stream_arn="arn:s",
        function_arn="arn:f",
    )
    info = message["DDBStreamBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == ("100", "102", 3)
    assert (info["shardId"], info["streamArn"]) == ("shard-1", "arn:s")
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["approximateInvokeCount"] == 11
    assert message["version"] == "1.0"
