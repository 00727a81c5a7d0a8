"""torch modules backed by refquant: fake quantizers (affine, LSQ, PACT, APoT), TorchApprox-style
quantizers, layers with built-in quantizers (``QuantLinear``, ``QuantConv2d``) and reference
quantized Linear/Conv2d (``rqt.nn.reference``)."""

from . import quantized, reference
from .approx import MinMaxQuant, PACTQuant
from .fake_quantize import FakeQuantize, LearnableFakeQuantize
from .layers import QuantConv2d, QuantLinear
from .learnable import PACT, APoTFakeQuantize
from .lowp import FloatFakeQuantize, MXFakeQuantize, NF4FakeQuantize, NVFP4FakeQuantize

__all__ = [
    "FakeQuantize",
    "LearnableFakeQuantize",
    "PACT",
    "APoTFakeQuantize",
    "MinMaxQuant",
    "PACTQuant",
    "QuantLinear",
    "QuantConv2d",
    "reference",
    "quantized",
]
__all__ += ["FloatFakeQuantize", "MXFakeQuantize", "NVFP4FakeQuantize", "NF4FakeQuantize"]
