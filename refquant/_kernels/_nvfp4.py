"""NVFP4 kernels: e4m3 block scales per 16 elements and e2m1 element codes, driven by knob codes.

Codes are bit patterns: e2m1 ``sign << 3 | magnitude`` (magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6);
e4m3fn ``exponent << 3 | mantissa`` (bias 7, 0x7f NaN, max 448). Float32 steps are written as
float32 operations (each rounded once, IEEE); the exact steps compare in float64, where every
product of a midpoint, a scale and a float32 global scale is exact.
"""

import math

import numpy as np

from ._affine import rnd
from ._jit import f32_to_bits, kernel, prange, sized_kernel

BS_EXACT, BS_DOUBLE, BS_MODELOPT, BS_FUSED = 0, 1, 2, 3
EL_EXACT, EL_RECIPROCAL, EL_RECIPROCAL_PRODUCT, EL_DIVIDE = 0, 1, 2, 3
NAN_ERROR, NAN_CODE, NAN_BITS = 0, 1, 2
_FLT_MAX = np.float32(3.4028234663852886e38)
# e2m1 decision points between magnitude codes k and k + 1
_E2M1_MIDS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


@kernel
def div32(a, b):
    """float32 ``a / b`` with IEEE results for a zero divisor."""
    if b == 0:
        if a == 0 or a != a:
            return np.float32(np.nan)
        return np.float32(math.copysign(np.inf, a) * math.copysign(1.0, b))
    return np.float32(a / b)


@kernel
def e4m3_value(code):
    """The value of an e4m3fn code (float64; NaN for 0x7f/0xff)."""
    e = (code >> 3) & 15
    m = code & 7
    if e == 15 and m == 7:
        return np.nan
    v = m * 2.0**-9 if e == 0 else (8 + m) * 2.0 ** (e - 10)
    return -v if code & 128 else v


@kernel
def e4m3_code(v):
    """Round float64 ``v >= 0`` half to even to e4m3fn, saturating at 448 (code 0x7e); a NaN keeps
    its sign bit (0x7f or 0xff)."""
    if v != v:
        return 0xFF if math.copysign(1.0, v) < 0 else 0x7F
    if v >= 464.0:  # 448 + half its ulp rounds past 448: saturate
        return 0x7E
    if v < 2.0**-6:
        q = np.rint(v * 2.0**9)
        return int(q)
    e = math.frexp(v)[1] - 1  # v = 1.f * 2**e, e in [-6, 8]
    q = np.rint(math.ldexp(v, 3 - e)) - 8.0
    code = ((e + 7) << 3) + int(q)
    return min(code, 0x7E)


@kernel
def e4m3_code_exact(num, den):
    """e4m3fn code of the real ``num / den`` (``num >= 0``, ``den > 0``; every e4m3 midpoint
    times ``den`` exact in float64), half to even, saturating at 448."""
    c = e4m3_code(num / den)
    # the float64 quotient may sit on the wrong side of a midpoint: compare exactly
    lo = e4m3_value(c)
    if c < 0x7E:
        hi = e4m3_value(c + 1)
        mid = (lo + hi) / 2
        t = mid * den
        if num > t or (num == t and (c & 1)):
            c += 1
    if c > 0:
        lo = e4m3_value(c)
        prev = e4m3_value(c - 1)
        mid = (prev + lo) / 2
        t = mid * den
        if num < t or (num == t and (c & 1)):
            c -= 1
    return c


@kernel
def nan_bits_code(bits):
    """What torchao's float32-to-e2m1 bit arithmetic makes of a NaN with these bits (int32):
    the normal-range branch ``((|bits| - 0x3EE00001 + odd) >> 22) mod 256`` and the sign bit."""
    mag = bits & 0x7FFFFFFF
    odd = (mag >> 22) & 1
    code = ((mag - 1054867457 + odd) >> 22) & 0xFF
    return code | (8 if bits < 0 else 0)


@kernel
def block_scale_code(a, g, s_enc, bs_rule, scale_min, zero_to_one):
    """The e4m3 code of a block's scale from its amax ``a`` (float64, NaN allowed)."""
    if bs_rule == BS_EXACT:
        return 0 if g == 0 or a == 0 else e4m3_code_exact(a, 6.0 * g)
    a32 = np.float32(a)
    if bs_rule == BS_DOUBLE:
        r = div32(div32(a32, np.float32(6.0)), np.float32(g))
    elif bs_rule == BS_MODELOPT:
        r = div32(a32, np.float32(np.float32(6.0) * np.float32(g)))
        if r == 0:
            r = np.float32(1.0)
    else:
        mult = np.float32(np.float32(s_enc) * np.float32(1.0 / 6.0))
        r = np.float32(a32 * mult)
        r = min(r, _FLT_MAX) if r == r else r
    if r == r:
        r = max(r, np.float32(scale_min))
    return e4m3_code(np.float64(r))


