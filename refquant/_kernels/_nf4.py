"""NF4 / 4-bit codebook kernels: block absmax, code selection and dequantization, driven by knob codes.

Float formats as in ``_affine``: 0 float64, 1 float32, 2 float16, 3 bfloat16; every op on a
float32/float16/bfloat16 value is computed in float64 and rounded once to its format (correct
rounding for +, -, *, /).
"""

import math

import numpy as np

from ._affine import rnd, round_pair_to_f32
from ._jit import fma32, inline_kernel, kernel, prange, sized_kernel
from ._round import cmp_x_vs_prod, two_prod, two_sum

NORM_RECIPROCAL, NORM_DIVIDE, NORM_EXACT = 0, 1, 2
SELECT_THRESHOLDS, SELECT_ARGMIN, SELECT_EXACT = 0, 1, 2
_TINY = 9.99999935e-39  # float32(1e-38), the clamp of bitsandbytes' reciprocal
_MIN_NORMAL32 = 2.0**-126


@inline_kernel
def block_span(b, block, n):
    """``(lo, hi)``: the elements of block ``b`` of ``block`` among ``n`` (the last may be partial)."""
    lo = b * block
    return lo, min(lo + block, n)


@kernel
def nan_absmax(x, lo, hi, zero):
    """``(max |x[lo:hi]|, whether any is NaN)``, the maximum starting at ``zero`` (its type)."""
    a = zero
    nan = False
    for i in range(lo, hi):
        v = abs(x[i])
        nan |= v != v
        a = v if v > a else a
    return a, nan


@sized_kernel
def block_absmax(x, block, nan_propagates, out):
    """``out[b] = max |x|`` over block ``b`` (the last block may be partial); NaN wins when
    ``nan_propagates`` (torch's ``max``), else it is skipped (C++ ``std::max``)."""
    for b in prange(out.size):
        lo, hi = block_span(b, block, x.size)
        m = 0.0
        for i in range(lo, hi):
            v = abs(np.float64(x[i]))
            if v != v:
                if nan_propagates:
                    m = v
                    break
            elif v > m:
                m = v
        out[b] = m


@sized_kernel
def select_codes(x, absmax, block, full_blocks, norm, norm_tail, select, fmt, levels, bounds, zero_lo,
                 zero_hi, code_of, out):
    """4-bit codes of ``x`` per block (module docstring of ``refquant.nf4`` for the formulas).

    ``levels`` are the codebook in ascending order (float64 values of the compute format),
    ``bounds`` the decision thresholds between neighbours, ``code_of`` the stored code of each
    sorted position. Blocks at index ``>= full_blocks`` normalize with ``norm_tail``.
    ``zero_lo``/``zero_hi`` are the sorted positions of -0 and +0 (equal when the codebook has one
    zero): a value that selects zero takes the one of its sign.
    """
    nb = absmax.size
    nl = levels.size
    for b in prange(nb):
        a = np.float64(absmax[b])
        mode = norm if b < full_blocks else norm_tail
        lo, hi = block_span(b, block, x.size)
        if mode == NORM_RECIPROCAL:
            inv = rnd(1.0 / max(a, _TINY), fmt) if a == a else a
        else:
            inv = 0.0
        for i in range(lo, hi):
            xi = np.float64(x[i])
            if select == SELECT_EXACT:
                # nearest level to the real x / a; ties to the lower level; a > 0 finite here
                k = 0
                if a == 0.0:
                    k = zero_hi
                else:
                    while k < nl - 1 and cmp_x_vs_prod(xi, bounds[k], a) > 0:
                        k += 1
                if zero_lo != zero_hi and (k == zero_lo or k == zero_hi):
                    k = zero_lo if math.copysign(1.0, xi) < 0 else zero_hi
                out[i] = code_of[k]
                continue
            if mode == NORM_RECIPROCAL:
                v = rnd(xi * inv, fmt)
            else:
                d = max(a, _TINY) if select == SELECT_THRESHOLDS else a
                v = rnd(xi / d, fmt) if d != 0.0 else np.nan  # d == 0: 0 / 0 (a NaN d stays NaN)
            if select == SELECT_THRESHOLDS:
                # count of thresholds strictly below v (torch.bucketize, right=False); NaN: the end
                k = 0
                if v != v:
                    k = nl - 1
                else:
                    v = min(max(v, -1.0), 1.0)
                    while k < nl - 1 and bounds[k] < v:
                        k += 1
            else:
                # argmin |v - level| in the compute format, first index on ties; NaN: index 0
                k = 0
                if v == v:
                    best = abs(rnd(v - levels[0], fmt))
                    for j in range(1, nl):
                        d = abs(rnd(v - levels[j], fmt))
                        if d < best:
                            best = d
                            k = j
            out[i] = code_of[k]


