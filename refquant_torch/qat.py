"""Eager quantization-aware training in one call: ``prepare_qat(model, config)`` and
``convert(model)``.

``prepare_qat`` replaces every ``torch.nn.Linear`` and ``torch.nn.Conv2d`` of a model (exactly
those types; subclasses are left alone) by :class:`~refquant_torch.nn.QuantLinear` /
:class:`~refquant_torch.nn.QuantConv2d` sharing the same weight and bias Parameters, with the
quantizers that ``config`` builds. ``convert`` then replaces each of those by a reference
module (:mod:`refquant_torch.nn.reference`) holding the weight's learned qparams, with the
activation quantizers frozen around it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.ao.quantization import (
    FakeQuantizeBase,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
)

from .nn.fake_quantize import FakeQuantize, LearnableFakeQuantize
from .nn.layers import QuantConv2d, QuantLinear
from .nn.learnable import PACT, APoTFakeQuantize
from .nn.reference import Conv2d as RefConv2d
from .nn.reference import Linear as RefLinear

__all__ = ["QATConfig", "prepare_qat", "convert"]

Factory = Callable[[], torch.nn.Module]


def _weight_affine(bits: int, convention: str) -> Factory:
    return FakeQuantize.with_args(
        observer=MovingAveragePerChannelMinMaxObserver, quant_min=-(2 ** (bits - 1)),
        quant_max=2 ** (bits - 1) - 1, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
        convention=convention)


def _activation_affine(bits: int, convention: str, reduce_range: bool) -> Factory:
    # [0, 2**(bits-1) - 1] is what torch's observers make of reduce_range=True (which they
    # warn about as deprecated)
    return FakeQuantize.with_args(
        observer=MovingAverageMinMaxObserver, quant_min=0,
        quant_max=2 ** (bits - 1) - 1 if reduce_range else 2**bits - 1, convention=convention)


@dataclass(frozen=True)
class QATConfig:
    """Which quantizers :func:`prepare_qat` puts on each layer: ``weight`` on the weight,
    ``activation`` on the layer's output, ``input_activation`` on its input; each a
    zero-argument factory of a ``torch.nn.Module`` (``FakeQuantize.with_args(...)``, a lambda,
    a class), or None for none.

    The default is torch.ao's x86 QAT default with refquant's modules: weights int8
    ``[-128, 127]`` per output channel symmetric (moving-average per-channel min-max observer),
    outputs quint8 ``[0, 255]`` per-tensor affine with ``reduce_range=True`` (so ``[0, 127]``;
    moving-average min-max observer), both under the ``"torch.fake_quantize"`` convention.
    The class methods build the other methods' configs.

    >>> import refquant_torch as rqt
    >>> config = rqt.QATConfig.affine(bits=4, convention="exact")
    >>> q = config.weight(); (q.quant_min, q.quant_max, q.convention)
    (-8, 7, 'exact')
    """

    weight: Factory | None = _weight_affine(8, "torch.fake_quantize")
    activation: Factory | None = _activation_affine(8, "torch.fake_quantize", True)
    input_activation: Factory | None = None

    @classmethod
    def affine(cls, bits: int = 8, convention: str = "torch.fake_quantize",
               reduce_range: bool = False) -> QATConfig:
        """``bits``-bit weights (signed, per output channel symmetric) and outputs (unsigned
        per-tensor affine; ``reduce_range`` halves the range as torch's x86 default) under
        ``convention``, with torch.ao's moving-average min-max observers."""
        return cls(_weight_affine(bits, convention),
                   _activation_affine(bits, convention, reduce_range))

    @classmethod
    def lsq(cls, bits: int = 8, lsq_convention: str = "lsq", use_grad_scaling: bool = True,
            convention: str = "torch.fake_quantize") -> QATConfig:
        """LSQ (:class:`~refquant_torch.nn.LearnableFakeQuantize`, qparams learned from the
        first batch on: the observer sets them, then learning takes over after
        ``enable_param_learning()``): weights signed per-channel symmetric, outputs unsigned
        per-tensor affine.

        >>> import refquant_torch as rqt
        >>> q = rqt.QATConfig.lsq(bits=4).activation(); (q.quant_min, q.quant_max, q.use_grad_scaling)
        (0, 15, True)
        """
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

        def weight():
            return LearnableFakeQuantize(
                observer=MovingAveragePerChannelMinMaxObserver, quant_min=lo, quant_max=hi,
                dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0,
                use_grad_scaling=use_grad_scaling, convention=convention,
                lsq_convention=lsq_convention)

        def activation():
            return LearnableFakeQuantize(
                observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=2**bits - 1,
                use_grad_scaling=use_grad_scaling, convention=convention,
                lsq_convention=lsq_convention)

        return cls(weight, activation)

    @classmethod
    def pact(cls, bits: int = 4, alpha: float = 6.0, weight_bits: int | None = None) -> QATConfig:
        """PACT activations (unsigned, learnable clip ``alpha``) on outputs; weights int
        ``weight_bits`` (default ``bits``) per-channel symmetric under torch's arithmetic.

        >>> import refquant_torch as rqt
        >>> config = rqt.QATConfig.pact(bits=4, alpha=2.0)
        >>> config.activation(), config.weight().quant_max
        (PACT(bits=4, signed=False), 7)
        """
        return cls(_weight_affine(weight_bits or bits, "torch.fake_quantize"),
                   lambda: PACT(bits=bits, alpha=alpha))

    @classmethod
    def apot(cls, bits: int = 4, k: int = 2, weight_alpha: float = 1.0,
             activation_alpha: float = 6.0) -> QATConfig:
        """APoT on both: signed weights, unsigned outputs, learnable clipping levels.

        >>> import refquant_torch as rqt
        >>> rqt.QATConfig.apot(bits=4, k=2).weight()
        APoTFakeQuantize(bits=4, k=2, signed=True)
        """
        return cls(lambda: APoTFakeQuantize(bits=bits, k=k, alpha=weight_alpha, signed=True),
                   lambda: APoTFakeQuantize(bits=bits, k=k, alpha=activation_alpha,
                                            signed=False))


_SWAPS = {torch.nn.Linear: QuantLinear, torch.nn.Conv2d: QuantConv2d}


def _build(factory: Factory | None, device):
    if factory is None:
        return None
    return factory().to(device)


def prepare_qat(model: torch.nn.Module, config: QATConfig | None = None, *,
                filter_fn: Callable[[torch.nn.Module, str], bool] | None = None) -> torch.nn.Module:
    """Put quantizers into ``model`` in place and return it: every ``torch.nn.Linear`` /
    ``torch.nn.Conv2d`` (exact type; ``filter_fn(module, name)`` may exclude some) becomes a
    :class:`~refquant_torch.nn.QuantLinear` / :class:`~refquant_torch.nn.QuantConv2d` sharing
    its Parameters, with ``config.weight()``, ``config.input_activation()`` and
    ``config.activation()`` (``config=None``: :class:`QATConfig`'s default, torch.ao's x86 QAT
    default). A model that is itself a Linear or Conv2d is returned swapped.

    >>> import torch, refquant_torch as rqt
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> model = rqt.prepare_qat(model)
    >>> [type(m).__name__ for m in model]
    ['QuantLinear', 'ReLU', 'QuantLinear']
    >>> model(torch.randn(5, 4)).shape
    torch.Size([5, 2])
    """
    config = QATConfig() if config is None else config
    if not isinstance(config, QATConfig):
        raise TypeError(f"config must be an rqt.QATConfig or None; got {config!r}")

    def swap(module, name):
        new_cls = _SWAPS.get(type(module))
        if new_cls is None or (filter_fn is not None and not filter_fn(module, name)):
            return None
        device = module.weight.device
        return new_cls.from_float(module, _build(config.weight, device),
                                  _build(config.input_activation, device),
                                  _build(config.activation, device))

    return _replace(model, swap)


def _replace(model, fn, prefix=""):
    new = fn(model, prefix)
    if new is not None:
        return new
    for name, child in model.named_children():
        replaced = _replace(child, fn, f"{prefix}.{name}" if prefix else name)
        if replaced is not child:
            setattr(model, name, replaced)
    return model


_FULL_RANGE = {torch.quint8: (0, 255), torch.qint8: (-128, 127), torch.qint32: (-(2**31), 2**31 - 1)}
_REFERENCE = {QuantLinear: RefLinear, QuantConv2d: RefConv2d}


def _freeze(quantizer):
    """A quantizer with its statistics and qparams fixed (observers and learning off)."""
    if quantizer is None:
        return None
    if isinstance(quantizer, LearnableFakeQuantize):
        quantizer.toggle_observer_update(False).toggle_qparam_learning(False)
    elif hasattr(quantizer, "disable_observer"):
        quantizer.disable_observer()
    for p in quantizer.parameters():
        p.requires_grad_(False)
    return quantizer.eval()


def _weight_qparams(quantizer) -> dict:
    """torch.ao's ``weight_qparams`` of an affine fake quant (``get_qparam_dict``); a range
    narrower than the dtype's becomes ``is_decomposed`` with ``quant_min`` / ``quant_max``."""
    from torch.ao.quantization.utils import get_qparam_dict

    qparams = get_qparam_dict(quantizer)
    if _FULL_RANGE.get(qparams["dtype"]) != (qparams.get("quant_min"), qparams.get("quant_max")):
        qparams["is_decomposed"] = True
    return qparams


def _float_layer(layer):
    """A ``torch.nn.Linear`` / ``Conv2d`` with ``layer``'s configuration and Parameters."""
    if isinstance(layer, QuantLinear):
        out = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                              device="meta")
    else:
        out = torch.nn.Conv2d(**QuantConv2d._float_kwargs(layer), bias=layer.bias is not None,
                              device="meta")
    out.weight, out.bias = layer.weight, layer.bias
    return out


