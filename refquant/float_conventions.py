"""Element conventions: how each library rounds a real number to a low-precision float, as data.

A :class:`FloatConvention` is a frozen set of knobs; the named ones are rows of :data:`TABLE`.
The kernels read the knobs, never the names. Every row's ``evidence`` names the test that proves
it bit for bit.

Knobs:

saturate
    the default overflow rule when ``saturate=None``: ``True`` finite overflow and +-inf go to
    +-max; ``False`` IEEE: overflow goes to +-inf where the format has inf, else to NaN (formats
    with neither saturate regardless). ``saturate_formats`` (when not empty) overrides it per
    format: exactly the formats named there saturate.
fixed_saturate
    the backend has no saturate switch: passing ``saturate=`` is a ValueError.
inf_saturating
    what +-inf becomes when saturating: ``"max"`` (+-max) or ``"nan"`` (NaN: ``x / 2**floor(log2
    |x|)`` is ``inf / inf``).
nan_no_nan
    NaN into a format without NaN (fp6, fp4): ``"error"`` (ValueError); ``"zero_flip"`` a zero
    with the NaN's sign bit inverted (+NaN gives -0); ``"zero"`` +0; ``"max"`` +max whatever the
    sign; ``"nan_bits"`` the NaN's own float32 pattern (sign cleared)
    pushed through the normal-range round-to-nearest-even bit arithmetic, ``(b + ((bias - 127) <<
    23) + 2**(22 - M) - 1 + odd) >> (23 - M)``, truncated to a byte, the sign or-ed back (payload
    dependent: the float32 quiet NaN gives +-1.5 in fp4 and fp6); ``"nan"`` the
    value NaN, which no code holds (encode raises; fake_quantize returns NaN).
nan_payload
    the NaN code of an IEEE format (e5m2): ``"quiet"`` the top mantissa bit (0x7E, as a float32
    quiet NaN truncates) or ``"all_ones"`` every mantissa bit (0x7F, torch).
signed_zero
    ``"keep"`` -0.0 and negative values that round to zero give the -0 code; ``"drop"`` they give
    +0; ``"drop_zero_input_no_nan"`` an input -0.0 gives +0 in formats without NaN (ONNX adds the
    zero point as a float), rounded negatives keep -0. fnuz formats always give +0.
band
    per-format ranges ``(format, lo, hi, result)`` of ``|x|`` whose non-saturating result is
    replaced by ``"max"`` or ``"nan"`` (onnxruntime's boundary behaviour).
quotient
    scaled quantization: ``"exact"`` rounds the real ``x / s`` once; ``"float32"`` rounds
    ``fl32(x / s)`` (ONNX QuantizeLinear for float32 ``x``).
arithmetic
    ``"exact"`` (integer rounding on the bits) or ``"microxcaling"``: microxcaling's float32
    element arithmetic (private exponent ``floor(log2_fp32 |x|)`` clipped at ``emin``,
    ``floor(fl32(|t| + 0.5))``, clamp to +-max; inf passes through, as a value); ``"brevitas"``
    brevitas FloatQuant's float32 arithmetic (see its row).
e8m0
    how a value becomes an e8m0 code: ``"value"`` the rounding of the value (as every other
    format); ``"exponent_field"`` a bit rule on ``fl32(x)``: the float32 exponent field ``e``
    (the sign ignored), plus one, for ``half_even``, when the mantissa's top bit is set and
    either a lower mantissa bit is set or ``e > 0`` (the implied bit is the tie's "lsb"); for
    ``ceil`` when any mantissa bit is set; never for ``floor``. ``e = 255`` (NaN, +-inf) gives
    255 (NaN); a carry out of 254 gives 255, or 254 when saturating. Zero gives code 0;
    negatives give the code of their magnitude.
formats
    the formats the backend implements (empty: all); others are a ValueError.
missing
    a row that is named but not implemented: using it raises NotImplementedError.

>>> import refquant as rq
>>> rq.float_conventions.get("torch").saturate_formats
('float8_e4m3fn',)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ._registry import Registry, Row
from .rounding import ROUNDING_MODES

__all__ = ["FloatConvention", "TABLE", "names", "get", "register", "unregister"]

_CHOICES = {
    "inf_saturating": ("max", "nan"),
    "nan_no_nan": ("error", "zero_flip", "zero", "max", "nan_bits", "nan"),
    "signed_zero": ("keep", "drop", "drop_zero_input_no_nan"),
    "nan_payload": ("quiet", "all_ones"),
    "quotient": ("exact", "float32"),
    "arithmetic": ("exact", "microxcaling", "brevitas"),
    "e8m0": ("value", "exponent_field"),
    "rounding": ROUNDING_MODES,
}

_FP8 = ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")
_OCP = ("float8_e4m3fn", "float8_e5m2", "float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn",
        "float8_e8m0fnu")
_SUB_BYTE = ("float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn")


@dataclass(frozen=True)
class FloatConvention(Row):
    """One library's element cast, as knobs (see the module docstring).

    >>> import refquant as rq
    >>> c = rq.float_conventions.get("exact").replace(name="mine", saturate=False)
    >>> c.saturate, c.rounding
    (False, 'half_even')
    """

    saturate: bool = True
    saturate_formats: tuple[str, ...] = ()
    fixed_saturate: bool = False
    inf_saturating: str = "max"
    nan_no_nan: str = "error"
    nan_payload: str = "quiet"
    signed_zero: str = "keep"
    band: tuple = ()
    quotient: str = "exact"
    rounding: str = "half_even"
    arithmetic: str = "exact"
    e8m0: str = "value"
    formats: tuple[str, ...] = ()
    missing: str = ""

    _choices: ClassVar[dict] = _CHOICES

    def saturates(self, fmt) -> bool:
        """The default overflow rule of this convention for ``fmt``.

        >>> import refquant as rq
        >>> rq.float_conventions.get("torch").saturates(rq.float8_e5m2)
        False
        """
        if self.saturate_formats:
            return fmt.name in self.saturate_formats
        return self.saturate


TABLE = (
    FloatConvention(
        name="exact",
        formula="code = the format value nearest the real x (one rounding, ties to even, or the "
        "rounding mode given); saturate (default True): overflow and +-inf -> +-max, else IEEE "
        "(+-inf, or NaN without inf); NaN -> the format's quiet NaN with x's sign, a ValueError "
        "without NaN; -0.0 kept where the format has -0; e8m0: 0 and negatives -> NaN, values "
        "below 2**-127 -> 2**-127",
        backend="the real-number definition (no backend)",
        evidence="tests/core/test_float_exact.py (Fraction oracle on every float16/bfloat16 "
        "pattern and on every midpoint and its neighbours)",
    ),
    FloatConvention(
        name="ml_dtypes",
        formula="exact round-to-nearest-even, IEEE overflow for formats with NaN (inf for e5m2, "
        "NaN for e4m3fn and fnuz, NaN for e8m0), saturating for fp6/fp4 (no NaN there); "
        "+NaN -> -0 and -NaN -> +0 in fp6/fp4",
        backend="ml_dtypes 0.7 astype",
        evidence="tests/cross/test_float_elements.py::test_ml_dtypes_every_half_pattern (every float16 "
        "and bfloat16 pattern, every format)",
        saturate=False,
        fixed_saturate=True,
        nan_no_nan="zero_flip",
    ),
    FloatConvention(
        name="torch",
        formula="round-to-nearest-even; float8_e4m3fn saturates (+-inf -> +-448), the other fp8 "
        "formats are IEEE (e5m2 overflow -> +-inf, fnuz overflow -> NaN); e5m2 NaN is 0x7F; "
        "float8_e8m0fnu by the float32 exponent field (e8m0='exponent_field': the sign ignored, "
        "1.5 * 2**k and above -> 2**(k+1), zero and tiny -> code 0, NaN, inf and 1.5 * 2**127 "
        "and above -> 255)",
        backend="torch 2.13 CPU Tensor.to(float8_* and float8_e8m0fnu)",
        evidence="tests/cross/test_float_elements.py::test_torch_to, test_torch_e8m0 (every "
        "float32 exponent field with the mantissas around the guard bit, both signs, specials)",
        saturate_formats=("float8_e4m3fn",),
        fixed_saturate=True,
        nan_payload="all_ones",
        e8m0="exponent_field",
        formats=(*_FP8, "float8_e8m0fnu"),
    ),
    FloatConvention(
        name="onnx",
        formula="QuantizeLinear: t = fl32(x / s) (float32 x), then round-to-nearest-even with the "
        "saturate attribute (default 1; fnuz +-inf -> +-max when saturating); NaN -> NaN, "
        "+NaN -> -0 in fp4/fp6; an input -0.0 -> +0 in fp4/fp6 (the zero point is added as a float)",
        backend="onnx 1.23 onnx.reference QuantizeLinear (opset 21/23/25/28)",
        evidence="tests/cross/test_float_elements.py::test_onnx_reference_quantize_linear",
        nan_no_nan="zero_flip",
        signed_zero="drop_zero_input_no_nan",
        quotient="float32",
    ),
    FloatConvention(
        name="onnx.cast",
        formula="Cast (no scale; scaled: fl32(x / s) first): round-to-nearest-even with the "
        "saturate attribute (default 1; fnuz +-inf -> +-max when saturating); NaN -> NaN, +NaN -> "
        "-0 in fp4/fp6, -0.0 kept; float8e8m0 from the float32 exponent field, the sign ignored "
        "(e8m0='exponent_field'; round_mode 'nearest', 'up', 'down' are rounding 'half_even', "
        "'ceil', 'floor': ONNX's default 'up' is rounding='ceil'), held at 254 when saturating",
        backend="onnx 1.23 onnx.reference Cast (opset 23, 25, 28)",
        evidence="tests/cross/test_float_elements.py::test_onnx_reference_cast",
        nan_no_nan="zero_flip",
        quotient="float32",
        e8m0="exponent_field",
    ),
    FloatConvention(
        name="onnxruntime",
        formula="as onnx for fp8; with saturate=0, |t| in [480, 496) gives +-448 in e4m3fn and "
        "|t| in [61440, 65536) gives NaN in e5m2 (boundary bands)",
        backend="onnxruntime 1.32 CPU QuantizeLinear / Cast to float8",
        evidence="tests/cross/test_float_elements.py::test_onnxruntime_fp8",
        nan_no_nan="zero_flip",
        quotient="float32",
        band=(("float8_e4m3fn", 480.0, 496.0, "max"), ("float8_e5m2", 61440.0, 65536.0, "nan")),
        formats=_FP8,
    ),
    FloatConvention(
        name="gfloat",
        formula="exact round-to-nearest-even of the float64 input; sat switch (default False); "
        "NaN -> NaN, also for formats without NaN (no code: encode raises)",
        backend="gfloat 0.5 round_ndarray / encode_ndarray (float64 input)",
        evidence="tests/cross/test_float_elements.py::test_gfloat_float64",
        saturate=False,
        nan_no_nan="nan",
        formats=_OCP,
    ),
    FloatConvention(
        name="torchao",
        formula="fp8: clamp to +-max, then torch's cast (NaN stays NaN); fp6/fp4 "
        "(f32_to_f*_unpacked): saturating round-to-nearest-even on the float32 bits, -0 kept, "
        "NaN -> the quiet NaN bits rounded as a normal number (+-1.5)",
        backend="torchao 0.18 prototype.mx_formats (to_mx element step, f32_to_f4_unpacked, "
        "f32_to_f6_e2m3_unpacked, f32_to_f6_e3m2_unpacked)",
        evidence="tests/cross/test_float_elements.py::test_torchao_sub_byte_casts",
        fixed_saturate=True,
        nan_no_nan="nan_bits",
        nan_payload="all_ones",
        formats=("float8_e4m3fn", "float8_e5m2") + _SUB_BYTE,
    ),
    FloatConvention(
        name="torchao.float8",
        formula="scaled fp8 (float16, bfloat16, float32 x): t = fl32(fl32(x) / fl32(s)), clamped to "
        "+-max, then torch's cast (round-to-nearest-even: the quotient is rounded twice, to float32 "
        "and then to the format); NaN stays NaN (e5m2 0x7F)",
        backend="torchao 0.18 quantization.quant_primitives._quantize_affine_float8 (Float8Tensor)",
        evidence="tests/cross/test_float_elements.py::test_torchao_float8_quantize",
        fixed_saturate=True,
        nan_payload="all_ones",
        quotient="float32",
        formats=("float8_e4m3fn", "float8_e5m2"),
    ),
    FloatConvention(
        name="modelopt.float8",
        formula="FP8 export (w / s).to(float8_e4m3fn) with a float32 s (float16, bfloat16, float32 "
        "w): t = fl32(x / s), then torch's saturating cast (round-to-nearest-even, +-inf -> +-448, "
        "NaN stays NaN): the arithmetic of torchao.float8 for e4m3fn",
        backend="ModelOpt export to_quantized_weight (FP8), transcription: not installable here",
        evidence="tests/cross/test_float_transcribed.py::test_modelopt_float8",
        fixed_saturate=True,
        quotient="float32",
        formats=("float8_e4m3fn",),
    ),
    FloatConvention(
        name="compressed_tensors",
        formula="fp4 (cast_to_fp4: sign(x) * |x| rounded by thresholds, ties to even, saturating): an "
        "input -0.0 -> +0 (sign(-0.0) is 0), a negative value rounding to zero -> -0; NaN -> code 0 "
        "(its packer assumes fp4 values: no defined code); float8_e4m3fn: clamp to +-448, then "
        "torch's cast (-0.0 kept, NaN stays NaN)",
        backend="compressed-tensors 0.20 quantization.utils.fp4_utils.cast_to_fp4 (MXFP4, NVFP4 "
        "elements) and round_to_quantized_type_args (MXFP8)",
        evidence="tests/cross/test_nvfp4_compressed_tensors.py::test_cast_to_fp4 (every float16 "
        "pattern and the fp4 probes through compressed-tensors' cast_to_fp4)",
        fixed_saturate=True,
        nan_no_nan="zero",
        nan_payload="all_ones",
        signed_zero="drop_zero_input_no_nan",
        formats=("float4_e2m1fn", "float8_e4m3fn"),
    ),
    FloatConvention(
        name="microxcaling",
        formula="v = fl32(x / s); p = max(floor(log2_fp32 |v|), emin); t = fl32(|v| / 2**p * 2**M); "
        "r = floor(fl32(t + 0.5)) (ties away; rounding='half_even' subtracts 1 when fl32(t - 0.5) "
        "is even, microxcaling's round='even'); value sign(v) * r / 2**M * 2**p clamped to +-max "
        "(saturate_normals); inf passes through (its code: inf, else NaN), NaN stays NaN, -0 -> +0",
        backend="microsoft/microxcaling _quantize_elemwise_core (pure torch path); not on PyPI",
        evidence="tests/cross/test_float_transcribed.py::test_microxcaling_elements (its published "
        "torch algorithm, run on torch)",
        fixed_saturate=True,
        nan_no_nan="nan",
        quotient="float32",
        rounding="half_away",
        arithmetic="microxcaling",
        formats=_FP8[::2] + _SUB_BYTE,
    ),
    FloatConvention(
        name="brevitas",
        formula="FloatQuant (scale 1), float32 throughout: s = 2**max(floor(log2_fp32(fl32(|x| + "
        "2**-126))) - M, emin - M); y = rne(x / s) * s; saturating (default): clamp to +-max; "
        "else beyond max -> inf (formats with inf) or NaN; +-inf -> NaN in both modes (inf / inf); "
        "-0.0 kept as a value (fnuz: fake_quantize returns -0.0, the code is 0)",
        backend="brevitas 0.13 FloatQuant + FloatClamp (Fp8e4m3OCP*, Fp8e4m3FNUZ*, fp6/fp4 mixins); "
        "not in the test environment (brevitas 0.13.4 pins setuptools < 81); the MX row built on "
        "this FloatQuant matches brevitas itself where it imports (test_float_mx.py::test_brevitas_mx)",
        evidence="tests/cross/test_float_transcribed.py::test_brevitas_elements (its published "
        "FloatQuant algorithm, re-typed in torch)",
        nan_no_nan="nan",
        quotient="float32",
        arithmetic="brevitas",
    ),
    FloatConvention(
        name="transformer_engine",
        formula="fp4 (cast_to_fp4x2, a table of threshold ranges, ties to even): saturating; an "
        "input -0.0 -> +0 (rounded negatives keep -0); NaN -> code 0",
        backend="TransformerEngine quantization_ref_nvfp4.py cast_to_fp4x2 (transcription: not "
        "installable here)",
        evidence="tests/cross/test_float_transcribed.py::test_transformer_engine_fp4 (the "
        "published threshold algorithm)",
        fixed_saturate=True,
        nan_no_nan="zero",
        signed_zero="drop_zero_input_no_nan",
        formats=("float4_e2m1fn",),
    ),
    FloatConvention(
        name="modelopt",
        formula="fp4 (_cast_fp4: searchsorted on the level midpoints, +1 on a midpoint of odd "
        "index: ties to even): saturating; sign from x < 0, so an input -0.0 -> +0; NaN -> +6 "
        "(code 7)",
        backend="ModelOpt nvfp4_tensor.py _cast_fp4 (transcription: not installable here)",
        evidence="tests/cross/test_float_transcribed.py::test_modelopt_fp4 (the published "
        "algorithm)",
        fixed_saturate=True,
        nan_no_nan="max",
        signed_zero="drop_zero_input_no_nan",
        formats=("float4_e2m1fn",),
    ),
)

_REGISTRY = Registry("float formats", TABLE, row_type=FloatConvention)
register, unregister, names, get = _REGISTRY.register, _REGISTRY.unregister, _REGISTRY.names, _REGISTRY.get
