"""Scalar kernels that round real numbers to a low-precision float format's bit pattern.

Everything works from the bits: the input's exponent and significand come from its float64
pattern (float32 inputs are widened exactly), the rounding is integer arithmetic on the
significand, and the code is assembled from the rounded significand and exponent. Nothing goes
through ``log2`` or a float multiply that could round.

``sp`` is an int64 array of the codes a convention gives to the special cases (see ``SP_*``);
``fp`` holds the format: ``(M, emin, bias, max_mag, sign_bit)``.
"""

import math

import numpy as np

from ._jit import bits_to_f32, f32_to_bits, f64_to_bits, kernel, prange, sized_kernel
from ._round import round_quotient

HALF_EVEN, HALF_AWAY, HALF_UP, HALF_DOWN, FLOOR, CEIL, TOWARD_ZERO, STOCHASTIC = range(8)

# indices into the specials array ``sp``
SP_NAN_POS, SP_NAN_NEG, SP_INF_POS, SP_INF_NEG, SP_OVF_POS, SP_OVF_NEG = range(6)
SP_ZERO_POS, SP_ZERO_NEG, SP_UNDER_POS, SP_UNDER_NEG, SP_NEG = range(6, 11)
N_SPECIALS = 11

_MANT64 = (1 << 52) - 1
_ABS64 = (1 << 63) - 1
_INF64 = 0x7FF0000000000000


@kernel
def round_up(n, below, tie, above, frac_zero, negative, mode, u, d):
    """Whether the magnitude ``n + d`` (``n`` integer, ``0 <= d < 1``, ``d``'s comparison with 1/2
    given exactly by the flags) rounds up to ``n + 1`` under ``mode``, for a value of sign
    ``negative`` (floor and ceil act on the signed value, so they swap for negative values)."""
    if mode == HALF_EVEN:
        return above or (tie and (n & 1) == 1)
    if mode == HALF_AWAY:
        return above or tie
    if mode == HALF_UP:
        return above or (tie and not negative)
    if mode == HALF_DOWN:
        return above or (tie and negative)
    if mode == FLOOR:
        return negative and not frac_zero
    if mode == CEIL:
        return (not negative) and not frac_zero
    if mode == TOWARD_ZERO:
        return False
    return u < d


@kernel
def compose(n, q, negative, M, bias, max_mag, sign_bit, sp):
    """The code of the value ``(-1)**negative * n * 2**q`` (``n`` a rounded significand on the
    grid of binade ``q + M``; ``n <= 2**(M + 1)``), with overflow and underflow from ``sp``."""
    if n == 0:
        return sp[SP_UNDER_NEG] if negative else sp[SP_UNDER_POS]
    if n == (1 << (M + 1)):
        n = 1 << M
        q += 1
    if n < (1 << M):
        mag = n  # subnormal: q is the subnormal quantum
    else:
        mag = ((q + M + bias) << M) | (n - (1 << M))
    if mag > max_mag:
        return sp[SP_OVF_NEG] if negative else sp[SP_OVF_POS]
    return mag | sign_bit if negative else mag


@kernel
def encode_value(v, M, emin, bias, max_mag, sign_bit, sp, mode, u):
    """The code of the float64 ``v`` rounded once to the format (exact for every float64)."""
    b = f64_to_bits(v)
    negative = b < 0
    mag = b & _ABS64
    if mag >= _INF64:
        if mag > _INF64:
            return sp[SP_NAN_NEG] if negative else sp[SP_NAN_POS]
        return sp[SP_INF_NEG] if negative else sp[SP_INF_POS]
    if mag == 0:
        return sp[SP_ZERO_NEG] if negative else sp[SP_ZERO_POS]
    if negative and sp[SP_NEG] >= 0:
        return sp[SP_NEG]
    ef = mag >> 52
    if ef == 0:  # float64 subnormal: far below any supported format's half quantum
        return compose(1 if round_up(0, True, False, False, False, negative, mode, u, 0.0) else 0,
                       emin - M, negative, M, bias, max_mag, sign_bit, sp)
    m = (mag & _MANT64) | (1 << 52)
    k = ef - 1023  # floor(log2 |v|)
    q = (k if k > emin else emin) - M
    sh = q - (ef - 1075)  # >= 52 - M > 0: the bits of m below the quantum 2**q
    if sh > 60:
        n = 0
        below, tie, above, frac_zero, d = True, False, False, False, 0.0
    else:
        n = m >> sh
        rem = m & ((1 << sh) - 1)
        half = 1 << (sh - 1)
        below, tie, above, frac_zero = rem < half, rem == half, rem > half, rem == 0
        d = rem / (1 << sh) if mode == STOCHASTIC else 0.0
    if round_up(n, below, tie, above, frac_zero, negative, mode, u, d):
        n += 1
    return compose(n, q, negative, M, bias, max_mag, sign_bit, sp)


