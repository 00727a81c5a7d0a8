"""``RefQuantizer``: a torchao PT2E ``Quantizer`` that puts refquant fake quants on linear and conv.

``RefQuantizer(bits=8, symmetric=False, per_channel=False, convention="torch.fake_quantize",
is_qat=False)`` annotates every ``aten.linear`` / ``aten.conv2d`` node of an exported graph:

* input and output activations: ``bits``-bit codes, unsigned ``[0, 2**bits - 1]`` affine (or
  signed symmetric when ``symmetric``), a moving-average min-max observer (QAT) or a min-max
  observer (PTQ), both :mod:`refquant_torch.observers` (statistics and qparams by
  ``rq.observers`` / ``rq.choose_qparams``);
* the weight: signed ``[-(2**(bits-1)) + 1, 2**(bits-1) - 1]`` symmetric, per-tensor or per output
  channel (``per_channel``).

With ``is_qat=True`` each observer sits in :class:`refquant_torch.nn.FakeQuantize` (fake quant under
``convention``), for ``prepare_qat_pt2e``; with ``is_qat=False`` the observers stand alone
(``prepare_pt2e``). ``convert_pt2e`` then lowers the qparams to ``quantized_decomposed`` quantize /
dequantize ops, whose arithmetic refquant names ``"torch.decomposed"``.
"""

from __future__ import annotations

import torch

from ._torchao import quiet_import
from .nn.fake_quantize import FakeQuantize
from .observers import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)

_quantizer = quiet_import("torchao.quantization.pt2e.quantizer")
QuantizationAnnotation = _quantizer.QuantizationAnnotation
QuantizationSpec = _quantizer.QuantizationSpec
Quantizer = _quantizer.Quantizer

__all__ = ["RefQuantizer"]

_TARGETS = (torch.ops.aten.linear.default, torch.ops.aten.conv2d.default)


def _fake_quant_class(observer, convention):
    per_channel = "PerChannel" in observer.__name__
    name = "RefPerChannelFakeQuantize" if per_channel else "RefFakeQuantize"

    def __init__(self, **kwargs):
        FakeQuantize.__init__(self, observer=observer, convention=convention, **kwargs)

    return type(name, (FakeQuantize,), {"__init__": __init__, "__module__": __name__})


