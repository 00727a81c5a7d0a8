"""NVFP4 kernels: e4m3 block scales per 16 elements and e2m1 element codes, driven by knob codes.

The formats come in as their decode tables (``FloatFormat.decode_table()``: the value of every
code; positive codes ascend with their values). Float32 steps are written as float32 operations
(each rounded once, IEEE); the exact steps compare in float64, where every product of a format
midpoint, a scale and a float32 global scale is exact.
"""

import math

import numpy as np

from ._affine import rnd
from ._jit import f32_to_bits, kernel, prange, sized_kernel
from ._nf4 import nan_absmax

BS_EXACT, BS_DOUBLE, BS_MODELOPT, BS_FUSED, BS_ENCODE_PRODUCT = 0, 1, 2, 3, 4
EL_EXACT, EL_RECIPROCAL, EL_RECIPROCAL_PRODUCT, EL_DIVIDE, EL_DIVIDE_ENCODE = 0, 1, 2, 3, 4
DQ_EXACT, DQ_FLOAT32, DQ_FLOAT32_ENCODE = 0, 1, 2
NAN_ERROR, NAN_CODE, NAN_BITS = 0, 1, 2
_FLT_MAX = np.float32(3.4028234663852886e38)


@kernel
def div32(a, b):
    """float32 ``a / b`` with IEEE results for a zero divisor."""
    if b == 0:
        if a == 0 or a != a:
            return np.float32(np.nan)
        return np.float32(math.copysign(np.inf, a) * math.copysign(1.0, b))
    return np.float32(a / b)


@kernel
def round_to_table(num, den, table, top):
    """The code ``c`` in ``[0, top]`` whose value ``table[c]`` (ascending in c) is nearest to the
    real ``num / den`` (``num >= 0``, ``den > 0``; each midpoint times ``den`` exact in float64),
    a tie to the even code, saturating at ``top``."""
    lo, hi = 0, top
    while lo < hi:  # the largest c with table[c] * den <= num
        mid = (lo + hi + 1) // 2
        if table[mid] * den <= num:
            lo = mid
        else:
            hi = mid - 1
    if lo < top:
        t = (table[lo] + table[lo + 1]) / 2 * den
        if num > t or (num == t and (lo & 1) == 1):
            lo += 1
    return lo


@kernel
def nan_bits_code(bits):
    """What torchao's float32-to-e2m1 bit arithmetic makes of a NaN with these bits (int32):
    the normal-range branch ``((|bits| - 0x3EE00001 + odd) >> 22) mod 256`` and the sign bit."""
    mag = bits & 0x7FFFFFFF
    odd = (mag >> 22) & 1
    code = ((mag - 1054867457 + odd) >> 22) & 0xFF
    return code | (8 if bits < 0 else 0)


@kernel
def block_scale_code(a, g, s_enc, bs_rule, scale_min, zero_to_one, e4m3, top, a_fmt):
    """The e4m3 code of a block's scale from its amax ``a`` (float64, NaN allowed): saturating at
    code ``top`` (448), a NaN keeping its sign bit. ``a_fmt``: the input's dtype code, to which
    ``BS_ENCODE_PRODUCT`` rounds ``f32(a / 6)``."""
    if bs_rule == BS_EXACT:
        return 0 if g == 0 or a == 0 else round_to_table(a, 6.0 * g, e4m3, top)
    a32 = np.float32(a)
    if bs_rule == BS_ENCODE_PRODUCT:
        r = np.float32(np.float32(s_enc) * np.float32(rnd(np.float64(div32(a32, np.float32(6.0))), a_fmt)))
    elif bs_rule == BS_DOUBLE:
        r = div32(div32(a32, np.float32(6.0)), np.float32(g))
    elif bs_rule == BS_MODELOPT:
        r = div32(a32, np.float32(np.float32(6.0) * np.float32(g)))
    else:
        mult = np.float32(np.float32(s_enc) * np.float32(1.0 / 6.0))
        r = np.float32(a32 * mult)
        r = min(r, _FLT_MAX) if r == r else r
    if r != r:
        return 0xFF if math.copysign(1.0, r) < 0 else 0x7F
    if r == 0 and zero_to_one:
        r = np.float32(1.0)
    r = max(r, np.float32(scale_min))
    return round_to_table(np.float64(r), 1.0, e4m3, top)


@kernel
def element_multiplier(s, g, g_dec, s_enc, el_rule):
    """float32 multiplier (divisor for ``EL_DIVIDE`` and ``EL_DIVIDE_ENCODE``) of a block with
    scale value ``s``."""
    s32 = np.float32(s)
    if el_rule == EL_RECIPROCAL:
        return div32(div32(np.float32(1.0), np.float32(g)), s32)
    if el_rule == EL_RECIPROCAL_PRODUCT:
        m = div32(np.float32(1.0), np.float32(s32 * np.float32(g_dec)))
        return min(m, _FLT_MAX) if m == m else m
    if el_rule == EL_DIVIDE_ENCODE:
        return div32(s32, np.float32(s_enc))
    return np.float32(s32 * np.float32(g))


