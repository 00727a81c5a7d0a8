"""Reference quantized ``Linear`` and ``Conv2d``: torch.ao's reference modules with the weight
quantized by refquant.

They subclass ``torch.ao.nn.quantized.reference.Linear`` / ``Conv2d`` (so ``from_float(float_module,
weight_qparams)``, the ``weight_scale`` / ``weight_zero_point`` / ``weight_axis`` buffers and their
state_dict handling are torch's) and replace ``get_quantized_weight`` and ``get_weight``:

* codes ``q = rq.quantize(w, scale, zero_point, fmt=<dtype range>, axis=..., convention=
  "torch.quantize")`` (torch 2.13 x86: ``rne(fma(w, 1f/s, z))`` per-tensor 8-bit, ``rne(f32(w*inv)
  + z)`` per-channel, float zero points for ``per_channel_affine_float_qparams``), returned as a
  torch quantized tensor with those codes;
* ``get_weight() = rq.dequantize(q, ..., convention="torch.quantize")``;
* with ``weight_qparams["is_decomposed"]``: the ``"torch.decomposed"`` convention (torch's
  ``quantized_decomposed`` ops) with ``quant_min`` / ``quant_max``, integer codes returned as a
  plain uint8 / int8 / int32 tensor.

Both equal torch's reference modules bit for bit (tests/torch/test_modules.py,
tests/torch/test_reference.py) for per_tensor_affine, per_channel_affine and
per_channel_affine_float_qparams with quint8, qint8 and qint32 (quint4x2 per channel:
``get_weight`` only). A float16 weight dtype passes through as torch's does; other dtypes raise
torch's ValueError.
"""

from __future__ import annotations

import torch
from torch.ao.nn.quantized import reference as _torch_ref

import refquant as rq

from .._bridge import from_numpy, make_quantized, to_numpy

__all__ = ["Linear", "Conv2d"]

_RANGES = {torch.quint8: (0, 255), torch.qint8: (-128, 127), torch.qint32: (-(2**31), 2**31 - 1),
           torch.quint4x2: (0, 15)}
_INT_REPR = {torch.quint8: torch.uint8, torch.qint8: torch.int8, torch.qint32: torch.int32}
_QUANTIZED_SCHEMES = (torch.per_tensor_affine, torch.per_channel_affine,
                      torch.per_channel_affine_float_qparams)


@torch.library.custom_op("refquant::quantize_dequantize", mutates_args=())
def _quantize_dequantize(w: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                         qmax: int, axis: int | None, convention: str,
                         code_dtype: str | None = None) -> torch.Tensor:
    """``rq.dequantize(rq.quantize(w, scale, zero_point, ..., dtype=code_dtype), ...)`` on w's
    bits (per-tensor when ``axis`` is None), in w's dtype; no gradient."""
    s, z = to_numpy(scale), to_numpy(zero_point)
    if axis is None:
        s, z = s.reshape(()), z.reshape(())
    codes = rq.quantize(to_numpy(w), s, z, qmin=qmin, qmax=qmax, axis=axis, convention=convention,
                        dtype=code_dtype)
    values = rq.dequantize(codes, s, z, axis=axis, convention=convention)
    return from_numpy(values, w.device).to(w.dtype)


@_quantize_dequantize.register_fake
def _(w, *args):
    return torch.empty_like(w, memory_format=torch.contiguous_format)


