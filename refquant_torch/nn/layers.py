"""``QuantLinear`` and ``QuantConv2d``: ``torch.nn.Linear`` / ``Conv2d`` with built-in quantizers.

Each layer holds up to three quantizer modules (any ``torch.nn.Module`` mapping a tensor to a
tensor of the same shape: :class:`~refquant_torch.nn.FakeQuantize`,
:class:`~refquant_torch.nn.LearnableFakeQuantize`, :class:`~refquant_torch.nn.PACT`,
:class:`~refquant_torch.nn.APoTFakeQuantize`, torch.ao's fake quants, ...)::

    y = output_quant(op(input_quant(x), weight_quant(weight), bias))

where ``op`` is ``F.linear`` or the layer's convolution; a quantizer that is ``None`` is the
identity. The weight and bias are ordinary parameters; the quantizers' state lives in their own
submodules (``weight_quant``, ``input_quant``, ``output_quant``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["QuantLinear", "QuantConv2d"]


def _default_weight_quant():
    from ..qat import QATConfig

    return QATConfig().weight()


class _QuantLayer:
    """Quantizer slots shared by the layers; each layer names its op (``_op``) and the constructor
    arguments ``from_float`` copies from the float module (``_FLOAT_ARGS``: all but ``bias``,
    ``device``, ``dtype``)."""

    def _init_quantizers(self, weight_quant, input_quant, output_quant):
        if weight_quant == "default":
            weight_quant = _default_weight_quant()
        for name, q in (("weight_quant", weight_quant), ("input_quant", input_quant),
                        ("output_quant", output_quant)):
            if q is not None and not isinstance(q, torch.nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module or None; got {q!r}")
            setattr(self, name, q)
        if weight_quant is not None:
            weight_quant.to(self.weight.device)
        if getattr(weight_quant, "is_per_channel", False) and hasattr(weight_quant, "size_channels"):
            weight_quant.size_channels(self.weight.shape[weight_quant.ch_axis])  # compiles at once

    def forward(self, x):
        """``output_quant(op(input_quant(x), weight_quant(weight), bias))``, ``op`` the layer's
        own (a ``None`` quantizer is the identity)."""
        if self.input_quant is not None:
            x = self.input_quant(x)
        w = self.weight if self.weight_quant is None else self.weight_quant(self.weight)
        y = self._op(x, w)
        return y if self.output_quant is None else self.output_quant(y)

    @classmethod
    def _float_kwargs(cls, module) -> dict:
        """The constructor arguments of ``module`` that a layer of this class copies."""
        return {k: getattr(module, k) for k in cls._FLOAT_ARGS}

    @classmethod
    def from_float(cls, module, weight_quant=None, input_quant=None, output_quant=None):
        """A layer of this class sharing ``module``'s weight and bias Parameters (a
        ``torch.nn.Linear`` for QuantLinear, a ``torch.nn.Conv2d`` for QuantConv2d, its
        constructor arguments copied), with these quantizers.

        >>> import torch, refquant_torch as rqt
        >>> linear = torch.nn.Linear(3, 2)
        >>> layer = rqt.nn.QuantLinear.from_float(linear, output_quant=rqt.nn.PACT(bits=4))
        >>> layer.weight is linear.weight, layer.weight_quant is None
        (True, True)
        >>> conv = torch.nn.Conv2d(1, 2, 3, stride=2)
        >>> layer = rqt.nn.QuantConv2d.from_float(conv, weight_quant=rqt.nn.PACT(bits=4, signed=True))
        >>> layer.stride, layer.bias is conv.bias
        ((2, 2), True)
        """
        layer = cls(**cls._float_kwargs(module), bias=module.bias is not None, weight_quant=None,
                    device=module.weight.device, dtype=module.weight.dtype)
        layer.weight = module.weight           # the same Parameter objects, as torch.ao's QAT
        layer.bias = module.bias
        layer._init_quantizers(weight_quant, input_quant, output_quant)
        layer.train(module.training)
        return layer


class QuantLinear(_QuantLayer, torch.nn.Linear):
    """``torch.nn.Linear`` with quantizers: ``output_quant(F.linear(input_quant(x),
    weight_quant(weight), bias))`` (a ``None`` quantizer is the identity).

    ``QuantLinear(in_features, out_features, bias=True, *, weight_quant="default",
    input_quant=None, output_quant=None, device=None, dtype=None)``; ``"default"`` is
    ``rqt.QATConfig().weight()``: int8 per-channel symmetric weights under torch's fake quant
    arithmetic (torch.ao's x86 QAT default).

    >>> import torch, refquant_torch as rqt
    >>> layer = rqt.nn.QuantLinear(2, 1, bias=False, weight_quant=rqt.nn.PACT(bits=2, alpha=1.0,
    ...                                                                       signed=True))
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(torch.tensor([[0.3, -2.0]]))
    >>> layer(torch.tensor([[1.0, 1.0]])).tolist()
    [[-1.0]]
    """

    _FLOAT_ARGS = ("in_features", "out_features")

    def __init__(self, in_features, out_features, bias=True, *, weight_quant="default",
                 input_quant=None, output_quant=None, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_quantizers(weight_quant, input_quant, output_quant)

    def _op(self, x, w):
        return F.linear(x, w, self.bias)


class QuantConv2d(_QuantLayer, torch.nn.Conv2d):
    """``torch.nn.Conv2d`` with quantizers: ``output_quant(conv2d(input_quant(x),
    weight_quant(weight), bias))`` with the layer's stride, padding, dilation, groups and
    padding mode; constructor as ``torch.nn.Conv2d`` plus the keywords of :class:`QuantLinear`.

    >>> import torch, refquant_torch as rqt
    >>> conv = rqt.nn.QuantConv2d(1, 1, 1, bias=False,
    ...                           output_quant=rqt.nn.PACT(bits=2, alpha=3.0))
    >>> with torch.no_grad():
    ...     _ = conv.weight.fill_(0.5)
    >>> conv.weight_quant.eval()(conv.weight).item()   # the default int8 per-channel weight
    0.5
    >>> conv(torch.tensor([[[[1.0, 2.6]]]])).tolist()
    [[[[0.0, 1.0]]]]
    """

    _FLOAT_ARGS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                   "groups", "padding_mode")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", *, weight_quant="default",
                 input_quant=None, output_quant=None, device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, padding_mode, device=device, dtype=dtype)
        self._init_quantizers(weight_quant, input_quant, output_quant)

    def _op(self, x, w):
        return self._conv_forward(x, w, self.bias)
