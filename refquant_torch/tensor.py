"""Quantized tensors and AIMET-style quantizer modules.

* ``QuantizedTensor``: the integer codes held in a float tensor, with the ``encoding`` that maps
  them back (``dequantize()``, ``quantized_repr()``).
* ``DequantizedTensor``: real values on the grid of an encoding (``quantize()``,
  ``quantized_repr()``); the round trips are lossless.
* ``Quantize(shape, bitwidth, symmetric)`` and ``QuantizeDequantize(...)``: modules with learnable
  ``min`` / ``max`` parameters of ``shape``, ``set_range(min, max)`` and a
  ``compute_encodings()`` context manager, with AIMET's meaning (seeds/003):

  - ``scale = (max - min) / (qmax - qmin)`` (float32 tensor arithmetic);
  - symmetric: signed codes ``[-2**(b-1), 2**(b-1) - 1]``, zero point 0; asymmetric: unsigned
    codes ``[0, 2**b - 1]``, ``offset = round(min / scale) - qmin``, zero point ``-offset``;
  - codes ``rq.quantize(x, scale, -offset, ...)`` and values ``rq.fake_quantize`` under
    ``convention`` (default ``"exact"``);
  - ``compute_encodings()``: each call inside takes the range of its input (per ``shape`` group;
    symmetric: ``scale = max(-min / 2**(b-1), max / (2**(b-1) - 1))``, AIMET's rule; asymmetric:
    ``[min(x_min, 0), max(x_max, 0)]``), quantizes with it, and on exit the running union of the
    ranges becomes ``min`` / ``max``.

Gradients: ``QuantizeDequantize`` is ``rqt.fake_quantize`` (straight-through for x, LSQ for the
range); ``Quantize`` passes ``grad * m(x) / scale`` to x; ``dequantize()`` passes
``grad * scale`` back to the codes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

import refquant as rq

from ._bridge import from_numpy, to_numpy
from .functional import fake_quantize, ste_mask

__all__ = ["AffineEncoding", "QuantizedTensor", "DequantizedTensor", "Quantize",
           "QuantizeDequantize"]

_INT_DTYPES = {np.dtype(k): v for k, v in ((np.int8, torch.int8), (np.uint8, torch.uint8),
                                            (np.int16, torch.int16), (np.int32, torch.int32),
                                            (np.int64, torch.int64))}


@dataclass(frozen=True)
class AffineEncoding:
    """``scale`` and ``offset`` tensors (``zero_point = -offset``) of a ``shape``, the code range
    and the convention. ``dtype`` is the smallest torch integer dtype holding the range."""

    scale: torch.Tensor
    offset: torch.Tensor
    qmin: int
    qmax: int
    symmetric: bool
    convention: str = "exact"

    @property
    def zero_point(self) -> torch.Tensor:
        return -self.offset

    @property
    def bitwidth(self) -> int:
        return int(self.qmax - self.qmin).bit_length()

    @property
    def dtype(self) -> torch.dtype:
        return _INT_DTYPES[rq.integer_dtype_for(self.qmin, self.qmax)]

    def layout(self, shape) -> dict:
        """Core keyword arguments mapping ``scale`` onto a tensor of ``shape``: per-tensor,
        ``axis`` or ``block_size``, with the qparams reshaped to match."""
        scale = self.scale.detach()
        ndim = len(shape)
        if scale.dim() > ndim:
            raise ValueError(f"encoding shape {tuple(scale.shape)} has more dims than x {shape}")
        groups = [1] * (ndim - scale.dim()) + list(scale.shape)
        for i, (g, n) in enumerate(zip(groups, shape, strict=True)):
            if g != 1 and n % g:
                raise ValueError(f"encoding shape {tuple(scale.shape)} does not divide x's shape "
                                 f"{tuple(shape)} at dim {i}")
        s, z = to_numpy(scale), to_numpy(self.zero_point.detach())
        big = [i for i, g in enumerate(groups) if g != 1]
        if not big:
            return {"scale": s.reshape(()), "zero_point": z.reshape(()), "axis": None,
                    "block_size": None}
        if len(big) == 1 and groups[big[0]] == shape[big[0]]:
            return {"scale": s.reshape(-1), "zero_point": z.reshape(-1), "axis": big[0],
                    "block_size": None}
        block = [n // g for n, g in zip(shape, groups, strict=True)]
        return {"scale": s.reshape(groups), "zero_point": z.reshape(groups), "axis": None,
                "block_size": block}

    def codes(self, x: torch.Tensor) -> np.ndarray:
        kw = self.layout(x.shape)
        return rq.quantize(to_numpy(x), kw.pop("scale"), kw.pop("zero_point"), qmin=self.qmin,
                           qmax=self.qmax, convention=self.convention, **kw)

    def broadcast_scale(self, ndim: int) -> torch.Tensor:
        """``scale`` viewed to broadcast against a tensor of ``ndim`` dims (per-group values
        repeated by the caller's shape when blocks are larger than one)."""
        s = self.scale
        return s.reshape([1] * (ndim - s.dim()) + list(s.shape))


def _expand(t: torch.Tensor, shape) -> torch.Tensor:
    """A per-group tensor repeated over the blocks of ``shape``."""
    for dim, (g, n) in enumerate(zip(t.shape, shape, strict=True)):
        if g != n and g != 1:
            t = t.repeat_interleave(n // g, dim=dim)
    return t


class _EncodedTensor(torch.Tensor):
    """A tensor subclass with an ``encoding``; results of other ops are plain tensors."""

    encoding: AffineEncoding | None = None
    _KEEP = ("clone", "detach", "to", "cpu", "cuda", "requires_grad_", "__deepcopy__")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in cls._KEEP and isinstance(out, torch.Tensor) and isinstance(args[0], cls):
            out = out.as_subclass(cls)
            out.encoding = args[0].encoding
            return out
        return out

    def __reduce_ex__(self, protocol):
        return (_rebuild, (type(self), self.as_subclass(torch.Tensor).detach(), self.encoding))

    def __deepcopy__(self, memo):
        out = self.as_subclass(torch.Tensor).clone().as_subclass(type(self))
        out.encoding = self.encoding
        return out


def _rebuild(cls, data, encoding):
    out = data.as_subclass(cls)
    out.encoding = encoding
    return out


def _wrap(cls, t: torch.Tensor, encoding: AffineEncoding):
    out = t.as_subclass(cls)
    out.encoding = encoding
    return out


class _Dequantize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, codes_f, scale, encoding):
        kw = encoding.layout(codes_f.shape)
        q = to_numpy(codes_f).astype(np.int64)
        out = rq.dequantize(q, kw["scale"], kw["zero_point"], axis=kw["axis"],
                            block_size=kw["block_size"], convention=encoding.convention,
                            dtype=to_numpy(codes_f).dtype)
        ctx.encoding = encoding
        ctx.shape = codes_f.shape
        return from_numpy(out, codes_f.device)

    @staticmethod
    def backward(ctx, grad):
        s = _expand(ctx.encoding.broadcast_scale(grad.dim()).detach(), ctx.shape)
        return grad * s.to(grad.dtype), None, None


class _QuantizeCodes(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, encoding):
        codes = encoding.codes(x)
        ctx.save_for_backward(x)
        ctx.encoding = encoding
        return from_numpy(codes.astype(to_numpy(x).dtype), x.device)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        enc = ctx.encoding
        kw = enc.layout(x.shape)
        mask = ste_mask(x, kw.pop("scale"), kw.pop("zero_point"), enc.qmin, enc.qmax,
                        convention=enc.convention, **kw)
        s = _expand(enc.broadcast_scale(x.dim()).detach(), x.shape).to(grad.dtype)
        return grad * mask.to(grad.dtype) / s, None, None


class QuantizedTensor(_EncodedTensor):
    """Integer codes stored in a float tensor, with the ``encoding`` to map them back."""

    def dequantize(self) -> DequantizedTensor:
        """``(q - zero_point) * scale`` (``rq.dequantize`` under the encoding's convention)."""
        plain = self.as_subclass(torch.Tensor)
        out = _Dequantize.apply(plain, self.encoding.scale, self.encoding)
        return _wrap(DequantizedTensor, out, self.encoding)

    def quantized_repr(self) -> torch.Tensor:
        """The codes in ``encoding.dtype`` (no gradient)."""
        return self.as_subclass(torch.Tensor).detach().to(self.encoding.dtype)


class DequantizedTensor(_EncodedTensor):
    """Values on an encoding's grid; ``quantize()`` recovers the codes without loss."""

    def quantize(self) -> QuantizedTensor:
        plain = self.as_subclass(torch.Tensor)
        out = _QuantizeCodes.apply(plain, self.encoding.scale, self.encoding)
        return _wrap(QuantizedTensor, out, self.encoding)

    def quantized_repr(self) -> torch.Tensor:
        return self.quantize().quantized_repr()


class _AffineQuantizerBase(torch.nn.Module):
    def __init__(self, shape, bitwidth: int, symmetric: bool, convention: str = "exact"):
        super().__init__()
        shape = tuple(shape) if isinstance(shape, (tuple, list, torch.Size)) else (int(shape),)
        bitwidth = int(bitwidth)
        if not 1 <= bitwidth <= 32:
            raise ValueError(f"bitwidth must be in 1..32; got {bitwidth}")
        self.shape, self.bitwidth, self.symmetric = shape, bitwidth, bool(symmetric)
        self.convention = convention
        if self.symmetric:
            self.qmin, self.qmax = -(2 ** (bitwidth - 1)), 2 ** (bitwidth - 1) - 1
        else:
            self.qmin, self.qmax = 0, 2**bitwidth - 1
        self.min = torch.nn.Parameter(torch.zeros(shape))
        self.max = torch.nn.Parameter(torch.zeros(shape))
        self.register_buffer("_initialized", torch.tensor(False))
        self._observing = False
        self._seen = None

    def is_initialized(self) -> bool:
        return bool(self._initialized)

    @torch.no_grad()
    def set_range(self, min, max):
        """Set the encoding range; ``min`` and ``max`` broadcast to ``shape``."""
        # new storage rather than copy_: graphs built from the old range stay valid
        self.min.data = torch.as_tensor(min, dtype=self.min.dtype).expand(self.shape).clone()
        self.max.data = torch.as_tensor(max, dtype=self.max.dtype).expand(self.shape).clone()
        self._initialized.fill_(True)

    def get_scale(self) -> torch.Tensor:
        return (self.max - self.min) / (self.qmax - self.qmin)

    def get_offset(self) -> torch.Tensor:
        if self.symmetric:
            return torch.zeros_like(self.min)
        raw = self.min / self.get_scale()
        return raw + (raw.detach().round() - raw.detach()) - self.qmin

    def get_encoding(self) -> AffineEncoding:
        if not self.is_initialized():
            raise RuntimeError(f"{type(self).__name__} has no encoding: call set_range() or run "
                               "it inside compute_encodings()")
        return AffineEncoding(self.get_scale(), self.get_offset(), self.qmin, self.qmax,
                              self.symmetric, self.convention)

    @contextlib.contextmanager
    def compute_encodings(self):
        """Inside: each call takes the range of its input; on exit the union sets the range."""
        self._observing, self._seen = True, None
        try:
            yield self
        finally:
            self._observing = False
            if self._seen is not None:
                self.set_range(*self._seen)
            self._seen = None

    def _group_reduce(self, x: torch.Tensor, fn) -> torch.Tensor:
        shape = [1] * (x.dim() - len(self.shape)) + list(self.shape)
        parts = x.detach().reshape([d for g, n in zip(shape, x.shape, strict=True)
                                    for d in (g, n // g)])
        dims = tuple(range(1, 2 * x.dim(), 2)) + tuple(
            2 * i for i, g in enumerate(shape) if g == 1)
        return fn(parts, dims).reshape(self.shape).to(self.min.dtype)

    @torch.no_grad()
    def _observe(self, x):
        lo = torch.clamp(self._group_reduce(x, lambda t, d: t.amin(dim=d)), max=0)
        hi = torch.clamp(self._group_reduce(x, lambda t, d: t.amax(dim=d)), min=0)
        if self._seen is not None:
            lo, hi = torch.minimum(lo, self._seen[0]), torch.maximum(hi, self._seen[1])
        self._seen = (lo, hi)
        if self.symmetric:
            neg, pos = -self.qmin, self.qmax
            step = torch.maximum(-lo / neg, hi / pos)
            return -neg * step, pos * step
        return lo, hi

    def _encoding_for(self, x) -> AffineEncoding:
        if self._observing:
            self.set_range(*self._observe(x))
        return self.get_encoding()

    def extra_repr(self):
        return f"shape={self.shape}, bitwidth={self.bitwidth}, symmetric={self.symmetric}"


class Quantize(_AffineQuantizerBase):
    """``Quantize(shape, bitwidth, symmetric)``: x to a :class:`QuantizedTensor` of codes."""

    def forward(self, x: torch.Tensor) -> QuantizedTensor:
        enc = self._encoding_for(x)
        out = _QuantizeCodes.apply(x, enc.scale, enc)
        return _wrap(QuantizedTensor, out, enc)


class QuantizeDequantize(_AffineQuantizerBase):
    """``QuantizeDequantize(shape, bitwidth, symmetric)``: x to a :class:`DequantizedTensor`."""

    def forward(self, x: torch.Tensor) -> DequantizedTensor:
        enc = self._encoding_for(x)
        kw = enc.layout(x.shape)
        scale, zp = enc.scale, enc.zero_point
        if kw["axis"] is None and kw["block_size"] is None:
            scale, zp = scale.reshape(()), zp.reshape(())
        elif kw["axis"] is not None:
            scale, zp = scale.reshape(-1), zp.reshape(-1)
        else:
            scale, zp = scale.reshape(kw["scale"].shape), zp.reshape(kw["scale"].shape)
        out = fake_quantize(x, scale, zp, qmin=enc.qmin, qmax=enc.qmax, axis=kw["axis"],
                            block_size=kw["block_size"], convention=enc.convention)
        return _wrap(DequantizedTensor, out, enc)
