"""Affine quantize / dequantize kernels, specialized per resolved convention.

A convention's knobs arrive as integer codes (:mod:`refquant._codes`). :func:`affine_kernel`
compiles one loop per tuple of codes (:class:`Key`), in which every knob is a compile-time
constant passed to the element functions (:func:`quantize_element`, :func:`dequantize_element`,
compiled once); LLVM inlines them into the loop, folds each knob's branch away and vectorizes
what is left, so no element pays for a knob. Each specialization has its own Numba cache file
(the first call of a new knob tuple compiles for about a second).

Float formats: 0 float64, 1 float32, 2 float16, 3 bfloat16. Every float32/float16/bfloat16 op is
computed in float64 and rounded once to its format, which is the correctly rounded result for
+, -, *, / (a float64 holds more than twice their precision plus two bits).
"""

import functools
import hashlib
import math
import pathlib
import types as types_module
from typing import NamedTuple

import numpy as np

from .._codes import Clamp, Dequant, Quotient, ZeroPoint
from ._jit import (
    HAS_F16C,
    Sized,
    bits_to_f32,
    bits_to_f64,
    f16_to_f32_hw,
    f32_to_bits,
    f32_to_f16_hw,
    f64_to_bits,
    fma32,
    fma64,
    inline_kernel,
    kernel,
    prange,
    sized_kernel,
)
from ._round import HALF_EVEN, round32, round_quotient, round_value, two_prod

QUOTIENT_EXACT, QUOTIENT_DIVIDE, QUOTIENT_RECIPROCAL = map(int, Quotient)
CLAMP_FLOAT, CLAMP_CAST_FIRST, CLAMP_CAST_LAST, CLAMP_WRAP32_FIRST, CLAMP_INT32_FIRST = map(int, Clamp)
ZP_AFTER, ZP_BEFORE = int(ZeroPoint.AFTER_ROUND), int(ZeroPoint.BEFORE_ROUND)  # NONE: neither
DEQUANT_EXACT, DEQUANT_FLOAT32, DEQUANT_FLOAT64, DEQUANT_MIXED = (int(Dequant.EXACT), int(Dequant.FLOAT32),
                                                                  int(Dequant.FLOAT64), int(Dequant.MIXED))
DEQUANT_DIVIDE, DEQUANT_INT32_FLOAT32 = int(Dequant.DIVIDE), int(Dequant.INT32_FLOAT32)  # PROMOTE: NumPy
_INT64_LIMIT = 9.223372036854775808e18  # 2**63
NO_CAST = (_INT64_LIMIT, 0.0, 0.0, 0.0)  # convert_to_int arguments that never apply
# lrintf's int64 (INT64_MIN for NaN, +-inf, |v| >= 2**63) assigned to a C int: its low 32 bits
WRAP32 = (_INT64_LIMIT, 0.0, 4294967296.0, 2147483648.0)


@kernel
def rnd(v, fmt):
    """Round float64 ``v`` to format ``fmt`` (round half to even, overflow to +-inf).

    float16 / bfloat16: normal values round on the float64 bit pattern (dropping the low
    ``52 - (p - 1)`` fraction bits, half to even; a carry moves into the exponent, as it should);
    values below the smallest normal round to a multiple of the subnormal quantum with ``rint``
    (exact scalings by powers of two). Branch-free, so that loops over it vectorize.
    """
    if fmt == 0:
        return v
    if fmt == 1:
        return np.float64(np.float32(v))
    if fmt == 2:
        drop, tiny, quantum, vmax = 42, 6.103515625e-05, 5.960464477539063e-08, 65504.0
    else:
        drop, tiny, quantum, vmax = 45, 1.1754943508222875e-38, 9.183549615799121e-41, 3.3895313892515355e38
    b = f64_to_bits(v)
    half = np.int64(1) << (drop - 1)
    b = (b + (half - 1) + ((b >> drop) & 1)) & ~((np.int64(1) << drop) - 1)
    r = bits_to_f64(b)
    r = np.rint(v * (1.0 / quantum)) * quantum if abs(v) < tiny else r  # 1 / quantum: a power of two
    r = math.copysign(math.inf, v) if abs(r) > vmax else r
    return v if v != v or v == 0.0 else r


@kernel
def _nudge_f64(p, up):
    """The float64 next to ``p`` in magnitude (``up``: away from zero)."""
    b = f64_to_bits(p)
    return bits_to_f64(b + 1 if up else b - 1)


@kernel
def round_pair_to_f32(p, e, odd):
    """Round the exact value ``p + e`` (``p = fl(p + e)``) to float32, returned as float64.

    ``odd=False`` gives the correctly rounded float32. ``odd=True`` gives float32 round-to-odd,
    which a later round-half-even cast to float16/bfloat16 turns into the correctly rounded value.
    """
    if e != 0.0 and (f64_to_bits(p) & 1) == 0:
        p = _nudge_f64(p, (e > 0.0) == (p > 0.0))  # toward p + e, making p odd: round-to-odd
    f = np.float32(p)
    if odd and math.isfinite(f) and np.float64(f) != p:
        if (f32_to_bits(f) & 1) == 0:
            fb = f32_to_bits(f)
            f = bits_to_f32(fb + 1 if abs(p) > abs(np.float64(f)) else fb - 1)
    return np.float64(f)


