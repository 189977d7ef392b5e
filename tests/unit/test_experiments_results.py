"""The analysis answers (mysetlist.experiments.results) on hand-made counters, checked against
independent computations (statsmodels, scipy, the textbook formulas) and for strict JSON."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import pytest
from scipy import integrate, stats  # type: ignore[import-untyped]
from statsmodels.stats.multitest import multipletests  # type: ignore[import-untyped]
from statsmodels.stats.proportion import proportions_ztest  # type: ignore[import-untyped]

from mysetlist.errors import InvalidRequest, NotFound
from mysetlist.experiments.definitions import Action, Experiment, ExperimentIn, ExperimentPatch
from mysetlist.experiments.results import (
    real_time_metrics,
    results,
    segment_analysis,
    statistical_analysis,
)
from mysetlist.experiments.store import ALL, EXPOSURES, LiveBucket, Totals

STARTED = dt.datetime(2030, 5, 1, 8, 0, tzinfo=dt.UTC)
NOW = STARTED + dt.timedelta(days=10, hours=6)
Z95 = stats.norm.ppf(0.975)


def experiment(**overrides: Any) -> Experiment:
    body = {
        "name": "Hero copy",
        "content_type": "banner",
        "placement": "home-hero",
        "variants": [
            {"name": "Control", "content": {}, "weight": 1, "is_control": True},
            {"name": "B", "content": {}, "weight": 1},
            {"name": "C", "content": {}, "weight": 1},
        ],
        "primary_metric": {"name": "signup", "type": "proportion", "event": "conversion"},
        "guardrail_metrics": [
            {"name": "click_rate", "type": "proportion", "event": "click"},
            {"name": "engagement", "type": "mean", "event": "engagement"},
        ],
        "end_date": (STARTED + dt.timedelta(days=30)).isoformat(),
        "minimum_detectable_effect": 0.1,
    } | overrides
    draft = Experiment.create(
        ExperimentIn.model_validate(body, context={"now": STARTED}), by="admin", now=STARTED, test_id="t-1"
    )
    return draft.apply_action(Action.START, "admin", STARTED)


def counts(rows: dict[str, dict[str, Any]], value: str = ALL) -> dict[tuple[str, str, str], Totals]:
    """``{variant: {"n": users, metric: converters | (sum, sum_squares)}}`` as the store's totals."""
    out = {}
    for variant, figures in rows.items():
        out[(value, variant, EXPOSURES)] = Totals(figures["n"], 0.0, 0.0)
        for metric, figure in figures.items():
            if metric == "n":
                continue
            total, squares = figure if isinstance(figure, tuple) else (figure, figure)
            out[(value, variant, metric)] = Totals(0, float(total), float(squares))
    return out


# Per variant: users, signups, clickers, engagement (sum, sum of squares of per-user totals).
BASE: dict[str, dict[str, Any]] = {
    "control": {"n": 20_000, "signup": 1_000, "click_rate": 6_000, "engagement": (200_000.0, 6_000_000.0)},
    "b": {"n": 20_100, "signup": 1_180, "click_rate": 6_050, "engagement": (202_000.0, 6_050_000.0)},
    "c": {"n": 19_950, "signup": 1_010, "click_rate": 5_980, "engagement": (199_000.0, 5_980_000.0)},
}


