"""A/A simulations: thousands of seeded null experiments (both arms alike) through analyze().

A test at level alpha should call about alpha of them significant when looked at once; looking
every day and stopping at the first significant look inflates that for the fixed-horizon test,
and the sequential (mixture SPRT) mode is built to keep it at most alpha however often one looks.
Counts are drawn per day and arm (a binomial draw), so each simulated experiment costs a few
draws, not one per user. Tolerances are binomial: the rates are estimates from a finite number
of experiments, 4.5 standard errors either side (a chance below 1e-5 of a false alarm).
"""

from __future__ import annotations

import math
import random
from typing import Any

from mysetlist.experiments.analysis import analyze

ALPHA = 0.05
RATE = 0.1  # the conversion rate both arms share
USERS_PER_DAY = 400  # per arm
DAYS = 30  # daily looks
FIXED_EXPERIMENTS = 4_000
PEEKING_EXPERIMENTS = 2_000
MEAN_EXPERIMENTS = 2_000
Z_TOLERANCE = 4.5


def _document(method: str, counts: list[tuple[int, int]]) -> dict[str, Any]:
    return {
        "metric": "proportion",
        "method": method,
        "alpha": ALPHA,
        "variants": [{"name": f"v{i}", "n": n, "sum": c} for i, (n, c) in enumerate(counts)],
    }


def _p_value(method: str, counts: list[tuple[int, int]]) -> float:
    p: float = analyze(_document(method, counts))["variants"][0]["p_value"]
    return p


def _standard_error(rate: float, experiments: int) -> float:
    return math.sqrt(rate * (1.0 - rate) / experiments)


def aa_fixed_horizon(experiments: int, seed: int) -> float:
    """The share of null experiments the fixed-horizon z test calls significant at one final look."""
    rng = random.Random(seed)
    n = USERS_PER_DAY * DAYS
    hits = 0
    for _ in range(experiments):
        counts = [(n, rng.binomialvariate(n, RATE)) for _ in range(2)]
        hits += _p_value("frequentist", counts) < ALPHA
    return hits / experiments


def aa_daily_peeking(experiments: int, seed: int) -> tuple[float, float]:
    """Shares of null experiments significant at ANY of the daily looks: (fixed-horizon, sequential)."""
    rng = random.Random(seed)
    fixed_hits = sequential_hits = 0
    for _ in range(experiments):
        conv = [0, 0]
        fixed_seen = sequential_seen = False
        for day in range(1, DAYS + 1):
            conv = [c + rng.binomialvariate(USERS_PER_DAY, RATE) for c in conv]
            counts = [(USERS_PER_DAY * day, c) for c in conv]
            fixed_seen = fixed_seen or _p_value("frequentist", counts) < ALPHA
            sequential_seen = sequential_seen or _p_value("sequential", counts) < ALPHA
            if fixed_seen and sequential_seen:
                break
        fixed_hits += fixed_seen
        sequential_hits += sequential_seen
    return fixed_hits / experiments, sequential_hits / experiments


def aa_welch_means(experiments: int, seed: int) -> float:
    """The share of null experiments Welch's t calls significant, skewed (exponential) per-user values."""
    rng = random.Random(seed)
    users = 200
    hits = 0
    for _ in range(experiments):
        variants = []
        for arm in range(2):
            values = [rng.expovariate(0.5) for _ in range(users)]
            variants.append(
                {"name": f"v{arm}", "n": users, "sum": sum(values), "sum_squares": sum(v * v for v in values)}
            )
        result = analyze({"metric": "mean", "alpha": ALPHA, "variants": variants})
        hits += result["variants"][0]["p_value"] < ALPHA
    return hits / experiments


def test_fixed_horizon_false_positive_rate_sits_at_alpha() -> None:
    rate = aa_fixed_horizon(FIXED_EXPERIMENTS, seed=1)
    assert abs(rate - ALPHA) <= Z_TOLERANCE * _standard_error(ALPHA, FIXED_EXPERIMENTS), rate


def test_welch_false_positive_rate_sits_at_alpha_on_skewed_values() -> None:
    rate = aa_welch_means(MEAN_EXPERIMENTS, seed=2)
    assert abs(rate - ALPHA) <= Z_TOLERANCE * _standard_error(ALPHA, MEAN_EXPERIMENTS), rate


def test_daily_peeking_breaks_the_fixed_horizon_test_but_not_the_sequential_one() -> None:
    fixed, seq = aa_daily_peeking(PEEKING_EXPERIMENTS, seed=3)
    tolerance = Z_TOLERANCE * _standard_error(ALPHA, PEEKING_EXPERIMENTS)
    # Stopping at the first significant look of 30: far more than alpha (about 0.2 to 0.3).
    assert fixed > ALPHA + tolerance, fixed
    # The mixture SPRT's guarantee holds for every look at once.
    assert seq <= ALPHA + tolerance, seq


def test_sequential_mode_still_finds_a_real_lift() -> None:
    # The other side of the guarantee: a test that never rejects would pass the A/A above. With a
    # real lift (10% -> 12%) and daily looks, the mixture SPRT stops early in most experiments.
    rng = random.Random(4)
    experiments, detected, stop_days = 300, 0, []
    for _ in range(experiments):
        conv = [0, 0]
        for day in range(1, DAYS + 1):
            conv = [
                c + rng.binomialvariate(USERS_PER_DAY, r) for c, r in zip(conv, (RATE, 0.12), strict=True)
            ]
            if _p_value("sequential", [(USERS_PER_DAY * day, c) for c in conv]) < ALPHA:
                detected += 1
                stop_days.append(day)
                break
    assert detected / experiments > 0.8, detected
    assert sum(stop_days) / len(stop_days) < DAYS / 2, stop_days