@kernel
def convert_to_int(v, cast):
    """An x86 float-to-integer conversion of the integer-valued ``v``, wrapped to the code dtype.

    ``cast = (lim, overflow_q, mod, top)``: values outside ``[-lim, lim)`` become ``overflow_q``
    (the conversion's INT_MIN, already wrapped); the rest are taken modulo ``mod`` (0: no wrap)
    into ``[top - mod, top)``.
    """
    lim, overflow_q, mod, top = cast
    if not (-lim <= v < lim):
        return overflow_q
    if mod != 0.0:
        v -= mod * np.floor(v / mod)
        if v >= top:
            v -= mod
    return v


@kernel
def _wrap32(v):
    """The integer-valued ``v`` modulo 2**32, in ``[-2**31, 2**31)`` (int32 arithmetic)."""
    return v - 4294967296.0 * np.floor((v + 2147483648.0) / 4294967296.0)


@kernel
def quantize_element(x, s_q, inv, z, z_c, lo, hi, qmode, cfmt, afmt, zp_mode, fma, zp_add_int,
                     rmode, u, clamp_mode, cast, nan_q):
    """One element's integer code (an integer-valued float64), or ``nan_q`` for NaN input:
    :func:`clamp_code` of :func:`rounded_code`."""
    return clamp_code(rounded_code(x, s_q, inv, z, z_c, qmode, cfmt, afmt, zp_mode, fma, zp_add_int,
                                   rmode, u), z, lo, hi, clamp_mode, cast, nan_q)


@kernel
def rounded_code(x, s_q, inv, z, z_c, qmode, cfmt, afmt, zp_mode, fma, zp_add_int, rmode, u):
    """One element's code before the clamp: the rounded quotient with its zero point (NaN for NaN).

    ``zp_mode``: the zero point is added after rounding (``ZP_AFTER``), before it (``ZP_BEFORE``),
    or not at all (any other value, ``ZeroPoint.NONE``: ``q = round(t)``, whose ``-0.0`` survives
    into fake_quantize).
    A float add of an after-rounding zero point is rounded to ``afmt`` (``z_c`` is ``z`` in it).
    """
    if qmode == QUOTIENT_EXACT:
        return round_quotient(x, s_q, rmode, u) + z
    t = quotient_value(x, s_q, inv, z_c, qmode, cfmt, afmt, zp_mode == ZP_BEFORE, fma)
    return round_and_add(t, z, z_c, afmt, zp_mode, zp_add_int, rmode, u)


@kernel
def quotient_value(x, s_q, inv, z_c, qmode, cfmt, afmt, zp_before, fma):
    """The float quotient ``t`` a convention rounds (``x / s`` or ``x * inv``, plus a
    before-rounding zero point), each op rounded to ``cfmt``."""
    xv = rnd(x, cfmt)
    if qmode == QUOTIENT_RECIPROCAL and zp_before and fma:
        if cfmt == 1:
            t = np.float64(fma32(np.float32(xv), np.float32(inv), np.float32(z_c)))
        else:
            t = fma64(xv, inv, z_c)
    else:
        if qmode == QUOTIENT_DIVIDE:
            t = rnd(xv / s_q, cfmt)
        else:
            t = rnd(xv * inv, cfmt)
        if zp_before:
            t = rnd(t + z_c, cfmt)
    if zp_before and afmt != cfmt:  # a float64 sum rounded to float32 (C's lrintf(double))
        t = rnd(t, afmt)
    return t


@kernel
def rnd32(v, fmt):
    """:func:`rnd` of the float32 ``v`` to ``fmt`` (float32 or wider: ``v``; float16 (2) or
    bfloat16 (3): rounded half to even, overflowing to +-inf), in float32 arithmetic: the CPU's
    float16 conversion where it has one (:data:`HAS_F16C`), else :func:`rnd32_bits`. A float32 op
    followed by this rounding is the half format's own op: float32 holds more than twice a half
    format's precision plus two bits."""
    if fmt < 2:
        return v
    if fmt == 2 and HAS_F16C:
        r = f16_to_f32_hw(f32_to_f16_hw(v))
        return v if v != v else r
    return rnd32_bits(v, fmt)


@kernel
def rnd32_bits(v, fmt):
    """:func:`rnd32` for float16 (2) or bfloat16 (3) in float32 and 32-bit integer arithmetic,
    without a branch."""
    b = f32_to_bits(v)
    sign = b & np.int32(-2147483648)
    drop = np.int32(16 if fmt == 3 else 13)
    half = (np.int32(1) << (drop - np.int32(1))) - np.int32(1)
    r = bits_to_f32(np.int32((b + half + ((b >> drop) & np.int32(1))) & -(np.int32(1) << drop)))
    if fmt == 2:
        # below the smallest normal: the multiple of 2**-24 that adding and taking 3/4 rounds to
        # (half to even), with v's sign (a -0.0 result included)
        sub = bits_to_f32(f32_to_bits((v + np.float32(0.75)) - np.float32(0.75)) | sign)
        r = sub if abs(v) < np.float32(6.103515625e-05) else r
        r = bits_to_f32(sign | np.int32(0x7F800000)) if abs(r) > np.float32(65504.0) else r
    return v if v != v else r


