"""Feed stream records to a handler exactly as the local stack's poller does (one model of
Lambda's delivery rules for the whole project), on a fake clock so tests never wait."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any

from tests.local_stack.poller import Chaos, Counters, DeliverySettings, ShardConsumer
from tests.support.template import default_template

Invoke = Callable[[dict[str, Any]], Any]


def vote_processor_settings(batch_size: int) -> DeliverySettings:
    """The VoteProcessor's mapping from template.yaml, with ``batch_size`` and unbounded retries
    (the property under test is exactness; giving up is the on-failure queue's business)."""
    (mapping,) = [m for m in default_template().stream_mappings if m.function_id == "VoteProcessor"]
    return dataclasses.replace(
        DeliverySettings.from_mapping(mapping),
        batch_size=batch_size,
        maximum_retry_attempts=-1,
        maximum_record_age_seconds=-1,
    )


def deliver_all(
    records: Sequence[dict[str, Any]],
    invoke: Invoke,
    *,
    rng: random.Random,
    batch_size: int = 100,
    chaos: float = 0.0,
    max_steps: int = 100_000,
) -> Counters:
    """Deliver ``records`` (one shard, in order) until all are consumed.

    ``invoke`` takes a Lambda event; an exception it raises is a function error. With ``chaos``
    the poller redelivers batches, crashes part-way (then retries, bisecting) or cuts batches
    short, as in ``LOCAL_STREAM_CHAOS``.
    """
    now = [0.0]

    def give_up(given_up: Sequence[dict[str, Any]], condition: str, attempts: int) -> None:
        raise AssertionError(f"gave up on {len(given_up)} records ({condition}) after {attempts} attempts")

    consumer = ShardConsumer(
        vote_processor_settings(batch_size),
        invoke,
        give_up=give_up,
        chaos=Chaos(chaos, rng) if chaos else None,
        clock=lambda: now[0],
        wall_clock=lambda: now[0],
    )
    consumer.add(list(records))
    for _ in range(max_steps):
        if not consumer.pending_count:
            return consumer.counters
        if consumer.deliver() is None:
            now[0] += 3600.0  # past any batching window or retry backoff
    raise AssertionError(f"records never got through: {consumer.counters}")
