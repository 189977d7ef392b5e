"""Distribution functions in pure Python (``math`` only: the Common layer has no scipy).

- normal: :func:`norm_cdf`, :func:`norm_sf` (``math.erfc``, accurate far into both tails) and
  :func:`norm_ppf` (the Abramowitz-Stegun 26.2.23 rational start, then Halley steps on ``erfc``
  until the step is below a few ulps: about 1e-15 relative);
- Student t: :func:`t_cdf`, :func:`t_sf` (the regularized incomplete beta,
  ``sf(t) = I_{df/(df+t^2)}(df/2, 1/2) / 2`` for ``t > 0``) and :func:`t_ppf` (safeguarded Newton on
  the tail probability, falling back to bisection); ``df`` may be fractional (Welch) or ``inf``
  (from 1e10 on, the normal); relative error about 1e-13 up to df 1e5, 1e-10 at df 1e7;
- chi-square: :func:`chi2_sf` (the regularized upper incomplete gamma ``Q(df/2, x/2)``);
- :func:`log_beta` and :func:`betainc` (regularized incomplete beta, Lentz's continued fraction).

Each function computes the smaller tail directly and obtains the other one as its complement, so
small p-values keep their relative precision.
"""

from __future__ import annotations

import math

_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_EPS = 1e-16  # continued fractions stop when a factor differs from 1 by less than this
_TINY = 1e-300  # Lentz's guard against a zero denominator
_MAX_TERMS = 10_000
# Beyond 1e10 degrees of freedom the t is the normal to better than 1e-9 (relative, |t| < 5),
# closer than the continued fraction, whose convergence slows as df grows.
_NORMAL_FROM_DF = 1e10


# ----------------------------------------------------------------------------- normal


def norm_pdf(x: float) -> float:
    """The standard normal density."""
    return math.exp(-0.5 * x * x - _LOG_SQRT_2PI)


def norm_cdf(x: float) -> float:
    """P(Z <= x) for a standard normal Z."""
    return 0.5 * math.erfc(-x / _SQRT2)


def norm_sf(x: float) -> float:
    """P(Z > x) for a standard normal Z (precise for large ``x``, unlike ``1 - norm_cdf(x)``)."""
    return 0.5 * math.erfc(x / _SQRT2)


def norm_ppf(p: float) -> float:
    """The ``p`` quantile of the standard normal (``-inf`` at 0, ``inf`` at 1).

    Raises ValueError for ``p`` outside [0, 1].
    """
    _check_probability(p, "p")
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    if p == 0.5:
        return 0.0
    # Work in the lower tail q = min(p, 1 - p) so that q keeps its precision.
    q = p if p < 0.5 else 1.0 - p
    # Abramowitz & Stegun 26.2.23 (|error| < 4.5e-4) as a starting point...
    t = math.sqrt(-2.0 * math.log(q))
    x = -(
        t
        - (2.515517 + t * (0.802853 + t * 0.010328)) / (1.0 + t * (1.432788 + t * (0.189269 + t * 0.001308)))
    )
    # ...then Halley's method on f(x) = Phi(x) - q (cubic convergence: two or three steps).
    for _ in range(8):
        density = norm_pdf(x)
        if density == 0.0:
            break
        err = norm_cdf(x) - q
        u = err / density
        step = u / (1.0 + 0.5 * x * u)
        x -= step
        if abs(step) <= 1e-15 * max(1.0, abs(x)):
            break
    return x if p < 0.5 else -x


# ----------------------------------------------------------------------------- beta


def log_beta(a: float, b: float) -> float:
    """ln B(a, b) for ``a, b > 0``. Raises ValueError otherwise."""
    if not (a > 0 and b > 0) or math.isinf(a) or math.isinf(b):
        raise ValueError(f"log_beta needs finite a > 0 and b > 0, got a={a}, b={b}")
    small, large = (a, b) if a <= b else (b, a)
    if large < _STIRLING_FROM:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    # lgamma(large) - lgamma(large + small) from Stirling's series, arranged so that nothing of
    # size `large` cancels (lgamma(5e6) is about 7e7: a plain difference would lose 8 digits):
    # (L - 1/2) ln L - (L + s - 1/2) ln(L + s) + s = -(L - 1/2) log1p(s / L) - s ln(L + s) + s.
    total = large + small
    difference = (
        -(large - 0.5) * math.log1p(small / large)
        - small * math.log(total)
        + small
        + _stirling_correction(large)
        - _stirling_correction(total)
    )
    return math.lgamma(small) + difference


