"""The reconciler's repair rule, on pure data (mysetlist/reconcile.py)."""

from __future__ import annotations

import datetime as dt

from mysetlist import keys
from mysetlist.reconcile import (
    REPAIR_LANE,
    SETTLE_AFTER,
    STABLE_FOR,
    Observation,
    SongDrift,
    drift_of,
    is_settled,
    plan,
    trend_digest,
)
from tests.local_stack.poller import DeliverySettings
from tests.support.template import default_template

NOW = dt.datetime(2026, 11, 24, 20, 0, tzinfo=dt.UTC)


def observed(minutes_ago: float, **songs: tuple[int, int]) -> Observation:
    since = NOW - dt.timedelta(minutes=minutes_ago)
    return Observation(version=3, songs={s: SongDrift(u, d, since) for s, (u, d) in songs.items()})


def test_drift_is_truth_minus_tally_and_leaves_exact_songs_out() -> None:
    truth = {"a": (5, 1), "b": (2, 0), "c": (1, 1)}
    tallies = {"a": (4, 1), "b": (2, 0), "d": (0, 1)}
    assert drift_of(truth, tallies) == {"a": (1, 0), "c": (1, 1), "d": (0, -1)}
    assert drift_of(truth, truth) == {}


def test_a_show_settles_once_no_stream_record_can_still_be_applied() -> None:
    (mapping,) = [m for m in default_template().stream_mappings if m.function_id == "VoteProcessor"]
    max_age = DeliverySettings.from_mapping(mapping).maximum_record_age_seconds
    assert dt.timedelta(seconds=max_age) + dt.timedelta(minutes=10) <= SETTLE_AFTER
    assert not is_settled(NOW - SETTLE_AFTER + dt.timedelta(seconds=1), NOW)
    assert is_settled(NOW - SETTLE_AFTER, NOW)
    assert not is_settled(NOW + dt.timedelta(days=1), NOW)


def test_the_repair_lane_is_one_the_processor_never_writes() -> None:
    assert REPAIR_LANE not in {keys.lane_of(str(n)) for n in range(2000)}
    assert REPAIR_LANE == keys.TALLY_LANES


def test_no_drift_and_no_observation_writes_nothing() -> None:
    for settled in (True, False):
        decided = plan({}, settled=settled, previous=None, now=NOW)
        assert (decided.repairs, decided.pending, decided.write) == ({}, {}, False)
        assert not plan({}, settled=settled, previous=observed(5), now=NOW).write


def test_a_settled_show_is_repaired_at_once() -> None:
    decided = plan({"a": (1, -2)}, settled=True, previous=None, now=NOW)
    assert decided.repairs == {"a": (1, -2)}
    assert decided.pending == {}
    assert decided.write


def test_an_open_show_first_only_observes() -> None:
    decided = plan({"a": (1, 0)}, settled=False, previous=None, now=NOW)
    assert decided.repairs == {}
    assert decided.pending == {"a": SongDrift(1, 0, NOW)}
    assert decided.write


def test_an_open_show_is_repaired_when_the_same_drift_was_seen_at_least_10_minutes_ago() -> None:
    minutes = STABLE_FOR.total_seconds() / 60
    decided = plan({"a": (1, 0)}, settled=False, previous=observed(minutes, a=(1, 0)), now=NOW)
    assert (decided.repairs, decided.pending, decided.write) == ({"a": (1, 0)}, {}, True)


def test_a_stable_drift_seen_too_recently_waits_and_keeps_its_first_sighting() -> None:
    previous = observed(9.9, a=(1, 0))
    decided = plan({"a": (1, 0)}, settled=False, previous=previous, now=NOW)
    assert decided.repairs == {}
    assert decided.pending == previous.songs  # unchanged: nothing is written
    assert not decided.write


def test_a_changed_drift_is_observed_again_from_now() -> None:
    decided = plan({"a": (2, 0)}, settled=False, previous=observed(30, a=(1, 0)), now=NOW)
    assert decided.repairs == {}
    assert decided.pending == {"a": SongDrift(2, 0, NOW)}
    assert decided.write


def test_songs_are_judged_one_by_one_and_vanished_drift_is_forgotten() -> None:
    previous = observed(15, a=(1, 0), b=(0, 1), c=(3, 3))
    decided = plan({"a": (1, 0), "b": (0, 2), "d": (1, 1)}, settled=False, previous=previous, now=NOW)
    assert decided.repairs == {"a": (1, 0)}
    assert decided.pending == {"b": SongDrift(0, 2, NOW), "d": SongDrift(1, 1, NOW)}  # c is gone
    assert decided.write


def test_a_cleared_drift_clears_the_observation() -> None:
    decided = plan({}, settled=False, previous=observed(15, a=(1, 0)), now=NOW)
    assert (decided.repairs, decided.pending, decided.write) == ({}, {}, True)


def test_trending_drift_follows_the_same_rule_with_its_digest() -> None:
    digest = trend_digest({2762: 1_500_000_000})
    assert digest == trend_digest({2762: 1_500_000_000})
    assert digest != trend_digest({2762: 1_500_000_001})
    first = plan({}, settled=False, previous=None, now=NOW, trend={"a": digest})
    assert (first.repairs, first.pending) == ({}, {"a": SongDrift(0, 0, NOW, digest)})
    later = NOW + STABLE_FOR
    held = plan({}, settled=False, previous=Observation(1, first.pending), now=later, trend={"a": digest})
    assert held.repairs == {"a": (0, 0)}  # a trending-only repair: the counts are exact
    moved = plan(
        {},
        settled=False,
        previous=Observation(1, first.pending),
        now=later,
        trend={"a": trend_digest({1: 1})},
    )
    assert moved.repairs == {}
    assert moved.pending["a"].since == later  # a moving drift is observed again from now
    settled = plan({}, settled=True, previous=None, now=NOW, trend={"a": digest})
    assert settled.repairs == {"a": (0, 0)}
