"""The analyst's entry point: one JSON document of exported counts in, one JSON-ready analysis out.

Two kinds of document (the contract of ``make ab-stats``):

* a comparison, ``{"metric": "proportion" | "mean", "method": "frequentist" | "bayesian" |
  "sequential", "relative": bool, "alpha": 0.05, "weights": [...], "tau": 0.1,
  "variants": [{"name", "n", "sum", "sum_squares"}, ...]}``, the first variant being the control:
  every other variant is compared with it (``lift``, ``ci_low``, ``ci_high`` and ``p_value``, or
  ``chance_to_win`` and ``expected_loss`` for the Bayesian method), and the users exposed are
  checked against the weights (``srm_p``, ``srm_ok``); ``significant`` (frequentist and sequential)
  is true only when ``p_value < alpha`` and the sample ratio check passed (a failed check means no
  verdict); the sequential rows also give ``mixing_sd``, tau in the lift's units;
* an adjustment, ``{"adjust": "holm" | "bh", "p_values": [...]}``, answered with ``{"adjusted": [...]}``
  in the same order.

``method``, ``relative``, ``alpha`` and ``weights`` are optional (frequentist, absolute, 0.05, equal
weights); ``tau`` (sequential only) is the mixing scale in per-user standard deviations of the
metric (default 0.1, a small standardized effect). For a proportion ``sum`` is the number of
converters and ``sum_squares`` (optional) must equal it. Invalid input raises ValueError with a
message naming the field.
"""

from __future__ import annotations

import math
from typing import Any

from mysetlist.experiments import bayesian, frequentist, multiple, sequential, srm

METRICS = ("proportion", "mean")
METHODS = ("frequentist", "bayesian", "sequential")
ADJUSTMENTS = ("holm", "bh")
DEFAULT_ALPHA = 0.05
DEFAULT_TAU = 0.1


def analyze(document: Any) -> dict[str, Any]:
    """Analyse one document (see the module docstring). Raises ValueError naming the bad field."""
    if not isinstance(document, dict):
        raise ValueError("the document must be a JSON object")
    if "adjust" in document:
        return _adjust(document)
    return _compare(document)


# ----------------------------------------------------------------------------- adjustment


def _adjust(document: dict[str, Any]) -> dict[str, Any]:
    method = document["adjust"]
    if method not in ADJUSTMENTS:
        raise ValueError(f"adjust must be one of {', '.join(ADJUSTMENTS)}, got {method!r}")
    p_values = document.get("p_values")
    if not isinstance(p_values, list) or not p_values:
        raise ValueError("p_values must be a non-empty list of numbers")
    checked = [_number(p, f"p_values[{i}]") for i, p in enumerate(p_values)]
    for i, p in enumerate(checked):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p_values[{i}] must be between 0 and 1, got {p}")
    adjusted = multiple.holm(checked) if method == "holm" else multiple.bh(checked)
    return {"adjust": method, "adjusted": list(adjusted)}


# ----------------------------------------------------------------------------- comparison


def _compare(document: dict[str, Any]) -> dict[str, Any]:
    metric = document.get("metric")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    method = document.get("method", "frequentist")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    relative = document.get("relative", False)
    if not isinstance(relative, bool):
        raise ValueError(f"relative must be true or false, got {relative!r}")
    alpha = _number(document.get("alpha", DEFAULT_ALPHA), "alpha")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    variants = _variants(document.get("variants"), metric)
    weights = _weights(document.get("weights"), len(variants))
    tau = _number(document.get("tau", DEFAULT_TAU), "tau")
    if not tau > 0.0:
        raise ValueError(f"tau must be positive, got {tau}")

    srm_p = _finite(srm.srm_test([v.n for v in variants], weights))
    srm_ok = srm_p is not None and srm.srm_ok(srm_p)
    control = variants[0]
    rows = []
    for treatment in variants[1:]:
        row: dict[str, Any] = {"name": treatment.name, "n": treatment.n, "mean": _mean(treatment)}
        if method == "frequentist":
            row.update(_frequentist(control, treatment, metric, relative, alpha))
        elif method == "bayesian":
            row.update(_bayesian(control, treatment, metric, relative))
        else:
            row.update(_sequential(control, treatment, variants, metric, relative, alpha, tau))
        if "p_value" in row:
            # A verdict needs both a small p-value and a sample ratio that matches the weights.
            row["significant"] = row["p_value"] is not None and row["p_value"] < alpha and srm_ok
        row["srm_p"] = srm_p
        rows.append(row)
    return {
        "metric": metric,
        "method": method,
        "relative": relative,
        "alpha": alpha,
        "srm_p": srm_p,
        "srm_ok": srm_ok,
        "control": {"name": control.name, "n": control.n, "mean": _mean(control)},
        "variants": rows,
    }