_STIRLING_FROM = 20.0  # at z >= 20 the series below is exact to about 1e-17


def _stirling_correction(z: float) -> float:
    """lgamma(z) - ((z - 1/2) ln z - z + ln(2 pi) / 2): sum of B_2k / (2k (2k - 1) z^(2k - 1))."""
    inv = 1.0 / z
    inv2 = inv * inv
    return inv * (
        1.0 / 12.0
        - inv2
        * (
            1.0 / 360.0
            - inv2 * (1.0 / 1260.0 - inv2 * (1.0 / 1680.0 - inv2 * (1.0 / 1188.0 - inv2 * 691.0 / 360360.0)))
        )
    )


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta ``I_x(a, b)`` for ``a, b > 0`` and ``0 <= x <= 1``."""
    _check_probability(x, "x")
    lower, _ = _betainc_pair(a, b, x, 1.0 - x)
    return lower


def _betainc_pair(
    a: float, b: float, x: float, y: float, log_x: float | None = None, log_y: float | None = None
) -> tuple[float, float]:
    """``(I_x(a, b), 1 - I_x(a, b))`` with ``y = 1 - x`` passed in exactly by the caller (and,
    optionally, ``ln x`` and ``ln y``: with a parameter in the millions, the rounding of ``x``
    itself would cost digits in ``a ln x``).

    The continued fraction converges fast for ``x < (a + 1) / (a + b + 2)``; beyond that the
    symmetry ``I_x(a, b) = 1 - I_y(b, a)`` is used. The side computed directly keeps its relative
    precision; the other is its complement.
    """
    log_beta(a, b)  # validates a and b
    if x <= 0.0:
        return 0.0, 1.0
    if y <= 0.0:
        return 1.0, 0.0
    if x < (a + 1.0) / (a + b + 2.0):
        direct = _betainc_direct(a, b, x, _log(x, log_x) * a + _log(y, log_y) * b)
        return direct, 1.0 - direct
    direct = _betainc_direct(b, a, y, _log(y, log_y) * b + _log(x, log_x) * a)
    return 1.0 - direct, direct


def _log(value: float, known: float | None) -> float:
    return math.log(value) if known is None else known


def _betainc_direct(a: float, b: float, x: float, log_power: float) -> float:
    # I_x(a, b) = x^a y^b / (a B(a, b)) * 1 / (1 + d1 / (1 + d2 / (1 + ...))) with
    #   d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1)),
    #   d_{2m}   = m (b - m) x / ((a + 2m - 1)(a + 2m)),
    # evaluated by the modified Lentz method (DLMF 8.17.22; Numerical Recipes 6.4).
    log_front = log_power - log_beta(a, b)  # ln(x^a y^b / B(a, b))
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    fraction = d
    for m in range(1, _MAX_TERMS):
        two_m = 2 * m
        even = m * (b - m) * x / ((a + two_m - 1.0) * (a + two_m))
        d = 1.0 + even * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + even / c
        c = c if abs(c) > _TINY else _TINY
        fraction *= d * c
        odd = -(a + m) * (a + b + m) * x / ((a + two_m) * (a + two_m + 1.0))
        d = 1.0 + odd * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + odd / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        fraction *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(log_front) * fraction / a


# ----------------------------------------------------------------------------- Student t


def t_pdf(t: float, df: float) -> float:
    """The density of Student's t with ``df`` degrees of freedom."""
    _check_df(df)
    if math.isinf(df):
        return norm_pdf(t)
    log_density = -0.5 * (df + 1.0) * math.log1p(t * t / df) - 0.5 * math.log(df) - log_beta(0.5 * df, 0.5)
    return math.exp(log_density)


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df > 0`` degrees of freedom (``inf``: the normal)."""
    _check_df(df)
    if math.isnan(t):
        raise ValueError("t must be a number")
    if df >= _NORMAL_FROM_DF:
        return norm_sf(t)
    if t == 0.0:
        return 0.5
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    t2 = t * t
    # x = df / (df + t^2) and 1 - x = t^2 / (df + t^2), both formed without cancellation.
    x = df / (df + t2)
    y = t2 / (df + t2)
    log_x = -math.log1p(t2 / df)
    log_y = math.log(t2) - math.log(df) + log_x
    tail, _ = _betainc_pair(0.5 * df, 0.5, x, y, log_x, log_y)  # P(|T| > |t|)
    return 0.5 * tail if t > 0 else 1.0 - 0.5 * tail


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df > 0`` degrees of freedom."""
    return t_sf(-t, df)


