"""Element casts to low-precision floats (``encode`` / ``decode``) and scaled float quantization.

``encode(x, fmt)`` rounds each real number ``x`` once to the format and returns its bit pattern
(one code per uint8); ``decode`` maps codes back to values. ``quantize(x, scale, fmt=...)`` is
``encode`` of the real quotient ``x / scale`` (per tensor, per channel or per block, no zero
point); ``dequantize`` is ``decode(q) * scale`` rounded once to the output dtype, and
``fake_quantize`` their composition in x's dtype. The named conventions of
:mod:`refquant.float_conventions` reproduce each library's overflow, inf, NaN and -0.0 rules.
"""

from __future__ import annotations

import numpy as np

from . import _validation
from . import float_conventions as _fconv
from ._validation import channel_groups, flat_float, float_array, float_dtype, integer_array, uniforms
from .floatformats import NAMED_FLOAT_FORMATS, FloatFormat, check_against_ml_dtypes, float_format
from .rounding import rounding_code

__all__ = ["encode", "decode", "quantize", "dequantize", "fake_quantize", "is_float_format"]


def is_float_format(fmt) -> bool:
    """Whether ``fmt`` names a float format (a FloatFormat or a named float format's name).

    >>> import refquant as rq
    >>> is_float_format(rq.float8_e5m2), is_float_format("float4_e2m1fn"), is_float_format(rq.int8)
    (True, True, False)
    """
    return isinstance(fmt, FloatFormat) or (isinstance(fmt, str) and fmt in NAMED_FLOAT_FORMATS)


def wants_float(fmt, saturate=None) -> bool:
    """Whether an ``rq.quantize``-family call goes to the float path; ``saturate`` with an integer
    format is a ValueError.

    >>> import refquant as rq
    >>> wants_float(rq.float8_e4m3fn, True), wants_float(rq.int8)
    (True, False)
    """
    floats = is_float_format(fmt)
    if saturate is not None and not floats:
        raise ValueError(f"saturate applies to float formats only; got saturate={saturate!r}, fmt={fmt!r}")
    return floats


def _no_range(qmin, qmax):
    if qmin is not None or qmax is not None:
        raise ValueError(f"a float format has no qmin/qmax; got qmin={qmin!r}, qmax={qmax!r}")