@kernel
def quotient_value32(x, s_q, inv, z_c, qmode, zp_before, fma, cfmt, x_in_cfmt):
    """:func:`quotient_value` for ``afmt == cfmt`` (float32, float16 or bfloat16) in float32
    arithmetic (all float32 arguments, ``x`` a float32 value, already a ``cfmt`` value where
    ``x_in_cfmt``): each IEEE float32 op is the float64 op rounded once to float32, and a half
    format's op is the float32 op rounded once to it (:func:`rnd32`), so the result is the same
    bits, at twice the vector width."""
    x = x if x_in_cfmt else rnd32(x, cfmt)
    if qmode == QUOTIENT_RECIPROCAL and zp_before and fma:  # float32 only
        return fma32(x, inv, z_c)
    t = rnd32(x / s_q if qmode == QUOTIENT_DIVIDE else x * inv, cfmt)
    if zp_before:
        t = rnd32(t + z_c, cfmt)
    return t


@kernel
def round_and_add(t, z, z_c, afmt, zp_mode, zp_add_int, rmode, u):
    """Round the float quotient ``t`` and add an after-rounding zero point (the code before the
    clamp)."""
    r = np.rint(t) if rmode == HALF_EVEN else round_value(t, rmode, u)
    if zp_mode != ZP_AFTER:
        return r
    if zp_add_int:
        return r + z
    return rnd(r + z_c, afmt)


@kernel
def unclamped_code(q, z, clamp_mode, cast):
    """The code that ``clamp_mode`` compares with ``[lo, hi]`` (see :func:`clamp_code`): the
    rounded ``q`` itself, or what the conversion before the clamp makes of it. The straight-through
    mask is this code lying in ``[qmin, qmax]``."""
    if clamp_mode == CLAMP_WRAP32_FIRST:
        return convert_to_int(q, WRAP32)
    if clamp_mode == CLAMP_INT32_FIRST:
        return _wrap32(convert_to_int(q - z, cast) + z)
    return q


@kernel
def clamp_code(q, z, lo, hi, clamp_mode, cast, nan_q):
    """The code of the rounded (zero point added) ``q``, or ``nan_q`` for NaN.

    ``clamp_mode``: clamp the float to ``[lo, hi]`` (``CLAMP_FLOAT``); convert to int64 first, so
    that ``|q| >= 2**63`` gives ``lo`` and a code of ``-0.0`` becomes ``+0`` (``CLAMP_CAST_FIRST``);
    or clamp, then convert with
    :func:`convert_to_int` (``CLAMP_CAST_LAST``); or convert to int64 and keep its low 32 bits as
    a signed int32, then clamp (``CLAMP_WRAP32_FIRST``); or convert ``round(t)`` with ``cast``
    (NaN included), add ``z`` in int32 arithmetic, then clamp (``CLAMP_INT32_FIRST``, with an
    exact integer add: ``q - z`` is then ``round(t)`` wherever the conversion keeps it).
    """
    c = min(max(unclamped_code(q, z, clamp_mode, cast), lo), hi)
    if clamp_mode == CLAMP_CAST_FIRST:  # an int64 has no -0: -0.0 + 0.0 is +0.0
        c = c + 0.0 if abs(q) < _INT64_LIMIT else lo
    elif clamp_mode == CLAMP_CAST_LAST:
        c = convert_to_int(c, cast)
    elif clamp_mode == CLAMP_INT32_FIRST:
        return c
    return nan_q if q != q else c


@kernel
def _dequantize_exact(q, z, s_d, ofmt, odd):
    p, e = two_prod(q - z, s_d)
    if ofmt == 0 or not math.isfinite(p):  # an overflowing product is +-inf (e is NaN)
        return p
    return round_pair_to_f32(p, e, odd)


@kernel
def to_format(v, fmt):
    """torch's conversion of a float64 or integer ``v`` to ``fmt``: float16 and bfloat16 go through
    float32 (two roundings)."""
    return rnd(rnd(v, 1), fmt) if fmt >= 2 else rnd(v, fmt)


@kernel
def _dequantize_promote(q, z, s_d, ofmt, pfmt):
    d = rnd(to_format(q, ofmt) - to_format(z, ofmt), ofmt)
    return rnd(d * s_d, pfmt)