def _to_reference(layer):
    weight_quant = layer.weight_quant
    inner = _float_layer(layer)
    if isinstance(weight_quant, (FakeQuantize, LearnableFakeQuantize)):
        inner = _REFERENCE[type(layer)].from_float(inner, _weight_qparams(weight_quant))
    elif weight_quant is not None:  # PACT, APoT: the weight's quantized values in a float layer
        with torch.no_grad():
            inner.weight = torch.nn.Parameter(_freeze(weight_quant)(layer.weight).detach())
    parts = [_freeze(layer.input_quant), inner.eval(), _freeze(layer.output_quant)]
    parts = [p for p in parts if p is not None]
    return inner if len(parts) == 1 else torch.nn.Sequential(*parts)


def _affine_quantizer(quantizer, role: str, layer):
    if not isinstance(quantizer, FakeQuantizeBase):
        raise ValueError(f"convert(to='quantized') needs an affine fake quant (FakeQuantize, "
                         f"LearnableFakeQuantize, torch.ao's) as the {role} quantizer of "
                         f"{type(layer).__name__}; "
                         f"got {type(quantizer).__name__ if quantizer is not None else None}")
    return quantizer


def _quantized_weight(weight: torch.Tensor, quantizer) -> torch.Tensor:
    """``weight`` as a qint8 tensor in the quantizer's range with its ``calculate_qparams()``:
    codes ``rq.quantize(weight, scale, zero_point, qmin, qmax, axis, convention="torch.quantize")``
    (torch's ``quantize_per_tensor`` / ``quantize_per_channel``, float64 scales)."""
    import numpy as np

    import refquant as rq

    from ._bridge import make_quantized, to_numpy

    if quantizer.dtype != torch.qint8:
        raise ValueError(f"convert(to='quantized') needs qint8 weights; got {quantizer.dtype}")
    scale, zero_point = quantizer.calculate_qparams()
    w = to_numpy(weight.detach().float())
    kw = {"qmin": int(quantizer.quant_min), "qmax": int(quantizer.quant_max),
          "convention": "torch.quantize"}
    if quantizer.qscheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        s, z = float(scale), int(zero_point)
        codes = rq.quantize(w, s, z, **kw).astype(np.int8)
        return make_quantized(torch.from_numpy(codes), s, z)
    if quantizer.qscheme not in (torch.per_channel_affine, torch.per_channel_symmetric):
        raise ValueError(f"convert(to='quantized') takes affine weight qschemes; got "
                         f"{quantizer.qscheme}")
    axis = int(quantizer.ch_axis)
    s = scale.detach().to(torch.float64).reshape(-1)
    z = zero_point.detach().to(torch.int64).reshape(-1)
    codes = rq.quantize(w, to_numpy(s), to_numpy(z), axis=axis, **kw).astype(np.int8)
    return make_quantized(torch.from_numpy(codes), s, z, axis)