class _Cast:
    """One call's resolved format, convention and special-case codes."""

    NO_CODE = -2  # a special case that has no code under the convention

    def __init__(self, fmt, convention, saturate, rounding):
        self.fmt = fmt = float_format(fmt)
        self.conv = conv = _fconv.get(convention)
        if conv.missing:
            raise NotImplementedError(f"float convention {conv.name!r}: {conv.missing}")
        if conv.formats and fmt.name not in conv.formats:
            raise ValueError(
                f"convention {conv.name!r} implements {', '.join(conv.formats)}; got fmt={fmt.name}"
            )
        if saturate is not None:
            if not isinstance(saturate, (bool, np.bool_)):
                raise TypeError(f"saturate must be True, False or None; got {saturate!r}")
            if conv.fixed_saturate:
                raise ValueError(
                    f"convention {conv.name!r} has no saturate switch; got saturate={saturate!r}"
                )
            if not saturate and not (fmt.has_inf or fmt.has_nan):
                raise ValueError(
                    f"{fmt.name} has neither inf nor NaN, so saturate=False has no result for "
                    f"overflow; got saturate={saturate!r}"
                )
        self.saturate = conv.saturates(fmt) if saturate is None else bool(saturate)
        if not (fmt.has_inf or fmt.has_nan):
            self.saturate = True
        self.mode = rounding_code(conv.rounding if rounding is None else rounding)
        if conv.arithmetic == "microxcaling" and rounding not in (None, "half_away", "half_even"):
            raise ValueError(f"convention {conv.name!r} rounds half_away ('nearest') or half_even "
                             f"('even'); got rounding={rounding!r}")
        self.sp = self._specials()
        self.fp = (fmt.mantissa_bits, fmt.emin, fmt.bias, fmt.max_code, fmt.sign_bit)

    def _signed_pair(self, code):
        """(+, -) codes of a value whose magnitude code is ``code``."""
        return code, code | self.fmt.sign_bit

    def _nan_pair(self):
        fmt, conv = self.fmt, self.conv
        if fmt.has_nan:
            if fmt.nan == "neg_zero" or not fmt.signed:
                return fmt.nan_code, fmt.nan_code
            if fmt.nan == "ieee" and conv.nan_payload == "all_ones":
                return self._signed_pair(fmt.nan_code | ((1 << fmt.mantissa_bits) - 1))
            return self._signed_pair(fmt.nan_code)
        how = conv.nan_no_nan
        if how == "zero_flip":
            return fmt.sign_bit, 0
        if how == "zero":
            return 0, 0
        if how == "max":
            return fmt.max_code, fmt.max_code
        if how == "nan_bits":
            c = int(self.nan_bits_codes(np.float32([np.nan]))[0])
            return c, c | fmt.sign_bit
        return self.NO_CODE, self.NO_CODE

    def _specials(self):
        from ._kernels import _float as k

        fmt, conv = self.fmt, self.conv
        sp = np.full(k.N_SPECIALS, -1, np.int64)
        nan_pos, nan_neg = self._nan_pair()
        sp[k.SP_NAN_POS], sp[k.SP_NAN_NEG] = nan_pos, nan_neg
        max_pair = self._signed_pair(fmt.max_code)
        if fmt.has_inf:
            ieee = self._signed_pair(fmt.inf_code)
        elif fmt.has_nan:
            ieee = (nan_pos, nan_neg)
        else:
            ieee = max_pair
        if conv.arithmetic == "microxcaling":  # inf passes through as a value
            inf = ieee
            ovf = max_pair
        elif conv.arithmetic == "brevitas":  # values already clamped; an inf value is an overflow
            inf = ovf = ieee
        elif self.saturate:
            inf = max_pair if conv.inf_saturating == "max" else (nan_pos, nan_neg)
            ovf = max_pair
        else:
            inf = ovf = ieee
            # IEEE directed rounding carries overflow toward zero to the largest finite value
            ovf = (max_pair[0] if self.mode in (k.TOWARD_ZERO, k.FLOOR) else ieee[0],
                   max_pair[1] if self.mode in (k.TOWARD_ZERO, k.CEIL) else ieee[1])
        sp[k.SP_INF_POS], sp[k.SP_INF_NEG] = inf
        sp[k.SP_OVF_POS], sp[k.SP_OVF_NEG] = ovf
        drop_input = conv.signed_zero == "drop" or (
            conv.signed_zero == "drop_zero_input_no_nan" and not fmt.has_nan)
        neg_zero = fmt.sign_bit if fmt.has_negative_zero else 0
        if fmt.has_zero:
            sp[k.SP_ZERO_POS], sp[k.SP_ZERO_NEG] = 0, 0 if drop_input else neg_zero
            sp[k.SP_UNDER_POS], sp[k.SP_UNDER_NEG] = 0, 0 if conv.signed_zero == "drop" else neg_zero
        else:  # e8m0: zero is not a value; tiny positives go to the smallest value, code 0
            sp[k.SP_ZERO_POS] = sp[k.SP_ZERO_NEG] = nan_pos
            sp[k.SP_UNDER_POS] = sp[k.SP_UNDER_NEG] = 0
        if not fmt.signed:  # negative values, -inf included, are not values of the format
            sp[k.SP_NEG] = sp[k.SP_INF_NEG] = sp[k.SP_OVF_NEG] = nan_pos
        return sp

    def nan_bits_codes(self, nans: np.ndarray) -> np.ndarray:
        """The ``nan_bits`` codes of float32 NaNs: their bit pattern, sign cleared, through the
        normal-range round-to-nearest-even bit arithmetic, truncated to a byte, sign or-ed back."""
        fmt = self.fmt
        sh = 23 - fmt.mantissa_bits
        b = nans.astype(np.float32).view(np.uint32).astype(np.int64)
        mag = b & 0x7FFFFFFF
        add = ((fmt.bias - 127) << 23) + (1 << (sh - 1)) - 1
        c = ((mag + add + ((mag >> sh) & 1)) >> sh) & 0xFF
        return (c | np.where(b >> 31, fmt.sign_bit, 0)).astype(np.uint8)

    def apply_nan_bits(self, t: np.ndarray, codes: np.ndarray) -> None:
        """The ``nan_bits`` rule on the NaNs of ``t`` (payload dependent), in place."""
        if self.conv.nan_no_nan == "nan_bits" and not self.fmt.has_nan:
            nan = np.isnan(t)
            if nan.any():
                codes[nan] = self.nan_bits_codes(t[nan])

    def check_codes_exist(self, x: np.ndarray, name: str) -> None:
        """A ValueError when x holds a value whose code the convention leaves undefined."""
        from ._kernels import _float as k

        sp = self.sp
        checks = (
            ("NaN", (sp[k.SP_NAN_POS] == self.NO_CODE) and np.isnan(x)),
            ("inf", (sp[k.SP_INF_POS] == self.NO_CODE) and np.isinf(x)),
        )
        for what, mask in checks:
            if np.any(mask):
                i = int(np.flatnonzero(np.ravel(mask))[0])
                raise ValueError(
                    f"{name} contains {what} (first at flat index {i}); {self.fmt.name} has no code "
                    f"for it under convention {self.conv.name!r}"
                )
        for i in (k.SP_NAN_POS, k.SP_NAN_NEG, k.SP_INF_POS, k.SP_INF_NEG):
            if sp[i] == self.NO_CODE:
                sp[i] = 0  # never read: x holds no such value

    def apply_band(self, t: np.ndarray, codes: np.ndarray) -> None:
        """The convention's non-saturating boundary bands, in place on ``codes``."""
        if self.saturate:
            return
        for name, lo, hi, result in self.conv.band:
            if name != self.fmt.name:
                continue
            at = np.abs(t)
            hit = (at >= lo) & (at < hi)
            if hit.any():
                code = self.fmt.max_code if result == "max" else self.fmt.nan_code
                neg = np.signbit(t) & (result == "max" or self.fmt.nan != "neg_zero")
                codes[hit] = np.where(neg[hit], code | self.fmt.sign_bit, code)