class _RefQuantWeight:
    def _weight_range(self) -> tuple[int, int, str]:
        """(qmin, qmax, convention) of the weight's qparams, or torch's ValueError."""
        scheme, dtype, decomposed = self.weight_qscheme, self.weight_dtype, self.is_decomposed
        allowed = [torch.quint8, torch.qint8, torch.qint32]
        if scheme != torch.per_tensor_affine and not decomposed:
            allowed.append(torch.quint4x2)
        if scheme not in _QUANTIZED_SCHEMES or dtype not in allowed:
            raise ValueError(f"Unsupported dtype and qscheme: {dtype}, {scheme}")
        qmin, qmax = _RANGES[dtype]
        if decomposed and self.weight_quant_min is not None and self.weight_quant_max is not None:
            qmin, qmax = self.weight_quant_min, self.weight_quant_max
        return qmin, qmax, ("torch.decomposed" if decomposed else "torch.quantize")

    def _code_dtype(self) -> str | None:
        """The code dtype of torch's decomposed quantize (the weight dtype's integer
        representation, whatever the range: NaN is INT32_MIN in int32 codes), else None."""
        return str(_INT_REPR[self.weight_dtype]).removeprefix("torch.") if self.is_decomposed else None

    def _weight_codes(self):
        """(codes ndarray, scale ndarray, zero_point ndarray, axis or None, convention)."""
        qmin, qmax, convention = self._weight_range()
        axis = None if self.weight_qscheme == torch.per_tensor_affine else self.weight_axis_int
        scale, zp = to_numpy(self.weight_scale), to_numpy(self.weight_zero_point)
        if axis is None:
            scale, zp = scale.reshape(()), zp.reshape(())
        codes = rq.quantize(to_numpy(self.weight), scale, zp, qmin=qmin, qmax=qmax, axis=axis,
                            convention=convention, dtype=self._code_dtype())
        return codes, scale, zp, axis, convention

    def get_quantized_weight(self):
        """The weight's codes ``rq.quantize(w, ...)`` under ``"torch.quantize"`` as a torch
        quantized tensor (``is_decomposed``: under ``"torch.decomposed"`` with
        ``weight_quant_min`` / ``weight_quant_max``, as a plain integer tensor); a float16 weight
        dtype gives ``weight.to(float16)``, as torch's."""
        if self.weight_dtype == torch.float16 and not self.is_decomposed:
            return self.weight.to(torch.float16)
        codes, _, _, axis, _ = self._weight_codes()
        q = from_numpy(codes, self.weight.device)
        if self.is_decomposed:
            return q.to(_INT_REPR[self.weight_dtype])
        if self.weight_dtype == torch.quint4x2:
            raise NotImplementedError("get_quantized_weight for quint4x2: torch has no constructor "
                                      "of a quint4x2 tensor from its codes (get_weight works)")
        q = q.to(_INT_REPR[self.weight_dtype])
        if axis is None:
            return make_quantized(q, float(self.weight_scale), int(self.weight_zero_point))
        return make_quantized(q, self.weight_scale.to(torch.float64), self.weight_zero_point, axis)

    def get_weight(self):
        """``rq.dequantize`` of :meth:`get_quantized_weight`'s codes under the same convention
        (a float16 weight dtype: ``weight.to(float16).to(float32)``; an unquantized qscheme: the
        weight itself), as torch's reference modules. Computed by the
        ``refquant::quantize_dequantize`` op from the weight and its qparam buffers; eager calls
        reuse the result until the weight or a qparam changes (their version counters)."""
        if self.weight_qscheme not in _QUANTIZED_SCHEMES:
            return self.weight
        if self.weight_dtype == torch.float16 and not self.is_decomposed:
            return self.weight.to(torch.float16).to(torch.float32)
        qmin, qmax, convention = self._weight_range()
        axis = None if self.weight_qscheme == torch.per_tensor_affine else self.weight_axis_int
        args = (self.weight.detach(), self.weight_scale, self.weight_zero_point, qmin, qmax, axis,
                convention, self._code_dtype())
        if torch.compiler.is_compiling():
            return torch.ops.refquant.quantize_dequantize(*args)
        key = tuple((id(t), t._version, t.data_ptr(), t.device) for t in args[:3]) + args[3:]
        cached = getattr(self, "_weight_cache", None)
        if cached is None or cached[0] != key:
            cached = self._weight_cache = (key, _quantize_dequantize(*args))
        return cached[1]


