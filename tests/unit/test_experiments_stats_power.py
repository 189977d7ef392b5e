"""Power and sample sizes against statsmodels' NormalIndPower/TTestIndPower, Fleiss's formula and
simulation of the frequentist test itself (statsmodels' proportion route, Cohen's arcsine h, is a
different approximation: a few percent apart for moderate changes, far apart near 0 or 1, so the
simulation of our own z test is the reference there)."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats  # type: ignore[import-untyped]
from statsmodels.stats.power import NormalIndPower, TTestIndPower  # type: ignore[import-untyped]

from mysetlist.experiments.frequentist import VariantCounts, compare
from mysetlist.experiments.power import (
    days_to_reach,
    mean_power,
    n_for_normal_power,
    normal_power,
    proportion_power,
    sample_size_means,
    sample_size_proportions,
)

CASES = 300


# statsmodels' root finder warns (and returns nan) where it gives up, below n = 2
@pytest.mark.filterwarnings(
    "ignore::RuntimeWarning", "ignore::statsmodels.tools.sm_exceptions.ConvergenceWarning"
)
def test_normal_power_and_its_inverse_match_normal_ind_power() -> None:
    rng = random.Random(301)
    solver = NormalIndPower()
    for _ in range(CASES):
        d = 10 ** rng.uniform(-2.5, 0.3)
        alpha = rng.choice([0.01, 0.05, 0.1, rng.uniform(0.001, 0.2)])
        target = rng.uniform(max(0.5, alpha + 0.05), 0.99)
        n = 10 ** rng.uniform(0.5, 6)
        assert math.isclose(normal_power(d, n, alpha), solver.power(d, n, alpha), rel_tol=1e-12)
        ours = n_for_normal_power(d, alpha, target)
        # statsmodels' own power function at our n gives the target (its root finder is looser
        # than ours: its solve_power strays by up to ~1e-7 relative at large effects)
        assert math.isclose(solver.power(d, ours, alpha), target, rel_tol=1e-9), (d, alpha, target)
        expected = solver.solve_power(d, alpha=alpha, power=target)
        if not math.isnan(expected):  # statsmodels gives up below n = 2
            assert math.isclose(ours, expected, rel_tol=1e-6), (d, alpha, target)


@pytest.mark.filterwarnings(
    "ignore::RuntimeWarning", "ignore::statsmodels.tools.sm_exceptions.ConvergenceWarning"
)
def test_mean_sample_size_is_within_one_user_of_the_exact_noncentral_t_size() -> None:
    rng = random.Random(303)
    solver = TTestIndPower()
    exact = 0
    for _ in range(CASES):
        std = 10 ** rng.uniform(-1, 3)
        d = 10 ** rng.uniform(-2, 0.2)
        alpha = rng.choice([0.01, 0.05, 0.1])
        target = rng.choice([0.8, 0.9, rng.uniform(0.6, 0.95)])
        ours = sample_size_means(std, d * std, alpha=alpha, power=target)
        reference = math.ceil(solver.solve_power(d, alpha=alpha, power=target) - 1e-7)
        assert ours in (reference - 1, reference, reference + 1), (d, alpha, target, ours, reference)
        exact += ours == reference
        n = max(10.0, ours * rng.uniform(0.3, 1.5))  # where the power is not yet 1 to 15 digits
        # the shifted central t is within ~0.25 / n of the exact noncentral t's power
        assert abs(mean_power(d, n, alpha) - solver.power(d, n, alpha)) < 0.3 / n, (d, n, alpha)
    assert exact > 0.8 * CASES, exact


def test_relative_mde_for_means_scales_by_the_baseline() -> None:
    assert sample_size_means(20.0, 0.1, baseline_mean=-50.0, relative=True) == sample_size_means(20.0, 5.0)


def test_proportion_sample_size_matches_fleiss() -> None:
    rng = random.Random(305)
    for _ in range(CASES):
        p1 = rng.choice([rng.uniform(0.005, 0.05), rng.uniform(0.05, 0.9)])
        relative = rng.random() < 0.5
        mde = (
            rng.uniform(0.02, 0.5) * rng.choice([1, -1])
            if relative
            else rng.uniform(0.002, 0.1) * rng.choice([1, -1])
        )
        p2 = p1 * (1 + mde) if relative else p1 + mde
        if not 0 < p2 < 1:
            continue
        alpha, target = rng.choice([0.01, 0.05, 0.1]), rng.choice([0.8, 0.9])
        ours = sample_size_proportions(p1, mde, relative=relative, alpha=alpha, power=target)
        z_a, z_b = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(target)
        pbar = (p1 + p2) / 2
        fleiss = (
            z_a * math.sqrt(2 * pbar * (1 - pbar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
        ) ** 2 / (p2 - p1) ** 2
        # Fleiss drops the far tail's power (up to ~2e-5 at alpha 0.1): ours is the same or below,
        # by under 1e-4 relative (a user, or a few thousand of 45 million)
        assert fleiss * (1 - 1e-4) - 1 <= ours <= math.ceil(fleiss), (p1, p2, ours, fleiss)
        assert proportion_power(p1, p2, ours, alpha) >= target
        assert proportion_power(p1, p2, ours - 1, alpha) < target


@pytest.mark.parametrize(
    ("p1", "p2", "target"),
    [(0.10, 0.12, 0.8), (0.03, 0.036, 0.9), (0.5, 0.47, 0.8), (0.005, 0.0025, 0.8), (0.02, 0.01, 0.9)],
)
def test_simulated_power_of_the_z_test_at_the_computed_size(p1: float, p2: float, target: float) -> None:
    n = sample_size_proportions(p1, p2 - p1, power=target)
    rng = random.Random(307)
    trials = 2_000
    hits = 0
    for _ in range(trials):
        ca, cb = rng.binomialvariate(n, p1), rng.binomialvariate(n, p2)
        hits += compare(VariantCounts("A", n, ca, ca), VariantCounts("B", n, cb, cb)).significant
    standard_error = math.sqrt(target * (1 - target) / trials)  # 0.9% at 0.8
    assert abs(hits / trials - target) < 3.5 * standard_error, (n, hits / trials)


def test_days_to_reach() -> None:
    assert days_to_reach(1_000, [1_000, 1_200], 50.0, [1, 1]) == 0
    assert days_to_reach(1_000, [400, 700], 100.0, [1, 1]) == 12  # A needs 600 at 50 a day
    assert days_to_reach(1_000, [400, 700], 100.0, [3, 1]) == 12  # B needs 300 at 25 a day
    assert days_to_reach(1_000, [0, 0], 300.0, [1, 1, 1][:2]) == 7  # 1000 / 150 = 6.67
    assert days_to_reach(1_000, [500, 500], 0.0, [1, 1]) is None
    assert days_to_reach(1_000, [1_000, 1_000], 0.0, [1, 1]) == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sample_size_proportions(0.0, 0.01), "baseline"),
        (lambda: sample_size_proportions(0.1, 0.0), "mde"),
        (lambda: sample_size_proportions(0.95, 0.1), "treatment rate"),
        (lambda: sample_size_proportions(0.1, 0.01, alpha=0.0), "alpha"),
        (lambda: sample_size_proportions(0.1, 0.01, power=1.0), "power"),
        (lambda: sample_size_proportions(0.1, 0.01, alpha=0.5, power=0.4), "exceed alpha"),
        (lambda: sample_size_proportions(0.1, 1e-12), "too small"),
        (lambda: sample_size_means(0.0, 1.0), "std"),
        (lambda: sample_size_means(1.0, 0.1, relative=True), "baseline_mean"),
        (lambda: sample_size_means(1.0, math.nan), "mde"),
        (lambda: n_for_normal_power(0.0), "effect_size"),
        (lambda: mean_power(0.2, 1.0), "above 1"),
        (lambda: days_to_reach(-1, [1, 1], 1.0, [1, 1]), "n_per_variant"),
        (lambda: days_to_reach(10, [1], 1.0, [1, 1]), "one entry per variant"),
        (lambda: days_to_reach(10, [1, 1], -1.0, [1, 1]), "daily_users"),
        (lambda: days_to_reach(10, [1, 1], 1.0, [1, 0]), "weights"),
        (lambda: days_to_reach(10, [1, -1], 1.0, [1, 1]), "exposed"),
    ],
)
def test_invalid_inputs(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