def _encode_flat(cast: _Cast, xk: np.ndarray, scales, gidx, rng) -> np.ndarray:
    """Codes of the flat array ``xk`` (divided by ``scales[gidx]`` when scales is given)."""
    from ._kernels import _float as k

    check_against_ml_dtypes()
    out = np.empty(xk.size, np.uint8)
    if not xk.size:
        return out
    if cast.fmt.name == "float8_e8m0fnu" and cast.conv.e8m0 == "exponent_field":
        return _e8m0_exponent_field(cast, xk, scales, gidx)
    u = uniforms(cast.mode, rng, xk.size)
    if cast.conv.quotient == "float32" and scales is not None:
        s32 = scales.astype(np.float32)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # IEEE float32 quotient
            t = xk.astype(np.float32) / (s32[gidx] if gidx.size else s32[0])
        scales = None
    else:
        t = xk
    if cast.conv.arithmetic != "exact":
        t = _float32_values(cast, t if t.dtype == np.float32 else t.astype(np.float32))
    cast.check_codes_exist(t, "x")
    if scales is None or (gidx.size == 0 and scales[0] == 1.0):
        if t.dtype == np.float32 and cast.mode == 0 and cast.fmt.subnormals:
            # vectorised and memory bound: one thread (threads measured slower on a shared CPU)
            k.encode_f32_half_even_kernel.serial(t, *cast.fp, cast.sp, out)
        else:
            k.encode_kernel(xk.size, t, *cast.fp, cast.sp, cast.mode, u, out)
    elif cast.mode != k.STOCHASTIC:
        rne = cast.mode <= k.HALF_DOWN and cast.fmt.subnormals and cast.sp[k.SP_NEG] < 0
        k.encode_scaled_certified_kernel(xk.size, t, gidx, scales, *cast.fp, cast.sp, cast.mode, rne, out)
    else:
        k.encode_scaled_kernel(xk.size, t, gidx, scales, *cast.fp, cast.sp, cast.mode, u, out)
    if cast.conv.band and not cast.saturate:
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # only compared with bands
            band_t = t if scales is None else xk / (scales[gidx] if gidx.size else scales[0])
        cast.apply_band(band_t, out)
    cast.apply_nan_bits(t, out)
    return out


