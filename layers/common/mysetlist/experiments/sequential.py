"""Always-valid inference: the normal-mixture sequential probability ratio test (mSPRT).

For an estimate ``d`` of the difference (treatment minus control) that is approximately
N(theta, V), with V the current variance of the estimate (s_A^2 / n_A + s_B^2 / n_B), mixing the
likelihood ratio against theta = theta0 over theta ~ N(theta0, tau^2) gives (Johari, Pekelis and
Walsh, "Always valid inference", 2017; Robbins' normal mixture)

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 (d - theta0)^2 / (2 V (V + tau^2))).

Lambda is a nonnegative martingale under the null, so by Ville's inequality the chance that it
ever reaches 1 / alpha is at most alpha: ``p = min(1, 1 / Lambda)`` is an always-valid p-value,
and the set of theta0 with Lambda < 1 / alpha,

    d +- sqrt(V (V + tau^2) / tau^2 * (2 log(1 / alpha) + log((V + tau^2) / V))),

is a confidence sequence (the two-sided normal-mixture boundary of Howard, Ramdas, McAuliffe and
Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence sequences", 2021): both stay valid
however often the results are looked at and whenever the test is stopped. The price is a wider
interval than the fixed-horizon one at any single look.

Assumptions: the estimate is approximately normal with its variance well estimated (large
samples, as for the z test), the users arrive independently, and tau is fixed before the data are
seen (a tau fitted to the observed lift would void the guarantee). tau is the scale of the effects
worth detecting: the test is most powerful for effects near it. Reporting ``min`` of the p-values
over all past looks is also valid; this module reports each look on its own, which is conservative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SequentialResult:
    """An always-valid p-value and confidence interval for the difference at one look."""

    p_value: float
    ci_low: float
    ci_high: float


def log_mixture_likelihood_ratio(estimate: float, variance: float, tau2: float, null: float = 0.0) -> float:
    """log Lambda of the normal-mixture SPRT for ``estimate ~ N(theta, variance)`` against ``null``."""
    total = variance + tau2
    return 0.5 * math.log(variance / total) + tau2 * (estimate - null) ** 2 / (2.0 * variance * total)


def msprt(estimate: float, variance: float, tau2: float, alpha: float = 0.05) -> SequentialResult:
    """Always-valid p-value (against zero difference) and confidence interval at level ``1 - alpha``.

    ``estimate`` is the observed difference, ``variance`` its variance now, ``tau2`` the mixing
    variance (the square of the effect scale). Raises ValueError when ``variance`` or ``tau2`` is
    not positive or ``alpha`` is outside (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if not variance > 0.0 or not math.isfinite(variance):
        raise ValueError(f"the variance of the estimate must be positive, got {variance}")
    if not tau2 > 0.0 or not math.isfinite(tau2):
        raise ValueError(f"tau must be positive, got tau^2 = {tau2}")
    log_lr = log_mixture_likelihood_ratio(estimate, variance, tau2)
    p_value = 1.0 if log_lr <= 0.0 else math.exp(-log_lr)
    total = variance + tau2
    half_width = math.sqrt(
        variance * total / tau2 * (2.0 * math.log(1.0 / alpha) + math.log(total / variance))
    )
    return SequentialResult(p_value=p_value, ci_low=estimate - half_width, ci_high=estimate + half_width)
