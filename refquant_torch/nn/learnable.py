"""Learnable-clip quantizers: ``PACT`` and ``APoTFakeQuantize``."""

from __future__ import annotations

import torch

from ..functional import apot_fake_quantize, pact


class PACT(torch.nn.Module):
    """PACT (arXiv:1805.06085) with a learnable clipping level ``alpha`` (a 1-element Parameter).

    ``forward(x) = rqt.pact(x, alpha, bits=bits, signed=signed)``: ``clip(x, lo, alpha)`` on
    ``2**bits`` levels (see :func:`refquant_torch.pact`); ``alpha`` learns from the clipped part.

    >>> import torch, refquant_torch as rqt
    >>> m = rqt.nn.PACT(bits=2, alpha=1.5)
    >>> y = m(torch.tensor([-1.0, 0.4, 2.0])); y.tolist()
    [0.0, 0.5, 1.5]
    >>> y.sum().backward(); m.alpha.grad.tolist()
    [1.0]
    """

    def __init__(self, bits: int = 8, alpha: float = 6.0, signed: bool = False):
        super().__init__()
        self.bits, self.signed = int(bits), bool(signed)
        self.alpha = torch.nn.Parameter(torch.tensor([float(alpha)]))

    def forward(self, x):
        return pact(x, self.alpha, bits=self.bits, signed=self.signed)

    def extra_repr(self):
        return f"bits={self.bits}, signed={self.signed}"


class APoTFakeQuantize(torch.nn.Module):
    """APoT (arXiv:1909.13144) with a learnable clipping level ``alpha``.

    ``forward(x) = rqt.apot_fake_quantize(x, alpha, bits=bits, k=k, signed=signed)``: the
    nearest level of ``rq.apot.levels(bits, k, alpha=alpha, signed=signed)`` after clipping to
    ``[-alpha, alpha]``.

    >>> import torch, refquant_torch as rqt
    >>> m = rqt.nn.APoTFakeQuantize(bits=3, k=1, alpha=1.0)
    >>> m(torch.tensor([2.0, -0.9, 0.0])).tolist()
    [1.0, -1.0, 0.0]
    """

    def __init__(self, bits: int = 4, k: int = 2, alpha: float = 1.0, signed: bool = True,
                 convention: str = "paper"):
        super().__init__()
        self.bits, self.k, self.signed = int(bits), int(k), bool(signed)
        self.convention = convention
        self.alpha = torch.nn.Parameter(torch.tensor([float(alpha)]))

    def forward(self, x):
        return apot_fake_quantize(x, self.alpha, bits=self.bits, k=self.k, signed=self.signed,
                                  convention=self.convention)

    def extra_repr(self):
        return f"bits={self.bits}, k={self.k}, signed={self.signed}"
