"""Quantizers with TorchApprox's interface: ``bitwidth``, ``int_max``, ``scale_factor``,
``quantize``.

``scale_factor`` is TorchApprox's multiplier (``int_max / range``: x times it lands on the integer
grid), the inverse of refquant's ``scale``. ``quantize(x)`` returns the integer codes (a float
tensor of x's dtype holding exact integers in ``[-int_max, int_max]``, ``int_max =
2**(bitwidth - 1) - 1``) with TorchApprox's gradient ``grad * scale_factor`` (a static node: the
range gets no gradient from it); ``forward(x)`` is the differentiable fake quant
(``quantize(x) / scale_factor`` on the real line, rounded once to x's dtype by the core).
"""

from __future__ import annotations

import numpy as np
import torch

import refquant as rq

from .._bridge import check_float_tensor, from_numpy, to_numpy
from ..functional import fake_quantize, pact


class _Codes(torch.autograd.Function):
    """Integer codes (precomputed by the core) with the straight-through gradient
    ``grad * scale_factor`` to x, as TorchApprox's ``Quant`` nodes."""

    @staticmethod
    def forward(ctx, x, codes, scale_factor):
        ctx.scale_factor = scale_factor
        return codes

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale_factor, None, None


def _int_max(bitwidth: int) -> int:
    if int(bitwidth) < 2:
        raise ValueError(f"bitwidth must be >= 2; got {bitwidth}")
    return 2 ** (int(bitwidth) - 1) - 1


class _ApproxQuant(torch.nn.Module):
    """TorchApprox's ``bitwidth`` and ``int_max`` (``2**(bitwidth - 1) - 1`` signed, else
    ``2**bitwidth - 1``)."""

    signed = True

    def __init__(self, bitwidth: int):
        super().__init__()
        self._bitwidth = int(bitwidth)
        _int_max(self._bitwidth)

    @property
    def bitwidth(self) -> int:
        return self._bitwidth

    @property
    def int_max(self) -> int:
        return _int_max(self._bitwidth) if self.signed else 2**self._bitwidth - 1


class MinMaxQuant(_ApproxQuant):
    """Symmetric min-max quantizer with TorchApprox's ``MinMaxQuant(bitwidth=8)`` interface.

    ``quantize(x)``: the range is ``max|x|`` of this x (TorchApprox's stateless rule; it is kept in
    the ``minmax`` buffer and sets ``scale_factor = int_max / minmax``), codes
    ``rq.quantize(x, minmax / int_max, 0, qmin=-int_max, qmax=int_max)`` (exact convention).
    ``forward(x)``: in training the range is ``max|x|`` of the batch (stored), in eval the stored
    one; output ``rqt.fake_quantize(x, minmax / int_max, 0, qmin=-int_max, qmax=int_max)``
    (straight-through gradient). A zero range keeps the previous one (initially 1).

    >>> import torch, refquant_torch as rqt
    >>> q = rqt.nn.MinMaxQuant(4)
    >>> x = torch.tensor([0.5, -1.75, 0.26])
    >>> q.quantize(x).tolist(), round(q.scale_factor, 4)
    ([2.0, -7.0, 1.0], 4.0)
    """

    def __init__(self, bitwidth: int = 8):
        super().__init__(bitwidth)
        self.register_buffer("minmax", torch.tensor(1.0))

    @property
    def scale_factor(self) -> float:
        """``int_max / minmax`` (float64)."""
        return self.int_max / float(self.minmax)

    @torch.no_grad()
    def _update(self, x):
        amax = x.detach().abs().max().to(self.minmax.dtype)
        self.minmax.copy_(torch.where(amax > 0, amax, self.minmax))

    def _scale(self) -> float:
        return float(self.minmax) / self.int_max

    def forward(self, x):
        check_float_tensor(x)
        if self.training:
            self._update(x)
        # float64 minmax / int_max: the value of float(minmax) / int_max, as a tensor (traceable)
        scale = self.minmax.detach().to(torch.float64) / self.int_max
        return fake_quantize(x, scale, 0, qmin=-self.int_max, qmax=self.int_max)

    def quantize(self, x):
        """TorchApprox's ``quantize``: the integer codes ``clamp(round_half_even(x / s), -int_max,
        int_max)`` with ``s = minmax / int_max`` in float64 (``rq.quantize(x, s, 0, ...)``, exact
        convention: the quotient is not rounded) as a float tensor of x's dtype. ``minmax`` first
        becomes ``max|x|`` of this x (in training and eval alike; a zero range keeps the previous
        one). Gradient ``grad * scale_factor`` (``int_max / minmax``, float64) to x, none to the
        range.

        >>> import torch, refquant_torch as rqt
        >>> q = rqt.nn.MinMaxQuant(4).eval()
        >>> x = torch.tensor([0.5, -1.75, 0.26], requires_grad=True)
        >>> codes = q.quantize(x); codes.tolist(), q.minmax.item()
        ([2.0, -7.0, 1.0], 1.75)
        >>> codes.sum().backward(); x.grad.tolist()
        [4.0, 4.0, 4.0]
        """
        check_float_tensor(x)
        self._update(x)
        codes = rq.quantize(to_numpy(x), self._scale(), 0, qmin=-self.int_max, qmax=self.int_max)
        codes_t = from_numpy(codes.astype(to_numpy(x).dtype), x.device)
        return _Codes.apply(x, codes_t, self.scale_factor)


