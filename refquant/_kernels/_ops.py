"""Requantization kernel of the float32 rows (fbgemm, onnxruntime, xnnpack): one pass, no temporaries."""

import numpy as np

from ._jit import kernel, parallel_kernel, prange

INT32_MIN = -(2**31)


@kernel
def _one(a, m, b, has_bias, zp, lo, hi, indefinite):
    v = np.float32(a)
    if has_bias:
        v = np.float32(v + b)
    v = np.float32(v * m)
    r = np.rint(v)
    if indefinite:
        q = np.int64(r) if abs(r) < 2147483648.0 else np.int64(INT32_MIN)
    else:
        q = np.int64(min(max(r, np.float32(-4.0e18)), np.float32(4.0e18))) if r == r else np.int64(0)
    q += zp
    return lo if q < lo else (hi if q > hi else q)


@parallel_kernel
def requantize_f32(acc, mult, bterm, has_bias, zp, lo, hi, indefinite, out):
    """``out[o, c, i] = clamp(rne(f32(f32(f32(acc) + bterm[c]) * mult[c])) + zp, lo, hi)``.

    ``acc`` is int64 of shape (outer, channels, inner); ``mult`` and ``bterm`` are float32 of
    length ``channels`` or 1; every operation is one float32 operation (no contraction), ``rne``
    is round half to even; with ``indefinite`` a product at or beyond 2**31 in magnitude (or NaN)
    becomes INT32_MIN, as x86's conversion, else it saturates.
    """
    n_outer, n_ch, n_inner = acc.shape
    per_m, per_b = mult.size > 1, bterm.size > 1
    if n_inner == 1:  # channels last: the channel loop is the inner one
        for o in prange(n_outer):
            for c in range(n_ch):
                out[o, c, 0] = _one(acc[o, c, 0], mult[c if per_m else 0], bterm[c if per_b else 0],
                                    has_bias, zp, lo, hi, indefinite)
    else:
        for oc in prange(n_outer * n_ch):
            o, c = oc // n_ch, oc % n_ch
            m = mult[c if per_m else 0]
            b = bterm[c if per_b else 0]
            for i in range(n_inner):
                out[o, c, i] = _one(acc[o, c, i], m, b, has_bias, zp, lo, hi, indefinite)