def _e8m0_exponent_field(cast: _Cast, xk: np.ndarray, scales, gidx) -> np.ndarray:
    """e8m0 codes read from the float32 bits of ``t = fl32(x)`` (``fl32(t / fl32(s))`` when
    scaled), the sign ignored: the exponent field ``e``, plus one for ``half_even`` when the
    guard bit is set and a lower bit is set or ``e > 0`` (torch, ONNX round_mode='nearest'), for
    ``ceil`` when any mantissa bit is set (ONNX 'up'), never for ``floor`` (ONNX 'down'); NaN and
    inf give 255; a carry out of 254 gives 255, or stays at 254 when saturating."""
    from ._kernels import _float as k

    rule = {k.HALF_EVEN: "nearest", k.CEIL: "up", k.FLOOR: "down"}.get(cast.mode)
    if rule is None:
        raise ValueError(f"convention {cast.conv.name!r} rounds e8m0 codes from the exponent field "
                         "with rounding 'half_even', 'ceil' or 'floor' only")
    t = xk.astype(np.float32)
    if scales is not None:
        s32 = scales.astype(np.float32)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            t = t / (s32[gidx] if gidx.size else s32[0])
    b = t.view(np.uint32)
    e = (b >> 23) & 0xFF
    if rule == "nearest":
        up = ((b & 0x400000) != 0) & (((b & 0x3FFFFF) != 0) | (e > 0))
    else:
        up = ((b & 0x7FFFFF) != 0) & (rule == "up")
    if cast.saturate:
        up &= e != 254
    return np.where(e == 255, 255, e + up).astype(np.uint8)


def _float32_values(cast: _Cast, t: np.ndarray) -> np.ndarray:
    """The element values (float64 holding float32 results) of the float32 ``t`` under a
    convention with its own float32 arithmetic (microxcaling, brevitas)."""
    from ._kernels import _float as k

    fmt = cast.fmt
    out = np.empty(t.size, np.float64)
    if t.size and cast.conv.arithmetic == "microxcaling":
        k.microxcaling_kernel(t.size, t, fmt.mantissa_bits, fmt.emin, fmt.max, cast.mode == 0, out)
    elif t.size:
        k.brevitas_kernel(t.size, t, fmt.mantissa_bits, fmt.emin, fmt.max, cast.saturate, fmt.has_inf, out)
    return out


def encode(x, fmt, *, saturate=None, rounding=None, convention="exact", rng=None):
    """Bit patterns of ``x`` rounded once to the float format ``fmt``, as uint8 (one per byte).

    ``exact``: the code of the format value nearest the real number ``x`` (ties to even; or the
    ``rounding`` mode, :data:`refquant.ROUNDING_MODES`, ``"stochastic"`` drawing from ``rng``,
    a NumPy Generator or an int seed, so that the expected value is ``x``). ``saturate=None`` is
    the convention's own rule (``exact``: True, overflow and +-inf go to +-max; False: IEEE,
    +-inf or NaN). NaN gives the format's quiet NaN with x's sign (a ValueError without NaN);
    ``-0.0`` gives the -0 code where the format has one. The work is integer arithmetic on x's
    bits: no intermediate rounding. Other conventions (``rq.float_conventions.names()``) follow
    their knobs.

    Args:
        x: float16, bfloat16, float32 or float64 array (never modified).
        fmt: a :class:`~refquant.FloatFormat` or the name of a named one.

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([1.0, 17.0, 19.0, -0.0, 500.0, np.inf])
    >>> rq.encode(x, rq.float8_e4m3fn).tolist()      # 17 ties to 16, 19 to 20
    [56, 88, 90, 128, 126, 126]
    >>> rq.encode(x, rq.float8_e4m3fn, saturate=False).tolist()[-2:]   # NaN: no inf in e4m3fn
    [127, 127]
    """
    cast = _Cast(fmt, convention, saturate, rounding)
    a = float_array(x, "x")
    return _encode_flat(cast, flat_float(a), None, None, rng).reshape(a.shape)


