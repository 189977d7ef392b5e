"""The tally processor's counting logic, against a fake store (no network)."""

import datetime as dt
import random

import pytest
from aws_lambda_powertools.utilities.batch import process_partial_response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mysetlist.breaker import CircuitOpenError
from mysetlist.stream_batch import TallyBatchProcessor, record_handler
from mysetlist.tallies import (
    MAX_SONGS_PER_COMMIT,
    TallyDelta,
    VoteChange,
    apply_delivery,
    change_from_record,
    chunks_by_song_count,
    summed,
)
from tests.harness.delivery import deliver_all
from tests.harness.fakes import FakeQuarantine, FakeTallyStore, LostResponse, VoteTableModel

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def records_of(*ops):
    table = VoteTableModel()
    for op in ops:
        table.toggle(*op)
    return table


def test_each_kind_of_record_changes_the_tally_by_new_minus_old():
    table = records_of(
        ("s", "u", "song", "up"),  # INSERT up
        ("s", "u", "song", "down"),  # MODIFY up -> down
        ("s", "u", "song", "down"),  # REMOVE down
    )
    deltas = [change_from_record(r).delta for r in table.records]
    assert deltas == [
        TallyDelta("s", "song", 1, 0),
        TallyDelta("s", "song", -1, 1),
        TallyDelta("s", "song", 0, -1),
    ]


def test_a_write_that_keeps_the_vote_is_a_no_op():
    table = records_of(("s", "u", "song", "up"))
    record = table.records[0]
    record["dynamodb"]["OldImage"] = record["dynamodb"]["NewImage"]
    assert change_from_record(record).delta is None


def test_a_record_without_images_is_malformed():
    table = records_of(("s", "u", "song", "up"))
    del table.records[0]["dynamodb"]["NewImage"]
    with pytest.raises(ValueError, match="NEW_AND_OLD_IMAGES"):
        change_from_record(table.records[0])


def test_deltas_are_summed_per_song_and_zero_sums_dropped():
    changes = [
        VoteChange("1", TallyDelta("s", "a", 1, 0)),
        VoteChange("2", TallyDelta("s", "b", 0, 1)),
        VoteChange("3", None),
        VoteChange("4", TallyDelta("s", "a", 1, 0)),
        VoteChange("5", TallyDelta("s", "b", 0, -1)),
    ]
    assert summed(changes) == [TallyDelta("s", "a", 2, 0)]


def test_runs_never_exceed_the_transaction_song_limit_and_keep_order():
    changes = [VoteChange(str(i), TallyDelta("s", f"song{i % 150}", 1, 0)) for i in range(300)]
    runs = chunks_by_song_count(changes, MAX_SONGS_PER_COMMIT)
    assert [c for run in runs for c in run] == changes
    assert all(len({c.delta.song_id for c in run if c.delta}) <= MAX_SONGS_PER_COMMIT for run in runs)


def test_one_write_per_song_per_batch():
    table = records_of(*[("s", f"u{i}", f"song{i % 3}", "up") for i in range(90)])
    store = FakeTallyStore()
    changes = [change_from_record(r) for r in table.records]
    outcome = apply_delivery(store, stream_arn=table.stream_arn, changes=changes, now=NOW)
    assert outcome.first_unapplied is None
    assert (store.commits, store.tally_writes) == (1, 3)
    assert store.totals() == table.recount()


def test_a_redelivered_batch_counts_once():
    table = records_of(*[("s", f"u{i}", "song", "up") for i in range(10)])
    store = FakeTallyStore()
    changes = [change_from_record(r) for r in table.records]
    apply_delivery(store, stream_arn=table.stream_arn, changes=changes, now=NOW)
    again = apply_delivery(store, stream_arn=table.stream_arn, changes=changes, now=NOW)
    assert again.skipped == 10
    assert again.commits == 0
    assert store.totals() == {("s", "song"): (10, 0)}


def test_a_shorter_retry_after_a_lost_response_hands_the_rest_on():
    # The commit lands, its response is lost, Lambda bisects: [0..4] then [5..9].
    table = records_of(*[("s", f"u{i}", "song", "up") for i in range(10)])
    faults = iter(["lost_response"])
    store = FakeTallyStore(fault=lambda: next(faults, None))
    changes = [change_from_record(r) for r in table.records]
    with pytest.raises(LostResponse):
        apply_delivery(store, stream_arn=table.stream_arn, changes=changes, now=NOW)
    first_half = apply_delivery(store, stream_arn=table.stream_arn, changes=changes[:5], now=NOW)
    second_half = apply_delivery(store, stream_arn=table.stream_arn, changes=changes[5:], now=NOW)
    assert (first_half.skipped, second_half.skipped) == (5, 5)
    assert store.totals() == {("s", "song"): (10, 0)}


def test_a_refused_commit_reports_the_first_record_not_counted():
    table = records_of(*[("s", f"u{i}", f"song{i}", "up") for i in range(120)])
    faults = iter([None, "throttle"])
    store = FakeTallyStore(fault=lambda: next(faults, None))
    changes = [change_from_record(r) for r in table.records]
    outcome = apply_delivery(store, stream_arn=table.stream_arn, changes=changes, now=NOW)
    assert outcome.first_unapplied == MAX_SONGS_PER_COMMIT
    assert sum(u for u, _ in store.totals().values()) == MAX_SONGS_PER_COMMIT


