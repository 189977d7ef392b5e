"""The pure-Python distribution functions against scipy on seeded, generated cases."""

from __future__ import annotations

import math
import random

import pytest
from scipy import special, stats  # type: ignore[import-untyped]

from mysetlist.experiments import distributions as d

CASES = 600
# Tolerances are scipy's own precision, not ours: deep in the tails (densities near 1e-200)
# scipy's values differ from a 40-digit mpmath computation by a few 1e-13, as ours do.


def _close(ours: float, reference: float, rel: float, abs_: float = 0.0) -> bool:
    return math.isclose(ours, float(reference), rel_tol=rel, abs_tol=abs_)


def _tail_probability(rng: random.Random, smallest: float) -> float:
    p = 10 ** rng.uniform(math.log10(smallest), 0)
    return p if rng.random() < 0.5 else 1.0 - p


def test_normal_cdf_sf_ppf_match_scipy() -> None:
    rng = random.Random(7)
    for _ in range(CASES):
        x = rng.uniform(-37, 37) if rng.random() < 0.2 else rng.uniform(-6, 6)
        assert _close(d.norm_cdf(x), stats.norm.cdf(x), 1e-12, 1e-300), x
        assert _close(d.norm_sf(x), stats.norm.sf(x), 1e-12, 1e-300), x
        p = _tail_probability(rng, 1e-300)
        if 0.0 < p < 1.0:
            assert _close(d.norm_ppf(p), stats.norm.ppf(p), 1e-13, 1e-14), p


def test_t_sf_cdf_match_scipy_over_fractional_and_large_df() -> None:
    rng = random.Random(11)
    for _ in range(CASES):
        df = 10 ** rng.uniform(-0.5, 5)
        t = rng.uniform(-60, 60) if rng.random() < 0.5 else rng.uniform(-3, 3)
        assert _close(d.t_sf(t, df), stats.t.sf(t, df), 1e-11, 1e-300), (t, df)
        assert _close(d.t_cdf(t, df), stats.t.cdf(t, df), 1e-11, 1e-300), (t, df)
        assert _close(d.t_pdf(t, df), stats.t.pdf(t, df), 1e-10, 1e-300), (t, df)


def test_t_sf_stays_accurate_at_welch_df_of_millions() -> None:
    rng = random.Random(12)
    for _ in range(100):
        df = 10 ** rng.uniform(5, 7)
        t = rng.uniform(0.01, 8)
        assert _close(d.t_sf(t, df), stats.t.sf(t, df), 1e-9), (t, df)
    # past 1e10 degrees of freedom the normal is used
    assert _close(d.t_sf(2.5, 1e12), stats.t.sf(2.5, 1e12), 1e-9)


def test_t_ppf_matches_scipy_and_inverts_the_cdf() -> None:
    rng = random.Random(13)
    for _ in range(CASES):
        df = 10 ** rng.uniform(-0.3, 6)
        p = _tail_probability(rng, 1e-12)
        if not 0.0 < p < 1.0:
            continue
        ours = d.t_ppf(p, df)
        assert _close(ours, stats.t.ppf(p, df), 1e-10, 1e-12), (p, df)
        assert _close(d.t_cdf(ours, df), p, 1e-9, 1e-15), (p, df)


def test_chi2_sf_matches_scipy() -> None:
    rng = random.Random(17)
    for _ in range(CASES):
        df = rng.randint(1, 200) if rng.random() < 0.8 else rng.uniform(0.2, 50)
        x = rng.uniform(0, 6 * df + 40)
        assert _close(d.chi2_sf(x, df), stats.chi2.sf(x, df), 1e-12, 1e-300), (x, df)


def test_betainc_and_log_beta_match_scipy() -> None:
    rng = random.Random(19)
    for _ in range(CASES):
        a, b = 10 ** rng.uniform(-1, 3), 10 ** rng.uniform(-1, 3)
        x = rng.random()
        assert _close(d.betainc(a, b, x), special.betainc(a, b, x), 1e-10, 1e-280), (a, b, x)
        # scipy's betaln itself strays by ~1.5e-12 for a ~ 800, b < 1 (mpmath agrees with ours)
        assert _close(d.log_beta(a, b), special.betaln(a, b), 1e-12, 5e-12), (a, b)
    assert _close(d.log_beta(0.5, 5e6), special.betaln(0.5, 5e6), 1e-14)


def test_log_beta_at_large_arguments_matches_the_exact_product() -> None:
    # B(a, n) = (n - 1)! / (a (a + 1) ... (a + n - 1)) for a whole n: exact, no gamma function.
    rng = random.Random(23)
    for _ in range(200):
        a = 10 ** rng.uniform(1, 7)
        n = rng.randint(1, 6)
        exact = math.lgamma(n) - math.fsum(math.log(a + k) for k in range(n))
        assert _close(d.log_beta(a, n), exact, 1e-13, 1e-13), (a, n)


def test_edges() -> None:
    assert d.norm_ppf(0.0) == -math.inf
    assert d.norm_ppf(1.0) == math.inf
    assert d.norm_ppf(0.5) == 0.0
    assert d.t_ppf(0.5, 3) == 0.0
    assert d.t_ppf(1.0, 3) == math.inf
    assert d.t_sf(0.0, 2.5) == 0.5
    assert d.t_sf(math.inf, 4) == 0.0
    assert d.t_sf(1.7, math.inf) == d.norm_sf(1.7)
    assert d.chi2_sf(0.0, 3) == 1.0
    assert d.chi2_sf(math.inf, 3) == 0.0
    assert d.betainc(2, 3, 0.0) == 0.0
    assert d.betainc(2, 3, 1.0) == 1.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: d.norm_ppf(1.5), "probability"),
        (lambda: d.norm_ppf(math.nan), "probability"),
        (lambda: d.t_ppf(0.3, 0), "degrees of freedom"),
        (lambda: d.t_sf(1.0, -2), "degrees of freedom"),
        (lambda: d.t_sf(math.nan, 2), "number"),
        (lambda: d.chi2_sf(1.0, 0), "degrees of freedom"),
        (lambda: d.log_beta(0, 1), "a > 0"),
        (lambda: d.betainc(1, 1, -0.1), "probability"),
        (lambda: d.gammaincc(1, -1), "x >= 0"),
    ],
)
def test_invalid_inputs_raise_value_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
