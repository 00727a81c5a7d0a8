"""Scalar rounding kernels shared by every quantizer.

``round_value(t, mode, u)`` rounds a float64 value ``t`` (already exact: a float quotient the
convention computed); ``round_quotient(x, s, mode, u)`` rounds the *real* quotient ``x / s`` of
two float64 numbers exactly, with error-free transformations, so no intermediate rounding can
move a tie. Mode codes are ``refquant._codes.Rounding``.
"""

import math

import numpy as np

from .._codes import Rounding
from ._jit import kernel

HALF_EVEN, HALF_AWAY, HALF_UP, HALF_DOWN, FLOOR, CEIL, TOWARD_ZERO, STOCHASTIC = map(int, Rounding)


@kernel
def round_from_parts(f, tie, above, frac_zero, negative, mode, u, d):
    """Round given ``f = floor(t)`` and how ``d = t - f`` compares with 1/2 (exact flags).

    ``negative`` is ``t < 0``; ``d`` is a float64 approximation of the fraction used only by the
    stochastic mode (``u`` its uniform draw).
    """
    if mode == HALF_EVEN:
        if above or (tie and (f % 2.0) != 0.0):
            return f + 1.0
        return f
    if mode == HALF_AWAY:
        if above or (tie and not negative):
            return f + 1.0
        return f
    if mode == HALF_UP:
        return f + 1.0 if (above or tie) else f
    if mode == HALF_DOWN:
        return f + 1.0 if above else f
    if mode == FLOOR:
        return f
    if mode == CEIL:
        return f if frac_zero else f + 1.0
    if mode == TOWARD_ZERO:
        return f + 1.0 if (negative and not frac_zero) else f
    # stochastic
    return f + 1.0 if u < d else f


@kernel
def round_value(t, mode, u):
    """Round the float64 value ``t`` to an integer-valued float64 under ``mode``.

    NaN and +-inf are returned unchanged. ``-0.0`` results keep their sign as NumPy's rint does.
    """
    if mode == HALF_EVEN:
        return np.rint(t)
    if not (abs(t) < 4503599627370496.0):  # 2**52: integer-valued already; NaN, +-inf
        return t
    f = np.floor(t)
    # comparisons with f + 1/2 (exact: |f| < 2**52) decide ties exactly; t - f itself is inexact
    # for t in (-1/2, -1/4) and (-1/4, 0), where it could round onto 1/2 or 1
    r = round_from_parts(f, t == f + 0.5, t > f + 0.5, t == f, t < 0.0, mode, u, t - f)
    return r + 0.0 if r == 0.0 and t >= 0.0 else r


@kernel
def round32(t, mode):
    """:func:`round_value` of the float32 ``t`` (``|t| < 2**22``) under a deterministic mode, in
    float32: ``rint``, ``floor``, ``ceil`` or ``trunc``, a tie (``|t - rint(t)| = 1/2``, exact
    there) moved by the mode, and ``-0.0`` made ``+0.0`` as :func:`round_value` does but for half
    to even."""
    if mode == HALF_EVEN:
        return np.rint(t)
    zero, half = np.float32(0.0), np.float32(0.5)
    if mode == FLOOR:
        r = np.floor(t)
    elif mode == CEIL:
        r = np.ceil(t)
    elif mode == TOWARD_ZERO:
        r = np.trunc(t)
    else:
        r = np.rint(t)
        if mode == HALF_AWAY:
            tied = t + (half if t > zero else -half)
        elif mode == HALF_UP:
            tied = t + half
        else:  # half down
            tied = t - half
        r = tied if abs(t - r) == half else r
    return r + zero


@kernel
def two_prod(a, b):
    """Dekker's error-free product: returns (p, e) with p + e == a*b exactly (no FMA needed)."""
    p = a * b
    c = 134217729.0 * a  # 2**27 + 1
    ah = c - (c - a)
    al = a - ah
    c = 134217729.0 * b
    bh = c - (c - b)
    bl = b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


