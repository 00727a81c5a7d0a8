"""NVFP4: e2m1 elements, an e4m3 scale per 16 consecutive elements of the last axis, and a
float32 global scale.

With ``g`` the (decode) global scale, ``amax`` the largest magnitude of the tensor and ``a`` that
of a block, ``exact`` computes, each with one rounding half to even:

* ``g = f32(amax / 2688)`` (2688 = 448 * 6) unless ``global_scale`` gives it; 1 for an all-zero x,
  and the smallest positive float32 (2**-149) where ``amax / 2688`` rounds to 0 (a global scale
  is always positive);
* the block scale ``s = e4m3(a / (6 g))``, saturating at 448 (0 when it rounds to 0);
* the element code ``q = e2m1(x / (s g))``, saturating at +-6, keeping the sign of -0.0;
* dequantize: ``q * s * g`` rounded once to the output dtype.

The libraries differ in every step; each recipe is a named convention (``rq.nvfp4.conventions``),
listed as stored global / block scale / element scaling / e2m1 of NaN and of -0.0:

* ``exact``: decode; ``e4m3(a / (6 g))``; ``x / (s g)``; an error / kept.
* ``torchao``: decode; ``e4m3(clamp(f32(f32(a / 6) / g), 2**-6, 448))``;
  ``f32(x * f32(f32(1 / g) / s))``; its bit arithmetic on the NaN's bits (code 4 in a block whose
  scale is NaN) / kept.
* ``transformer_engine``: encode ``S``; ``e4m3(min(f32(a * f32(S * f32(1 / 6))), 448))`` (zero
  allowed); ``f32(x * min(f32(1 / f32(s * f32(1 / S))), FLT_MAX))``; 0 / +0.
* ``modelopt``: decode; ``e4m3(clamp_min(f32(a / f32(6 g)), 2**-9))`` with a zero quotient made 1;
  ``f32(x / f32(s g))``; 6 / +0.
* ``onnx``: as modelopt (its exporter), the element step being ONNX ``QuantizeLinear`` to
  float4e2m1 with the scale ``f32(s g)``.
* ``compressed_tensors``: encode ``S``; ``e4m3(f32(S * d(f32(a / 6))))`` with ``d`` rounding to
  x's dtype, a scale rounding to zero made 0.125; ``f32(x / f32(s / S))``; an error / +0 (a
  quotient +-0 gets code 0, a negative value rounding to zero code 8); dequantize
  ``f32(q * f32(s / S))``.

``S = f32(2688 / amax)`` is transformer_engine's stored encode scale (FLT_MAX for amax 0, 1 for
amax inf); its decode scale is ``f32(1 / S)``. A NaN in a block makes its scale NaN (code 0x7f)
in every library recipe. Dequantize (libraries): ``f32(q * f32(s * g))``, then the dtype.

>>> import numpy as np, refquant as rq
>>> x = np.linspace(-3, 3, 16, dtype=np.float32)
>>> codes, scales, g = rq.nvfp4.quantize(x)
>>> codes.tolist()[:4], scales.tolist(), float(g)
([15, 15, 14, 14], [126], 0.0011160714784637094)
>>> rq.nvfp4.dequantize(codes, scales, g).tolist()[:3]
[-3.0, -3.0, -2.0]
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ._dtypes import f32_of_fraction, float_code
from ._registry import Registry, table_getattr
from ._validation import float_array, integer_array

__all__ = ["Convention", "conventions", "quantize", "dequantize", "fake_quantize", "detect", "BLOCK"]

BLOCK = 16
_E4M3_MAX_TIMES_E2M1_MAX = 2688.0


@dataclass(frozen=True)
class Convention:
    """One NVFP4 recipe as knob values (module docstring for the formulas).

    ``global_storage``: ``"decode"`` (``amax / 2688``) or ``"encode"`` (``2688 / amax``).
    ``block_scale``: ``"exact"``, ``"double"`` (two float32 divisions), ``"divide_product"``
    (one division by ``f32(6 g)``), ``"fused"`` (a float32 multiplier ``f32(S * f32(1/6))``) or
    ``"encode_product"`` (``f32(S * d(f32(a / 6)))``, ``d`` rounding to x's dtype).
    ``scale_min``: the float32 clamp below the block scale before its e4m3 cast (0: none).
    ``zero_scale_to_one``: a zero block-scale quotient becomes 1.0. ``zero_scale_code``: the e4m3
    code a block scale that rounds to zero takes (0: it stays zero). ``element``: ``"exact"``,
    ``"reciprocal"`` (``f32(f32(1/g) / s)``), ``"reciprocal_product"`` (``f32(1 / f32(s g))``),
    ``"divide"`` (``x / f32(s g)``) or ``"divide_encode"`` (``x / f32(s / S)``). ``nan``:
    ``"error"``, ``"code"`` (``nan_code``) or
    ``"torchao_bits"`` (torchao's bit arithmetic applied to the NaN's bits: a NaN input keeps its
    payload, a NaN block scale gives 0x7ff00000). ``nan_multiplier_lanes``: under
    ``torchao_bits``, the float32 product ``x * m`` with both NaN (a NaN element in a NaN-scale
    block) keeps the multiplier's NaN in the first ``nan_multiplier_lanes`` positions of each
    block and the input's after them: 16 under torch's AVX2/AVX512 kernels, 3 under its DEFAULT
    kernels (which operand a compiled multiply returns; :func:`detect` measures it on the
    installed torch). ``drop_negative_zero``: a quotient -0.0 (not a
    negative value rounding to zero) takes code 0. ``dequant``: ``"exact"``,
    ``"float32"`` (``f32(q * f32(s g))``) or ``"float32_encode"`` (``f32(q * f32(s / S))``);
    ``dequant_negative_zero``: code 8 dequantizes to -0.0 (ModelOpt's table holds +0).
    """

    name: str
    global_storage: str
    block_scale: str
    scale_min: float
    zero_scale_to_one: bool
    element: str
    nan: str
    nan_code: int
    drop_negative_zero: bool
    dequant: str
    formula: str
    evidence: str = field(default="", compare=False)
    dequant_negative_zero: bool = True
    nan_multiplier_lanes: int = BLOCK
    zero_scale_code: int = 0

    def replace(self, **knobs) -> Convention:
        """A copy with some knobs changed."""
        return dataclasses.replace(self, **knobs)


_ROWS = {
    "exact": Convention(
        "exact", "decode", "exact", 0.0, False, "exact", "error", 0, False, "exact",
        "s = e4m3(a / (6 g)); q = e2m1(x / (s g)); one rounding each",
        "tests/core/test_nvfp4.py::test_exact_matches_fraction_oracle"),
    "torchao": Convention(
        "torchao", "decode", "double", 2.0**-6, False, "reciprocal", "torchao_bits", 0, False,
        "float32",
        "s = e4m3(clamp(f32(f32(a / 6) / g), 2**-6, 448)); q = e2m1(clamp(f32(x * f32(f32(1 / g) / s)), "
        "-6, 6)) (bit arithmetic: a NaN's code depends on its bits; in a block with a NaN scale, "
        "0x7ff00000 gives code 4)",
        "tests/cross/test_nvfp4_torchao.py"),
    "transformer_engine": Convention(
        "transformer_engine", "encode", "fused", 0.0, False, "reciprocal_product", "code", 0, True,
        "float32",
        "S = f32(2688 / amax); s = e4m3(min(f32(a * f32(S * f32(1/6))), 448)); "
        "q = e2m1(f32(x * min(f32(1 / f32(s * f32(1 / S))), FLT_MAX))) by thresholds (NaN -> 0)",
        "tests/cross/test_nvfp4_transcribed.py (transcription of TransformerEngine's published "
        "quantization_ref_nvfp4.py; not installable here)"),
    "modelopt": Convention(
        "modelopt", "decode", "divide_product", 2.0**-9, True, "divide", "code", 7, True, "float32",
        "s = e4m3(clamp_min(f32(a / f32(6 g)) or 1.0 if zero, 2**-9)); q = e2m1(f32(x / f32(s g))) by "
        "searchsorted (NaN -> 6); code 8 dequantizes to +0",
        dequant_negative_zero=False,
        evidence="tests/cross/test_nvfp4_transcribed.py (transcription of ModelOpt's published "
                 "NVFP4QTensor; not installable here)"),
    "onnx": Convention(
        "onnx", "decode", "divide_product", 2.0**-9, True, "divide", "code", 8, True, "float32",
        "scales as modelopt (its ONNX export); q = QuantizeLinear(x, f32(s g), float4e2m1): "
        "f32(x / f32(s g)) rounded half to even, saturating; -0.0 -> +0, NaN -> code 8",
        "tests/cross/test_nvfp4_onnx.py (the element step against onnx.reference QuantizeLinear)"),
    "compressed_tensors": Convention(
        "compressed_tensors", "encode", "encode_product", 0.0, False, "divide_encode", "error", 0, True,
        "float32_encode",
        "S = f32(2688 / amax); s = e4m3(f32(S * d(f32(a / 6)))) with d x's dtype, saturating, a zero "
        "scale 0.125; q = e2m1(f32(x / f32(s / S))) (cast_to_fp4: sign(q) * rounded |q|), half to even, "
        "saturating, a quotient +-0 -> +0 (a negative value rounding to zero keeps -0); NaN: an error; "
        "dequantize f32(q * f32(s / S))",
        "tests/cross/test_nvfp4_compressed_tensors.py (compressed-tensors 0.20 calculate_qparams, "
        "quantize and dequantize with its global scale; bfloat16, float16, float32)",
        zero_scale_code=0x20),
}

_BS = {"exact": 0, "double": 1, "divide_product": 2, "fused": 3, "encode_product": 4}
_EL = {"exact": 0, "reciprocal": 1, "reciprocal_product": 2, "divide": 3, "divide_encode": 4}
_DQ = {"exact": 0, "float32": 1, "float32_encode": 2}
_NAN = {"error": 0, "code": 1, "torchao_bits": 2}


conventions = Registry("nvfp4", _ROWS.values(), row_type=Convention)
_convention = conventions.get
__getattr__ = table_getattr(globals(), conventions)  # the old CONVENTIONS dict, deprecated


def detect(convention) -> Convention:
    """The variant of an NVFP4 convention that the installed backend runs on this machine.

    ``torchao``: torchao's ``nvfp4_quantize`` is run on one block of float32 quiet NaNs
    (``0x7fc00000``); the NaN scale makes each element ``NaN * NaN``, whose kept NaN gives code 4
    (the multiplier's ``0x7ff00000``) or 3 (the input's). The leading run of 4s sets
    ``nan_multiplier_lanes``. Other rows come back unchanged. An ImportError without
    torch/torchao; a RuntimeError when the codes are not such a run.

    >>> import refquant as rq
    >>> rq.nvfp4.detect("exact") is rq.nvfp4.conventions.get("exact")
    True
    """
    conv = _convention(convention)
    if conv.nan != "torchao_bits":
        return conv
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchao.prototype.mx_formats.nvfp4_tensor import nvfp4_quantize

    x = torch.full((1, BLOCK), float("nan"), dtype=torch.float32)
    _, packed = nvfp4_quantize(x, block_size=BLOCK, per_tensor_scale=torch.tensor(0.01))
    p = packed.view(torch.uint8).numpy().reshape(-1)
    codes = np.stack([p & 15, p >> 4], axis=-1).reshape(-1).tolist()
    lanes = next((i for i, c in enumerate(codes) if c != 4), BLOCK)
    if codes != [4] * lanes + [3] * (BLOCK - lanes):
        raise RuntimeError(f"torchao gave codes {codes} for a block of NaNs; no nan_multiplier_lanes fits")
    return conv if lanes == conv.nan_multiplier_lanes else conv.replace(nan_multiplier_lanes=lanes)


@functools.cache
def _tables():
    """The e4m3fn and e2m1 decode tables and the float32 midpoints between e2m1 magnitudes."""
    from .floatformats import float4_e2m1fn, float8_e4m3fn

    e4m3 = float8_e4m3fn.decode_table()
    e2m1 = float4_e2m1fn.decode_table()
    mids = (e2m1[:7] + e2m1[1:8]) / 2
    return e4m3, e2m1, mids.astype(np.float32)


def _global_scales(conv: Convention, amax, global_scale, check=True):
    """(stored global scale, decode g, transformer_engine's decode and encode scales) as float32."""
    f32 = np.float32
    if global_scale is not None:
        gs = np.asarray(global_scale)
        if gs.size != 1 or gs.dtype.kind not in "fiu":
            raise TypeError(f"global_scale must be a real scalar; got {global_scale!r}")
        stored = f32(gs.reshape(()))
        if check and not (np.isfinite(stored) and stored > 0):
            raise ValueError(f"global_scale must be finite and > 0 (as a float32); got {float(stored)}")
    elif conv.global_storage == "encode":
        with np.errstate(divide="ignore", over="ignore"):
            stored = f32(f32(_E4M3_MAX_TIMES_E2M1_MAX) / amax) if amax == amax else amax
        stored = min(stored, f32(np.finfo(np.float32).max)) if stored == stored else stored
        if stored == 0:
            stored = f32(1.0)
    elif conv.block_scale == "exact":
        stored = f32_of_fraction(Fraction(float(amax)) / 2688) if amax > 0 else f32(1.0)
        stored = max(stored, f32(2.0**-149))
    else:
        stored = f32(f32(amax) / f32(_E4M3_MAX_TIMES_E2M1_MAX))
    if conv.global_storage == "encode":
        with np.errstate(divide="ignore"):
            dec = f32(f32(1.0) / stored)
        return stored, dec, dec, stored
    return stored, stored, f32(0.0), f32(0.0)


def _check_last_axis(shape, name="x"):
    if len(shape) == 0:
        raise ValueError(f"{name} needs a last axis that is a multiple of {BLOCK} (NVFP4 blocks); got a "
                         "0-d array")
    if shape[-1] % BLOCK:
        raise ValueError(f"{name} needs a last axis that is a multiple of {BLOCK} (NVFP4 blocks); got "
                         f"shape {tuple(shape)} (last axis {shape[-1]})")


def quantize(x, *, global_scale=None, convention="exact"):
    """NVFP4 codes of ``x``: ``(codes, scale_codes, global_scale)``.

    ``codes`` are e2m1 bit patterns (uint8, one per element, x's shape; ``rq.pack(codes, 4)``
    packs them low nibble first as torchao, ModelOpt and TransformerEngine store them);
    ``scale_codes`` are e4m3fn bit patterns (uint8, shape ``x.shape[:-1] + (x.shape[-1] // 16,)``);
    ``global_scale`` is the float32 global scale as the convention stores it (``amax / 2688``, or
    ``2688 / amax`` under transformer_engine). Give ``global_scale`` to use a calibrated one
    (in the same storage). The formulas per convention are in the module docstring.

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([0.25, -0.75, 1.25, 6.0] + [0.0] * 12)
    >>> q, s, g = rq.nvfp4.quantize(x, global_scale=1.0)
    >>> q.tolist()[:4], s.tolist()
    ([0, 10, 2, 7], [56])
    >>> rq.nvfp4.quantize(x, global_scale=1.0, convention="torchao")[0].tolist()[:4]
    [0, 10, 2, 7]
    """
    from ._kernels._nvfp4 import nvfp4_quantize

    conv = _convention(convention)
    x = float_array(x)
    _check_last_axis(x.shape)
    exact = conv.block_scale == "exact"
    if not exact and x.dtype == np.float64:
        raise TypeError(f"the {conv.name!r} convention takes float16, bfloat16 or float32 x; got float64")
    xk = np.ascontiguousarray(x, dtype=np.float64 if x.dtype == np.float64 else np.float32).reshape(-1)
    if exact and xk.size and not np.isfinite(xk).all():
        bad = xk[~np.isfinite(xk)][0]
        raise ValueError(f"x contains {float(bad)}; the 'exact' convention has no code for NaN or inf "
                         "(fake_quantize returns NaN for such blocks)")
    if conv.nan == "error" and not exact and np.isnan(xk).any():
        raise ValueError(f"x contains NaN; the {conv.name!r} convention has no code for it")
    amax = np.max(np.abs(xk)) if xk.size else np.float32(0.0)  # float64 for float64 x
    stored, g, g_dec, s_enc = _global_scales(conv, amax, global_scale)
    nb = xk.size // BLOCK
    codes = np.empty(xk.size, np.uint8)
    scales = np.empty(nb, np.uint8)
    if nb:
        e4m3, e2m1, mids32 = _tables()
        nvfp4_quantize(xk.size, xk, nb, float(g), float(g_dec), float(s_enc), _BS[conv.block_scale],
                       conv.scale_min, conv.zero_scale_to_one, int(conv.zero_scale_code), float_code(x.dtype),
                       _EL[conv.element], _NAN[conv.nan], conv.nan_code, int(conv.nan_multiplier_lanes),
                       conv.drop_negative_zero, e4m3, e2m1, mids32, codes, scales)
    return codes.reshape(x.shape), scales.reshape(x.shape[:-1] + (x.shape[-1] // BLOCK,)), stored


def dequantize(codes, scale_codes, global_scale, *, convention="exact", dtype=np.float32):
    """``e2m1(code) * e4m3(scale) * g`` in ``dtype`` (``g``: the decode scale of the stored
    ``global_scale``, ``f32(1 / S)`` under transformer_engine): rounded once under ``exact``,
    else ``f32(q * f32(s * g))`` and then ``dtype``.

    >>> import numpy as np, refquant as rq
    >>> rq.nvfp4.dequantize(np.uint8([[2, 15] + [0] * 14]), np.uint8([[56]]), 0.5).tolist()[0][:2]
    [0.5, -3.0]
    """
    from ._kernels._nvfp4 import nvfp4_dequantize

    conv = _convention(convention)
    q = integer_array(codes, "codes")
    s = integer_array(scale_codes, "scale_codes")
    _check_last_axis(q.shape, "codes")
    want = q.shape[:-1] + (q.shape[-1] // BLOCK,)
    if s.shape != want:
        raise ValueError(f"scale_codes must have shape {want} for codes of shape {q.shape}; got {s.shape}")
    for arr, name in ((q, "codes"), (s, "scale_codes")):
        top = 15 if name == "codes" else 255
        if arr.size and (arr.min() < 0 or arr.max() > top):
            bad = arr.ravel()[np.argmax((arr.ravel() < 0) | (arr.ravel() > top))]
            raise ValueError(f"{name} must be in [0, {top}]; got {int(bad)}")
    out_dt = np.dtype(dtype)
    if float_code(out_dt) is None:
        raise TypeError(f"dtype must be float16, bfloat16, float32 or float64; got {out_dt}")
    if global_scale is None:
        raise TypeError("global_scale is required (the third value quantize returned)")
    _, g, _, s_enc = _global_scales(conv, np.float32(0), global_scale, check=False)
    qk = np.ascontiguousarray(q, dtype=np.uint8).reshape(-1)
    sk = np.ascontiguousarray(s, dtype=np.uint8).reshape(-1)
    out = np.empty(qk.size, np.float64)
    if qk.size:
        e4m3, e2m1, _ = _tables()
        nvfp4_dequantize(qk.size, qk, sk, float(g), float(s_enc), _DQ[conv.dequant],
                         conv.dequant_negative_zero, e4m3, e2m1, float_code(out_dt), out)
    return out.astype(out_dt).reshape(q.shape)


def fake_quantize(x, *, global_scale=None, convention="exact"):
    """``dequantize(*quantize(x, ...))`` in x's dtype. Under ``exact``, a block holding NaN or
    +-inf comes back as NaN and the global scale is taken over the finite values.

    >>> import numpy as np, refquant as rq
    >>> rq.nvfp4.fake_quantize(np.float32([0.3, -1.1, 2.6, 6.0] + [0.0] * 12), global_scale=1.0)[:4].tolist()
    [0.5, -1.0, 3.0, 6.0]
    """
    conv = _convention(convention)
    xa = float_array(x)
    _check_last_axis(xa.shape)
    finite = np.isfinite(xa.astype(np.float64))
    if conv.block_scale != "exact" or finite.all():
        q, s, g = quantize(xa, global_scale=global_scale, convention=conv)
        return dequantize(q, s, g, convention=conv, dtype=xa.dtype)
    bad = ~finite.reshape(-1, BLOCK).all(axis=1)
    clean = np.where(finite, xa, np.zeros((), xa.dtype)).astype(xa.dtype)
    q, s, g = quantize(clean, global_scale=global_scale, convention=conv)
    out = dequantize(q, s, g, convention=conv, dtype=xa.dtype).reshape(-1, BLOCK)
    out[bad] = np.nan
    return out.reshape(xa.shape)
