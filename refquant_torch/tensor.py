"""Quantized tensors and AIMET-style quantizer modules.

* ``QuantizedTensor``: the integer codes held in a float tensor, with the ``encoding`` that maps
  them back (``dequantize()``, ``quantized_repr()``).
* ``DequantizedTensor``: real values on the grid of an encoding (``quantize()``,
  ``quantized_repr()``); the round trips are lossless.
* ``Quantize(shape, bitwidth, symmetric)`` and ``QuantizeDequantize(...)``: modules with learnable
  ``min`` / ``max`` parameters of ``shape``, ``set_range(min, max)`` and a
  ``compute_encodings()`` context manager, with AIMET's meaning (the formulas are
  :mod:`refquant.aimet`'s):

  - ``scale = rq.aimet.scale(min, max, ...)``, ``offset = rq.aimet.offset(min, max, ...)``
    (0 when symmetric; the rounding straight-through), in the parameters' tensor arithmetic;
  - symmetric: signed codes ``[-2**(b-1), 2**(b-1) - 1]``, zero point 0; asymmetric: unsigned
    codes ``[0, 2**b - 1]`` (``rq.IntFormat(b, signed=symmetric)``), zero point ``-offset``;
  - codes ``rq.quantize(x, scale, -offset, ...)`` and values ``rq.fake_quantize`` under
    ``convention`` (default ``"exact"``);
  - ``compute_encodings()``: each call inside quantizes with the range of its own input (per
    ``shape`` group, ``rq.aimet.encoding_range`` of its extremes), and on exit the same rule on
    the union of every input seen sets ``min`` / ``max``.

Gradients: ``QuantizeDequantize`` is ``rqt.fake_quantize`` (straight-through for x, LSQ for the
range); ``Quantize`` and ``dequantize()`` take theirs from ``rq.aimet.quantize_grad`` and
``rq.aimet.dequantize_grad``, summed over the elements of each qparam group.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

import refquant as rq

from ._bridge import from_numpy, to_numpy
from .functional import _broadcast_bounds, fake_quantize, ste_mask

__all__ = ["AffineEncoding", "QuantizedTensor", "DequantizedTensor", "Quantize",
           "QuantizeDequantize"]

_INT_DTYPES = {np.dtype(k): v for k, v in (
    (np.int8, torch.int8), (np.uint8, torch.uint8), (np.int16, torch.int16),
    (np.uint16, torch.uint16), (np.int32, torch.int32), (np.uint32, torch.uint32),
    (np.int64, torch.int64), (np.uint64, torch.uint64))}


@dataclass(frozen=True)
class AffineEncoding:
    """``scale`` and ``offset`` tensors (``zero_point = -offset``) of a ``shape``, the code range
    and the convention. ``dtype`` is the smallest torch integer dtype holding the range.

    A code ``q`` stands for ``(q + offset) * scale``; the representable range is ``[min, max] =
    [scale * (offset + qmin), scale * (offset + qmax)]`` and ``bitwidth`` is the bit length of
    ``qmax - qmin``.

    >>> import torch
    >>> from refquant_torch.tensor import AffineEncoding
    >>> enc = AffineEncoding(torch.tensor(0.5), torch.tensor(-2.0), qmin=0, qmax=15,
    ...                      symmetric=False)
    >>> enc.zero_point.item(), enc.bitwidth, enc.dtype
    (2.0, 4, torch.uint8)
    >>> enc.min.item(), enc.max.item()
    (-1.0, 6.5)
    >>> enc.codes(torch.tensor([-1.0, 0.2, 3.0, 9.0])).tolist()
    [0, 2, 8, 15]
    """

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

    def layout(self, shape, *, tensors: bool = False) -> dict:
        """Core keyword arguments mapping ``scale`` onto a tensor of ``shape``: per-tensor,
        ``axis`` or ``block_size``, with the qparams reshaped to match (ndarrays, or with
        ``tensors`` the differentiable tensors)."""
        scale = self.scale.detach()
        ndim = len(shape)
        if scale.dim() > ndim:
            raise ValueError(f"encoding shape {tuple(scale.shape)} has more dims than x {shape}")
        groups = [1] * (ndim - scale.dim()) + list(scale.shape)
        for i, (g, n) in enumerate(zip(groups, shape, strict=True)):
            if g != 1 and n % g:
                raise ValueError(f"encoding shape {tuple(scale.shape)} does not divide x's shape "
                                 f"{tuple(shape)} at dim {i}")
        if tensors:
            s, z = self.scale, self.zero_point
        else:
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
        """The codes ``clamp(round(x / scale) - offset, qmin, qmax)`` of ``x`` as an ndarray in
        the smallest integer dtype holding ``[qmin, qmax]``: ``rq.quantize`` under the encoding's
        convention, the qparams spread over x by :meth:`layout` (no gradient)."""
        kw = self.layout(x.shape)
        return rq.quantize(to_numpy(x), kw.pop("scale"), kw.pop("zero_point"), qmin=self.qmin,
                           qmax=self.qmax, convention=self.convention, **kw)

    @property
    def min(self) -> torch.Tensor:
        """The smallest representable value, ``scale * (offset + qmin)`` (AIMET's ``min``)."""
        return self.scale * (self.offset + self.qmin)

    @property
    def max(self) -> torch.Tensor:
        """The largest representable value, ``scale * (offset + qmax)`` (AIMET's ``max``)."""
        return self.scale * (self.offset + self.qmax)

    def per_element(self, t: torch.Tensor, shape) -> torch.Tensor:
        """A qparam of the encoding's shape spread over a tensor of ``shape``."""
        return _expand(t.reshape([1] * (len(shape) - t.dim()) + list(t.shape)), shape)


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
            return _wrap(cls, out, args[0].encoding)
        return out

    def __reduce_ex__(self, protocol):
        return (_wrap, (type(self), self.as_subclass(torch.Tensor).detach(), self.encoding))

    def __deepcopy__(self, memo):
        return _wrap(type(self), self.as_subclass(torch.Tensor).clone(), self.encoding)


def _wrap(cls, t: torch.Tensor, encoding: AffineEncoding):
    """``t`` as a ``cls`` (an encoded tensor class) carrying ``encoding``."""
    out = t.as_subclass(cls)
    out.encoding = encoding
    return out


_rebuild = _wrap  # the name pickles written by earlier versions refer to


def _encoded(function, cls, x: torch.Tensor, encoding: AffineEncoding):
    """``function`` (an autograd Function of ``x, scale, offset, encoding``) applied to ``x``
    under ``encoding``, the result a ``cls`` carrying that encoding."""
    return _wrap(cls, function.apply(x, encoding.scale, encoding.offset, encoding), encoding)


def _qparam_grads(need, g_x, g_scale, g_offset, scale, offset) -> tuple:
    """A backward's return for ``(x, scale, offset, encoding)``: ``g_x``, the element-wise
    ``g_scale`` and ``g_offset`` summed per qparam group in their qparam's dtype, None for each
    input ``need`` (``ctx.needs_input_grad``) leaves out, and None for the encoding."""
    return (g_x if need[0] else None,
            _reduce_to(g_scale, scale.shape).to(scale.dtype) if need[1] else None,
            _reduce_to(g_offset, offset.shape).to(offset.dtype) if need[2] else None, None)


def _reduce_to(t: torch.Tensor, shape) -> torch.Tensor:
    """The sum of an element-wise gradient over the elements that share each qparam of
    ``shape`` (the inverse of :func:`_expand` after leading broadcast dims)."""
    lead = t.dim() - len(shape)
    if lead:
        t = t.sum(dim=tuple(range(lead)))
    split = [d for g, n in zip(shape, t.shape, strict=True) for d in (g, n // g)]
    return t.reshape(split).sum(dim=tuple(range(1, 2 * len(shape), 2))).reshape(shape)


class _Dequantize(torch.autograd.Function):
    """``(q + offset) * scale`` by ``rq.dequantize``; gradients (AIMET's): ``grad * scale`` to the
    codes, ``grad * (q + offset)`` to ``scale`` and ``grad * scale`` to ``offset``, summed per
    qparam group."""

    @staticmethod
    def forward(ctx, codes_f, scale, offset, encoding):
        kw = encoding.layout(codes_f.shape)
        q = to_numpy(codes_f).astype(np.int64)
        out = rq.dequantize(q, kw["scale"], kw["zero_point"], axis=kw["axis"],
                            block_size=kw["block_size"], convention=encoding.convention,
                            dtype=to_numpy(codes_f).dtype)
        ctx.save_for_backward(codes_f, scale, offset)
        ctx.encoding = encoding
        return from_numpy(out, codes_f.device)

    @staticmethod
    def backward(ctx, grad):
        codes, scale, offset = ctx.saved_tensors
        enc, shape = ctx.encoding, codes.shape
        s = enc.per_element(scale, shape).to(grad.dtype)
        o = enc.per_element(offset, shape).to(grad.dtype)
        g_codes, g_scale, g_offset = rq.aimet.dequantize_grad(codes, s, o, grad)
        return _qparam_grads(ctx.needs_input_grad, g_codes, g_scale, g_offset, scale, offset)


class _QuantizeCodes(torch.autograd.Function):
    """Codes ``clamp(round(x / scale) - offset, qmin, qmax)`` by ``rq.quantize`` under the
    encoding's convention, stored in x's dtype. As in AIMET's float arithmetic, a negative x (or
    -0.0) whose code is 0 with a zero offset and ``qmin < 0`` stores -0.0. Gradients (AIMET's,
    ``m`` the straight-through mask of the unclamped code): ``grad * m / scale`` to x,
    ``-grad * m * x / scale**2`` to ``scale`` and ``-grad * m`` to ``offset``, summed per group."""

    @staticmethod
    def forward(ctx, x, scale, offset, encoding):
        codes = from_numpy(encoding.codes(x).astype(to_numpy(x).dtype), x.device)
        z = encoding.per_element(encoding.zero_point.detach(), x.shape)
        codes = _negative_zero_codes(codes, x, z, encoding.qmin)
        ctx.save_for_backward(x, scale, offset)
        ctx.encoding = encoding
        return codes

    @staticmethod
    def backward(ctx, grad):
        x, scale, offset = ctx.saved_tensors
        enc = ctx.encoding
        kw = enc.layout(x.shape)
        mask = ste_mask(x, kw.pop("scale"), kw.pop("zero_point"), enc.qmin, enc.qmax,
                        convention=enc.convention, **kw)
        s = enc.per_element(scale.detach(), x.shape).to(grad.dtype)
        g_x, g_scale, g_offset = rq.aimet.quantize_grad(x.detach(), s, grad, mask.to(grad.dtype))
        return _qparam_grads(ctx.needs_input_grad, g_x, g_scale, g_offset, scale, offset)


def _negative_zero_codes(codes: torch.Tensor, x: torch.Tensor, zero_point, qmin: int):
    """AIMET's float arithmetic stores -0.0 for a negative x (or -0.0) whose code is 0 with a zero
    zero point and ``qmin < 0``; ``zero_point`` is spread over x already."""
    if qmin >= 0:
        return codes
    return torch.where((codes == 0) & torch.signbit(x) & (zero_point == 0),
                       torch.full_like(codes, -0.0), codes)


@torch.library.custom_op("refquant::quantize_codes", mutates_args=())
def _quantize_codes_op(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                       qmax: int, axis: int | None, block_size: list[int] | None,
                       convention: str) -> torch.Tensor:
    """The codes ``rq.quantize(x, scale, zero_point, ...)`` in x's dtype (the traced form of
    :class:`Quantize`; qparams in the core's per-tensor / ``axis`` / ``block_size`` layout)."""
    codes = rq.quantize(to_numpy(x), to_numpy(scale), to_numpy(zero_point), qmin=qmin, qmax=qmax,
                        axis=axis, block_size=block_size, convention=convention)
    codes_t = from_numpy(codes.astype(to_numpy(x).dtype), x.device)
    z = _broadcast_bounds(zero_point.detach(), x.shape, axis, block_size)
    return _negative_zero_codes(codes_t, x, z, qmin)


@_quantize_codes_op.register_fake
def _(x, *args):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("refquant::ste_mask", mutates_args=())
def _ste_mask_op(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                 qmax: int, axis: int | None, block_size: list[int] | None,
                 convention: str) -> torch.Tensor:
    """:func:`refquant_torch.functional.ste_mask` as an op (bool, x's shape)."""
    return ste_mask(x, to_numpy(scale), to_numpy(zero_point), qmin, qmax, axis=axis,
                    block_size=block_size, convention=convention).clone()


@_ste_mask_op.register_fake
def _(x, *args):
    return torch.empty_like(x, dtype=torch.bool, memory_format=torch.contiguous_format)


def _codes_setup(ctx, inputs, output):
    x, scale, zero_point, *static = inputs
    ctx.save_for_backward(x, scale, zero_point)
    ctx.static = static


def _codes_backward(ctx, grad):
    """AIMET's gradients (as :class:`_QuantizeCodes`): ``grad * m / s`` to x,
    ``-grad * m * x / s**2`` to the scale and ``grad * m`` to the zero point, summed per group."""
    x, scale, zero_point = ctx.saved_tensors
    qmin, qmax, axis, block, convention = ctx.static
    mask = torch.ops.refquant.ste_mask(x, scale, zero_point, qmin, qmax, axis, block, convention)
    s = _broadcast_bounds(scale.detach(), x.shape, axis, block).to(grad.dtype)
    g_x, g_scale, g_offset = rq.aimet.quantize_grad(x.detach(), s, grad, mask.to(grad.dtype))
    groups = [1] * x.dim() if axis is None and block is None else (
        [n // b for n, b in zip(x.shape, block, strict=True)] if block is not None
        else [x.shape[d] if d == axis else 1 for d in range(x.dim())])
    need = ctx.needs_input_grad
    if need[1]:
        g_scale = _reduce_to(g_scale, groups).reshape(scale.shape).to(scale.dtype)
    g_zero_point = None  # zero_point = -offset
    if need[2]:
        g_zero_point = _reduce_to(-g_offset, groups).reshape(zero_point.shape).to(zero_point.dtype)
    return g_x if need[0] else None, g_scale if need[1] else None, g_zero_point, *(None,) * 5


_quantize_codes_op.register_autograd(_codes_backward, setup_context=_codes_setup)


class QuantizedTensor(_EncodedTensor):
    """Integer codes stored in a float tensor, with the ``encoding`` to map them back.

    ``dequantize()`` gives the values ``(q + offset) * scale`` as a :class:`DequantizedTensor`,
    ``quantized_repr()`` the codes in ``encoding.dtype``. ``clone``, ``detach``, ``to`` and
    device moves keep the encoding; other ops return plain tensors.

    >>> import torch, refquant_torch as rqt
    >>> quantizer = rqt.Quantize(shape=(), bitwidth=4, symmetric=False)
    >>> quantizer.set_range(-2.0, 5.5)                  # scale 0.5, offset -4 (zero point 4)
    >>> x_q = quantizer(torch.tensor([-3.0, -0.4, 1.3, 7.0]))
    >>> type(x_q).__name__, x_q.tolist()
    ('QuantizedTensor', [0.0, 3.0, 7.0, 15.0])
    >>> x_q.quantized_repr()
    tensor([ 0,  3,  7, 15], dtype=torch.uint8)
    >>> x_q.dequantize().tolist()
    [-2.0, -0.5, 1.5, 5.5]
    >>> type(x_q * 2).__name__
    'Tensor'
    """

    def dequantize(self) -> DequantizedTensor:
        """``(q - zero_point) * scale`` (``rq.dequantize`` under the encoding's convention)."""
        return _encoded(_Dequantize, DequantizedTensor, self.as_subclass(torch.Tensor), self.encoding)

    def quantized_repr(self) -> torch.Tensor:
        """The codes in ``encoding.dtype`` (no gradient). Codes are held in the float tensor, so
        in float32 storage codes beyond 2**24 are already rounded; they are clamped to
        ``[qmin, qmax]`` before the cast."""
        enc = self.encoding
        codes = self.as_subclass(torch.Tensor).detach().to(torch.float64)
        return codes.clamp(enc.qmin, enc.qmax).to(enc.dtype)


class DequantizedTensor(_EncodedTensor):
    """Values on an encoding's grid; ``quantize()`` recovers the codes without loss.

    ``quantize()`` gives the codes ``clamp(round(x / scale) - offset, qmin, qmax)`` as a
    :class:`QuantizedTensor` with the same encoding, ``quantized_repr()`` those codes in
    ``encoding.dtype``.

    >>> import torch, refquant_torch as rqt
    >>> quant_dequant = rqt.QuantizeDequantize(shape=(), bitwidth=4, symmetric=False)
    >>> quant_dequant.set_range(-2.0, 5.5)
    >>> x_dq = quant_dequant(torch.tensor([-3.0, -0.4, 1.3, 7.0]))
    >>> type(x_dq).__name__, x_dq.tolist()
    ('DequantizedTensor', [-2.0, -0.5, 1.5, 5.5])
    >>> x_dq.quantize().tolist()
    [0.0, 3.0, 7.0, 15.0]
    >>> x_dq.quantized_repr()
    tensor([ 0,  3,  7, 15], dtype=torch.uint8)
    >>> torch.equal(x_dq.quantize().dequantize(), x_dq)
    True
    """

    def quantize(self) -> QuantizedTensor:
        """The codes ``clamp(round(x / scale) - offset, qmin, qmax)`` (``rq.quantize`` under the
        encoding's convention) as a :class:`QuantizedTensor` with the same encoding."""
        return _encoded(_QuantizeCodes, QuantizedTensor, self.as_subclass(torch.Tensor), self.encoding)

    def quantized_repr(self) -> torch.Tensor:
        """``quantize().quantized_repr()``: the codes in ``encoding.dtype``."""
        return self.quantize().quantized_repr()


def _ste_round(r: torch.Tensor) -> torch.Tensor:
    """``round_half_even(r)`` with the identity's gradient."""
    return r + (r.detach().round() - r.detach())


@torch.library.custom_op("refquant::aimet_encoding_range", mutates_args=())
def _encoding_range_op(x_min: torch.Tensor, x_max: torch.Tensor, qmin: int, qmax: int,
                       symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``rq.aimet.encoding_range`` as an op (no gradient)."""
    lo, hi = rq.aimet.encoding_range(to_numpy(x_min), to_numpy(x_max), qmin=qmin, qmax=qmax,
                                     symmetric=symmetric)
    return from_numpy(np.array(lo), x_min.device), from_numpy(np.array(hi), x_max.device)


@_encoding_range_op.register_fake
def _(x_min, x_max, *args):
    return torch.empty_like(x_min), torch.empty_like(x_max)


class _AffineQuantizerBase(torch.nn.Module):
    def __init__(self, shape, bitwidth: int, symmetric: bool, convention: str = "exact"):
        super().__init__()
        shape = tuple(shape) if isinstance(shape, (tuple, list, torch.Size)) else (int(shape),)
        bitwidth = int(bitwidth)
        if not 1 <= bitwidth <= 32:
            raise ValueError(f"bitwidth must be in 1..32; got {bitwidth}")
        self.shape, self.bitwidth, self.symmetric = shape, bitwidth, bool(symmetric)
        self.convention = convention
        fmt = rq.IntFormat(bitwidth, signed=self.symmetric)
        self.qmin, self.qmax = fmt.qmin, fmt.qmax
        self.min = torch.nn.Parameter(torch.zeros(shape))
        self.max = torch.nn.Parameter(torch.zeros(shape))
        self.register_buffer("_initialized", torch.tensor(False))
        self._has_range = False  # the buffer's value as a Python bool, read under torch.compile
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
        self._has_range = True

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._has_range = bool(self._initialized)

    def _scale_of(self, lo, hi) -> torch.Tensor:
        return rq.aimet.scale(lo, hi, qmin=self.qmin, qmax=self.qmax)

    def _offset_of(self, lo, hi) -> torch.Tensor:
        if self.symmetric:
            return torch.zeros_like(lo)
        return rq.aimet.offset(lo, hi, qmin=self.qmin, qmax=self.qmax, rint=_ste_round)

    def get_scale(self) -> torch.Tensor:
        """``rq.aimet.scale(min, max)``: ``(max - min) / (qmax - qmin)`` in the parameters' dtype
        (differentiable in ``min`` and ``max``)."""
        return self._scale_of(self.min, self.max)

    def get_offset(self) -> torch.Tensor:
        """0 when symmetric, else ``rq.aimet.offset(min, max)``: ``round(min / scale) - qmin``
        (round half to even, straight through for the gradient)."""
        return self._offset_of(self.min, self.max)

    def get_encoding(self) -> AffineEncoding:
        initialized = self._has_range if torch.compiler.is_compiling() else self.is_initialized()
        if not initialized:
            raise RuntimeError(f"{type(self).__name__} has no encoding: call set_range() or run "
                               "it inside compute_encodings()")
        return AffineEncoding(self.get_scale(), self.get_offset(), self.qmin, self.qmax,
                              self.symmetric, self.convention)

    @contextlib.contextmanager
    def compute_encodings(self):
        """Inside: each call quantizes with the range of its own input (AIMET's dynamic
        encoding); on exit the range computed from the union of every input seen becomes
        ``min`` / ``max`` (:meth:`encoding_range`). Without a call inside, the range is kept."""
        self._observing, self._seen = True, None
        try:
            yield self
        finally:
            self._observing = False
            seen, self._seen = self._seen, None
        if seen is not None:
            self.set_range(*self.encoding_range(*seen))

    def encoding_range(self, x_min: torch.Tensor, x_max: torch.Tensor):
        """``(min, max)`` from observed extremes: ``rq.aimet.encoding_range`` (AIMET's min-max
        analyzer) in the extremes' dtype."""
        return torch.ops.refquant.aimet_encoding_range(x_min, x_max, self.qmin, self.qmax,
                                                       self.symmetric)

    def _group_reduce(self, x: torch.Tensor, fn) -> torch.Tensor:
        shape = [1] * (x.dim() - len(self.shape)) + list(self.shape)
        parts = x.detach().reshape([d for g, n in zip(shape, x.shape, strict=True)
                                    for d in (g, n // g)])
        dims = tuple(range(1, 2 * x.dim(), 2)) + tuple(
            2 * i for i, g in enumerate(shape) if g == 1)
        return fn(parts, dims).reshape(self.shape).to(self.min.dtype)

    @torch.no_grad()
    def _observe(self, x):
        """This input's range (:meth:`encoding_range` of its extremes); the extremes join the
        running union."""
        lo = self._group_reduce(x, lambda t, d: t.amin(dim=d))
        hi = self._group_reduce(x, lambda t, d: t.amax(dim=d))
        if self._seen is None:
            self._seen = (lo, hi)
        else:
            self._seen = (torch.minimum(lo, self._seen[0]), torch.maximum(hi, self._seen[1]))
        return self.encoding_range(lo, hi)

    def _encoding_for(self, x) -> AffineEncoding:
        if self._observing:
            lo, hi = self._observe(x)
            return AffineEncoding(self._scale_of(lo, hi), self._offset_of(lo, hi), self.qmin,
                                  self.qmax, self.symmetric, self.convention)
        return self.get_encoding()

    def extra_repr(self):
        return f"shape={self.shape}, bitwidth={self.bitwidth}, symmetric={self.symmetric}"


class Quantize(_AffineQuantizerBase):
    """``Quantize(shape, bitwidth, symmetric)``: x to a :class:`QuantizedTensor` of codes
    ``clamp(round(x / scale) - offset, qmin, qmax)`` (AIMET's documented example):

    >>> import torch, refquant_torch as rqt
    >>> x = torch.tensor([[2.57, -2.312], [0.153, 0.205]])
    >>> quantizer = rqt.Quantize(shape=(), bitwidth=8, symmetric=True)
    >>> quantizer.set_range(-128 * 0.1, 127 * 0.1)
    >>> x_q = quantizer(x)
    >>> x_q
    QuantizedTensor([[ 26., -23.],
                     [  2.,   2.]], grad_fn=<AliasBackward0>)
    >>> x_dq = x_q.dequantize()
    >>> x_dq
    DequantizedTensor([[ 2.6000, -2.3000],
                       [ 0.2000,  0.2000]], grad_fn=<AliasBackward0>)
    >>> torch.equal(x_dq.encoding.scale, x_q.encoding.scale)
    True
    """

    def forward(self, x: torch.Tensor) -> QuantizedTensor:
        enc = self._encoding_for(x)
        if torch.compiler.is_compiling():
            kw = enc.layout(x.shape, tensors=True)
            return torch.ops.refquant.quantize_codes(
                x, kw["scale"], kw["zero_point"], enc.qmin, enc.qmax, kw["axis"],
                kw["block_size"], enc.convention)
        return _encoded(_QuantizeCodes, QuantizedTensor, x, enc)


class QuantizeDequantize(_AffineQuantizerBase):
    """``QuantizeDequantize(shape, bitwidth, symmetric)``: x to a :class:`DequantizedTensor`
    ``rqt.fake_quantize(x, scale, -offset, ...)`` (AIMET's documented example):

    >>> import torch, refquant_torch as rqt
    >>> x = torch.tensor([[0.39, 51.0], [3.521, 9.41]])
    >>> quant_dequant = rqt.QuantizeDequantize(shape=(), bitwidth=8, symmetric=False)
    >>> quant_dequant.set_range(-10, 41)
    >>> x_qdq = quant_dequant(x)
    >>> x_qdq
    DequantizedTensor([[ 0.4000, 41.0000],
                       [ 3.6000,  9.4000]], grad_fn=<AliasBackward0>)
    >>> x_qdq.quantize()
    QuantizedTensor([[ 52., 255.],
                     [ 68.,  97.]], grad_fn=<AliasBackward0>)
    >>> x_qdq.quantized_repr()
    tensor([[ 52, 255],
            [ 68,  97]], dtype=torch.uint8)
    """

    def forward(self, x: torch.Tensor) -> DequantizedTensor:
        enc = self._encoding_for(x)
        kw = enc.layout(x.shape, tensors=True)
        out = fake_quantize(x, kw.pop("scale"), kw.pop("zero_point"), qmin=enc.qmin,
                            qmax=enc.qmax, convention=enc.convention, **kw)
        if torch.compiler.is_compiling():
            return out
        return _wrap(DequantizedTensor, out, enc)
