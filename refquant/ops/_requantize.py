"""Requantization: an integer accumulator to output codes, under each backend's convention.

A convention is a row of data (:class:`Requantization`); :func:`apply` is the one place that
reads the knobs. The exact row is the real-number formula with a single rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from .._registry import Registry
from .._validation import check_axis, integer_array, integer_scalar, resolve_range
from ..formats import integer_dtype_for
from ._accumulate import positive
from ._fixed_point import multiply_by_quantized_multiplier, quantize_multiplier

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class Requantization:
    """The knobs that separate the backends' requantization (see ``docs/ops.md`` for the evidence).

    * ``scales``: how ``s_x * s_w / s_y`` becomes the multiplier in the operators: ``"real"`` (no
      rounding), ``"float32"`` (``f32(f32(s_x * s_w) / s_y)``), ``"float64"`` (``(s_x * s_w) / s_y``
      in float64, each step rounded).
    * ``multiplier``: how a multiplier is held: ``"real"``, ``"float32"`` or ``"q31"``
      (:func:`quantize_multiplier`).
    * ``product``: how the accumulator meets it: ``"real"``; ``"float32"``
      (``f32(f32(acc) * m)``); ``"float64"`` (``f64(acc * m)``); ``"fixed_point"`` (gemmlowp's
      SaturatingRoundingDoublingHighMul then RoundingDivideByPOT) or ``"fixed_point_single"``
      (TFLite's single-rounding build).
    * ``zero_point``: ``"after_rounding"`` (integer add) or ``"before_rounding"`` (added to the
      float64 product, which rounds, then rounded half to even).
    * ``bias``: ``"real"`` (any real bias, exact), ``"float32_over_scale"`` (a float32 bias ``b``
      enters as ``f32(f32(acc) + f32(b / f32(s_x * s_w)))``; an int32 bias is added to the
      accumulator) or ``"int32"`` (int32 codes at scale ``s_x * s_w`` added to the accumulator).
    * ``out_of_range``: ``"saturate"`` or ``"int32_indefinite"`` (the x86 float-to-int32
      conversion: a product at or beyond 2**31 in magnitude, or NaN, becomes INT32_MIN before the
      zero point is added and the result clamped).
    * ``accumulate``: ``"exact"``, or ``"fbgemm_depthwise"`` (FBGEMM's depthwise convolutions add
      the u8 x i8 products of consecutive taps in pairs saturated to int16; ``rq.ops.conv2d``
      applies it where FBGEMM takes that path).

    Rounding of every float product to an integer is half to even. The named rows are the
    registry ``rq.ops.conventions`` (each with its ``formula``, the ``backend`` it reproduces and
    the ``evidence`` that proves it); a custom row is checked when it is registered or used.

    >>> import dataclasses, numpy as np, refquant as rq
    >>> rq.ops.conventions.get("onnx").zero_point
    'before_rounding'
    >>> mine = rq.ops.conventions.get("onnx").replace(name="onnx, zero point after")
    >>> mine = dataclasses.replace(mine, zero_point="after_rounding")
    >>> acc = np.int32([1, 3])
    >>> [rq.ops.requantize(acc, 0.5, 1, qmin=0, qmax=9, convention=c).tolist() for c in ("onnx", mine)]
    [[2, 2], [1, 3]]
    """

    name: str
    scales: str
    multiplier: str
    product: str
    zero_point: str
    bias: str
    out_of_range: str
    accumulate: str = "exact"
    formula: str = field(default="", compare=False)
    backend: str = field(default="", compare=False)
    evidence: str = field(default="", compare=False)

    def replace(self, **knobs):
        """A copy with some knobs changed."""
        return replace(self, **knobs)


_KNOBS = {
    "scales": ("real", "float32", "float64"),
    "multiplier": ("real", "float32", "q31"),
    "product": ("real", "float32", "float64", "fixed_point", "fixed_point_single"),
    "zero_point": ("after_rounding", "before_rounding"),
    "bias": ("real", "float32_over_scale", "int32"),
    "out_of_range": ("saturate", "int32_indefinite"),
    "accumulate": ("exact", "fbgemm_depthwise"),
}
_PRODUCT_OF = {
    "real": ("real",),
    "float32": ("float32", "float64"),
    "q31": ("fixed_point", "fixed_point_single"),
}

_F32 = "m = f32(f32(s_x * s_w) / s_y); "
_Q31 = ("(q, shift) = quantize_multiplier(f64(s_x * s_w) / s_y); y = clamp(RoundingDivideByPOT("
        "SaturatingRoundingDoublingHighMul(acc * 2**max(shift, 0), q), max(-shift, 0)) + z_y, qmin, "
        "qmax): the high multiply rounds ties up, the divide ties away from zero; int32 bias added to acc")
_GEMMLOWP_EVIDENCE = ("tests/core/test_ops.py::test_gemmlowp_against_fixed_point_oracle, "
                      "tests/core/test_ops.py::test_gemmlowp_tie_classes_hit")
_ROWS = (
    Requantization("exact", "real", "real", "real", "after_rounding", "real", "saturate",
                   formula="y = clamp(rne(acc * s_x * s_w / s_y + bias / s_y) + z_y, qmin, qmax) in real "
                   "numbers: one rounding, half to even",
                   evidence="tests/core/test_ops.py::test_requantize_exact_against_fractions, "
                   "tests/core/test_ops.py::test_linear_exact_against_fractions"),
    Requantization("fbgemm", "float32", "float32", "float32", "after_rounding", "float32_over_scale",
                   "int32_indefinite", "fbgemm_depthwise",
                   formula="u = f32(s_x * s_w), m = f32(u / s_y); y = clamp(rne(f32(f32(f32(acc) + "
                   "f32(b / u)) * m)) + z_y, qmin, qmax), a product at or beyond 2**31 (or NaN) becoming "
                   "INT32_MIN first; depthwise taps added in int16-saturated pairs",
                   backend="FBGEMM (torch quantized linear and conv2d)",
                   evidence="tests/cross/test_ops_torch.py"),
    Requantization("onnx", "float32", "float32", "float64", "before_rounding", "int32", "saturate",
                   formula=_F32 + "y = clamp(rne(f64(f64(acc * m) + z_y)), qmin, qmax): the zero point "
                   "added before rounding; int32 bias added to acc",
                   backend="onnx.reference QLinearMatMul, QLinearConv",
                   evidence="tests/cross/test_ops_onnx.py"),
    Requantization("onnxruntime", "float32", "float32", "float32", "after_rounding", "int32", "saturate",
                   formula=_F32 + "y = clamp(rne(f32(f32(acc) * m)) + z_y, qmin, qmax); int32 bias added "
                   "to acc",
                   backend="onnxruntime QLinearMatMul, QLinearConv",
                   evidence="tests/cross/test_ops_onnx.py::test_qlinear_matmul_onnxruntime, "
                   "tests/cross/test_ops_onnx.py::test_qlinear_conv_onnxruntime"),
    Requantization("xnnpack", "float32", "float32", "float32", "after_rounding", "int32", "saturate",
                   formula=_F32 + "y = clamp(rne(f32(f32(acc) * m)) + z_y, qmin, qmax) (the published "
                   "fp32 requantization: float multiply, clamp, magic-number round to nearest even, add "
                   "the zero point); no XNNPACK build is run to prove it",
                   backend="XNNPACK"),
    Requantization("gemmlowp", "float64", "q31", "fixed_point", "after_rounding", "int32", "saturate",
                   formula=_Q31, backend="gemmlowp", evidence=_GEMMLOWP_EVIDENCE),
    Requantization("tflite", "float64", "q31", "fixed_point", "after_rounding", "int32", "saturate",
                   formula=_Q31, backend="TFLite MultiplyByQuantizedMultiplier", evidence=_GEMMLOWP_EVIDENCE),
    Requantization("tflite.single_rounding", "float64", "q31", "fixed_point_single", "after_rounding",
                   "int32", "saturate",
                   formula="(q, shift) as tflite, shift clamped to 30; y = clamp(floor((acc * q + "
                   "2**(30 - shift)) / 2**(31 - shift)) + z_y, qmin, qmax): one rounding, ties up",
                   backend="TFLite built with TFLITE_SINGLE_ROUNDING",
                   evidence="tests/core/test_ops.py::test_gemmlowp_against_fixed_point_oracle"),
)


def _check_row(row: Requantization) -> None:
    """A ValueError unless every knob holds one of its values and the knobs fit together."""
    for knob, allowed in _KNOBS.items():
        if getattr(row, knob) not in allowed:
            raise ValueError(f"{row.name}: {knob} must be one of {allowed}; got {getattr(row, knob)!r}")
    if row.product not in _PRODUCT_OF[row.multiplier]:
        raise ValueError(f"{row.name}: product {row.product!r} does not go with multiplier "
                         f"{row.multiplier!r}")
    if row.bias == "float32_over_scale" and (row.scales, row.product) != ("float32", "float32"):
        raise ValueError(f"{row.name}: bias 'float32_over_scale' needs float32 scales and a float32 product")
    if row.zero_point == "before_rounding" and row.product != "float64":
        raise ValueError(f"{row.name}: zero_point 'before_rounding' is defined for the float64 product only")
    if len({row.scales == "real", row.multiplier == "real", row.bias == "real"}) != 1:
        raise ValueError(f"{row.name}: scales, multiplier and bias are all 'real' or none is")


conventions = Registry("requantization", _ROWS, row_type=Requantization, check=_check_row)


def row(name) -> Requantization:
    """The named requantization row (or a :class:`Requantization` itself, checked)."""
    if isinstance(name, Requantization):
        _check_row(name)
    return conventions.get(name)


# --------------------------------------------------------------------------------------------
# exact: round_half_even((acc * a1 * a2 + b) / c) as real numbers


def _round_exact(acc, a1, a2, b, c, lo, hi):
    """rne((acc * a1 * a2 + b) / c) for int64 acc and float64 a1, a2, b, c (broadcast), clipped to
    [lo - 1, hi + 1]: float64 where a margin proves the result, Fractions elsewhere."""
    shape = np.broadcast_shapes(acc.shape, np.shape(a1), np.shape(a2), np.shape(b), np.shape(c))
    acc, a1, a2, b, c = (np.broadcast_to(v, shape) for v in (acc, a1, a2, b, c))
    with np.errstate(all="ignore"):
        t = acc.astype(np.float64) * a1 * a2
        v = (t + b) / c
        margin = 2.0**-50 * ((np.abs(t) + np.abs(b)) / c + np.abs(v))
        r = np.rint(v)
        frac = np.abs(v - np.floor(v) - 0.5)
        high, low = v - margin > hi + 1, v + margin < lo - 1
        unsure = ~(high | low) & (
            (frac <= margin) | ~np.isfinite(v) | ~np.isfinite(margin)
            | ((t != 0) & (np.abs(t) < 2.0**-1000)) | (np.abs(acc) >= 2**53)
        )
    r = np.clip(np.where(np.isfinite(r), r, 0), lo - 1, hi + 1).astype(np.int64)
    r = np.where(high, hi + 1, np.where(low, lo - 1, r))
    for idx in zip(*np.nonzero(unsure)):
        real = (Fraction(int(acc[idx])) * Fraction(float(a1[idx])) * Fraction(float(a2[idx]))
                + Fraction(float(b[idx]))) / Fraction(float(c[idx]))
        r[idx] = min(max(round(real), lo - 1), hi + 1)
    return r


# --------------------------------------------------------------------------------------------
# the one place that reads the knobs


def apply(acc, conv: Requantization, *, multiplier=None, scales=None, bias=None, zero_point=0,
          qmin, qmax, name="acc"):
    """Codes from int64 accumulators ``acc`` (broadcastable float64 operands).

    Either ``multiplier`` (the real multiplier) or ``scales = (s_x, s_w, s_y)`` (the operators);
    ``bias`` (operators only): a float array (real values) or an int64 array (codes at s_x * s_w).
    """
    acc = np.asarray(acc, np.int64)
    if bias is not None and bias.dtype.kind in "iu":
        acc = acc + bias.astype(np.int64)
        bias = None
    if bias is not None and conv.bias == "int32":
        raise TypeError(
            f"bias must be int32 codes at scale x_scale * w_scale under convention {conv.name!r} "
            f"(quantize it first); got dtype {bias.dtype}"
        )
    if conv.product == "real":
        if scales is None:
            a1, a2, c = multiplier, 1.0, 1.0
        else:
            a1, a2, c = scales
        b = 0.0 if bias is None else bias.astype(np.float64)
        r = _round_exact(acc, a1, a2, b, c, qmin - zero_point, qmax - zero_point)
        return np.clip(r + zero_point, qmin, qmax)
    _check_int32(acc, name)
    m, unit = _multiplier(conv, multiplier, scales)
    if conv.multiplier == "q31":
        q, shift = quantize_multiplier(m)
        rounding = "single" if conv.product == "fixed_point_single" else "double"
        r = multiply_by_quantized_multiplier(acc, q, shift, rounding, name)
        return np.clip(r + zero_point, qmin, qmax)
    if conv.product == "float32":
        fast = _float32_kernel(acc, m, unit, bias, conv, zero_point, qmin, qmax)
        if fast is not None:
            return fast
    with np.errstate(all="ignore"):
        if conv.product == "float32":
            raw = acc.astype(np.float32)
            if bias is not None:
                raw = raw + (bias.astype(np.float32) / unit).astype(np.float32)
            v = raw * m
        else:
            v = acc.astype(np.float64) * m.astype(np.float64)
            if conv.zero_point == "before_rounding":
                v = v + np.float64(zero_point)
                return np.clip(np.rint(v), qmin, qmax).astype(np.int64)
    return np.clip(_to_int(v, conv) + zero_point, qmin, qmax)


def _channel_layout(shape, operands):
    """(outer, channels, inner) with every operand varying along one axis at most, else None."""
    if any(np.ndim(op) > len(shape) for op in operands):
        return None
    axes = {i + len(shape) - np.ndim(op) for op in operands for i, n in enumerate(np.shape(op)) if n != 1}
    if len(axes) > 1:
        return None
    if not axes:
        return int(np.prod(shape)), 1, 1
    ax = axes.pop()
    return int(np.prod(shape[:ax])), shape[ax], int(np.prod(shape[ax + 1:]))


def _bias_term(bias, unit) -> np.ndarray:
    """``f32(f32(bias) / unit)`` (a float bias at the accumulator's scale), or a float32 zero."""
    if bias is None:
        return np.zeros(1, np.float32)
    with np.errstate(all="ignore"):
        return np.asarray(bias.astype(np.float32) / unit, np.float32)


def float32_epilogue(conv: Requantization, scales, bias, channels: int):
    """A float32 row's requantization as per-channel operands, for a kernel that fuses it with the
    accumulation: ``(int64 bias codes, float32 multiplier, float32 bias term, has a float bias)``,
    each array of length ``channels``, computed as :func:`apply` computes them; None for other rows
    (and for a float bias under a row that takes int32 codes only, which :func:`apply` rejects).

    ``scales`` is ``(s_x, s_w, s_y)`` with ``s_w`` a scalar or one per channel; ``bias`` None, float
    or integer, one per channel."""
    if conv.product != "float32" or conv.multiplier != "float32":
        return None
    codes, real = np.zeros(channels, np.int64), None
    if bias is not None and bias.dtype.kind in "iu":
        codes = bias.astype(np.int64).reshape(channels)
    elif bias is not None:
        if conv.bias == "int32":
            return None
        real = bias
    m, unit = _multiplier(conv, None, scales)
    m, term = (np.ascontiguousarray(np.broadcast_to(v, (channels,)), np.float32)
               for v in (m, _bias_term(real, unit)))
    return codes, m, term, real is not None


def _float32_kernel(acc, m, unit, bias, conv, zero_point, qmin, qmax):
    """The float32 rows in one Numba pass, when the multiplier varies along one axis at most."""
    bterm = _bias_term(bias, unit)
    m = np.asarray(m, np.float32)
    layout = _channel_layout(acc.shape, [m, bterm])
    if layout is None or acc.size == 0:
        return None
    from .._kernels._ops import requantize_f32

    out = np.empty(layout, np.int64)
    requantize_f32(np.ascontiguousarray(acc).reshape(layout), np.ascontiguousarray(m).ravel(),
                   np.ascontiguousarray(bterm).ravel(), bias is not None, zero_point, qmin, qmax,
                   conv.out_of_range == "int32_indefinite", out)
    return out.reshape(acc.shape)


def _to_int(v, conv):
    r = np.rint(v)
    if conv.out_of_range == "int32_indefinite":
        return np.where(np.abs(r) < 2.0**31, np.nan_to_num(r), _INT32_MIN).astype(np.int64)
    return np.clip(np.nan_to_num(r), -(2.0**62), 2.0**62).astype(np.int64)


def _multiplier(conv, multiplier, scales):
    """The convention's multiplier (float32 or float64 array) and, for float32 rows, s_x * s_w."""
    if scales is None:
        m64 = np.asarray(multiplier, np.float64)
        return (m64.astype(np.float32), None) if conv.multiplier == "float32" else (m64, None)
    sx, sw, sy = scales
    if conv.scales == "float32":
        unit = np.float32(sx) * np.asarray(sw, np.float32)
        return (unit / np.float32(sy)).astype(np.float32), unit
    m64 = np.float64(sx) * np.asarray(sw, np.float64) / np.float64(sy)
    return (m64.astype(np.float32) if conv.multiplier == "float32" else m64), None


def _check_int32(acc, name):
    if acc.size and (acc.min() < _INT32_MIN or acc.max() > _INT32_MAX):
        bad = int(acc.min() if acc.min() < _INT32_MIN else acc.max())
        raise ValueError(f"{name} {bad} does not fit the int32 accumulator of this convention")


def requantize(acc, multiplier, zero_point, *, qmin=None, qmax=None, fmt=None, axis=None, convention="exact"):
    """Integer accumulators to output codes: ``clamp(round(acc * multiplier) + zero_point, qmin, qmax)``.

    How ``acc * multiplier`` is formed and rounded is the convention's (``rq.ops.conventions``):

    * ``exact``: the real product of the integer and the multiplier's exact value, rounded once,
      half to even (certified in float64, decided with Fractions where the margin is too small).
    * ``fbgemm``: ``f32(f32(acc) * f32(m))`` rounded half to even; a product at or beyond 2**31 in
      magnitude becomes INT32_MIN (x86's conversion) before the zero point and the clamp.
    * ``onnxruntime`` / ``xnnpack``: ``f32(f32(acc) * f32(m))`` rounded half to even, saturating.
    * ``onnx``: ``f64(f64(acc) * f32(m))``, plus the zero point in float64, rounded half to even.
    * ``gemmlowp`` / ``tflite``: ``(q, shift) = quantize_multiplier(m)``, then
      ``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc * 2**max(shift,0), q), max(-shift,0))``
      (the doubling high multiply rounds ties up, the power-of-two divide ties away from zero);
      ``tflite.single_rounding`` rounds once, ties up.

    ``acc`` is an integer array (int32 values except under ``exact``); ``multiplier`` positive and
    finite, a scalar or one per index of ``acc`` along ``axis``; ``zero_point`` an integer in
    [qmin, qmax]. The codes come back in the smallest dtype holding [qmin, qmax].

    >>> import numpy as np, refquant as rq
    >>> acc = np.int32([5, 7, -5, 1000])
    >>> rq.ops.requantize(acc, 0.5, 10, qmin=0, qmax=255).tolist()
    [12, 14, 8, 255]
    >>> rq.ops.requantize(acc, 0.5, 10, qmin=0, qmax=255, convention="gemmlowp").tolist()
    [13, 14, 8, 255]
    """
    conv = row(convention)
    a = integer_array(acc, "acc")
    lo, hi = resolve_range(qmin, qmax, fmt)
    zp = _zero_point_in(zero_point, lo, hi)
    m = positive(multiplier, "multiplier")
    if m.ndim > 1 or (m.ndim == 1 and axis is None and m.size != 1):
        raise ValueError(f"multiplier must be a scalar, or 1-D with axis given; got shape {m.shape}")
    if axis is not None:
        ax = check_axis(axis, a.ndim)
        if m.ndim != 1 or m.size != a.shape[ax]:
            raise ValueError(
                f"multiplier must be 1-D of length acc.shape[{ax}]={a.shape[ax]}; got shape {m.shape}"
            )
        shape = [1] * a.ndim
        shape[ax] = -1
        m = m.reshape(shape)
    elif m.ndim == 1:
        m = m.reshape(())
    out = apply(a.astype(np.int64), conv, multiplier=m, zero_point=zp, qmin=lo, qmax=hi)
    return out.astype(integer_dtype_for(lo, hi))


def _zero_point_in(zero_point, lo, hi, name="zero_point") -> int:
    if isinstance(zero_point, np.ndarray) and zero_point.size == 1 and zero_point.ndim <= 1:
        zero_point = zero_point.reshape(())[()]
    z = integer_scalar(zero_point, name)
    if not lo <= z <= hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}]; got {z}")
    return z
