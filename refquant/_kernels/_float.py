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

from ._jit import bits_to_f32, bits_to_f64, f32_to_bits, f64_to_bits, kernel, prange, sized_kernel
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


@kernel
def quotient_needs_exact(b, M, emin, nearest):
    """Whether the float64 quotient ``t`` (bits ``b``) may round differently from the real quotient
    it approximates: ``t`` is 0, a float64 subnormal, inf or NaN, or ``t`` lies exactly on one of
    the format's rounding boundaries (nearest modes: a midpoint ``(n + 1/2) * 2**q`` between
    neighbours on the grid of ``t``'s binade, the overflow and underflow thresholds included;
    directed modes: a grid point ``n * 2**q``). Branch-free."""
    a = b & _ABS64
    ef = a >> 52
    m = (a & _MANT64) | (1 << 52)
    k = ef - 1023
    q = (k if k > emin else emin) - M
    sh = q - (ef - 1075)  # >= 52 - M: the bits of m below the quantum 2**q
    sh = sh if sh < 62 else 62  # m < 2**53: nothing changes beyond
    rem = m & ((1 << sh) - 1)
    hit = (rem == (1 << (sh - 1))) if nearest else (rem == 0)
    return hit | (ef == 0) | (ef == 0x7FF)


@kernel
def rne64_consts(M, emin, bias, max_mag, sign_bit, sp):
    """The int64 constants of :func:`rne64_code` for one format and convention."""
    sh = 52 - M
    return (np.int64(sh), np.int64((1023 - bias) << 52), np.int64((1 << (sh - 1)) - 1),
            np.int64((emin + 1023) << 52), np.int64((emin - M + 52 + 1023) << 52), np.int64(max_mag),
            np.int64(sign_bit), np.int64(sp[SP_OVF_POS]), np.int64(sp[SP_OVF_NEG]),
            np.int64(sp[SP_UNDER_POS]), np.int64(sp[SP_UNDER_NEG]))


@kernel
def rne64_code(b, c):
    """The half-to-even code of the finite, nonzero, float64-normal ``t`` whose bits are ``b``
    (formats with subnormals and signed values): :func:`rne32_code` on float64 bits. The float64
    addition of ``2**(emin - M + 52)`` is one RNE onto the subnormal grid below ``2**emin``."""
    sh, rebias, half_m1, min_normal_bits, magic_bits, mx, sb, ovf_p, ovf_n, und_p, und_n = c
    a = b & _ABS64
    normal = (a - rebias + half_m1 + ((a >> sh) & 1)) >> sh
    sub = f64_to_bits(bits_to_f64(a) + bits_to_f64(magic_bits)) - magic_bits
    mag = normal if a >= min_normal_bits else sub
    m = np.int32(mag if mag <= mx else mx + 1)  # int32 lanes from here: selects that vectorise
    neg = np.int32(b >> 63)  # 0 or -1: sign masks instead of branches on the sign
    code = m | (np.int32(sb) & neg)
    ovf = (np.int32(ovf_n) & neg) | (np.int32(ovf_p) & ~neg)
    und = (np.int32(und_n) & neg) | (np.int32(und_p) & ~neg)
    code = ovf if m > np.int32(mx) else code
    return und if m == 0 else code