def _to_quantized(layer):
    """torch.ao.nn.quantized's module for ``layer``, as torch.ao's ``convert`` builds it from a QAT
    module: the weight quantizer sees the weight once more, the weight is quantized with its
    qparams, the output scale and zero point are the output quantizer's; an input quantizer
    becomes a ``Quantize`` module in front."""
    with warnings.catch_warnings():  # torch deprecates building quantized tensors; these are ones
        warnings.filterwarnings("ignore", message=".*deprecated", category=UserWarning)
        return _build_quantized(layer)


def _build_quantized(layer):
    import torch.ao.nn.quantized as nnq

    weight_quant = _affine_quantizer(layer.weight_quant, "weight", layer)
    output_quant = _affine_quantizer(layer.output_quant, "output", layer)
    with torch.no_grad():
        weight_quant(layer.weight)
    qweight = _quantized_weight(layer.weight, weight_quant)
    bias = None if layer.bias is None else layer.bias.detach()
    if isinstance(layer, QuantLinear):
        out = nnq.Linear(layer.in_features, layer.out_features, dtype=torch.qint8)
    else:
        kw = QuantConv2d._float_kwargs(layer)
        out = nnq.Conv2d(**kw, bias=bias is not None)
    out.set_weight_bias(qweight, bias)
    scale, zero_point = output_quant.calculate_qparams()
    out.scale, out.zero_point = float(scale), int(zero_point)
    if layer.input_quant is None:
        return out
    input_quant = _affine_quantizer(layer.input_quant, "input", layer)
    scale, zero_point = input_quant.calculate_qparams()
    return torch.nn.Sequential(nnq.Quantize(float(scale), int(zero_point), input_quant.dtype), out)