@sized_kernel
def dequantize_codes(codes, absmax, block, levels_by_code, exact, prod_fmt, out_fmt, flush, out):
    """``out[i] = round(level[code] * absmax[block])``: the product rounded to ``prod_fmt`` and then
    to ``out_fmt`` (two roundings) or, with ``exact``, the real product rounded once to ``out_fmt``.
    ``flush``: a rounded product below 2**-126 in magnitude becomes a zero of its sign first (a
    float32 subnormal meeting an AVX512-BF16 conversion)."""
    for b in prange(absmax.size):
        a = np.float64(absmax[b])
        lo, hi = block_span(b, block, codes.size)
        for i in range(lo, hi):
            c = levels_by_code[codes[i]]
            if exact:
                if out_fmt == 0 or c == 0.0 or not math.isfinite(a):
                    out[i] = c * a
                else:
                    p, e = two_prod(c, a)
                    out[i] = rnd(round_pair_to_f32(p, e, out_fmt != 1), out_fmt)
                continue
            v = rnd(c * a, prod_fmt)
            if flush and out_fmt == 3 and abs(v) < _MIN_NORMAL32:
                v = math.copysign(0.0, v)
            out[i] = rnd(v, out_fmt)


@sized_kernel
def lut_codes(x, absmax, block, lut, out):
    """bitsandbytes' C++ CPU 8-bit blockwise quantize of float32 ``x`` (absmax per block given):
    ``v = f32(x * f32(1 / absmax))``, clipped to [-1, 1];
    ``index = trunc(f32(f32(f32(f32(v + 1) * 0.5) * 65535) + 0.5))`` (NaN: 0); ``code = lut[index]``;
    a block with absmax 0 takes code 0."""
    for b in prange(absmax.size):
        lo, hi = block_span(b, block, x.size)
        a = np.float64(absmax[b])
        if a == 0.0:
            for i in range(lo, hi):
                out[i] = 0
            continue
        inv = np.float64(np.float32(1.0 / a))
        for i in range(lo, hi):
            v = np.float64(np.float32(np.float64(x[i]) * inv))
            if v != v:
                out[i] = lut[0]
                continue
            v = min(max(v, -1.0), 1.0)
            t = np.float64(np.float32(np.float64(np.float32(v + 1.0)) * 0.5))
            t = np.float64(np.float32(np.float64(np.float32(t * 65535.0)) + 0.5))
            out[i] = lut[int(t)]


@sized_kernel
def codebook_lut(midpoints, out):
    """bitsandbytes' 65536-entry lookup table: entry ``i`` is the count of float32 midpoints below
    ``f32(-1 + f32(f32(2 i) / 65535))``."""
    for i in prange(out.size):
        val = np.float64(np.float32(-1.0 + np.float64(np.float32(2.0 * i / 65535.0))))
        k = 0
        while k < midpoints.size and midpoints[k] < val:
            k += 1
        out[i] = k


@kernel
def linspace32(start, end, n, fused):
    """torch.linspace(start, end, n) in float32 on CPU (scalar path): ``step = f32((end - start) /
    (n - 1))``; element ``j < n // 2`` is ``start + step * j``, the rest ``end - step * (n - 1 - j)``,
    each multiply-add rounded once (``fused``) or twice."""
    out = np.empty(n, np.float32)
    step = np.float32(np.float32(end - start) / np.float32(n - 1))
    for j in range(n):
        if j < n // 2:
            k, base, s = np.float32(j), start, step
        else:
            k, base, s = np.float32(n - 1 - j), end, -step
        out[j] = fma32(s, k, base) if fused else np.float32(base + np.float32(s * k))
    return out