@kernel
def dequantize_element(q, z, s_d, dmode, ofmt, pfmt, odd):
    """``(q - z) * s`` under dequant mode ``dmode`` (see conventions), as float64.

    Kept small (the larger modes are calls) so that LLVM inlines it into a specialized loop,
    where ``dmode`` is a constant and only one mode's code remains."""
    if q != q:
        return q
    if dmode == DEQUANT_EXACT:
        return _dequantize_exact(q, z, s_d, ofmt, odd)
    if dmode == DEQUANT_FLOAT32:  # s_d is a float32 value: one float32 product
        return np.float64(np.float32(q - z) * np.float32(s_d))
    if dmode == DEQUANT_FLOAT64:
        return (q - z) * s_d
    if dmode == DEQUANT_MIXED:
        return rnd(rnd(q, 1) - rnd(z, 1), 1) * s_d
    if dmode == DEQUANT_INT32_FLOAT32:  # q - z in int32 arithmetic, which wraps
        return np.float64(np.float32(_wrap32(q - z)) * np.float32(s_d))
    if dmode == DEQUANT_DIVIDE:
        return rnd(rnd(q - z, 1) / s_d, 1)
    return _dequantize_promote(q, z, s_d, ofmt, pfmt)


@kernel
def half_value(b, fmt):
    """The float64 that float16 (``fmt`` 2) or bfloat16 (3) bits ``b`` (an integer in
    ``[0, 2**16)``) encode, exactly: widening inside a kernel replaces a conversion pass."""
    m = b & 0x7FFF
    if fmt == 3:
        v = np.float64(bits_to_f32(np.int32(m << 16)))
    else:
        e = m >> 10
        v = bits_to_f64(((e + 1008) << 52) | ((m & 0x3FF) << 42))
        v = np.float64(m) * 5.960464477539063e-08 if e == 0 else v  # subnormal: m * 2**-24
        v = (math.inf if (m & 0x3FF) == 0 else math.nan) if e == 31 else v
    return -v if b >= 0x8000 else v


@kernel
def half_bits(h, fmt):
    """The float16 (``fmt`` 2) or bfloat16 (3) bits of ``h``, a value of that format (or +-inf,
    NaN: the quiet NaN of the sign, as NumPy's and ml_dtypes' casts give for the quiet NaNs the
    kernels produce)."""
    sign = (f64_to_bits(h) >> 48) & 0x8000
    a = abs(h)
    if fmt == 3:
        m = np.int64(f32_to_bits(np.float32(a))) >> 16
        m = 0x7FC0 if a != a else m
    else:
        m = (f64_to_bits(a) >> 42) - (1008 << 10)
        m = m if a >= 6.103515625e-05 else np.int64(a * 16777216.0 if a == a else 0.0)
        m = 0x7C00 if a > 65504.0 else m
        m = 0x7E00 if a != a else m
    return sign | m


@kernel
def load_value(xi, xfmt):
    """Element ``xi`` of an input stored as format ``xfmt`` (halves as bits), as float64."""
    if xfmt >= 2:
        return half_value(np.int64(xi), xfmt)
    return np.float64(xi)


class Key(NamedTuple):
    """The knob codes one specialized :func:`affine_kernel` is compiled for."""

    qmode: int  # Quotient
    cfmt: int  # compute Format
    afmt: int  # Format of a float zero-point add (cfmt, or its promotion with the zero point's)
    zp_mode: int  # ZeroPoint
    fma: bool
    zp_add_int: bool
    rmode: int  # Rounding (a constant of the compiled loop: no per-element switch)
    clamp_mode: int  # Clamp
    dequant: bool  # fake_quantize (True) or quantize
    dmode: int  # Dequant
    ofmt: int  # output Format of fake_quantize (float16 / bfloat16: stored as their bits)
    pfmt: int  # promote Format of Dequant.PROMOTE
    grouping: int  # GROUP_NONE, GROUP_ROWS, GROUP_OUTER or GROUP_INDEX
    drawn: bool  # stochastic draws in u
    xfmt: int = 1  # Format of x's elements (float16 / bfloat16: passed as their uint16 bits)
    f32ops: bool = False  # the quotient in float32 arithmetic (:func:`quotient_value32`)
    fast32: bool = False  # runs of elements first take the all-float32 pass (:func:`_fast32_run_py`)
    mask: bool = False  # the loop also writes the straight-through mask


# How groups of parameters map onto x: one group; x seen as (outer, channels, inner) with
# channel g's parameters, walked by rows of ``inner`` elements (long rows) or by outer index
# (short rows); or a group index per element.
GROUP_NONE, GROUP_ROWS, GROUP_OUTER, GROUP_INDEX = 0, 1, 2, 3
ROW_MIN = 64  # per-channel rows at least this long are the parallel unit

# The template's knobs (Key's fields, upper case) and inner functions: placeholders here, bound
# to constants and compiled functions in each specialization's copy of the module namespace.
QMODE = CFMT = AFMT = ZP_MODE = FMA = ZP_ADD_INT = RMODE = CLAMP_MODE = DEQUANT = DMODE = OFMT = PFMT = 0
GROUPING = DRAWN = XFMT = F32OPS = FAST32 = MASK = 0
_affine_element = _affine_run = _exact_chunk = _fast32_run = None

# The loops, one per grouping. Each quantizes (``DEQUANT`` false: integer ``out``) or
# fake-quantizes every element of ``x``; ``u`` holds the stochastic draws (``DRAWN``); with
# ``MASK``, ``m[i]`` is set to whether element i's code before the clamp lies in ``[lo, hi]``
# (the straight-through mask; False for NaN). A group's parameters are read once per run of
# elements that share them, so that the element loop has no loads LLVM cannot hoist.


