"""PACT kernels: exact clip-and-round with the quotient ``y * N / alpha`` and an output rounded
once from the real value ``q * alpha / N``."""

import math

import numpy as np

from ._affine import rnd, round_pair_to_f32
from ._jit import fma64, kernel
from ._round import round_from_parts, round_quotient, two_prod


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
def round_scaled_quotient(x, n, a, mode, u):
    """Round the real number ``x * n / a`` (float64 x, integer-valued n >= 1, a > 0) exactly.

    ``x`` and ``a`` are scaled by the same power of two (exact) so that a lies in [1, 2); a
    float64 estimate decides when its fraction is clear of 0 and 1/2, else exact comparisons of
    ``x * n`` with ``c * a`` (c = f, f + 1/2, f + 1) do.
    """
    if x == 0.0:
        return 0.0
    t0 = x / a * n
    if abs(t0) < 1.0842021724855044e-19:  # 2**-63: 0 < |t| < 1/2 certainly
        f = -1.0 if t0 < 0.0 else 0.0
        return round_from_parts(f, t0 > 0.0, False, t0 < 0.0, False, t0 < 0.0, mode, u, t0 - f)
    m, e = math.frexp(a)
    an = m * 2.0
    xn = math.ldexp(x, 1 - e)
    t = xn * n / an
    f = np.floor(t)
    d = t - f
    margin = 8.881784197001252e-16 * max(abs(t), 1.0)  # 2**-50 relative: several ulps of t
    if margin < d < 0.5 - margin or 0.5 + margin < d < 1.0 - margin:
        return round_from_parts(f, d < 0.5, False, d > 0.5, False, t < 0.0, mode, u, d)
    if cmp_prod_prod(xn, n, f, an) < 0:
        f -= 1.0
    elif cmp_prod_prod(xn, n, f + 1.0, an) >= 0:
        f += 1.0
    c = cmp_prod_prod(xn, n, f + 0.5, an)
    frac_zero = cmp_prod_prod(xn, n, f, an) == 0
    return round_from_parts(f, c < 0, c == 0, c > 0, frac_zero, t < 0.0, mode, u, t - f)


@kernel
def scaled_level(q, alpha, n, fmt):
    """``q * alpha / n`` (integers q, n; float64 alpha) rounded once to format ``fmt``.

    ``q * alpha = p + e`` exactly; ``hi = fl(p / n)`` leaves the exact remainder
    ``p - hi * n`` (one FMA), so ``hi + lo`` carries about 100 bits of the quotient.
    """
    p, e = two_prod(q, alpha)
    hi = p / n
    lo = (fma64(-hi, n, p) + e) / n
    if fmt == 0:
        return hi + lo
    f = round_pair_to_f32(hi + lo, (hi - (hi + lo)) + lo, fmt != 1)
    return f if fmt == 1 else rnd(f, fmt)


@kernel
def pact_fake(x, alpha, gidx, n, signed, mode, u, fmt, out):
    """``out[i] = round(clip(x) * n / alpha) * alpha / n`` with per-group ``alpha[gidx[i]]``, the
    quotient rounded as a real number (float64 x: :func:`round_scaled_quotient`)."""
    grouped = gidx.size > 0
    exact_product = fmt != 0
    drawn = u.size > 0
    for i in range(x.size):
        a = alpha[gidx[i] if grouped else 0]
        xi = np.float64(x[i])
        if xi != xi:
            out[i] = xi
            continue
        if xi >= a:
            q = n
        elif signed and xi <= -a:
            q = -n
        elif exact_product:  # x * n is exact in float64 for float32 and narrower inputs
            q = round_quotient(xi * n if signed else max(xi, 0.0) * n, a, mode,
                               u[i] if drawn else 0.0)
        else:
            q = round_scaled_quotient(xi if signed else max(xi, 0.0), n, a, mode,
                                      u[i] if drawn else 0.0)
        out[i] = scaled_level(q, a, n, fmt) + 0.0


@kernel
def pact_grad(x, g, alpha, gidx, signed, gx, ga):
    """``gx = g * [lo <= x <= alpha]``; ``ga = g * ([x >= alpha] - signed * [x <= -alpha])``."""
    grouped = gidx.size > 0
    for i in range(x.size):
        a = alpha[gidx[i] if grouped else 0]
        xi = np.float64(x[i])
        gi = np.float64(g[i])
        lo = -a if signed else 0.0
        if xi != xi:
            gx[i] = xi
            ga[i] = xi
            continue
        gx[i] = gi if lo <= xi <= a else 0.0
        if xi >= a:
            ga[i] = gi
        elif signed and xi <= -a:
            ga[i] = -gi
        else:
            ga[i] = 0.0
