"""Power and sample size: how many users each variant needs to detect a minimum effect, and how
many days that takes at the current traffic.

- proportions (:func:`sample_size_proportions`): the power of the two-sided pooled z test of
  :mod:`~mysetlist.experiments.frequentist` under the normal approximation,
  ``Phi((|d| - z sigma0) / sigma1) + Phi((-|d| - z sigma0) / sigma1)`` with ``sigma0^2 = 2 pbar qbar / n``
  (the null's pooled variance) and ``sigma1^2 = (p1 q1 + p2 q2) / n`` (the alternative's), solved for
  ``n`` (dropping the far tail this is Fleiss's classic formula);
- means (:func:`sample_size_means`): Welch's test with equal sizes and a common standard deviation,
  the noncentral t approximated by a shifted central t with ``2n - 2`` degrees of freedom
  (power within 0.3 / n of the exact noncentral t; sizes within one user of it);
- :func:`normal_power` / :func:`n_for_normal_power`: the same for a standardized effect
  ``d = delta / sigma`` under the normal approximation (statsmodels' ``NormalIndPower``);
- :func:`days_to_reach`: days until every variant has its sample at the current daily traffic.

Minimum detectable effects are absolute (``0.01`` = one percentage point, or one unit of the
metric) or relative to the baseline (``relative=True``: ``0.05`` = 5% of the baseline).
Sizes are per variant and rounded up; ValueError names what is wrong with an input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from mysetlist.experiments.distributions import norm_cdf, norm_ppf, norm_sf, t_cdf, t_ppf, t_sf
from mysetlist.experiments.frequentist import check_alpha

_MAX_N = 1e15  # beyond this the effect is, for any real product, undetectable


def normal_power(effect_size: float, n_per_variant: float, alpha: float = 0.05) -> float:
    """Power of the two-sided two-sample z test for a standardized effect ``d`` with ``n`` per variant."""
    check_alpha(alpha)
    _check_positive(n_per_variant, "n_per_variant")
    z = norm_ppf(1.0 - alpha / 2.0)
    shift = abs(effect_size) * math.sqrt(n_per_variant / 2.0)
    return norm_sf(z - shift) + norm_cdf(-z - shift)


def n_for_normal_power(effect_size: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The (fractional) n per variant at which :func:`normal_power` reaches ``power``."""
    _check_effect(effect_size, "effect_size")
    return _solve(lambda n: normal_power(effect_size, n, alpha), alpha, power)


def proportion_power(baseline: float, treatment: float, n_per_variant: float, alpha: float = 0.05) -> float:
    """Power of the pooled two-proportion z test for true rates ``baseline`` and ``treatment``."""
    check_alpha(alpha)
    _check_rate(baseline, "baseline")
    _check_rate(treatment, "treatment rate (baseline + mde)")
    _check_positive(n_per_variant, "n_per_variant")
    z = norm_ppf(1.0 - alpha / 2.0)
    delta = abs(treatment - baseline)
    pooled = 0.5 * (baseline + treatment)
    sigma0 = math.sqrt(2.0 * pooled * (1.0 - pooled) / n_per_variant)
    sigma1 = math.sqrt((baseline * (1 - baseline) + treatment * (1 - treatment)) / n_per_variant)
    return norm_cdf((delta - z * sigma0) / sigma1) + norm_cdf((-delta - z * sigma0) / sigma1)


