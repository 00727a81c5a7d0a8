"""refquant: reference numerics for quantization.

The affine (uniform) quantizer with named backend conventions, APoT, PACT and LSQ with their
gradients, observers and qparam rules, golden vectors and mismatch diagnosis. NumPy and Numba
only: ``import refquant`` never imports torch, and Numba itself loads on the first kernel call.

>>> import numpy as np, refquant as rq
>>> rq.quantize(np.float32([0.125, 0.375, -1.0]), 0.25, 0, fmt=rq.int8).tolist()
[0, 2, -4]
"""

from __future__ import annotations

from .floatformats import (
    FloatFormat,
    float4_e2m1fn,
    float6_e2m3fn,
    float6_e3m2fn,
    float8_e4m3fn,
    float8_e4m3fnuz,
    float8_e5m2,
    float8_e5m2fnuz,
    float8_e8m0fnu,
)
from .formats import (
    IntFormat,
    int2,
    int4,
    int8,
    int16,
    int32,
    integer_dtype_for,
    uint2,
    uint4,
    uint8,
    uint16,
)
from .lazy import module_attributes as _module_attributes
from .rounding import ROUNDING_MODES

__version__ = "0.1.0"

# name -> (module, attribute or None for the module itself); loaded on first access
_LAZY = {
    "quantize": ("refquant.affine", "quantize"),
    "dequantize": ("refquant.affine", "dequantize"),
    "fake_quantize": ("refquant.affine", "fake_quantize"),
    "conventions": ("refquant.conventions", None),
    "Convention": ("refquant.conventions", "Convention"),
    "choose_qparams": ("refquant.qparams", "choose_qparams"),
    "apot": ("refquant.apot", None),
    "pact": ("refquant.pact", None),
    "lsq": ("refquant.lsq", None),
    "nf4": ("refquant.nf4", None),
    "nvfp4": ("refquant.nvfp4", None),
    "ste": ("refquant.ste", None),
    "observers": ("refquant.observers", None),
    "testing": ("refquant.testing", None),
    "golden": ("refquant.golden", None),
    "checkpoint": ("refquant.checkpoint", None),
    "identify": ("refquant.golden.identify", "identify"),
    "ops": ("refquant.ops", None),
    "aimet": ("refquant.aimet", None),
    "interop": ("refquant.interop", None),
    "encode": ("refquant.floatquant", "encode"),
    "decode": ("refquant.floatquant", "decode"),
    "float_conventions": ("refquant.float_conventions", None),
    "mx": ("refquant.mx", None),
    "pack": ("refquant.packing", "pack"),
    "unpack": ("refquant.packing", "unpack"),
}

__all__ = [
    "IntFormat",
    "int2",
    "int4",
    "int8",
    "int16",
    "int32",
    "uint2",
    "uint4",
    "uint8",
    "uint16",
    "integer_dtype_for",
    "FloatFormat",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float6_e2m3fn",
    "float6_e3m2fn",
    "float4_e2m1fn",
    "ROUNDING_MODES",
    *_LAZY,
]


__getattr__, __dir__ = _module_attributes(globals(), lazy=_LAZY)