@kernel
def cmp_x_vs_prod(x, a, b):
    """Sign of ``x - a*b`` computed exactly (-1, 0, 1); valid away from overflow and underflow."""
    p, e = two_prod(a, b)
    d = x - p  # exact whenever it could be comparable with e (Sterbenz); otherwise |d| >> |e|
    if d > e:
        return 1
    if d < e:
        return -1
    return 0


@kernel
def two_sum(a, b):
    """Knuth's error-free sum: (s, e) with s + e == a + b exactly."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@kernel
def cmp_prod_prod(x, n, c, a):
    """Sign of ``x*n - c*a`` computed exactly (-1, 0, 1), away from overflow and underflow.

    Both products are split exactly (``two_prod``); the four terms are grown into a
    non-overlapping expansion (Shewchuk), whose sign is that of its largest non-zero component.
    """
    p1, e1 = two_prod(x, n)
    p2, e2 = two_prod(c, a)
    q, h0 = two_sum(-p2, p1)  # expansion [h0, q], increasing magnitude
    r, g0 = two_sum(e1, h0)
    q, g1 = two_sum(r, q)  # [g0, g1, q]
    r, k0 = two_sum(-e2, g0)
    r, k1 = two_sum(r, g1)
    q, k2 = two_sum(r, q)  # [k0, k1, k2, q]
    for v in (q, k2, k1, k0):
        if v > 0.0:
            return 1
        if v < 0.0:
            return -1
    return 0


@kernel
def _cmp_scaled(xn, n, c, sn):
    """Sign of ``xn * n - c * sn``, exactly."""
    if n == 1.0:
        return cmp_x_vs_prod(xn, c, sn)
    return cmp_prod_prod(xn, n, c, sn)


@kernel
def round_quotient(x, s, mode, u):
    """Round the real number ``x / s`` (float64 x, s > 0 finite) to an integer-valued float64:
    :func:`round_scaled_quotient` with ``n = 1``."""
    return round_scaled_quotient(x, 1.0, s, mode, u)


@kernel
def round_scaled_quotient(x, n, s, mode, u):
    """Round the real number ``x * n / s`` (float64 x, integer-valued n >= 1, s > 0 finite) to an
    integer-valued float64.

    Returns +-inf when ``|x * n / s| >= 2**62`` (callers saturate), NaN for NaN. Exact for every
    finite float64 input: the quotient is normalised by a power of two (exact), the floor is
    corrected with exact residuals, and the fraction is compared with 1/2 exactly. The float64
    estimate ``fl(fl(x / s) * n)`` is within ``2**-52`` relatively of the real value, so a
    fraction clear of the decision points by ``2**-51`` decides without them.
    """
    if math.isnan(x):
        return x
    if math.isinf(x):
        return x
    if x == 0.0:
        return 0.0
    t = x / s * n
    at = abs(t)
    if at >= 4.611686018427388e18:  # 2**62: far beyond any code range
        return math.copysign(math.inf, t)
    if at < 1.0842021724855044e-19:  # 2**-63: 0 < |t| < 1/2 certainly
        neg = x < 0.0  # the sign of the real quotient (s > 0); t may have underflowed to -0.0
        f = -1.0 if neg else 0.0
        return round_from_parts(f, False, neg, False, neg, mode, u, t - f)
    f = np.floor(t)
    d = t - f
    margin = 4.440892098500626e-16 * max(at, 1.0)  # 2**-51 relative: several ulps of t
    if margin < d < 0.5 - margin or 0.5 + margin < d < 1.0 - margin:
        return round_from_parts(f, False, d > 0.5, False, t < 0.0, mode, u, d)
    # slow path: exact residuals. Scale s into [1, 2) and x by the same power of two (exact).
    m, e = math.frexp(s)
    sn = m * 2.0
    xn = math.ldexp(x, 1 - e)
    if _cmp_scaled(xn, n, f, sn) < 0:
        f -= 1.0
    elif _cmp_scaled(xn, n, f + 1.0, sn) >= 0:
        f += 1.0
    c = _cmp_scaled(xn, n, f + 0.5, sn)
    frac_zero = _cmp_scaled(xn, n, f, sn) == 0
    return round_from_parts(f, c == 0, c > 0, frac_zero, t < 0.0, mode, u, t - f)