def decode(codes, fmt, *, dtype=np.float32):
    """The values of the bit patterns ``codes`` in ``dtype`` (NaN codes give NaN).

    Every value of a format up to 8 bits is exact in float32 and bfloat16; float16 rounds once
    (to nearest even) where a value is outside its range (e8m0). Codes must lie in
    ``[0, 2**fmt.bits)``.

    >>> import numpy as np, refquant as rq
    >>> rq.decode(np.uint8([56, 88, 90, 126, 127]), rq.float8_e4m3fn)
    array([  1.,  16.,  20., 448.,  nan], dtype=float32)
    """
    fmt = float_format(fmt)
    q = integer_array(codes, "codes")
    out_dtype = float_dtype(dtype)
    check_against_ml_dtypes()
    if q.size:
        lo, hi = int(q.min()), int(q.max())
        if lo < 0 or hi >= 1 << fmt.bits:
            bad = lo if lo < 0 else hi
            raise ValueError(f"codes must lie in [0, {(1 << fmt.bits) - 1}] for {fmt.name}; got {bad}")
    with np.errstate(over="ignore"):  # a value beyond the output dtype rounds to inf, as it should
        table = fmt.decode_table().astype(out_dtype)
    return table[q]


def positive_finite(values, name: str) -> np.ndarray:
    """:func:`refquant._validation.positive_finite`, its error showing a plain number."""
    a = np.asarray(values)
    if a.dtype.kind in "fiu" and a.size:
        bad = ~(np.isfinite(a) & (a > 0))
        if bad.any():
            first = float(a.ravel()[np.argmax(bad.ravel())])
            raise ValueError(f"{name} must be finite and > 0; got {first!r}")
    return _validation.positive_finite(a, name)