def _loop_none(x, shape3, gidx, u, s_q, inv, z, z_c, s_d, lo, hi, cast, nan_q, out, m):
    chunks = (x.size + _CHUNK - 1) // _CHUNK
    for c in prange(chunks):
        _affine_run(x, u, c * _CHUNK, min(x.size, (c + 1) * _CHUNK), s_q[0], inv[0], z[0], z_c[0],
                    s_d[0], lo, hi, cast, nan_q, out, m)


def _loop_rows(x, shape3, gidx, u, s_q, inv, z, z_c, s_d, lo, hi, cast, nan_q, out, m):
    outer, channels, inner = shape3
    for row in prange(outer * channels):
        g = row % channels
        _affine_run(x, u, row * inner, (row + 1) * inner, s_q[g], inv[g], z[g], z_c[g], s_d[g],
                    lo, hi, cast, nan_q, out, m)


def _loop_outer(x, shape3, gidx, u, s_q, inv, z, z_c, s_d, lo, hi, cast, nan_q, out, m):
    outer, channels, inner = shape3
    for o in prange(outer):
        for g in range(channels):
            start = (o * channels + g) * inner
            _affine_run(x, u, start, start + inner, s_q[g], inv[g], z[g], z_c[g], s_d[g], lo, hi,
                        cast, nan_q, out, m)


def _loop_index(x, shape3, gidx, u, s_q, inv, z, z_c, s_d, lo, hi, cast, nan_q, out, m):
    for i in prange(x.size):
        g = gidx[i]
        v, inside = _affine_element(x[i], u[i] if DRAWN else 0.0, s_q[g], inv[g], z[g], z_c[g],
                                    s_d[g], lo, hi, cast, nan_q)
        out[i] = v
        if MASK:
            m[i] = inside


_LOOPS = (_loop_none, _loop_rows, _loop_outer, _loop_index)


def _affine_run_py(x, u, start, stop, s_q, inv, z, z_c, s_d, lo, hi, cast, nan_q, out, m):
    ms = m[start:stop] if MASK else m
    if FAST32 and not _fast32_run(x[start:stop], s_q, inv, z, s_d, lo, hi, out[start:stop], ms):
        return
    # slices indexed from 0: LLVM then sees non-negative indices (contiguous vector loads)
    xs, os = x[start:stop], out[start:stop]
    us = u[start:stop] if DRAWN else u
    for i in range(xs.size):
        v, inside = _affine_element(xs[i], us[i] if DRAWN else 0.0, s_q, inv, z, z_c, s_d, lo, hi,
                                    cast, nan_q)
        os[i] = v
        if MASK:
            ms[i] = inside


def _affine_element_py(xi, ui, s_q, inv, z, z_c, s_d, lo, hi, cast, nan_q):
    # (the output value, whether the code before the clamp lies in [lo, hi])
    xv = load_value(xi, XFMT)
    if F32OPS:
        t = np.float64(quotient_value32(np.float32(xv), np.float32(s_q), np.float32(inv),
                                        np.float32(z_c), QMODE, ZP_MODE == ZP_BEFORE, FMA, CFMT,
                                        XFMT == CFMT))
        r = round_and_add(t, z, z_c, AFMT, ZP_MODE, ZP_ADD_INT, RMODE, ui)
    else:
        r = rounded_code(xv, s_q, inv, z, z_c, QMODE, CFMT, AFMT, ZP_MODE, FMA, ZP_ADD_INT, RMODE, ui)
    q = clamp_code(r, z, lo, hi, CLAMP_MODE, cast, nan_q)
    p = unclamped_code(r, z, CLAMP_MODE, cast)
    inside = (r == r) & (p >= lo) & (p <= hi)
    if DEQUANT:
        v = dequantize_element(q, z, s_d, DMODE, OFMT, PFMT, OFMT == 2 or OFMT == 3)
        # a half output: the float32 the value was stored as, cast to the half format
        return (np.float64(half_bits(rnd(rnd(v, 1), OFMT), OFMT)) if OFMT >= 2 else v), inside
    return q, inside


# The all-float32 pass. Where the float32 quotient t has |t| < ORDINARY_32, every later step of a
# float32 convention (rounding under any deterministic mode, the zero point's add, the clamp, the
# product or quotient of the dequantization) is, on integer-valued operands below 2**24, either
# exact in float32 or one float32 operation, so float32 arithmetic gives the general path's bits
# at twice its vector width. ``_compute`` allows it only where that holds for every code of the
# range (integer zero point and bounds below 2**22, a finite float32 dequantization scale); a run
# holding a NaN quotient (and, under the clamp rules that wrap or convert before they clamp, an
# infinite or large one) is computed again by the general loop.
ORDINARY_32 = 4194304.0  # 2**22


@kernel
def half_to_f32(b, fmt):
    """The float32 that float16 (``fmt`` 2) or bfloat16 (3) bits ``b`` encode (a NaN: a quiet NaN
    of its sign): the CPU's conversion where it has one (:data:`HAS_F16C`), else
    :func:`half_to_f32_bits`."""
    if fmt == 2 and HAS_F16C:
        return f16_to_f32_hw(b)
    return half_to_f32_bits(b, fmt)


