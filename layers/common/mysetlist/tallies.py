"""Exact tallies from the votes stream.

Vote items are the truth; a tally is the sum, over the stream, of each record's change to a
song's (upvotes, downvotes): new image minus old image. Streams deliver at least once and
Lambda retries from its checkpoint, so every record must count exactly once:

* A delivery (a batch of one shard's records, in order) is applied in chunks. Each chunk is
  one DynamoDB transaction: one update per song (the chunk's deltas summed: one write per song
  per batch, not per vote) and the delivery's *checkpoint marker*, keyed by the delivery's
  first record, listing every record applied so far. Either all of it lands or none.
* Every delivery starts at Lambda's checkpoint. A redelivery from the same first record finds
  the marker and skips the records it lists. When a retry is shorter than what was applied
  (a crash after the commit, then a bisected retry), the processor writes a forward marker
  keyed by the next applied record, where the following delivery will start.
* Failures are reported from the first record not applied, so nothing after it was counted:
  Lambda's replay from there cannot double-count.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from mysetlist import keys
from mysetlist.breaker import CircuitOpenError
from mysetlist.dynamo import error_code, from_item, to_item, unavailable_on_throttle

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

MARKER_SK = "CKPT"
# DynamoDB transactions take at most 100 actions: up to 99 songs and the marker.
MAX_SONGS_PER_COMMIT = 99


@dataclass(frozen=True, slots=True)
class TallyDelta:
    show_id: str
    song_id: str
    up: int
    down: int


@dataclass(frozen=True, slots=True)
class VoteChange:
    """One stream record, reduced to what tallies need. ``delta`` is None for no-op writes and
    for unreadable records (``problem`` says why; they are quarantined, not counted)."""

    sequence_number: str
    delta: TallyDelta | None
    problem: str | None = None


def _contribution(image: Mapping[str, Any] | None) -> tuple[int, int]:
    vote = (image or {}).get("vote_type", {}).get("S")
    return (1 if vote == "up" else 0, 1 if vote == "down" else 0)


def change_from_record(record: Mapping[str, Any]) -> VoteChange:
    """The tally change carried by one Lambda DynamoDB-stream record (raises on a malformed one)."""
    body = record["dynamodb"]
    sequence = str(body["SequenceNumber"])
    old, new = body.get("OldImage"), body.get("NewImage")
    image = new or old
    if not image:
        raise ValueError(f"record {sequence} has no image: the stream must be NEW_AND_OLD_IMAGES")
    show_id, song_id = image["show_id"]["S"], image["song_id"]["S"]
    (old_up, old_down), (new_up, new_down) = _contribution(old), _contribution(new)
    up, down = new_up - old_up, new_down - old_down
    return VoteChange(sequence, TallyDelta(show_id, song_id, up, down) if (up or down) else None)


@dataclass(slots=True)
class Marker:
    key: str
    sequences: list[str]
    version: int

    @property
    def applied(self) -> frozenset[str]:
        return frozenset(self.sequences)


@dataclass(frozen=True, slots=True)
class SongTallyCount:
    song_id: str
    up: int
    down: int


class TallyPort(Protocol):
    """What :func:`apply_delivery` needs from storage (TallyStore in AWS, fakes in unit tests)."""

    def marker(self, stream_arn: str, first_sequence: str) -> Marker | None: ...

    def commit(
        self,
        *,
        stream_arn: str,
        first_sequence: str,
        marker: Marker | None,
        sequences: Sequence[str],
        deltas: Sequence[TallyDelta],
        lane: int,
        now: dt.datetime,
    ) -> Marker: ...

    def forward(self, *, stream_arn: str, sequences: Sequence[str], now: dt.datetime) -> None: ...


class TallyStore:
    """Tally items (per show shard, song and lane) and stream checkpoint markers."""

    def __init__(self, client: DynamoDBClient, table: str, *, marker_ttl_seconds: int) -> None:
        self._db = client
        self._table = table
        self._marker_ttl = marker_ttl_seconds

    def read(self, show_id: str, *, consistent: bool = False) -> list[SongTallyCount]:
        """A show's tallies per song: its shard partitions queried, lanes summed (the
        reconciler's repair lane included). ``consistent`` reads strongly consistently."""
        totals: dict[str, list[int]] = {}
        for pk in keys.tally_partitions(show_id):
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "KeyConditionExpression": "PK = :pk",
                "ExpressionAttributeValues": to_item({":pk": pk}),
                "ProjectionExpression": "song_id, upvotes, downvotes",
                "ConsistentRead": consistent,
            }
            while True:
                with unavailable_on_throttle("the tallies"):
                    response = self._db.query(**kwargs)
                for raw in response.get("Items", []):
                    item = from_item(raw)
                    total = totals.setdefault(item["song_id"], [0, 0])
                    total[0] += int(item.get("upvotes", 0))
                    total[1] += int(item.get("downvotes", 0))
                if "LastEvaluatedKey" not in response:
                    break
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return [SongTallyCount(song, up, down) for song, (up, down) in totals.items()]

    def marker(self, stream_arn: str, first_sequence: str) -> Marker | None:
        key = keys.stream_marker_pk(stream_arn, first_sequence)
        response = self._db.get_item(
            TableName=self._table, Key=to_item({"PK": key, "SK": MARKER_SK}), ConsistentRead=True
        )
        if "Item" not in response:
            return None
        item = from_item(response["Item"])
        return Marker(key=key, sequences=list(item["sequences"]), version=int(item["version"]))

    def commit(
        self,
        *,
        stream_arn: str,
        first_sequence: str,
        marker: Marker | None,
        sequences: Sequence[str],
        deltas: Sequence[TallyDelta],
        lane: int,
        now: dt.datetime,
    ) -> Marker:
        """Apply summed ``deltas`` and extend the delivery's marker by ``sequences``, atomically.

        Raises ``ClientError`` (``TransactionCanceledException``) when the marker changed since
        it was read, which only a concurrent processor of the same delivery could do.
        """
        key = keys.stream_marker_pk(stream_arn, first_sequence)
        expires_at = int(now.timestamp()) + self._marker_ttl
        actions: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": to_item(
                        {"PK": keys.tally_pk(d.show_id, d.song_id), "SK": keys.tally_sk(d.song_id, lane)}
                    ),
                    "UpdateExpression": "ADD upvotes :up, downvotes :down SET show_id = :show, song_id = :song, "
                    "updated_at = :now",
                    "ExpressionAttributeValues": to_item(
                        {
                            ":up": d.up,
                            ":down": d.down,
                            ":show": d.show_id,
                            ":song": d.song_id,
                            ":now": now.isoformat(),
                        }
                    ),
                }
            }
            for d in deltas
        ]
        version = marker.version if marker else 0
        all_sequences = [*(marker.sequences if marker else []), *sequences]
        if marker is None:
            actions.append(
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": to_item(
                            {
                                "PK": key,
                                "SK": MARKER_SK,
                                "sequences": all_sequences,
                                "version": 1,
                                "expires_at": expires_at,
                                "stream_arn": stream_arn,
                            }
                        ),
                        "ConditionExpression": "attribute_not_exists(PK)",
                    }
                }
            )
        else:
            actions.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": to_item({"PK": key, "SK": MARKER_SK}),
                        "UpdateExpression": "SET sequences = :all, version = :next, expires_at = :expires",
                        "ConditionExpression": "version = :seen",
                        "ExpressionAttributeValues": to_item(
                            {
                                ":all": all_sequences,
                                ":next": version + 1,
                                ":seen": version,
                                ":expires": expires_at,
                            }
                        ),
                    }
                }
            )
        # botocore gives the request an idempotency token and keeps it across its own retries,
        # so a retry after a lost response does not apply the transaction twice.
        self._db.transact_write_items(TransactItems=actions)  # type: ignore[arg-type]
        return Marker(key=key, sequences=all_sequences, version=version + 1)

    def forward(self, *, stream_arn: str, sequences: Sequence[str], now: dt.datetime) -> None:
        """Hand the rest of an applied range to the delivery that will start at its first record."""
        item = {
            "PK": keys.stream_marker_pk(stream_arn, sequences[0]),
            "SK": MARKER_SK,
            "sequences": list(sequences),
            "version": 1,
            "expires_at": int(now.timestamp()) + self._marker_ttl,
            "stream_arn": stream_arn,
        }
        try:
            self._db.put_item(
                TableName=self._table, Item=to_item(item), ConditionExpression="attribute_not_exists(PK)"
            )
        except ClientError as exc:
            # Already forwarded by an earlier attempt (and possibly extended since): keep it.
            if error_code(exc) != "ConditionalCheckFailedException":
                raise


