"""The Bayesian comparison against scipy: numerical integration and Monte Carlo on generated cases."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import integrate, stats  # type: ignore[import-untyped]

from mysetlist.experiments.bayesian import (
    MAX_EXACT_TERMS,
    compare_means,
    compare_proportions,
    prob_beta_greater,
)


def _quad_prob_greater(a_c: float, b_c: float, a_t: float, b_t: float) -> float:
    """P(T > C) = integral of f_T(x) F_C(x) over the region where either density lives."""
    ctl, trt = stats.beta(a_c, b_c), stats.beta(a_t, b_t)
    lo = min(ctl.ppf(1e-13), trt.ppf(1e-13))
    hi = max(ctl.isf(1e-13), trt.isf(1e-13))
    points = sorted({ctl.mean(), trt.mean()})
    value, _ = integrate.quad(
        lambda x: trt.pdf(x) * ctl.cdf(x), lo, hi, points=points, limit=500, epsabs=1e-13, epsrel=1e-11
    )
    return float(value)


def _generated_cases(count: int, seed: int) -> list[tuple[int, int, int, int]]:
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        n_c = rng.choice([rng.randint(0, 30), rng.randint(30, 3000), rng.randint(3000, 60000)])
        n_t = max(0, int(n_c * rng.uniform(0.5, 1.5)))
        rate = rng.choice([rng.uniform(0.0, 0.05), rng.uniform(0.05, 0.95), rng.uniform(0.95, 1.0)])
        lift = rng.uniform(-0.3, 0.3)
        conv_c = min(n_c, max(0, round(n_c * rate)))
        conv_t = min(n_t, max(0, round(n_t * min(1.0, rate * (1.0 + lift)))))
        cases.append((n_c, conv_c, n_t, conv_t))
    return cases


@pytest.mark.parametrize(("n_c", "conv_c", "n_t", "conv_t"), _generated_cases(100, seed=7))
def test_chance_to_win_matches_numerical_integration(n_c: int, conv_c: int, n_t: int, conv_t: int) -> None:
    a_c, b_c, a_t, b_t = 1 + conv_c, 1 + n_c - conv_c, 1 + conv_t, 1 + n_t - conv_t
    ours = compare_proportions(n_c, conv_c, n_t, conv_t).chance_to_win
    assert ours == pytest.approx(_quad_prob_greater(a_c, b_c, a_t, b_t), abs=1e-8)


@pytest.mark.parametrize(
    ("a_c", "b_c", "a_t", "b_t"),
    [
        (1, 1, 1, 1),
        (3, 10, 5, 8),  # each of the four symmetric forms of the sum is the shortest in one case
        (10, 3, 8, 5),
        (10, 30, 50, 2),
        (2, 50_000, 3, 50_000),
        (40_000, 60_000, 40_100, 59_900),
        (900, 100, 880, 120),
    ],
)
def test_every_form_of_the_exact_sum(a_c: int, b_c: int, a_t: int, b_t: int) -> None:
    ours = prob_beta_greater(a_c, b_c, a_t, b_t)
    assert ours == pytest.approx(_quad_prob_greater(a_c, b_c, a_t, b_t), abs=1e-9)
    # Swapping the roles gives the complement (the posteriors are continuous: no ties).
    assert ours + prob_beta_greater(a_t, b_t, a_c, b_c) == pytest.approx(1.0, abs=1e-12)


def test_a_sum_whose_first_terms_underflow_still_adds_up() -> None:
    # The first term of Miller's sum is exp(-800) or so here: summed in log space, not lost.
    a_c, b_c, a_t, b_t = 5_001, 95_001, 5_101, 94_901
    assert prob_beta_greater(a_c, b_c, a_t, b_t) == pytest.approx(
        _quad_prob_greater(a_c, b_c, a_t, b_t), abs=1e-8
    )


def test_beyond_the_exact_limit_the_normal_approximation_agrees() -> None:
    big = MAX_EXACT_TERMS + 1
    ours = prob_beta_greater(big, 3 * big, big + 1500, 3 * big - 1500)
    assert ours == pytest.approx(_quad_prob_greater(big, 3 * big, big + 1500, 3 * big - 1500), abs=1e-4)


@pytest.mark.parametrize(
    ("n_c", "conv_c", "n_t", "conv_t"),
    [(0, 0, 0, 0), (10, 1, 12, 4), (1000, 100, 1000, 120), (5000, 250, 5200, 240), (20, 20, 20, 19)],
)
def test_expected_losses_match_monte_carlo(n_c: int, conv_c: int, n_t: int, conv_t: int) -> None:
    rng = np.random.default_rng(11)
    draws = 1_000_000
    ctl = rng.beta(1 + conv_c, 1 + n_c - conv_c, draws)
    trt = rng.beta(1 + conv_t, 1 + n_t - conv_t, draws)
    result = compare_proportions(n_c, conv_c, n_t, conv_t)
    for ours, sample in (
        (result.expected_loss, np.maximum(ctl - trt, 0.0)),
        (result.expected_loss_control, np.maximum(trt - ctl, 0.0)),
        (result.chance_to_win, (trt > ctl).astype(float)),
    ):
        tolerance = 5.0 * sample.std() / math.sqrt(draws) + 1e-12
        assert abs(ours - sample.mean()) < tolerance


def test_expected_losses_differ_by_the_difference_of_means() -> None:
    # E[max(T - C, 0)] - E[max(C - T, 0)] = E[T] - E[C], exactly.
    result = compare_proportions(800, 61, 790, 75)
    mean_gap = 76 / 792 - 62 / 802
    assert result.expected_loss_control - result.expected_loss == pytest.approx(mean_gap, abs=1e-12)


@pytest.mark.parametrize(
    ("field", "args"),
    [
        ("control.n", (-1, 0, 10, 1)),
        ("control.sum", (10, 11, 10, 1)),
        ("treatment.sum", (10, 1, 10, -1)),
    ],
)
def test_invalid_counts_name_the_field(field: str, args: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError, match=field):
        compare_proportions(*args)


def test_beta_parameters_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="b_trt"):
        prob_beta_greater(1, 1, 1, 0)


def _generated_mean_cases(count: int, seed: int) -> list[tuple[float, float, float, float]]:
    rng = random.Random(seed)
    return [
        (rng.uniform(-5, 5), rng.uniform(1e-4, 2.0), rng.uniform(-5, 5), rng.uniform(1e-4, 2.0))
        for _ in range(count)
    ]


@pytest.mark.parametrize(("m_c", "v_c", "m_t", "v_t"), _generated_mean_cases(60, seed=3))
def test_means_match_integration_over_the_normal_difference(
    m_c: float, v_c: float, m_t: float, v_t: float
) -> None:
    diff = stats.norm(m_t - m_c, math.sqrt(v_c + v_t))
    lo, hi = diff.ppf(1e-15), diff.isf(1e-15)
    loss_trt = integrate.quad(lambda x: max(-x, 0.0) * diff.pdf(x), lo, hi, points=[0.0], limit=200)[0]
    loss_ctl = integrate.quad(lambda x: max(x, 0.0) * diff.pdf(x), lo, hi, points=[0.0], limit=200)[0]
    result = compare_means(m_c, v_c, m_t, v_t)
    assert result.chance_to_win == pytest.approx(diff.sf(0.0), abs=1e-12)
    assert result.expected_loss == pytest.approx(loss_trt, abs=1e-8)
    assert result.expected_loss_control == pytest.approx(loss_ctl, abs=1e-8)


def test_means_refuse_a_degenerate_posterior() -> None:
    with pytest.raises(ValueError, match="negative"):
        compare_means(1.0, -0.1, 1.0, 0.1)
    with pytest.raises(ValueError, match="zero variance"):
        compare_means(1.0, 0.0, 2.0, 0.0)