@kernel
def half_to_f32_bits(b, fmt):
    """:func:`half_to_f32` in 32-bit integer arithmetic (a NaN: the quiet NaN of its sign, whatever
    its payload)."""
    b = np.int32(b)
    if fmt == 3:
        return bits_to_f32(np.int32(b << np.int32(16)))
    m = b & np.int32(0x7FFF)
    e = m >> np.int32(10)
    v = bits_to_f32(np.int32((m << np.int32(13)) + np.int32(112 << 23)))
    v = np.float32(m) * np.float32(5.960464477539063e-08) if e == np.int32(0) else v  # m * 2**-24
    special = np.float32(np.inf) if (m & np.int32(0x3FF)) == np.int32(0) else np.float32(np.nan)
    v = special if e == np.int32(31) else v
    return -v if b >= np.int32(0x8000) else v


@kernel
def f32_to_half(v, fmt):
    """The float16 (``fmt`` 2) or bfloat16 (3) bits of the float32 ``v`` (not NaN) rounded half
    to even (beyond the format's range, +-inf included: +-inf), as :func:`half_bits` gives: the
    CPU's conversion where it has one (:data:`HAS_F16C`), else :func:`f32_to_half_bits`."""
    if fmt == 2 and HAS_F16C:
        return np.int32(f32_to_f16_hw(v))
    return f32_to_half_bits(v, fmt)


@kernel
def f32_to_half_bits(v, fmt):
    """:func:`f32_to_half` in 32-bit integer arithmetic."""
    b = f32_to_bits(v)
    sign = (b >> np.int32(16)) & np.int32(0x8000)
    a = b & np.int32(0x7FFFFFFF)
    if fmt == 3:
        return sign | ((a + np.int32(0x7FFF) + ((a >> np.int32(16)) & np.int32(1))) >> np.int32(16))
    m = ((a + np.int32(0xFFF) + ((a >> np.int32(13)) & np.int32(1))) >> np.int32(13)) - np.int32(112 << 10)
    m = np.int32(np.rint(abs(v) * np.float32(16777216.0))) if a < np.int32(0x38800000) else m  # subnormal
    m = np.int32(0x7C00) if a >= np.int32(0x477FF000) else m  # 65520 and up round to inf
    return sign | m


@kernel
def f64_to_half(v, fmt):
    """The float16 (``fmt`` 2) or bfloat16 (3) bits of the float64 ``v`` rounded half to even,
    for ``v`` zero or in the format's normal range or beyond (+-inf), in 64-bit integer
    arithmetic (no branch: loops over it vectorize)."""
    b = f64_to_bits(v)
    sign = (b >> 48) & 0x8000
    a = b & 0x7FFFFFFFFFFFFFFF
    drop, bias, top = (42, 1008 << 10, 0x7C00) if fmt == 2 else (45, 896 << 7, 0x7F80)
    m = ((a + ((1 << (drop - 1)) - 1) + ((a >> drop) & 1)) >> drop) - bias
    m = min(m, top)
    return sign | (0 if a == 0 else m)


def _fast32_run_py(xs, s_q, inv, z, s_d, lo, hi, os, ms):
    """The all-float32 pass over one run; True where an element is out of its domain (the run is
    then computed again by the general loop)."""
    s_q, inv, z, s_d = np.float32(s_q), np.float32(inv), np.float32(z), np.float32(s_d)
    lo, hi = np.float32(lo), np.float32(hi)
    bad = False  # a bool: an integer flag would be widened to int64, halving the vector width
    for i in range(xs.size):
        xv = half_to_f32(xs[i], XFMT) if XFMT >= 2 else np.float32(xs[i])
        t = quotient_value32(xv, s_q, inv, z, QMODE, ZP_MODE == ZP_BEFORE, FMA, CFMT, XFMT == CFMT)
        if CLAMP_MODE == CLAMP_FLOAT or CLAMP_MODE == CLAMP_CAST_LAST:
            # a quotient past 2**22 rounds, adds and clamps to the general loop's code too
            bad = bad | (t != t)
        else:  # a large quotient wraps or converts to INT_MIN in the general loop
            bad = bad | (not abs(t) < np.float32(ORDINARY_32))
        q = round32(t, RMODE)
        if ZP_MODE == ZP_AFTER:
            q = q + z if ZP_ADD_INT else rnd32(q + z, AFMT)
        if CLAMP_MODE == CLAMP_INT32_FIRST:
            q = (q - z) + z
        if MASK:  # below 2**22 the conversions before a clamp keep q
            ms[i] = (q >= lo) & (q <= hi)
        c = min(max(q, lo), hi)
        if CLAMP_MODE == CLAMP_CAST_FIRST or CLAMP_MODE == CLAMP_WRAP32_FIRST:  # -0.0 becomes +0.0
            c = c + np.float32(0.0)
        if DEQUANT:
            v = (c - z) / s_d if DMODE == DEQUANT_DIVIDE else (c - z) * s_d
            if OFMT >= 2:
                os[i] = f32_to_half(v, OFMT)
            else:
                os[i] = v
        else:
            os[i] = c
    return bad


