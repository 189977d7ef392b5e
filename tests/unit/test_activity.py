"""Velocity and trending arithmetic (mysetlist.activity) and how tallies carry them."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mysetlist.activity import (
    ActivityConfig,
    VoteState,
    activity_of,
    contribution,
    era_of,
    score_at,
    song_activity,
    stale_minutes,
    trend_attribute,
    trend_sums,
    velocity,
)
from mysetlist.tallies import TallyDelta, VoteChange, change_from_record, summed

HOUR = 3600.0
CONFIG = ActivityConfig(half_life_seconds=HOUR, down_weight=0.25)
T0 = 1_900_000_000.0


def test_a_score_halves_every_half_life() -> None:
    sums = trend_sums([VoteState("up", T0)], CONFIG)
    assert score_at(sums, T0, CONFIG) == pytest.approx(1.0)
    assert score_at(sums, T0 + HOUR, CONFIG) == pytest.approx(0.5)
    assert score_at(sums, T0 + 3 * HOUR, CONFIG) == pytest.approx(0.125)


def test_down_votes_weigh_the_configured_fraction() -> None:
    sums = trend_sums([VoteState("down", T0)], CONFIG)
    assert score_at(sums, T0, CONFIG) == pytest.approx(0.25)
    assert trend_sums([VoteState("down", T0)], ActivityConfig(half_life_seconds=HOUR, down_weight=0)) == {}


def test_scores_across_an_era_boundary_stay_continuous() -> None:
    boundary = (era_of(T0, CONFIG) + 1) * CONFIG.era_seconds
    before, after = VoteState("up", boundary - 1), VoteState("up", boundary + 1)
    assert era_of(before.at, CONFIG) + 1 == era_of(after.at, CONFIG)
    sums = trend_sums([before, after], CONFIG)
    assert len(sums) == 2
    assert score_at(sums, boundary + 1, CONFIG) == pytest.approx(1 + 2 ** (-2 / HOUR), rel=1e-8)


def test_a_newer_vote_outranks_an_older_one() -> None:
    old = trend_sums([VoteState("up", T0 - 3 * HOUR)] * 3, CONFIG)  # 3 votes, 3 half-lives ago
    new = trend_sums([VoteState("up", T0)], CONFIG)  # 1 vote now
    assert score_at(new, T0, CONFIG) > score_at(old, T0, CONFIG)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["up", "down"]), st.floats(min_value=0, max_value=90 * 86400)),
        min_size=1,
        max_size=40,
    ),
    st.randoms(use_true_random=False),
)
def test_incremental_sums_equal_a_rebuild_exactly(votes: list[tuple[str, float]], rng: random.Random) -> None:
    """Adding votes, switching some and removing others one record at a time leaves exactly the
    sums a rebuild computes from the standing votes (decimals: no rounding drift)."""
    standing = [VoteState(kind, T0 + offset) for kind, offset in votes]
    minutes: dict[int, int] = {}
    trend: dict[int, int] = {}
    for state in standing:
        activity_of(None, state, T0, CONFIG, minutes, trend)
    for index in rng.sample(range(len(standing)), k=len(standing) // 2):
        old = standing[index]
        new = VoteState("down" if old.vote_type == "up" else "up", old.at + 60)
        activity_of(old, new, T0, CONFIG, minutes, trend)
        standing[index] = new
    removed = standing[: len(standing) // 3]
    for state in removed:
        activity_of(state, None, T0, CONFIG, minutes, trend)
    expected = trend_sums(standing[len(standing) // 3 :], CONFIG)
    assert {era: total for era, total in trend.items() if total} == expected


def test_velocity_counts_votes_per_minute_over_the_sliding_window() -> None:
    current = 31_666_667
    now = current * 60 + 30.0  # 30 s into a minute
    buckets = {current: 10, current - 4: 5, current - 5: 6, current - 6: 100}
    # the 5 newest buckets fully, the one leaving the window at half, the one out of it not at all
    assert velocity(buckets, now, ActivityConfig()) == pytest.approx((10 + 5 + 6 * 0.5) / 5)


def test_only_minutes_inside_the_window_are_written() -> None:
    now = T0
    minutes: dict[int, int] = {}
    trend: dict[int, int] = {}
    activity_of(None, VoteState("up", now - 30), now, CONFIG, minutes, trend)
    activity_of(None, VoteState("up", now - 3600), now, CONFIG, minutes, trend)  # too old for velocity
    assert sum(minutes.values()) == 1
    assert len(trend) >= 1
    assert not set(minutes) & set(stale_minutes(now, CONFIG))


def test_song_activity_reads_lanes_of_a_song_together() -> None:
    at = T0
    era, amount = contribution(VoteState("up", at), CONFIG)
    minute = int(at // 60)
    lanes: list[dict[str, Any]] = [
        {"song_id": "s", "upvotes": 1, f"vm_{minute}": 1, trend_attribute(era, CONFIG): str(amount)},
        {"song_id": "s", "upvotes": 1, f"vm_{minute}": 1, trend_attribute(era, CONFIG): str(amount)},
        {"song_id": "s", "tr999_1": "5"},  # another half-life's sums: not these
    ]
    speed, sums, score = song_activity(lanes, at, CONFIG)
    assert sums == {era: 2 * amount}
    assert score == pytest.approx(2.0)
    assert speed == pytest.approx(2 / 5)


def _image(moderation: str | None) -> dict[str, Any]:
    image = {
        "show_id": {"S": "s"},
        "song_id": {"S": "a"},
        "user_id": {"S": "u"},
        "vote_type": {"S": "up"},
        "updated_at": {"S": "2030-01-01T00:00:00+00:00"},
    }
    if moderation:
        image["moderation"] = {"S": moderation}
    return image


def _record(sequence: int, old: str | bool | None, new: str | bool | None) -> dict[str, Any]:
    body: dict[str, Any] = {"SequenceNumber": str(sequence)}
    if old is not False:
        body["OldImage"] = _image(old if isinstance(old, str) else None)
    if new is not False:
        body["NewImage"] = _image(new if isinstance(new, str) else None)
    return {"dynamodb": body}


def test_quarantined_and_rejected_votes_count_nowhere() -> None:
    records = [
        _record(1, False, None),  # cast
        _record(2, None, "quarantined"),  # flagged: -1
        _record(3, "quarantined", "released"),  # released by a moderator: +1
        _record(4, "released", "rejected"),  # (a later confirmation): -1
        _record(5, "rejected", False),  # the user removes it: nothing
    ]
    changes = [change_from_record(r) for r in records]
    assert [c.delta.up if c.delta else 0 for c in changes] == [1, -1, 1, -1, 0]
    at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert summed(changes, CONFIG, at) == []  # every sum cancels: the song's item is not written
    assert summed(changes[:3], CONFIG, at) == [
        TallyDelta(
            "s",
            "a",
            1,
            0,
            {int(at.timestamp() // 60): 1},
            trend_sums([VoteState("up", at.timestamp())], CONFIG),
        )
    ]


def test_without_activity_only_counts_are_summed() -> None:
    state = VoteState("up", T0)
    change = VoteChange("1", TallyDelta("s", "a", 1, 0), new=state)
    assert summed([change]) == [TallyDelta("s", "a", 1, 0)]
