"""DynamoDB access for A/B tests (the ExperimentsTable): experiments, placement defaults, layer
ranges, sticky assignments, idempotent interactions and the counters the analysis reads. Only this
module (and ``Experiment.to_item`` for the experiment item) knows the item shapes
(docs/data-model.md, "ExperimentsTable").

| item | PK | SK |
|---|---|---|
| experiment | ``EXP#<test_id>`` | ``META`` (GSI1 by placement and status, GSI2 by status and creation) |
| placement default | ``PLACEMENT#<type>#<placement>`` | ``DEFAULT`` |
| layer | ``LAYER#<layer>`` | ``RANGES`` (``ranges``: test_id -> [lo, hi), ``version``) |
| assignment | ``ASSIGN#<test_id>#<subject>`` | ``PHASE#<phase>`` (variant, segment, shard, ``m_<metric>``) |
| interaction | ``EVENT#<test_id>#<subject>#<event_id>`` | ``EVENT`` (TTL 30 days) |
| counter | ``COUNT#<test_id>#<phase>#<dimension>#<shard>`` | ``<yyyy-mm-dd>#<variant_id>#<metric>#<value>`` |
| counter rollup | ``ROLLUP#<test_id>#<phase>#<dimension>`` | ``ROLLUP`` (``through``: last closed day; ``rows``: JSON) |
| live minute | ``LIVE#<test_id>#<phase>#<shard>`` | ``<yyyy-mm-ddThh:mm>#<variant_id>`` (TTL 2 days) |

Why this shape:

* Results come from counters (``n``, ``sum``, ``sum_squares``) that every exposure and interaction
  adds to in the same transaction as the fact itself (the assignment, the event), so an analysis
  reads a number of items bounded by days x variants x metrics x shards, never the interactions:
  ten million interactions answer like a thousand. A counter's partition key carries the dimension
  (``all`` or a segment dimension) and one of ``shards`` shards (the subject's), so a busy
  experiment spreads its writes, and a dimension is one ``Query`` per shard.
* A day's counters stop changing once the day is over (plus a grace period for requests in
  flight), so the reads fold the closed days into one rollup item per phase and dimension (exact
  decimal sums as JSON text) and query only the open days' cells: an analysis reads one item and
  at most a day or two of cells, however long the experiment has run.
* ``sum_squares`` must be the sum over users of the square of each user's total (what the
  engine's variances need), but a user's total grows event by event. The assignment keeps each
  user's total of every mean metric, and an event moving it from x to x + v adds v to ``sum`` and
  (x + v)^2 - x^2 to ``sum_squares``: the additions telescope to exactly the square of the final
  total. The assignment update is conditioned on the total it read, so two concurrent events of
  one user cannot both add against the same x (the loser re-reads and retries). A proportion's
  state is 1 once the user converted: only the first event of its kind counts (unique converters).
* An interaction's event id is its idempotency key: the event item is put on condition that it
  does not exist, in the same transaction as the counters, so a retried request (the client's, or
  ours after a conflict) counts once.
* Faults degrade, never lose data: a transaction that conflicts or is throttled is rebuilt from a
  fresh read and retried a bounded number of times with jittered backoff, then
  :class:`~mysetlist.errors.Unavailable` says nothing was changed and the client retries
  (idempotent by event id); a server error whose outcome is unknown says so.

Event values are rounded to ``VALUE_DECIMALS`` places and bounded by ``MAX_EVENT_VALUE`` so that
per-user totals, their squares and their sums over millions of users stay within DynamoDB's 38
significant digits (an ``ADD`` past them would fail, and a float would not be exact).
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from mysetlist.breaker import CircuitOpenError
from mysetlist.dynamo import (
    THROTTLING_CODES,
    error_code,
    from_item,
    raise_unavailable_for,
    to_item,
    unavailable_for_open_circuit,
    unavailable_on_throttle,
)
from mysetlist.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unavailable
from mysetlist.experiments.assignment import (
    COUNTER_SHARDS,
    UNKNOWN,
    AssignmentContext,
    resize_range,
    shard_of,
)
from mysetlist.experiments.definitions import (
    ACTIVE_STATUSES,
    EXPERIMENT_SK,
    EXPERIMENTS_PARTITION,
    LAYER_BUCKETS,
    EventKind,
    Experiment,
    MetricSpec,
    MetricType,
    Status,
    experiment_pk,
    placement_pk,
)
from mysetlist.models import Page
from mysetlist.observability import metrics, remaining_time_ms
from mysetlist.pagination import decode_cursor, encode_cursor
from mysetlist.retry import pause_before_retry
from mysetlist.timestamps import parse_utc

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

WHAT = "the experiments store"
PLACEMENT_INDEX = "GSI1"
LIST_INDEX = "GSI2"
DEFAULT_SK = "DEFAULT"
RANGES_SK = "RANGES"
EVENT_SK = "EVENT"
ROLLUP_SK = "ROLLUP"
# A day's counters are final this long after the day ends (a request's transaction, retries
# included, lands within the Lambda's timeout): from then on they are read from the rollup.
ROLLUP_GRACE = dt.timedelta(minutes=15)
# The rollup is one item (DynamoDB: 400 KB); a longer one is not stored (reads stay exact).
MAX_ROLLUP_BYTES = 300_000
# The dimensions of segment analysis: the assignment's segment holds one value for each.
SEGMENT_DIMENSIONS: tuple[str, ...] = ("device", "region", "role", "user_type")
ALL = "all"
EXPOSURES = "exposures"
# Interactions are kept this long for idempotency (a client retries within minutes, not weeks).
EVENT_RETENTION = dt.timedelta(days=30)
# Minute buckets feed the last hour's metrics: two days is plenty.
LIVE_RETENTION = dt.timedelta(days=2)
# Per-event values: rounded to this many decimals and at most this large in magnitude, so that a
# user's total squared and summed over ten million users keeps within 38 significant digits.
VALUE_DECIMALS = 4
MAX_EVENT_VALUE = 1_000_000
_QUANTUM = Decimal(1).scaleb(-VALUE_DECIMALS)
# Transactions that conflict (a user's concurrent events, a layer changed by another start) or
# are throttled are tried this many times in all, with full-jitter backoff, then 503.
WRITE_ATTEMPTS = 5
# Live buckets count events of each kind under these attribute names.
LIVE_KIND_ATTRIBUTES: Mapping[str, str] = {
    EventKind.VIEW.value: "views",
    EventKind.CLICK.value: "clicks",
    EventKind.CONVERSION.value: "conversions",
    EventKind.ENGAGEMENT.value: "engagements",
}
LIVE_FIELDS: tuple[str, ...] = ("exposures", *LIVE_KIND_ATTRIBUTES.values(), "value_sum")
# Subjects and event ids become parts of keys joined by '#': none may hold one.
_KEY_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._@+=-]{0,199}")
# Cancellation reasons after which the same transaction, rebuilt from a fresh read, may succeed.
_RETRYABLE_REASONS = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"}
)
_RETRYABLE_CODES = THROTTLING_CODES | {"TransactionConflictException", "TransactionInProgressException"}
_COUNTER_NAMES = {"#n": "n", "#s": "sum", "#q": "sum_squares"}


# ---------------------------------------------------------------------------------- keys


def layer_pk(layer: str) -> str:
    return f"LAYER#{layer}"


def assignment_pk(test_id: str, subject: str) -> str:
    return f"ASSIGN#{test_id}#{subject}"


def phase_sk(phase: int) -> str:
    return f"PHASE#{phase}"


def event_pk(test_id: str, subject: str, event_id: str) -> str:
    return f"EVENT#{test_id}#{subject}#{event_id}"


def counter_pk(test_id: str, phase: int, dimension: str, shard: int) -> str:
    return f"COUNT#{test_id}#{phase}#{dimension}#{shard}"


def counter_sk(day: str, variant_id: str, metric: str, value: str) -> str:
    return f"{day}#{variant_id}#{metric}#{value}"


def rollup_pk(test_id: str, phase: int, dimension: str) -> str:
    return f"ROLLUP#{test_id}#{phase}#{dimension}"


def live_pk(test_id: str, phase: int, shard: int) -> str:
    return f"LIVE#{test_id}#{phase}#{shard}"


def live_sk(minute: str, variant_id: str) -> str:
    return f"{minute}#{variant_id}"


def day_of(moment: dt.datetime) -> str:
    """The UTC day a counter adds to: ``yyyy-mm-dd``."""
    return moment.astimezone(dt.UTC).date().isoformat()


def minute_of(moment: dt.datetime) -> str:
    """The UTC minute a live bucket adds to: ``yyyy-mm-ddThh:mm``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M")


