"""Frequentist comparison of a treatment with the control, from aggregated counts.

Each variant arrives as :class:`VariantCounts` ``(name, n, sum, sum_squares)``: ``n`` users exposed
and the sum and sum of squares of their metric values (for a proportion metric the values are 0
or 1, so ``sum`` is the number of converters and ``sum_squares == sum``). From these:

- per variant, the mean ``sum / n`` and the sample variance ``(sum_squares - sum^2 / n) / (n - 1)``
  (from counters this subtraction loses digits when the spread is tiny against the mean: relative
  error about 1e-16 * sum_squares / (sum_squares - sum^2 / n); record values relative to a
  reference, e.g. seconds above a baseline, if that ratio nears 1e8);
- proportions: the two-proportion z test (pooled standard error under the null of equal rates)
  and the unpooled Wald interval for the difference;
- means: Welch's t test (unequal variances, Welch-Satterthwaite degrees of freedom) and its
  interval for the difference;
- relative lift ``(B - A) / |A|`` with the delta-method variance
  ``Var(B) / A^2 + B^2 Var(A) / A^4`` (``Var`` of a mean = ``s^2 / n``) and a normal interval; its
  p-value is the test above (``B = A`` is the same null hypothesis).

p-values are two-sided. Invalid counts (negative ``n``, more converters than users, a sum of
squares no data could produce) raise ValueError naming the variant and field. Counts that are
valid but not yet informative (fewer than 2 users in a variant, no variation at all, a control
mean of 0 for a relative lift) give ``None`` for what cannot be computed and say why in ``note``:
never NaN, never a crash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from mysetlist.experiments.distributions import norm_ppf, norm_sf, t_ppf, t_sf

Metric = Literal["proportion", "mean"]
METRICS: tuple[Metric, ...] = ("proportion", "mean")


@dataclass(frozen=True, slots=True)
class VariantCounts:
    """One variant's aggregates: users exposed, and the sum and sum of squares of their values."""

    name: str
    n: int
    sum: float
    sum_squares: float


@dataclass(frozen=True, slots=True)
class VariantSummary:
    """A variant's mean (the rate, for a proportion) and sample variance (``None`` when ``n < 2``)."""

    name: str
    n: int
    mean: float | None
    variance: float | None

    @property
    def variance_of_mean(self) -> float | None:
        """``s^2 / n``: the variance of the variant's mean."""
        return None if self.variance is None else self.variance / self.n


@dataclass(frozen=True, slots=True)
class Comparison:
    """Treatment against control.

    ``lift`` is ``B - A`` (``relative=False``) or ``(B - A) / |A|`` (``relative=True``, a fraction:
    0.05 means +5%); ``ci_low``/``ci_high`` its ``1 - alpha`` confidence interval; ``p_value`` the
    two-sided p-value of ``B = A``; ``statistic`` the z or t statistic, ``df`` Welch's degrees of
    freedom (``None`` for the z test); ``standard_error`` that of ``lift``. ``difference`` is always
    ``B - A``. Fields that cannot be computed are ``None`` and ``note`` says why.
    """

    metric: Metric
    relative: bool
    alpha: float
    control: VariantSummary
    treatment: VariantSummary
    difference: float | None
    lift: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    statistic: float | None
    df: float | None
    standard_error: float | None
    note: str | None = None

    @property
    def significant(self) -> bool:
        """Whether ``p_value < alpha`` (False when there is no p-value)."""
        return self.p_value is not None and self.p_value < self.alpha