def t_ppf(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df > 0`` degrees of freedom.

    Raises ValueError for ``p`` outside [0, 1] or ``df <= 0``.
    """
    _check_probability(p, "p")
    _check_df(df)
    if df >= _NORMAL_FROM_DF:
        return norm_ppf(p)
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    if p == 0.5:
        return 0.0
    q = p if p < 0.5 else 1.0 - p  # the upper-tail probability of |quantile|
    # Bracket the root of sf(t) = q on t > 0, then safeguarded Newton (sf' = -pdf).
    lo, hi = 0.0, max(1.0, -norm_ppf(q))
    while t_sf(hi, df) > q:
        lo, hi = hi, hi * 2.0
        if hi > 1e300:
            break
    t = 0.5 * (lo + hi)
    for _ in range(200):
        err = t_sf(t, df) - q
        if err > 0:
            lo = t
        else:
            hi = t
        density = t_pdf(t, df)
        candidate = t + err / density if density > 0 else math.nan
        if not (lo < candidate < hi):
            candidate = 0.5 * (lo + hi)  # Newton left the bracket: bisect instead
        if abs(candidate - t) <= 1e-14 * max(1.0, abs(t)) or hi - lo <= 1e-15 * max(1.0, hi):
            t = candidate
            break
        t = candidate
    return -t if p < 0.5 else t


# ----------------------------------------------------------------------------- chi-square


def chi2_sf(x: float, df: float) -> float:
    """P(X > x) for a chi-square ``X`` with ``df > 0`` degrees of freedom."""
    _check_df(df)
    if math.isinf(df):
        raise ValueError("chi-square degrees of freedom must be finite")
    if math.isnan(x):
        raise ValueError("x must be a number")
    if x <= 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    return gammaincc(0.5 * df, 0.5 * x)


def gammaincc(a: float, x: float) -> float:
    """The regularized upper incomplete gamma ``Q(a, x)`` for ``a > 0`` and ``x >= 0``.

    A power series for ``P`` when ``x < a + 1``, otherwise Legendre's continued fraction for ``Q``
    by the modified Lentz method (Numerical Recipes 6.2).
    """
    if not a > 0 or math.isinf(a):
        raise ValueError(f"gammaincc needs a finite a > 0, got {a}")
    if not x >= 0:
        raise ValueError(f"gammaincc needs x >= 0, got {x}")
    if x == 0.0:
        return 1.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:
        # P(a, x) = e^-x x^a / Gamma(a) * sum_n x^n / (a (a+1) ... (a+n))
        term = total = 1.0 / a
        denominator = a
        for _ in range(_MAX_TERMS):
            denominator += 1.0
            term *= x / denominator
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return 1.0 - math.exp(log_front) * total
    # Q(a, x) = e^-x x^a / Gamma(a) * 1 / (x + 1 - a - 1(1 - a) / (x + 3 - a - 2(2 - a) / ...))
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    fraction = d
    for i in range(1, _MAX_TERMS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = b + an / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        fraction *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(log_front) * fraction


# ----------------------------------------------------------------------------- checks


def _check_probability(p: float, name: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability between 0 and 1, got {p}")


def _check_df(df: float) -> None:
    if not df > 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