class RefQuantizer(Quantizer):
    """A PT2E quantizer for linear and conv2d with refquant fake quants (see the module doc).

    ``bits`` must be in 2..8 (else ValueError). ``activation_spec()`` and ``weight_spec()`` are the
    ``QuantizationSpec`` s that :meth:`annotate` puts on every ``aten.linear`` / ``aten.conv2d``
    node; pass the quantizer to torchao's ``prepare_pt2e`` (``is_qat=False``) or
    ``prepare_qat_pt2e`` (``is_qat=True``).

    >>> from refquant_torch.pt2e import RefQuantizer
    >>> quantizer = RefQuantizer(bits=4, symmetric=True, per_channel=True)
    >>> act = quantizer.activation_spec()
    >>> act.dtype, act.quant_min, act.quant_max, act.qscheme
    (torch.int8, -8, 7, torch.per_tensor_symmetric)
    >>> weight = quantizer.weight_spec()
    >>> weight.quant_min, weight.quant_max, weight.qscheme, weight.ch_axis
    (-7, 7, torch.per_channel_symmetric, 0)
    >>> weight.observer_or_fake_quant_ctr.__name__
    'PerChannelMinMaxObserver'
    >>> RefQuantizer(is_qat=True).weight_spec().observer_or_fake_quant_ctr.__name__
    'RefFakeQuantize'
    """

    def __init__(self, bits: int = 8, symmetric: bool = False, per_channel: bool = False,
                 convention: str = "torch.fake_quantize", is_qat: bool = False):
        super().__init__()
        if not 2 <= int(bits) <= 8:
            raise ValueError(f"bits must be in 2..8 (8-bit torch dtypes hold the codes); got {bits}")
        self.bits, self.symmetric, self.per_channel = int(bits), bool(symmetric), bool(per_channel)
        self.convention, self.is_qat = convention, bool(is_qat)

    def _ctr(self, observer, **kwargs):
        # torchao calls the constructor with the spec's dtype/range/qscheme (and ch_axis only
        # when the class name says "PerChannel"), so it must be a class, not a partial
        if not self.is_qat:
            return observer
        return _fake_quant_class(observer, self.convention)

    def activation_spec(self) -> QuantizationSpec:
        """The spec of linear/conv inputs and outputs, per tensor: ``symmetric``: int8 codes
        ``[-2**(bits-1), 2**(bits-1) - 1]``, ``per_tensor_symmetric``; else uint8 codes ``[0,
        2**bits - 1]``, ``per_tensor_affine``. Observer ``MinMaxObserver`` (PTQ) or
        ``MovingAverageMinMaxObserver`` (QAT, inside a refquant ``FakeQuantize`` under
        ``convention``), from :mod:`refquant_torch.observers`."""
        b = self.bits
        if self.symmetric:
            dtype, qmin, qmax, qscheme = torch.int8, -(2 ** (b - 1)), 2 ** (b - 1) - 1, \
                torch.per_tensor_symmetric
        else:
            dtype, qmin, qmax, qscheme = torch.uint8, 0, 2**b - 1, torch.per_tensor_affine
        obs = MovingAverageMinMaxObserver if self.is_qat else MinMaxObserver
        return QuantizationSpec(
            dtype=dtype, quant_min=qmin, quant_max=qmax, qscheme=qscheme,
            observer_or_fake_quant_ctr=self._ctr(obs, dtype=dtype, quant_min=qmin,
                                                 quant_max=qmax, qscheme=qscheme),
        )

    def weight_spec(self) -> QuantizationSpec:
        """The spec of linear/conv weights: int8 codes ``[-(2**(bits-1)) + 1, 2**(bits-1) - 1]``,
        symmetric, per tensor or (``per_channel``) per output channel (``ch_axis=0``). Observer
        ``MinMaxObserver`` / ``PerChannelMinMaxObserver`` (PTQ) or their moving-average forms
        (QAT, inside a refquant ``FakeQuantize`` under ``convention``)."""
        b = self.bits
        qmin, qmax = -(2 ** (b - 1)) + 1, 2 ** (b - 1) - 1
        if self.per_channel:
            qscheme, ch_axis = torch.per_channel_symmetric, 0
            obs = MovingAveragePerChannelMinMaxObserver if self.is_qat else PerChannelMinMaxObserver
            extra = {"ch_axis": 0}
        else:
            qscheme, ch_axis, extra = torch.per_tensor_symmetric, None, {}
            obs = MovingAverageMinMaxObserver if self.is_qat else MinMaxObserver
        return QuantizationSpec(
            dtype=torch.int8, quant_min=qmin, quant_max=qmax, qscheme=qscheme, ch_axis=ch_axis,
            observer_or_fake_quant_ctr=self._ctr(obs, dtype=torch.int8, quant_min=qmin,
                                                 quant_max=qmax, qscheme=qscheme, **extra),
        )

    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        """Mark every ``aten.linear.default`` / ``aten.conv2d.default`` node of ``model`` not yet
        annotated: its input (``args[0]``) and its output get :meth:`activation_spec`, its weight
        (``args[1]``) :meth:`weight_spec`; the bias is left in float. Writes the annotations into
        the nodes' ``meta`` in place and returns ``model``."""
        act, weight = self.activation_spec(), self.weight_spec()
        for node in model.graph.nodes:
            if node.op != "call_function" or node.target not in _TARGETS:
                continue
            if "quantization_annotation" in node.meta:
                continue
            x_node, w_node = node.args[0], node.args[1]
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={x_node: act, w_node: weight},
                output_qspec=act,
                _annotated=True,
            )
        return model

    def validate(self, model: torch.fx.GraphModule) -> None:
        """torchao's post-annotation check; this quantizer accepts every annotated graph (no-op)."""
        pass
