"""torch modules backed by refquant: fake quantizers (affine, LSQ, PACT, APoT), TorchApprox-style
quantizers, and reference quantized Linear/Conv2d (``rqt.nn.reference``)."""

from . import reference
from .approx import MinMaxQuant, PACTQuant
from .fake_quantize import FakeQuantize, LearnableFakeQuantize
from .learnable import PACT, APoTFakeQuantize
from .lowp import FloatFakeQuantize, MXFakeQuantize, NF4FakeQuantize, NVFP4FakeQuantize

__all__ = [
    "FakeQuantize",
    "LearnableFakeQuantize",
    "PACT",
    "APoTFakeQuantize",
    "MinMaxQuant",
    "PACTQuant",
    "reference",
]
__all__ += ["FloatFakeQuantize", "MXFakeQuantize", "NVFP4FakeQuantize", "NF4FakeQuantize"]
