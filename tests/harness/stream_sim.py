"""Lambda's DynamoDB-stream delivery, modelled for one shard, for tests.

What Lambda does (and what this does): deliver batches that start at the checkpoint; on a
response with ``batchItemFailures`` move the checkpoint to just before the lowest failed
sequence number and deliver again from there; on a function error retry the batch, splitting
it in two when bisection is on; and, being at-least-once, sometimes deliver a batch again
although it succeeded. The choices come from a ``random.Random`` so a failing case replays.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Invoke = Callable[[list[dict[str, Any]]], dict[str, Any]]


class FunctionError(Exception):
    """The function raised or timed out: Lambda retries the batch."""


@dataclass
class DeliveryStats:
    invocations: int = 0
    duplicates: int = 0
    function_errors: int = 0
    partial_failures: int = 0
    bisections: int = 0
    log: list[str] = field(default_factory=list)


def deliver_all(
    records: Sequence[dict[str, Any]],
    invoke: Invoke,
    *,
    rng: random.Random,
    batch_size: int = 100,
    duplicate_rate: float = 0.0,
    truncate_rate: float = 0.0,
    bisect: bool = True,
    max_attempts: int = 200,
) -> DeliveryStats:
    """Feed ``records`` (one shard, in order) to ``invoke`` until every record is processed."""
    stats = DeliveryStats()
    checkpoint = 0
    attempts = 0
    while checkpoint < len(records):
        attempts += 1
        if attempts > max_attempts:
            raise AssertionError(f"records never got through: {stats.log[-5:]}")
        size = batch_size
        if truncate_rate and rng.random() < truncate_rate:
            size = rng.randint(1, batch_size)
        batch = list(records[checkpoint : checkpoint + size])
        consumed = _deliver(batch, invoke, rng=rng, stats=stats, bisect=bisect, duplicate_rate=duplicate_rate)
        checkpoint += consumed
    return stats


def _deliver(
    batch: list[dict[str, Any]],
    invoke: Invoke,
    *,
    rng: random.Random,
    stats: DeliveryStats,
    bisect: bool,
    duplicate_rate: float,
) -> int:
    """How many records of ``batch`` (from its start) are done after one delivery of it."""
    stats.invocations += 1
    try:
        response = invoke(batch)
    except FunctionError:
        response = None  # retried below, outside this handler: each invocation is independent
    if response is None:
        stats.function_errors += 1
        if bisect and len(batch) > 1:
            stats.bisections += 1
            middle = len(batch) // 2
            done = _deliver(
                batch[:middle], invoke, rng=rng, stats=stats, bisect=bisect, duplicate_rate=duplicate_rate
            )
            if done < middle:
                return done
            return middle + _deliver(
                batch[middle:], invoke, rng=rng, stats=stats, bisect=bisect, duplicate_rate=duplicate_rate
            )
        return 0
    failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
    if failed:
        stats.partial_failures += 1
        for index, record in enumerate(batch):
            if record["dynamodb"]["SequenceNumber"] in failed:
                return index
        raise AssertionError(f"failures name records outside the batch: {failed}")
    if duplicate_rate and rng.random() < duplicate_rate:
        # At-least-once: the success was not recorded, so the same batch comes again and the
        # second answer is the one that moves the checkpoint.
        stats.duplicates += 1
        return _deliver(batch, invoke, rng=rng, stats=stats, bisect=bisect, duplicate_rate=0.0)
    return len(batch)
