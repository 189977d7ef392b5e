"""Bayesian comparison of a variant with the control: chance to beat it and expected loss.

Proportions: with a uniform Beta(1, 1) prior, a variant with ``c`` converters among ``n`` exposed
users has the posterior Beta(1 + c, 1 + n - c). The chance that B's rate exceeds A's is computed
exactly with the finite sum of Evan Miller's "Formulas for Bayesian A/B testing"
(``sum_i B(aA + i, bA + bB) / ((bB + i) B(1 + i, bB) B(aA, bA))`` over ``i < aB``), summed over
the smallest of the four posterior parameters (the sum has one of four symmetric forms) with each
term obtained from the previous one by a rational factor, in log space so nothing underflows.
The expected loss of choosing B, ``E[max(pA - pB, 0)]``, follows from the same probability
because ``x * Beta(x; a, b) = a / (a + b) * Beta(x; a + 1, b)``.

Means: with a flat prior and the normal approximation, each variant's mean has the posterior
N(mean, s^2 / n) (sample variance with n - 1); the difference is normal, so the chance to win and
the expected losses have closed forms.

Pure Python (``math`` only): this runs in the Lambda Common layer, which has no numpy or scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mysetlist.experiments.distributions import log_beta as _log_beta
from mysetlist.experiments.distributions import norm_cdf as _normal_cdf
from mysetlist.experiments.distributions import norm_pdf as _normal_pdf

# Past this many terms the exact sum costs more than a request should (each term is a few float
# operations); every posterior parameter is then above two million, where the Beta posteriors are
# normal to far better than the figures' printed precision.
MAX_EXACT_TERMS = 2_000_000


@dataclass(frozen=True, slots=True)
class BayesResult:
    """Chance that the treatment beats the control and the expected loss of either choice."""

    chance_to_win: float
    expected_loss: float  # E[max(control - treatment, 0)]: what choosing the treatment risks
    expected_loss_control: float  # E[max(treatment - control, 0)]: what keeping the control risks


def _prob_second_greater_sum(a1: float, b1: float, a2: int, b2: float) -> float:
    """P(X2 > X1) for X1 ~ Beta(a1, b1), X2 ~ Beta(a2, b2), integer ``a2``: Miller's sum over i < a2.

    Term i is ``B(a1 + i, b1 + b2) / ((b2 + i) B(1 + i, b2) B(a1, b1))``; the ratio of term i + 1
    to term i is ``(a1 + i)(b2 + i) / ((a1 + b1 + b2 + i)(1 + i))``. Terms are summed relative to
    the largest seen so far (a streaming log-sum-exp) because the first can underflow.
    """
    log_term = _log_beta(a1, b1 + b2) - math.log(b2) - _log_beta(1.0, b2) - _log_beta(a1, b1)
    log_scale = log_term
    scaled_sum = 0.0
    for i in range(a2):
        if log_term > log_scale:
            scaled_sum *= math.exp(log_scale - log_term)
            log_scale = log_term
        scaled_sum += math.exp(log_term - log_scale)
        log_term += math.log((a1 + i) * (b2 + i)) - math.log((a1 + b1 + b2 + i) * (1.0 + i))
    if scaled_sum == 0.0:
        return 0.0
    return min(1.0, max(0.0, math.exp(log_scale + math.log(scaled_sum))))


def prob_beta_greater(a_ctl: int, b_ctl: int, a_trt: int, b_trt: int) -> float:
    """P(T > C) for C ~ Beta(a_ctl, b_ctl) and T ~ Beta(a_trt, b_trt), integer parameters >= 1.

    Exact (Miller's finite sum over the smallest parameter); when every parameter exceeds
    :data:`MAX_EXACT_TERMS`, the normal approximation of both Betas. Raises ValueError for a
    parameter below 1.
    """
    for name, value in (("a_ctl", a_ctl), ("b_ctl", b_ctl), ("a_trt", a_trt), ("b_trt", b_trt)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    smallest = min(a_ctl, b_ctl, a_trt, b_trt)
    if smallest > MAX_EXACT_TERMS:
        m_c, v_c = _beta_mean_var(a_ctl, b_ctl)
        m_t, v_t = _beta_mean_var(a_trt, b_trt)
        return _normal_cdf((m_t - m_c) / math.sqrt(v_c + v_t))
    # P(T > C) = sum over a_trt; = 1 - P(C > T) = 1 - sum over a_ctl; and with 1 - X ~ Beta(b, a),
    # P(T > C) = P(1 - C > 1 - T): a sum over b_ctl, or 1 - a sum over b_trt.
    if smallest == a_trt:
        return _prob_second_greater_sum(a_ctl, b_ctl, a_trt, b_trt)
    if smallest == a_ctl:
        return 1.0 - _prob_second_greater_sum(a_trt, b_trt, a_ctl, b_ctl)
    if smallest == b_ctl:
        return _prob_second_greater_sum(b_trt, a_trt, b_ctl, a_ctl)
    return 1.0 - _prob_second_greater_sum(b_ctl, a_ctl, b_trt, a_trt)


def _beta_mean_var(a: int, b: int) -> tuple[float, float]:
    total = a + b
    return a / total, a * b / (total * total * (total + 1.0))


def _check_counts(name: str, n: int, conversions: int) -> None:
    if n < 0:
        raise ValueError(f"{name}.n must not be negative, got {n}")
    if conversions < 0 or conversions > n:
        raise ValueError(f"{name}.sum must be between 0 and n ({n}) for a proportion, got {conversions}")


def compare_proportions(n_ctl: int, conv_ctl: int, n_trt: int, conv_trt: int) -> BayesResult:
    """Beta(1 + c, 1 + n - c) posteriors: chance the treatment's rate is higher, expected losses.

    Raises ValueError when a count is negative or converters exceed the users exposed.
    """
    _check_counts("control", n_ctl, conv_ctl)
    _check_counts("treatment", n_trt, conv_trt)
    a_c, b_c = 1 + conv_ctl, 1 + n_ctl - conv_ctl
    a_t, b_t = 1 + conv_trt, 1 + n_trt - conv_trt
    mean_c = a_c / (a_c + b_c)
    mean_t = a_t / (a_t + b_t)
    win = prob_beta_greater(a_c, b_c, a_t, b_t)
    # E[max(C - T, 0)] = E[C; C > T] - E[T; C > T], and E[C; C > T] = mean_c * P(C' > T) with
    # C' ~ Beta(a_c + 1, b_c) (size-biased Beta); likewise for T.
    loss_trt = mean_c * (1.0 - prob_beta_greater(a_c + 1, b_c, a_t, b_t)) - mean_t * (
        1.0 - prob_beta_greater(a_c, b_c, a_t + 1, b_t)
    )
    loss_ctl = mean_t * prob_beta_greater(a_c, b_c, a_t + 1, b_t) - mean_c * prob_beta_greater(
        a_c + 1, b_c, a_t, b_t
    )
    return BayesResult(
        chance_to_win=win,
        expected_loss=max(0.0, loss_trt),
        expected_loss_control=max(0.0, loss_ctl),
    )


def compare_means(
    mean_ctl: float, var_of_mean_ctl: float, mean_trt: float, var_of_mean_trt: float
) -> BayesResult:
    """Normal posteriors N(mean, s^2 / n) (flat prior): chance to win and expected losses.

    ``var_of_mean_*`` is the posterior variance of each mean (the sample variance over n). With
    D = T - C ~ N(d, s^2): P(D > 0) = Phi(d / s), E[max(-D, 0)] = s phi(d / s) - d Phi(-d / s),
    E[max(D, 0)] = s phi(d / s) + d Phi(d / s). Raises ValueError for a negative variance or when
    both are zero (no uncertainty to weigh).
    """
    if var_of_mean_ctl < 0 or var_of_mean_trt < 0:
        raise ValueError("the variance of a mean cannot be negative")
    spread = math.sqrt(var_of_mean_ctl + var_of_mean_trt)
    if spread == 0.0:
        raise ValueError("both variants have zero variance: the posterior is degenerate")
    diff = mean_trt - mean_ctl
    z = diff / spread
    density = _normal_pdf(z)
    return BayesResult(
        chance_to_win=_normal_cdf(z),
        expected_loss=max(0.0, spread * density - diff * _normal_cdf(-z)),
        expected_loss_control=max(0.0, spread * density + diff * _normal_cdf(z)),
    )
