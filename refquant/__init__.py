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
from .lazy import lazy_table as _lazy_table
from .lazy import module_attributes as _module_attributes
from .rounding import ROUNDING_MODES

__version__ = "0.1.0"

# loaded on first access: functions and classes of submodules, and submodules themselves
_LAZY = _lazy_table("refquant", {
    "affine": ("quantize", "dequantize", "fake_quantize"),
    "conventions": ("Convention",),
    "qparams": ("choose_qparams",),
    "golden.identify": ("identify",),
    "floatquant": ("encode", "decode"),
    "packing": ("pack", "unpack"),
}, ["conventions", "apot", "pact", "lsq", "nf4", "nvfp4", "ste", "observers", "testing", "golden",
    "checkpoint", "ops", "aimet", "interop", "float_conventions", "mx"])

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
