"""MX block formats (OCP Microscaling v1.0): blocks of ``block`` elements sharing an e8m0 scale.

For a block with largest magnitude ``amax`` the OCP (``floor``) rule is::

    E     = clip(floor(log2(amax)) - emax_elem, -127, 127)     (-127 for an all-zero block)
    X     = 2**E                                                stored as the e8m0 code E + 127
    P_i   = the element format's value nearest x_i / X          (ties to even, saturating)

``floor(log2(amax))`` is read from amax's exponent bits (never a float ``log2``), ``x / X`` is
exact, and each element is rounded once. ``emax_elem`` is the exponent of the element format's
largest power of two (e4m3 8, e5m2 15, e3m2 4, e2m3 2, e2m1 2); MXINT8 elements are
``clip(rne(x / X * 64), -127, 127)`` with ``emax_elem = 0``. A block holding NaN or +-inf has the
NaN scale (code 255) under ``ocp``.

Other scale rules (``scale_rule``): ``ceil`` rounds ``log2(amax)`` up; ``even`` first rounds
amax's float32 significand to the element's mantissa width (half up); ``rceil`` is
``ceil(log2(fl32(amax / max_elem)))``. The named conventions (:data:`TABLE`) reproduce each
library's arithmetic, including its float32 ``log2`` where it uses one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ._registry import Registry, Row
from ._validation import check_axis, float_array, float_dtype, integer_array, integer_scalar
from .floatformats import float_format
from .floatquant import _Cast, encode
from .formats import IntFormat
from .lazy import module_attributes

__all__ = ["MXConvention", "TABLE", "conventions", "quantize", "dequantize", "fake_quantize"]

SCALE_RULES = ("floor", "ceil", "even", "rceil")
_CHOICES = {
    "scale_rule": (None, *SCALE_RULES),
    "shared_exponent": ("bits", "log2_fp32", "log2_fp32_min_normal"),
    "scaling": ("exact", "float32_divide", "float32_reciprocal", "microxcaling", "brevitas"),
    "nonfinite": ("nan_block", "inf_exponent"),
    "exponent_overflow": ("clip", "nan"),
    "mxint8_min": (-127, -128),
    "microxcaling_round": ("nearest", "even"),
}
_ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True)
class MXConvention(Row):
    """One library's MX arithmetic as knobs.

    scale_rule: the rule the library fixes (None: the ``scale_rule`` argument).
    shared_exponent: ``"bits"`` (exact), ``"log2_fp32"`` floor of the float32 log2 of amax (an
    all-zero block gives -127) or ``"log2_fp32_min_normal"`` (of ``amax + 2**-126`` for zero).
    scaling: the element quotient: ``"exact"``; ``"float32_divide"`` ``fl32(x / max(X, 2**-126))``
    (the 2**-127 scale divides as 2**-126; the NaN scale divides as inf); ``"float32_reciprocal"``
    ``fl32(x * r)`` with ``r = 2**(127 - code)``, 1.0 for code 0 and 2**-127 for code 254;
    ``"microxcaling"`` ``fl32(x / X)`` then microxcaling's float32 element rounding;
    ``"brevitas"`` brevitas's float32 pipeline: ``a = max(amax, scale_min)``, ``X = fl32(max(
    2**floor(log2_fp32 a), scale_min) / 2**emax)`` (not a power of two when the floor binds), the
    element ``fl32(x / X)`` quantized by the element convention's float32 arithmetic (MXINT8:
    ``clip(rne(fl32(x / X)), mxint8_min, 127)``), the value ``fl32(element * X)``.
    scale_min: the float32 floor of the ``"brevitas"`` scaling (0: none).
    element: the element convention (refquant.float_conventions) of the element cast.
    nonfinite: ``"nan_block"`` (NaN or inf makes the scale NaN) or ``"inf_exponent"`` (inf's
    exponent field, 128, is used as floor(log2 amax); NaN still gives the NaN scale).
    exponent_overflow: ``"clip"`` to 127 or ``"nan"`` (the NaN scale).
    mxint8_min: the smallest MXINT8 code.
    even_mantissa_bits: the mantissa width the ``even`` rule rounds amax to (None: the element's).
    """

    scale_rule: str | None = None
    shared_exponent: str = "bits"
    scaling: str = "exact"
    element: str = "exact"
    nonfinite: str = "nan_block"
    exponent_overflow: str = "clip"
    mxint8_min: int = -127
    microxcaling_round: str = "nearest"
    even_mantissa_bits: int | None = None
    scale_min: float = 0.0
    input_dtypes: tuple[str, ...] = _ALL_DTYPES
    formats: tuple[str, ...] = ()
    missing: str = ""

    _choices: ClassVar[dict] = _CHOICES


_TORCHAO_FORMATS = ("float8_e4m3fn", "float8_e5m2", "float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn")


def _torchao(rule, formula, scaling="float32_divide", backend_note=""):
    """A torchao ``to_mx`` row: torchao's element casts, inf read as exponent 128, bfloat16 and
    float32 input, its five element formats."""
    return MXConvention(
        name=f"torchao.{rule}",
        formula=formula,
        backend=f"torchao 0.18 prototype.mx_formats.to_mx(scaling_mode={rule.upper()})" + backend_note,
        evidence=f"tests/cross/test_float_mx.py::test_torchao_to_mx[{rule}]",
        scale_rule=rule,
        scaling=scaling,
        element="torchao",
        nonfinite="inf_exponent",
        input_dtypes=("bfloat16", "float32"),
        formats=_TORCHAO_FORMATS,
    )


_TORCHAO_DIVIDE = ("; elements fl32(x / max(X, 2**-126)) (a 2**-127 scale divides as 2**-126), "
                   "clamped to +-max and cast (torch .to for fp8, f32_to_f*_unpacked for fp6/fp4); "
                   "an inf in the block reads exponent 128; NaN gives scale code 255")


TABLE = (
    MXConvention(
        name="ocp",
        formula="E = clip(floor(log2 amax) - emax, -127, 127) from the bits (-127 for a zero "
        "block); elements rne_saturating(x / 2**E) exactly; MXINT8 clip(rne(64 x / 2**E), -127, "
        "127); NaN or inf in a block: scale code 255",
        backend="the OCP Microscaling v1.0 specification (section 6.3), exact",
        evidence="tests/core/test_float_mx.py (Fraction oracle) and tests/cross/test_float_mx.py "
        "(gfloat with float64 input, onnx.reference blocked QuantizeLinear)",
    ),
    _torchao("floor", "E = (float32 exponent field of amax) - 127 - emax" + _TORCHAO_DIVIDE),
    _torchao("ceil", "E as floor, plus 1 when amax's float32 mantissa field is not zero" + _TORCHAO_DIVIDE),
    _torchao("even",
             "amax's float32 bits + 2**(22 - M), exponent field kept; then as floor" + _TORCHAO_DIVIDE),
    _torchao(
        "rceil",
        "d = fl32(amax / max_elem); E = clip(ceil(log2_fp32(d)), -127, 127) (NaN -> 255, "
        "inf -> 254); elements fl32(x * r), r = 2**(127 - code), 1.0 for code 0, 2**-127 for 254, "
        "clamped to +-max and cast",
        scaling="float32_reciprocal",
        backend_note=" (eager fallback)",
    ),
    MXConvention(
        name="microxcaling",
        formula="E = floor(log2_fp32(amax + 2**-126 [amax == 0])) - emax, NaN scale above 127, "
        "clipped at -127; elements: v = fl32(x / 2**E), private exponent p = max(floor(log2_fp32 "
        "|v|), emin), t = fl32(|v| / 2**p * 2**M), r = floor(fl32(t + 0.5)) (ties away; "
        "round='even' subtracts 1 when fl32(t - 0.5) is even), value r / 2**M * 2**p clamped to "
        "+-max; inf passes, -0 -> +0",
        backend="microsoft/microxcaling _quantize_mx (pure torch path, custom_cuda=False); not on "
        "PyPI",
        evidence="tests/cross/test_float_mx.py::test_microxcaling_transcription (its published "
        "torch algorithm, run on torch)",
        shared_exponent="log2_fp32_min_normal",
        scaling="microxcaling",
        exponent_overflow="nan",
    ),
    MXConvention(
        name="gfloat.float32",
        formula="E = clip(floor(log2_fp32(amax)) - emax, -127, 127) (-127 for zero), elements "
        "rne_saturating(x / 2**E) exactly (gfloat quantize_block fed float32)",
        backend="gfloat 0.5 quantize_block with compute_scale_amax on float32 input",
        evidence="tests/cross/test_float_mx.py::test_gfloat_quantize_block",
        shared_exponent="log2_fp32",
        mxint8_min=-128,
    ),
    MXConvention(
        name="brevitas",
        formula="a = max(amax, fl32(1e-10)); X = fl32(max(2**floor(log2_fp32 a), fl32(1e-10)) / "
        "2**emax) (emax 7 for MXINT8), so blocks with amax below 2**-33 get the scale "
        "fl32(1e-10) / 2**emax, not a power of two (quantize raises there; fake_quantize returns "
        "brevitas's values); elements: FloatQuant of fl32(x / X) in float32 (the brevitas element "
        "convention, saturating), MXINT8 clip(rne(fl32(x / X) + 0), -128, 127), then fl32(q * X); "
        "NaN or inf in a block (or amax whose float32 log2 rounds to 128): the whole block NaN",
        backend="brevitas 0.13 MXFloat8e4m3Weight / MXInt8Weight (StatsFromParameterScaling with "
        "PowerOfTwoRestrictValue + FloorSte, scaling_min_val=1e-10); MX e5m2, fp6 and fp4 are "
        "the same quantizer with the element widths changed",
        evidence="tests/cross/test_float_mx.py::test_brevitas_mx (brevitas itself where it imports; "
        "otherwise its published scaling and FloatQuant algorithm re-typed in torch: "
        "test_brevitas_mx_transcription)",
        scale_rule="floor",
        shared_exponent="log2_fp32",
        scaling="brevitas",
        element="brevitas",
        nonfinite="nan_block",
        exponent_overflow="nan",
        mxint8_min=-128,
        scale_min=float(np.float32(1e-10)),
        input_dtypes=("float32",),
    ),
    MXConvention(
        name="compressed_tensors",
        formula="generate_mx_scales: amax's float32 bits + 2**21, exponent field kept (amax rounded "
        "to a 1-bit mantissa, half up, for MXFP4 and MXFP8 alike), E = floor(log2 of that) - emax; "
        "elements rne_saturating(x / 2**E) exactly, cast as compressed-tensors casts (the float "
        "convention compressed_tensors: in fp4 an input -0.0 gives +0, a negative value rounding to "
        "zero -0)",
        backend="compressed-tensors 0.20 quantization.utils.mxfp_utils.generate_mx_scales and its "
        "element casts (MXFP4, MXFP8)",
        evidence="tests/cross/test_float_mx.py::test_compressed_tensors_scales (its published "
        "generate_mx_scales, re-typed in torch; finite non-zero blocks), "
        "tests/checkpoint/test_compressed_tensors.py::test_fp4_written_by_compressed_tensors (MXFP4 "
        "codes and scales written by compressed-tensors 0.20, -0.0 and tiny negatives included)",
        scale_rule="even",
        element="compressed_tensors",
        even_mantissa_bits=1,
        input_dtypes=("bfloat16", "float32"),
        formats=("float4_e2m1fn", "float8_e4m3fn"),
    ),
)

conventions = Registry("mx", TABLE, row_type=MXConvention)

# the registry's methods, before ``conventions`` existed
__getattr__ = module_attributes(globals(), deprecated={
    "names": ("conventions.names", lambda: conventions.names),
    "get": ("conventions.get", lambda: conventions.get)})[0]


def _element_format(fmt):
    if isinstance(fmt, IntFormat):
        if fmt.bits != 8 or not fmt.signed or fmt.narrow:
            raise ValueError(f"the MX integer element format is int8 (MXINT8); got {fmt}")
        return fmt
    return float_format(fmt)


def _blocks(shape, axis, block):
    if len(shape) == 0:
        raise ValueError("MX needs an array with at least one dimension; got a 0-d array")
    ax = check_axis(axis, len(shape))
    b = integer_scalar(block, "block")
    if b < 1 or shape[ax] % b:
        raise ValueError(f"block={block!r} must be a positive integer dividing x.shape[{ax}] = {shape[ax]}")
    return ax, b


class _Plan:
    def __init__(self, fmt, convention, scale_rule, x_dtype_name):
        self.conv = conv = conventions.get(convention)
        if conv.missing:
            raise NotImplementedError(f"MX convention {conv.name!r}: {conv.missing}")
        self.fmt = fmt = _element_format(fmt)
        self.is_int = isinstance(fmt, IntFormat)
        if conv.formats and (self.is_int or fmt.name not in conv.formats):
            raise ValueError(f"convention {conv.name!r} implements {', '.join(conv.formats)}; got fmt={fmt}")
        if x_dtype_name not in conv.input_dtypes:
            raise TypeError(f"convention {conv.name!r} accepts x of dtype {', '.join(conv.input_dtypes)}; "
                            f"got {x_dtype_name}")
        if scale_rule not in SCALE_RULES:
            raise ValueError(f"scale_rule must be one of {', '.join(SCALE_RULES)}; got {scale_rule!r}")
        if conv.scale_rule is not None and scale_rule not in ("floor", conv.scale_rule):
            raise ValueError(f"convention {conv.name!r} fixes scale_rule={conv.scale_rule!r}; "
                             f"got scale_rule={scale_rule!r}")
        self.rule = conv.scale_rule or scale_rule
        elem_m = 0 if self.is_int else fmt.mantissa_bits
        self.even_m = elem_m if conv.even_mantissa_bits is None else conv.even_mantissa_bits
        if self.is_int:
            self.emax, self.max_pos, self.fp = 0, 127 / 64, (0, 0, 0, 0, 0)
            self.sp = np.zeros(11, np.int64)
        else:
            self.emax = int(np.floor(np.log2(fmt.max)))
            self.max_pos = fmt.max
            saturate = None if conv.scaling != "microxcaling" else not (fmt.has_inf or fmt.has_nan)
            cast = _Cast(fmt, conv.element, saturate, None)
            self.fp, self.sp = cast.fp, cast.sp
            # NaN in fp4/fp6 has no code: +-0 (the block's scale is NaN anyway)
            no_code = self.sp == _Cast.NO_CODE
            self.sp[no_code] = np.where(np.arange(self.sp.size) % 2, fmt.sign_bit, 0)[no_code]

    def run(self, x, axis, block):
        from ._kernels import _float as k

        ax, b = _blocks(x.shape, axis, block)
        xm = np.moveaxis(x, ax, -1)
        flat = np.ascontiguousarray(xm, dtype=np.float32 if x.dtype.itemsize == 2 else x.dtype).reshape(-1)
        codes = np.empty(flat.size, np.int8 if self.is_int else np.uint8)
        scodes = np.empty(flat.size // b, np.uint8)
        vals = np.empty(flat.size if self.conv.scaling == "microxcaling" else 0, np.float64)
        if self.conv.scaling == "brevitas":
            codes, scodes, vals = self._brevitas(flat.reshape(-1, b))
        elif flat.size:
            rules = dict(zip(SCALE_RULES, (k.RULE_FLOOR, k.RULE_CEIL, k.RULE_EVEN, k.RULE_RCEIL)))
            sources = {"bits": k.SRC_BITS, "log2_fp32": k.SRC_LOG2_FP32,
                       "log2_fp32_min_normal": k.SRC_LOG2_FP32_MIN_NORMAL}
            scalings = {"exact": k.ELEM_EXACT, "float32_divide": k.ELEM_FP32_DIVIDE,
                        "float32_reciprocal": k.ELEM_FP32_RCP, "microxcaling": k.ELEM_MICROXCALING}
            conv = self.conv
            M, emin, bias, max_mag, sign_bit = self.fp
            fast = (flat.dtype == np.float32 and not self.is_int and conv.scaling != "microxcaling"
                    and k.symmetric_specials(self.sp, sign_bit))
            mults = np.empty(scodes.size if fast else 0, np.float32)
            # vectorised loops, memory bound: one thread (threads measured slower on a shared CPU)
            k.mx_kernel.serial(flat, b, rules[self.rule], sources[conv.shared_exponent],
                        scalings[conv.scaling], conv.exponent_overflow == "nan",
                        conv.nonfinite == "nan_block", self.emax, float(self.max_pos),
                        M, emin, bias, max_mag, sign_bit, self.sp, float(conv.mxint8_min), self.is_int,
                        conv.microxcaling_round == "even", fast, self.even_m, codes, scodes, vals,
                        mults)
            if fast:
                k.encode_blocks_f32.serial(flat, b, mults, self.sp, M, emin, bias, max_mag, sign_bit,
                                           codes)
        shape_m = xm.shape
        codes, scodes = codes.reshape(-1), scodes.reshape(-1)
        out_codes = np.moveaxis(codes.reshape(shape_m), -1, ax)
        out_scales = np.moveaxis(scodes.reshape(shape_m[:-1] + (shape_m[-1] // b,)), -1, ax)
        return out_codes, out_scales, vals.reshape(shape_m) if vals.size else None, ax, b


    def _brevitas(self, x):
        """brevitas's MX weight quantizer on float32 blocks (rows of ``x``): element codes, scale
        codes (-1 where the scale is not a power of two) and the float32 values."""
        from ._kernels import _float as k

        fmt, sp = self.fmt, self.sp
        floor = np.float32(self.conv.scale_min)
        emax = 7 if self.is_int else self.emax  # log2 of brevitas's threshold: 128, or 2**emax
        with np.errstate(all="ignore"):
            a = np.maximum(np.abs(x).max(axis=1, initial=0.0), floor)  # NaN propagates
            p = np.floor(np.log2(a.astype(np.float64)).astype(np.float32))
            pow2 = np.exp2(p.astype(np.float64)).astype(np.float32)  # 2**128 -> inf
            scale = np.maximum(pow2, floor) / np.float32(2.0**emax)
            t = x / scale[:, None]
            if self.is_int:
                q = np.clip(np.rint(t + np.float32(0.0)), self.conv.mxint8_min, 127)
                codes = np.nan_to_num(q).astype(np.int8)
            else:
                q = np.empty(t.size, np.float64)
                k.brevitas_kernel(t.size, t.reshape(-1), fmt.mantissa_bits, fmt.emin, fmt.max, True,
                                  fmt.has_inf, q)
                q = q.astype(np.float32).reshape(t.shape)
                nan = np.isnan(q)
                codes = encode(np.where(nan, np.float32(0.0), q), fmt)
                neg = np.signbit(q)
                codes[nan & ~neg] = sp[k.SP_NAN_POS]
                codes[nan & neg] = sp[k.SP_NAN_NEG]
            vals = (q.astype(np.float32) * scale[:, None]).astype(np.float64)
            m, e = np.frexp(scale.astype(np.float64))
            scodes = np.where(np.isfinite(scale), np.where(m == 0.5, e + 126, -1), 255)
        return codes, scodes, vals


def _x(x):
    a = float_array(x, "x")
    name = "bfloat16" if a.dtype.kind == "V" else a.dtype.name
    return a, name


def quantize(x, fmt, *, axis=-1, block=32, scale_rule="floor", convention="ocp"):
    """MX quantization: ``(element codes, e8m0 scale codes)``.

    Element codes have x's shape (uint8 bit patterns; int8 for MXINT8); scale codes have x's
    shape with ``x.shape[axis] // block`` along ``axis``. The formula is the module's; the
    convention's knobs (``rq.mx.conventions.names()``) reproduce a library.

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([0.5, -3.0, 1.25, 7.0])
    >>> codes, scales = rq.mx.quantize(x, rq.float4_e2m1fn, block=4)
    >>> codes.tolist(), scales.tolist()          # E = floor(log2 7) - 2 = 0
    ([1, 13, 2, 7], [127])
    """
    a, name = _x(x)
    plan = _Plan(fmt, convention, scale_rule, name)
    codes, scales, _, _, _ = plan.run(a, axis, block)
    if scales.dtype != np.uint8:
        off = np.argwhere(scales < 0)
        if off.size:
            where = tuple(off[0].tolist())
            raise ValueError(f"convention {plan.conv.name!r}: the block at scale index {where} has"
                             f" a scale that is not a power of two (its floor {plan.conv.scale_min!r} "
                             "binds: amax below 2**-33), so it has no e8m0 code; fake_quantize returns "
                             "its values")
        scales = scales.astype(np.uint8)
    return codes, scales


def _scale_values(scale_codes, ax, b):
    sc = integer_array(scale_codes, "scale_codes")
    if sc.size and (sc.min() < 0 or sc.max() > 255):
        bad = int(sc.min() if sc.min() < 0 else sc.max())
        raise ValueError(f"scale_codes must be e8m0 codes in [0, 255]; got {bad}")
    s = np.where(sc == 255, np.nan, np.ldexp(1.0, sc.astype(np.int64) - 127))
    return np.repeat(s, b, axis=ax)


def dequantize(codes, scale_codes, fmt, *, axis=-1, block=32, dtype=np.float32):
    """``decode(codes) * 2**(scale_code - 127)`` rounded once to ``dtype`` (scale code 255 is
    NaN); MXINT8: ``code / 64 * 2**(scale_code - 127)``.

    >>> import numpy as np, refquant as rq
    >>> rq.mx.dequantize(np.uint8([1, 13, 2, 7]), np.uint8([126]), rq.float4_e2m1fn, block=4)
    array([ 0.25, -1.5 ,  0.5 ,  3.  ], dtype=float32)
    """
    fmt = _element_format(fmt)
    q = integer_array(codes, "codes")
    out_dtype = float_dtype(dtype)
    ax, b = _blocks(q.shape, axis, block)
    want = q.shape[:ax] + (q.shape[ax] // b,) + q.shape[ax + 1:]
    if np.shape(scale_codes) != want:
        raise ValueError(f"scale_codes must have shape {want} for codes of shape {q.shape}; "
                         f"got {np.shape(scale_codes)}")
    if isinstance(fmt, IntFormat):
        if q.size and (q.min() < -128 or q.max() > 127):
            raise ValueError(f"MXINT8 codes must lie in [-128, 127]; got {int(q.min())}")
        v = q.astype(np.float64) / 64.0
    else:
        from .floatquant import decode

        v = decode(q, fmt, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        return (v * _scale_values(scale_codes, ax, b)).astype(out_dtype)


def fake_quantize(x, fmt, *, axis=-1, block=32, scale_rule="floor", convention="ocp"):
    """``dequantize(*quantize(x, ...))`` in x's dtype (microxcaling: its own float32 values,
    which keep +-inf; brevitas: its float32 values, also where its scale floor binds).

    >>> import numpy as np, refquant as rq
    >>> rq.mx.fake_quantize(np.float32([0.3, -3.3, 1.2, 7.0]), rq.float4_e2m1fn, block=4)
    array([ 0.5, -3. ,  1. ,  6. ], dtype=float32)
    """
    a, name = _x(x)
    plan = _Plan(fmt, convention, scale_rule, name)
    codes, scales, vals, ax, b = plan.run(a, axis, block)
    if vals is None:
        return dequantize(codes, scales, plan.fmt, axis=ax, block=b, dtype=a.dtype)
    if plan.conv.scaling == "brevitas":  # its own float32 values
        return np.moveaxis(vals, -1, ax).astype(np.float32)
    s = np.where(scales == 255, np.nan, np.ldexp(1.0, scales.astype(np.int64) - 127))
    with np.errstate(invalid="ignore", over="ignore"):
        v = np.moveaxis(vals, -1, ax) * np.repeat(s, b, axis=ax)
        return v.astype(np.float32).astype(a.dtype)
