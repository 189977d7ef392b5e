"""Adjusted p-values for several comparisons at once (variants against control, several metrics).

- :func:`holm`: Holm's step-down method, controlling the family-wise error rate (the chance of
  any false positive) under any dependence between the tests;
- :func:`bh`: Benjamini-Hochberg's step-up method, controlling the false discovery rate (the
  expected share of false positives among the "significant" results) for independent or
  positively dependent tests.

Both return adjusted p-values in the order given, capped at 1 and monotone in the raw p-values:
compare each adjusted value with alpha as if it were the only test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values: the i-th smallest (from 0) of m becomes ``(m - i) p``, made
    non-decreasing along the sorted order and capped at 1. Raises ValueError for a p outside [0, 1]."""
    ps = _checked(p_values)
    m = len(ps)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=ps.__getitem__)):
        running = max(running, min(1.0, (m - rank) * ps[index]))
        adjusted[index] = running
    return adjusted


def bh(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg-adjusted p-values: the i-th smallest (from 1) of m becomes ``p m / i``,
    made non-decreasing by a running minimum from the largest down, capped at 1.
    Raises ValueError for a p outside [0, 1]."""
    ps = _checked(p_values)
    m = len(ps)
    adjusted = [0.0] * m
    running = 1.0
    order = sorted(range(m), key=ps.__getitem__)
    for rank in range(m, 0, -1):
        index = order[rank - 1]
        running = min(running, ps[index] * (m / rank))  # m / m is exactly 1: never below p
        adjusted[index] = running
    return adjusted


ADJUSTMENTS = {"holm": holm, "bh": bh}


def _checked(p_values: Sequence[float]) -> list[float]:
    if isinstance(p_values, str | bytes) or not isinstance(p_values, Sequence):
        raise ValueError("p_values must be a list of numbers")
    checked = []
    for i, p in enumerate(p_values):
        if isinstance(p, bool) or not isinstance(p, int | float) or math.isnan(p) or not 0 <= p <= 1:
            raise ValueError(f"p_values[{i}] must be a probability between 0 and 1, got {p!r}")
        checked.append(float(p))
    return checked