def iso(moment: dt.datetime) -> str:
    """A stored timestamp: ISO 8601 in UTC with microseconds (sorts as text)."""
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def check_key_part(value: str, field_name: str) -> str:
    """``value`` if it can be part of a key (1 to 200 safe characters, no '#'); 400 otherwise."""
    if not isinstance(value, str) or not _KEY_PART.fullmatch(value):
        raise InvalidRequest(
            f"{field_name} must be 1 to 200 letters, digits or :._@+=- (starting with a letter or digit)",
            details={"field": field_name},
        )
    return value


def event_amount(value: float | None) -> Decimal | None:
    """An event's value as stored and counted: rounded to ``VALUE_DECIMALS`` places (exact from
    then on); 400 for a value that is not a finite number within +-``MAX_EVENT_VALUE``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest("value must be a finite number", details={"field": "value"})
    if abs(value) > MAX_EVENT_VALUE:
        raise InvalidRequest(
            f"value must be between -{MAX_EVENT_VALUE} and {MAX_EVENT_VALUE}", details={"field": "value"}
        )
    return Decimal(str(value)).quantize(_QUANTUM).normalize() + 0  # + 0: no "-0"


def segment_of(context: AssignmentContext) -> dict[str, str]:
    """The stored segment: one value per :data:`SEGMENT_DIMENSIONS` (the context has normalised
    them to known values or ``unknown``, so a header cannot create counter items of its own);
    anything unusable in a key becomes ``unknown``."""
    values = context.segment()
    segment = {}
    for dimension in SEGMENT_DIMENSIONS:
        text = str(values.get(dimension) or "")
        segment[dimension] = text if text and "#" not in text and len(text) <= 64 else UNKNOWN
    return segment


# ---------------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Assignment:
    """A subject's sticky variant in one phase, with its per-metric state: 1 once converted
    (proportion metrics) or the running total of the user's values (mean metrics)."""

    test_id: str
    subject: str
    phase: int
    variant_id: str
    segment: Mapping[str, str]
    shard: int
    exposed_at: dt.datetime
    state: Mapping[str, Decimal] = field(default_factory=dict)

    def item(self) -> dict[str, Any]:
        return {
            "PK": assignment_pk(self.test_id, self.subject),
            "SK": phase_sk(self.phase),
            "type": "assignment",
            "test_id": self.test_id,
            "subject": self.subject,
            "phase": self.phase,
            "variant_id": self.variant_id,
            "segment": dict(self.segment),
            "shard": self.shard,
            "exposed_at": iso(self.exposed_at),
        }

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> Assignment:
        """From DynamoDB attribute values; the metric states stay exact Decimals (the next
        update's condition compares them)."""
        item = from_item({k: v for k, v in raw.items() if not k.startswith("m_")})
        state = {k[2:]: Decimal(v["N"]) for k, v in raw.items() if k.startswith("m_") and "N" in v}
        return cls(
            test_id=str(item["test_id"]),
            subject=str(item["subject"]),
            phase=int(item["phase"]),
            variant_id=str(item["variant_id"]),
            segment={str(k): str(v) for k, v in (item.get("segment") or {}).items()},
            shard=int(item["shard"]),
            exposed_at=parse_utc(str(item["exposed_at"])),
            state=state,
        )


@dataclass(frozen=True, slots=True)
class PlacementDefault:
    """What a placement serves when no running experiment includes the caller."""

    content_type: str
    placement: str
    content: dict[str, Any]
    updated_by: str | None
    updated_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class LayerRanges:
    """The bucket slices ``[lo, hi)`` held in a layer by its running or paused experiments."""

    layer: str
    ranges: Mapping[str, tuple[int, int]]
    version: int  # 0: the layer item does not exist yet


