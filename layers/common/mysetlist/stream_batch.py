"""Powertools' BatchProcessor, extended to count a whole delivery at once.

Powertools calls the record handler per record (here: parse it into a :class:`VoteChange`);
this subclass then applies the parsed records as one delivery (:func:`apply_delivery`) and
reports as failed every record that was not counted, so Lambda replays exactly those.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from mysetlist.observability import logger, metrics
from mysetlist.tallies import TallyPort, VoteChange, apply_delivery, change_from_record


def record_handler(record: DynamoDBRecord) -> VoteChange:
    """Parse one stream record (a malformed record raises and is reported as failed)."""
    return change_from_record(record.raw_event)


class TallyBatchProcessor(BatchProcessor):
    """Parses records one by one, then counts the delivery's parsed prefix exactly once."""

    def __init__(self, store: TallyPort, *, clock: Callable[[], dt.datetime] | None = None) -> None:
        super().__init__(event_type=EventType.DynamoDBStreams)
        self._store = store
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def process(self) -> list[tuple[Any, ...]]:
        results = super().process()
        parsed: list[tuple[dict[str, Any], VoteChange]] = []
        for status, result, record in results:
            if status != "success":
                break  # Lambda replays from the first failure: count nothing after it
            parsed.append((record, result))
        if not parsed:
            return results
        context = getattr(self, "lambda_context", None)
        time_left: Callable[[], float] = (
            (lambda: context.get_remaining_time_in_millis() / 1000)
            if context is not None
            else (lambda: float("inf"))
        )
        outcome = apply_delivery(
            self._store,
            stream_arn=str(parsed[0][0].get("eventSourceARN", "")),
            changes=[change for _, change in parsed],
            now=self._clock(),
            time_left=time_left,
        )
        metrics.add_metric(name="StreamRecordsSkippedAsApplied", unit=MetricUnit.Count, value=outcome.skipped)
        metrics.add_metric(name="TallyCommits", unit=MetricUnit.Count, value=outcome.commits)
        metrics.add_metric(name="TallyWrites", unit=MetricUnit.Count, value=outcome.songs_written)
        if outcome.first_unapplied is not None:
            error = outcome.error or TimeoutError("not enough time left to count the rest of the batch")
            logger.warning(
                "counted part of the batch; the rest will be replayed",
                extra={"counted": outcome.first_unapplied, "records": len(results), "error": repr(error)},
            )
            for record, _ in parsed[outcome.first_unapplied :]:
                self.success_messages.remove(record)  # type: ignore[arg-type]  # Powertools keeps raw records here
                self.failure_handler(record=DynamoDBRecord(record), exception=(type(error), error, None))
        return results
