"""Quantized ``Linear`` and ``Conv2d`` computing what torch's FBGEMM kernels compute, from refquant.

``Linear`` / ``Conv2d`` hold int8 weight codes (per tensor or per output channel), an optional
float bias and the output scale and zero point, like ``torch.ao.nn.quantized.Linear`` /
``Conv2d``; ``forward`` takes a quint8 tensor and returns a quint8 tensor whose codes are
``rq.ops.linear`` / ``rq.ops.conv2d`` under a convention (``"fbgemm"`` by default: bit for bit
torch's ``quantized.linear`` / ``quantized.conv2d`` on FBGEMM, tests/torch/test_quantized.py).
This module only converts tensors; the arithmetic is the core's.

torch's ``x86`` engine runs FBGEMM for every linear layer; for a convolution with symmetric
weights on a CPU with AVX512-VNNI it runs oneDNN instead, whose requantization is not modelled
(``torch.backends.quantized.engine = "fbgemm"`` gives FBGEMM there too). FBGEMM's depthwise
kernels add u8 x i8 products in pairs saturated to int16, and the ``fbgemm`` row does too; its
GEMMs do the same on CPUs without AVX512-VNNI, which is not reproduced (refquant sums exactly).
"""

from __future__ import annotations

import numpy as np
import torch

import refquant as rq

from .._bridge import make_quantized

__all__ = ["Linear", "Conv2d"]


def _weight_qparams(w: torch.Tensor):
    """(codes ndarray, scale, zero_point, axis) of a torch quantized weight."""
    codes = w.int_repr().numpy()
    if w.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return codes, float(w.q_scale()), int(w.q_zero_point()), None
    if w.q_per_channel_axis() != 0:
        raise ValueError(f"per-channel weights must be quantized along axis 0; "
                         f"got {w.q_per_channel_axis()}")
    return (codes, w.q_per_channel_scales().numpy().astype(np.float64),
            w.q_per_channel_zero_points().numpy().astype(np.int64), 0)


class _Quantized(torch.nn.Module):
    def __init__(self, weight: torch.Tensor, bias, scale: float, zero_point: int, relu: bool,
                 convention: str):
        super().__init__()
        if not weight.is_quantized or weight.dtype != torch.qint8:
            raise TypeError(f"weight must be a qint8 quantized tensor; got {weight.dtype}")
        self.weight_codes, self.weight_scale, self.weight_zero_point, self.axis = _weight_qparams(weight)
        self.bias = None if bias is None else bias.detach().to(torch.float32).numpy().copy()
        self.scale, self.zero_point = float(scale), int(zero_point)
        self.relu, self.convention = bool(relu), convention

    def _args(self, x: torch.Tensor):
        if not (x.is_quantized and x.dtype == torch.quint8 and x.qscheme() == torch.per_tensor_affine):
            raise TypeError(f"x must be a per-tensor quint8 quantized tensor; got {x.dtype}")
        return (x.int_repr().numpy(), float(x.q_scale()), int(x.q_zero_point()), self.weight_codes,
                self.weight_scale, self.weight_zero_point, self.bias, self.scale, self.zero_point)

    def _out(self, codes: np.ndarray) -> torch.Tensor:
        return make_quantized(torch.from_numpy(codes), self.scale, self.zero_point)

    def _range(self):
        return {"qmin": self.zero_point if self.relu else 0, "qmax": 255}

    @classmethod
    def from_torch(cls, module, convention: str = "fbgemm"):
        """From a ``torch.ao.nn.quantized`` module (or its fused ReLU variant)."""
        relu = "ReLU" in type(module).__name__
        return cls._from(module, relu, convention)


class Linear(_Quantized):
    """A quantized linear layer: ``y = rq.ops.linear(x, ..., convention)`` on quint8 tensors.

    ``weight`` is a qint8 quantized tensor ``(out, in)`` (per tensor, or per channel on axis 0);
    ``bias`` a float tensor or None; ``scale``/``zero_point`` the output's; ``relu=True`` clamps
    at the zero point (torch's ``LinearReLU``).

    >>> import torch, refquant_torch as rqt
    >>> w = torch.quantize_per_tensor(torch.tensor([[0.5, -0.25]]), 0.25, 0, torch.qint8)
    >>> layer = rqt.nn.quantized.Linear(w, torch.tensor([0.1]), scale=0.1, zero_point=10)
    >>> x = torch.quantize_per_tensor(torch.tensor([[1.0, 2.0]]), 0.5, 128, torch.quint8)
    >>> layer(x).int_repr().tolist()
    [[11]]
    """

    def __init__(self, weight, bias=None, *, scale=1.0, zero_point=0, relu=False, convention="fbgemm"):
        super().__init__(weight, bias, scale, zero_point, relu, convention)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = rq.ops.linear(*self._args(x), axis=self.axis, convention=self.convention, **self._range())
        return self._out(codes)

    @classmethod
    def _from(cls, m, relu, convention):
        weight, bias = m._packed_params._weight_bias()
        return cls(weight, bias, scale=m.scale, zero_point=m.zero_point, relu=relu, convention=convention)


class Conv2d(_Quantized):
    """A quantized 2-D convolution: ``y = rq.ops.conv2d(x, ..., convention)`` on quint8 NCHW tensors.

    ``weight`` is a qint8 quantized tensor ``(out, in/groups, kh, kw)``; the keywords are torch's.

    >>> import torch, refquant_torch as rqt
    >>> w = torch.quantize_per_tensor(torch.ones(1, 1, 2, 2), 0.5, 0, torch.qint8)
    >>> conv = rqt.nn.quantized.Conv2d(w, scale=0.5, zero_point=0)
    >>> x = torch.quantize_per_tensor(torch.ones(1, 1, 3, 3), 0.25, 0, torch.quint8)
    >>> conv(x).int_repr().tolist()
    [[[[8, 8], [8, 8]]]]
    """

    def __init__(self, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1, scale=1.0,
                 zero_point=0, relu=False, convention="fbgemm"):
        super().__init__(weight, bias, scale, zero_point, relu, convention)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = rq.ops.conv2d(*self._args(x), stride=self.stride, padding=self.padding,
                              dilation=self.dilation, groups=self.groups, axis=self.axis,
                              convention=self.convention, **self._range())
        return self._out(codes)

    @classmethod
    def _from(cls, m, relu, convention):
        if m.padding_mode != "zeros":
            raise NotImplementedError(f"padding_mode={m.padding_mode!r}: only 'zeros' is implemented")
        return cls(m.weight(), m.bias(), stride=m.stride, padding=m.padding, dilation=m.dilation,
                   groups=m.groups, scale=m.scale, zero_point=m.zero_point, relu=relu, convention=convention)
