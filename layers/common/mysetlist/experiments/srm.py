"""Sample-ratio mismatch: are users reaching the variants in the configured proportions?

Pearson's chi-square goodness-of-fit test of the users exposed per variant against the expected
counts ``N * w_i / sum(w)`` (``k - 1`` degrees of freedom). A tiny p-value means the split itself is
broken (assignment, exposure logging, bots, a redirect losing users in one arm): the comparison
between variants is then not trustworthy whatever it says, so a failed check blocks a verdict.
The conventional threshold is strict (0.001) because the check runs on every look at every test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mysetlist.experiments.distributions import chi2_sf

SRM_THRESHOLD = 0.001


def srm_statistic(ns: Sequence[int], weights: Sequence[float]) -> float:
    """Pearson's chi-square statistic of the counts ``ns`` against the normalised ``weights``.

    Raises ValueError for fewer than 2 variants, lengths that differ, a negative or fractional
    count, or a weight that is not a positive finite number.
    """
    counts, shares = _checked(ns, weights)
    total = sum(counts)
    if total == 0:
        return 0.0
    return math.fsum(
        (n - total * share) ** 2 / (total * share) for n, share in zip(counts, shares, strict=True)
    )


def srm_test(ns: Sequence[int], weights: Sequence[float]) -> float:
    """The p-value of the chi-square test that ``ns`` were drawn in the ratio ``weights``.

    With no users exposed yet there is no evidence of a mismatch: 1.0. Raises ValueError as
    :func:`srm_statistic` does.
    """
    statistic = srm_statistic(ns, weights)
    return chi2_sf(statistic, len(ns) - 1)


def srm_ok(p_value: float, threshold: float = SRM_THRESHOLD) -> bool:
    """True unless the SRM p-value is below ``threshold`` (a mismatch: block the verdict)."""
    if not 0 <= p_value <= 1:
        raise ValueError(f"srm p-value must be between 0 and 1, got {p_value!r}")
    if not 0 < threshold < 1:
        raise ValueError(f"srm threshold must be between 0 and 1 (exclusive), got {threshold!r}")
    return p_value >= threshold


def _checked(ns: Sequence[int], weights: Sequence[float]) -> tuple[list[int], list[float]]:
    if len(ns) != len(weights):
        raise ValueError(
            f"weights must give one weight per variant: {len(ns)} variants, {len(weights)} weights"
        )
    if len(ns) < 2:
        raise ValueError("a sample-ratio check needs at least 2 variants")
    for i, n in enumerate(ns):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n of variant {i} must be a whole number >= 0, got {n!r}")
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w <= 0:
            raise ValueError(f"weights[{i}] must be a positive number, got {w!r}")
    total_weight = math.fsum(weights)
    return list(ns), [w / total_weight for w in weights]