@kernel
def element_multiplier(s, g, g_dec, el_rule):
    """float32 multiplier (divisor for ``EL_DIVIDE``) of a block with scale value ``s``."""
    s32 = np.float32(s)
    if el_rule == EL_RECIPROCAL:
        return div32(div32(np.float32(1.0), np.float32(g)), s32)
    if el_rule == EL_RECIPROCAL_PRODUCT:
        m = div32(np.float32(1.0), np.float32(s32 * np.float32(g_dec)))
        return min(m, _FLT_MAX) if m == m else m
    return np.float32(s32 * np.float32(g))


@sized_kernel
def nvfp4_quantize(x, nb, g, g_dec, s_enc, bs_rule, scale_min, zero_to_one, el_rule, nan_rule,
                   nan_code, drop_neg_zero, codes, scales):
    """Per block of 16: the e4m3 scale code and 16 e2m1 codes (``refquant.nvfp4`` for the rules).

    ``g``: the decode global scale (float32 value); ``g_dec``/``s_enc``: transformer_engine's
    decode and encode scales. ``x`` is float32 (float64 for the exact rules). The float32 rules
    round ``|v|`` with the half-to-even decision points as one branch-free sum.
    """
    for b in prange(nb):
        lo = b * 16
        a = np.float32(0.0) if el_rule != EL_EXACT else 0.0
        nan = False
        for i in range(lo, lo + 16):
            v = abs(x[i])
            nan |= v != v
            a = v if v > a else a
        if nan:
            a = np.nan
        sc = block_scale_code(np.float64(a), g, s_enc, bs_rule, scale_min, zero_to_one)
        scales[b] = sc
        s = e4m3_value(sc)
        if el_rule == EL_EXACT:
            sg = s * g  # exact in float64 (4 + 24 significant bits)
            for i in range(lo, lo + 16):
                xi = np.float64(x[i])
                ax = abs(xi)
                k = 0
                if sg > 0:
                    for j in range(7):
                        if ax > _E2M1_MIDS[j] * sg:
                            k = j + 1
                    if k < 7 and ax == _E2M1_MIDS[k] * sg and (k & 1) == 1:
                        k += 1
                codes[i] = (8 if math.copysign(1.0, xi) < 0 else 0) | k
            continue
        m = element_multiplier(s, g, g_dec, el_rule)
        for i in range(lo, lo + 16):
            v = x[i] / m if el_rule == EL_DIVIDE and m != 0 else x[i] * m
            if el_rule == EL_DIVIDE and m == 0:
                v = div32(x[i], m)
            t = abs(v)
            k = ((t > np.float32(0.25)) + (t >= np.float32(0.75)) + (t > np.float32(1.25))
                 + (t >= np.float32(1.75)) + (t > np.float32(2.5)) + (t >= np.float32(3.5))
                 + (t > np.float32(5.0)))
            neg = (f32_to_bits(v) >> 31) & 1
            if drop_neg_zero and v == 0:
                neg = 0
            codes[i] = (neg << 3) | k
        if nan or m != m:
            for i in range(lo, lo + 16):
                v = div32(x[i], m) if el_rule == EL_DIVIDE else np.float32(x[i] * m)
                if v != v:
                    if nan_rule == NAN_BITS:
                        # x86 returns the NaN multiplier (a NaN scale, decoded as 0x7ff00000) first
                        bits = 0x7FF00000 if m != m else f32_to_bits(x[i]) | 0x400000
                        codes[i] = nan_bits_code(bits)
                    else:
                        codes[i] = nan_code


@sized_kernel
def nvfp4_dequantize(codes, scales, g, exact, signed_zero, fmt, out):
    """``out = e2m1(code) * e4m3(scale) * g``: exactly, rounded once to ``fmt``, or as
    ``f32(q * f32(s * g))`` then ``fmt``; without ``signed_zero`` code 8 is +0."""
    nb = scales.size
    for b in prange(nb):
        s = e4m3_value(scales[b])
        sg32 = np.float64(np.float32(s * g))
        for i in range(b * 16, b * 16 + 16):
            c = codes[i]
            k = c & 7
            q = k * 0.5 if k < 4 else (2.0 if k == 4 else (3.0 if k == 5 else (4.0 if k == 6 else 6.0)))
            if c & 8 and (k or signed_zero):
                q = -q
            if exact:
                out[i] = rnd(q * s * g, fmt)  # q * s * g: at most 3 + 4 + 24 significant bits
            else:
                out[i] = rnd(np.float64(np.float32(q * sg32)), fmt)