def validate_counts(counts: VariantCounts, metric: Metric) -> None:
    """Raise ValueError, naming the variant and the field, if ``counts`` cannot be real data."""
    label = f"variant {counts.name!r}" if isinstance(counts.name, str) and counts.name else "variant"
    if not isinstance(counts.name, str) or not counts.name:
        raise ValueError("variant name must be a non-empty string")
    if isinstance(counts.n, bool) or not isinstance(counts.n, int) or counts.n < 0:
        raise ValueError(f"{label}: n (users exposed) must be a whole number >= 0, got {counts.n!r}")
    for field in ("sum", "sum_squares"):
        value = getattr(counts, field)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{label}: {field} must be a finite number, got {value!r}")
    if metric == "proportion":
        if not 0 <= counts.sum <= counts.n:
            raise ValueError(
                f"{label}: sum (converters) must be between 0 and n={counts.n}, got {counts.sum!r}"
            )
        if counts.sum_squares != counts.sum:
            raise ValueError(
                f"{label}: a proportion's values are 0 or 1, so sum_squares must equal sum "
                f"({counts.sum!r}), got {counts.sum_squares!r}"
            )
        return
    if metric != "mean":
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if counts.sum_squares < 0:
        raise ValueError(f"{label}: sum_squares cannot be negative, got {counts.sum_squares!r}")
    if counts.n == 0:
        if counts.sum != 0 or counts.sum_squares != 0:
            raise ValueError(f"{label}: with n=0, sum and sum_squares must be 0")
        return
    # Cauchy-Schwarz: sum^2 <= n * sum_squares (with room for rounding in the stored sums).
    if counts.sum * counts.sum > counts.n * counts.sum_squares * (1 + 1e-9) + 1e-12:
        raise ValueError(
            f"{label}: sum_squares={counts.sum_squares!r} is too small for sum={counts.sum!r} "
            f"over n={counts.n} (sum^2 cannot exceed n * sum_squares)"
        )


def summarize(counts: VariantCounts, metric: Metric) -> VariantSummary:
    """The variant's mean and sample variance (n - 1). Raises ValueError for invalid counts."""
    validate_counts(counts, metric)
    n = counts.n
    if n == 0:
        return VariantSummary(counts.name, 0, None, None)
    mean = counts.sum / n
    if n < 2:
        return VariantSummary(counts.name, n, mean, None)
    if metric == "proportion":
        variance = mean * (1.0 - mean) * n / (n - 1)
    else:
        # Rounding in sum_squares - sum^2/n can dip just below 0 for constant data: clamp.
        variance = max(0.0, (counts.sum_squares - counts.sum * counts.sum / n) / (n - 1))
    return VariantSummary(counts.name, n, mean, variance)


