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

The same updates carry each song's *activity* (``mysetlist.activity``): per-minute vote counts
for the velocity window and the trending score's per-era sums, so both are exactly-once with
the tallies and cost no extra write. A vote that is quarantined or rejected by moderation
counts in none of them: the stream record of the flag is a -1 like a removal.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from mysetlist import keys
from mysetlist.activity import (
    ActivityConfig,
    VoteState,
    activity_of,
    is_trend_attribute,
    minute_attribute,
    song_activity,
    stale_minutes,
    trend_attribute,
)
from mysetlist.breaker import CircuitOpenError
from mysetlist.dynamo import error_code, from_item, to_item, unavailable_on_throttle
from mysetlist.signals import UNCOUNTED_STATES
from mysetlist.timestamps import epoch_of

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

MARKER_SK = "CKPT"
# DynamoDB transactions take at most 100 actions: up to 99 songs and the marker.
MAX_SONGS_PER_COMMIT = 99


@dataclass(frozen=True, slots=True)
class TallyDelta:
    """A song's change: up and down votes, and (when activity is kept) per-minute vote counts
    for the velocity window and per-era trending sums (see ``mysetlist.activity``)."""

    show_id: str
    song_id: str
    up: int
    down: int
    minutes: Mapping[int, int] = field(default_factory=dict)
    trend: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VoteChange:
    """One stream record, reduced to what tallies need. ``delta`` is None for no-op writes and
    for unreadable records (``problem`` says why; they are quarantined, not counted). ``old``
    and ``new`` are the counted states of the vote before and after (None: not counted)."""

    sequence_number: str
    delta: TallyDelta | None
    problem: str | None = None
    old: VoteState | None = None
    new: VoteState | None = None


def _counted_state(image: Mapping[str, Any] | None, fallback_at: float) -> VoteState | None:
    """The vote an image holds, if it counts (an up or down vote not held by moderation)."""
    if not image:
        return None
    vote = (image.get("vote_type") or {}).get("S")
    if vote not in ("up", "down"):
        return None
    if (image.get("moderation") or {}).get("S") in UNCOUNTED_STATES:
        return None
    stamp = (image.get("updated_at") or image.get("created_at") or {}).get("S")
    return VoteState(vote, epoch_of(stamp) if stamp else fallback_at)