@sized_kernel
def encode_scaled_certified_kernel(x, gidx, scales, M, emin, bias, max_mag, sign_bit, sp, mode, rne, out):
    """:func:`encode_scaled_kernel` for the deterministic modes, certified by one float64 division.

    ``t = float64(x) / s`` is the real quotient ``r`` correctly rounded. Every rounding boundary
    of every supported format is a float64: the midpoints ``(2n + 1) * 2**(q - 1)`` (nearest modes)
    and grid points ``n * 2**q`` (directed modes) have at most ``M + 2`` significant bits and
    exponents in ``[emin - M - 1, emax + 1]``: at most 5 bits and exponents in ``[-128, 128]``
    for the named formats (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz, e8m0, e2m3, e3m2, e2m1), and a
    float64 for any 8-bit format. Rounding to float64 is monotone and fixes float64s,
    so ``r`` and ``t`` lie on the same side of every boundary unless ``t`` is one; then the codes
    of ``t`` and ``r`` agree. Where :func:`quotient_needs_exact` says ``t`` is a boundary (or 0,
    a float64 subnormal, inf or NaN), the exact :func:`encode_quotient` decides. ``rne``: a
    nearest mode on a format with subnormals and no negative-code special; the nearest modes
    differ only at midpoints, which go to the exact path, so :func:`rne64_code` serves them all."""
    per_group = gidx.size > 0
    nearest = mode <= HALF_DOWN
    c = rne64_consts(M, emin, bias, max_mag, sign_bit, sp)
    if rne:  # branch-free first pass (it vectorises), the rare boundary cases after it
        fix = np.empty(x.size, np.bool_)
        for i in prange(x.size):
            b = f64_to_bits(np.float64(x[i]) / (scales[gidx[i]] if per_group else scales[0]))
            fix[i] = quotient_needs_exact(b, M, emin, True)
            out[i] = rne64_code(b, c)
        for i in prange(x.size):
            if fix[i]:
                s = scales[gidx[i]] if per_group else scales[0]
                out[i] = encode_quotient(np.float64(x[i]), s, M, emin, bias, max_mag, sign_bit, sp,
                                         mode, 0.0)
        return
    for i in prange(x.size):
        xi = np.float64(x[i])
        s = scales[gidx[i]] if per_group else scales[0]
        t = xi / s
        b = f64_to_bits(t)
        if quotient_needs_exact(b, M, emin, nearest):
            out[i] = encode_quotient(xi, s, M, emin, bias, max_mag, sign_bit, sp, mode, 0.0)
        else:
            out[i] = encode_value(t, M, emin, bias, max_mag, sign_bit, sp, mode, 0.0)


@sized_kernel
def decode_kernel(codes, table, out):
    """``out[i] = table[codes[i]]`` (codes already checked to be in range)."""
    for i in prange(codes.size):
        out[i] = table[codes[i]]


@kernel
def rne32_consts(M, emin, bias, max_mag, sign_bit, sp):
    """The int32 constants of :func:`rne32_code` for one format and convention."""
    sh = 23 - M
    return (np.int32(sh), np.int32((127 - bias) << 23), np.int32((1 << (sh - 1)) - 1),
            np.int32((emin + 127) << 23), np.int32((emin - M + 23 + 127) << 23), np.int32(max_mag),
            np.int32(sign_bit), np.int32(sp[SP_OVF_POS]), np.int32(sp[SP_OVF_NEG]),
            np.int32(sp[SP_UNDER_POS]), np.int32(sp[SP_UNDER_NEG]), np.int32(sp[SP_ZERO_POS]),
            np.int32(sp[SP_ZERO_NEG]), np.int32(sp[SP_INF_POS]), np.int32(sp[SP_INF_NEG]),
            np.int32(sp[SP_NAN_POS]), np.int32(sp[SP_NAN_NEG]))


@kernel
def rne32_code(b, c):
    """The half-to-even code of the float32 whose bits are ``b`` (formats with subnormals):
    integer round-to-nearest-even on the bits for target-normal values, and one float32 addition
    of ``2**(emin - M + 23)`` (whose rounding is the single RNE onto the subnormal grid) below
    ``2**emin``. Branch-free, so that loops over it vectorise."""
    (sh, rebias, half_m1, min_normal_bits, magic_bits, mx, sb, ovf_p, ovf_n, und_p, und_n,
     zero_p, zero_n, inf_p, inf_n, nan_p, nan_n) = c
    a = b & np.int32(0x7FFFFFFF)
    neg = b < 0
    normal = (a - rebias + half_m1 + ((a >> sh) & np.int32(1))) >> sh
    sub = f32_to_bits(bits_to_f32(a) + bits_to_f32(magic_bits)) - magic_bits
    mag = normal if a >= min_normal_bits else sub
    code = (mag | sb) if neg else mag
    code = (ovf_n if neg else ovf_p) if mag > mx else code
    code = (und_n if neg else und_p) if mag == 0 else code
    code = (zero_n if neg else zero_p) if a == 0 else code
    code = (inf_n if neg else inf_p) if a == np.int32(0x7F800000) else code
    return (nan_n if neg else nan_p) if a > np.int32(0x7F800000) else code