@sized_kernel
def nvfp4_quantize(x, nb, g, g_dec, s_enc, bs_rule, scale_min, zero_to_one, zero_code, a_fmt, el_rule,
                   nan_rule, nan_code, nan_lanes, drop_neg_zero, e4m3, e2m1, mids32, codes, scales):
    """Per block of 16: the e4m3 scale code and 16 e2m1 codes (``refquant.nvfp4`` for the rules).

    ``g``: the decode global scale (float32 value); ``g_dec``/``s_enc``: transformer_engine's
    decode and encode scales; ``zero_code``: the e4m3 code a block scale rounding to zero takes;
    ``a_fmt``: x's dtype code (``BS_ENCODE_PRODUCT``). ``nan_lanes``: under NAN_BITS, the
    leading positions of a block where ``NaN * NaN`` keeps the multiplier's NaN (the input's
    after them). ``x`` is float32
    (float64 for the exact rules). ``e4m3``/``e2m1`` are the decode tables; the float32 rules
    round ``|v|`` as the branch-free count of the seven e2m1 midpoints ``mids32`` below it (a tie
    goes to the even code).
    """
    top = 0x7E  # 448
    for b in prange(nb):
        lo = b * 16
        a, nan = nan_absmax(x, lo, lo + 16, np.float32(0.0) if el_rule != EL_EXACT else 0.0)
        if nan:
            a = np.nan
        sc = block_scale_code(np.float64(a), g, s_enc, bs_rule, scale_min, zero_to_one, e4m3, top, a_fmt)
        if sc == 0:
            sc = zero_code
        scales[b] = sc
        s = e4m3[sc]
        if el_rule == EL_EXACT:
            sg = s * g  # exact in float64 (4 + 24 significant bits)
            for i in range(lo, lo + 16):
                xi = np.float64(x[i])
                k = round_to_table(abs(xi), sg, e2m1, 7) if sg > 0 else 0
                codes[i] = (8 if math.copysign(1.0, xi) < 0 else 0) | k
            continue
        m = element_multiplier(s, g, g_dec, s_enc, el_rule)
        divide = el_rule == EL_DIVIDE or el_rule == EL_DIVIDE_ENCODE
        m0, m1, m2, m3, m4, m5, m6 = (mids32[0], mids32[1], mids32[2], mids32[3], mids32[4], mids32[5],
                                      mids32[6])
        for i in range(lo, lo + 16):
            v = x[i] / m if divide and m != 0 else x[i] * m
            if divide and m == 0:
                v = div32(x[i], m)
            t = abs(v)
            # a tie at midpoint j goes to the even code: up after an odd code
            k = ((t > m0) + (t >= m1) + (t > m2) + (t >= m3) + (t > m4) + (t >= m5) + (t > m6))
            neg = (f32_to_bits(v) >> 31) & 1
            if drop_neg_zero and v == 0:
                neg = 0
            codes[i] = (neg << 3) | k
        if nan or m != m:
            for i in range(lo, lo + 16):
                v = div32(x[i], m) if divide else np.float32(x[i] * m)
                if v != v:
                    if nan_rule == NAN_BITS:
                        # x * m with both NaN keeps one operand's NaN: the multiplier's (a NaN
                        # scale, decoded as 0x7ff00000) in the first nan_lanes positions
                        keep_x = x[i] != x[i] and (m == m or i - lo >= nan_lanes)
                        bits = f32_to_bits(x[i]) | 0x400000 if keep_x else 0x7FF00000
                        codes[i] = nan_bits_code(bits)
                    else:
                        codes[i] = nan_code


@sized_kernel
def nvfp4_dequantize(codes, scales, g, s_enc, mode, signed_zero, e4m3, e2m1, fmt, out):
    """``out = e2m1(code) * e4m3(scale) * g``: exactly (``DQ_EXACT``), rounded once to ``fmt``, or
    as ``f32(q * f32(s * g))`` (``DQ_FLOAT32``) or ``f32(q * f32(s / s_enc))``
    (``DQ_FLOAT32_ENCODE``) then ``fmt``; without ``signed_zero`` code 8 is +0."""
    nb = scales.size
    exact = mode == DQ_EXACT
    for b in prange(nb):
        s = e4m3[scales[b]]
        if mode == DQ_FLOAT32_ENCODE:
            sg32 = np.float64(div32(np.float32(s), np.float32(s_enc)))
        else:
            sg32 = np.float64(np.float32(s * g))
        for i in range(b * 16, b * 16 + 16):
            c = codes[i]
            q = e2m1[c]
            if q == 0 and not signed_zero:
                q = 0.0
            if exact:
                out[i] = rnd(q * s * g, fmt)  # q * s * g: at most 3 + 4 + 24 significant bits
            else:
                out[i] = rnd(np.float64(np.float32(q * sg32)), fmt)
