"""The mixture SPRT: its likelihood ratio against direct integration, its interval's boundary, its inputs."""

from __future__ import annotations

import math
import random

import pytest
from scipy import integrate, stats  # type: ignore[import-untyped]

from mysetlist.experiments.sequential import log_mixture_likelihood_ratio, msprt


def _normal_pdf(x: float, mean: float, sd: float) -> float:
    return math.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * math.sqrt(2.0 * math.pi))


def _integrated_likelihood_ratio(estimate: float, variance: float, tau2: float) -> float:
    """Lambda = integral of N(d; theta, V) / N(d; 0, V) over theta ~ N(0, tau^2), by quadrature."""
    sd, prior_sd = math.sqrt(variance), math.sqrt(tau2)
    null_density = _normal_pdf(estimate, 0.0, sd)

    def integrand(theta: float) -> float:
        return _normal_pdf(estimate, theta, sd) * _normal_pdf(theta, 0.0, prior_sd)

    # The integrand peaks at the posterior mean of theta; integrate +-40 posterior sds around it.
    post_mean = estimate * tau2 / (tau2 + variance)
    post_sd = math.sqrt(tau2 * variance / (tau2 + variance))
    value, _ = integrate.quad(
        integrand,
        post_mean - 40 * post_sd,
        post_mean + 40 * post_sd,
        points=[post_mean],
        limit=200,
        epsabs=0.0,
        epsrel=1e-12,
    )
    return float(value / null_density)


def _cases(count: int, seed: int) -> list[tuple[float, float, float]]:
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        variance = 10 ** rng.uniform(-7, 0)
        tau2 = 10 ** rng.uniform(-6, 0)
        estimate = rng.gauss(0.0, math.sqrt(variance)) * rng.uniform(0.0, 4.0)
        cases.append((estimate, variance, tau2))
    return cases


@pytest.mark.parametrize(("estimate", "variance", "tau2"), _cases(80, seed=5))
def test_closed_form_matches_the_integrated_mixture(estimate: float, variance: float, tau2: float) -> None:
    ours = math.exp(log_mixture_likelihood_ratio(estimate, variance, tau2))
    assert ours == pytest.approx(_integrated_likelihood_ratio(estimate, variance, tau2), rel=1e-6)


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.2])
def test_interval_ends_sit_on_the_rejection_boundary(alpha: float) -> None:
    for estimate, variance, tau2 in _cases(200, seed=6):
        result = msprt(estimate, variance, tau2, alpha)
        # At either end, the test of theta0 = end has Lambda = 1 / alpha exactly.
        for end in (result.ci_low, result.ci_high):
            assert log_mixture_likelihood_ratio(estimate, variance, tau2, null=end) == pytest.approx(
                math.log(1.0 / alpha), rel=1e-9, abs=1e-9
            ), (estimate, variance, tau2)
        # p <= alpha exactly when zero is outside the interval.
        outside = not result.ci_low < 0.0 < result.ci_high
        assert (result.p_value <= alpha) == outside or math.isclose(result.p_value, alpha, rel_tol=1e-9)
        # Wider than the fixed-horizon interval: the price of looking as often as one likes.
        fixed_half = stats.norm.isf(alpha / 2.0) * math.sqrt(variance)
        assert result.ci_high - estimate > fixed_half
        assert 0.0 < result.p_value <= 1.0


def test_p_value_is_one_when_the_evidence_favours_the_null() -> None:
    assert msprt(0.0, 1e-4, 1e-3).p_value == 1.0


def test_more_evidence_gives_a_smaller_p_and_a_narrower_interval() -> None:
    # The same observed lift with ever smaller variance (more users).
    results = [msprt(0.01, variance, 0.02**2) for variance in (1e-4, 1e-5, 1e-6)]
    assert results[0].p_value > results[1].p_value > results[2].p_value
    widths = [r.ci_high - r.ci_low for r in results]
    assert widths[0] > widths[1] > widths[2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variance": 0.0}, "variance"),
        ({"variance": float("nan")}, "variance"),
        ({"tau2": 0.0}, "tau"),
        ({"tau2": -1.0}, "tau"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
    ],
)
def test_invalid_inputs_name_the_parameter(kwargs: dict[str, float], message: str) -> None:
    arguments = {"estimate": 0.01, "variance": 1e-4, "tau2": 1e-4, "alpha": 0.05} | kwargs
    with pytest.raises(ValueError, match=message):
        msprt(**arguments)
