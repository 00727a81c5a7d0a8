"""Integer operators: exact integer accumulation and each backend's requantization.

``matmul_integer`` and ``conv_integer`` (ONNX MatMulInteger / ConvInteger) compute the exact sums
of products of zero-point-shifted codes; ``requantize`` turns accumulators into output codes under
a named convention (the registry ``conventions``: exact, fbgemm, onnx, onnxruntime, xnnpack,
gemmlowp, tflite, tflite.single_rounding); ``linear``/``conv2d`` (torch's argument order) and
``qlinear_matmul``/``qlinear_conv`` (ONNX's) are whole operators. ``quantize_multiplier`` is TFLite's
fixed-point decomposition of a real multiplier. The old ``CONVENTIONS`` dict is deprecated.

>>> import numpy as np, refquant as rq
>>> acc = rq.ops.matmul_integer(np.uint8([[200, 100]]), np.int8([[1], [2]]), 128)
>>> acc.tolist(), rq.ops.requantize(acc, 0.25, 0, qmin=-128, qmax=127).tolist()
([[16]], [[4]])
>>> rq.ops.conventions.names()[:3]
['exact', 'fbgemm', 'onnx']
"""

from .._registry import table_getattr
from ._accumulate import matmul_integer
from ._conv import conv_integer
from ._fixed_point import quantize_multiplier
from ._operators import conv2d, linear, qlinear_conv, qlinear_matmul
from ._requantize import Requantization, conventions, requantize

# golden cases and identification live with the golden tooling
_GOLDEN = ("requantize_cases", "linear_cases", "identify_requantization", "RequantizationMatch")

__all__ = [
    "matmul_integer",
    "conv_integer",
    "requantize",
    "quantize_multiplier",
    "linear",
    "conv2d",
    "qlinear_matmul",
    "qlinear_conv",
    "conventions",
    "Requantization",
    *_GOLDEN,
]

__getattr__ = table_getattr(globals(), conventions,  # the old CONVENTIONS dict, deprecated
                            lazy={name: ("refquant.golden._ops", name) for name in _GOLDEN})
