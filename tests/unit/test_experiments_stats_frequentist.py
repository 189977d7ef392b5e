"""Frequentist comparisons against statsmodels and scipy on seeded, generated experiments."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats  # type: ignore[import-untyped]
from statsmodels.stats.proportion import (  # type: ignore[import-untyped]
    confint_proportions_2indep,
    proportions_ztest,
)

from mysetlist.experiments.distributions import norm_ppf
from mysetlist.experiments.frequentist import (
    VariantCounts,
    compare,
    relative_lift_variance,
    summarize,
)

CASES = 400


def _close(ours: float | None, reference: float, rel: float = 1e-9, abs_: float = 1e-12) -> bool:
    return ours is not None and math.isclose(ours, float(reference), rel_tol=rel, abs_tol=abs_)


def _proportion(rng: random.Random, name: str) -> VariantCounts:
    n = rng.choice([rng.randint(2, 60), rng.randint(60, 5_000), rng.randint(5_000, 2_000_000)])
    rate = rng.choice([rng.uniform(0.001, 0.05), rng.uniform(0.05, 0.95)])
    converters = min(n, max(0, round(rng.gauss(n * rate, math.sqrt(n * rate * (1 - rate)) + 1))))
    return VariantCounts(name, n, converters, converters)


def _mean_sample(
    rng: random.Random, name: str, near: tuple[float, float] | None = None
) -> tuple[VariantCounts, list[float]]:
    """A sample of normal values; ``near=(mu, sigma)`` puts its mean within a few standard errors
    of ``mu`` (so p-values spread over (0, 1) instead of all being ~0)."""
    n = rng.choice([rng.randint(2, 30), rng.randint(30, 800)])
    if near is None:
        mu, sigma = rng.uniform(-50, 200), 10 ** rng.uniform(-2, 2)
    else:
        sigma = near[1] * rng.uniform(0.3, 3)
        mu = near[0] + rng.gauss(0, 2) * math.hypot(near[1], sigma) / math.sqrt(n)
    values = [rng.gauss(mu, sigma) for _ in range(n)]
    return VariantCounts(name, n, math.fsum(values), math.fsum(v * v for v in values)), values


def test_two_proportion_z_test_and_wald_interval_match_statsmodels() -> None:
    rng = random.Random(101)
    checked = 0
    for _ in range(CASES):
        a, b = _proportion(rng, "A"), _proportion(rng, "B")
        alpha = rng.choice([0.01, 0.05, 0.1, rng.uniform(0.001, 0.3)])
        result = compare(a, b, metric="proportion", alpha=alpha)
        pooled = (a.sum + b.sum) / (a.n + b.n)
        if pooled in (0.0, 1.0):
            assert result.p_value is None
            assert result.note
            continue
        z, p = proportions_ztest([b.sum, a.sum], [b.n, a.n])
        assert _close(result.statistic, z), (a, b)
        assert _close(result.p_value, p, 1e-9, 1e-15), (a, b)
        low, high = confint_proportions_2indep(
            b.sum, b.n, a.sum, a.n, method="wald", compare="diff", alpha=alpha
        )
        if low == high:  # both rates at 0 or 1: the Wald interval collapses
            assert result.ci_low is None
            continue
        assert _close(result.ci_low, low), (a, b, alpha)
        assert _close(result.ci_high, high), (a, b, alpha)
        assert _close(result.lift, b.sum / b.n - a.sum / a.n)
        checked += 1
    assert checked > CASES * 0.9


def test_welch_t_test_and_interval_match_scipy() -> None:
    rng = random.Random(103)
    for _ in range(CASES):
        a, values_a = _mean_sample(rng, "A")
        near = (stats.tmean(values_a), stats.tstd(values_a)) if rng.random() < 0.7 else None
        b, values_b = _mean_sample(rng, "B", near)
        alpha = rng.choice([0.01, 0.05, 0.1])
        result = compare(a, b, metric="mean", alpha=alpha)
        # Counters cost the variance digits in proportion to sum_squares / (n - 1) s^2 (the data's
        # mean against its spread): the tolerance scales with that condition number.
        rel = max(1e-8, 1e-14 * max(_condition(a), _condition(b)))
        mean_a, mean_b = stats.tmean(values_a), stats.tmean(values_b)
        sd_a, sd_b = stats.tstd(values_a), stats.tstd(values_b)
        t, p = stats.ttest_ind_from_stats(mean_b, sd_b, b.n, mean_a, sd_a, a.n, equal_var=False)
        raw = stats.ttest_ind(values_b, values_a, equal_var=False)
        interval = raw.confidence_interval(confidence_level=1 - alpha)
        assert _close(result.statistic, t, rel), (a, b)
        assert _close(result.p_value, p, rel, 1e-14), (a, b)
        assert _close(result.df, raw.df, rel), (a, b)
        scale = abs(interval.high - interval.low)
        assert _close(result.ci_low, interval.low, rel, rel * scale), (a, b)
        assert _close(result.ci_high, interval.high, rel, rel * scale), (a, b)
        summary = summarize(a, "mean")
        assert _close(summary.variance, sd_a**2, rel), a


def _condition(counts: VariantCounts) -> float:
    spread = counts.sum_squares - counts.sum**2 / counts.n
    return counts.sum_squares / spread


def test_relative_lift_and_delta_method_interval() -> None:
    rng = random.Random(107)
    for _ in range(CASES):
        a, b = _proportion(rng, "A"), _proportion(rng, "B")
        result = compare(a, b, metric="proportion", relative=True, alpha=0.05)
        absolute = compare(a, b, metric="proportion", alpha=0.05)
        assert result.p_value == absolute.p_value  # the same null hypothesis, B = A
        if a.sum == 0:
            assert result.lift is None
            assert "control" in (result.note or "")
            continue
        pa, pb = a.sum / a.n, b.sum / b.n
        assert _close(result.lift, (pb - pa) / pa)
        if result.standard_error is None:
            continue
        se = math.sqrt(pb * (1 - pb) / b.n / pa**2 + pb**2 * pa * (1 - pa) / a.n / pa**4)
        z = stats.norm.ppf(0.975)
        assert _close(result.ci_low, (pb - pa) / pa - z * se)
        assert _close(result.ci_high, (pb - pa) / pa + z * se)


def test_delta_method_variance_matches_simulation() -> None:
    # The ratio of two independent sample means, simulated: its variance is the delta method's
    # to within the Monte Carlo error (and the method's own O(1/n^2) bias) at these sizes.
    rng = random.Random(109)
    for mean_a, mean_b, sd_a, sd_b, n in [(10.0, 11.0, 4.0, 5.0, 400), (0.1, 0.12, 0.3, 0.32, 2_000)]:
        ratios = []
        for _ in range(4_000):
            xa = rng.gauss(mean_a, sd_a / math.sqrt(n))  # a sample mean's distribution
            xb = rng.gauss(mean_b, sd_b / math.sqrt(n))
            ratios.append(xb / xa)
        simulated = stats.tvar(ratios)
        predicted = relative_lift_variance(mean_a, mean_b, sd_a**2 / n, sd_b**2 / n)
        # the variance estimate of 4000 draws has a relative standard error of sqrt(2/3999) = 2.2%
        assert abs(simulated / predicted - 1) < 0.08, (simulated, predicted)


def test_relative_interval_covers_the_true_lift_at_its_nominal_rate() -> None:
    rng = random.Random(113)
    true_a, true_b, n = 0.10, 0.11, 20_000
    trials, covered = 1_500, 0
    for _ in range(trials):
        ca = round(rng.gauss(n * true_a, math.sqrt(n * true_a * (1 - true_a))))
        cb = round(rng.gauss(n * true_b, math.sqrt(n * true_b * (1 - true_b))))
        r = compare(VariantCounts("A", n, ca, ca), VariantCounts("B", n, cb, cb), relative=True, alpha=0.1)
        assert r.ci_low is not None
        assert r.ci_high is not None
        covered += r.ci_low <= 0.1 <= r.ci_high
    # 90% nominal; binomial standard error over 1500 trials is 0.8%
    assert abs(covered / trials - 0.9) < 0.03, covered / trials


def test_relative_lift_of_means_uses_the_welch_p_value_and_a_normal_interval() -> None:
    a = VariantCounts("A", 50, 500.0, 500.0**2 / 50 + 49 * 4.0)  # mean 10, variance 4
    b = VariantCounts("B", 60, 660.0, 660.0**2 / 60 + 59 * 9.0)  # mean 11, variance 9
    r = compare(a, b, metric="mean", relative=True)
    absolute = compare(a, b, metric="mean")
    assert r.lift == pytest.approx(0.1)
    assert r.p_value == absolute.p_value
    assert r.df == absolute.df
    se = math.sqrt(relative_lift_variance(10.0, 11.0, 4.0 / 50, 9.0 / 60))
    assert r.ci_low == pytest.approx(0.1 - norm_ppf(0.975) * se)


def test_negative_control_mean_uses_its_absolute_value() -> None:
    a = VariantCounts("A", 10, -20.0, 40.0 + 9 * 1.0)  # mean -2, variance 1
    b = VariantCounts("B", 10, -10.0, 10.0 + 9 * 1.0)  # mean -1
    r = compare(a, b, metric="mean", relative=True)
    assert r.lift == pytest.approx(0.5)  # B is higher: a positive lift


def test_degenerate_counts_give_none_and_a_note_never_nan() -> None:
    cases = [
        (VariantCounts("A", 0, 0, 0), VariantCounts("B", 10, 3, 3), "proportion", "no users"),
        (VariantCounts("A", 1, 1, 1), VariantCounts("B", 10, 3, 3), "proportion", "at least 2"),
        (VariantCounts("A", 100, 0, 0), VariantCounts("B", 100, 0, 0), "proportion", "variation"),
        (VariantCounts("A", 5, 10.0, 20.0), VariantCounts("B", 5, 10.0, 20.0), "mean", "vary"),
    ]
    for a, b, metric, note in cases:
        for relative in (False, True):
            r = compare(a, b, metric=metric, relative=relative)  # type: ignore[arg-type]
            assert r.p_value is None
            assert note in (r.note or ""), r
            for value in (r.lift, r.ci_low, r.ci_high, r.statistic, r.standard_error):
                assert value is None or math.isfinite(value)
            assert not r.significant
    zero_control = compare(VariantCounts("A", 100, 0, 0), VariantCounts("B", 100, 5, 5), relative=True)
    assert zero_control.lift is None
    assert zero_control.p_value is not None
    assert "control's mean is 0" in (zero_control.note or "")


@pytest.mark.parametrize(
    ("a", "metric", "alpha", "message"),
    [
        (VariantCounts("A", -1, 0, 0), "proportion", 0.05, "'A': n"),
        (VariantCounts("A", 10, 11, 11), "proportion", 0.05, "'A': sum"),
        (VariantCounts("A", 10, 3, 4), "proportion", 0.05, "sum_squares must equal sum"),
        (VariantCounts("A", 10, 10.0, 5.0), "mean", 0.05, "too small"),
        (VariantCounts("A", 10, math.nan, 5.0), "mean", 0.05, "finite"),
        (VariantCounts("A", 10, 1.0, -5.0), "mean", 0.05, "negative"),
        (VariantCounts("", 10, 1, 1), "proportion", 0.05, "name"),
        (VariantCounts("A", 10, 1, 1), "median", 0.05, "metric"),
        (VariantCounts("A", 10, 1, 1), "proportion", 1.0, "alpha"),
        (VariantCounts("A", 10, 1, 1), "proportion", 0, "alpha"),
    ],
)
def test_invalid_input_raises_a_value_error_naming_the_field(a, metric, alpha, message) -> None:
    with pytest.raises(ValueError, match=message):
        compare(a, VariantCounts("B", 10, 2, 2), metric=metric, alpha=alpha)
