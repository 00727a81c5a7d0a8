"""Certified re-quantization: decide most stored codes without running the convention.

A round-to-nearest convention computes ``v = x / s + z`` (or ``x * inv + z``) with a few
correctly rounded operations in its compute format of precision ``p`` bits, then rounds to the
nearest integer and clamps. Each operation errs by at most ``2**-p`` relative, so the computed
``v`` lies within ``rel * (|x / s| + |z| + 1)`` of the real one, ``rel = 8 * 2**-p`` with ``p``
the smaller of the compute and reciprocal precisions (the input and the scale rounded to the
compute format, the reciprocal, the quotient or product and the zero-point add: five roundings
at most, with room to spare). Where the real ``v`` (here in float64, error ``2**-52``) is farther than that
from every half-integer, every arithmetic of the convention rounds it to the same integer
``n = round(v)``, so its code is ``clamp(n, qmin, qmax)`` whatever the tie rule: the element is
*certified* and compared here. The rest (near a half-integer, NaN, inf: typically a few in a
thousand) are left to ``rq.quantize`` under the convention itself.
"""

from __future__ import annotations

import numpy as np

from .._kernels._jit import kernel, parallel_kernel, prange

__all__ = ["margin", "certify"]

_PRECISION = {"float64": 53, "float32": 24, "float16": 11, "bfloat16": 8}
NEAREST = ("half_even", "half_away", "half_up", "half_down")


def _bits(dtype) -> int:
    return _PRECISION[np.dtype(dtype).name]


def margin(convention, x_dtype, s_dtype, qmin, qmax) -> float | None:
    """``rel`` for ``convention`` on x and scales of these dtypes (the largest over its
    per-channel and wide-range variants), or None when codes cannot be certified (a rounding mode
    that is not to nearest, a multiplier that can be 0, clamp bounds that the compute format does
    not hold exactly)."""
    import refquant as rq

    base = rq.conventions.get(convention)
    px, ps = _bits(x_dtype), _bits(s_dtype)
    rels = []
    for per_channel in (False, True):
        for wide in (False, True):
            conv = base.resolve(per_channel=per_channel, float_zero_point=False, wide=wide)
            if conv.rounding not in NEAREST or conv.tiny_amax:
                return None
            if conv.compute == "exact":
                rels.append(2.0**-50)
                continue
            if conv.compute == "promote":
                pc = px if px == ps else (24 if {px, ps} == {8, 11} else max(px, ps))
            elif conv.compute == "input64":
                pc = 53 if px == 53 else 24
            else:
                pc = {"float32": 24, "float64": 53}[conv.compute]
            pr = {"float32": 24, "float64": 53, "scale_dtype": ps}.get(conv.reciprocal, 24)
            if max(abs(int(qmin)), abs(int(qmax))) > 2**pc:
                return None
            rels.append(8.0 * 2.0 ** -min(pc, pr))
    return max(rels)


@parallel_kernel
def _certify_kernel(x, scale, zp, codes, g, qmin, qmax, rel, status):  # pragma: no cover - jitted
    rows, cols = codes.shape
    undecided = 0
    for i in prange(rows):
        row_undecided = 0
        for k in range(cols // g):
            inv = 1.0 / scale[i, k]  # t = x * inv errs by 2**-52 relative at most: inside rel
            z = np.float64(zp[i, k])
            lo_q = np.float64(qmin)
            hi_q = np.float64(qmax)
            for j in range(k * g, (k + 1) * g):  # branch-free, so that LLVM can vectorize it
                t = np.float64(x[i, j]) * inv
                v = t + z
                n = np.rint(v)
                sure = np.abs(v - n) < 0.5 - rel * (np.abs(t) + np.abs(z) + 1.0)  # False for NaN/inf
                q = min(max(n, lo_q), hi_q)
                st = np.uint8(2) - np.uint8(sure) * np.uint8(2 - (q != np.float64(codes[i, j])))
                status[i, j] = st
                row_undecided += st != 0
        undecided += row_undecided
    return undecided


@kernel
def _nonzero(status, count):  # pragma: no cover - jitted
    out = np.empty(count, np.int64)
    m = 0
    for i in range(status.size):
        if status[i] != 0:
            out[m] = i
            m += 1
    return out


def certify(x, scale, zp, codes, qmin, qmax, rel, status=None):
    """``(status, idx)``: ``status`` per element of ``codes [r, c]`` is 0 certified equal to the
    convention's code, 1 certified different, 2 undecided; ``idx`` the flat indices of the
    elements not 0. ``x`` float32 or float64 ``[r, c]``; ``scale`` and ``zp`` ``[r, groups]``
    (float64, int64); ``status`` a reusable uint8 buffer of ``codes``' shape."""
    if status is None:
        status = np.empty(codes.shape, np.uint8)
    g = codes.shape[1] // scale.shape[1]
    count = _certify_kernel(x, scale, zp, codes, g, qmin, qmax, rel, status)
    idx = _nonzero(status.reshape(-1), count) if count else np.zeros(0, np.int64)
    return status, idx
