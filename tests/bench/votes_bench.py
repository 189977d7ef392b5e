"""The VoteProcessor's writes, throughput and hottest partition (``make bench-votes``).

Votes are cast with the real ``VotesStore`` on one hot show, against moto in-process, tables
from template.yaml (``create_tables``): ``--votes`` toggles (default 5,000) from ``--users``
fans (default 5,000), songs picked Zipf-like (exponent 1: the top song takes 25 %) over 30
songs, 80 % of new votes up. The mix is seeded: about 82 % of toggles create a vote, 10 %
switch one (up <-> down), 8 % remove one. The votes table's real moto stream is read with
``StreamReader`` and fed to the real ``TallyBatchProcessor`` (Powertools, ``apply_delivery``,
``TallyStore``) by ``deliver_all``, the harness's model of Lambda, with the mapping's
BatchSize (100) from the template. After each run the tallies are checked against a recount
of the vote items. The seed and sizes are printed first (``votes_setup``).

Prints JSON lines:

- ``votes_writes``: write requests to the tallies table per 1,000 votes, counted by a
  botocore ``before-parameter-build`` hook on the processor's client. A hook sees one call per
  API call, before botocore's retries (moto never needs them). Two figures are reported, and
  they answer different questions:

  * *requests* (``TransactWriteItems``, ``UpdateItem``, ``PutItem``, ``BatchWriteItem``): one
    transaction with N song updates and the delivery's marker is ONE request;
  * *item writes*: every item a request writes, each song-lane update and each marker
    (markers are also given on their own). DynamoDB bills per item, not per request: a
    transactional write costs 2 WCU per KB of item, so the item writes and the write units
    are the cost figures. Write units are estimated from each item's final stored size,
    measured by a scan after the run, rounded up per KB and doubled inside transactions.

  The *minimum* is one write per song per delivered batch: the sum over batches of the
  distinct (show, song) pairs with a record in the batch. ``minimum_net`` also drops songs
  whose changes cancel out within the batch (the processor doesn't write those). *One write
  per vote* is the number of records with a change. Target: item writes (markers included)
  within 1.2x of the minimum.

- ``votes_throughput``: votes per second through the processor over the same records and
  batches, beside a naive processor written here (one ``UpdateItem ADD`` per record, no
  batching, no marker, so not exactly-once either), both fed by ``deliver_all`` in this
  process against moto. Target: at least 10x, judged on the wall-clock figures. The time spent
  inside moto is measured too (``seconds_inside_moto``: moto's request handling, wrapped with
  a timer) and the rest is given as ``client_side_*`` (Powertools, botocore, the processor).
  moto is not DynamoDB: it has no network round trip (a few ms per request on AWS, so the
  request ratio, also printed, is what decides there), and its ``TransactWriteItems`` deep-copies
  the whole table once per action before applying it, so in moto a transaction costs about as
  much per item as separate updates, and more as the table (markers included) grows.

- ``votes_hot_partition``: a hot show at 10,000 votes per second, ``--hot-votes`` toggles
  (default 30,000: 3 simulated seconds) planned as above (seed + 1, ``--hot-users`` fans). Their
  stream records come from the harness's model of the votes table (``VoteTableModel``, the
  shape the moto stream gives) rather than moto, and the real processor and ``TallyStore``
  write through a recording client that stores nothing, because moto's transactions get
  slower with every marker and 300 of them would take minutes. Exactness is checked by the
  runs above, not here. The model:

  * vote i arrives at i / 10,000 s (stream order is write order);
  * a DynamoDB stream has one shard per table partition, and an item goes to its partition's
    shard by the hash of its partition key (show + user). A table taking 10,000 writes a
    second has at least 10 partitions (1,000 WCU each), so the records are spread over
    ``--stream-shards`` shards by CRC-32 of the partition key: 10, and 100 (a table with more
    partitions: more, smaller batches, so more tally writes);
  * per shard, Lambda gathers a batch until it holds BatchSize records or the batching
    window (1 s, template) has run since its first record, and, with ParallelizationFactor 1,
    processes the shard's batches one at a time: a batch commits at
    max(its close, the previous commit + ``--processing-seconds`` (default 0.05)). Shards run
    in parallel;
  * each batch is delivered with ``deliver_all`` to the real processor, and the counter records,
    for every item written, its partition key (``TALLY#show#shard`` for tallies: 8 per show,
    lanes are sort keys in the same partition; ``CKPT#...`` for markers) at that simulated
    time.

  "Writes" are item writes: an item inside a transaction counts once per item (DynamoDB's
  per-partition limit is about 1,000 item writes, i.e. 1,000 WCU of <= 1 KB items, a
  second). The figure is the largest number of item writes to one partition key within any
  1-second interval (sliding, so it is >= a count per calendar second). Every marker has a
  key of its own, so the hottest key is a tally partition. Transactional writes cost 2 WCU
  per item (tally items are < 1 KB), so ``max_tally_wcu_per_key_in_any_second`` is given too:
  that is what DynamoDB's ~1,000 WCU/s per partition meters. Target: under 1,000 writes.

Not measured: DynamoDB's real latency, throttling, adaptive capacity or partition splits,
Lambda's cold starts and polling delays, the API side of voting (votes are written straight
through ``VotesStore``), the read path, and failures (no chaos: exactness under failures is
the property tests' business).
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import math
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mysetlist import keys
from mysetlist.models import VoteType
from mysetlist.tallies import TallyDelta, change_from_record

SONGS = 30
ZIPF_EXPONENT = 1.0
UP_SHARE = 0.8
SWITCH_SHARE = 0.10
REMOVE_SHARE = 0.08
SHOW_ID = "hot-band:2030-07-04"
VOTES_PER_SECOND = 10_000
PARTITION_WRITE_LIMIT = 1_000
WRITES_TARGET_RATIO = 1.2
THROUGHPUT_TARGET_RATIO = 10.0
WRITE_OPERATIONS = frozenset({"TransactWriteItems", "UpdateItem", "PutItem", "BatchWriteItem", "DeleteItem"})
NOW = dt.datetime(2030, 7, 4, 20, 0, tzinfo=dt.UTC)


# ------------------------------------------------------------------------------ vote model


@dataclass(frozen=True, slots=True)
class Toggle:
    user_id: str
    song_id: str
    vote_type: VoteType
    action: str  # created / switched / removed (what the toggle will do)


def zipf_weights(count: int, exponent: float) -> list[float]:
    """Weights of ranks 1..count proportional to 1 / rank ** exponent, summing to 1."""
    raw = [1.0 / (rank**exponent) for rank in range(1, count + 1)]
    total = sum(raw)
    return [w / total for w in raw]


def song_ids(count: int) -> list[str]:
    return [f"hot-band:song-{n:02d}" for n in range(count)]


def plan_toggles(rng: random.Random, *, votes: int, users: int, songs: Sequence[str]) -> list[Toggle]:
    """Seeded toggles on one show: mostly new votes (Zipf over ``songs``), some switches and
    removals of existing votes (picked uniformly among them, so hot songs get more)."""
    weights = zipf_weights(len(songs), ZIPF_EXPONENT)
    current: dict[tuple[str, str], VoteType] = {}
    voted: list[tuple[str, str]] = []  # the keys of ``current``, for uniform picks
    where: dict[tuple[str, str], int] = {}
    plan: list[Toggle] = []

    def forget(pair: tuple[str, str]) -> None:
        index = where.pop(pair)
        last = voted.pop()
        if last != pair:
            voted[index] = last
            where[last] = index

    while len(plan) < votes:
        roll = rng.random()
        if voted and roll < SWITCH_SHARE:
            pair = voted[rng.randrange(len(voted))]
            flipped = VoteType.DOWN if current[pair] is VoteType.UP else VoteType.UP
            current[pair] = flipped
            plan.append(Toggle(pair[0], pair[1], flipped, "switched"))
        elif voted and roll < SWITCH_SHARE + REMOVE_SHARE:
            pair = voted[rng.randrange(len(voted))]
            plan.append(Toggle(pair[0], pair[1], current.pop(pair), "removed"))
            forget(pair)
        else:
            pair = (f"fan{rng.randrange(users):05d}", rng.choices(songs, weights)[0])
            if pair in current:
                continue  # this fan already voted this song: draw another new vote
            vote = VoteType.UP if rng.random() < UP_SHARE else VoteType.DOWN
            current[pair] = vote
            where[pair] = len(voted)
            voted.append(pair)
            plan.append(Toggle(pair[0], pair[1], vote, "created"))
    return plan


# ------------------------------------------------------------------------------ arithmetic

Batch = Sequence[TallyDelta | None]


def distinct_songs(batch: Batch) -> int:
    """Songs with at least one change in the batch: one write each is the least possible."""
    return len({(d.show_id, d.song_id) for d in batch if d is not None})


def net_songs(batch: Batch) -> int:
    """Songs whose changes in the batch do not cancel out (the processor skips those that do)."""
    sums: dict[tuple[str, str], list[int]] = {}
    for d in batch:
        if d is not None:
            total = sums.setdefault((d.show_id, d.song_id), [0, 0])
            total[0] += d.up
            total[1] += d.down
    return sum(1 for up, down in sums.values() if up or down)


def minimum_writes(batches: Iterable[Batch]) -> int:
    """One write per song per delivered batch."""
    return sum(distinct_songs(b) for b in batches)


def lambda_batches(
    arrivals: Sequence[float], *, batch_size: int, window_seconds: float
) -> list[tuple[int, int, float]]:
    """One shard's records (arrival times, in order) cut as Lambda's poller would:
    ``(start, end, closed_at)`` per batch, closed at its ``batch_size``-th record or
    ``window_seconds`` after its first, whichever comes first."""
    batches: list[tuple[int, int, float]] = []
    start = 0
    while start < len(arrivals):
        deadline = arrivals[start] + window_seconds
        end = min(start + batch_size, bisect.bisect_right(arrivals, deadline, lo=start))
        closed = arrivals[end - 1] if end - start == batch_size else deadline
        batches.append((start, end, closed))
        start = end
    return batches


def commit_times(closed_at: Sequence[float], processing_seconds: float) -> list[float]:
    """One shard's batches run one at a time: each commits after it closed and after the
    previous one finished."""
    times: list[float] = []
    previous = -math.inf
    for closed in closed_at:
        previous = max(closed, previous + processing_seconds)
        times.append(previous)
    return times


def max_writes_in_any_second(trace: Iterable[tuple[float, str, int]]) -> tuple[int, str | None, float]:
    """The largest weight any one key receives within a 1-second interval [t, t + 1), from
    ``(time, key, writes)`` events: (writes, key, interval start)."""
    by_key: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for at, key, writes in trace:
        by_key[key].append((at, writes))
    best: tuple[int, str | None, float] = (0, None, 0.0)
    for key, events in by_key.items():
        events.sort()
        total, low = 0, 0
        for at, writes in events:
            total += writes
            while events[low][0] <= at - 1.0:
                total -= events[low][1]
                low += 1
            if total > best[0]:
                best = (total, key, events[low][0])
    return best


def item_size_bytes(item: Mapping[str, Any]) -> int:
    """DynamoDB's item size of an item in its JSON form (names plus values; numbers about
    one byte per two digits plus one)."""
    return sum(len(name.encode("utf-8")) + _value_size(value) for name, value in item.items())


def _value_size(value: Mapping[str, Any]) -> int:
    (kind, body), *_ = value.items()
    sizes: dict[str, Callable[[], int]] = {
        "S": lambda: len(str(body).encode("utf-8")),
        "N": lambda: (len(str(body).lstrip("-").replace(".", "")) + 1) // 2 + 1,
        "BOOL": lambda: 1,
        "NULL": lambda: 1,
        "L": lambda: 3 + sum(1 + _value_size(v) for v in body),
        "M": lambda: 3 + sum(1 + len(k.encode("utf-8")) + _value_size(v) for k, v in body.items()),
        "SS": lambda: sum(_value_size({"S": v}) for v in body),
        "NS": lambda: sum(_value_size({"N": v}) for v in body),
    }
    return sizes[kind]() if kind in sizes else len(body)  # B: bytes


def write_units(size_bytes: int, *, transactional: bool) -> int:
    return math.ceil(max(size_bytes, 1) / 1024) * (2 if transactional else 1)


# ------------------------------------------------------------------------------ counting


@dataclass
class WrittenItem:
    operation: str
    pk: str
    sk: str
    at: float


@dataclass
class WriteCounter:
    """Counts the write calls a DynamoDB client makes to one table (a botocore hook)."""

    table: str
    now: float = 0.0  # the simulated time stamped on each write (hot-partition run)
    requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    items: list[WrittenItem] = field(default_factory=list)

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build.dynamodb", self._seen)

    def _seen(self, params: Mapping[str, Any], model: Any, **_: Any) -> None:
        self.record(model.name, params)

    def record(self, operation: str, params: Mapping[str, Any]) -> None:
        if operation not in WRITE_OPERATIONS:
            return
        keys_written = list(self._keys(operation, params))
        if keys_written:
            self.requests[operation] += 1
            self.items += [WrittenItem(operation, pk, sk, self.now) for pk, sk in keys_written]

    def _keys(self, operation: str, params: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
        if operation == "TransactWriteItems":
            for action in params["TransactItems"]:
                for kind in ("Put", "Update", "Delete"):
                    body = action.get(kind)
                    if body and body["TableName"] == self.table:
                        key = body.get("Key") or body["Item"]
                        yield key["PK"]["S"], key["SK"]["S"]
        elif operation == "BatchWriteItem":
            for request in params["RequestItems"].get(self.table, []):
                key = (request.get("PutRequest") or {}).get("Item") or request["DeleteRequest"]["Key"]
                yield key["PK"]["S"], key["SK"]["S"]
        elif params.get("TableName") == self.table:
            key = params.get("Key") or params["Item"]
            yield key["PK"]["S"], key["SK"]["S"]

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


# ------------------------------------------------------------------------------ the runs


@dataclass
class World:
    client: Any
    streams: Any
    votes_table: str
    batch_size: int
    window_seconds: float


def _tables(world: World, prefix: str) -> dict[str, str]:
    from tests.support.template import create_tables

    return create_tables(world.client, prefix)


def _processor_invoke(client: Any, table: str, batches: list[list[TallyDelta | None]]) -> Callable[..., Any]:
    from aws_lambda_powertools.utilities.batch import process_partial_response

    from mysetlist.activity import ActivityConfig
    from mysetlist.observability import metrics
    from mysetlist.stream_batch import TallyBatchProcessor, record_handler
    from mysetlist.tallies import TallyStore
    from tests.harness.fakes import FakeQuarantine

    # As deployed: velocity and trending sums ride on the same tally updates.
    activity = ActivityConfig()
    processor = TallyBatchProcessor(
        TallyStore(client, table, marker_ttl_seconds=3600, activity=activity),
        FakeQuarantine(),
        clock=lambda: NOW,
        activity=activity,
    )

    def invoke(event: dict[str, Any]) -> Any:
        batches.append([change_from_record(r).delta for r in event["Records"]])
        try:
            return process_partial_response(event=event, record_handler=record_handler, processor=processor)
        finally:
            metrics.clear_metrics()  # never flushed outside a handler: keep stdout to JSON lines

    return invoke


def _naive_invoke(client: Any, table: str) -> Callable[..., Any]:
    from mysetlist.dynamo import to_item

    def invoke(event: dict[str, Any]) -> Any:
        for record in event["Records"]:
            delta = change_from_record(record).delta
            if delta is None:
                continue
            client.update_item(
                TableName=table,
                Key=to_item(
                    {"PK": keys.tally_pk(delta.show_id, delta.song_id), "SK": keys.tally_sk(delta.song_id, 0)}
                ),
                UpdateExpression="ADD upvotes :up, downvotes :down SET show_id = :show, song_id = :song",
                ExpressionAttributeValues=to_item(
                    {":up": delta.up, ":down": delta.down, ":show": delta.show_id, ":song": delta.song_id}
                ),
            )
        return {"batchItemFailures": []}

    return invoke


def _served(client: Any, table: str) -> dict[str, tuple[int, int]]:
    from mysetlist.tallies import TallyStore

    counts = TallyStore(client, table, marker_ttl_seconds=3600).read(SHOW_ID, now=NOW)
    return {c.song_id: (c.up, c.down) for c in counts if c.up or c.down}


def _recount(client: Any, table: str) -> dict[str, tuple[int, int]]:
    from mysetlist.votes_store import VotesStore

    return {s: c for s, c in VotesStore(client, table).recount(SHOW_ID).items() if any(c)}


def _sizes(client: Any, table: str) -> dict[tuple[str, str], int]:
    sizes: dict[tuple[str, str], int] = {}
    kwargs: dict[str, Any] = {"TableName": table}
    while True:
        page = client.scan(**kwargs)
        for item in page["Items"]:
            sizes[item["PK"]["S"], item["SK"]["S"]] = item_size_bytes(item)
        if "LastEvaluatedKey" not in page:
            return sizes
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


@dataclass
class MotoTimer:
    """Wall time spent inside moto (parsing, the backend, serialising), so that the rest, the
    client side (Powertools, botocore, the processor), can be reported on its own."""

    seconds: float = 0.0

    def __enter__(self) -> MotoTimer:
        from moto.core.botocore_stubber import BotocoreStubber

        original = BotocoreStubber.process_request
        timer = self

        def timed(stubber: Any, request: Any) -> Any:
            began = time.perf_counter()
            try:
                return original(stubber, request)
            finally:
                timer.seconds += time.perf_counter() - began

        self._original = original
        BotocoreStubber.process_request = timed  # type: ignore[method-assign, assignment]
        return self

    def __exit__(self, *_: object) -> None:
        from moto.core.botocore_stubber import BotocoreStubber

        BotocoreStubber.process_request = self._original  # type: ignore[method-assign]


def _deliver(
    records: Sequence[dict[str, Any]], invoke: Callable[..., Any], rng: random.Random, size: int
) -> None:
    from tests.harness.delivery import deliver_all

    deliver_all(records, invoke, rng=rng, batch_size=size)


def cast_votes(world: World, plan: Sequence[Toggle]) -> list[dict[str, Any]]:
    """Cast ``plan`` through VotesStore; the votes table's stream records, Lambda-shaped."""
    from mysetlist.votes_store import VotesStore
    from tests.harness.streams import StreamReader

    store = VotesStore(world.client, world.votes_table)
    arn = world.client.describe_table(TableName=world.votes_table)["Table"]["LatestStreamArn"]
    reader = StreamReader(world.streams, arn)
    for toggle in plan:
        done = store.toggle(
            show_id=SHOW_ID,
            song_id=toggle.song_id,
            user_id=toggle.user_id,
            vote_type=toggle.vote_type,
            now=NOW,
        )
        expected = {"created": "created", "switched": "updated", "removed": "removed"}[toggle.action]
        assert done.action.value == expected, (toggle, done)
    records = reader.new_records()
    assert len(records) == len(plan), (len(records), len(plan))
    return records


