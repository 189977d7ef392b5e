"""Powertools' BatchProcessor, extended to count a whole delivery at once.

Powertools calls the record handler per record (here: parse it into a :class:`VoteChange`);
this subclass then quarantines unreadable records, applies the rest as one delivery
(:func:`apply_delivery`) and reports as failed every record that was not counted, so Lambda
replays exactly those.

With a publisher, it then publishes the vote events of every record counted in this
invocation (:mod:`mysetlist.domain_events`), including records skipped because an earlier
attempt had counted them (that attempt may have died before publishing). Events whose
publishing and dead-lettering both failed have their records reported as failed from the
first of them: a forward marker keyed by that record first hands the counted range to the
delivery Lambda will start there, so the replay counts nothing twice and publishes again.

Then its *observers* (trending sorted sets, fraud detection, live pushes) see the counted
records. They are derived, best-effort views: an observer's fault is logged and counted
(``ObserverFailed``), never fails the batch, and never makes Lambda replay counted votes.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from mysetlist.activity import ActivityConfig
from mysetlist.breaker import CircuitOpenError
from mysetlist.domain_events import VoteEvent, VoteEventPublisher, vote_event
from mysetlist.observability import logger, metrics
from mysetlist.tallies import TallyPort, VoteChange, apply_delivery, change_from_record

Parsed = list[tuple[dict[str, Any], VoteChange]]


class Quarantine(Protocol):
    """Where unreadable records go (the function's dead-letter queue, which has an alarm)."""

    def send(self, record: Mapping[str, Any], reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class CountedBatch:
    """What observers see: the records counted by this delivery, in stream order, each with its
    parsed change. Records before ``first_new`` had been counted by an earlier attempt (whose
    observers may or may not have run)."""

    records: Sequence[tuple[Mapping[str, Any], VoteChange]]
    first_new: int
    now: dt.datetime
    remaining_ms: Callable[[], int | None]

    @property
    def new_records(self) -> Sequence[tuple[Mapping[str, Any], VoteChange]]:
        return self.records[self.first_new :]


class BatchObserver(Protocol):
    """A derived view fed from counted votes (see the module docstring)."""

    name: str

    def observe(self, batch: CountedBatch) -> None: ...


def record_handler(record: DynamoDBRecord) -> VoteChange:
    """Parse one stream record. An unreadable one becomes a no-op change carrying the reason:
    failing it would make Lambda retry it, then give up on the valid votes after it too."""
    try:
        return change_from_record(record.raw_event)
    except (KeyError, TypeError, ValueError) as exc:
        sequence = str((record.raw_event.get("dynamodb") or {}).get("SequenceNumber", ""))
        if not sequence:
            raise  # without a sequence number it cannot even be reported: fail it
        return VoteChange(sequence, None, problem=f"{type(exc).__name__}: {exc}")


class TallyBatchProcessor(BatchProcessor):
    """Parses records one by one, then counts the delivery's parsed prefix exactly once."""

    def __init__(
        self,
        store: TallyPort,
        quarantine: Quarantine,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        publisher: VoteEventPublisher | None = None,
        observers: Sequence[BatchObserver] = (),
        activity: ActivityConfig | None = None,
    ) -> None:
        super().__init__(event_type=EventType.DynamoDBStreams)
        self._store = store
        self._quarantine = quarantine
        self._publisher = publisher
        self._observers = tuple(observers)
        self._activity = activity
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._sleep = sleep

    def process(self) -> list[tuple[Any, ...]]:
        results = super().process()
        parsed: Parsed = []
        for status, result, record in results:
            if status != "success":
                break  # Lambda replays from the first failure: count nothing after it
            parsed.append((record, result))
        parsed = self._quarantine_unreadable(parsed)
        if parsed:
            now = self._clock()
            counted, skipped = self._count(parsed, now)
            if self._publisher is not None and counted:
                self._publish(self._publisher, parsed[:counted])
            if counted:
                self._notify(CountedBatch(parsed[:counted], min(skipped, counted), now, self._remaining_ms))
        return results

    def _notify(self, batch: CountedBatch) -> None:
        for observer in self._observers:
            try:
                observer.observe(batch)
            except Exception:  # a derived view: degrade it, never the tallies
                logger.exception("batch observer failed", extra={"observer": observer.name})
                metrics.add_metric(name="ObserverFailed", unit=MetricUnit.Count, value=1)

    def _remaining_ms(self) -> int | None:
        context = getattr(self, "lambda_context", None)
        return int(context.get_remaining_time_in_millis()) if context is not None else None

    def _count(self, parsed: Parsed, now: dt.datetime) -> tuple[int, int]:
        """Count the delivery: how many of its records (a prefix) are counted, and how many of
        those an earlier attempt had counted."""

        def time_left() -> float:
            left = self._remaining_ms()
            return left / 1000 if left is not None else float("inf")

        outcome = apply_delivery(
            self._store,
            stream_arn=str(parsed[0][0].get("eventSourceARN", "")),
            changes=[change for _, change in parsed],
            now=now,
            time_left=time_left,
            activity=self._activity,
        )
        metrics.add_metric(name="StreamRecordsSkippedAsApplied", unit=MetricUnit.Count, value=outcome.skipped)
        metrics.add_metric(name="TallyCommits", unit=MetricUnit.Count, value=outcome.commits)
        metrics.add_metric(name="TallyWrites", unit=MetricUnit.Count, value=outcome.songs_written)
        if outcome.first_unapplied is not None:
            error = outcome.error or TimeoutError("not enough time left to count the rest of the batch")
            logger.warning(
                "counted part of the batch; the rest will be replayed",
                extra={"counted": outcome.first_unapplied, "records": len(parsed), "error": repr(error)},
            )
            if isinstance(error, CircuitOpenError):
                # A refusal takes microseconds and Lambda retries a stream batch at once: wait out
                # the open circuit here, so the mapping's retries are not all spent in a second.
                self._sleep(max(0.0, min(error.retry_after, time_left() - 1.0)))
            self._fail_from(parsed, outcome.first_unapplied, error)
            return outcome.first_unapplied, outcome.skipped
        return len(parsed), outcome.skipped

    def _publish(self, publisher: VoteEventPublisher, counted: Parsed) -> None:
        """Publish the events of the ``counted`` records. Records of events that were neither
        published nor dead-lettered are reported as failed, from the first of them."""
        events: list[VoteEvent] = []
        index_of: dict[str, int] = {}
        for index, (record, change) in enumerate(counted):
            if change.delta is None:
                continue  # a no-op write or a quarantined record: no vote changed
            event = vote_event(record)
            if event is not None:
                events.append(event)
                index_of[event.event_id] = index
        if not events:
            return
        outcome = publisher.publish(events, remaining_ms=self._remaining_ms)
        if not outcome.undelivered:
            return
        first = min(index_of[event.event_id] for event in outcome.undelivered)
        stream_arn = str(counted[0][0].get("eventSourceARN", ""))
        if first > 0:
            # These records are counted, in the marker of the delivery that starts at
            # counted[0]; Lambda will start the next delivery at counted[first]. Key a forward
            # marker there (as after a bisected retry) so that delivery skips them. If this
            # write fails the invocation fails: Lambda retries from counted[0], whose marker
            # lists them all.
            self._store.forward(
                stream_arn=stream_arn,
                sequences=[change.sequence_number for _, change in counted[first:]],
                now=self._clock(),
            )
        logger.warning(
            "vote events neither published nor dead-lettered; their records will be replayed",
            extra={"from_record": first, "records": len(counted), "events": len(outcome.undelivered)},
        )
        self._fail_from(
            counted, first, UndeliveredEvents(f"{len(outcome.undelivered)} vote events undelivered")
        )

    def _quarantine_unreadable(self, parsed: Parsed) -> Parsed:
        """Send unreadable records to the dead-letter queue. If that fails, that record and all
        after it are reported as failed (Lambda retries them); the prefix before it is kept.
        Quarantined records stay in the delivery as no-ops, so its checkpoint marker lists them."""
        for index, (record, change) in enumerate(parsed):
            if change.problem is None:
                continue
            try:
                self._quarantine.send(record, change.problem)
            except Exception as exc:
                logger.exception("could not quarantine an unreadable record")
                self._fail_from(parsed, index, exc)
                return parsed[:index]
            logger.error("unreadable stream record quarantined", extra={"reason": change.problem})
            metrics.add_metric(name="StreamRecordsQuarantined", unit=MetricUnit.Count, value=1)
        return parsed

    def _fail_from(self, parsed: Parsed, index: int, error: BaseException) -> None:
        for record, _ in parsed[index:]:
            self.success_messages.remove(record)  # type: ignore[arg-type]  # Powertools keeps raw records here
            self.failure_handler(record=DynamoDBRecord(record), exception=(type(error), error, None))


class UndeliveredEvents(RuntimeError):
    """Vote events could be neither published nor dead-lettered (the reason a record failed)."""
