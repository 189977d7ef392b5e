"""Domain events: every counted vote change, published to the votes EventBridge bus.

After a delivery's tallies are committed, the VoteProcessor publishes one event per vote change
it counted (a vote created, switched or removed) to ``VoteEventsBus`` (``EVENT_BUS_NAME``), for
analytics and notifications to consume later. Without ``EVENT_BUS_NAME`` nothing is published.

Event format (one PutEvents entry)::

    Source      "mysetlist.votes"
    DetailType  "Vote Created" | "Vote Switched" | "Vote Removed"
    Time        the stream record's ApproximateCreationDateTime (when the vote was written)
    Detail      {"schema_version": 1, "event_id": "<stream sequence number>", "kind": "created",
                 "show_id": ..., "song_id": ..., "user_id": ...,
                 "old_vote_type": null | "up" | "down", "new_vote_type": null | "up" | "down",
                 "stream_arn": "<the votes stream>"}

``event_id`` is the record's stream sequence number: the same on every redelivery of that
record, so consumers de-duplicate on it (with ``stream_arn`` when they read several streams).
``user_id`` is the vote item's own value; no other personal data is added.

Delivery is at least once, never silently lost:

* Entries go out in PutEvents requests of at most 10. Only the entries that failed (a per-entry
  ``ErrorCode``, or the whole request failing) are sent again, after a full-jitter backoff that
  stays inside the invocation's time (:func:`~mysetlist.retry.pause_before_retry`), for at most
  ``attempts`` rounds. Errors EventBridge calls non-retryable (``InvalidArgument``,
  ``MalformedDetail``, ``AccessDeniedException`` ...) and whole-request errors that are not
  transient (``ResourceNotFoundException``: no such bus) are not retried.
* Entries that still failed go to the VoteProcessor's dead-letter queue (``VoteProcessorDLQ``,
  alarmed), at most 10 per message: ``{"kind": "unpublished-vote-events", "source":
  "VoteProcessor", "reason": ..., "event_bus_name": ..., "entries": [...]}``. The entries are
  PutEvents entries as sent (``Time`` in ISO 8601), so one message is replayed with one
  ``put_events(Entries=message["entries"])``.
* Entries whose dead-letter send failed too are *undelivered*: the caller
  (:class:`~mysetlist.stream_batch.TallyBatchProcessor`) reports their records as failed so
  Lambda delivers them again; the checkpoint markers keep the tallies exact and the events are
  published again (same ``event_id``).

Metrics: ``VoteEventsPublished`` (entries accepted by the bus), ``VoteEventsRetried`` (entries
sent again), ``VoteEventsFailed`` (entries given up on: dead-lettered or undelivered),
``VoteEventsUndelivered`` (of those, the ones the dead-letter queue did not take either).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from mysetlist.breaker import counts_as_failure
from mysetlist.dynamo import error_code
from mysetlist.observability import logger, metrics, remaining_time_ms
from mysetlist.retry import pause_before_retry

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef
    from mypy_boto3_sqs import SQSClient

SOURCE = "mysetlist.votes"
SCHEMA_VERSION = 1
# PutEvents takes at most 10 entries per request.
MAX_ENTRIES_PER_REQUEST = 10
DETAIL_TYPES = {
    "created": "Vote Created",
    "switched": "Vote Switched",
    "removed": "Vote Removed",
    # Moderation: a flagged vote stops counting, a released one counts again (docs/realtime.md).
    "quarantined": "Vote Quarantined",
    "released": "Vote Released",
}
DEAD_LETTER_KIND = "unpublished-vote-events"
# Per-entry error codes EventBridge documents as non-retryable (InternalFailure and
# ThrottlingException are the retryable ones; unknown codes are retried too).
NOT_RETRYABLE_CODES = frozenset(
    {
        "AccessDeniedException",
        "InvalidAccountIdException",
        "InvalidArgument",
        "MalformedDetail",
        "RedactionFailure",
        "NotAuthorizedForSourceException",
        "NotAuthorizedForDetailTypeException",
    }
)
_VOTE_TYPES = frozenset({"up", "down"})


@dataclass(frozen=True, slots=True)
class VoteEvent:
    """One counted vote change, ready to publish."""

    event_id: str
    kind: str
    detail: Mapping[str, Any]
    time: dt.datetime | None = None

    def entry(self, event_bus_name: str) -> PutEventsRequestEntryTypeDef:
        entry: PutEventsRequestEntryTypeDef = {
            "Source": SOURCE,
            "DetailType": DETAIL_TYPES[self.kind],
            "Detail": json.dumps(self.detail, separators=(",", ":"), sort_keys=True),
            "EventBusName": event_bus_name,
        }
        if self.time is not None:
            entry["Time"] = self.time
        return entry


def _vote_type(image: Mapping[str, Any] | None) -> str | None:
    vote = (image or {}).get("vote_type", {}).get("S")
    return vote if vote in _VOTE_TYPES else None


def _creation_time(value: Any) -> dt.datetime | None:
    """Lambda gives ApproximateCreationDateTime in epoch seconds; the streams API a datetime."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    try:
        return dt.datetime.fromtimestamp(float(value), tz=dt.UTC) if value is not None else None
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _moderation(image: Mapping[str, Any] | None) -> str | None:
    value = (image or {}).get("moderation", {}).get("S")
    return str(value) if value else None


