"""Assignment: the hash, the million-user shares at 10/50/100% allocation, stickiness (also when
a test ramps up), layers, targeting and the caller's context."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import struct
import time
from collections import Counter
from typing import Any

import pytest

from mysetlist.errors import InvalidRequest
from mysetlist.experiments.assignment import (
    COUNTER_SHARDS,
    AssignmentContext,
    Bucketing,
    assign,
    cumulative,
    include_key,
    layer_bucket,
    pick,
    reserve_range,
    resize_range,
    segment_role,
    shard_of,
    subject_for,
    targeting_matches,
    unit_hash,
    user_type_for,
    variant_key,
)
from mysetlist.experiments.definitions import (
    LAYER_BUCKETS,
    Action,
    Experiment,
    ExperimentIn,
    ExperimentPatch,
    Targeting,
)

NOW = dt.datetime(2030, 5, 1, 12, 0, tzinfo=dt.UTC)
SALT = "5eed0000c0ffee00"


def experiment(weights: tuple[float, ...] = (50, 50), salt: str = SALT, **extra: Any) -> Experiment:
    names = ["Control", "B", "C", "D"]
    spec = ExperimentIn.model_validate(
        {
            "name": "Hero",
            "content_type": "banner",
            "placement": "home-hero",
            "variants": [
                {"name": names[i], "content": {"i": i}, "weight": w, "is_control": i == 0}
                for i, w in enumerate(weights)
            ],
        }
        | extra,
        context={"now": NOW},
    )
    made = Experiment.create(spec, by="admin", now=NOW, test_id=f"t-{salt}", salt=salt)
    return made.apply_action(Action.START, "admin", NOW)


def users(n: int, prefix: str = "u:") -> list[str]:
    return [f"{prefix}{i:08d}" for i in range(n)]


# ---------------------------------------------------------------------------------- the hash


def test_unit_hash_is_the_documented_sha256_draw() -> None:
    # Independent of the module: the first 8 bytes of SHA-256(key U+001F subject), big-endian,
    # top 53 bits over 2**53.
    for key, subject in [("abc:1:include", "u:alice"), ("abc:1:variant", "d:0f3a"), ("layer:hero", "u:é")]:
        (first,) = struct.unpack(">Q", hashlib.sha256(f"{key}\x1f{subject}".encode()).digest()[:8])
        assert unit_hash(key, subject) == (first >> 11) / 2**53
        assert unit_hash(key, subject) == pytest.approx(first / 2**64, abs=2**-53)
    # Pinned: a change here would move every running experiment's users to other variants.
    assert unit_hash("abc:1:include", "u:alice") == 0.19538432503291703
    assert layer_bucket("hero", "u:alice") == 1327


def test_the_serving_rule_uses_the_documented_keys() -> None:
    rule = Bucketing.build("feedfacefeedface", 3, {"control": 1, "b": 3}, 40)
    for subject in users(2000):
        inclusion = unit_hash(include_key("feedfacefeedface", 3), subject)
        draw = unit_hash(variant_key("feedfacefeedface", 3), subject)
        assert rule.inclusion_draw(subject) == inclusion
        assert rule.variant_draw(subject) == draw
        expected = ("control" if draw < 0.25 else "b") if inclusion < 0.4 else None
        assert rule.variant_for(subject) == expected
    assert include_key("feedfacefeedface", 3) == "feedfacefeedface:3:include"
    assert variant_key("feedfacefeedface", 3) == "feedfacefeedface:3:variant"
    everyone = Bucketing.build("feedfacefeedface", 3, {"control": 1, "b": 3}, 100)
    assert all(everyone.variant_for(s) is not None for s in users(2000))


def test_draws_are_in_range_and_independent_across_keys() -> None:
    subjects = users(20_000)
    include = [unit_hash("s:1:include", s) for s in subjects]
    variant = [unit_hash("s:1:variant", s) for s in subjects]
    assert all(0.0 <= h < 1.0 for h in include + variant)
    mean_i, mean_v = sum(include) / len(include), sum(variant) / len(variant)
    cov = sum((a - mean_i) * (b - mean_v) for a, b in zip(include, variant, strict=True)) / len(include)
    correlation = cov / (1 / 12)  # each draw's variance is 1/12
    # 4.5 standard errors (1/sqrt(n) = 0.007): the original used one draw for both (correlation 1).
    assert abs(correlation) < 0.032, f"correlation of inclusion and variant draws: {correlation:.4f}"
    assert all(0 <= layer_bucket("hero", s) < LAYER_BUCKETS for s in subjects[:2000])


def test_shards_are_stable_and_spread() -> None:
    subjects = users(16_000)
    counts = Counter(shard_of(s) for s in subjects)
    assert set(counts) == set(range(COUNTER_SHARDS))
    assert all(abs(c - 2000) < 200 for c in counts.values()), counts
    assert shard_of("u:alice") == shard_of("u:alice")
    assert shard_of("u:alice", 1) == 0
    with pytest.raises(ValueError, match="at least 1"):
        shard_of("u:alice", 0)


def test_cumulative_slices_cover_zero_to_one() -> None:
    ends = cumulative([1, 1, 1])
    assert ends[-1] == 1.0
    assert ends[:2] == pytest.approx((1 / 3, 2 / 3))
    assert [pick(d, cumulative([20, 30, 50])) for d in (0.0, 0.1999, 0.2, 0.4999, 0.5, 0.999999999)] == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]
    assert pick(math.nextafter(1.0, 0.0), ends) == 2


# ---------------------------------------------------------------------------------- must show

SIMULATED_USERS = 1_000_000
ALLOCATIONS = (10, 50, 100)
WEIGHT_SETS: dict[str, dict[str, float]] = {
    "50/50": {"control": 50, "b": 50},
    "20/30/50": {"control": 20, "b": 30, "c": 50},
}
SHARE_TOLERANCE = 0.5  # percentage points, absolute


def test_a_million_users_get_each_variants_weight_at_every_allocation_and_keep_their_variant() -> None:
    """The issue's must-show figure: over 1,000,000 users, each variant's share of the included
    users is within 0.5 points of its weight at 10%, 50% and 100% allocation, and a user included
    at a lower allocation gets the same variant at a higher one (each allocation is computed on
    its own, with the function the API serves with). Plain values in the loop: no model."""
    started = time.perf_counter()
    subjects = users(SIMULATED_USERS)
    lines: list[str] = []
    failures: list[str] = []
    for set_number, (label, weights) in enumerate(WEIGHT_SETS.items()):
        salt = f"{SALT[:-1]}{set_number}"  # two experiments, two salts
        shares: dict[int, float] = {}
        previous: list[str | None] | None = None
        for allocation in ALLOCATIONS:
            rule = Bucketing.build(salt, 1, weights, allocation)
            assigned = [rule.variant_for(s) for s in subjects]
            counts = Counter(assigned)
            included = SIMULATED_USERS - counts.pop(None, 0)
            shares[allocation] = 100 * included / SIMULATED_USERS
            total_weight = sum(weights.values())
            measured = {v: 100 * counts[v] / included for v in weights}
            expected = {v: 100 * w / total_weight for v, w in weights.items()}
            lines.append(
                f"{label} at {allocation:>3}%: included {shares[allocation]:.3f}% ("
                + ", ".join(f"{v} {measured[v]:.3f}% vs {expected[v]:.0f}%" for v in weights)
                + ")"
            )
            if abs(shares[allocation] - allocation) > SHARE_TOLERANCE:
                failures.append(f"{label}: included {shares[allocation]:.3f}% at {allocation}% allocation")
            failures += [
                f"{label} at {allocation}%: {v} got {measured[v]:.3f}% for a weight of {expected[v]:.1f}%"
                for v in weights
                if abs(measured[v] - expected[v]) > SHARE_TOLERANCE
            ]
            if previous is not None:
                moved = sum(
                    1
                    for before, now in zip(previous, assigned, strict=True)
                    if before is not None and now != before
                )
                if moved:
                    failures.append(
                        f"{label}: {moved} users changed variant when the allocation grew to {allocation}%"
                    )
            previous = assigned
    elapsed = time.perf_counter() - started
    table = "\n".join(lines) + f"\n({SIMULATED_USERS:,} users, {elapsed:.1f} s)"
    print(table)
    assert not failures, "\n".join(failures) + "\n" + table


def test_the_ramp_through_a_new_phase_keeps_every_user_on_their_variant() -> None:
    """The same through the definitions: a running test at 10% ramps to 50% then 100% with
    new_phase (the allocation is frozen within a phase); everyone included earlier keeps their
    variant. Re-weighting re-randomises instead (and still gets the new shares)."""
    at_10 = experiment((20, 30, 50), traffic_allocation=10)
    at_50 = at_10.apply_patch(ExperimentPatch(traffic_allocation=50, new_phase=True), "cm", NOW)
    at_100 = at_50.apply_patch(ExperimentPatch(traffic_allocation=100, new_phase=True), "cm", NOW)
    contexts = [AssignmentContext(s) for s in users(30_000)]
    first = [assign(at_10, c) for c in contexts]
    second = [assign(at_50, c) for c in contexts]
    third = [assign(at_100, c) for c in contexts]
    assert [assign(at_10, c) for c in contexts] == first  # the same answer every time
    kept = [(a, b, c) for a, b, c in zip(first, second, third, strict=True) if a is not None]
    assert len(kept) == pytest.approx(3_000, rel=0.1)
    assert all(a == b == c for a, b, c in kept)
    assert all(b == c for b, c in zip(second, third, strict=True) if b is not None)
    # The old phase's rule still answers for the old phase.
    assert [assign(at_100, c, phase=1) for c in contexts] == first
    reweighted = at_100.apply_patch(
        ExperimentPatch.model_validate(
            {
                "variants": [
                    {"name": "Control", "content": {"i": 0}, "weight": 50, "is_control": True},
                    {"name": "B", "content": {"i": 1}, "weight": 25},
                    {"name": "C", "content": {"i": 2}, "weight": 25},
                ],
                "new_phase": True,
            }
        ),
        "cm",
        NOW,
    )
    fourth = [assign(reweighted, c) for c in contexts]
    moved = sum(1 for a, b in zip(third, fourth, strict=True) if a != b)
    assert moved > 10_000  # independent draws: about 1 - (0.2*0.5 + 0.3*0.25 + 0.5*0.25) = 70% move
    shares = Counter(fourth)
    assert shares["control"] / len(contexts) == pytest.approx(0.5, abs=0.015)


def test_experiments_with_different_salts_randomise_independently() -> None:
    one, two = experiment(salt="aaaaaaaaaaaaaaaa"), experiment(salt="bbbbbbbbbbbbbbbb")
    subjects = users(40_000)
    rule_one, rule_two = Bucketing.of(one), Bucketing.of(two)
    pairs = Counter((rule_one.variant_for(s), rule_two.variant_for(s)) for s in subjects)
    for pair, count in pairs.items():
        assert count / len(subjects) == pytest.approx(0.25, abs=0.01), (pair, pairs)


# ---------------------------------------------------------------------------------- layers


def test_two_experiments_of_one_layer_never_share_a_user() -> None:
    first = experiment(salt="1111111111111111", layer="hero", traffic_allocation=50)
    second = experiment(salt="2222222222222222", layer="hero", traffic_allocation=30)
    slice_one = reserve_range({}, first.layer_width)
    assert slice_one is not None
    slice_two = reserve_range({first.test_id: slice_one}, second.layer_width)
    assert (slice_one, slice_two) == ((0, 5000), (5000, 8000))
    first, second = first.with_layer_range(slice_one), second.with_layer_range(slice_two)
    contexts = [AssignmentContext(s) for s in users(100_000)]
    in_first = {c.subject for c in contexts if assign(first, c) is not None}
    in_second = {c.subject for c in contexts if assign(second, c) is not None}
    assert not in_first & in_second
    assert len(in_first) / len(contexts) == pytest.approx(0.50, abs=0.005)
    assert len(in_second) / len(contexts) == pytest.approx(0.30, abs=0.005)
    # The variant draw is the experiment's own: a layer slice gets every variant's share.
    shares = Counter(assign(first, c) for c in contexts if c.subject in in_first)
    assert shares["control"] / len(in_first) == pytest.approx(0.5, abs=0.01)
    # Without its slice (not reserved yet) a layered experiment includes nobody.
    unreserved = experiment(salt="3333333333333333", layer="hero")
    assert all(assign(unreserved, c) is None for c in contexts[:1000])


def test_reserve_range_takes_the_first_gap_that_fits() -> None:
    taken = {"a": (0, 1000), "b": [1500, 3000], "c": (8000, 10_000)}
    assert reserve_range(taken, 500) == (1000, 1500)
    assert reserve_range(taken, 501) == (3000, 3501)
    assert reserve_range(taken, 5000) == (3000, 8000)
    assert reserve_range(taken, 5001) is None
    assert reserve_range({}, LAYER_BUCKETS) == (0, LAYER_BUCKETS)
    assert reserve_range({"a": (0, LAYER_BUCKETS)}, 1) is None
    with pytest.raises(ValueError, match="width must be 1 to 10000"):
        reserve_range({}, 0)
    with pytest.raises(ValueError, match="range of a must be"):
        reserve_range({"a": (10, 5)}, 1)


def test_resize_range_keeps_the_users_already_in() -> None:
    taken = {"a": (0, 1000), "b": (1500, 3000), "c": (4000, 5000)}
    assert resize_range(taken, "b", 2500) == (1500, 4000)  # grows at its end
    assert resize_range(taken, "b", 3000) == (1000, 4000)  # and back into the gap before it
    assert resize_range(taken, "b", 500) == (1500, 2000)  # shrinks from its end
    assert resize_range(taken, "b", 4000) == (5000, 9000)  # no room around it: moves
    assert resize_range(taken, "b", 6000) is None
    assert resize_range(taken, "new", 500) == (1000, 1500)


# ---------------------------------------------------------------------------------- targeting


def context(**fields: Any) -> AssignmentContext:
    return AssignmentContext(**({"subject": "u:1"} | fields))


TARGETING_CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    ("no rule matches everyone", {}, {}, True),
    ("device in list", {"devices": ["mobile", "tablet"]}, {"device": "tablet"}, True),
    ("device not in list", {"devices": ["mobile"]}, {"device": "desktop"}, False),
    ("unknown device never matches", {"devices": ["mobile"]}, {"device": "toaster"}, False),
    ("region", {"regions": ["US", "GB"]}, {"region": "gb"}, True),
    ("other region", {"regions": ["US"]}, {"region": "DE"}, False),
    ("unknown region", {"regions": ["US"]}, {}, False),
    ("role", {"roles": ["user", "moderator"]}, {"role": "moderator"}, True),
    ("anonymous role", {"roles": ["anonymous"]}, {"subject": "d:1"}, True),
    ("other role", {"roles": ["admin"]}, {"role": "user"}, False),
    ("new user", {"user_type": "new"}, {"role": "user", "user_type": "new"}, True),
    ("returning user", {"user_type": "new"}, {"role": "user", "user_type": "returning"}, False),
    ("anonymous is never new", {"user_type": "new"}, {"user_type": "new"}, False),
    ("follower", {"artist_followers": ["phish", "wilco"]}, {"role": "user", "follows": {"wilco"}}, True),
    ("not a follower", {"artist_followers": ["phish"]}, {"role": "user", "follows": {"wilco"}}, False),
    ("anonymous never follows", {"artist_followers": ["phish"]}, {"follows": {"phish"}}, False),
    (
        "all rules must match",
        {"devices": ["mobile"], "regions": ["US"], "roles": ["user"]},
        {"device": "mobile", "region": "US", "role": "user"},
        True,
    ),
    (
        "one failing rule excludes",
        {"devices": ["mobile"], "regions": ["US"], "roles": ["user"]},
        {"device": "mobile", "region": "CA", "role": "user"},
        False,
    ),
]


@pytest.mark.parametrize(
    ("targeting", "fields", "expected"), [c[1:] for c in TARGETING_CASES], ids=[c[0] for c in TARGETING_CASES]
)
def test_targeting(targeting: dict[str, Any], fields: dict[str, Any], expected: bool) -> None:
    assert targeting_matches(Targeting.model_validate(targeting), context(**fields)) is expected


def test_assign_returns_none_outside_the_targeting() -> None:
    mobile_only = experiment(targeting={"devices": ["mobile"]})
    assert assign(mobile_only, context(device="desktop")) is None
    assert assign(mobile_only, context(device="mobile")) in {"control", "b"}


def test_the_context_keeps_segment_values_to_known_ones() -> None:
    made = AssignmentContext("u:1", device=" Mobile ", region="us", role="admin", user_type="new")
    assert made.segment() == {"device": "mobile", "region": "US", "role": "admin", "user_type": "new"}
    odd = AssignmentContext("d:1", device="<script>", region="Narnia", role="root", user_type="vip")
    assert odd.segment() == {
        "device": "unknown",
        "region": "unknown",
        "role": "anonymous",
        "user_type": "unknown",
    }
    assert odd.anonymous


def test_subjects_for_users_and_devices() -> None:
    assert subject_for("3f1c-sub", None) == "u:3f1c-sub"
    assert subject_for("3f1c-sub", "device-123456") == "u:3f1c-sub"  # the token wins
    device = subject_for(None, "device-123456")
    assert device is not None
    assert device.startswith("d:")
    assert "device-123456" not in device  # the raw device id is never stored
    assert device == subject_for(None, "device-123456")
    assert len(device) == 34
    assert subject_for(None, None) is None
    for bad in ("short", "has#hash-inside", "x" * 129, "spaces in it"):
        with pytest.raises(InvalidRequest, match="x-device-id header must be 8 to 128"):
            subject_for(None, bad)


def test_segment_role_and_user_type() -> None:
    assert segment_role(None) == "anonymous"
    assert segment_role([]) == "user"
    assert segment_role(["user", "moderator"]) == "moderator"
    assert segment_role(["moderator", "admin", "content_manager"]) == "admin"
    created = NOW - dt.timedelta(days=30)
    assert user_type_for(None, NOW) == "unknown"
    assert user_type_for(created + dt.timedelta(seconds=1), NOW) == "new"
    assert user_type_for(created, NOW) == "returning"