class Linear(_RefQuantWeight, _torch_ref.Linear):
    """``torch.ao.nn.quantized.reference.Linear`` with the weight quantized by refquant.

    ``forward(x) = F.linear(x, get_weight(), bias)``; ``get_quantized_weight()`` holds the codes
    ``q = rq.quantize(w, scale, zero_point, convention="torch.quantize")`` (torch's rounding of
    ``w / scale + zero_point``, see the module doc) and ``get_weight()`` their values ``(q -
    zero_point) * scale``, both equal to torch's.

    >>> import torch, refquant_torch as rqt
    >>> float_linear = torch.nn.Linear(2, 2, bias=False)
    >>> with torch.no_grad():
    ...     _ = float_linear.weight.copy_(torch.tensor([[0.26, -1.0], [0.04, 3.0]]))
    >>> weight_qparams = {"qscheme": torch.per_tensor_affine, "dtype": torch.qint8,
    ...                   "scale": 0.1, "zero_point": 0}
    >>> ref = rqt.nn.reference.Linear.from_float(float_linear, weight_qparams)
    >>> ref.get_quantized_weight().int_repr().tolist()
    [[3, -10], [0, 30]]
    >>> ref.get_weight().tolist()
    [[0.3, -1.0], [0.0, 3.0]]
    >>> torch_ref = torch.ao.nn.quantized.reference.Linear.from_float(float_linear, weight_qparams)
    >>> torch.equal(ref.get_weight(), torch_ref.get_weight())
    True
    """

    _FLOAT_MODULE = torch.nn.Linear

    @classmethod
    def from_float(cls, float_linear: torch.nn.Linear, weight_qparams) -> Linear:
        """A refquant reference Linear with ``float_linear``'s weight and bias (torch's
        ``from_float`` builds its own class, so it is restated here)."""
        ref = cls(float_linear.in_features, float_linear.out_features,
                  float_linear.bias is not None, device=float_linear.weight.device,
                  dtype=float_linear.weight.dtype, weight_qparams=weight_qparams)
        ref.weight = torch.nn.Parameter(float_linear.weight.detach())
        if float_linear.bias is not None:
            ref.bias = torch.nn.Parameter(float_linear.bias.detach())
        return ref


class Conv2d(_RefQuantWeight, _torch_ref.Conv2d):
    """``torch.ao.nn.quantized.reference.Conv2d`` with the weight quantized by refquant.

    ``forward(x) = F.conv2d(x, get_weight(), bias, ...)``; codes and values as :class:`Linear`,
    here per output channel and, with ``is_decomposed``, the ``"torch.decomposed"`` arithmetic on
    ``[quant_min, quant_max]`` with the codes as a plain integer tensor.

    >>> import torch, refquant_torch as rqt
    >>> float_conv = torch.nn.Conv2d(2, 2, kernel_size=1, bias=False)
    >>> with torch.no_grad():
    ...     _ = float_conv.weight.copy_(torch.tensor([0.26, -1.0, 0.04, 3.0]).reshape(2, 2, 1, 1))
    >>> weight_qparams = {"qscheme": torch.per_channel_affine, "dtype": torch.qint8, "axis": 0,
    ...                   "scale": torch.tensor([0.1, 0.5]), "zero_point": torch.tensor([0, 0]),
    ...                   "is_decomposed": True, "quant_min": -8, "quant_max": 7}
    >>> ref = rqt.nn.reference.Conv2d.from_float(float_conv, weight_qparams)
    >>> codes = ref.get_quantized_weight(); codes.dtype, codes.flatten().tolist()
    (torch.int8, [3, -8, 0, 6])
    >>> ref.get_weight().flatten().tolist()
    [0.3, -0.8, 0.0, 3.0]
    >>> torch_ref = torch.ao.nn.quantized.reference.Conv2d.from_float(float_conv, weight_qparams)
    >>> torch.equal(ref.get_weight(), torch_ref.get_weight())
    True
    """

    _FLOAT_MODULE = torch.nn.Conv2d