def vote_event(record: Mapping[str, Any]) -> VoteEvent | None:
    """The event of one Lambda DynamoDB-stream record of the votes table, or None when the
    record changes no vote (a write that kept the vote type and its moderation state). Raises
    on a malformed record."""
    body = record["dynamodb"]
    old, new = body.get("OldImage"), body.get("NewImage")
    old_type, new_type = _vote_type(old), _vote_type(new)
    old_state, new_state = _moderation(old), _moderation(new)
    if old_type == new_type:
        # Only moderation can make such a write count: a flag (the vote stops counting) or a
        # release (it counts again). A confirmation keeps a vote that already did not count.
        if new_type is None or old_state == new_state or new_state not in ("quarantined", "released"):
            return None
        kind = new_state
    else:
        kind = "created" if old_type is None else "removed" if new_type is None else "switched"
    image = new or old
    sequence = str(body["SequenceNumber"])
    detail = {
        "schema_version": SCHEMA_VERSION,
        "event_id": sequence,
        "kind": kind,
        "show_id": image["show_id"]["S"],
        "song_id": image["song_id"]["S"],
        "user_id": (image.get("user_id") or {}).get("S"),
        "old_vote_type": old_type,
        "new_vote_type": new_type,
        "moderation": new_state,
        "stream_arn": str(record.get("eventSourceARN", "")),
    }
    return VoteEvent(sequence, kind, detail, _creation_time(body.get("ApproximateCreationDateTime")))


class EventDeadLetters(Protocol):
    """Where entries that could not be published go (the function's dead-letter queue)."""

    def send_events(self, entries: Sequence[Mapping[str, Any]], reason: str) -> None: ...


class SqsEventDeadLetters:
    """Sends unpublished entries, with the reason, to an SQS queue (one message per <= 10)."""

    def __init__(self, client: SQSClient, queue_url: str, *, source: str, event_bus_name: str) -> None:
        self._sqs = client
        self._queue_url = queue_url
        self._source = source
        self._bus = event_bus_name

    def send_events(self, entries: Sequence[Mapping[str, Any]], reason: str) -> None:
        body = {
            "kind": DEAD_LETTER_KIND,
            "source": self._source,
            "reason": reason,
            "event_bus_name": self._bus,
            "entries": [_serialisable(entry) for entry in entries],
        }
        self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=json.dumps(body, default=str))


def _serialisable(entry: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(entry)
    if isinstance(out.get("Time"), dt.datetime):
        out["Time"] = out["Time"].isoformat()
    return out


@dataclass(slots=True)
class PublishOutcome:
    """What became of the events: published, dead-lettered, or neither (``undelivered``)."""

    published: int = 0
    retried: int = 0
    dead_lettered: list[VoteEvent] = field(default_factory=list)
    undelivered: list[VoteEvent] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.dead_lettered) + len(self.undelivered)


@dataclass(frozen=True, slots=True)
class _Failure:
    event: VoteEvent
    code: str
    message: str
    retryable: bool