@kernel
def rne32_code_symmetric(b, c):
    """:func:`rne32_code` for conventions whose negative special codes are the positive ones with
    the sign bit set: the special cases are chosen on the magnitude, the sign or-ed in last."""
    (sh, rebias, half_m1, min_normal_bits, magic_bits, mx, sb, ovf_p, ovf_n, und_p, und_n,
     zero_p, zero_n, inf_p, inf_n, nan_p, nan_n) = c
    a = b & np.int32(0x7FFFFFFF)
    normal = (a - rebias + half_m1 + ((a >> sh) & np.int32(1))) >> sh
    sub = f32_to_bits(bits_to_f32(a) + bits_to_f32(magic_bits)) - magic_bits
    mag = normal if a >= min_normal_bits else sub
    mag = ovf_p if mag > mx else mag
    mag = inf_p if a == np.int32(0x7F800000) else mag
    mag = nan_p if a > np.int32(0x7F800000) else mag
    return mag | ((b >> np.int32(31)) & sb)


@kernel
def symmetric_specials(sp, sign_bit):
    """Whether every negative special code is the positive one with the sign bit set (and zero
    results are +0 and -0), so that :func:`rne32_code_symmetric` applies."""
    ok = (sign_bit != 0 and sp[SP_UNDER_POS] == 0 and sp[SP_ZERO_POS] == 0
          and sp[SP_UNDER_NEG] == sign_bit and sp[SP_ZERO_NEG] == sign_bit)
    for pos, neg in ((SP_OVF_POS, SP_OVF_NEG), (SP_INF_POS, SP_INF_NEG), (SP_NAN_POS, SP_NAN_NEG)):
        ok = ok and sp[neg] == (sp[pos] | sign_bit) and (sp[pos] & sign_bit) == 0
    return ok


@sized_kernel
def encode_f32_half_even_kernel(x, M, emin, bias, max_mag, sign_bit, sp, out):
    """The fast path of :func:`encode_kernel` for float32 input, half to even, formats with
    subnormals (:func:`rne32_code`)."""
    c = rne32_consts(M, emin, bias, max_mag, sign_bit, sp)
    if symmetric_specials(sp, sign_bit):
        for i in prange(x.size):
            out[i] = np.uint8(rne32_code_symmetric(f32_to_bits(x[i]), c))
    else:
        for i in prange(x.size):
            out[i] = np.uint8(rne32_code(f32_to_bits(x[i]), c))


# ----------------------------------------------------------------------------- MX block scales

RULE_FLOOR, RULE_CEIL, RULE_EVEN, RULE_RCEIL = range(4)
SRC_BITS, SRC_LOG2_FP32, SRC_LOG2_FP32_MIN_NORMAL = range(3)
ELEM_EXACT, ELEM_FP32_DIVIDE, ELEM_FP32_RCP, ELEM_MICROXCALING = range(4)
NO_EXP = -100000
F32_MIN_NORMAL = 1.1754943508222875e-38


@kernel
def log2_fp32(a):
    """log2(a) rounded to float32, as the block libraries compute it in float32."""
    return np.float64(np.float32(math.log2(a)))


@kernel
def to_f32(v):
    return np.float64(np.float32(v))


@kernel
def block_exponent(amax, rule, source, emax, max_pos, M):
    """Shared exponent E (before clipping) of a block whose finite ``amax >= 0`` (``M``: the
    mantissa width the ``even`` rule rounds amax to)."""
    if rule == RULE_RCEIL:
        d = to_f32(amax / max_pos)
        return NO_EXP if d == 0.0 else int(math.ceil(log2_fp32(d)))
    if source != SRC_BITS:
        a = amax
        if a == 0.0:
            if source == SRC_LOG2_FP32:
                return NO_EXP
            a = F32_MIN_NORMAL
        return int(math.floor(log2_fp32(a))) - emax
    if amax == 0.0:
        return NO_EXP
    if rule == RULE_EVEN:  # round amax's float32 significand to M bits (half up), keep the exponent
        b = (f32_to_bits(np.float32(amax)) + (1 << (22 - M))) & 0x7F800000
        return (b >> 23) - 127 - emax
    e = math.frexp(amax)[1] - 1  # floor(log2 amax), read from the bits
    if rule == RULE_CEIL and amax != math.ldexp(1.0, e):
        e += 1
    return e - emax