def _no_fast32_py(xs, s_q, inv, z, s_d, lo, hi, os, ms):
    return True


_CHUNK = 1 << 14  # elements per parallel task of a per-tensor loop


@functools.cache
def affine_kernel(key: Key) -> Sized:
    """The loop of ``key.grouping`` compiled for ``key``: a copy of the template with every knob a
    constant, serial and parallel twins, each with its own cache file named after the key.
    Called as ``affine_kernel(key)(n, x, shape3, gidx, u, s_q, inv, z, z_c, s_d, lo, hi, cast,
    nan_q, out, m)`` with per-group float64 arrays ``s_q`` (scale of the quotient), ``inv``
    (reciprocal), ``z`` (zero point), ``z_c`` (zero point in the compute format), ``s_d``
    (scale of the dequantization); ``gidx`` is read only by ``GROUP_INDEX``; ``m``, a bool array,
    only under ``key.mask``, which fills it with the straight-through mask."""
    fast32 = _fast32_run_py if key.fast32 else _no_fast32_py  # compiled only where it runs
    return _specialize(key, (("_affine_element", _affine_element_py), ("_fast32_run", fast32),
                             ("_affine_run", _affine_run_py)), _LOOPS[key.grouping], "affine_")


def _specialize(key, inner, loop, prefix):
    """A :class:`Sized` copy of ``loop`` whose globals hold ``key``'s fields (upper case) as
    constants and inlined copies of the ``inner`` (name, function) templates. Its cache files are
    named after the key and :func:`sources_digest`."""
    namespace = {**globals(), **{name.upper(): int(value) for name, value in key._asdict().items()}}
    suffix = sources_digest() + "_" + "_".join(str(int(v)) for v in key)
    for name, fn in inner:
        namespace[name] = inline_kernel(_copy(fn, namespace, name.strip("_") + "_" + suffix))
    return Sized(_copy(loop, namespace, prefix + suffix))


@functools.cache
def sources_digest() -> str:
    """A digest of the kernel sources a specialization compiles in (this module, the rounding
    kernels and the intrinsics). Numba's cache checks only the file of the function it compiles,
    so a specialization named after the digest is compiled afresh when any of them changes."""
    digest = hashlib.sha256()
    for name in ("_affine.py", "_round.py", "_jit.py"):
        digest.update(pathlib.Path(__file__).with_name(name).read_bytes())
    return digest.hexdigest()[:12]


def _copy(fn, namespace, name):
    """``fn``'s code under another name (its own cache file), reading globals from ``namespace``."""
    twin = types_module.FunctionType(fn.__code__, namespace, name)
    twin.__qualname__ = name
    twin.__doc__ = fn.__doc__
    return twin


@sized_kernel
def dequantize_kernel(q, gidx, z, s_d, dmode, ofmt, pfmt, odd, out):
    """``out[i] = dequantize_element(q[i], ...)`` with per-group ``z`` and ``s_d``."""
    grouped = gidx.size > 0
    for i in prange(q.size):
        g = gidx[i] if grouped else 0
        out[i] = dequantize_element(np.float64(q[i]), z[g], s_d[g], dmode, ofmt, pfmt, odd)


_TIE_MARGIN = 4.440892098500626e-16  # 2**-51: at least twice the relative error of fl(x * fl(1/s))
# (mask of the float64 bits below an output format's last bit, its half, smallest normal)
_MIDPOINTS = ((0, 1, 0.0), (0x1FFFFFFF, 0x10000000, 2.4e-38), ((1 << 42) - 1, 1 << 41, 6.2e-5),
              ((1 << 45) - 1, 1 << 44, 2.4e-38))


@kernel
def _fast_exact_element(xi, s, inv, z, lo, hi, dequant, check_product, ofmt, resolve):
    """(value, uncertain, inside): the branch-free exact half-to-even result, whether it is
    certified, and whether its code before the clamp lies in ``[lo, hi]``.

    ``t = fl(xi * inv)`` with ``inv = fl(1 / s)`` a normal float64 is within ``2**-52 |t|`` of the
    real quotient, so a fraction farther than ``2**-51 max(|t|, 1)`` from 1/2 rounds as the real
    quotient does. Nearer 1/2 (with ``resolve``, which costs the common case about a third more),
    the sign of the real ``xi - (floor(t) + 1/2) s``, which one fused multiply-add gives exactly
    (``floor(t) + 1/2`` is exact below 2**50, and no product underflows for ``|xi| > 2**-900``),
    decides between ``floor(t)`` and ``floor(t) + 1`` (a tie: the even one).
    Uncertain: NaN or +-inf input, a near tie (outside those bounds), and (``check_product``) when
    ``fl((q - z) * s)`` sits on a rounding midpoint of the output format ``ofmt`` or in its
    subnormal range, where rounding the float64 product could round twice.
    """
    t = xi * inv
    r = np.rint(t)
    at = np.abs(t)
    near = not (np.abs(np.abs(t - r) - 0.5) > _TIE_MARGIN * (at if at > 1.0 else 1.0))
    bad = near
    if resolve:
        h = np.floor(t) + 0.5
        d = fma64(-h, s, xi)
        tied = np.rint(h)  # the even one of h -+ 1/2
        r = (h + 0.5 if d > 0.0 else (h - 0.5 if d < 0.0 else tied)) if near else r
        bad = near & (not ((at < 1125899906842624.0) & (np.abs(xi) > 1.1813e-271)))  # 2**50, ~2**-900
    q = r + z
    inside = (q >= lo) & (q <= hi)
    q = q if q > lo else lo
    q = q if q < hi else hi
    if not dequant:
        return q, bad, inside
    p = (q - z) * s
    if check_product:
        mask, half, tiny = _MIDPOINTS[ofmt]
        ap = np.abs(p)
        on_midpoint = (f64_to_bits(p) & mask) == half
        bad = bad | on_midpoint | ((ap < tiny) & (ap != 0.0))
    return p, bad, inside