@dataclass(frozen=True, slots=True)
class Tracked:
    """The outcome of recording an interaction: ``recorded`` (counted now) or ``duplicate`` (this
    event id was recorded before: nothing changed). ``counted`` names the metrics whose counters
    moved (a proportion moves only on a user's first event of its kind)."""

    outcome: Literal["recorded", "duplicate"]
    variant_id: str
    counted: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Totals:
    """A variant's aggregate: users exposed (``n``, on the ``exposures`` metric) or the sum and sum
    of squares of the per-user values of a metric."""

    n: int
    sum: float
    sum_squares: float


@dataclass(frozen=True, slots=True)
class CounterDelta:
    """One counter's change (what a write adds to one counter item)."""

    test_id: str
    phase: int
    dimension: str
    shard: int
    day: str
    variant_id: str
    metric: str
    value: str
    n: int = 0
    sum: Decimal = Decimal(0)
    sum_squares: Decimal = Decimal(0)


# A counter row: (day, dimension value, variant_id, metric) -> (n, sum, sum_squares).
CounterKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class Counters:
    """One phase's counters of one dimension summed over the shards, exactly (Decimal), per
    (day, dimension value, variant, metric). ``items_read`` is what the read cost (the rollup
    counts as one item)."""

    dimension: str
    rows: Mapping[CounterKey, tuple[int, Decimal, Decimal]]
    items_read: int = 0
    rolled_through: str | None = None  # the last day read from the rollup (None: no rollup yet)

    def totals(self) -> dict[tuple[str, str, str], Totals]:
        """``{(value, variant_id, metric): Totals}`` over every day (the sums are exact until the
        final conversion to float)."""
        sums: dict[tuple[str, str, str], tuple[int, Decimal, Decimal]] = {}
        for (_day, value, variant, metric), (n, total, squares) in self.rows.items():
            key = (value, variant, metric)
            acc_n, acc_s, acc_q = sums.get(key, (0, Decimal(0), Decimal(0)))
            sums[key] = (acc_n + n, acc_s + total, acc_q + squares)
        return {key: Totals(n, float(s), float(q)) for key, (n, s, q) in sums.items()}

    def daily_exposures(self, value: str = ALL) -> dict[str, dict[str, int]]:
        """Users first exposed per UTC day and variant, ``{day: {variant_id: n}}`` in day order."""
        days: dict[str, dict[str, int]] = {}
        for (day, row_value, variant, metric), (n, _s, _q) in sorted(self.rows.items()):
            if metric == EXPOSURES and row_value == value:
                per_day = days.setdefault(day, {})
                per_day[variant] = per_day.get(variant, 0) + n
        return days


@dataclass(frozen=True, slots=True)
class LiveBucket:
    """One minute of one variant, summed over the shards: users first exposed, events by kind and
    the sum of the events' values."""

    minute: str
    variant_id: str
    exposures: int
    views: int
    clicks: int
    conversions: int
    engagements: int
    value_sum: float


# ---------------------------------------------------------------------------------- the store