def writes_and_throughput(
    world: World, records: Sequence[dict[str, Any]], seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    import boto3

    tables = _tables(world, "proc-")
    tallies = tables["TalliesTable"]
    client = boto3.client("dynamodb", region_name="us-east-1")
    counter = WriteCounter(tallies)
    counter.attach(client)
    batches: list[list[TallyDelta | None]] = []
    with MotoTimer() as processor_moto:
        began = time.perf_counter()
        _deliver(records, _processor_invoke(client, tallies, batches), random.Random(seed), world.batch_size)
        processor_seconds = time.perf_counter() - began
    truth = _recount(world.client, world.votes_table)
    assert _served(world.client, tallies) == truth, "the processor's tallies differ from a recount"

    naive_tables = _tables(world, "naive-")
    naive_client = boto3.client("dynamodb", region_name="us-east-1")
    naive_counter = WriteCounter(naive_tables["TalliesTable"])
    naive_counter.attach(naive_client)
    with MotoTimer() as naive_moto:
        began = time.perf_counter()
        _deliver(
            records,
            _naive_invoke(naive_client, naive_tables["TalliesTable"]),
            random.Random(seed),
            world.batch_size,
        )
        naive_seconds = time.perf_counter() - began
    assert _served(world.client, naive_tables["TalliesTable"]) == truth, "the naive tallies differ"

    sizes = _sizes(world.client, tallies)
    votes = len(records)
    changes = sum(1 for b in batches for d in b if d is not None)
    markers = [i for i in counter.items if i.pk.startswith("CKPT#")]
    tally_items = [i for i in counter.items if i.pk.startswith("TALLY#")]
    units = sum(
        write_units(sizes[i.pk, i.sk], transactional=i.operation == "TransactWriteItems")
        for i in counter.items
    )
    marker_units = sum(
        write_units(sizes[i.pk, i.sk], transactional=i.operation == "TransactWriteItems") for i in markers
    )
    minimum = minimum_writes(batches)
    minimum_net = sum(net_songs(b) for b in batches)
    per_k = 1000 / votes

    def k(value: float) -> float:
        return round(value * per_k, 1)

    item_writes = len(counter.items)
    writes = {
        "bench": "votes_writes",
        "votes": votes,
        "records_with_a_change": changes,
        "delivered_batches": len(batches),
        "batch_size": world.batch_size,
        "per_1000_votes": {
            "requests": k(counter.total_requests),
            "requests_by_operation": {op: k(n) for op, n in sorted(counter.requests.items())},
            "item_writes": k(item_writes),
            "tally_item_writes": k(len(tally_items)),
            "marker_item_writes": k(len(markers)),
            "write_units_estimated": k(units),
            "marker_write_units_estimated": k(marker_units),
            "minimum_writes": k(minimum),
            "minimum_net_writes": k(minimum_net),
            "one_write_per_vote": k(changes),
        },
        "ratio_to_minimum": {
            "item_writes": round(item_writes / minimum, 3),
            "tally_item_writes": round(len(tally_items) / minimum, 3),
            "requests": round(counter.total_requests / minimum, 3),
            "write_units_vs_minimum_units": round(units / (2 * minimum), 3),
        },
        "marker_item_bytes_max": max((sizes[i.pk, i.sk] for i in markers), default=0),
        "tallies_exact": True,
        "target": {
            "item_writes_within_x_of_minimum": WRITES_TARGET_RATIO,
            "met": item_writes <= WRITES_TARGET_RATIO * minimum,
        },
    }
    processor_client = processor_seconds - processor_moto.seconds
    naive_client_seconds = naive_seconds - naive_moto.seconds
    speedup = naive_seconds / processor_seconds
    throughput = {
        "bench": "votes_throughput",
        "votes": votes,
        "processor": {
            "votes_per_second": round(votes / processor_seconds),
            "seconds": round(processor_seconds, 2),
            "seconds_inside_moto": round(processor_moto.seconds, 2),
            "client_side_votes_per_second": round(votes / processor_client),
            "requests": counter.total_requests + len(batches),  # + one marker GetItem per batch
            "write_requests": counter.total_requests,
        },
        "naive_one_update_per_vote": {
            "votes_per_second": round(votes / naive_seconds),
            "seconds": round(naive_seconds, 2),
            "seconds_inside_moto": round(naive_moto.seconds, 2),
            "client_side_votes_per_second": round(votes / naive_client_seconds),
            "requests": naive_counter.total_requests,
            "write_requests": naive_counter.total_requests,
        },
        "speedup": round(speedup, 1),
        "client_side_speedup": round(naive_client_seconds / processor_client, 1),
        "request_ratio": round(naive_counter.total_requests / (counter.total_requests + len(batches)), 1),
        "backend": "moto in-process (no network round trips)",
        "target": {"speedup_at_least": THROUGHPUT_TARGET_RATIO, "met": speedup >= THROUGHPUT_TARGET_RATIO},
    }
    return writes, throughput


class RecordingClient:
    """The slice of a DynamoDB client that ``TallyStore`` uses when it writes, recording the
    calls through a :class:`WriteCounter` and storing nothing (no marker is ever found)."""

    def __init__(self, counter: WriteCounter) -> None:
        self._counter = counter

    def get_item(self, **_: Any) -> dict[str, Any]:
        return {}

    def transact_write_items(self, **params: Any) -> dict[str, Any]:
        self._counter.record("TransactWriteItems", params)
        return {}

    def put_item(self, **params: Any) -> dict[str, Any]:
        self._counter.record("PutItem", params)
        return {}


def hot_records(seed: int, votes: int, users: int) -> list[dict[str, Any]]:
    """Lambda-shaped stream records of ``votes`` planned toggles, from the harness's model of
    the votes table (tests.harness.fakes.VoteTableModel)."""
    from tests.harness.fakes import VoteTableModel

    table = VoteTableModel()
    for toggle in plan_toggles(random.Random(seed), votes=votes, users=users, songs=song_ids(SONGS)):
        table.toggle(SHOW_ID, toggle.user_id, toggle.song_id, toggle.vote_type.value)
    return table.records


def hot_partition(
    records: Sequence[dict[str, Any]],
    seed: int,
    *,
    batch_size: int,
    window_seconds: float,
    stream_shards: int,
    processing_seconds: float,
) -> dict[str, Any]:
    counter = WriteCounter("hot-tallies")
    shards: list[list[tuple[float, dict[str, Any]]]] = [[] for _ in range(stream_shards)]
    for index, record in enumerate(records):
        partition_key = record["dynamodb"]["Keys"]["PK"]["S"]
        shards[keys.shard_of(partition_key, stream_shards)].append((index / VOTES_PER_SECOND, record))
    batches: list[list[TallyDelta | None]] = []
    invoke = _processor_invoke(RecordingClient(counter), counter.table, batches)
    rng = random.Random(seed)
    for shard in shards:
        cuts = lambda_batches([at for at, _ in shard], batch_size=batch_size, window_seconds=window_seconds)
        for (start, end, _), at in zip(
            cuts, commit_times([c for *_, c in cuts], processing_seconds), strict=True
        ):
            counter.now = at
            _deliver([r for _, r in shard[start:end]], invoke, rng, batch_size)
    writes, key, since = max_writes_in_any_second((i.at, i.pk, 1) for i in counter.items)
    # Tally items are < 1 KB (see votes_writes); markers are 2.5 KB but each has a key of its own.
    units, units_key, _ = max_writes_in_any_second(
        (i.at, i.pk, 2 if i.operation == "TransactWriteItems" else 1)
        for i in counter.items
        if i.pk.startswith("TALLY#")
    )
    duration = len(records) / VOTES_PER_SECOND
    by_partition: dict[str, int] = defaultdict(int)
    for item in counter.items:
        if item.pk.startswith("TALLY#"):
            by_partition[item.pk] += 1
    return {
        "bench": "votes_hot_partition",
        "seed": seed,
        "votes": len(records),
        "votes_per_second": VOTES_PER_SECOND,
        "simulated_seconds": duration,
        "stream_shards": stream_shards,
        "processing_seconds_per_batch": processing_seconds,
        "batching_window_seconds": window_seconds,
        "delivered_batches": len(batches),
        "mean_batch_size": round(len(records) / len(batches), 1),
        "tally_partitions_per_show": keys.TALLY_SHARDS,
        "tally_lanes_per_song": keys.TALLY_LANES,
        "max_item_writes_per_key_in_any_second": writes,
        "hottest_key": key,
        "hottest_interval_starts_at": round(since, 3),
        "max_tally_wcu_per_key_in_any_second": units,
        "hottest_wcu_key": units_key,
        "mean_tally_item_writes_per_second_by_partition": {
            pk.rsplit("#", 1)[1]: round(n / duration) for pk, n in sorted(by_partition.items())
        },
        "target": {"item_writes_under": PARTITION_WRITE_LIMIT, "met": writes < PARTITION_WRITE_LIMIT},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=20300704)
    parser.add_argument("--votes", type=int, default=5_000, help="votes cast in moto (writes, throughput)")
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--hot-votes", type=int, default=30_000, help="votes of the 10,000/s simulation")
    parser.add_argument("--hot-users", type=int, default=30_000)
    parser.add_argument("--stream-shards", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--processing-seconds", type=float, default=0.05)
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        os.environ.setdefault(name, value)
    from moto import mock_aws

    from tests.support.template import create_tables, default_template

    (mapping,) = [m for m in default_template().stream_mappings if m.function_id == "VoteProcessor"]
    songs = song_ids(SONGS)
    plan = plan_toggles(random.Random(args.seed), votes=args.votes, users=args.users, songs=songs)
    mix: dict[str, int] = defaultdict(int)
    for toggle in plan:
        mix[toggle.action] += 1
    print(
        json.dumps(
            {
                "bench": "votes_setup",
                "seed": args.seed,
                "votes": len(plan),
                "users": args.users,
                "songs": SONGS,
                "zipf_exponent": ZIPF_EXPONENT,
                "top_song_share": round(zipf_weights(SONGS, ZIPF_EXPONENT)[0], 3),
                "mix": dict(sorted(mix.items())),
                "batch_size": mapping.batch_size,
                "batching_window_seconds": mapping.batching_window_seconds,
            }
        ),
        flush=True,
    )
    with mock_aws():
        import boto3

        client = boto3.client("dynamodb", region_name="us-east-1")
        world = World(
            client=client,
            streams=boto3.client("dynamodbstreams", region_name="us-east-1"),
            votes_table=create_tables(client, "")["VotesTable"],
            batch_size=mapping.batch_size,
            window_seconds=mapping.batching_window_seconds,
        )
        records = cast_votes(world, plan)
        writes, throughput = writes_and_throughput(world, records, args.seed)
        print(json.dumps(writes), flush=True)
        print(json.dumps(throughput), flush=True)
    hot = hot_records(args.seed + 1, args.hot_votes, args.hot_users)
    for shards in args.stream_shards:
        row = hot_partition(
            hot,
            args.seed + 1,
            batch_size=mapping.batch_size,
            window_seconds=mapping.batching_window_seconds,
            stream_shards=shards,
            processing_seconds=args.processing_seconds,
        )
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
