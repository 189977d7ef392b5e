"""The votes bench's own arithmetic and simulators, on hand-computed cases (no moto, no timing)."""

from __future__ import annotations

import random

import pytest

from mysetlist.tallies import TallyDelta
from tests.bench.votes_bench import (
    WriteCounter,
    commit_times,
    distinct_songs,
    item_size_bytes,
    lambda_batches,
    max_writes_in_any_second,
    minimum_writes,
    net_songs,
    plan_toggles,
    write_units,
    zipf_weights,
)


def up(song: str, show: str = "s") -> TallyDelta:
    return TallyDelta(show, song, 1, 0)


def test_the_minimum_is_one_write_per_distinct_song_per_batch() -> None:
    batches: list[list[TallyDelta | None]] = [
        [up("a"), up("a"), up("b"), None],  # a, b -> 2
        [up("a"), TallyDelta("s", "a", -1, 0), up("c")],  # a (cancels out), c -> 2 touched, 1 net
        [None, None],  # no change at all -> 0
        [up("a"), up("a", show="t")],  # the same song id on two shows -> 2
    ]
    assert [distinct_songs(b) for b in batches] == [2, 2, 0, 2]
    assert minimum_writes(batches) == 6
    assert [net_songs(b) for b in batches] == [2, 1, 0, 2]


def test_the_busiest_key_in_any_one_second_interval() -> None:
    trace = [
        (0.0, "k1", 1),
        (0.5, "k1", 2),
        (0.99, "k1", 1),  # k1: 4 within [0, 1)
        (1.0, "k1", 1),  # [0, 1) no longer holds it; [0.5, 1.5) holds 0.5, 0.99, 1.0, 1.4 = 5
        (1.4, "k1", 1),
        (0.2, "k2", 3),
        (5.0, "k2", 3),  # k2 never more than 3 in a second
    ]
    assert max_writes_in_any_second(trace) == (5, "k1", 0.5)
    assert max_writes_in_any_second([]) == (0, None, 0.0)


def test_calendar_seconds_would_undercount_a_burst_across_a_boundary() -> None:
    trace = [(0.9, "k", 1), (0.95, "k", 1), (1.05, "k", 1), (1.1, "k", 1)]
    assert max_writes_in_any_second(trace)[0] == 4  # two per calendar second, four in [0.9, 1.9)


def test_batches_close_when_full_or_when_the_window_runs_out() -> None:
    arrivals = [0.0, 0.1, 0.2, 0.3, 2.0, 2.5, 3.1, 10.0]
    assert lambda_batches(arrivals, batch_size=3, window_seconds=1.0) == [
        (0, 3, 0.2),  # full at its third record
        (3, 4, 1.3),  # alone for the whole window
        (4, 6, 3.0),  # 2.0 and 2.5; 3.1 comes after the window
        (6, 7, 4.1),
        (7, 8, 11.0),
    ]


def test_a_shard_processes_its_batches_one_at_a_time() -> None:
    assert commit_times([0.0, 0.01, 0.02, 1.0], 0.05) == pytest.approx([0.0, 0.05, 0.1, 1.0])


def test_item_sizes_and_write_units() -> None:
    item = {
        "PK": {"S": "abc"},  # 2 + 3
        "n": {"N": "12345"},  # 1 + (5 + 1) // 2 + 1 = 5
        "L": {"L": [{"S": "xy"}, {"S": "z"}]},  # 1 + 3 + (1 + 2) + (1 + 1) = 9
    }
    assert item_size_bytes(item) == 5 + 5 + 9
    assert write_units(100, transactional=False) == 1
    assert write_units(2500, transactional=True) == 6
    assert write_units(1024, transactional=True) == 2


def test_the_counter_counts_requests_and_items_of_its_table_only() -> None:
    counter = WriteCounter("tallies")
    key = {"PK": {"S": "TALLY#s#1"}, "SK": {"S": "a#0"}}
    marker = {"PK": {"S": "CKPT#x#1"}, "SK": {"S": "CKPT"}}
    counter.record(
        "TransactWriteItems",
        {
            "TransactItems": [
                {"Update": {"TableName": "tallies", "Key": key}},
                {"Update": {"TableName": "other", "Key": key}},
                {"Put": {"TableName": "tallies", "Item": marker}},
            ]
        },
    )
    counter.record("UpdateItem", {"TableName": "other", "Key": key})
    counter.record("GetItem", {"TableName": "tallies", "Key": key})
    assert counter.total_requests == 1
    assert [(i.operation, i.pk) for i in counter.items] == [
        ("TransactWriteItems", "TALLY#s#1"),
        ("TransactWriteItems", "CKPT#x#1"),
    ]


def test_planned_toggles_are_consistent_with_the_votes_they_act_on() -> None:
    assert sum(zipf_weights(30, 1.0)) == pytest.approx(1.0)
    songs = [f"song{n}" for n in range(5)]
    plan = plan_toggles(random.Random(3), votes=500, users=40, songs=songs)
    assert len(plan) == 500
    current: dict[tuple[str, str], str] = {}
    for toggle in plan:  # replay with toggle semantics: same type removes, other type switches
        pair, previous = (toggle.user_id, toggle.song_id), current.get((toggle.user_id, toggle.song_id))
        expected = (
            "created" if previous is None else "removed" if previous == toggle.vote_type else "switched"
        )
        assert toggle.action == expected
        if expected == "removed":
            del current[pair]
        else:
            current[pair] = toggle.vote_type
    actions = {a: sum(t.action == a for t in plan) for a in ("created", "switched", "removed")}
    assert all(actions.values())
    assert plan == plan_toggles(random.Random(3), votes=500, users=40, songs=songs)  # seeded
