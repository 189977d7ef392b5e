"""analyze(): the ab-stats contract, checked against the engine's parts and scipy / statsmodels."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from scipy import stats  # type: ignore[import-untyped]
from statsmodels.stats.multitest import multipletests  # type: ignore[import-untyped]
from statsmodels.stats.proportion import proportions_ztest  # type: ignore[import-untyped]

from mysetlist.experiments import bayesian, sequential
from mysetlist.experiments.analysis import analyze


def _proportions(**extra: Any) -> dict[str, Any]:
    return {
        "metric": "proportion",
        "variants": [
            {"name": "control", "n": 10_000, "sum": 1_000, "sum_squares": 1_000},
            {"name": "big-hero", "n": 10_050, "sum": 1_110, "sum_squares": 1_110},
            {"name": "carousel", "n": 9_980, "sum": 985, "sum_squares": 985},
        ],
    } | extra


def _means(**extra: Any) -> dict[str, Any]:
    return {
        "metric": "mean",
        "variants": [
            {"name": "control", "n": 400, "sum": 1_200.0, "sum_squares": 6_000.0},
            {"name": "treatment", "n": 380, "sum": 1_250.0, "sum_squares": 6_400.0},
        ],
    } | extra


def _roundtrip(result: dict[str, Any]) -> dict[str, Any]:
    # Every answer is strict JSON: no NaN, no infinity.
    parsed: dict[str, Any] = json.loads(json.dumps(result, allow_nan=False))
    return parsed


def test_frequentist_proportions_match_statsmodels() -> None:
    result = _roundtrip(analyze(_proportions(alpha=0.05)))
    assert result["method"] == "frequentist"
    assert [row["name"] for row in result["variants"]] == ["big-hero", "carousel"]
    for row, (n, conv) in zip(result["variants"], [(10_050, 1_110), (9_980, 985)], strict=True):
        _, p_value = proportions_ztest([conv, 1_000], [n, 10_000])
        assert row["p_value"] == pytest.approx(p_value, rel=1e-9)
        assert row["lift"] == pytest.approx(conv / n - 0.1, abs=1e-12)
        assert row["ci_low"] < row["lift"] < row["ci_high"]


def test_frequentist_means_match_welch() -> None:
    result = analyze(_means(relative=False))
    row = result["variants"][0]
    var_c = (6_000.0 - 400 * 3.0**2) / 399
    mean_t = 1_250.0 / 380
    var_t = (6_400.0 - 380 * mean_t**2) / 379
    welch = stats.ttest_ind_from_stats(
        mean_t, math.sqrt(var_t), 380, 3.0, math.sqrt(var_c), 400, equal_var=False
    )
    assert row["p_value"] == pytest.approx(welch.pvalue, rel=1e-8)
    assert row["lift"] == pytest.approx(mean_t - 3.0, abs=1e-12)


def test_relative_lift_is_a_fraction_of_the_control() -> None:
    row = analyze(_proportions(relative=True))["variants"][0]
    assert row["lift"] == pytest.approx((1_110 / 10_050 - 0.1) / 0.1, rel=1e-9)


def test_srm_uses_the_configured_weights() -> None:
    weights = [2, 1, 1]
    result = analyze(_proportions(weights=weights))
    ns = [10_000, 10_050, 9_980]
    expected = [sum(ns) * w / 4 for w in weights]
    assert result["srm_p"] == pytest.approx(stats.chisquare(ns, expected).pvalue, rel=1e-8)
    assert result["srm_ok"] is False  # a 2:1:1 split was configured, an even one observed
    # No verdict while the sample ratio is off, however small the p-value.
    assert result["variants"][0]["p_value"] < 0.05
    assert result["variants"][0]["significant"] is False
    assert analyze(_proportions())["variants"][0]["significant"] is True
    assert all(row["srm_p"] == result["srm_p"] for row in result["variants"])
    even = analyze(_proportions())
    assert even["srm_ok"] is True
    assert even["srm_p"] == pytest.approx(stats.chisquare(ns).pvalue, rel=1e-8)


def test_bayesian_rows_carry_chance_to_win_and_expected_loss() -> None:
    result = _roundtrip(analyze(_proportions(method="bayesian")))
    row = result["variants"][0]
    direct = bayesian.compare_proportions(10_000, 1_000, 10_050, 1_110)
    assert row["chance_to_win"] == pytest.approx(direct.chance_to_win, abs=1e-15)
    assert row["expected_loss"] == pytest.approx(direct.expected_loss, abs=1e-15)
    assert row["expected_loss_control"] == pytest.approx(direct.expected_loss_control, abs=1e-15)
    assert "p_value" not in row
    means = analyze(_means(method="bayesian"))["variants"][0]
    mean_t = 1_250.0 / 380
    var_c = (6_000.0 - 400 * 9.0) / 399 / 400
    var_t = (6_400.0 - 380 * mean_t**2) / 379 / 380
    assert means["chance_to_win"] == pytest.approx(stats.norm.sf(0.0, mean_t - 3.0, math.sqrt(var_c + var_t)))


def test_sequential_rows_use_the_mixture_sprt_with_a_standardized_tau() -> None:
    document = _proportions(method="sequential", tau=0.2)
    row = analyze(document)["variants"][0]
    p_c, p_t = 0.1, 1_110 / 10_050
    variance = p_c * (1 - p_c) / 10_000 + p_t * (1 - p_t) / 10_050
    n_all, conv_all = 30_030, 3_095
    pooled_sd = math.sqrt((conv_all - n_all * (conv_all / n_all) ** 2) / (n_all - 1))
    direct = sequential.msprt(p_t - p_c, variance, (0.2 * pooled_sd) ** 2, 0.05)
    assert row["p_value"] == pytest.approx(direct.p_value, rel=1e-12)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((direct.ci_low, direct.ci_high), rel=1e-12)
    # Always valid costs width: the sequential interval contains the fixed-horizon one.
    fixed = analyze(_proportions())["variants"][0]
    assert row["ci_low"] < fixed["ci_low"] < fixed["ci_high"] < row["ci_high"]
    assert row["mixing_sd"] == pytest.approx(0.2 * pooled_sd, rel=1e-12)
    assert row["significant"] is (row["p_value"] < 0.05)


def test_sequential_relative_lift_uses_the_delta_method() -> None:
    row = analyze(_means(method="sequential", relative=True))["variants"][0]
    assert row["lift"] == pytest.approx((1_250.0 / 380 - 3.0) / 3.0, rel=1e-12)
    assert row["ci_low"] < row["lift"] < row["ci_high"]
    assert 0.0 < row["p_value"] <= 1.0


@pytest.mark.parametrize("method", ["holm", "bh"])
def test_adjusted_p_values_match_statsmodels(method: str) -> None:
    p_values = [0.01, 0.04, 0.03, 0.2, 0.001, 0.04]
    result = analyze({"adjust": method, "p_values": p_values})
    expected = multipletests(p_values, method="holm" if method == "holm" else "fdr_bh")[1]
    assert result["adjusted"] == pytest.approx(list(expected), rel=1e-12)


@pytest.mark.parametrize(
    ("metric", "method", "relative", "counts"),
    [
        ("proportion", "sequential", False, [(1, 0), (50, 5)]),  # too few users
        ("proportion", "sequential", False, [(40, 0), (40, 0)]),  # no converters yet
        ("proportion", "sequential", True, [(40, 0), (40, 3)]),  # control rate 0: no relative lift
        ("mean", "bayesian", False, [(1, 2.0), (5, 10.0)]),
        ("mean", "bayesian", False, [(4, 8.0), (5, 10.0)]),  # every value equal: no spread
        ("mean", "sequential", False, [(4, 8.0), (5, 10.0)]),
    ],
)
def test_counts_too_thin_for_a_test_give_nulls_and_a_note(
    metric: str, method: str, relative: bool, counts: list[tuple[int, float]]
) -> None:
    # Values of 2.0 each for the means: sum_squares = 4 n, so the sample variance is 0.
    variants = [
        {"name": f"v{i}", "n": n, "sum": total, "sum_squares": total if metric == "proportion" else 4.0 * n}
        for i, (n, total) in enumerate(counts)
    ]
    document = {"metric": metric, "method": method, "relative": relative, "variants": variants}
    row = _roundtrip(analyze(document))["variants"][0]
    assert row["note"]
    figure = "chance_to_win" if method == "bayesian" else "p_value"
    assert row[figure] is None
    if figure == "p_value":
        assert row["significant"] is False


def test_generated_documents_always_give_strict_json() -> None:
    rng = random.Random(9)
    for _ in range(400):
        metric = rng.choice(["proportion", "mean"])
        variants: list[dict[str, Any]] = []
        for i in range(rng.randint(2, 4)):
            n = rng.choice([0, 1, 2, rng.randint(3, 50), rng.randint(50, 100_000)])
            if metric == "proportion":
                conv = rng.choice([0, n, rng.randint(0, n)])
                variants.append({"name": f"v{i}", "n": n, "sum": conv, "sum_squares": conv})
            else:
                mean, spread = rng.uniform(-10, 10), rng.choice([0.0, rng.uniform(0.01, 5.0)])
                variants.append(
                    {"name": f"v{i}", "n": n, "sum": mean * n, "sum_squares": n * (mean * mean + spread)}
                )
        if sum(v["n"] for v in variants) < 2:
            continue
        document = {
            "metric": metric,
            "method": rng.choice(["frequentist", "bayesian", "sequential"]),
            "relative": rng.random() < 0.5,
            "alpha": rng.choice([0.01, 0.05, 0.1]),
            "variants": variants,
        }
        result = _roundtrip(analyze(document))
        assert len(result["variants"]) == len(variants) - 1
        for row in result["variants"]:
            for key in ("p_value", "chance_to_win"):
                if row.get(key) is not None:
                    assert 0.0 <= row[key] <= 1.0, (document, row)
            if row.get("ci_low") is not None:
                assert row["ci_low"] <= row["lift"] <= row["ci_high"], (document, row)


def test_an_empty_control_gives_nulls_not_nan() -> None:
    document = {
        "metric": "proportion",
        "variants": [{"name": "a", "n": 0, "sum": 0}, {"name": "b", "n": 50, "sum": 5}],
    }
    for method in ("frequentist", "bayesian"):
        result = _roundtrip(analyze(document | {"method": method}))
        assert result["control"]["mean"] is None
        assert result["variants"][0]["lift"] is None


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ([], "document"),
        ({"adjust": "bonferroni", "p_values": [0.1]}, "adjust"),
        ({"adjust": "holm", "p_values": []}, "p_values"),
        ({"adjust": "holm", "p_values": [0.1, 1.5]}, r"p_values\[1\]"),
        ({"adjust": "bh", "p_values": [0.1, "0.2"]}, r"p_values\[1\]"),
        (_proportions(metric="ratio"), "metric"),
        (_proportions(method="magic"), "method"),
        (_proportions(relative="yes"), "relative"),
        (_proportions(alpha=1.0), "alpha"),
        (_proportions(alpha=True), "alpha"),
        (_proportions(weights=[1, 1]), "weights"),
        (_proportions(weights=[1, 0, 1]), r"weights\[1\]"),
        (_proportions(method="sequential", tau=0), "tau"),
        ({"metric": "proportion", "variants": [{"name": "a", "n": 5, "sum": 1}]}, "variants"),
        ({"metric": "proportion", "variants": [{"name": "a", "n": 5, "sum": 1}, "b"]}, r"variants\[1\]"),
        ({"metric": "mean", "variants": [{"n": 5, "sum": 1, "sum_squares": 1}] * 2}, r"variants\[0\]\.name"),
        (
            {"metric": "mean", "variants": [{"name": "a", "n": 5, "sum": 1, "sum_squares": 1}] * 2},
            r"variants\[1\]\.name",
        ),
        (
            {
                "metric": "proportion",
                "variants": [{"name": "a", "n": -1, "sum": 0}, {"name": "b", "n": 5, "sum": 1}],
            },
            r"variants\[0\]\.n",
        ),
        (
            {
                "metric": "proportion",
                "variants": [{"name": "a", "n": 5, "sum": 6}, {"name": "b", "n": 5, "sum": 1}],
            },
            r"variants\[0\]\.sum",
        ),
        (
            {
                "metric": "proportion",
                "variants": [
                    {"name": "a", "n": 5, "sum": 2, "sum_squares": 3},
                    {"name": "b", "n": 5, "sum": 1},
                ],
            },
            r"variants\[0\]\.sum_squares",
        ),
        (
            {
                "metric": "mean",
                "variants": [
                    {"name": "a", "n": 5, "sum": 10.0, "sum_squares": 4.0},
                    {"name": "b", "n": 5, "sum": 1, "sum_squares": 1},
                ],
            },
            r"variants\[0\]\.sum_squares",
        ),
        (
            {
                "metric": "mean",
                "variants": [
                    {"name": "a", "n": 5, "sum": 1.0},
                    {"name": "b", "n": 5, "sum": 1, "sum_squares": 1},
                ],
            },
            r"variants\[0\]\.sum_squares",
        ),
    ],
)
def test_invalid_documents_name_the_field(document: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        analyze(document)