def test_an_open_dynamodb_circuit_is_a_refusal_nothing_of_that_run_counted():
    table = records_of(*[("s", f"u{i}", f"song{i}", "up") for i in range(120)])
    faults = iter([None, "circuit_open"])
    store = FakeTallyStore(fault=lambda: next(faults, None))
    changes = [change_from_record(r) for r in table.records]
    outcome = apply_delivery(store, stream_arn=table.stream_arn, changes=changes, now=NOW)
    assert outcome.first_unapplied == MAX_SONGS_PER_COMMIT
    assert isinstance(outcome.error, CircuitOpenError)
    assert sum(u for u, _ in store.totals().values()) == MAX_SONGS_PER_COMMIT


def test_the_processor_waits_out_an_open_circuit_and_the_replay_is_exact():
    table = records_of(*[("s", f"u{i}", f"song{i}", "up") for i in range(120)])
    faults = iter([None, "circuit_open"])
    store = FakeTallyStore(fault=lambda: next(faults, None))
    slept: list[float] = []
    processor = TallyBatchProcessor(store, FakeQuarantine(), clock=lambda: NOW, sleep=slept.append)
    event = {"Records": table.records}
    response = process_partial_response(event=event, record_handler=record_handler, processor=processor)
    sequences = [r["dynamodb"]["SequenceNumber"] for r in table.records]
    assert response == {
        "batchItemFailures": [{"itemIdentifier": s} for s in sequences[MAX_SONGS_PER_COMMIT:]]
    }
    assert slept == [3.0]  # the circuit's retry_after: Lambda's immediate retry would be refused too
    replay = {"Records": table.records[MAX_SONGS_PER_COMMIT:]}
    process_partial_response(event=replay, record_handler=record_handler, processor=processor)
    assert sum(u for u, _ in store.totals().values()) == 120


def test_no_time_left_stops_before_committing():
    table = records_of(("s", "u", "song", "up"))
    store = FakeTallyStore()
    outcome = apply_delivery(
        store,
        stream_arn=table.stream_arn,
        changes=[change_from_record(table.records[0])],
        now=NOW,
        time_left=lambda: 1.0,
    )
    assert outcome.first_unapplied == 0
    assert store.commits == 0


def lambda_invoker(store, quarantine=None):
    processor = TallyBatchProcessor(store, quarantine or FakeQuarantine(), clock=lambda: NOW)

    def invoke(event):  # an exception escaping it is a function error, as in Lambda
        return process_partial_response(event=event, record_handler=record_handler, processor=processor)

    return invoke


def test_an_unreadable_record_is_quarantined_and_the_rest_counted():
    table = records_of(*[("s", f"u{i}", "song", "up") for i in range(5)])
    del table.records[2]["dynamodb"]["NewImage"]
    store, quarantine = FakeTallyStore(), FakeQuarantine()
    response = lambda_invoker(store, quarantine)({"Records": table.records})
    assert response == {"batchItemFailures": []}
    assert store.totals() == {("s", "song"): (4, 0)}
    assert [r["dynamodb"]["SequenceNumber"] for r, _ in quarantine.records] == [
        table.records[2]["dynamodb"]["SequenceNumber"]
    ]
    assert "NEW_AND_OLD_IMAGES" in quarantine.records[0][1]


def test_when_quarantine_fails_the_record_and_the_rest_are_replayed():
    table = records_of(*[("s", f"u{i}", "song", "up") for i in range(5)])
    del table.records[2]["dynamodb"]["NewImage"]
    store = FakeTallyStore()
    response = lambda_invoker(store, FakeQuarantine(broken=True))({"Records": table.records})
    sequences = [r["dynamodb"]["SequenceNumber"] for r in table.records]
    assert response == {"batchItemFailures": [{"itemIdentifier": s} for s in sequences[2:]]}
    assert store.totals() == {("s", "song"): (2, 0)}


def test_quarantined_records_stay_in_the_marker_so_a_bisected_retry_is_exact():
    table = records_of(*[("s", f"u{i}", "song", "up") for i in range(6)])
    del table.records[3]["dynamodb"]["NewImage"]
    faults = iter(["lost_response"])
    store = FakeTallyStore(fault=lambda: next(faults, None))
    invoke = lambda_invoker(store)
    with pytest.raises(LostResponse):
        invoke({"Records": table.records})
    invoke(
        {"Records": table.records[:3]}
    )  # bisected: first half, then the half that starts at the bad record
    invoke({"Records": table.records[3:]})
    assert store.totals() == {("s", "song"): (5, 0)}


operations = st.lists(
    st.tuples(
        st.sampled_from(["show-1", "show-2"]),
        st.sampled_from([f"user{i}" for i in range(12)]),
        st.sampled_from([f"song{i}" for i in range(8)]),
        st.sampled_from(["up", "down"]),
    ),
    min_size=1,
    max_size=250,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=operations,
    seed=st.integers(0, 2**32 - 1),
    fault_rate=st.sampled_from([0.0, 0.1, 0.3, 0.5]),
    batch_size=st.sampled_from([1, 3, 10, 100]),
)
def test_tallies_equal_a_recount_whatever_lambda_does(ops, seed, fault_rate, batch_size):
    """Random votes (create, change, remove, re-create over many users and songs), delivered
    with random duplicates, truncated batches, refused commits and lost responses (crash and
    bisect): every tally equals a recount of the vote items."""
    rng = random.Random(seed)
    table = records_of(*ops)
    store = FakeTallyStore(
        fault=lambda: rng.choice(["throttle", "lost_response"]) if rng.random() < fault_rate else None
    )
    deliver_all(
        table.records,
        lambda_invoker(store),
        rng=rng,
        batch_size=batch_size,
        chaos=fault_rate,
    )
    assert store.totals() == table.recount()
