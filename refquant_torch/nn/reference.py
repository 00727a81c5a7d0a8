"""Reference quantized ``Linear`` and ``Conv2d``: torch.ao's reference modules with the weight
quantized by refquant.

They subclass ``torch.ao.nn.quantized.reference.Linear`` / ``Conv2d`` (so ``from_float(float_module,
weight_qparams)``, the ``weight_scale`` / ``weight_zero_point`` / ``weight_axis`` buffers and their
state_dict handling are torch's) and replace ``get_quantized_weight`` and ``get_weight``:

* codes ``q = rq.quantize(w, scale, zero_point, fmt=<dtype range>, axis=..., convention=
  "torch.quantize")`` (torch 2.13 x86: ``rne(fma(w, 1f/s, z))`` per-tensor 8-bit, ``rne(f32(w*inv)
  + z)`` per-channel, float zero points for ``per_channel_affine_float_qparams``), returned as a
  torch quantized tensor with those codes;
* ``get_weight() = rq.dequantize(q, ..., convention="torch.quantize")``.

Both equal torch's reference modules bit for bit (tests/torch/test_reference.py) for
per_tensor_affine, per_channel_affine and per_channel_affine_float_qparams with quint8, qint8 and
qint32. float16 weights pass through as torch does; other dtypes raise ValueError.
"""

from __future__ import annotations

import torch
from torch.ao.nn.quantized import reference as _torch_ref

import refquant as rq

from .._bridge import from_numpy, to_numpy

_RANGES = {torch.quint8: (0, 255), torch.qint8: (-128, 127), torch.qint32: (-(2**31), 2**31 - 1)}
_CONVENTION = "torch.quantize"


class _RefQuantWeight:
    def _weight_codes(self):
        """(codes ndarray, scale ndarray, zero_point ndarray, axis or None)."""
        if self.weight_dtype not in _RANGES:
            raise ValueError(f"Unsupported dtype and qscheme: {self.weight_dtype}, "
                             f"{self.weight_qscheme}")
        qmin, qmax = _RANGES[self.weight_dtype]
        axis = None if self.weight_qscheme == torch.per_tensor_affine else self.weight_axis_int
        scale, zp = to_numpy(self.weight_scale), to_numpy(self.weight_zero_point)
        if axis is None:
            scale, zp = scale.reshape(()), zp.reshape(())
        codes = rq.quantize(to_numpy(self.weight), scale, zp, qmin=qmin, qmax=qmax, axis=axis,
                            convention=_CONVENTION)
        return codes, scale, zp, axis

    def get_quantized_weight(self):
        if self.weight_dtype == torch.float16:
            return self.weight.to(torch.float16)
        codes, _, _, axis = self._weight_codes()
        q = from_numpy(codes, self.weight.device)
        if self.weight_dtype == torch.qint32:
            q = q.to(torch.int32)
        if axis is None:
            return torch._make_per_tensor_quantized_tensor(
                q, float(self.weight_scale), int(self.weight_zero_point))
        return torch._make_per_channel_quantized_tensor(
            q, self.weight_scale.to(torch.float64), self.weight_zero_point, axis)

    def get_weight(self):
        if self.weight_dtype == torch.float16:
            return self.weight.to(torch.float16)
        codes, scale, zp, axis = self._weight_codes()
        w = rq.dequantize(codes, scale, zp, axis=axis, convention=_CONVENTION)
        return from_numpy(w, self.weight.device)


class Linear(_RefQuantWeight, _torch_ref.Linear):
    """``torch.ao.nn.quantized.reference.Linear`` with the weight quantized by refquant."""

    _FLOAT_MODULE = torch.nn.Linear


class Conv2d(_RefQuantWeight, _torch_ref.Conv2d):
    """``torch.ao.nn.quantized.reference.Conv2d`` with the weight quantized by refquant."""

    _FLOAT_MODULE = torch.nn.Conv2d