@inline_kernel
def _position15(v, bounds):
    """``15 - #(v <= bounds)``: the count of the 15 ascending ``bounds`` below ``v`` (15 for NaN),
    branch-free."""
    k = 15
    for j in range(15):
        k -= v <= bounds[j]
    return k


@sized_kernel
def threshold_codes32(x, block, full_blocks, bounds, code_of, identity, absmax, out):
    """The float32 threshold rule in one pass per block (the ``select_codes`` formulas with
    ``select = thresholds``, float32 compute, NaN-propagating absmax), for float32 ``x`` and the
    15 float32 ``bounds``: ``v = f32(x * f32(1 / max(a, 1e-38)))`` in whole blocks,
    ``f32(x / max(a, 1e-38))`` after; the position ``15 - #(v <= bounds)`` is the count of bounds
    below v, and 15 for NaN. ``identity``: ``code_of`` is ``0..15`` (skipped: the lookup would keep
    the loop from vectorizing)."""
    nb = absmax.size
    tiny = np.float32(_TINY)
    one = np.float32(1.0)
    for b in prange(nb):
        lo, hi = block_span(b, block, x.size)
        a, nan = nan_absmax(x, lo, hi, np.float32(0.0))
        if nan:
            a = np.float32(np.nan)
        absmax[b] = a
        d = max(a, tiny) if a == a else a
        if b < full_blocks:
            inv = one / d
            for i in range(lo, hi):
                out[i] = _position15(x[i] * inv, bounds)
        else:
            for i in range(lo, hi):
                out[i] = _position15(x[i] / d, bounds)
        if not identity:
            for i in range(lo, hi):
                out[i] = code_of[out[i]]


@kernel
def _cmp_x_vs_sum(x, s, e):
    """Sign of ``x - (s + e)`` computed exactly for ``(s, e)`` from :func:`two_sum`."""
    d = x - s  # exact whenever it is comparable with e (Sterbenz); otherwise |d| >> |e|
    return (d > e) - (d < e)


@sized_kernel
def exact_nested_codes(a, offset, nblk, mids, out_scale, out_codes):
    """Exact double quantization of float32 absmaxes ``a`` about the float32 ``offset``: per block
    of ``nblk``, ``M = f32(max |a - offset|)`` (real differences, one rounding) and the code of the
    level nearest to the real ``(a - offset) / M`` (ties to the lower level): the number of
    ``mids`` (ascending midpoints of the levels) with ``offset + mid * M < a``, found by exact
    comparisons (each ``mid * M`` is exact in float64)."""
    nb = out_scale.size
    for b in prange(nb):
        lo, hi = block_span(b, nblk, a.size)
        amin = np.float64(a[lo])
        amax = amin
        for i in range(lo, hi):
            v = np.float64(a[i])
            amin = min(amin, v)
            amax = max(amax, v)
        p, e = two_sum(amax, -offset)
        up = round_pair_to_f32(p, e, False)
        p, e = two_sum(offset, -amin)
        down = round_pair_to_f32(p, e, False)
        m = max(up, down)
        out_scale[b] = m
        for i in range(lo, hi):
            v = np.float64(a[i])
            k0, k1 = 0, mids.size
            while k0 < k1:  # the first midpoint with a <= offset + mid * M
                k = (k0 + k1) // 2
                s, e = two_sum(offset, mids[k] * m)
                if _cmp_x_vs_sum(v, s, e) > 0:
                    k0 = k + 1
                else:
                    k1 = k
            out_codes[i] = k0


@sized_kernel
def exact_nested_absmax(codes, levels, scale, offset, nblk, out):
    """``out[i] = f32(levels[codes[i]] * scale[i // nblk] + offset)`` with one rounding."""
    for i in prange(codes.size):
        p = levels[codes[i]] * np.float64(scale[i // nblk])  # 24 x 24 bits: exact
        s, e = two_sum(p, offset)
        out[i] = round_pair_to_f32(s, e, False)
