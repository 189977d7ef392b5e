"""DynamoDB stream -> function, as Lambda's event source mapping does it (moto never runs Python
functions without Docker, so the local stack feeds the streams itself).

:class:`ShardConsumer` is the delivery logic for one shard, free of I/O: batches of up to
``BatchSize`` records gathered for up to ``MaximumBatchingWindowInSeconds``; success moves the
checkpoint past the batch; with ``ReportBatchItemFailures`` a response's ``batchItemFailures``
moves it to just before the lowest failed sequence number and the rest is retried (an invalid
identifier counts as a failure of the whole batch); a raised exception is a function error: the
batch is retried, split in two first when ``BisectBatchOnFunctionError`` is on; after
``MaximumRetryAttempts`` failed attempts without progress (or once records are older than
``MaximumRecordAgeInSeconds``) the records are given up on and reported to the OnFailure
destination. Attempts are counted per head of the shard and reset whenever it moves.

Chaos (``LOCAL_STREAM_CHAOS=p``): with probability ``p`` per batch, one of the things Lambda
really does happens -- a batch that succeeded is delivered again (its checkpoint was not
saved), the function dies part-way (it ran on a prefix of the batch, then the whole batch is
retried from its first record, bisected if configured), or the delivery is cut short so later
records come in another batch.

:class:`StreamPoller` does the I/O: it reads the table's stream from moto (describe_stream,
get_shard_iterator, get_records, children after their parents) and feeds the consumers.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import islice
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from tests.support.template import StreamMapping

if TYPE_CHECKING:
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient

log = logging.getLogger("local_stack.poller")

Record = dict[str, Any]
Invoke = Callable[[dict[str, Any]], Any]
GiveUp = Callable[[Sequence[Record], str, int], None]

_RETRY_BACKOFF_BASE = 0.05
_RETRY_BACKOFF_CAP = 1.0
_READ_LIMIT = 1000  # get_records' maximum
_MAX_BUFFERED_BATCHES = 10  # stop reading ahead once this many batches wait
_WHOLE_BATCH = -1


@dataclass(frozen=True)
class DeliverySettings:
    """The event source mapping settings that shape deliveries."""

    batch_size: int = 100
    batching_window_seconds: float = 0.0
    report_batch_item_failures: bool = False
    bisect_on_error: bool = False
    maximum_retry_attempts: int = -1
    maximum_record_age_seconds: int = -1

    @classmethod
    def from_mapping(cls, mapping: StreamMapping) -> DeliverySettings:
        return cls(
            batch_size=mapping.batch_size,
            batching_window_seconds=mapping.batching_window_seconds,
            report_batch_item_failures=mapping.report_batch_item_failures,
            bisect_on_error=mapping.bisect_on_error,
            maximum_retry_attempts=mapping.maximum_retry_attempts,
            maximum_record_age_seconds=mapping.maximum_record_age_seconds,
        )


class ChaosKind(StrEnum):
    DUPLICATE = "duplicate"
    CRASH = "crash"
    TRUNCATE = "truncate"


class Chaos:
    """Decides, per batch, whether and how a delivery misbehaves (seeded for reproducibility)."""

    def __init__(self, probability: float, rng: random.Random) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError("the chaos probability must be between 0 and 1")
        self.probability = probability
        self.rng = rng

    def pick(self, batch_len: int, *, can_duplicate: bool) -> ChaosKind | None:
        """The misbehaviour for a batch of ``batch_len`` records, or None (most of the time)."""
        if self.probability <= 0.0 or batch_len == 0 or self.rng.random() >= self.probability:
            return None
        kinds = [ChaosKind.CRASH]
        if can_duplicate:
            kinds.append(ChaosKind.DUPLICATE)
        if batch_len > 1:
            kinds.append(ChaosKind.TRUNCATE)
        return self.rng.choice(kinds)

    def cut(self, low: int, high: int) -> int:
        """A random length in ``[low, high]``."""
        return self.rng.randint(low, high)


class Outcome(StrEnum):
    OK = "ok"
    PARTIAL = "partial"
    ERROR = "error"
    GAVE_UP = "gave-up"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Delivery:
    """What one call of :meth:`ShardConsumer.deliver` did (for logs and tests)."""

    sequence_numbers: tuple[str, ...]
    outcome: Outcome
    chaos: ChaosKind | None = None
    consumed: int = 0


@dataclass
class Counters:
    invocations: int = 0
    batches_ok: int = 0
    records_ok: int = 0
    partial_failures: int = 0
    function_errors: int = 0
    given_up_batches: int = 0
    given_up_records: int = 0
    chaos: dict[str, int] = field(default_factory=lambda: {k.value: 0 for k in ChaosKind})


def sequence_number(record: Record) -> str:
    return str(record["dynamodb"]["SequenceNumber"])


class ShardConsumer:
    """Lambda's delivery semantics for one shard. Not I/O: ``invoke`` runs the function on an
    event and returns its response (or raises: a function error); ``give_up`` receives records
    Lambda would discard and report to the OnFailure destination, with the reason
    (``RetryAttemptsExhausted`` or ``RecordAgeExceeded``) and the attempt count.

    Thread-safe for :meth:`add` and :meth:`snapshot` from other threads while one thread
    calls :meth:`deliver`.
    """

    def __init__(
        self,
        settings: DeliverySettings,
        invoke: Invoke,
        *,
        give_up: GiveUp,
        chaos: Chaos | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._invoke = invoke
        self._give_up = give_up
        self._chaos = chaos
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._pending: deque[Record] = deque()
        self._segments: list[int] = []  # sizes of the next deliveries after a bisection
        self._attempts = 0
        self._window_start: float | None = None
        self._retry_at: float | None = None
        self._in_flight = False
        self.checkpoint: str | None = None
        self.last_read: str | None = None
        self.counters = Counters()

    # -- intake and status ----------------------------------------------------------------

    def add(self, records: Sequence[Record]) -> None:
        """Records read from the shard, in order (``last_read`` moves with them, atomically)."""
        if not records:
            return
        with self._lock:
            if not self._pending:
                self._window_start = self._clock()
            self._pending.extend(records)
            self.last_read = sequence_number(records[-1])

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def snapshot(self) -> dict[str, Any]:
        """A consistent view: ``last_read`` never runs ahead of what is pending or consumed."""
        with self._lock:
            return {
                "pending": len(self._pending),
                "in_flight": self._in_flight,
                "checkpoint": self.checkpoint,
                "last_read": self.last_read,
                "attempts": self._attempts,
            }

    def due(self) -> bool:
        """Whether a delivery should happen now (a full batch, the window elapsed, or a retry)."""
        with self._lock:
            if not self._pending:
                return False
            now = self._clock()
            if self._retry_at is not None:
                return now >= self._retry_at
            if self._segments or len(self._pending) >= self.settings.batch_size:
                return True
            start = self._window_start if self._window_start is not None else now
            return now - start >= self.settings.batching_window_seconds

    # -- delivery --------------------------------------------------------------------------

    def deliver(self) -> Delivery | None:
        """One delivery if one is due (see the module docstring for the semantics)."""
        expired = self._expire()
        if expired is not None:
            return expired
        if not self.due():
            return None
        with self._lock:
            limit = self._segments[0] if self._segments else self.settings.batch_size
            batch = list(islice(self._pending, limit))
            self._in_flight = True
        try:
            return self._deliver(batch)
        finally:
            with self._lock:
                self._in_flight = False
                self._window_start = self._clock()

    def _deliver(self, batch: list[Record]) -> Delivery:
        source = self._chaos
        chaos = source.pick(len(batch), can_duplicate=not self._segments) if source is not None else None
        if source is not None and chaos is ChaosKind.TRUNCATE:
            batch = batch[: source.cut(1, len(batch) - 1)]
        if chaos is not None:
            self.counters.chaos[chaos.value] += 1
        seqs = tuple(sequence_number(r) for r in batch)
        if source is not None and chaos is ChaosKind.CRASH:
            prefix = batch[: source.cut(1, len(batch))]
            self.counters.invocations += 1
            try:
                self._invoke({"Records": prefix})
            except Exception as exc:  # the "crashed" invocation's own outcome is discarded
                log.debug("chaos: crashed invocation raised %r (discarded)", exc)
            log.info(
                "chaos: function died after %d of %d records; retrying the batch", len(prefix), len(batch)
            )
            return self._function_error(batch, chaos)
        self.counters.invocations += 1
        try:
            response = self._invoke({"Records": batch})
        except Exception as exc:
            log.warning("function error on %d records (%s..%s): %r", len(batch), seqs[0], seqs[-1], exc)
            return self._function_error(batch, chaos)
        failed_at = self._first_failure(response, batch)
        if failed_at == _WHOLE_BATCH:
            log.warning("invalid batchItemFailures on %d records: a complete failure", len(batch))
            return self._function_error(batch, chaos)
        if failed_at is None:
            if chaos is ChaosKind.DUPLICATE:
                # The checkpoint was not saved: the same records come again.
                with self._lock:
                    self._retry_at = self._clock()
                return Delivery(seqs, Outcome.OK, chaos, consumed=0)
            self._consume(len(batch))
            self._attempts = 0
            self.counters.batches_ok += 1
            self.counters.records_ok += len(batch)
            return Delivery(seqs, Outcome.OK, chaos, consumed=len(batch))
        return self._partial_failure(batch, failed_at, chaos)

    def _first_failure(self, response: Any, batch: Sequence[Record]) -> int | None:
        """Index of the first record to retry, None for a complete success, or
        ``_WHOLE_BATCH`` when Lambda would count the response as a complete failure."""
        if not self.settings.report_batch_item_failures or not isinstance(response, Mapping):
            return None
        failures = response.get("batchItemFailures")
        if not failures:
            return None
        index = {sequence_number(r): i for i, r in enumerate(batch)}
        positions: list[int] = []
        for failure in failures if isinstance(failures, list) else [failures]:
            identifier = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
            if not isinstance(identifier, str) or identifier not in index:
                return _WHOLE_BATCH  # an empty, null or unknown identifier: a complete failure
            positions.append(index[identifier])
        return min(positions)

    def _partial_failure(self, batch: list[Record], failed_at: int, chaos: ChaosKind | None) -> Delivery:
        seqs = tuple(sequence_number(r) for r in batch)
        self.counters.partial_failures += 1
        if failed_at > 0:
            self._consume(failed_at)
            self.counters.records_ok += failed_at
            self._attempts = 0
        self._attempts += 1
        remaining = batch[failed_at:]
        if self._exhausted():
            self._abandon(remaining, "RetryAttemptsExhausted")
            return Delivery(seqs, Outcome.GAVE_UP, chaos, consumed=len(batch))
        self._schedule_retry()
        return Delivery(seqs, Outcome.PARTIAL, chaos, consumed=failed_at)

    def _function_error(self, batch: list[Record], chaos: ChaosKind | None) -> Delivery:
        seqs = tuple(sequence_number(r) for r in batch)
        self.counters.function_errors += 1
        self._attempts += 1
        if self._exhausted():
            self._abandon(batch, "RetryAttemptsExhausted")
            return Delivery(seqs, Outcome.GAVE_UP, chaos, consumed=len(batch))
        if self.settings.bisect_on_error and len(batch) > 1:
            with self._lock:
                if self._segments:
                    self._segments[0] -= len(batch)
                    if self._segments[0] <= 0:
                        self._segments.pop(0)
                first = (len(batch) + 1) // 2
                self._segments[0:0] = [first, len(batch) - first]
        self._schedule_retry()
        return Delivery(seqs, Outcome.ERROR, chaos)

    def _exhausted(self) -> bool:
        limit = self.settings.maximum_retry_attempts
        return limit >= 0 and self._attempts > limit

    def _schedule_retry(self) -> None:
        delay = min(_RETRY_BACKOFF_CAP, _RETRY_BACKOFF_BASE * 2 ** max(0, self._attempts - 1))
        with self._lock:
            self._retry_at = self._clock() + delay

    def _abandon(self, records: Sequence[Record], condition: str) -> None:
        log.info("giving up on %d records (%s) after %d attempts", len(records), condition, self._attempts)
        self._give_up(records, condition, self._attempts)
        self._consume(len(records))
        self._attempts = 0
        self.counters.given_up_batches += 1
        self.counters.given_up_records += len(records)

    def _expire(self) -> Delivery | None:
        max_age = self.settings.maximum_record_age_seconds
        if max_age < 0:
            return None
        now = self._wall_clock()
        with self._lock:
            expired = []
            for record in self._pending:
                created = float(record["dynamodb"].get("ApproximateCreationDateTime") or now)
                if now - created <= max_age:
                    break
                expired.append(record)
        if not expired:
            return None
        self._abandon(expired, "RecordAgeExceeded")
        return Delivery(tuple(sequence_number(r) for r in expired), Outcome.EXPIRED, consumed=len(expired))

    def _consume(self, count: int) -> None:
        """Move the checkpoint past the first ``count`` pending records."""
        with self._lock:
            for _ in range(count):
                self.checkpoint = sequence_number(self._pending.popleft())
            remaining = count
            while remaining and self._segments:
                taken = min(remaining, self._segments[0])
                self._segments[0] -= taken
                remaining -= taken
                if self._segments[0] == 0:
                    self._segments.pop(0)
            self._retry_at = None


# ---------------------------------------------------------------------------------- records


def _json_safe(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_safe(v) for v in value]
    return value


def lambda_record(raw: Mapping[str, Any], *, stream_arn: str, region: str) -> Record:
    """A stream record from moto in the shape Lambda delivers it: ``ApproximateCreationDateTime``
    in epoch seconds, ``eventSourceARN`` set, ``awsRegion`` the stack's region, ``eventVersion``
    1.1, binary values base64-encoded."""
    record: Record = _json_safe(dict(raw))
    dynamodb = dict(raw.get("dynamodb") or {})
    created = dynamodb.get("ApproximateCreationDateTime")
    if isinstance(created, dt.datetime):
        stamp = created if created.tzinfo else created.replace(tzinfo=dt.UTC)
        dynamodb["ApproximateCreationDateTime"] = int(stamp.timestamp())
    record["dynamodb"] = _json_safe(dynamodb)
    record["awsRegion"] = region
    record["eventSourceARN"] = stream_arn
    record["eventVersion"] = "1.1"  # what Lambda sends for DynamoDB streams (moto says 1.0)
    return record


def failure_message(
    records: Sequence[Record],
    *,
    condition: str,
    attempts: int,
    shard_id: str,
    stream_arn: str,
    function_arn: str,
) -> dict[str, Any]:
    """The OnFailure destination's message for discarded stream records (batch metadata only,
    as Lambda sends it: read the records back from the stream by sequence number)."""

    def arrival(record: Record) -> str:
        stamp = float(record["dynamodb"].get("ApproximateCreationDateTime") or time.time())
        return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    return {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": attempts,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "DDBStreamBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": sequence_number(records[0]),
            "endSequenceNumber": sequence_number(records[-1]),
            "approximateArrivalOfFirstRecord": arrival(records[0]),
            "approximateArrivalOfLastRecord": arrival(records[-1]),
            "batchSize": len(records),
            "streamArn": stream_arn,
        },
    }


# ---------------------------------------------------------------------------------- I/O


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    consumer: ShardConsumer
    iterator: str | None = None
    started: bool = False
    ended: bool = False  # the shard is closed and fully read


class StreamPoller:
    """Reads one table's stream from moto and feeds it to one function (a background thread).

    ``send_failure`` receives the OnFailure message of records given up on (or None when the
    mapping has no destination: they are only logged, as Lambda would drop them).
    """

    def __init__(
        self,
        mapping: StreamMapping,
        *,
        stream_arn: str,
        client: DynamoDBStreamsClient,
        invoke: Invoke,
        function_arn: str,
        region: str,
        send_failure: Callable[[dict[str, Any]], None] | None = None,
        chaos: Chaos | None = None,
        poll_interval: float = 0.25,
    ) -> None:
        self.mapping = mapping
        self.settings = DeliverySettings.from_mapping(mapping)
        self.stream_arn = stream_arn
        self.client = client
        self.invoke = invoke
        self.function_arn = function_arn
        self.region = region
        self.send_failure = send_failure
        self.chaos = chaos
        self.poll_interval = poll_interval
        self._shards: dict[str, _Shard] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_refresh = 0.0
        self.errors = 0

    @property
    def name(self) -> str:
        return f"{self.mapping.function_id}.{self.mapping.event_name}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"poller-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the delivery in progress (if any) finishes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        log.info("polling %s for %s", self.stream_arn, self.name)
        while not self._stop.is_set():
            try:
                busy = self.poll_once()
            except (ClientError, BotoCoreError) as exc:
                self.errors += 1
                log.warning("%s: reading the stream failed: %r", self.name, exc)
                busy = False
            except Exception:  # keep feeding the stream: a dead poller would freeze the tallies
                self.errors += 1
                log.exception("%s: the poller failed; retrying", self.name)
                busy = False
            if not busy:
                self._stop.wait(self.poll_interval)  # Lambda polls each shard four times a second

    def poll_once(self) -> bool:
        """Read what is new and deliver what is due; True if anything happened."""
        if time.monotonic() >= self._next_refresh:
            self._refresh_shards()
        busy = False
        for shard in list(self._shards.values()):
            if shard.ended or not self._may_start(shard):
                continue
            busy |= self._read(shard)
            while not self._stop.is_set():
                delivery = shard.consumer.deliver()
                if delivery is None:
                    break
                busy = True
                log.debug("%s %s: %s", self.name, shard.shard_id, delivery)
            if shard.iterator is None and shard.started and shard.consumer.pending_count == 0:
                shard.ended = True
                self._next_refresh = 0.0  # look for its children now
        return busy

    def _refresh_shards(self) -> None:
        self._next_refresh = time.monotonic() + 5.0
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn}
        for _ in range(1000):  # pages of shards; bounded
            description = self.client.describe_stream(**kwargs)["StreamDescription"]
            for shard in description.get("Shards", []):
                shard_id = shard["ShardId"]
                if shard_id not in self._shards:
                    self._shards[shard_id] = _Shard(
                        shard_id, shard.get("ParentShardId"), self._new_consumer(shard_id)
                    )
            last = description.get("LastEvaluatedShardId")
            if not last:
                break
            kwargs["ExclusiveStartShardId"] = last

    def _new_consumer(self, shard_id: str) -> ShardConsumer:
        def give_up(records: Sequence[Record], condition: str, attempts: int) -> None:
            message = failure_message(
                records,
                condition=condition,
                attempts=attempts,
                shard_id=shard_id,
                stream_arn=self.stream_arn,
                function_arn=self.function_arn,
            )
            log.error("%s: records given up on: %s", self.name, message["DDBStreamBatchInfo"])
            if self.send_failure is not None:
                self.send_failure(message)

        return ShardConsumer(self.settings, self.invoke, give_up=give_up, chaos=self.chaos)

    def _may_start(self, shard: _Shard) -> bool:
        """A child shard is read only once its parent has been read to the end (record order)."""
        if shard.started:
            return True
        parent = self._shards.get(shard.parent_id) if shard.parent_id else None
        if parent is not None and not parent.ended:
            return False
        from_start = parent is not None or self.mapping.starting_position != "LATEST"
        shard.iterator = self._iterator(shard.shard_id, None, from_start=from_start)
        shard.started = True
        return True

    def _read(self, shard: _Shard) -> bool:
        if shard.iterator is None:
            return False
        if shard.consumer.pending_count >= _MAX_BUFFERED_BATCHES * self.settings.batch_size:
            return False
        try:
            page = self.client.get_records(ShardIterator=shard.iterator, Limit=_READ_LIMIT)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExpiredIteratorException":
                raise
            shard.iterator = self._iterator_after(shard)
            return False
        records = [
            lambda_record(r, stream_arn=self.stream_arn, region=self.region) for r in page.get("Records", [])
        ]
        shard.consumer.add(records)
        shard.iterator = page.get("NextShardIterator")
        return bool(records)

    def _iterator_after(self, shard: _Shard) -> str:
        return self._iterator(shard.shard_id, shard.consumer.snapshot()["last_read"], from_start=True)

    def _iterator(self, shard_id: str, after: str | None, *, from_start: bool) -> str:
        """A shard iterator just after sequence number ``after``, else at the trim horizon
        (``from_start``) or at the latest record."""
        if after is not None:
            return self.client.get_shard_iterator(
                StreamArn=self.stream_arn,
                ShardId=shard_id,
                ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                SequenceNumber=after,
            )["ShardIterator"]
        return self.client.get_shard_iterator(
            StreamArn=self.stream_arn,
            ShardId=shard_id,
            ShardIteratorType="TRIM_HORIZON" if from_start else "LATEST",
        )["ShardIterator"]

    def status(self) -> dict[str, Any]:
        """Counters and lag per shard. ``idle`` is true when every record written to the stream
        so far has been delivered (nothing pending, nothing in flight, nothing unread)."""
        shards = []
        idle = True
        for shard in list(self._shards.values()):
            snap = shard.consumer.snapshot()
            unread = 0 if shard.ended else self._probe_unread(shard, snap["last_read"])
            shard_idle = not snap["in_flight"] and snap["pending"] == 0 and unread == 0
            idle &= shard_idle
            shards.append({"shard_id": shard.shard_id, **snap, "unread": unread, "idle": shard_idle})
        counters = [s.consumer.counters for s in self._shards.values()]

        def total(name: str) -> int:
            return sum(getattr(c, name) for c in counters)

        return {
            "function": self.mapping.function_id,
            "event": self.mapping.event_name,
            "table": self.mapping.table_id,
            "stream_arn": self.stream_arn,
            "idle": idle and bool(self._shards),
            "shards": shards,
            "invocations": total("invocations"),
            "batches_ok": total("batches_ok"),
            "records_ok": total("records_ok"),
            "partial_failures": total("partial_failures"),
            "function_errors": total("function_errors"),
            "given_up_batches": total("given_up_batches"),
            "given_up_records": total("given_up_records"),
            "chaos": {k.value: sum(c.chaos[k.value] for c in counters) for k in ChaosKind},
            "read_errors": self.errors,
        }

    def _probe_unread(self, shard: _Shard, last_read: str | None) -> int:
        """How many records (up to 1000) the stream holds past ``last_read`` (a fresh iterator)."""
        from_start = self.mapping.starting_position != "LATEST"
        iterator = self._iterator(shard.shard_id, last_read, from_start=from_start)
        return len(self.client.get_records(ShardIterator=iterator, Limit=_READ_LIMIT).get("Records", []))