class ExperimentStore:
    """The ExperimentsTable (see the module docstring). Throttling and server errors become
    :class:`~mysetlist.errors.Unavailable`, saying whether anything may have changed.

    ``attempts`` bounds the tries of a conflicting or throttled transaction; ``remaining_ms``
    (the invocation's time left) and ``sleep`` shape the backoff between them."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        shards: int = COUNTER_SHARDS,
        *,
        attempts: int = WRITE_ATTEMPTS,
        remaining_ms: Callable[[], int | None] = remaining_time_ms,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if shards < 1:
            raise ValueError("shards must be at least 1")
        self._db = client
        self._table = table
        self.shards = shards
        self._attempts = max(1, attempts)
        self._remaining_ms = remaining_ms
        self._sleep = sleep

    # ------------------------------------------------------------------ experiments
    def create(self, experiment: Experiment) -> Experiment:
        """Store a new experiment; 409 when its test id is taken."""
        try:
            with unavailable_on_throttle(WHAT):
                self._db.put_item(
                    TableName=self._table,
                    Item=experiment.to_item(),
                    ConditionExpression="attribute_not_exists(PK)",
                )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            raise Conflict(
                f"an experiment with test_id {experiment.test_id!r} already exists",
                details={"test_id": experiment.test_id},
            ) from None
        return experiment

    def get(self, test_id: str) -> Experiment | None:
        """An experiment by id (strongly consistent), None when there is none."""
        with unavailable_on_throttle(WHAT):
            response = self._db.get_item(
                TableName=self._table,
                Key=to_item({"PK": experiment_pk(test_id), "SK": EXPERIMENT_SK}),
                ConsistentRead=True,
            )
        raw = response.get("Item")
        return Experiment.from_item(raw) if raw else None

    def require(self, test_id: str) -> Experiment:
        """An experiment by id; 404 when there is none."""
        experiment = self.get(test_id)
        if experiment is None:
            raise NotFound(f"no experiment with test_id {test_id!r}", details={"test_id": test_id})
        return experiment

    def list(
        self, status: Status | str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[Experiment]:
        """Experiments for admins from GSI2 (one partition: experiments are few), by status then
        newest first; ``status`` keeps one status. ``limit`` is clamped to 1..100. 400 for an
        unknown status, or a cursor of another list (or another status)."""
        if status is not None and not isinstance(status, Status):
            try:
                status = Status(status)
            except ValueError:
                raise InvalidRequest(
                    f"status must be one of {', '.join(s.value for s in Status)}, got {status!r}",
                    details={"field": "status"},
                ) from None
        prefix = f"{status.value}#" if status is not None else ""
        start = decode_cursor(
            cursor, expect={"PK": "", "SK": "", "GSI2PK": EXPERIMENTS_PARTITION, "GSI2SK": ""}
        )
        if start is not None and not str(start["GSI2SK"]["S"]).startswith(prefix):
            raise InvalidRequest(
                "cursor does not belong to this list: pass next_cursor with the same filters"
            )
        values: dict[str, Any] = {":pk": EXPERIMENTS_PARTITION}
        condition = "GSI2PK = :pk"
        if prefix:
            values[":prefix"] = prefix
            condition += " AND begins_with(GSI2SK, :prefix)"
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": LIST_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": to_item(values),
            "ScanIndexForward": False,
            "Limit": max(1, min(limit, 100)),
        }
        if start:
            request["ExclusiveStartKey"] = start
        with unavailable_on_throttle(WHAT):
            response = self._db.query(**request)
        items = [Experiment.from_item(raw) for raw in response.get("Items", [])]
        last: Any = response.get("LastEvaluatedKey")
        return Page[Experiment](items=items, next_cursor=encode_cursor(last))

    def running(self, content_type: str, placement: str) -> builtins.list[Experiment]:
        """The running experiments of a placement (GSI1, eventually consistent: a start is served
        within about a second), in test id order. Whether each is live now (dates, layer slice)
        is ``Experiment.is_live``."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": PLACEMENT_INDEX,
            "KeyConditionExpression": "GSI1PK = :pk AND begins_with(GSI1SK, :running)",
            "ExpressionAttributeValues": to_item(
                {":pk": placement_pk(content_type, placement), ":running": f"{Status.RUNNING.value}#"}
            ),
        }
        found: builtins.list[Experiment] = []
        while True:
            with unavailable_on_throttle(WHAT):
                response = self._db.query(**request)
            found.extend(Experiment.from_item(raw) for raw in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return found
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def save(self, updated: Experiment, *, previous: Experiment) -> Experiment:
        """Replace ``previous`` by ``updated`` as version ``previous.version + 1``, on condition that
        the stored version is still ``previous.version`` (409 naming the stored version
        otherwise; 404 when it is gone). Returns the experiment as stored.

        The layer follows in the same transaction: a layered experiment that is running or paused
        holds a slice of ``layer_width`` buckets of its layer (the first free one when it starts;
        resized in place when a new phase changes the allocation; 409 when the layer has no room),
        and gives it back when it is completed, archived or back to draft. A concurrent change of
        the layer item (another experiment starting) makes the transaction re-read and retry.
        """
        for attempt in range(self._attempts):
            layer_actions, stored = self._layer_plan(updated, previous)
            actions: builtins.list[dict[str, Any]] = [
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": stored.to_item(),
                        "ConditionExpression": "version = :seen",
                        "ExpressionAttributeValues": to_item({":seen": previous.version}),
                    }
                },
                *layer_actions,
            ]
            try:
                self._transact(actions)
                return stored
            except ClientError as exc:
                reasons = _reasons(exc)
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    raise self._stale(previous) from None
                if not self._retryable(exc, reasons, conditional_from=1):
                    raise
            if not self._pause(attempt):
                break
        raise _busy("the experiment")

    def layer(self, layer: str) -> LayerRanges:
        """The slices a layer's experiments hold (strongly consistent)."""
        with unavailable_on_throttle(WHAT):
            response = self._db.get_item(
                TableName=self._table,
                Key=to_item({"PK": layer_pk(layer), "SK": RANGES_SK}),
                ConsistentRead=True,
            )
        raw = response.get("Item")
        if not raw:
            return LayerRanges(layer, {}, 0)
        item = from_item(raw)
        ranges = {str(k): (int(v[0]), int(v[1])) for k, v in (item.get("ranges") or {}).items()}
        return LayerRanges(layer, ranges, int(item.get("version", 0)))

    # ------------------------------------------------------------------ placement defaults
    def get_default(self, content_type: str, placement: str) -> PlacementDefault | None:
        """The placement's default content, None when none was set."""
        with unavailable_on_throttle(WHAT):
            response = self._db.get_item(
                TableName=self._table,
                Key=to_item({"PK": placement_pk(content_type, placement), "SK": DEFAULT_SK}),
            )
        raw = response.get("Item")
        if not raw:
            return None
        item = from_item(raw)
        updated_at = item.get("updated_at")
        return PlacementDefault(
            content_type=content_type,
            placement=placement,
            content=json.loads(str(item["content_json"])),
            updated_by=item.get("updated_by"),
            updated_at=parse_utc(str(updated_at)) if updated_at else None,
        )

    def put_default(
        self, content_type: str, placement: str, content: Mapping[str, Any], by: str, now: dt.datetime
    ) -> PlacementDefault:
        """Set the placement's default content. It is kept as JSON text: nulls and numbers come
        back exactly as given, which a DynamoDB map would not do (it drops nulls, 1.0 becomes 1)."""
        stored = PlacementDefault(content_type, placement, dict(content), by, now)
        with unavailable_on_throttle(WHAT):
            self._db.put_item(
                TableName=self._table,
                Item=to_item(
                    {
                        "PK": placement_pk(content_type, placement),
                        "SK": DEFAULT_SK,
                        "type": "placement_default",
                        "content_type": content_type,
                        "placement": placement,
                        "content_json": json.dumps(stored.content, separators=(",", ":"), allow_nan=False),
                        "updated_by": by,
                        "updated_at": iso(now),
                    }
                ),
            )
        return stored

    # ------------------------------------------------------------------ assignments
    def assignment(self, test_id: str, subject: str, phase: int) -> Assignment | None:
        """A subject's stored assignment in a phase (strongly consistent), None when not exposed."""
        with unavailable_on_throttle(WHAT):
            response = self._db.get_item(
                TableName=self._table,
                Key=to_item({"PK": assignment_pk(test_id, subject), "SK": phase_sk(phase)}),
                ConsistentRead=True,
            )
        raw = response.get("Item")
        return Assignment.from_raw(raw) if raw else None

    def expose(
        self, experiment: Experiment, context: AssignmentContext, variant_id: str, now: dt.datetime
    ) -> tuple[Assignment, bool]:
        """Store the caller's first exposure in the current phase and count it, atomically: the
        assignment (on condition it does not exist yet), the exposures counters (``all`` and each
        segment dimension, the subject's shard, today) and the live minute.

        Returns the stored assignment and whether this call created it. When another request
        stored one first (a race between two of the caller's requests), that one is returned and
        nothing is counted twice: once stored, a user's variant never changes within the phase.
        ValueError when ``variant_id`` is not a variant of the current phase (a caller's bug).
        """
        subject = check_key_part(context.subject, "subject")
        phase = experiment.phase
        if variant_id not in {v.variant_id for v in experiment.current_variants}:
            raise ValueError(f"{variant_id!r} is not a variant of phase {phase} of {experiment.test_id!r}")
        assignment = Assignment(
            test_id=experiment.test_id,
            subject=subject,
            phase=phase,
            variant_id=variant_id,
            segment=segment_of(context),
            shard=shard_of(subject, self.shards),
            exposed_at=now,
        )
        actions: builtins.list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": to_item(assignment.item()),
                    "ConditionExpression": "attribute_not_exists(PK)",
                }
            },
            *({"Update": self.counter_update(d)} for d in _deltas(assignment, day_of(now), EXPOSURES, n=1)),
            {"Update": self._live_update(assignment, now, {"exposures": Decimal(1)})},
        ]
        for attempt in range(self._attempts):
            try:
                self._transact(actions)
                return assignment, True
            except ClientError as exc:
                reasons = _reasons(exc)
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    stored = self.assignment(experiment.test_id, subject, phase)
                    if stored is not None:
                        return stored, False
                elif not self._retryable(exc, reasons):
                    raise
            if not self._pause(attempt):
                break
        raise _busy("the exposure")

    # ------------------------------------------------------------------ interactions
    def track(
        self,
        experiment: Experiment,
        subject: str,
        *,
        event_id: str,
        kind: EventKind | str,
        value: float | None,
        now: dt.datetime,
    ) -> Tracked:
        """Record one interaction of an exposed subject in the current phase, once per
        ``event_id``: the event, the subject's metric states, the counters of every metric fed by
        this kind of event (``all`` and each segment dimension, the subject's shard, today) and
        the live minute, in one transaction. An event of a kind no metric uses still records the
        event and the live minute.

        403 when the subject has no assignment in the current phase (only users in the experiment
        record interactions: a new phase needs a new exposure); 400 for a bad id, kind or value;
        503 (nothing changed: retry with the same event id) after ``attempts`` conflicting or
        throttled tries. A repeated event id is ``duplicate`` whatever its kind and value.
        """
        check_key_part(subject, "subject")
        check_key_part(event_id, "event_id")
        try:
            event = EventKind(kind)
        except ValueError:
            raise InvalidRequest(
                f"kind must be one of {', '.join(k.value for k in EventKind)}", details={"field": "kind"}
            ) from None
        amount = event_amount(value)
        metrics = experiment.metrics_for(event)
        for attempt in range(self._attempts):
            assignment = self.assignment(experiment.test_id, subject, experiment.phase)
            if assignment is None:
                raise Forbidden(
                    f"no assignment in experiment {experiment.test_id!r} (phase {experiment.phase}): "
                    "interactions are recorded only for callers served one of its variants",
                    details={"test_id": experiment.test_id, "phase": experiment.phase},
                )
            changes = _metric_changes(assignment.state, metrics, amount)
            actions = self._track_actions(assignment, event_id, event, amount, changes, now)
            try:
                self._transact(actions)
                return Tracked("recorded", assignment.variant_id, tuple(c.metric for c in changes))
            except ClientError as exc:
                reasons = _reasons(exc)
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return Tracked("duplicate", assignment.variant_id)
                # A failed condition on the assignment (action 1): another event of this user
                # moved its state since we read it. Re-read and rebuild.
                if not self._retryable(exc, reasons, conditional_from=1):
                    raise
            if not self._pause(attempt):
                break
        raise _busy("the interaction")

    def _track_actions(
        self,
        assignment: Assignment,
        event_id: str,
        kind: EventKind,
        amount: Decimal | None,
        changes: Sequence[_MetricChange],
        now: dt.datetime,
    ) -> builtins.list[dict[str, Any]]:
        """The event put (first: its failed condition means duplicate), the assignment's state
        update (second, conditioned on the state read), the counters and the live minute."""
        event = {
            "PK": event_pk(assignment.test_id, assignment.subject, event_id),
            "SK": EVENT_SK,
            "type": "event",
            "test_id": assignment.test_id,
            "subject": assignment.subject,
            "event_id": event_id,
            "phase": assignment.phase,
            "variant_id": assignment.variant_id,
            "kind": kind.value,
            "value": amount,
            "at": iso(now),
            "expires_at": int((now + EVENT_RETENTION).timestamp()),
        }
        actions: builtins.list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": to_item(event),
                    "ConditionExpression": "attribute_not_exists(PK)",
                }
            }
        ]
        if changes:
            names: dict[str, str] = {}
            values: dict[str, Any] = {}
            sets, conditions = [], ["attribute_exists(PK)"]
            for i, change in enumerate(changes):
                names[f"#m{i}"] = f"m_{change.metric}"
                values[f":new{i}"] = change.after
                sets.append(f"#m{i} = :new{i}")
                if change.before is None:
                    conditions.append(f"attribute_not_exists(#m{i})")
                else:
                    values[f":seen{i}"] = change.before
                    conditions.append(f"#m{i} = :seen{i}")
            key = {
                "PK": assignment_pk(assignment.test_id, assignment.subject),
                "SK": phase_sk(assignment.phase),
            }
            actions.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": to_item(key),
                        "UpdateExpression": "SET " + ", ".join(sets),
                        "ConditionExpression": " AND ".join(conditions),
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": to_item(values),
                    }
                }
            )
            day = day_of(now)
            for change in changes:
                deltas = _deltas(assignment, day, change.metric, total=change.sum, squares=change.sum_squares)
                actions.extend({"Update": self.counter_update(d)} for d in deltas)
        live: dict[str, Decimal] = {LIVE_KIND_ATTRIBUTES[kind.value]: Decimal(1)}
        if amount is not None:
            live["value_sum"] = amount
        actions.append({"Update": self._live_update(assignment, now, live)})
        return actions

    # ------------------------------------------------------------------ counters
    def counter_update(self, delta: CounterDelta) -> dict[str, Any]:
        """The ``Update`` that adds ``delta`` to its counter item: the one write every counter
        change goes through (exposures and interactions inside their transactions, bulk loads
        through :meth:`add_counters`)."""
        adds: builtins.list[str] = []
        values: dict[str, Any] = {}
        for placeholder, amount in (("#n", delta.n), ("#s", delta.sum), ("#q", delta.sum_squares)):
            if amount:
                adds.append(f"{placeholder} :{placeholder[1:]}")
                values[f":{placeholder[1:]}"] = amount
        if not adds:  # a zero change still creates the cell, so that reads see it
            adds, values = ["#n :n"], {":n": 0}
        return {
            "TableName": self._table,
            "Key": to_item(
                {
                    "PK": counter_pk(delta.test_id, delta.phase, delta.dimension, delta.shard),
                    "SK": counter_sk(delta.day, delta.variant_id, delta.metric, delta.value),
                }
            ),
            "UpdateExpression": "ADD " + ", ".join(adds),
            "ExpressionAttributeNames": {a.split(" ")[0]: _COUNTER_NAMES[a.split(" ")[0]] for a in adds},
            "ExpressionAttributeValues": to_item(values),
        }

    def add_counters(self, deltas: Iterable[CounterDelta]) -> int:
        """Apply counter changes, one ``UpdateItem`` each (bulk loads and repairs: the request
        paths add theirs inside their transactions), then drop the rollups of what they touched
        (a bulk load may add to days already rolled up). Returns the number of writes."""
        written = 0
        touched: set[tuple[str, int, str]] = set()
        for delta in deltas:
            with unavailable_on_throttle(WHAT):
                self._db.update_item(**self.counter_update(delta))
            touched.add((delta.test_id, delta.phase, delta.dimension))
            written += 1
        self._drop_rollups(touched)
        return written

    def counters(
        self, test_id: str, phase: int, dimension: str = ALL, *, now: dt.datetime | None = None
    ) -> Counters:
        """A phase's counters of one dimension (``all`` or a segment dimension), summed over the
        shards, exactly.

        Days that closed (``ROLLUP_GRACE`` after their end, at ``now``: no write can still add to
        them) come from the phase's rollup item, one JSON attribute; the open days from one
        strongly consistent ``Query`` per shard partition (``SK >=`` the first day after the
        rollup), run concurrently. So a read costs one item plus at most a day or two of counter
        cells, whatever the experiment's length and volume. When the rollup lags the closed days,
        this read brings it up to date (a conditional put; losing the race to another reader, or
        a throttled put, changes nothing: the answer is exact either way).
        """
        if dimension != ALL and dimension not in SEGMENT_DIMENSIONS:
            raise InvalidRequest(
                f"dimension must be one of {', '.join((ALL, *SEGMENT_DIMENSIONS))}",
                details={"field": "dimension"},
            )
        at = now or dt.datetime.now(dt.UTC)
        rollup = self._rollup(test_id, phase, dimension)
        rows: dict[CounterKey, tuple[int, Decimal, Decimal]] = dict(rollup.rows) if rollup else {}
        since = _next_day(rollup.through) if rollup else None
        partitions = [counter_pk(test_id, phase, dimension, shard) for shard in range(self.shards)]
        items_read = 1 if rollup else 0
        for raw_items in self._query_partitions(partitions, _COUNTER_NAMES, since=since):
            for raw in raw_items:
                items_read += 1
                day, variant, metric, value = raw["SK"]["S"].split("#", 3)
                key = (day, value, variant, metric)
                n, total, squares = rows.get(key, (0, Decimal(0), Decimal(0)))
                rows[key] = (
                    n + int(_number(raw, "n")),
                    total + _number(raw, "sum"),
                    squares + _number(raw, "sum_squares"),
                )
        closed = day_of(at - ROLLUP_GRACE - dt.timedelta(days=1))
        if rollup is None or rollup.through < closed:
            self._write_rollup(test_id, phase, dimension, closed, rows, rollup)
        return Counters(dimension, rows, items_read, rollup.through if rollup else None)

    def segment_counters(
        self, test_id: str, phase: int, *, now: dt.datetime | None = None
    ) -> dict[str, dict[tuple[str, str, str], Totals]]:
        """``{dimension: totals}`` for every segment dimension (what ``segment_analysis`` reads)."""
        return {d: self.counters(test_id, phase, d, now=now).totals() for d in SEGMENT_DIMENSIONS}

    def variant_counts(
        self, test_id: str, phase: int, dimension: str = ALL
    ) -> dict[tuple[str, str, str], Totals]:
        """``{(value, variant_id, metric): Totals}`` of a phase and dimension, over days and shards."""
        return self.counters(test_id, phase, dimension).totals()

    def live(self, test_id: str, phase: int, since: dt.datetime) -> builtins.list[LiveBucket]:
        """Minute buckets from ``since``'s minute on, per variant, summed over the shards, in time
        order (then variant)."""
        partitions = [live_pk(test_id, phase, shard) for shard in range(self.shards)]
        names = {f"#f{i}": name for i, name in enumerate(LIVE_FIELDS)}
        sums: dict[tuple[str, str], dict[str, Decimal]] = {}
        for raw_items in self._query_partitions(partitions, names, since=minute_of(since)):
            for raw in raw_items:
                minute, variant = raw["SK"]["S"].rsplit("#", 1)
                acc = sums.setdefault((minute, variant), dict.fromkeys(LIVE_FIELDS, Decimal(0)))
                for name in LIVE_FIELDS:
                    acc[name] += _number(raw, name)
        return [
            LiveBucket(
                minute=minute,
                variant_id=variant,
                exposures=int(acc["exposures"]),
                views=int(acc["views"]),
                clicks=int(acc["clicks"]),
                conversions=int(acc["conversions"]),
                engagements=int(acc["engagements"]),
                value_sum=float(acc["value_sum"]),
            )
            for (minute, variant), acc in sorted(sums.items())
        ]

    # ------------------------------------------------------------------ plumbing
    def _rollup(self, test_id: str, phase: int, dimension: str) -> _Rollup | None:
        with unavailable_on_throttle(WHAT):
            response = self._db.get_item(
                TableName=self._table,
                Key=to_item({"PK": rollup_pk(test_id, phase, dimension), "SK": ROLLUP_SK}),
                ConsistentRead=True,
            )
        raw = response.get("Item")
        if not raw:
            return None
        rows = {
            (day, value, variant, metric): (int(n), Decimal(total), Decimal(squares))
            for day, value, variant, metric, n, total, squares in json.loads(raw["rows"]["S"])
        }
        return _Rollup(raw["through"]["S"], rows)

    def _write_rollup(
        self,
        test_id: str,
        phase: int,
        dimension: str,
        through: str,
        rows: Mapping[CounterKey, tuple[int, Decimal, Decimal]],
        previous: _Rollup | None,
    ) -> None:
        """Store the rows of the days up to ``through`` (closed) as the phase's rollup, on
        condition that it did not move since it was read. Best effort: the rollup only saves
        reads, so a lost race, throttling or a rollup too large for one item changes nothing."""
        closed = sorted(
            [day, value, variant, metric, n, str(total), str(squares)]
            for (day, value, variant, metric), (n, total, squares) in rows.items()
            if day <= through
        )
        text = json.dumps(closed, separators=(",", ":"))
        if len(text) > MAX_ROLLUP_BYTES:
            return
        request: dict[str, Any] = {
            "TableName": self._table,
            "Item": to_item(
                {
                    "PK": rollup_pk(test_id, phase, dimension),
                    "SK": ROLLUP_SK,
                    "type": "counter_rollup",
                    "through": through,
                    "rows": text,
                }
            ),
        }
        if previous is None:
            request["ConditionExpression"] = "attribute_not_exists(PK)"
        else:
            request["ConditionExpression"] = "through = :seen"
            request["ExpressionAttributeValues"] = to_item({":seen": previous.through})
        try:
            self._db.put_item(**request)
        except ClientError as exc:
            if (
                error_code(exc) != "ConditionalCheckFailedException"
                and error_code(exc) not in THROTTLING_CODES
            ):
                raise_unavailable_for(exc, WHAT)
                raise
        except CircuitOpenError:
            return

    def _drop_rollups(self, cells: Iterable[tuple[str, int, str]]) -> None:
        """Forget the rollups of ``(test_id, phase, dimension)``: their counters changed outside
        the request paths (a bulk load may add to closed days); the next read rebuilds them."""
        for test_id, phase, dimension in sorted(set(cells)):
            with unavailable_on_throttle(WHAT):
                self._db.delete_item(
                    TableName=self._table,
                    Key=to_item({"PK": rollup_pk(test_id, phase, dimension), "SK": ROLLUP_SK}),
                )

    def _query_partitions(
        self, partitions: Sequence[str], names: Mapping[str, str], *, since: str | None = None
    ) -> builtins.list[builtins.list[dict[str, Any]]]:
        """Every item of each partition (all pages; only the sort key and the ``names``
        attributes), one list per partition; the partitions are queried concurrently (botocore
        clients are thread-safe), so the read costs one round trip, not one per shard."""

        def one(pk: str) -> builtins.list[dict[str, Any]]:
            values: dict[str, Any] = {":pk": pk}
            condition = "PK = :pk"
            if since is not None:
                values[":since"] = since
                condition += " AND SK >= :since"
            request: dict[str, Any] = {
                "TableName": self._table,
                "KeyConditionExpression": condition,
                "ExpressionAttributeValues": to_item(values),
                "ProjectionExpression": ", ".join(("SK", *names)),
                "ExpressionAttributeNames": dict(names),
                "ConsistentRead": True,
            }
            items: builtins.list[dict[str, Any]] = []
            while True:
                with unavailable_on_throttle(WHAT):
                    response = self._db.query(**request)
                items.extend(response.get("Items", []))
                if "LastEvaluatedKey" not in response:
                    return items
                request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

        if len(partitions) <= 1:
            return [one(pk) for pk in partitions]
        with ThreadPoolExecutor(
            max_workers=len(partitions), thread_name_prefix="experiment-counters"
        ) as pool:
            return builtins.list(pool.map(one, partitions))

    def _live_update(
        self, assignment: Assignment, now: dt.datetime, adds: Mapping[str, Decimal]
    ) -> dict[str, Any]:
        names = {f"#a{i}": name for i, name in enumerate(adds)}
        values: dict[str, Any] = {f":a{i}": amount for i, amount in enumerate(adds.values())}
        values[":ttl"] = int((now + LIVE_RETENTION).timestamp())
        return {
            "TableName": self._table,
            "Key": to_item(
                {
                    "PK": live_pk(assignment.test_id, assignment.phase, assignment.shard),
                    "SK": live_sk(minute_of(now), assignment.variant_id),
                }
            ),
            "UpdateExpression": "ADD "
            + ", ".join(f"#a{i} :a{i}" for i in range(len(adds)))
            + " SET expires_at = :ttl",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": to_item(values),
        }

    def _layer_plan(
        self, updated: Experiment, previous: Experiment
    ) -> tuple[builtins.list[dict[str, Any]], Experiment]:
        """The layer writes :meth:`save` needs, and the experiment as it will be stored.

        An active (running or paused) layered experiment keeps the slice it holds while its width
        still matches the allocation; a new width resizes it in place where the neighbours leave
        room (``resize_range``: a ramp keeps its users), else moves it to the first free slice;
        a first start reserves the first free slice. Leaving the active statuses gives it back.
        Each layer item written is conditioned on the version read."""
        active = bool(updated.layer) and updated.status in ACTIVE_STATUSES
        width = updated.layer_width
        held = _range(previous.layer_range) if previous.layer else None
        if active and held is not None and updated.layer == previous.layer and held[1] - held[0] == width:
            return [], updated.model_copy(update={"version": previous.version + 1, "layer_range": held})
        touched: dict[str, tuple[LayerRanges, dict[str, tuple[int, int]]]] = {}
        for name in (previous.layer if held is not None else None, updated.layer if active else None):
            if name and name not in touched:
                current = self.layer(name)
                touched[name] = (current, dict(current.ranges))
        wanted: tuple[int, int] | None = None
        if active and updated.layer:
            ranges = touched[updated.layer][1]
            wanted = resize_range(ranges, updated.test_id, width)
            if wanted is None:
                raise _layer_full(updated.layer, ranges, width, updated.test_id)
            ranges[updated.test_id] = wanted
        for name, (_current, ranges) in touched.items():
            if not active or name != updated.layer:
                ranges.pop(updated.test_id, None)
        actions = [
            self._layer_put(name, ranges, current.version)
            for name, (current, ranges) in touched.items()
            if dict(current.ranges) != ranges
        ]
        return actions, updated.model_copy(update={"version": previous.version + 1, "layer_range": wanted})

    def _layer_put(self, layer: str, ranges: Mapping[str, tuple[int, int]], version: int) -> dict[str, Any]:
        """The whole layer item, on condition that nobody changed it since it was read."""
        put: dict[str, Any] = {
            "TableName": self._table,
            "Item": to_item(
                {
                    "PK": layer_pk(layer),
                    "SK": RANGES_SK,
                    "type": "layer",
                    "layer": layer,
                    "ranges": {k: [lo, hi] for k, (lo, hi) in ranges.items()},
                    "version": version + 1,
                }
            ),
        }
        if version == 0:
            put["ConditionExpression"] = "attribute_not_exists(PK)"
        else:
            put["ConditionExpression"] = "version = :seen"
            put["ExpressionAttributeValues"] = to_item({":seen": version})
        return {"Put": put}

    def _stale(self, previous: Experiment) -> Exception:
        current = self.get(previous.test_id)
        if current is None:
            return NotFound(
                f"no experiment with test_id {previous.test_id!r}", details={"test_id": previous.test_id}
            )
        return Conflict(
            f"experiment {previous.test_id!r} changed since it was read (version {previous.version}, now "
            f"{current.version}): read it again and reapply the change",
            details={"test_id": previous.test_id, "version": current.version, "seen": previous.version},
        )

    def _transact(self, actions: Sequence[dict[str, Any]]) -> None:
        # botocore gives the request an idempotency token and keeps it across its own retries, so
        # a retry after a lost response does not apply the transaction twice.
        try:
            self._db.transact_write_items(TransactItems=builtins.list(actions))  # type: ignore[arg-type]
        except CircuitOpenError as exc:
            raise unavailable_for_open_circuit(exc, WHAT) from exc

    def _retryable(
        self, exc: ClientError, reasons: Sequence[str], *, conditional_from: int | None = None
    ) -> bool:
        """Whether a failed transaction may succeed when rebuilt from a fresh read: a conflict or
        throttling, or a failed condition at an action index >= ``conditional_from`` (optimistic
        state). Raises :class:`Unavailable` for a server error (its outcome is unknown)."""
        code = error_code(exc)
        if code == "TransactionCanceledException":
            for index, reason in enumerate(reasons):
                if reason in _RETRYABLE_REASONS:
                    return True
                if (
                    reason == "ConditionalCheckFailed"
                    and conditional_from is not None
                    and index >= conditional_from
                ):
                    return True
            return False
        if code in _RETRYABLE_CODES:
            return True
        raise_unavailable_for(exc, WHAT)
        return False

    def _pause(self, attempt: int) -> bool:
        """Sleep the jittered backoff before the next try; False when no try is left (or no time)."""
        if attempt + 1 >= self._attempts:
            return False
        if self._sleep is None:
            return pause_before_retry(attempt, remaining_ms=self._remaining_ms)
        return pause_before_retry(attempt, remaining_ms=self._remaining_ms, sleep=self._sleep)