def chunked[T](items: Sequence[T], size: int = MAX_ENTRIES_PER_REQUEST) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class VoteEventPublisher:
    """Publishes vote events to one bus: chunks of 10, failed entries retried, the rest dead-lettered."""

    def __init__(
        self,
        client: EventBridgeClient,
        event_bus_name: str,
        dead_letters: EventDeadLetters,
        *,
        attempts: int = 4,
        base_delay: float = 0.1,
        max_delay: float = 1.0,
        reserve_ms: int = 2000,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._events = client
        self.event_bus_name = event_bus_name
        self._dead_letters = dead_letters
        self._attempts = attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._reserve_ms = reserve_ms
        self._sleep = sleep
        self._rng = rng

    def publish(
        self, events: Sequence[VoteEvent], *, remaining_ms: Callable[[], int | None] = remaining_time_ms
    ) -> PublishOutcome:
        """Publish ``events``; never raises for a failed entry (see :class:`PublishOutcome`).

        Every event is sent at least once; retries happen only while the backoff leaves
        ``reserve_ms`` of the invocation (for the dead-letter sends and the response).
        """
        outcome = PublishOutcome()
        pending: Sequence[VoteEvent] = events
        given_up: list[_Failure] = []
        retry = 0
        while pending:
            failures = [f for chunk in chunked(pending) for f in self._put(chunk)]
            outcome.published += len(pending) - len(failures)
            given_up += [f for f in failures if not f.retryable]
            retryable = [f for f in failures if f.retryable]
            if not retryable:
                break
            if retry + 1 >= self._attempts or not pause_before_retry(
                retry,
                base_delay=self._base_delay,
                max_delay=self._max_delay,
                reserve_ms=self._reserve_ms,
                remaining_ms=remaining_ms,
                sleep=self._sleep,
                rng=self._rng,
            ):
                given_up += retryable
                break
            pending = [f.event for f in retryable]
            outcome.retried += len(pending)
            retry += 1
        if given_up:
            self._dead_letter(given_up, outcome)
        metrics.add_metric(name="VoteEventsPublished", unit=MetricUnit.Count, value=outcome.published)
        if outcome.retried:
            metrics.add_metric(name="VoteEventsRetried", unit=MetricUnit.Count, value=outcome.retried)
        if outcome.failed:
            metrics.add_metric(name="VoteEventsFailed", unit=MetricUnit.Count, value=outcome.failed)
        if outcome.undelivered:
            metrics.add_metric(
                name="VoteEventsUndelivered", unit=MetricUnit.Count, value=len(outcome.undelivered)
            )
        return outcome

    def _put(self, chunk: Sequence[VoteEvent]) -> list[_Failure]:
        """Send one request; the entries that failed (all of them when the request did)."""
        try:
            response = self._events.put_events(Entries=[e.entry(self.event_bus_name) for e in chunk])
        except Exception as exc:
            code = (error_code(exc) if isinstance(exc, ClientError) else "") or type(exc).__name__
            transient = counts_as_failure(exc)
            logger.warning(
                "PutEvents failed",
                extra={"entries": len(chunk), "error": repr(exc), "will_retry": transient},
            )
            return [_Failure(event, code, str(exc), transient) for event in chunk]
        if not response.get("FailedEntryCount"):
            return []
        # The response's entries are in the order of the request's, one for one.
        return [
            _Failure(
                event,
                result["ErrorCode"],
                result.get("ErrorMessage", ""),
                result["ErrorCode"] not in NOT_RETRYABLE_CODES,
            )
            for event, result in zip(chunk, response["Entries"], strict=True)
            if result.get("ErrorCode")
        ]

    def _dead_letter(self, failures: Sequence[_Failure], outcome: PublishOutcome) -> None:
        for chunk in chunked(failures):
            reason = "; ".join(sorted({f"{f.code}: {f.message}" for f in chunk}))
            events = [f.event for f in chunk]
            try:
                self._dead_letters.send_events([e.entry(self.event_bus_name) for e in events], reason)
            except Exception:
                logger.exception(
                    "could not dead-letter unpublished vote events; their records will be retried",
                    extra={"event_ids": [e.event_id for e in events]},
                )
                outcome.undelivered += events
                continue
            logger.error(
                "vote events not published; sent to the dead-letter queue",
                extra={"reason": reason, "event_ids": [e.event_id for e in events]},
            )
            outcome.dead_lettered += events