def _frequentist(
    control: frequentist.VariantCounts,
    treatment: frequentist.VariantCounts,
    metric: str,
    relative: bool,
    alpha: float,
) -> dict[str, Any]:
    result = frequentist.compare(
        control,
        treatment,
        metric="proportion" if metric == "proportion" else "mean",
        relative=relative,
        alpha=alpha,
    )
    row: dict[str, Any] = {
        "lift": _finite(result.lift),
        "ci_low": _finite(result.ci_low),
        "ci_high": _finite(result.ci_high),
        "p_value": _finite(result.p_value),
    }
    if result.note:
        row["note"] = result.note
    return row


def _bayesian(
    control: frequentist.VariantCounts,
    treatment: frequentist.VariantCounts,
    metric: str,
    relative: bool,
) -> dict[str, Any]:
    row: dict[str, Any] = {"lift": _lift(control, treatment, relative)}
    if metric == "proportion":
        result = bayesian.compare_proportions(control.n, int(control.sum), treatment.n, int(treatment.sum))
    else:
        # Early in a test (fewer than two users, or all values equal) the counts cannot support a
        # posterior yet: null figures and a note, as the frequentist rows do, not an error.
        var_c, var_t = _var_of_mean(control, metric), _var_of_mean(treatment, metric)
        if control.n < 2 or treatment.n < 2 or var_c + var_t == 0.0:
            note = "each variant needs at least two users and some variation in the values"
            return row | {
                "chance_to_win": None,
                "expected_loss": None,
                "expected_loss_control": None,
                "note": note,
            }
        result = bayesian.compare_means(_mean_or_zero(control), var_c, _mean_or_zero(treatment), var_t)
    return row | {
        "chance_to_win": _finite(result.chance_to_win),
        "expected_loss": _finite(result.expected_loss),
        "expected_loss_control": _finite(result.expected_loss_control),
    }


def _sequential(
    control: frequentist.VariantCounts,
    treatment: frequentist.VariantCounts,
    variants: list[frequentist.VariantCounts],
    metric: str,
    relative: bool,
    alpha: float,
    tau: float,
) -> dict[str, Any]:
    mean_c, mean_t = _mean_or_zero(control), _mean_or_zero(treatment)
    var_c, var_t = _var_of_mean(control, metric), _var_of_mean(treatment, metric)
    estimate = mean_t - mean_c
    variance = var_c + var_t
    # tau is standardized: the effect scale in per-user standard deviations, pooled over all
    # variants (the same under the null), so one default suits every metric's units.
    effect_scale = tau * _pooled_sd(variants)
    note = None
    if control.n < 2 or treatment.n < 2:
        note = "each variant needs at least two users"
    elif relative and mean_c == 0.0:
        note = "the relative lift is undefined while the control's mean is 0"
    elif relative:
        estimate /= abs(mean_c)
        variance = frequentist.relative_lift_variance(mean_c, mean_t, var_c, var_t)
        effect_scale /= abs(mean_c)
    if note is None and (variance == 0.0 or effect_scale == 0.0):
        note = "no variation in the values yet (e.g. no converters): nothing to test"
    if note is not None:
        # Early in a test the counts cannot support the test yet: null figures and a note.
        lift = _lift(control, treatment, relative)
        return {
            "lift": lift,
            "ci_low": None,
            "ci_high": None,
            "p_value": None,
            "mixing_sd": None,
            "note": note,
        }
    result = sequential.msprt(estimate, variance, effect_scale**2, alpha)
    return {
        "lift": _finite(estimate),
        "ci_low": _finite(result.ci_low),
        "ci_high": _finite(result.ci_high),
        "p_value": _finite(result.p_value),
        "mixing_sd": effect_scale,
    }