# ---------------------------------------------------------------------------------- helpers


@dataclass(frozen=True, slots=True)
class _MetricChange:
    """One metric's move for one user: its state before (None: never set) and after, and what
    that adds to the counters."""

    metric: str
    before: Decimal | None
    after: Decimal
    sum: Decimal
    sum_squares: Decimal


def _metric_changes(
    state: Mapping[str, Decimal], metrics: Iterable[MetricSpec], amount: Decimal | None
) -> list[_MetricChange]:
    """The counters an event moves: a proportion on the user's first event of its kind (+1, +1);
    a mean by the event's value v (1 when none) with the user's total x -> x + v: sum += v,
    sum_squares += (x + v)^2 - x^2, so that the squares telescope to the final total squared."""
    changes = []
    for metric in metrics:
        before = state.get(metric.name)
        if metric.type is MetricType.PROPORTION:
            if before is None or before < 1:
                changes.append(_MetricChange(metric.name, before, Decimal(1), Decimal(1), Decimal(1)))
            continue
        step = amount if amount is not None else Decimal(1)
        x = before if before is not None else Decimal(0)
        after = x + step
        changes.append(_MetricChange(metric.name, before, after, step, after * after - x * x))
    return changes


def _deltas(
    assignment: Assignment,
    day: str,
    metric: str,
    *,
    n: int = 0,
    total: Decimal = Decimal(0),
    squares: Decimal = Decimal(0),
) -> list[CounterDelta]:
    """The same change for the ``all`` counter and the counter of each segment dimension."""
    cells = [(ALL, ALL), *((d, assignment.segment.get(d, UNKNOWN)) for d in SEGMENT_DIMENSIONS)]
    return [
        CounterDelta(
            test_id=assignment.test_id,
            phase=assignment.phase,
            dimension=dimension,
            shard=assignment.shard,
            day=day,
            variant_id=assignment.variant_id,
            metric=metric,
            value=value,
            n=n,
            sum=total,
            sum_squares=squares,
        )
        for dimension, value in cells
    ]