def change_from_record(record: Mapping[str, Any]) -> VoteChange:
    """The tally change carried by one Lambda DynamoDB-stream record (raises on a malformed one)."""
    body = record["dynamodb"]
    sequence = str(body["SequenceNumber"])
    old, new = body.get("OldImage"), body.get("NewImage")
    image = new or old
    if not image:
        raise ValueError(f"record {sequence} has no image: the stream must be NEW_AND_OLD_IMAGES")
    show_id, song_id = image["show_id"]["S"], image["song_id"]["S"]
    written_at = float(body.get("ApproximateCreationDateTime") or 0.0)
    before, after = _counted_state(old, written_at), _counted_state(new, written_at)
    up = (after is not None and after.vote_type == "up") - (before is not None and before.vote_type == "up")
    down = (after is not None and after.vote_type == "down") - (
        before is not None and before.vote_type == "down"
    )
    delta = TallyDelta(show_id, song_id, up, down) if (up or down) else None
    return VoteChange(sequence, delta, old=before, new=after)


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
    vote_velocity: float = 0.0  # votes per minute over the sliding window
    trending_score: float = 0.0
    trend: Mapping[int, int] = field(default_factory=dict, compare=False)  # per-era sums


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

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        marker_ttl_seconds: int,
        activity: ActivityConfig | None = None,
    ) -> None:
        self._db = client
        self._table = table
        self._marker_ttl = marker_ttl_seconds
        self.activity = activity or ActivityConfig()

    def read(
        self, show_id: str, *, consistent: bool = False, now: dt.datetime | None = None
    ) -> list[SongTallyCount]:
        """A show's tallies per song: its shard partitions queried, lanes summed (the
        reconciler's repair lane included), with each song's velocity and trending score at
        ``now``. ``consistent`` reads strongly consistently."""
        items: dict[str, list[Mapping[str, Any]]] = {}
        for pk in keys.tally_partitions(show_id):
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "KeyConditionExpression": "PK = :pk",
                "ExpressionAttributeValues": to_item({":pk": pk}),
                "ConsistentRead": consistent,
            }
            while True:
                with unavailable_on_throttle("the tallies"):
                    response = self._db.query(**kwargs)
                for raw in response.get("Items", []):
                    item = from_item(raw)
                    # Trending sums are exact integers: keep every digit.
                    item.update({k: v["N"] for k, v in raw.items() if is_trend_attribute(k) and "N" in v})
                    items.setdefault(item["song_id"], []).append(item)
                if "LastEvaluatedKey" not in response:
                    break
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        at = (now or dt.datetime.now(dt.UTC)).timestamp()
        counts = []
        for song, lanes in items.items():
            velocity, trend, score = song_activity(lanes, at, self.activity)
            counts.append(
                SongTallyCount(
                    song,
                    sum(int(lane.get("upvotes", 0)) for lane in lanes),
                    sum(int(lane.get("downvotes", 0)) for lane in lanes),
                    vote_velocity=velocity,
                    trending_score=score,
                    trend=trend,
                )
            )
        return counts

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
        actions: list[dict[str, Any]] = [{"Update": self._tally_update(d, lane, now)} for d in deltas]
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

    def _tally_update(self, delta: TallyDelta, lane: int, now: dt.datetime) -> dict[str, Any]:
        """One song's update: counts, its activity attributes, and the velocity minutes that
        have left the window removed (so an item keeps a handful of them)."""
        adds = ["upvotes :up", "downvotes :down"]
        names: dict[str, str] = {}
        values: dict[str, Any] = {
            ":up": delta.up,
            ":down": delta.down,
            ":show": delta.show_id,
            ":song": delta.song_id,
            ":now": now.isoformat(),
        }
        for minute, count in sorted(delta.minutes.items()):
            names[f"#m{minute}"] = minute_attribute(minute)
            values[f":m{minute}"] = count
            adds.append(f"#m{minute} :m{minute}")
        for era, amount in sorted(delta.trend.items()):
            names[f"#t{era}"] = trend_attribute(era, self.activity)
            values[f":t{era}"] = amount
            adds.append(f"#t{era} :t{era}")
        expression = f"ADD {', '.join(adds)} SET show_id = :show, song_id = :song, updated_at = :now"
        if self.activity.keep_activity:
            stale = [m for m in stale_minutes(now.timestamp(), self.activity) if m not in delta.minutes]
            for minute in stale:
                names[f"#r{minute}"] = minute_attribute(minute)
            if stale:
                expression += " REMOVE " + ", ".join(f"#r{minute}" for minute in stale)
        update: dict[str, Any] = {
            "TableName": self._table,
            "Key": to_item(
                {"PK": keys.tally_pk(delta.show_id, delta.song_id), "SK": keys.tally_sk(delta.song_id, lane)}
            ),
            "UpdateExpression": expression,
            "ExpressionAttributeValues": to_item(values),
        }
        if names:
            update["ExpressionAttributeNames"] = names
        return update

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


def summed(
    changes: Sequence[VoteChange], activity: ActivityConfig | None = None, now: dt.datetime | None = None
) -> list[TallyDelta]:
    """Per (show, song), the sum of the changes' deltas (with ``activity``, their per-minute
    counts inside the velocity window at ``now`` and their per-era trending sums too); songs
    whose sum is all zero are dropped."""
    sums: dict[tuple[str, str], list[int]] = {}
    minutes: dict[tuple[str, str], dict[int, int]] = {}
    trend: dict[tuple[str, str], dict[int, int]] = {}
    at = (now or dt.datetime.now(dt.UTC)).timestamp()
    for change in changes:
        if change.delta is None:
            continue
        song = (change.delta.show_id, change.delta.song_id)
        total = sums.setdefault(song, [0, 0])
        total[0] += change.delta.up
        total[1] += change.delta.down
        if activity is not None and activity.keep_activity:
            activity_of(
                change.old, change.new, at, activity, minutes.setdefault(song, {}), trend.setdefault(song, {})
            )
    result = []
    for song, (up, down) in sums.items():
        song_minutes = {m: n for m, n in minutes.get(song, {}).items() if n}
        song_trend = {e: v for e, v in trend.get(song, {}).items() if v}
        if up or down or song_minutes or song_trend:
            result.append(TallyDelta(song[0], song[1], up, down, song_minutes, song_trend))
    return result


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
    activity: ActivityConfig | None = None,
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
        deltas = summed(run, activity, now)
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