def convert(model: torch.nn.Module, *, to: str = "reference") -> torch.nn.Module:
    """Replace, in place, every QuantLinear / QuantConv2d of ``model`` by its inference form
    and return the model (in eval mode).

    ``to="quantized"``: torch.ao.nn.quantized's ``Linear`` / ``Conv2d`` (quint8 in, quint8 out,
    int8 weights), equal to what torch.ao's ``convert`` makes of the same QAT model: the weight
    quantizer sees the weight once more (its observer updates, as in torch.ao), the weight's
    codes are ``rq.quantize`` under ``"torch.quantize"`` with its ``calculate_qparams()``, and
    the output quantizer's qparams become the module's ``scale`` / ``zero_point``; an input
    quantizer becomes a ``torch.ao.nn.quantized.Quantize`` in front. The weight, input and output
    quantizers must be affine (:class:`~refquant_torch.nn.FakeQuantize` or
    :class:`~refquant_torch.nn.LearnableFakeQuantize`, qint8 weights). As with torch.ao, a
    layer without an input quantizer takes quantized tensors
    (``torch.ao.quantization.QuantStub`` / ``DeQuantStub`` or ``torch.quantize_per_tensor``
    around the model).

    ``to="reference"`` (the default):

    * an affine weight quantizer (FakeQuantize, LearnableFakeQuantize) becomes a reference
      module (``rqt.nn.reference.Linear`` / ``Conv2d``) with its ``calculate_qparams()`` as
      torch.ao's convert does (``get_qparam_dict``; a range narrower than the dtype's gives
      ``is_decomposed`` with ``quant_min`` / ``quant_max``);
    * any other weight quantizer (PACT, APoT) is applied once and the layer keeps the
      quantized weight as a float ``Linear`` / ``Conv2d``;
    * input and output quantizers stay, frozen (observers and learning off), in a
      ``torch.nn.Sequential(input_quant, layer, output_quant)``.

    >>> import torch, refquant_torch as rqt
    >>> model = rqt.prepare_qat(torch.nn.Sequential(torch.nn.Linear(4, 3)))
    >>> _ = model(torch.randn(8, 4))
    >>> model = rqt.convert(model)
    >>> [type(m).__name__ for m in model[0]]
    ['Linear', 'FakeQuantize']
    >>> type(model[0][0]).__module__
    'refquant_torch.nn.reference'
    >>> model = rqt.prepare_qat(torch.nn.Sequential(torch.nn.Linear(4, 3)))
    >>> _ = model(torch.randn(8, 4))
    >>> qmodel = rqt.convert(model, to="quantized")
    >>> type(qmodel[0]).__name__, qmodel[0].weight().dtype
    ('Linear', torch.qint8)
    >>> qmodel(torch.quantize_per_tensor(torch.randn(2, 4), 0.05, 64, torch.quint8)).dtype
    torch.quint8
    """
    builders = {"reference": _to_reference, "quantized": _to_quantized}
    if to not in builders:
        raise ValueError(f"to must be 'reference' or 'quantized'; got {to!r}")

    def swap(module, name):
        return builders[to](module) if type(module) in _REFERENCE else None

    return _replace(model, swap).eval()
