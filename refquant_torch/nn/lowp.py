"""Fake-quant modules for low-precision float element and block formats (the functions of
:mod:`refquant_torch.lowp` with their arguments held as module state)."""

from __future__ import annotations

import torch

import refquant as rq

from .. import lowp

__all__ = ["FloatFakeQuantize", "MXFakeQuantize", "NVFP4FakeQuantize", "NF4FakeQuantize"]


def _repr(**kwargs) -> str:
    return ", ".join(f"{k}={v!r}" if not hasattr(v, "name") else f"{k}={v.name}"
                     for k, v in kwargs.items())


class FloatFakeQuantize(torch.nn.Module):
    """``rqt.float_fake_quantize(x, self.scale, fmt=fmt, ...)``: the value of ``fmt`` nearest
    ``x / scale``, times ``scale``, in x's dtype; straight-through backward (``ste``).

    ``scale`` (a number, a 1-D tensor along ``axis`` or a block tensor for ``block_size``) is a
    buffer, saved in the state dict; a number is stored as a float64 tensor of the same value.

    >>> import torch, refquant as rq, refquant_torch as rqt
    >>> fq = rqt.nn.FloatFakeQuantize(rq.float8_e4m3fn, scale=0.5)
    >>> fq(torch.tensor([1.0, 3.3, 1000.0])).tolist()
    [1.0, 3.25, 224.0]
    """

    def __init__(self, fmt, scale=1.0, *, saturate=None, rounding=None, convention="exact",
                 axis=None, block_size=None, rng=None, ste="clipped"):
        super().__init__()
        lowp._format_key(fmt)  # a clear error for a bad format now, not at the first call
        self.fmt, self.saturate, self.rounding, self.convention = fmt, saturate, rounding, convention
        self.axis, self.block_size, self.rng, self.ste = axis, block_size, rng, ste
        s = scale.detach().clone() if isinstance(scale, torch.Tensor) else torch.tensor(
            scale, dtype=torch.float64)
        self.register_buffer("scale", s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lowp.float_fake_quantize(
            x, self.scale, fmt=self.fmt, saturate=self.saturate, rounding=self.rounding,
            convention=self.convention, axis=self.axis, block_size=self.block_size, rng=self.rng,
            ste=self.ste)

    def extra_repr(self) -> str:
        return _repr(fmt=self.fmt, convention=self.convention, axis=self.axis,
                     block_size=self.block_size, ste=self.ste)


class MXFakeQuantize(torch.nn.Module):
    """``rqt.mx_fake_quantize(x, fmt, ...)``: OCP MX blocks along ``axis``; no state.

    >>> import torch, refquant as rq, refquant_torch as rqt
    >>> mx = rqt.nn.MXFakeQuantize(rq.float4_e2m1fn, block=4)
    >>> mx(torch.tensor([0.3, -3.3, 1.2, 7.0])).tolist()
    [0.5, -3.0, 1.0, 6.0]
    """

    def __init__(self, fmt, *, axis=-1, block=32, scale_rule="floor", convention="ocp"):
        super().__init__()
        lowp._format_key(fmt, allow_int8=True)
        self.fmt, self.axis, self.block = fmt, axis, block
        self.scale_rule, self.convention = scale_rule, convention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lowp.mx_fake_quantize(x, self.fmt, axis=self.axis, block=self.block,
                                     scale_rule=self.scale_rule, convention=self.convention)

    def extra_repr(self) -> str:
        return _repr(fmt=self.fmt, axis=self.axis, block=self.block, scale_rule=self.scale_rule,
                     convention=self.convention)


class NVFP4FakeQuantize(torch.nn.Module):
    """``rqt.nvfp4_fake_quantize(x, global_scale=self.global_scale, ...)``. A given
    ``global_scale`` is a float32 buffer (the stored scale, as ``convention`` stores it); without
    one each call takes the tensor's own (``amax / 2688``).

    >>> import torch, refquant_torch as rqt
    >>> fq = rqt.nn.NVFP4FakeQuantize(global_scale=1.0)
    >>> fq(torch.tensor([0.3, -1.1, 2.6, 6.0] + [0.0] * 12))[:4].tolist()
    [0.5, -1.0, 3.0, 6.0]
    """

    def __init__(self, *, global_scale=None, convention="exact"):
        super().__init__()
        rq.nvfp4.conventions.get(convention)  # a ValueError names the known conventions
        self.convention = convention
        g = None if global_scale is None else torch.as_tensor(global_scale, dtype=torch.float32).reshape(())
        self.register_buffer("global_scale", g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lowp.nvfp4_fake_quantize(x, global_scale=self.global_scale, convention=self.convention)

    def extra_repr(self) -> str:
        return _repr(convention=self.convention)


class NF4FakeQuantize(torch.nn.Module):
    """``rqt.nf4_fake_quantize(x, block=block, ...)``: absmax-scaled NF4 (or bitsandbytes FP4)
    blocks; no state.

    >>> import torch, refquant_torch as rqt
    >>> rqt.nn.NF4FakeQuantize(block=4)(torch.tensor([0.3, -0.6, 0.05, 1.0])).tolist()
    [0.33791524171829224, -0.5250730514526367, 0.07958029955625534, 1.0]
    """

    def __init__(self, *, block=64, double_quant=False, convention="bitsandbytes", codebook="nf4",
                 nested_block=256):
        super().__init__()
        rq.nf4.conventions.get(convention)
        self.block, self.double_quant, self.convention = block, double_quant, convention
        self.codebook, self.nested_block = codebook, nested_block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lowp.nf4_fake_quantize(x, block=self.block, double_quant=self.double_quant,
                                      convention=self.convention, codebook=self.codebook,
                                      nested_block=self.nested_block)

    def extra_repr(self) -> str:
        return _repr(block=self.block, double_quant=self.double_quant, convention=self.convention,
                     codebook=self.codebook)