def _exact_fast_py(x, channels, task, s, inv, z, check, lo, hi, out, uncertain, m):
    n = x.size
    for c in prange(uncertain.size):
        g = c % channels
        start, stop = c * task, min(n, (c + 1) * task)
        uncertain[c] = _exact_chunk(x[start:stop], s[g], inv[g], z[g], lo, hi, check[g] != 0,
                                    out[start:stop], m[start:stop] if MASK else m)


def _exact_chunk_py(x, s, inv, z, lo, hi, check, out, m):
    # one task (indices from 0, so that LLVM vectorizes it; a bool flag keeps the vector width)
    flags = False
    for i in range(x.size):
        # halves widen through float32 (exact; NaN, inf: uncertain)
        xi = np.float64(half_to_f32(x[i], XFMT)) if XFMT >= 2 else np.float64(x[i])
        # half formats hold few significand bits, so their quotients land on ties often
        v, bad, inside = _fast_exact_element(xi, s, inv, z, lo, hi, DEQUANT, check, OFMT, XFMT >= 2)
        if DEQUANT and OFMT >= 2:  # a product in the half's subnormal range is uncertain
            out[i] = f64_to_half(v, OFMT)
        else:
            out[i] = v
        if MASK:
            m[i] = inside
        flags = flags | bad
    return flags


def _exact_fixup_py(x, channels, task, s, inv, z, check, lo, hi, out, uncertain, m):
    n = x.size
    for c in prange(uncertain.size):
        if uncertain[c] == 0:
            continue
        g = c % channels
        for i in range(c * task, min(n, (c + 1) * task)):
            xi = load_value(x[i], XFMT)
            v, bad, inside = _fast_exact_element(xi, s[g], inv[g], z[g], lo, hi, DEQUANT, check[g] != 0,
                                                 OFMT, True)
            if bad:
                r = rounded_code(xi, s[g], 1.0, z[g], z[g], QUOTIENT_EXACT, 0, 0, ZP_AFTER, False, True,
                                 0, 0.0)
                inside = (r >= lo) & (r <= hi)
                q = clamp_code(r, z[g], lo, hi, CLAMP_FLOAT, NO_CAST, np.nan)
                if not DEQUANT:
                    out[i] = q
                elif OFMT >= 2:
                    d = dequantize_element(q, z[g], s[g], DEQUANT_EXACT, OFMT, OFMT, True)
                    out[i] = np.float64(half_bits(rnd(d, OFMT), OFMT))
                else:
                    out[i] = dequantize_element(q, z[g], s[g], DEQUANT_EXACT, OFMT, OFMT, False)
            elif DEQUANT and OFMT >= 2:  # a near tie the fused multiply-add settled
                out[i] = f32_to_half(np.float32(rnd(v, OFMT)), OFMT)
            else:
                out[i] = v
            if MASK:
                m[i] = inside


class ExactKey(NamedTuple):
    """What one specialization of the exact half-to-even fast pass is compiled for."""

    xfmt: int  # Format of x's elements (halves as bits)
    dequant: bool
    ofmt: int  # output Format (halves stored as bits)
    mask: bool = False  # also the straight-through mask, into ``m``


CHUNK = 16384  # elements per task of a per-tensor exact pass


@functools.cache
def exact_half_even_kernels(key: ExactKey) -> tuple[Sized, Sized]:
    """(fast, fixup) passes of the exact convention under half to even, over tasks of ``task``
    elements (chunks of :data:`CHUNK` per tensor, or rows of one channel: task ``c`` uses group
    ``c % channels``); called as ``k(n, x, channels, task, s, inv, z, check, lo, hi, out,
    uncertain, m)`` with per-group ``s``, ``inv = fl(1 / s)``, ``z`` and ``check`` (nonzero: check
    the products for double rounding), and ``m`` the bool array of the mask (``key.mask``). The
    fast pass sets ``uncertain[c]`` where task c holds elements it could not certify; the fixup
    recomputes those with the exact element kernels."""
    inner = (("_exact_chunk", _exact_chunk_py),)
    return (_specialize(key, inner, _exact_fast_py, "exact_fast_"),
            _specialize(key, (), _exact_fixup_py, "exact_fixup_"))