def compare(
    control: VariantCounts,
    treatment: VariantCounts,
    *,
    metric: Metric = "proportion",
    relative: bool = False,
    alpha: float = 0.05,
) -> Comparison:
    """Compare ``treatment`` (B) with ``control`` (A): lift, its interval and the p-value.

    Raises ValueError for an unknown ``metric``, ``alpha`` outside (0, 1), or invalid counts.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    check_alpha(alpha)
    a = summarize(control, metric)
    b = summarize(treatment, metric)
    empty = Comparison(metric, relative, alpha, a, b, None, None, None, None, None, None, None, None)
    if a.mean is None or b.mean is None:
        return _with(empty, note="a variant has no users exposed yet")
    difference = b.mean - a.mean
    if a.variance is None or b.variance is None:
        return _with(
            empty,
            difference=difference,
            lift=_relative(difference, a.mean) if relative else difference,
            note="each variant needs at least 2 users for a test",
        )
    if metric == "proportion":
        return _two_proportions(control, treatment, a.mean, b.mean, alpha, relative, empty)
    return _welch(a.mean, b.mean, a.variance / a.n, b.variance / b.n, a.n, b.n, alpha, relative, empty)


def check_alpha(alpha: float) -> None:
    """Raise ValueError unless ``0 < alpha < 1``."""
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number between 0 and 1 (exclusive), got {alpha!r}")


def _two_proportions(
    control: VariantCounts,
    treatment: VariantCounts,
    mean_a: float,
    mean_b: float,
    alpha: float,
    relative: bool,
    empty: Comparison,
) -> Comparison:
    difference = mean_b - mean_a
    pooled = (control.sum + treatment.sum) / (control.n + treatment.n)
    null_se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / control.n + 1.0 / treatment.n))
    statistic = difference / null_se if null_se > 0 else None
    p_value = 2.0 * norm_sf(abs(statistic)) if statistic is not None else None
    # The interval does not assume the null: each rate's own binomial variance p(1-p)/n.
    var_a = mean_a * (1.0 - mean_a) / control.n
    var_b = mean_b * (1.0 - mean_b) / treatment.n
    note = None if statistic is not None else "no conversions or only conversions: no variation to test"
    z = norm_ppf(1.0 - alpha / 2.0)
    if relative:
        return _relative_result(empty, difference, mean_a, mean_b, var_a, var_b, z, p_value, statistic, note)
    return _interval(
        empty,
        difference,
        difference,
        math.sqrt(var_a + var_b),
        z,
        p_value,
        statistic,
        note,
        "both rates are 0 or 1: the Wald interval is undefined",
    )


def _welch(
    mean_a: float,
    mean_b: float,
    var_a: float,
    var_b: float,
    n_a: int,
    n_b: int,
    alpha: float,
    relative: bool,
    empty: Comparison,
) -> Comparison:
    difference = mean_b - mean_a
    se = math.sqrt(var_a + var_b)
    if se == 0:
        return _with(
            empty,
            difference=difference,
            lift=_relative(difference, mean_a) if relative else difference,
            note="neither variant's values vary: no test is possible",
        )
    # Welch-Satterthwaite: df = (va + vb)^2 / (va^2 / (nA - 1) + vb^2 / (nB - 1)).
    df = (var_a + var_b) ** 2 / (var_a**2 / (n_a - 1) + var_b**2 / (n_b - 1))
    statistic = difference / se
    p_value = 2.0 * t_sf(abs(statistic), df)
    if relative:
        z = norm_ppf(1.0 - alpha / 2.0)
        result = _relative_result(
            empty, difference, mean_a, mean_b, var_a, var_b, z, p_value, statistic, None
        )
        return _with(result, df=df)
    quantile = t_ppf(1.0 - alpha / 2.0, df)
    return _with(
        empty,
        difference=difference,
        lift=difference,
        ci_low=difference - quantile * se,
        ci_high=difference + quantile * se,
        p_value=p_value,
        statistic=statistic,
        df=df,
        standard_error=se,
    )


def relative_lift_variance(mean_a: float, mean_b: float, var_mean_a: float, var_mean_b: float) -> float:
    """The delta-method variance of ``B / A`` (hence of ``(B - A) / |A|``): ``vB / A^2 + B^2 vA / A^4``.

    Raises ValueError when ``mean_a`` is 0 (the ratio is undefined).
    """
    if mean_a == 0:
        raise ValueError("the relative lift is undefined when the control's mean is 0")
    a2 = mean_a * mean_a
    return var_mean_b / a2 + mean_b * mean_b * var_mean_a / (a2 * a2)


def _relative_result(
    empty: Comparison,
    difference: float,
    mean_a: float,
    mean_b: float,
    var_a: float,
    var_b: float,
    z: float,
    p_value: float | None,
    statistic: float | None,
    note: str | None,
) -> Comparison:
    if mean_a == 0:
        return _with(
            empty,
            difference=difference,
            p_value=p_value,
            statistic=statistic,
            note="; ".join(
                filter(
                    None,
                    [note, "the control's mean is 0: a relative lift is undefined (use the absolute lift)"],
                )
            ),
        )
    return _interval(
        empty,
        difference,
        difference / abs(mean_a),
        math.sqrt(relative_lift_variance(mean_a, mean_b, var_a, var_b)),
        z,
        p_value,
        statistic,
        note,
        "no variation: the relative interval is undefined",
    )


def _interval(
    empty: Comparison,
    difference: float,
    lift: float,
    se: float,
    z: float,
    p_value: float | None,
    statistic: float | None,
    note: str | None,
    undefined: str,
) -> Comparison:
    """The result with ``lift +- z se``, or without an interval (and ``undefined`` as the note,
    unless there already is one) when the standard error is 0."""
    if se == 0:
        return _with(
            empty,
            difference=difference,
            lift=lift,
            p_value=p_value,
            statistic=statistic,
            note=note or undefined,
        )
    return _with(
        empty,
        difference=difference,
        lift=lift,
        ci_low=lift - z * se,
        ci_high=lift + z * se,
        p_value=p_value,
        statistic=statistic,
        standard_error=se,
        note=note,
    )


def _relative(difference: float, mean_a: float) -> float | None:
    return None if mean_a == 0 else difference / abs(mean_a)


def _with(base: Comparison, **changes: object) -> Comparison:
    return replace(base, **changes)  # type: ignore[arg-type]
