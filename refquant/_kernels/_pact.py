"""PACT kernels: exact clip-and-round with the quotient ``y * N / alpha`` and an output rounded
once from the real value ``q * alpha / N``."""

import numpy as np

from .._codes import Format
from ._affine import rnd, round_pair_to_f32
from ._elements import draw, group_of
from ._jit import fma64, kernel
from ._round import round_scaled_quotient, two_prod

F64, F32 = int(Format.FLOAT64), int(Format.FLOAT32)


@kernel
def scaled_level(q, alpha, n, fmt):
    """``q * alpha / n`` (integers q, n; float64 alpha) rounded once to format ``fmt``.

    ``q * alpha = p + e`` exactly; ``hi = fl(p / n)`` leaves the exact remainder
    ``p - hi * n`` (one FMA), so ``hi + lo`` carries about 100 bits of the quotient.
    """
    p, e = two_prod(q, alpha)
    hi = p / n
    lo = (fma64(-hi, n, p) + e) / n
    if fmt == F64:
        return hi + lo
    f = round_pair_to_f32(hi + lo, (hi - (hi + lo)) + lo, fmt != F32)
    return f if fmt == F32 else rnd(f, fmt)


@kernel
def pact_code(xi, a, n, signed, mode, ui):
    """The integer level of float64 ``xi`` (not NaN): ``round(clip(xi) * n / a)`` with the quotient
    rounded as a real number (:func:`round_scaled_quotient`)."""
    if xi >= a:
        return n
    if signed and xi <= -a:
        return -n
    return round_scaled_quotient(xi if signed else max(xi, 0.0), n, a, mode, ui)


@kernel
def pact_fake(x, alpha, gidx, n, signed, mode, u, fmt, out):
    """``out[i] = pact_code(x[i]) * alpha / n`` rounded once, with per-group ``alpha[gidx[i]]``;
    NaN stays NaN."""
    for i in range(x.size):
        a = alpha[group_of(gidx, i)]
        xi = np.float64(x[i])
        if xi != xi:
            out[i] = xi
            continue
        out[i] = scaled_level(pact_code(xi, a, n, signed, mode, draw(u, i)), a, n, fmt) + 0.0


@kernel
def pact_codes(x, alpha, gidx, n, signed, mode, u, out):
    """``out[i] = pact_code(x[i])`` (x holds no NaN)."""
    for i in range(x.size):
        out[i] = pact_code(np.float64(x[i]), alpha[group_of(gidx, i)], n, signed, mode, draw(u, i))


@kernel
def pact_levels(q, alpha, gidx, n, fmt, out):
    """``out[i] = q[i] * alpha / n`` rounded once to format ``fmt``."""
    for i in range(q.size):
        out[i] = scaled_level(np.float64(q[i]), alpha[group_of(gidx, i)], n, fmt) + 0.0


@kernel
def pact_grad(x, g, alpha, gidx, signed, gx, ga):
    """``gx = g * [lo <= x <= alpha]``; ``ga = g * ([x >= alpha] - signed * [x <= -alpha])``."""
    for i in range(x.size):
        a = alpha[group_of(gidx, i)]
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