class PACTQuant(_ApproxQuant):
    """PACT quantizer with a learnable ``alpha`` and TorchApprox's ``PACTQuant(bitwidth=8)``
    interface (symmetric around zero, ``alpha`` initially 2.2, as TorchApprox's).

    ``forward(x) = rqt.pact(x, alpha, bits=bitwidth, signed=signed)`` (the core's PACT and
    gradients, ``alpha`` learns); ``quantize(x)``: the codes ``round(clip(x, lo, alpha) * n /
    alpha)`` of that forward (``n = int_max``: ``2**(bitwidth-1) - 1`` signed, ``2**bitwidth - 1``
    with ``signed=False``), with ``grad * scale_factor`` to x and none to alpha;
    ``scale_factor = n / alpha``.

    >>> import torch, refquant_torch as rqt
    >>> q = rqt.nn.PACTQuant(4, alpha=1.75)
    >>> q.quantize(torch.tensor([0.5, -2.0, 0.1])).tolist(), q.scale_factor
    ([2.0, -7.0, 0.0], 4.0)
    """

    def __init__(self, bitwidth: int = 8, alpha: float = 2.2, signed: bool = True):
        super().__init__(bitwidth)
        self.signed = bool(signed)
        self.alpha = torch.nn.Parameter(torch.tensor([float(alpha)]))

    @property
    def scale_factor(self) -> float:
        """``int_max / alpha`` (float64)."""
        return self.int_max / float(self.alpha.detach())

    def forward(self, x):
        return pact(x, self.alpha, bits=self._bitwidth, signed=self.signed)

    def quantize(self, x):
        """TorchApprox's ``quantize``: the integer codes ``round_half_even(clip(x, lo, alpha) * n /
        alpha)`` of :meth:`forward` (``lo = -alpha`` signed, else 0; ``n = int_max``):
        ``rq.pact.quantize`` (NaN gives NaN), as a float tensor of x's dtype. Gradient ``grad *
        scale_factor`` (``n / alpha``, float64) to x, none to ``alpha``.

        >>> import torch, refquant_torch as rqt
        >>> q = rqt.nn.PACTQuant(4, alpha=1.75)
        >>> x = torch.tensor([0.5, -2.0, 0.1], requires_grad=True)
        >>> codes = q.quantize(x); codes.tolist()
        [2.0, -7.0, 0.0]
        >>> codes.sum().backward(); x.grad.tolist(), q.alpha.grad
        ([4.0, 4.0, 4.0], None)
        """
        check_float_tensor(x)
        xs = to_numpy(x)
        nan = np.isnan(xs)  # NaN has no PACT level: its code is NaN
        codes = rq.pact.quantize(np.where(nan, np.zeros_like(xs), xs) if nan.any() else xs,
                                 float(self.alpha.detach().to(torch.float64)), bits=self._bitwidth,
                                 signed=self.signed)
        codes = np.where(nan, np.nan, codes)
        codes_t = from_numpy(codes, x.device).to(x.dtype)
        return _Codes.apply(x, codes_t, self.scale_factor)
