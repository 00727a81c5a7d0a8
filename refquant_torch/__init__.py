"""refquant_torch: the torch adapter of refquant (differentiable ops, quantized tensors, modules).

The math comes from :mod:`refquant`; this package converts tensors, registers custom ops
(``torch.ops.refquant.*``) and autograd, and holds module state. ``prepare_qat(model, config)`` /
``convert(model)`` put quantizers into a model and take them out for inference. Submodules ``nn``,
``pt2e``, the QAT entry points and the tensor classes load on first access.
"""

from __future__ import annotations

from refquant.lazy import lazy_table as _lazy_table
from refquant.lazy import module_attributes as _module_attributes

from .functional import apot_fake_quantize, fake_quantize, pact
from .lowp import float_fake_quantize, mx_fake_quantize, nf4_fake_quantize, nvfp4_fake_quantize

__version__ = "0.1.0"

# loaded on first access: the tensor classes, the QAT entry points, and submodules themselves
_LAZY = _lazy_table("refquant_torch", {
    "tensor": ("QuantizedTensor", "DequantizedTensor", "Quantize", "QuantizeDequantize"),
    "qat": ("QATConfig", "prepare_qat", "convert"),
}, ["nn", "pt2e"])

__all__ = ["fake_quantize", "pact", "apot_fake_quantize", *_LAZY]
__all__ += ["float_fake_quantize", "mx_fake_quantize", "nvfp4_fake_quantize", "nf4_fake_quantize"]


__getattr__, __dir__ = _module_attributes(globals(), lazy=_LAZY)
