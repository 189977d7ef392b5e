"""Holm and Benjamini-Hochberg against statsmodels; the SRM chi-square against scipy."""

from __future__ import annotations

import gc
import math
import random

import pytest
from scipy import stats  # type: ignore[import-untyped]
from statsmodels.stats.multitest import multipletests  # type: ignore[import-untyped]

from mysetlist.experiments.multiple import ADJUSTMENTS, bh, holm
from mysetlist.experiments.srm import srm_ok, srm_statistic, srm_test

CASES = 500


def _p_values(rng: random.Random) -> list[float]:
    m = rng.randint(1, 25)
    kind = rng.random()
    if kind < 0.3:  # ties, exact 0 and 1
        return [rng.choice([0.0, 0.01, 0.04, 0.04, 0.2, 1.0]) for _ in range(m)]
    if kind < 0.6:  # a few real effects among nulls
        return [10 ** rng.uniform(-8, -1) if rng.random() < 0.3 else rng.random() for _ in range(m)]
    return [rng.random() for _ in range(m)]


@pytest.mark.parametrize(("ours", "method"), [(holm, "holm"), (bh, "fdr_bh")])
def test_adjusted_p_values_match_statsmodels(ours, method: str, monkeypatch) -> None:
    # statsmodels' Holm branch calls gc.collect() on every call (~0.1 s here): not needed for
    # its result, and 500 of them would dominate the test run.
    monkeypatch.setattr(gc, "collect", lambda *_: 0)
    rng = random.Random(201)
    for _ in range(CASES):
        ps = _p_values(rng)
        expected = multipletests(ps, alpha=0.05, method=method)[1]
        adjusted = ours(ps)
        assert len(adjusted) == len(ps)
        for got, want in zip(adjusted, expected, strict=True):
            assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-15), (ps, adjusted, list(expected))
        # order preserved, monotone in the raw p-values, never below the raw value, capped at 1
        for i in range(len(ps)):
            assert ps[i] <= adjusted[i] <= 1.0
            for j in range(len(ps)):
                if ps[i] <= ps[j]:
                    assert adjusted[i] <= adjusted[j]


def test_adjustments_by_name_and_edge_cases() -> None:
    assert ADJUSTMENTS["holm"] is holm
    assert ADJUSTMENTS["bh"] is bh
    assert holm([]) == []
    assert bh([]) == []
    assert holm([0.03]) == [0.03]
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert bh([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.04, 0.04])


@pytest.mark.parametrize("bad", [[0.5, 1.2], [-0.1], [math.nan], ["0.1"], [True], "0.1", 0.3])
def test_adjustments_reject_what_is_not_a_probability(bad) -> None:
    for adjust in (holm, bh):
        with pytest.raises(ValueError, match="p_values"):
            adjust(bad)


def test_srm_matches_scipy_chisquare() -> None:
    rng = random.Random(203)
    for _ in range(CASES):
        k = rng.randint(2, 6)
        weights = [rng.choice([1, 1, 2, rng.uniform(0.1, 10)]) for _ in range(k)]
        total = rng.choice([rng.randint(10, 500), rng.randint(500, 10_000_000)])
        shares = [w / sum(weights) for w in weights]
        skew = rng.choice([0.0, 0.0, rng.uniform(-0.02, 0.02)])
        ns = [
            max(0, round(total * s * (1 + (skew if i == 0 else 0)) + rng.gauss(0, math.sqrt(total * s))))
            for i, s in enumerate(shares)
        ]
        n = sum(ns)
        if n == 0:
            continue
        expected = [n * s for s in shares]
        statistic, p = stats.chisquare(ns, expected)
        assert math.isclose(srm_statistic(ns, weights), statistic, rel_tol=1e-9, abs_tol=1e-12), (ns, weights)
        assert math.isclose(srm_test(ns, weights), p, rel_tol=1e-9, abs_tol=1e-15), (ns, weights)


def test_srm_flags_a_real_mismatch_and_passes_a_fair_split() -> None:
    assert srm_ok(srm_test([50_000, 50_310], [1, 1]))  # z ~ 1: chance
    broken = srm_test([50_000, 51_500], [1, 1])  # 1.5% missing from A: z ~ 4.7
    assert broken < 1e-5
    assert not srm_ok(broken)
    assert srm_ok(srm_test([90_100, 9_900], [90, 10]))
    assert srm_test([0, 0], [1, 1]) == 1.0  # nothing exposed yet: no evidence
    assert srm_ok(0.001)
    assert not srm_ok(0.02, threshold=0.05)


@pytest.mark.parametrize(
    ("ns", "weights", "message"),
    [
        ([10], [1], "at least 2"),
        ([10, 10], [1], "one weight per variant"),
        ([10, -1], [1, 1], "whole number"),
        ([10, 1.5], [1, 1], "whole number"),
        ([10, 10], [1, 0], "positive"),
        ([10, 10], [1, math.inf], "positive"),
    ],
)
def test_srm_rejects_invalid_input(ns, weights, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        srm_test(ns, weights)


def test_srm_ok_rejects_invalid_thresholds() -> None:
    with pytest.raises(ValueError, match="threshold"):
        srm_ok(0.5, threshold=0)
    with pytest.raises(ValueError, match="p-value"):
        srm_ok(1.5)