def sample_size_proportions(
    baseline: float, mde: float, *, relative: bool = False, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Users per variant for the z test to detect ``baseline -> baseline + mde`` (absolute) or
    ``baseline * (1 + mde)`` (relative) with probability ``power`` at level ``alpha``.

    Raises ValueError for a baseline outside (0, 1), an mde of 0 or one taking the rate out of
    (0, 1), or alpha/power outside (0, 1).
    """
    _check_rate(baseline, "baseline")
    _check_effect(mde, "mde")
    treatment = baseline * (1.0 + mde) if relative else baseline + mde
    _check_rate(treatment, "treatment rate (baseline + mde)")
    n = _solve(lambda n: proportion_power(baseline, treatment, n, alpha), alpha, power)
    return _whole(n)


def mean_power(effect_size: float, n_per_variant: float, alpha: float = 0.05) -> float:
    """Approximate power of the two-sided t test for a standardized effect ``d`` with ``n`` per variant
    (the noncentral t replaced by a central t shifted by the noncentrality, ``df = 2n - 2``)."""
    check_alpha(alpha)
    if not n_per_variant > 1:
        raise ValueError(f"n_per_variant must be above 1 for a t test, got {n_per_variant!r}")
    df = 2.0 * n_per_variant - 2.0
    critical = t_ppf(1.0 - alpha / 2.0, df)
    shift = abs(effect_size) * math.sqrt(n_per_variant / 2.0)
    return t_sf(critical - shift, df) + t_cdf(-critical - shift, df)


def sample_size_means(
    std: float,
    mde: float,
    *,
    baseline_mean: float | None = None,
    relative: bool = False,
    alpha: float = 0.05,
    power: float = 0.8,
) -> int:
    """Users per variant for Welch's test to detect a change of the mean by ``mde`` (absolute) or
    by ``mde * |baseline_mean|`` (``relative=True``), for a metric with standard deviation ``std``.

    Raises ValueError for a non-positive ``std``, an ``mde`` of 0, a relative mde without a non-zero
    ``baseline_mean``, or alpha/power outside (0, 1).
    """
    _check_positive(std, "std")
    _check_effect(mde, "mde")
    if relative:
        if baseline_mean is None or not math.isfinite(baseline_mean) or baseline_mean == 0:
            raise ValueError("a relative mde needs a non-zero, finite baseline_mean")
        delta = mde * abs(baseline_mean)
    else:
        delta = mde
    effect_size = delta / std
    # The t test never has more power than the z test: search whole sizes upward from the z
    # test's n (the answer is typically 1 or 2 users above it).
    start = _whole(n_for_normal_power(effect_size, alpha, power))
    return _smallest_whole(lambda n: mean_power(effect_size, n, alpha), power, start)


def days_to_reach(
    n_per_variant: int, exposed: Sequence[int], daily_users: float, weights: Sequence[float]
) -> int | None:
    """Whole days until every variant has ``n_per_variant`` users, at ``daily_users`` new users a
    day across the experiment split by ``weights`` (0 when every variant has them; None when more
    are needed and there is no traffic).

    Raises ValueError for negative counts, mismatched lengths or non-positive weights.
    """
    if isinstance(n_per_variant, bool) or not isinstance(n_per_variant, int) or n_per_variant < 0:
        raise ValueError(f"n_per_variant must be a whole number >= 0, got {n_per_variant!r}")
    if len(exposed) != len(weights) or not exposed:
        raise ValueError("exposed and weights must give one entry per variant")
    if not math.isfinite(daily_users) or daily_users < 0:
        raise ValueError(f"daily_users must be a number >= 0, got {daily_users!r}")
    if any(not (math.isfinite(w) and w > 0) for w in weights):
        raise ValueError("weights must be positive numbers")
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in exposed):
        raise ValueError("exposed counts must be whole numbers >= 0")
    total_weight = math.fsum(weights)
    days = 0.0
    for n, weight in zip(exposed, weights, strict=True):
        missing = n_per_variant - n
        if missing <= 0:
            continue
        if daily_users == 0:
            return None
        days = max(days, missing / (daily_users * weight / total_weight))
    return math.ceil(days - 1e-9) if days > 0 else 0


def _solve(power_at: Callable[[float], float], alpha: float, power: float, lowest: float = 0.0) -> float:
    """The n where the increasing function ``power_at(n)`` reaches ``power`` (bisection in log n)."""
    check_alpha(alpha)
    if isinstance(power, bool) or not isinstance(power, int | float) or not 0 < power < 1:
        raise ValueError(f"power must be a number between 0 and 1 (exclusive), got {power!r}")
    if power <= alpha:
        raise ValueError(f"power ({power}) must exceed alpha ({alpha})")
    lo = lowest + 1e-9
    step = max(1.0, lo * 1e-3)
    hi = lo + step
    while power_at(hi) < power:
        lo, hi = hi, hi + step
        step *= 2.0
        if hi > _MAX_N:
            raise ValueError(
                "the minimum detectable effect is too small to detect at any realistic sample size"
            )
    for _ in range(200):
        mid = math.sqrt(lo * hi) if lo > 0 else 0.5 * (lo + hi)
        if power_at(mid) < power:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-10 * hi:
            break
    return hi


def _smallest_whole(power_at: Callable[[float], float], power: float, start: int) -> int:
    """The smallest whole n >= 2 with ``power_at(n) >= power``, searching up from ``start``."""
    lo = max(2, start)
    if power_at(lo) >= power:
        while lo > 2 and power_at(lo - 1) >= power:
            lo -= 1
        return lo
    step = 1
    hi = lo + step
    while power_at(hi) < power:
        lo, step = hi, step * 2
        hi = lo + step
        if hi > _MAX_N:
            raise ValueError(
                "the minimum detectable effect is too small to detect at any realistic sample size"
            )
    while hi - lo > 1:  # power_at(lo) < power <= power_at(hi)
        mid = (lo + hi) // 2
        if power_at(mid) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def _whole(n: float) -> int:
    # Round up, but not past a value that is a whole number up to the solver's tolerance.
    return max(2, math.ceil(n - 1e-7))


def _check_rate(rate: float, name: str) -> None:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < 1:
        raise ValueError(f"{name} must be a rate strictly between 0 and 1, got {rate!r}")


def _check_effect(effect: float, name: str) -> None:
    if (
        isinstance(effect, bool)
        or not isinstance(effect, int | float)
        or not math.isfinite(effect)
        or effect == 0
    ):
        raise ValueError(f"{name} must be a non-zero number, got {effect!r}")


def _check_positive(value: float, name: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