@dataclass(slots=True)
class DeliveryOutcome:
    """How far a delivery got: records before ``first_unapplied`` are counted (None: all)."""

    first_unapplied: int | None
    skipped: int = 0
    commits: int = 0
    songs_written: int = 0
    error: BaseException | None = field(default=None, repr=False)


def summed(changes: Sequence[VoteChange]) -> list[TallyDelta]:
    """Per (show, song), the sum of the changes' deltas; songs whose sum is zero are dropped."""
    sums: dict[tuple[str, str], list[int]] = {}
    for change in changes:
        if change.delta is None:
            continue
        total = sums.setdefault((change.delta.show_id, change.delta.song_id), [0, 0])
        total[0] += change.delta.up
        total[1] += change.delta.down
    return [TallyDelta(show, song, up, down) for (show, song), (up, down) in sums.items() if up or down]


def chunks_by_song_count(changes: Sequence[VoteChange], limit: int) -> list[list[VoteChange]]:
    """Consecutive runs of ``changes`` touching at most ``limit`` distinct songs each."""
    runs: list[list[VoteChange]] = []
    current: list[VoteChange] = []
    songs: set[tuple[str, str]] = set()
    for change in changes:
        song = (change.delta.show_id, change.delta.song_id) if change.delta else None
        if song is not None and song not in songs and len(songs) == limit:
            runs.append(current)
            current, songs = [], set()
        current.append(change)
        if song is not None:
            songs.add(song)
    if current:
        runs.append(current)
    return runs