def strict(answer: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(json.dumps(answer, allow_nan=False))
    return parsed


def welch_p(a: tuple[int, float, float], b: tuple[int, float, float]) -> float:
    def mean_sd(n: int, s: float, q: float) -> tuple[float, float]:
        return s / n, math.sqrt((q - s * s / n) / (n - 1))

    (ma, sa), (mb, sb) = mean_sd(*a), mean_sd(*b)
    return float(stats.ttest_ind_from_stats(mb, sb, b[0], ma, sa, a[0], equal_var=False).pvalue)


def family_p_values(rows: dict[str, dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Every treatment x metric p-value, computed independently (statsmodels, scipy)."""
    control = rows["control"]
    ps = {}
    for variant in ("b", "c"):
        for metric in ("signup", "click_rate"):
            _, p = proportions_ztest(
                [rows[variant][metric], control[metric]], [rows[variant]["n"], control["n"]]
            )
            ps[(metric, variant)] = float(p)
        ps[("engagement", variant)] = welch_p(
            (control["n"], *control["engagement"]), (rows[variant]["n"], *rows[variant]["engagement"])
        )
    return ps


# ---------------------------------------------------------------------------------- results


def test_results_match_independent_tests_and_holm_over_the_whole_family() -> None:
    exp = experiment()
    answer = strict(results(exp, counts(BASE), now=NOW))
    ps = family_p_values(BASE)
    keys = sorted(ps)
    adjusted = dict(zip(keys, multipletests([ps[k] for k in keys], method="holm")[1], strict=True))
    control, b, c = answer["variants"]
    assert [v["variant_id"] for v in answer["variants"]] == ["control", "b", "c"]
    assert control["is_control"]
    assert control["improvement_percentage"] is None
    assert control["recommendation"] is None
    assert answer["sample_size"] == 20_000 + 20_100 + 19_950
    for row, variant in ((b, "b"), (c, "c")):
        rate_a, rate_b = 1_000 / 20_000, BASE[variant]["signup"] / BASE[variant]["n"]
        assert row["weight"] == pytest.approx(100 / 3)
        assert row["conversions"] == BASE[variant]["signup"]
        assert row["conversion_rate"] == pytest.approx(rate_b)
        assert row["variance"] == pytest.approx(
            rate_b * (1 - rate_b) * row["sample_size"] / (row["sample_size"] - 1)
        )
        assert row["p_value"] == pytest.approx(ps[("signup", variant)], rel=1e-9)
        assert row["p_value_adjusted"] == pytest.approx(adjusted[("signup", variant)], rel=1e-9)
        # Relative lift in percent with its delta-method interval, computed here from scratch.
        lift = rate_b / rate_a - 1
        var = (
            rate_b * (1 - rate_b) / BASE[variant]["n"] / rate_a**2
            + rate_b**2 * (rate_a * (1 - rate_a) / 20_000) / rate_a**4
        )
        assert row["improvement_percentage"] == pytest.approx(100 * lift, rel=1e-9)
        assert row["ci_low"] == pytest.approx(100 * (lift - Z95 * math.sqrt(var)), rel=1e-9)
        assert row["ci_high"] == pytest.approx(100 * (lift + Z95 * math.sqrt(var)), rel=1e-9)
        assert row["confidence_level"] == pytest.approx(95.0)
        assert row["chance_to_beat_control"] is None  # a Bayesian figure
    assert b["is_significant"]
    assert b["recommendation"] == "winner"
    assert not c["is_significant"]
    assert c["recommendation"] == "inconclusive"
    assert answer["recommendation"]["decision"] == "ship"
    assert answer["recommendation"]["variant_id"] == "b"
    assert answer["srm"]["ok"]
    assert answer["warnings"] == []
    # The same family in statistical_analysis: identical adjusted p-values.
    analysis = strict(statistical_analysis(exp, counts(BASE), {}, now=NOW))
    assert analysis["comparisons_in_family"] == 6
    for metric in analysis["metrics"]:
        for row in metric["comparisons"]:
            key = (metric["name"], row["variant_id"])
            assert row["p_value"] == pytest.approx(ps[key], rel=1e-8), key
            assert row["p_value_adjusted"] == pytest.approx(adjusted[key], rel=1e-8), key


def test_benjamini_hochberg_when_configured() -> None:
    exp = experiment(correction="bh")
    answer = strict(statistical_analysis(exp, counts(BASE), {}, now=NOW))
    ps = family_p_values(BASE)
    keys = sorted(ps)
    adjusted = dict(zip(keys, multipletests([ps[k] for k in keys], method="fdr_bh")[1], strict=True))
    assert answer["correction"] == "bh"
    for metric in answer["metrics"]:
        for row in metric["comparisons"]:
            assert row["p_value_adjusted"] == pytest.approx(
                adjusted[(metric["name"], row["variant_id"])], rel=1e-8
            )


def test_a_sample_ratio_mismatch_blocks_every_verdict() -> None:
    skewed = {k: dict(v) for k, v in BASE.items()}
    skewed["b"] |= {"n": 17_000, "signup": 1_300}
    answer = strict(results(experiment(), counts(skewed), now=NOW))
    expected_p = stats.chisquare([20_000, 17_000, 19_950]).pvalue
    assert answer["srm"]["p_value"] == pytest.approx(expected_p, rel=1e-6)
    assert answer["srm"]["ok"] is False
    b = answer["variants"][1]
    assert b["p_value_adjusted"] < 0.05  # a large effect ...
    assert b["is_significant"] is False  # ... and still no verdict
    assert b["recommendation"] == "inconclusive"
    assert any("sample-ratio check failed" in note for note in b["notes"])
    assert answer["recommendation"]["decision"] == "investigate"
    assert any("sample ratio mismatch" in w for w in answer["warnings"])


def test_a_guardrail_that_drops_blocks_the_winner() -> None:
    harmed = {k: dict(v) for k, v in BASE.items()}
    harmed["b"]["click_rate"] = 5_200  # 30% -> 25.9% of users click
    answer = strict(results(experiment(), counts(harmed), now=NOW))
    b = answer["variants"][1]
    assert b["is_significant"]  # on the primary metric
    assert b["recommendation"] == "loser"
    assert "guardrail click_rate is significantly lower" in b["notes"]
    assert answer["recommendation"]["decision"] == "continue"
    assert "lowered a guardrail" in answer["recommendation"]["reason"]
    analysis = strict(statistical_analysis(experiment(), counts(harmed), {}, now=NOW))
    click = analysis["metrics"][1]["comparisons"][0]
    assert (click["variant_id"], click["direction"], click["significant"]) == ("b", "worse", True)


def test_bayesian_method_reports_the_chance_to_beat_control() -> None:
    rows: dict[str, dict[str, Any]] = {
        "control": {"n": 400, "signup": 40, "click_rate": 100, "engagement": (4_000.0, 90_000.0)},
        "b": {"n": 410, "signup": 62, "click_rate": 104, "engagement": (4_200.0, 95_000.0)},
        "c": {"n": 395, "signup": 38, "click_rate": 99, "engagement": (3_900.0, 88_000.0)},
    }
    answer = strict(results(experiment(method="bayesian"), counts(rows), now=NOW))
    for row, variant in zip(answer["variants"][1:], ("b", "c"), strict=True):
        a = stats.beta(1 + 40, 1 + 400 - 40)
        t = stats.beta(1 + rows[variant]["signup"], 1 + rows[variant]["n"] - rows[variant]["signup"])
        chance, _err = integrate.quad(lambda x, a=a, t=t: t.pdf(x) * a.cdf(x), 0, 1, limit=200)
        assert row["chance_to_beat_control"] == pytest.approx(chance, abs=1e-7)
        assert row["confidence_level"] == pytest.approx(100 * chance, abs=1e-5)
        assert row["p_value"] is None
        assert row["ci_low"] is None
        assert row["expected_loss"] is not None
        assert row["expected_loss"] >= 0
    assert answer["variants"][1]["is_significant"]
    assert answer["variants"][1]["recommendation"] == "winner"
    assert answer["method"] == "bayesian"


def test_method_override_sequential_widens_the_interval() -> None:
    exp = experiment()
    fixed = strict(statistical_analysis(exp, counts(BASE), {}, now=NOW))
    always = strict(statistical_analysis(exp, counts(BASE), {}, method="sequential", now=NOW))
    f, s = fixed["metrics"][0]["comparisons"][0], always["metrics"][0]["comparisons"][0]
    assert always["method"] == "sequential"
    assert s["mixing_sd"] is not None
    assert f["mixing_sd"] is None
    assert (
        s["absolute"]["ci_low"]
        < f["absolute"]["ci_low"]
        < f["absolute"]["ci_high"]
        < s["absolute"]["ci_high"]
    )
    assert s["p_value"] > f["p_value"]
    with pytest.raises(InvalidRequest, match="method must be one of"):
        results(exp, counts(BASE), method="magic", now=NOW)


@pytest.mark.parametrize(
    "rows",
    [
        {},  # nobody exposed yet
        {"control": {"n": 1, "signup": 1}},  # one user
        {"control": {"n": 50}, "b": {"n": 48}, "c": {"n": 52}},  # no events at all
        {  # everybody converted everywhere: no variation
            "control": {"n": 50, "signup": 50, "click_rate": 0},
            "b": {"n": 48, "signup": 48},
            "c": {"n": 52, "signup": 52},
        },
        {
            "control": {"n": 30, "engagement": (60.0, 120.0)},  # every user at exactly 2.0: no variance
            "b": {"n": 30, "engagement": (60.0, 120.0)},
            "c": {"n": 30, "engagement": (60.0, 120.0)},
        },
    ],
)
@pytest.mark.parametrize("method", ["frequentist", "bayesian", "sequential"])
def test_thin_or_degenerate_counts_give_nulls_and_notes_never_nan(rows: dict[str, Any], method: str) -> None:
    exp = experiment()
    table = counts(rows)
    for answer in (
        results(exp, table, method=method, now=NOW),
        statistical_analysis(exp, table, {}, method=method, now=NOW),
        segment_analysis(exp, {"device": counts(rows, "mobile")}, method=method, now=NOW),
    ):
        parsed = strict(answer)  # raises on NaN or infinity
        assert parsed["test_id"] == "t-1"
    body = strict(results(exp, table, method=method, now=NOW))
    for row in body["variants"][1:]:
        assert not row["is_significant"]
        assert row["recommendation"] == "inconclusive"
        assert row["notes"]
    assert body["recommendation"]["decision"] == "continue"


def test_a_control_rate_of_zero_has_no_relative_lift() -> None:
    rows = {"control": {"n": 500, "signup": 0}, "b": {"n": 500, "signup": 9}, "c": {"n": 500, "signup": 1}}
    answer = strict(results(experiment(), counts(rows), now=NOW))
    b = answer["variants"][1]
    assert b["improvement_percentage"] is None
    assert b["p_value"] is not None  # the absolute test still runs
    assert any("relative lift is undefined" in note for note in b["notes"])


# ---------------------------------------------------------------------------------- power


def fleiss(p1: float, p2: float, alpha: float, power: float) -> float:
    """Users per variant for the two-proportion z test (Fleiss, without continuity correction)."""
    z_a, z_b = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    pbar = (p1 + p2) / 2
    root = z_a * math.sqrt(2 * pbar * (1 - pbar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return float(root**2 / (p2 - p1) ** 2)


def test_power_plans_at_alpha_over_the_family_and_counts_days_left() -> None:
    exp = experiment()
    # 1,500 users a day on each complete day of the last week, fewer on the first (partial) day.
    daily = {
        (STARTED.date() + dt.timedelta(days=i)).isoformat(): {"control": 500, "b": 500, "c": 500}
        for i in range(1, 11)
    }
    daily[STARTED.date().isoformat()] = {"control": 100, "b": 100, "c": 100}
    power = strict(statistical_analysis(exp, counts(BASE), daily, now=NOW))["power"]
    alpha = 0.05 / 6  # 3 metrics x 2 treatments
    assert power["alpha_per_comparison"] == pytest.approx(alpha)
    expected = fleiss(0.05, 0.055, alpha, 0.8)
    assert abs(power["required_per_variant"] - expected) <= 1 + 1e-4 * expected
    assert power["daily_users"] == pytest.approx(1500)
    exposed = {"control": 20_000, "b": 20_100, "c": 19_950}
    days = max(math.ceil((power["required_per_variant"] - n) / 500) for n in exposed.values())
    assert power["days_left"] == days
    assert exp.end_date is not None
    assert power["reachable_by_end_date"] == (NOW + dt.timedelta(days=days) <= exp.end_date)


def test_power_before_a_complete_day_extrapolates_from_the_start() -> None:
    exp = experiment()
    now = STARTED + dt.timedelta(hours=2)
    rows = {"control": {"n": 100, "signup": 5}, "b": {"n": 100, "signup": 6}, "c": {"n": 100, "signup": 5}}
    daily = {STARTED.date().isoformat(): {"control": 100, "b": 100, "c": 100}}
    power = strict(statistical_analysis(exp, counts(rows), daily, now=now))["power"]
    assert power["daily_users"] == pytest.approx(300 * 12)


def test_power_says_why_it_cannot_plan() -> None:
    no_mde = strict(
        statistical_analysis(experiment(minimum_detectable_effect=None), counts(BASE), {}, now=NOW)
    )
    assert no_mde["power"]["required_per_variant"] is None
    assert any("minimum_detectable_effect" in note for note in no_mde["power"]["notes"])
    rows = {"control": {"n": 100}, "b": {"n": 100}, "c": {"n": 100}}
    zero = strict(statistical_analysis(experiment(), counts(rows), {}, now=NOW))
    assert zero["power"]["required_per_variant"] is None
    assert any("strictly between 0 and 1" in note for note in zero["power"]["notes"])


# ---------------------------------------------------------------------------------- segments


def test_segments_are_adjusted_across_every_segment_comparison() -> None:
    exp = experiment()
    mobile = {
        "control": {"n": 5_000, "signup": 250},
        "b": {"n": 5_050, "signup": 340},
        "c": {"n": 4_990, "signup": 255},
    }
    desktop = {
        "control": {"n": 800, "signup": 40},
        "b": {"n": 790, "signup": 42},
        "c": {"n": 805, "signup": 39},
    }
    by_dimension = {"device": counts(mobile, "mobile") | counts(desktop, "desktop")}
    answer = strict(segment_analysis(exp, by_dimension, now=NOW))
    assert answer["comparisons_in_family"] == 4
    assert "(4)" in answer["note"]
    assert "exploratory" in answer["note"]
    (device,) = [d for d in answer["dimensions"] if d["dimension"] == "device"]
    assert [s["value"] for s in device["segments"]] == ["desktop", "mobile"]
    raw = {}
    for segment, rows in (("desktop", desktop), ("mobile", mobile)):
        for variant in ("b", "c"):
            _, p = proportions_ztest(
                [rows[variant]["signup"], rows["control"]["signup"]],
                [rows[variant]["n"], rows["control"]["n"]],
            )
            raw[(segment, variant)] = float(p)
    keys = sorted(raw)
    adjusted = dict(zip(keys, multipletests([raw[k] for k in keys], method="holm")[1], strict=True))
    for segment in device["segments"]:
        assert segment["srm_ok"]
        control, *treatments = segment["variants"]
        assert control["is_control"]
        assert "rate" in control
        for row in treatments:
            key = (segment["value"], row["variant_id"])
            assert row["p_value_adjusted"] == pytest.approx(adjusted[key], rel=1e-8)
    mobile_b = device["segments"][1]["variants"][1]
    assert mobile_b["significant"]
    assert mobile_b["direction"] == "better"
    assert all(d["segments"] == [] for d in answer["dimensions"] if d["dimension"] != "device")


# ---------------------------------------------------------------------------------- real time


def test_real_time_metrics_cover_the_last_hour_minute_by_minute() -> None:
    exp = experiment()
    now = dt.datetime(2030, 5, 3, 14, 30, 42, tzinfo=dt.UTC)

    def bucket(minute: str, variant: str, **figures: float) -> LiveBucket:
        values = {
            "exposures": 0,
            "views": 0,
            "clicks": 0,
            "conversions": 0,
            "engagements": 0,
            "value_sum": 0.0,
        }
        return LiveBucket(minute, variant, **(values | figures))  # type: ignore[arg-type]

    buckets = [
        bucket("2030-05-03T13:31", "b", exposures=3, views=5),  # the first minute of the window
        bucket("2030-05-03T13:30", "b", exposures=100),  # one minute too old
        bucket("2030-05-03T14:30", "control", clicks=2, engagements=1, value_sum=12.5),
        bucket("2030-05-03T14:30", "b", conversions=1),
    ]
    answer = strict(real_time_metrics(exp, buckets, now=now))
    assert (answer["from"], answer["to"], answer["window_minutes"]) == (
        "2030-05-03T13:31",
        "2030-05-03T14:30",
        60,
    )
    assert len(answer["series"]) == 60
    totals = {row["variant_id"]: row for row in answer["variants"]}
    assert totals["b"]["exposures"] == 3
    assert totals["b"]["views"] == 5
    assert totals["b"]["conversions"] == 1
    assert totals["control"]["value_sum"] == pytest.approx(12.5)
    assert totals["c"]["exposures"] == 0
    last = answer["series"][-1]["variants"]
    assert last["control"]["clicks"] == 2
    assert last["c"] == {
        "exposures": 0,
        "views": 0,
        "clicks": 0,
        "conversions": 0,
        "engagements": 0,
        "value_sum": 0.0,
    }


# ---------------------------------------------------------------------------------- phases


def test_phases_are_analysed_on_their_own_variants() -> None:
    exp = experiment()
    two = exp.apply_patch(
        ExperimentPatch.model_validate(
            {
                "variants": [
                    {"name": "Control", "content": {}, "weight": 1, "is_control": True},
                    {"name": "B", "content": {}, "weight": 3},
                ],
                "new_phase": True,
            }
        ),
        "admin",
        NOW,
    )
    old = strict(results(two, counts(BASE), phase=1, now=NOW))
    assert [v["variant_id"] for v in old["variants"]] == ["control", "b", "c"]
    assert any("phase 1 ended" in w for w in old["warnings"])
    current = strict(results(two, counts({"control": {"n": 100}, "b": {"n": 300}}), now=NOW))
    assert current["phase"] == 2
    assert [v["weight"] for v in current["variants"]] == [25.0, 75.0]
    assert current["srm"]["p_value"] == pytest.approx(1.0)
    with pytest.raises(NotFound, match="no phase 3"):
        results(two, counts(BASE), phase=3, now=NOW)


def test_a_running_experiment_past_its_end_date_is_reported() -> None:
    exp = experiment()
    late = exp.end_date + dt.timedelta(hours=1) if exp.end_date else NOW
    answer = strict(results(exp, counts(BASE), now=late))
    assert any("no variant is served now" in w for w in answer["warnings"])
