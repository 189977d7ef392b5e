"""The experiments store against moto, the ExperimentsTable created from template.yaml: experiments
(conditional create, optimistic save, the admins' list and the placement index), layer slices,
sticky exposures, idempotent interactions, the counters the analysis reads (unique converters,
telescoped sums of squares, segments adding up to ``all``, the closed-day rollup) and what a
conflicting or throttled transaction does.

moto copies the whole table for every transaction: each test writes a handful of items only."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mysetlist.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unavailable
from mysetlist.experiments.assignment import AssignmentContext
from mysetlist.experiments.definitions import Action, Experiment, ExperimentIn, ExperimentPatch, Status
from mysetlist.experiments.results import results, statistical_analysis
from mysetlist.experiments.store import (
    ALL,
    EXPOSURES,
    SEGMENT_DIMENSIONS,
    CounterDelta,
    ExperimentStore,
    day_of,
    event_pk,
)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
ADMIN = "admin-1"


@pytest.fixture
def table(aws: dict[str, str]) -> str:
    return aws["ExperimentsTable"]


@pytest.fixture
def store(dynamodb: Any, table: str) -> ExperimentStore:
    return ExperimentStore(dynamodb, table, remaining_ms=lambda: None, sleep=lambda _s: None)


def slug() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def spec(**overrides: Any) -> ExperimentIn:
    body = {
        "name": "Hero copy",
        "content_type": "banner",
        "placement": slug(),
        "variants": [
            {"name": "Control", "content": {"headline": "Hi"}, "weight": 50, "is_control": True},
            {"name": "Bold", "content": {"headline": "HI!"}, "weight": 50},
        ],
        "primary_metric": {"name": "signup", "type": "proportion", "event": "conversion"},
        "guardrail_metrics": [{"name": "engagement", "type": "mean", "event": "engagement"}],
        "end_date": (NOW + dt.timedelta(days=30)).isoformat(),
    } | overrides
    return ExperimentIn.model_validate(body, context={"now": NOW})


def draft(store: ExperimentStore, **overrides: Any) -> Experiment:
    return store.create(Experiment.create(spec(**overrides), by=ADMIN, now=NOW))


def started(store: ExperimentStore, **overrides: Any) -> Experiment:
    experiment = draft(store, **overrides)
    return store.save(experiment.apply_action(Action.START, ADMIN, NOW), previous=experiment)


def context(
    subject: str, device: str = "mobile", region: str = "US", role: str = "user", user_type: str = "new"
) -> AssignmentContext:
    return AssignmentContext(subject=subject, device=device, region=region, role=role, user_type=user_type)


def cancelled(*reasons: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
            "CancellationReasons": [{"Code": reason} for reason in reasons],
        },
        "TransactWriteItems",
    )


class Faulty:
    """The moto client, with a fault before each of the next transactions: an exception raised
    instead of the call, or a callable run first (a concurrent request landing in between)."""

    def __init__(self, inner: Any, faults: list[Any]) -> None:
        self._inner = inner
        self.faults = faults
        self.transactions = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def transact_write_items(self, **kwargs: Any) -> Any:
        self.transactions += 1
        if self.faults:
            fault = self.faults.pop(0)
            if isinstance(fault, Exception):
                raise fault
            fault()
        return self._inner.transact_write_items(**kwargs)


def totals(store: ExperimentStore, experiment: Experiment, dimension: str = ALL) -> dict[Any, Any]:
    return store.counters(experiment.test_id, experiment.phase, dimension).totals()


def exact(
    store: ExperimentStore, experiment: Experiment, variant: str, metric: str
) -> tuple[int, Decimal, Decimal]:
    """The exact (Decimal) counter sums of one variant and metric over days and shards."""
    rows = store.counters(experiment.test_id, experiment.phase).rows
    n, s, q = 0, Decimal(0), Decimal(0)
    for (_day, value, row_variant, row_metric), (rn, rs, rq) in rows.items():
        if value == ALL and row_variant == variant and row_metric == metric:
            n, s, q = n + rn, s + rs, q + rq
    return n, s, q


# ---------------------------------------------------------------------------------- experiments


def test_create_get_list_and_the_running_experiments_of_a_placement(store: ExperimentStore) -> None:
    placement = slug()
    first = draft(store, placement=placement)
    second = store.create(
        Experiment.create(spec(placement=placement), by=ADMIN, now=NOW + dt.timedelta(seconds=1))
    )
    assert store.get(first.test_id) == first
    assert store.get("no-such-test") is None
    with pytest.raises(NotFound):
        store.require("no-such-test")
    with pytest.raises(Conflict, match="already exists"):
        store.create(first)

    running = store.save(second.apply_action(Action.START, ADMIN, NOW), previous=second)
    assert running.version == second.version + 1
    assert [e.test_id for e in store.running("banner", placement)] == [second.test_id]

    # The admins' list: every status, paged; a status filter keeps one; cursors stay with their list.
    seen: list[str] = []
    page = store.list(limit=2)
    while True:
        seen.extend(e.test_id for e in page.items)
        if page.next_cursor is None:
            break
        page = store.list(limit=2, cursor=page.next_cursor)
    assert len(seen) == len(set(seen))
    assert {first.test_id, second.test_id} <= set(seen)
    drafts = store.list(Status.DRAFT, limit=100).items
    assert first.test_id in [e.test_id for e in drafts]
    assert all(e.status is Status.DRAFT for e in drafts)
    assert second.test_id in [e.test_id for e in store.list(Status.RUNNING, limit=100).items]
    cursor = store.list(limit=1).next_cursor  # statuses sort descending: a running one comes first
    assert cursor is not None
    with pytest.raises(InvalidRequest, match="cursor"):
        store.list(Status.DRAFT, limit=1, cursor=cursor)
    assert [e.test_id for e in store.list("running", limit=100).items] == [
        e.test_id for e in store.list(Status.RUNNING, limit=100).items
    ]
    with pytest.raises(InvalidRequest, match="status must be one of"):
        store.list("finished")


def test_save_is_optimistic(store: ExperimentStore, dynamodb: Any, table: str) -> None:
    experiment = draft(store)
    renamed = store.save(
        experiment.apply_patch(ExperimentPatch(name="Renamed"), ADMIN, NOW), previous=experiment
    )
    assert (renamed.version, store.require(experiment.test_id).name) == (2, "Renamed")
    # A second writer still holding version 1 loses, and is told the current version.
    with pytest.raises(Conflict, match="version 1, now 2") as refused:
        store.save(experiment.apply_patch(ExperimentPatch(name="Other"), ADMIN, NOW), previous=experiment)
    assert refused.value.details["version"] == 2
    assert store.require(experiment.test_id).name == "Renamed"
    dynamodb.delete_item(TableName=table, Key={"PK": {"S": f"EXP#{experiment.test_id}"}, "SK": {"S": "META"}})
    with pytest.raises(NotFound):
        store.save(renamed.apply_patch(ExperimentPatch(name="Gone"), ADMIN, NOW), previous=renamed)


def test_layer_slices_are_reserved_resized_and_given_back(store: ExperimentStore) -> None:
    layer = slug()
    a = started(store, layer=layer, traffic_allocation=40)
    b = started(store, layer=layer, traffic_allocation=50)
    assert (a.layer_range, b.layer_range) == ((0, 4000), (4000, 9000))
    c = draft(store, layer=layer, traffic_allocation=20)
    with pytest.raises(Conflict, match="no free slice of 2000 buckets") as full:
        store.save(c.apply_action(Action.START, ADMIN, NOW), previous=c)
    assert full.value.details["held"] == {a.test_id: [0, 4000], b.test_id: [4000, 9000]}
    assert store.require(c.test_id).status is Status.DRAFT  # nothing was written

    # Pausing keeps the slice; completing gives it back, and c fits in the freed space.
    paused = store.save(a.apply_action(Action.PAUSE, ADMIN, NOW), previous=a)
    assert paused.layer_range == (0, 4000)
    done = store.save(paused.apply_action(Action.COMPLETE, ADMIN, NOW), previous=paused)
    assert done.layer_range is None
    c = store.save(c.apply_action(Action.START, ADMIN, NOW), previous=c)
    assert c.layer_range == (0, 2000)

    # A new phase that ramps b from 50% to 60% grows its slice in place: its users stay in.
    ramped = b.apply_patch(ExperimentPatch(traffic_allocation=60, new_phase=True), ADMIN, NOW)
    b2 = store.save(ramped, previous=b)
    assert b2.layer_range == (4000, 10000)
    assert dict(store.layer(layer).ranges) == {b.test_id: (4000, 10000), c.test_id: (0, 2000)}
    assert store.layer(layer).version == 5  # a, b, c refused (not written), a done, c, b ramped


# ---------------------------------------------------------------------------------- exposure


def test_exposure_is_sticky_and_counted_once_when_two_requests_race(store: ExperimentStore) -> None:
    experiment = started(store)
    caller = context("u:racer", device="desktop", region="GB")
    first, created = store.expose(experiment, caller, "control", NOW)
    # The other request decided "bold" before the first one's assignment was stored: it loses
    # the conditional put and serves what is stored.
    second, created_again = store.expose(experiment, caller, "bold", NOW)
    assert (created, created_again) == (True, False)
    assert second.variant_id == first.variant_id == "control"
    assert store.assignment(experiment.test_id, "u:racer", experiment.phase) == first
    counts = totals(store, experiment)
    assert counts[(ALL, "control", EXPOSURES)].n == 1
    assert (ALL, "bold", EXPOSURES) not in counts
    assert totals(store, experiment, "device")[("desktop", "control", EXPOSURES)].n == 1
    assert totals(store, experiment, "region")[("GB", "control", EXPOSURES)].n == 1
    (bucket,) = store.live(experiment.test_id, experiment.phase, NOW - dt.timedelta(minutes=5))
    assert (bucket.variant_id, bucket.exposures) == ("control", 1)
    with pytest.raises(ValueError, match="not a variant"):
        store.expose(experiment, context("u:other"), "no-such-variant", NOW)


# ---------------------------------------------------------------------------------- tracking


def test_track_is_idempotent_and_counts_unique_converters(store: ExperimentStore) -> None:
    experiment = started(store)
    store.expose(experiment, context("u:buyer"), "bold", NOW)
    store.expose(experiment, context("u:browser"), "bold", NOW)
    track = store.track
    first = track(experiment, "u:buyer", event_id="e-1", kind="conversion", value=None, now=NOW)
    again = track(experiment, "u:buyer", event_id="e-1", kind="conversion", value=None, now=NOW)
    later = track(experiment, "u:buyer", event_id="e-2", kind="conversion", value=None, now=NOW)
    assert (first.outcome, first.counted) == ("recorded", ("signup",))
    assert (again.outcome, again.counted) == ("duplicate", ())
    assert (later.outcome, later.counted) == ("recorded", ())  # already a converter
    assert exact(store, experiment, "bold", "signup") == (0, Decimal(1), Decimal(1))
    assert exact(store, experiment, "bold", EXPOSURES)[0] == 2
    (bucket,) = store.live(experiment.test_id, experiment.phase, NOW - dt.timedelta(minutes=5))
    assert (bucket.exposures, bucket.conversions) == (2, 2)  # events, not users

    # An event no metric uses is still recorded (idempotency, real time), and counts nothing.
    view = track(experiment, "u:browser", event_id="v-1", kind="view", value=None, now=NOW)
    assert (view.outcome, view.counted) == ("recorded", ())
    (bucket,) = store.live(experiment.test_id, experiment.phase, NOW - dt.timedelta(minutes=5))
    assert bucket.views == 1
    assert exact(store, experiment, "bold", "signup") == (0, Decimal(1), Decimal(1))


def test_track_refuses_callers_outside_the_experiment_and_bad_input(store: ExperimentStore) -> None:
    experiment = started(store)
    with pytest.raises(Forbidden, match="no assignment"):
        store.track(experiment, "u:stranger", event_id="e-1", kind="click", value=None, now=NOW)
    store.expose(experiment, context("u:member"), "control", NOW)
    for event_id, kind, value, problem in [
        ("a#b", "click", None, "event_id"),
        ("ok-1", "purchase", None, "kind"),
        ("ok-2", "engagement", float("nan"), "value"),
        ("ok-3", "engagement", 2e6, "value"),
    ]:
        with pytest.raises(InvalidRequest) as refused:
            store.track(experiment, "u:member", event_id=event_id, kind=kind, value=value, now=NOW)
        assert refused.value.details["field"] == problem


def test_mean_metric_sum_of_squares_is_the_sum_of_squared_user_totals(
    store: ExperimentStore, dynamodb: Any, table: str
) -> None:
    experiment = started(store)
    rng = random.Random(7)
    users = [f"u:reader-{i}" for i in range(5)]
    for user in users:
        store.expose(experiment, context(user), "bold", NOW)
    for i in range(12):
        user = rng.choice(users[:4])  # the fifth user never engages: a total of 0
        value = rng.choice([None, round(rng.uniform(0.5, 90.0), 2), 3])
        store.track(experiment, user, event_id=f"eng-{i}", kind="engagement", value=value, now=NOW)
    # Independently: every stored event of this experiment, per-user totals from the raw values.
    per_user: dict[str, Decimal] = defaultdict(Decimal)
    prefix = event_pk(experiment.test_id, "", "")[: -len("##")]
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=table,
        FilterExpression="begins_with(PK, :p)",
        ExpressionAttributeValues={":p": {"S": prefix + "#"}},
    )
    for page in pages:
        for item in page["Items"]:
            per_user[item["subject"]["S"]] += Decimal(item["value"]["N"]) if "value" in item else Decimal(1)
    assert sum(1 for _ in per_user) == 4
    _n, total, squares = exact(store, experiment, "bold", "engagement")
    assert total == sum(per_user.values())
    assert squares == sum(t * t for t in per_user.values())
    assert exact(store, experiment, "bold", EXPOSURES)[0] == 5
    # And the analysis reads them as n = 5 users (one at 0), mean = total / 5.
    answer = statistical_analysis(experiment, totals(store, experiment), {}, now=NOW)
    engagement = answer["metrics"][1]["comparisons"][0]
    assert engagement["n"] == 5
    assert engagement["mean"] == pytest.approx(float(total) / 5)
    json.dumps(answer, allow_nan=False)


def test_segment_counters_add_up_to_all(store: ExperimentStore) -> None:
    experiment = started(store)
    callers = [
        context("u:s1", device="mobile", region="US", role="user", user_type="new"),
        context("u:s2", device="desktop", region="DE", role="moderator", user_type="returning"),
        context("d:s3", device="tablet", region="zz", role="anonymous"),
        context("u:s4", device="mobile", region="DE", role="admin", user_type="returning"),
    ]
    for i, caller in enumerate(callers):
        variant = "control" if i % 2 else "bold"
        store.expose(experiment, caller, variant, NOW)
        store.track(experiment, caller.subject, event_id="c", kind="conversion", value=None, now=NOW)
        store.track(experiment, caller.subject, event_id="g", kind="engagement", value=1.5 * (i + 1), now=NOW)
    overall = totals(store, experiment)
    assert overall[(ALL, "bold", EXPOSURES)].n == 2
    segments = store.segment_counters(experiment.test_id, experiment.phase)
    assert set(segments) == set(SEGMENT_DIMENSIONS)
    for dimension in SEGMENT_DIMENSIONS:
        summed: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
        for (_value, variant, metric), t in segments[dimension].items():
            acc = summed[(variant, metric)]
            acc[0], acc[1], acc[2] = acc[0] + t.n, acc[1] + t.sum, acc[2] + t.sum_squares
        assert {k: tuple(v) for k, v in summed.items()} == {
            (variant, metric): (t.n, t.sum, t.sum_squares) for (_all, variant, metric), t in overall.items()
        }, dimension
    assert ("unknown", "bold", EXPOSURES) in totals(store, experiment, "region")  # 'zz' is no country
    with pytest.raises(InvalidRequest):
        store.counters(experiment.test_id, experiment.phase, "browser")


# ---------------------------------------------------------------------------------- faults


def test_a_concurrent_event_of_the_same_user_is_re_read_not_double_counted(
    store: ExperimentStore, dynamodb: Any, table: str
) -> None:
    experiment = started(store)
    store.expose(experiment, context("u:twin"), "bold", NOW)

    def racing() -> None:
        # Another request of the same user lands between our read of its total and our write.
        store.track(experiment, "u:twin", event_id="fast", kind="engagement", value=2.0, now=NOW)

    faulty: Any = Faulty(dynamodb, [racing])
    slow = ExperimentStore(faulty, table, remaining_ms=lambda: None, sleep=lambda _s: None)
    outcome = slow.track(experiment, "u:twin", event_id="slow", kind="engagement", value=5.0, now=NOW)
    assert outcome.outcome == "recorded"
    assert faulty.transactions == 2  # its first write failed on the total it had read, then re-read
    assert exact(store, experiment, "bold", "engagement") == (0, Decimal(7), Decimal(49))


def test_conflicts_and_throttling_are_retried_then_503_with_nothing_changed(
    store: ExperimentStore, dynamodb: Any, table: str
) -> None:
    experiment = started(store)
    store.expose(experiment, context("u:busy"), "control", NOW)
    transient = [
        cancelled("None", "TransactionConflict"),
        ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "TransactWriteItems"),
    ]
    faulty: Any = Faulty(dynamodb, list(transient))
    retried = ExperimentStore(faulty, table, remaining_ms=lambda: None, sleep=lambda _s: None)
    outcome = retried.track(experiment, "u:busy", event_id="t-1", kind="conversion", value=None, now=NOW)
    assert (outcome.outcome, faulty.transactions) == ("recorded", 3)

    always: Any = Faulty(dynamodb, [cancelled("None", "TransactionConflict", "None") for _ in range(10)])
    tired = ExperimentStore(always, table, attempts=4, remaining_ms=lambda: None, sleep=lambda _s: None)
    with pytest.raises(Unavailable) as busy:
        tired.track(experiment, "u:busy", event_id="t-2", kind="engagement", value=4.0, now=NOW)
    assert busy.value.details == {"retryable": True, "outcome": "unchanged"}
    assert always.transactions == 4
    stored = dynamodb.get_item(
        TableName=table,
        Key={"PK": {"S": event_pk(experiment.test_id, "u:busy", "t-2")}, "SK": {"S": "EVENT"}},
    )
    assert "Item" not in stored
    assert exact(store, experiment, "control", "engagement") == (0, Decimal(0), Decimal(0))
    # The client's retry with the same event id records it once.
    again = store.track(experiment, "u:busy", event_id="t-2", kind="engagement", value=4.0, now=NOW)
    assert again.outcome == "recorded"
    assert exact(store, experiment, "control", "engagement") == (0, Decimal(4), Decimal(16))


# ---------------------------------------------------------------------------------- reads


def test_placement_default_comes_back_exactly(store: ExperimentStore) -> None:
    placement = slug()
    assert store.get_default("banner", placement) is None
    content = {"headline": None, "ratio": 1.0, "items": [1, 2.5, {"x": None}]}
    store.put_default("banner", placement, content, ADMIN, NOW)
    stored = store.get_default("banner", placement)
    assert stored is not None
    assert json.dumps(stored.content) == json.dumps(content)
    assert (stored.updated_by, stored.updated_at) == (ADMIN, NOW)


def test_closed_days_are_read_from_the_rollup_and_a_bulk_load_rebuilds_it(store: ExperimentStore) -> None:
    experiment = started(store)
    today = NOW.replace(hour=12, minute=0, second=0)
    days = [day_of(today - dt.timedelta(days=back)) for back in (3, 2, 1, 0)]

    def cell(day: str, shard: int, metric: str, **amounts: Any) -> CounterDelta:
        return CounterDelta(
            experiment.test_id, experiment.phase, ALL, shard, day, "bold", metric, ALL, **amounts
        )

    store.add_counters(
        [cell(day, shard, EXPOSURES, n=10 + shard) for day in days for shard in (0, 5)]
        + [cell(day, 5, "signup", sum=Decimal(3), sum_squares=Decimal(3)) for day in days]
    )
    first = store.counters(experiment.test_id, experiment.phase, now=today)
    assert (first.items_read, first.rolled_through) == (12, None)  # every cell, then the rollup
    second = store.counters(experiment.test_id, experiment.phase, now=today)
    assert second.rolled_through == days[2]  # yesterday is closed, today is not
    assert second.items_read == 1 + 3  # the rollup, and today's three cells
    assert second.rows == first.rows
    assert second.totals()[(ALL, "bold", EXPOSURES)].n == 4 * 25
    assert second.daily_exposures() == {day: {"bold": 25} for day in days}
    # A bulk load into a closed day drops the rollup: the next read is exact again.
    store.add_counters([cell(days[0], 3, EXPOSURES, n=7)])
    third = store.counters(experiment.test_id, experiment.phase, now=today)
    assert third.rolled_through is None
    assert third.totals()[(ALL, "bold", EXPOSURES)].n == 4 * 25 + 7
    assert store.counters(experiment.test_id, experiment.phase, now=today).totals() == third.totals()


def test_the_analysis_reads_what_the_store_counted(store: ExperimentStore) -> None:
    experiment = started(store, minimum_detectable_effect=0.2)
    for i in range(6):
        variant = "control" if i < 3 else "bold"
        store.expose(experiment, context(f"u:a{i}"), variant, NOW)
        if i in (0, 3, 4):
            store.track(experiment, f"u:a{i}", event_id="buy", kind="conversion", value=None, now=NOW)
    counters = store.counters(experiment.test_id, experiment.phase)
    answer = json.loads(json.dumps(results(experiment, counters.totals(), now=NOW), allow_nan=False))
    by_id = {v["variant_id"]: v for v in answer["variants"]}
    assert (by_id["control"]["sample_size"], by_id["control"]["conversions"]) == (3, 1)
    assert (by_id["bold"]["sample_size"], by_id["bold"]["conversions"]) == (3, 2)
    assert by_id["bold"]["improvement_percentage"] == pytest.approx(100.0)
    analysis = statistical_analysis(experiment, counters.totals(), counters.daily_exposures(), now=NOW)
    assert analysis["daily_exposures"] == [
        {"day": day_of(NOW), "variants": {"control": 3, "bold": 3}, "total": 6}
    ]