# ----------------------------------------------------------------------------- counts


def _mean(variant: frequentist.VariantCounts) -> float | None:
    return variant.sum / variant.n if variant.n > 0 else None


def _mean_or_zero(variant: frequentist.VariantCounts) -> float:
    return variant.sum / variant.n if variant.n > 0 else 0.0


def _var_of_mean(variant: frequentist.VariantCounts, metric: str) -> float:
    """The variance of a variant's mean: p (1 - p) / n for a proportion (as the z test's interval),
    s^2 / n with the sample variance s^2 (n - 1) for a mean."""
    n = variant.n
    if n < 2:
        return 0.0
    mean = variant.sum / n
    if metric == "proportion":
        return mean * (1.0 - mean) / n
    return max(0.0, (variant.sum_squares - n * mean * mean) / (n - 1)) / n


def _pooled_sd(variants: list[frequentist.VariantCounts]) -> float:
    n = sum(v.n for v in variants)
    total = sum(v.sum for v in variants)
    squares = sum(v.sum_squares for v in variants)
    mean = total / n
    return math.sqrt(max(0.0, (squares - n * mean * mean) / (n - 1)))


def _lift(
    control: frequentist.VariantCounts, treatment: frequentist.VariantCounts, relative: bool
) -> float | None:
    if control.n == 0 or treatment.n == 0:
        return None
    mean_c, mean_t = control.sum / control.n, treatment.sum / treatment.n
    if not relative:
        return _finite(mean_t - mean_c)
    return None if mean_c == 0.0 else _finite((mean_t - mean_c) / abs(mean_c))


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: an undefined figure is reported as null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


# ----------------------------------------------------------------------------- validation


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{field} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{field} must be finite, got {value!r}")
    return float(value)


def _variants(raw: Any, metric: str) -> list[frequentist.VariantCounts]:
    if not isinstance(raw, list) or len(raw) < 2:
        raise ValueError("variants must be a list of at least two variants (the first is the control)")
    variants = [_variant(item, f"variants[{i}]", metric) for i, item in enumerate(raw)]
    names = [v.name for v in variants]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ValueError(f"variants[{i}].name {name!r} is not unique")
    if sum(v.n for v in variants) < 2:
        raise ValueError("variants must expose at least two users in total")
    return variants


def _variant(item: Any, field: str, metric: str) -> frequentist.VariantCounts:
    if not isinstance(item, dict):
        raise ValueError(f"{field} must be an object with name, n, sum and sum_squares")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{field}.name must be a non-empty string")
    n = item.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{field}.n must be a non-negative integer, got {n!r}")
    total = _number(item.get("sum"), f"{field}.sum")
    if metric == "proportion":
        if total != int(total) or not 0 <= total <= n:
            raise ValueError(f"{field}.sum must be a whole number of converters between 0 and n ({n})")
        squares = _number(item.get("sum_squares", total), f"{field}.sum_squares")
        if squares != total:
            raise ValueError(f"{field}.sum_squares must equal sum for a proportion (0/1 values)")
    else:
        squares = _number(item.get("sum_squares"), f"{field}.sum_squares")
        # Cauchy-Schwarz: n * sum of squares >= sum^2 (with room for rounding in exports).
        if n > 0 and squares * n < total * total * (1.0 - 1e-9) - 1e-9:
            raise ValueError(f"{field}.sum_squares is smaller than sum^2 / n: the counts are inconsistent")
        if n == 0 and (total != 0 or squares != 0):
            raise ValueError(f"{field}.sum and sum_squares must be 0 when n is 0")
    return frequentist.VariantCounts(name=name, n=n, sum=total, sum_squares=squares)


def _weights(raw: Any, count: int) -> list[float]:
    if raw is None:
        return [1.0] * count
    if not isinstance(raw, list) or len(raw) != count:
        raise ValueError(f"weights must be a list with one weight per variant ({count})")
    weights = [_number(w, f"weights[{i}]") for i, w in enumerate(raw)]
    for i, w in enumerate(weights):
        if not w > 0.0:
            raise ValueError(f"weights[{i}] must be positive, got {w}")
    return weights