def apply_delivery(  # noqa: PLR0911 - each way a delivery stops early is its own return
    store: TallyPort,
    *,
    stream_arn: str,
    changes: Sequence[VoteChange],
    now: dt.datetime,
    time_left: Callable[[], float] = lambda: float("inf"),
    min_seconds_per_commit: float = 2.0,
) -> DeliveryOutcome:
    """Count each of ``changes`` (one shard's records, in stream order) exactly once.

    Returns how far it got. Nothing at or after ``first_unapplied`` has been counted, so the
    caller reports that record as the first failure and Lambda's replay from it is exact.
    """
    if not changes:
        return DeliveryOutcome(first_unapplied=None)
    first = changes[0].sequence_number
    try:
        marker = store.marker(stream_arn, first)
    except CircuitOpenError as exc:  # refused before sending: nothing of this delivery was counted
        return DeliveryOutcome(first_unapplied=0, error=exc)
    done = marker.applied if marker else frozenset()
    start = 0
    while start < len(changes) and changes[start].sequence_number in done:
        start += 1
    outcome = DeliveryOutcome(first_unapplied=None, skipped=start)
    if marker and start == len(changes):
        # All of this delivery was applied before; a shorter retry (bisection after a crash)
        # leaves the rest of the applied range to the next delivery: tell it.
        rest = marker.sequences[marker.sequences.index(changes[-1].sequence_number) + 1 :]
        if rest:
            store.forward(stream_arn=stream_arn, sequences=rest, now=now)
        return outcome
    lane = keys.lane_of(first)
    offset = start
    for run in chunks_by_song_count(changes[start:], MAX_SONGS_PER_COMMIT):
        if time_left() < min_seconds_per_commit:
            outcome.first_unapplied = offset
            return outcome
        deltas = summed(run)
        try:
            marker = store.commit(
                stream_arn=stream_arn,
                first_sequence=first,
                marker=marker,
                sequences=[c.sequence_number for c in run],
                deltas=deltas,
                lane=lane,
                now=now,
            )
        except CircuitOpenError as exc:
            # Refused before the request left (DynamoDB's circuit is open): like a throttled
            # commit, nothing of this run was applied.
            outcome.first_unapplied = offset
            outcome.error = exc
            return outcome
        except ClientError as exc:
            if not _definitely_not_applied(exc):
                raise  # an ambiguous outcome: let the retry of the whole delivery read the marker
            if _marker_changed(exc):
                # Another invocation is processing this very delivery: only the marker knows
                # what it applied, so fail the whole invocation and let the retry read it.
                raise ConcurrentDelivery(
                    f"delivery starting at {first} is being processed elsewhere"
                ) from exc
            outcome.first_unapplied = offset
            outcome.error = exc
            return outcome
        offset += len(run)
        outcome.commits += 1
        outcome.songs_written += len(deltas)
    return outcome


class ConcurrentDelivery(RuntimeError):
    """The delivery's marker changed under us: a duplicate invocation is applying it."""


# Errors after which DynamoDB guarantees the transaction did not happen. Anything else (a
# timeout, a 500) may have committed: only the marker can tell, so the delivery is retried.
_NOT_APPLIED_CODES = frozenset(
    {
        "TransactionCanceledException",
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ValidationException",
    }
)


def _definitely_not_applied(exc: ClientError) -> bool:
    return error_code(exc) in _NOT_APPLIED_CODES


def _marker_changed(exc: ClientError) -> bool:
    reasons: Any = exc.response.get("CancellationReasons") or []
    # The marker is always the transaction's last action.
    return bool(reasons) and reasons[-1].get("Code") == "ConditionalCheckFailed"