@kernel
def encode_quotient(x, s, M, emin, bias, max_mag, sign_bit, sp, mode, u):
    """The code of the real number ``x / s`` (float64 ``x``, finite ``s > 0``) rounded once."""
    if math.isnan(x) or math.isinf(x) or x == 0.0:
        return encode_value(x, M, emin, bias, max_mag, sign_bit, sp, mode, u)
    negative = x < 0.0
    if negative and sp[SP_NEG] >= 0:
        return sp[SP_NEG]
    ax = abs(x)
    t = ax / s
    if math.isinf(t):
        return sp[SP_OVF_NEG] if negative else sp[SP_OVF_POS]
    if t < 9.332636185032189e-302:  # 2**-1000: far below half of any supported quantum
        return compose(1 if round_up(0, True, False, False, False, negative, mode, u, 0.0) else 0,
                       emin - M, negative, M, bias, max_mag, sign_bit, sp)
    ms, es = math.frexp(s)  # s = ms * 2**es, ms in [0.5, 1)
    k = math.frexp(t)[1] - 1  # floor(log2 t); t may have rounded up onto 2**(k)
    if math.ldexp(ax, -es - k) < ms:  # exact: |x| / (s * 2**k) = that / ms
        k -= 1
    q = (k if k > emin else emin) - M
    xq = math.ldexp(x, -es - q)  # x / (s * 2**q) = xq / ms, exactly
    n = int(abs(round_quotient(xq, ms, mode, u)))
    return compose(n, q, negative, M, bias, max_mag, sign_bit, sp)


@sized_kernel
def encode_kernel(x, M, emin, bias, max_mag, sign_bit, sp, mode, u, out):
    """``out[i]`` = code of ``x[i]`` (float32 or float64), rounded once."""
    stochastic = u.size > 0
    for i in prange(x.size):
        out[i] = encode_value(np.float64(x[i]), M, emin, bias, max_mag, sign_bit, sp, mode,
                              u[i] if stochastic else 0.0)


@sized_kernel
def encode_scaled_kernel(x, gidx, scales, M, emin, bias, max_mag, sign_bit, sp, mode, u, out):
    """``out[i]`` = code of the real ``x[i] / scales[g]`` (``g = gidx[i]``, or 0 when ``gidx`` is
    empty), rounded once."""
    stochastic = u.size > 0
    per_group = gidx.size > 0
    for i in prange(x.size):
        s = scales[gidx[i]] if per_group else scales[0]
        out[i] = encode_quotient(np.float64(x[i]), s, M, emin, bias, max_mag, sign_bit, sp, mode,
                                 u[i] if stochastic else 0.0)


@sized_kernel
def decode_kernel(codes, table, out):
    """``out[i] = table[codes[i]]`` (codes already checked to be in range)."""
    for i in prange(codes.size):
        out[i] = table[codes[i]]


@sized_kernel
def encode_f32_half_even_kernel(x, M, emin, bias, max_mag, sign_bit, sp, out):
    """The fast path of :func:`encode_kernel` for float32 input, half to even, formats with
    subnormals: integer round-to-nearest-even on the float32 bits for target-normal values, and
    one float32 addition of ``2**(emin - M + 23)`` (whose rounding is the single RNE onto the
    subnormal grid) below ``2**emin``. Branch-free, so that the loop vectorises."""
    sh = np.int32(23 - M)
    rebias = np.int32((127 - bias) << 23)
    half_m1 = np.int32((1 << (sh - 1)) - 1)
    min_normal_bits = np.int32((emin + 127) << 23)
    magic_bits = np.int32((emin - M + 23 + 127) << 23)
    magic = bits_to_f32(magic_bits)
    mx = np.int32(max_mag)
    sb = np.int32(sign_bit)
    ovf_p, ovf_n = np.int32(sp[SP_OVF_POS]), np.int32(sp[SP_OVF_NEG])
    und_p, und_n = np.int32(sp[SP_UNDER_POS]), np.int32(sp[SP_UNDER_NEG])
    inf_p, inf_n = np.int32(sp[SP_INF_POS]), np.int32(sp[SP_INF_NEG])
    nan_p, nan_n = np.int32(sp[SP_NAN_POS]), np.int32(sp[SP_NAN_NEG])
    one = np.int32(1)
    for i in prange(x.size):
        b = f32_to_bits(x[i])
        a = b & np.int32(0x7FFFFFFF)
        neg = b < 0
        normal = (a - rebias + half_m1 + ((a >> sh) & one)) >> sh
        sub = f32_to_bits(bits_to_f32(a) + magic) - magic_bits
        mag = normal if a >= min_normal_bits else sub
        code = (mag | sb) if neg else mag
        code = (ovf_n if neg else ovf_p) if mag > mx else code
        code = (und_n if neg else und_p) if mag == 0 else code
        code = (inf_n if neg else inf_p) if a == np.int32(0x7F800000) else code
        code = (nan_n if neg else nan_p) if a > np.int32(0x7F800000) else code
        out[i] = np.uint8(code)
