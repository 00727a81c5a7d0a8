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

from .._kernels._jit import bits_to_f32, inline_kernel, kernel

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


SPAN = 32  # elements scanned branch-free before the (rare) pass that records undecided ones


@inline_kernel
def _undecided(t, z, rel, lo_q, hi_q, code):  # pragma: no cover
    """Whether ``code`` is not certified equal to the convention's code of ``v = t + z``."""
    v = t + z
    n = np.rint(v)
    sure = np.abs(v - n) < 0.5 - rel * (np.abs(t) + np.abs(z) + 1.0)  # False for NaN/inf
    return (not sure) | (min(max(n, lo_q), hi_q) != np.float64(code))


@kernel
def _certify_kernel(xb, shift, scale, zp, codes, g, qmin, qmax, rel, idx, amax):  # pragma: no cover
    # serial on purpose: tasks run side by side on the cores (a parallel kernel per sub-chunk
    # waits on its slowest thread, 5-10x slower on a shared machine). ``xb``: float32 bit
    # patterns (int32, shift 0) or bfloat16 ones (uint16, shift 16), widened here exactly.
    # Each span of SPAN elements is first scanned without a data-dependent branch or store; only
    # a span holding an undecided element is scanned again to record where (1.4x faster).
    rows, cols = codes.shape
    lo_q = np.float64(qmin)
    hi_q = np.float64(qmax)
    m = 0
    for i in range(rows):
        for k in range(cols // g):
            inv = 1.0 / scale[i, k]  # t = x * inv errs by 2**-52 relative at most: inside rel
            z = np.float64(zp[i, k])
            top = np.int32(0)
            for j0 in range(k * g, (k + 1) * g, SPAN):
                j1 = min(j0 + SPAN, (k + 1) * g)
                any_undecided = False
                for j in range(j0, j1):
                    b = np.int32(np.uint32(xb[i, j]) << shift)
                    top = max(top, b & np.int32(0x7FFFFFFF))  # |x| as bits: integer max, NaN above inf
                    t = np.float64(bits_to_f32(b)) * inv
                    any_undecided |= _undecided(t, z, rel, lo_q, hi_q, codes[i, j])
                if any_undecided:
                    for j in range(j0, j1):
                        t = np.float64(bits_to_f32(np.int32(np.uint32(xb[i, j]) << shift))) * inv
                        if _undecided(t, z, rel, lo_q, hi_q, codes[i, j]):
                            idx[m] = i * cols + j
                            m += 1
            amax[i, k] = top
    return m


@kernel
def _certify64(x, scale, zp, codes, g, qmin, qmax, rel, idx, amax):  # pragma: no cover
    cols = codes.shape[1]
    groups = cols // g
    m = 0
    for r in range(codes.shape[0] * groups):  # group k of row i, in row-major order
        i, k = r // groups, r % groups
        inv, z = 1.0 / scale[i, k], np.float64(zp[i, k])
        top = 0.0
        for j in range(k * g, (k + 1) * g):
            if _undecided(x[i, j] * inv, z, rel, np.float64(qmin), np.float64(qmax), codes[i, j]):
                idx[m] = i * cols + j
                m += 1
            top = max(top, np.abs(x[i, j])) if not np.isnan(x[i, j]) else top
        amax[i, k] = top
    return m


def certify(x, scale, zp, codes, qmin, qmax, rel, buf):
    """``(idx, amax)``: the flat indices of the elements of ``codes [r, c]`` that are not
    certified equal to the convention's code (certified different, or undecided), and the
    per-group ``max |x|`` (NaN ignored for float64; a NaN bit pattern above inf otherwise) in x's
    precision. ``x``: float16, bfloat16, float32 or float64 ``[r, c]``; ``scale`` and ``zp``
    ``[r, groups]`` (float64, int64); ``buf`` a dict of reusable buffers."""
    g = codes.shape[1] // scale.shape[1]
    idx = buf.get(("idx", codes.size))
    if idx is None:
        idx = buf[("idx", codes.size)] = np.empty(codes.size, np.int64)
    x = np.asarray(x)
    if x.dtype == np.float64:
        amax = np.empty(scale.shape, np.float64)
        m = _certify64(x, scale, zp, codes, g, qmin, qmax, rel, idx, amax)
        return idx[:m].copy(), amax
    if x.dtype.itemsize == 2 and x.dtype.kind != "f":  # bfloat16
        xb, shift = x.view(np.uint16), 16
    else:
        xb, shift = np.asarray(x, np.float32).view(np.int32), 0
    bits = np.empty(scale.shape, np.int32)
    m = _certify_kernel(xb, shift, scale, zp, codes, g, qmin, qmax, rel, idx, bits)
    return idx[:m].copy(), bits.view(np.float32)