@dataclass(frozen=True, slots=True)
class _Rollup:
    """The counters of every closed day up to ``through``, summed over the shards."""

    through: str
    rows: Mapping[CounterKey, tuple[int, Decimal, Decimal]]


def _next_day(day: str) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()


def _range(value: Any) -> tuple[int, int] | None:
    if not value:
        return None
    lo, hi = value
    return int(lo), int(hi)


def _number(raw: Mapping[str, Any], name: str) -> Decimal:
    value = raw.get(name)
    return Decimal(value["N"]) if value and "N" in value else Decimal(0)


def _reasons(exc: ClientError) -> list[str]:
    """The cancellation reason code of each action of a cancelled transaction (empty otherwise)."""
    if error_code(exc) != "TransactionCanceledException":
        return []
    reasons: Any = exc.response.get("CancellationReasons") or []
    return [str((reason or {}).get("Code") or "None") for reason in reasons]


def _layer_full(layer: str, ranges: Mapping[str, tuple[int, int]], width: int, test_id: str) -> Conflict:
    others = {k: v for k, v in ranges.items() if k != test_id}
    used = sum(hi - lo for lo, hi in others.values())
    return Conflict(
        f"layer {layer!r} has no free slice of {width} buckets for experiment {test_id!r} ({used} of "
        f"{LAYER_BUCKETS} are held by {len(others)} other experiment(s)): lower the traffic allocation, "
        "or complete an experiment of the layer first",
        details={"layer": layer, "needed": width, "held": {k: list(v) for k, v in others.items()}},
    )


def _busy(what: str) -> Unavailable:
    # Operators see it on the dashboard: sustained, it means a counter shard is too hot.
    metrics.add_metric(name="ExperimentWritesGivenUp", unit=MetricUnit.Count, value=1)
    return Unavailable(
        f"{what} was not recorded: too many concurrent changes; retry shortly (nothing was changed)",
        details={"retryable": True, "outcome": "unchanged"},
    )