@kernel
def microxcaling_element(v, M, emin, max_pos, even):
    """microxcaling's float32 element quantizer (``_quantize_elemwise_core``, saturating)."""
    if math.isinf(v) or math.isnan(v):
        return v
    a = abs(v)
    pe = math.floor(log2_fp32(a if a != 0.0 else 1.0))
    if pe < emin:
        pe = emin
    p2 = to_f32(math.ldexp(1.0, int(pe))) if pe < 200 else math.inf
    t = to_f32(to_f32(a / p2) * (1 << M))
    r = math.floor(to_f32(t + 0.5))
    if even and to_f32(t - 0.5) % 2.0 == 0.0:
        r -= 1.0
    out = to_f32(to_f32(r / (1 << M)) * p2)  # 0 * inf is NaN: x near FLT_MAX gives NaN
    if out > max_pos:
        out = max_pos
    if v < 0.0:
        return -out
    return out


@sized_kernel
def mx_kernel(x, blk, rule, source, scaling, nan_over, nonfinite_nan, emax, max_pos, M, emin, bias,
              max_mag, sign_bit, sp, int_lo, is_int, mxc_even, fast, even_m, codes, scodes, vals, mults):
    """One MX block per iteration: the shared exponent, the e8m0 scale code, the element codes
    (and, for the microxcaling element arithmetic, its float element values in ``vals``).

    ``fast`` (float32 x, float element formats, half to even, exact or float32 scaling, symmetric
    special codes): only the scale codes and each block's float32 multiplier ``mults`` are
    written here; :func:`encode_blocks_f32` encodes the elements. There the
    element ``x * 2**-E`` is a
    float32 except where it leaves float32's normal range, far from any element rounding boundary
    (an overflow saturates, a float32 subnormal rounds to zero either way), so the branch-free
    float32 encoder gives the single rounding."""
    for b in prange(x.size // blk):
        base = b * blk
        amax = 0.0
        nan = False
        if fast:  # float32: the largest magnitude is the largest |bits| (NaN's bits exceed inf's)
            top = np.int32(0)
            xs = x[base:base + blk]
            for j in range(blk):
                top = max(top, f32_to_bits(xs[j]) & np.int32(0x7FFFFFFF))
            nan = top > np.int32(0x7F800000)
            amax = np.float64(bits_to_f32(top)) if not nan else 0.0
        else:
            for j in range(blk):
                a = abs(np.float64(x[base + j]))
                if a != a:
                    nan = True
                elif a > amax:
                    amax = a
        scode = 0
        if nan or (math.isinf(amax) and nonfinite_nan):
            scode = 255
        elif math.isinf(amax):  # torchao: the exponent field of inf reads 128
            scode = 254 if rule == RULE_RCEIL else min(max(128 - emax, -127), 128) + 127
        else:
            e = block_exponent(amax, rule, source, emax, max_pos, even_m)
            if e == NO_EXP:
                e = -127
            if e > 127 and nan_over:
                scode = 255
            else:
                scode = min(max(e, -127), 127) + 127
        e = scode - 127
        if scaling == ELEM_FP32_RCP:
            if scode == 255:
                mult = math.nan
            elif scode == 254:
                mult = math.ldexp(1.0, -127)
            elif scode == 0:
                mult = 1.0
            else:
                mult = math.ldexp(1.0, -e)
        elif scaling == ELEM_FP32_DIVIDE:
            s32 = math.inf if scode == 255 else math.ldexp(1.0, max(e, -126))
            mult = 1.0 / s32 if s32 != math.inf else 0.0
        else:
            mult = math.ldexp(1.0, -e)
        scodes[b] = scode
        if fast:  # elements: encode_blocks_f32 (a NaN block under exact scaling: codes of +-0)
            mults[b] = np.float32(0.0 if scode == 255 and scaling == ELEM_EXACT else mult)
            continue
        for j in range(blk):
            xv = np.float64(x[base + j])
            if scode == 255 and scaling in (ELEM_EXACT, ELEM_MICROXCALING):
                codes[base + j] = 0
                if scaling == ELEM_MICROXCALING:  # only microxcaling has a value buffer
                    vals[base + j] = math.nan
                continue
            v = xv * mult  # exact: a power of two (or 0, inf, NaN) times a float
            if scaling != ELEM_EXACT:
                v = to_f32(v)
            mxc = scaling == ELEM_MICROXCALING
            if is_int:
                t = v * 64.0
                if v != v:
                    q = 0.0
                elif mxc:  # floor(|t| + 1/2) in float32, minus 1 on ties for "even"
                    q = math.floor(to_f32(abs(t) + 0.5))
                    if mxc_even and to_f32(abs(t) - 0.5) % 2.0 == 0.0:
                        q -= 1.0
                    q = min(q, 127.0)
                    q = -q if t < 0.0 else q
                else:
                    q = min(max(np.rint(t), int_lo), 127.0)
                codes[base + j] = np.int64(q)
                if mxc:
                    vals[base + j] = q / 64.0
                continue
            if mxc:
                v = microxcaling_element(v, M, emin, max_pos, mxc_even)
                vals[base + j] = v
            else:
                codes[base + j] = encode_value(v, M, emin, bias, max_mag, sign_bit, sp, 0, 0.0)


@sized_kernel
def microxcaling_kernel(x, M, emin, max_pos, even, out):
    """``out[i]`` = microxcaling's float32 element quantization of ``x[i]`` (saturating)."""
    for i in prange(x.size):
        out[i] = microxcaling_element(np.float64(x[i]), M, emin, max_pos, even)


@kernel
def brevitas_element(x, M, emin, max_pos, saturate, has_inf):
    """brevitas FloatQuant of the float32 value ``x`` (scale 1): internal scale
    ``2**max(floor(log2_fp32(fl32(|x| + 2**-126))) - M, emin - M)``, ``rne(x / s) * s`` in float32,
    then the clamp: saturating to +-max, else values beyond max become inf (formats with inf) or
    NaN. inf input gives NaN (inf / inf)."""
    if math.isnan(x):
        return x
    a = to_f32(abs(x) + F32_MIN_NORMAL)
    p = math.floor(log2_fp32(a)) if math.isfinite(a) else math.inf
    if p - M < emin - M:
        p = emin
    s = to_f32(math.ldexp(1.0, int(p - M))) if p < 300 else math.inf
    y = to_f32(np.rint(to_f32(x / s)) * s) if math.isfinite(s) else math.nan
    if math.isnan(y):
        return y
    if abs(y) > max_pos:
        if saturate:
            return math.copysign(max_pos, y)
        return math.copysign(math.inf, y) if has_inf else math.nan
    return y


@sized_kernel
def brevitas_kernel(x, M, emin, max_pos, saturate, has_inf, out):
    """``out[i]`` = brevitas FloatQuant of ``x[i]``."""
    for i in prange(x.size):
        out[i] = brevitas_element(np.float64(x[i]), M, emin, max_pos, saturate, has_inf)


@sized_kernel
def encode_blocks_f32(x, blk, mults, sp, M, emin, bias, max_mag, sign_bit, codes):
    """``codes[i]`` = half-to-even code of ``fl32(x[i] * mults[i // blk])`` (each multiplier a
    power of two, 0 or NaN) under symmetric special codes (:func:`rne32_code_symmetric`)."""
    c = rne32_consts(M, emin, bias, max_mag, sign_bit, sp)
    for b in prange(x.size // blk):
        m32 = mults[b]
        xs = x[b * blk:(b + 1) * blk]  # slices: the inner loop then vectorises
        cs = codes[b * blk:(b + 1) * blk]
        for j in range(blk):
            cs[j] = np.uint8(rne32_code_symmetric(f32_to_bits(xs[j] * m32), c))


# ----------------------------------------------------------------------------- checking stored codes


@kernel
def _differs32(b, s32, cd, c32, sym):  # pragma: no cover
    """Whether ``cd`` differs from the code of ``fl32(x / s32)`` (``x``'s float32 bits ``b``)."""
    tb = f32_to_bits(bits_to_f32(b) / s32)
    code = rne32_code_symmetric(tb, c32) if sym else rne32_code(tb, c32)
    return code != cd


@kernel
def _differs64(b, s, cd, c64, M, emin, zero_p, zero_n):  # pragma: no cover
    """Whether ``cd`` is not certified to be the code of the real ``x / s`` (``x``'s float32 bits
    ``b``): the float64 quotient is a rounding boundary (not for a zero x) or its code differs."""
    tb = f64_to_bits(np.float64(bits_to_f32(b)) / s)
    zero = (b & np.int32(0x7FFFFFFF)) == 0
    code = np.int32(rne64_code(tb, c64))
    code = (zero_n if b < 0 else zero_p) if zero else code
    return (quotient_needs_exact(tb, M, emin, True) and not zero) or code != cd


@kernel
def _row_pass(xr, shift, s, cr, f32_quotient, sym, c32, c64, M, emin, zero_p, zero_n, nan_mask, nan_lo,
              nan_span):  # pragma: no cover
    """One row, branch-free: (elements not certified equal, NaN codes, largest |x| bits)."""
    s32 = np.float32(s)
    bad = np.int32(0)
    nans = np.int32(0)
    top = np.int32(0)
    for j in range(cr.size):
        b = np.int32(np.uint32(xr[j]) << shift)
        top = max(top, b & np.int32(0x7FFFFFFF))
        cd = np.int32(cr[j])
        nans += np.int32(np.uint32((cd & nan_mask) - nan_lo) <= np.uint32(nan_span))
        if f32_quotient:
            bad += np.int32(_differs32(b, s32, cd, c32, sym))
        else:
            bad += np.int32(_differs64(b, s, cd, c64, M, emin, zero_p, zero_n))
    return bad, nans, top


@kernel
def scaled_code_check(xb, shift, scale, codes, f32_quotient, sym, c32, c64, M, emin, zero_p, zero_n,
                      nan_mask, nan_lo, nan_span, idx, amax_bits):  # pragma: no cover
    """Compare stored codes with the scaled cast of x, one row at a time.

    ``xb``: x's float32 bit patterns (int32, ``shift`` 0) or bfloat16 ones (uint16, ``shift``
    16), ``[r, c]``; ``scale``: float64 ``[r]`` (float32 values); ``codes``: uint8 ``[r, c]``.
    The code of element ``(i, j)`` is computed as the encoders compute it: ``f32_quotient``:
    :func:`rne32_code` (``sym``: :func:`rne32_code_symmetric`) of ``fl32(x / fl32(s))``, as
    :func:`encode_f32_half_even_kernel` does; else :func:`rne64_code` of the float64 quotient,
    as :func:`encode_scaled_certified_kernel` does, which decides every element whose quotient is
    not a rounding boundary (:func:`quotient_needs_exact`), a zero x giving the zero codes
    ``zero_p``/``zero_n``. ``idx`` receives, in row-major order, the flat indices whose stored
    code differs or that are not decided here (the caller decides those); their count is the
    first result. A code ``c`` is a NaN code when ``(c & nan_mask) - nan_lo`` (unsigned) is at
    most ``nan_span``; their count is the second. ``amax_bits[i]``: the largest ``|x|`` bits of
    row ``i`` (a NaN above inf). Each row is scanned once without stores (it vectorises) and
    again only when it holds such an element."""
    rows, cols = codes.shape
    m = 0
    nans = 0
    for i in range(rows):
        s = scale[i]
        bad, n_nan, top = _row_pass(xb[i], shift, s, codes[i], f32_quotient, sym, c32, c64, M, emin, zero_p,
                                    zero_n, nan_mask, nan_lo, nan_span)
        nans += n_nan
        amax_bits[i] = top
        if bad:
            s32 = np.float32(s)
            for j in range(cols):
                b = np.int32(np.uint32(xb[i, j]) << shift)
                cd = np.int32(codes[i, j])
                if f32_quotient:
                    hit = _differs32(b, s32, cd, c32, sym)
                else:
                    hit = _differs64(b, s, cd, c64, M, emin, zero_p, zero_n)
                if hit:
                    idx[m] = i * cols + j
                    m += 1
    return m, nans