def _group_index(shape, scale, axis, block_size, array_name="x"):
    """(per-group scales as float64, group index per element or empty for one group)."""
    s = np.asarray(scale)
    if axis is not None and block_size is not None:
        raise ValueError("give axis or block_size, not both")
    if axis is not None:
        s, ids = channel_groups(s, "scale", shape, axis, array_name)
        return positive_finite(s, "scale"), ids
    if block_size is not None:
        block = tuple(block_size) if np.iterable(block_size) else None
        if block is None or len(block) != len(shape):
            raise ValueError(f"block_size must have one entry per dimension of {array_name} "
                             f"(ndim {len(shape)}); got {block_size!r}")
        for i, (dim, b) in enumerate(zip(shape, block)):
            if isinstance(b, (bool, np.bool_)) or not isinstance(b, (int, np.integer)) or b < 1 or dim % b:
                raise ValueError(f"block_size[{i}] = {b!r} must be a positive integer dividing "
                                 f"{array_name}.shape[{i}] = {dim}")
        groups = tuple(dim // b for dim, b in zip(shape, block))
        if s.shape != groups and not (s.size == int(np.prod(groups)) == 1):
            raise ValueError(f"scale for block_size {block} must have shape {groups}; got {s.shape}")
        ids = np.arange(int(np.prod(groups, dtype=np.int64)), dtype=np.intp).reshape(groups)
        for i, b in enumerate(block):
            ids = np.repeat(ids, b, axis=i)
        return positive_finite(s.reshape(-1), "scale"), ids.ravel()
    if s.size != 1:
        raise ValueError(f"scale must be a scalar without axis or block_size; got shape {s.shape}")
    return positive_finite(s.reshape(-1), "scale"), np.empty(0, np.intp)


def _no_zero_point(zero_point):
    z = np.asarray(zero_point)
    if z.dtype.kind not in "iuf" or np.any(z != 0):
        raise ValueError(f"float formats have no zero point: zero_point must be 0; got {zero_point!r}")


def quantize(x, scale, zero_point=0, *, qmin=None, qmax=None, fmt, axis=None, block_size=None,
             rounding=None, convention="exact", rng=None, saturate=None):
    """Codes of the real quotient ``x / scale`` rounded once to the float format ``fmt``, uint8.

    ``scale`` is a positive finite scalar, a 1-D array along ``axis`` or a block array
    (``block_size``, as for integer formats); float formats have no zero point (it must be 0).
    Under ``exact`` the quotient is the real number (no float division); the rounding, saturation
    and special values are those of :func:`encode`. ``onnx``/``onnxruntime`` divide in float32.

    >>> import numpy as np, refquant as rq
    >>> rq.quantize(np.float32([0.3, 0.1, -5.0]), 0.1, fmt=rq.float4_e2m1fn).tolist()
    [5, 2, 15]
    """
    cast, a, scales, gidx = _scaled_call(x, scale, zero_point, qmin, qmax, fmt, axis, block_size,
                                         rounding, convention, saturate)
    return _encode_flat(cast, flat_float(a), scales, gidx, rng).reshape(a.shape)


def _scaled_call(x, scale, zero_point, qmin, qmax, fmt, axis, block_size, rounding, convention,
                 saturate):
    """The checked arguments of :func:`quantize` and :func:`fake_quantize`: ``(cast, x as an
    array, per-group scales, group index per element)``."""
    _no_zero_point(zero_point)
    _no_range(qmin, qmax)
    cast = _Cast(fmt, convention, saturate, rounding)
    a = float_array(x, "x")
    return (cast, a, *_group_index(a.shape, scale, axis, block_size))


def _times_scale(values: np.ndarray, s: np.ndarray, out_dtype: np.dtype) -> np.ndarray:
    """``values * s`` (float64 arrays) rounded once to ``out_dtype``: the float64 product is
    rounded to odd with its exact error term (Dekker), which makes the final rounding single."""
    with np.errstate(invalid="ignore", over="ignore"):
        p = values * s
        if out_dtype == np.float64:
            return p
        c = 134217729.0
        ah = values * c - (values * c - values)
        al = values - ah
        bh = s * c - (s * c - s)
        bl = s - bh
        e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
        even = (p.view(np.int64) & 1) == 0
        nudge = np.isfinite(p) & (e != 0) & even
        p = np.where(nudge, np.nextafter(p, np.where(e > 0, np.inf, -np.inf)), p)
    with np.errstate(over="ignore"):  # beyond the output dtype: inf, the correctly rounded result
        return p.astype(out_dtype)


def dequantize(q, scale, zero_point=0, *, fmt, axis=None, block_size=None, convention="exact",
               dtype=np.float32):
    """``decode(q) * scale`` rounded once to ``dtype`` (NaN codes give NaN, inf codes +-inf).

    >>> import numpy as np, refquant as rq
    >>> rq.dequantize(np.uint8([5, 2, 15]), 0.1, fmt=rq.float4_e2m1fn)
    array([ 0.3,  0.1, -0.6], dtype=float32)
    """
    _no_zero_point(zero_point)
    _fconv.get(convention)  # decoding is the same under every convention; the name is checked
    fmt = float_format(fmt)
    out_dtype = float_dtype(dtype)
    v = decode(q, fmt, dtype=np.float64)
    scales, gidx = _group_index(v.shape, scale, axis, block_size, "q")
    s = scales[gidx].reshape(v.shape) if gidx.size else scales[0]
    return _times_scale(v, np.broadcast_to(s, v.shape), out_dtype)


def fake_quantize(x, scale, zero_point=0, *, qmin=None, qmax=None, fmt, axis=None,
                  block_size=None, rounding=None, convention="exact", rng=None, saturate=None):
    """``dequantize(quantize(x, ...))`` in x's dtype: the format value nearest ``x / scale``,
    times ``scale``, rounded once to x's dtype. A convention whose NaN has no code (``gfloat``)
    gives NaN here.

    >>> import numpy as np, refquant as rq
    >>> rq.fake_quantize(np.float32([0.3, 0.26, 100.0]), 0.1, fmt=rq.float4_e2m1fn)
    array([0.3, 0.3, 0.6], dtype=float32)
    """
    cast, a, scales, gidx = _scaled_call(x, scale, zero_point, qmin, qmax, fmt, axis, block_size,
                                         rounding, convention, saturate)
    xk = flat_float(a)
    if cast.conv.arithmetic != "exact":
        s32 = (scales[gidx] if gidx.size else np.broadcast_to(scales[0], xk.shape)).astype(np.float32)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # float32 arithmetic: inf
            v = _float32_values(cast, (xk.astype(np.float32) / s32).astype(np.float32))
            return (v.astype(np.float32) * s32).astype(a.dtype).reshape(a.shape)
    nan_value = cast.conv.nan_no_nan == "nan" and not cast.fmt.has_nan
    codes = _encode_flat(cast, np.where(np.isnan(xk), 0, xk) if nan_value else xk, scales, gidx, rng)
    v = cast.fmt.decode_table()[codes]
    if nan_value:
        v[np.isnan(xk)] = np.nan
    s = scales[gidx] if gidx.size else np.broadcast_to(scales[0], v.shape)
    return _times_scale(v, s, a.dtype).reshape(a.shape)

