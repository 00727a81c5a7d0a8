"""Quantizers with TorchApprox's interface: ``bitwidth``, ``scale_factor``, ``quantize``.

``scale_factor`` is TorchApprox's multiplier (``int_max / range``: x times it lands on the integer
grid), the inverse of refquant's ``scale``. ``forward`` returns the fake-quantized tensor and
``quantize`` the integer-valued float tensor (``forward(x) * scale_factor``, exact integers).
"""

from __future__ import annotations

import torch

from ..functional import fake_quantize, pact


class MinMaxQuant(torch.nn.Module):
    """Symmetric min-max quantizer: ``range = max|x|`` of the last training batch (a buffer),
    codes in ``[-int_max, int_max]`` with ``int_max = 2**(bitwidth-1) - 1``, forward
    ``rqt.fake_quantize(x, range / int_max, 0, qmin=-int_max, qmax=int_max)``
    (straight-through gradient)."""

    def __init__(self, bitwidth: int = 8):
        super().__init__()
        if int(bitwidth) < 2:
            raise ValueError(f"bitwidth must be >= 2; got {bitwidth}")
        self._bitwidth = int(bitwidth)
        self.register_buffer("minmax", torch.tensor(1.0))

    @property
    def bitwidth(self) -> int:
        return self._bitwidth

    @property
    def int_max(self) -> int:
        return 2 ** (self._bitwidth - 1) - 1

    @property
    def scale_factor(self) -> float:
        return self.int_max / float(self.minmax)

    def forward(self, x):
        if self.training:
            with torch.no_grad():
                amax = x.detach().abs().max().to(self.minmax.dtype)
                self.minmax.copy_(torch.where(amax > 0, amax, self.minmax))
        return fake_quantize(x, float(self.minmax) / self.int_max, 0, qmin=-self.int_max,
                             qmax=self.int_max)

    def quantize(self, x):
        return (self.forward(x) * self.scale_factor).round()


class PACTQuant(torch.nn.Module):
    """PACT quantizer with a learnable ``alpha``: forward ``rqt.pact(x, alpha, bits=bitwidth,
    signed=signed)``; ``scale_factor = n / alpha`` with ``n`` the number of positive steps
    (``2**bitwidth - 1`` unsigned, ``2**(bitwidth-1) - 1`` signed)."""

    def __init__(self, bitwidth: int = 8, alpha: float = 6.0, signed: bool = False):
        super().__init__()
        self._bitwidth = int(bitwidth)
        self.signed = bool(signed)
        self.alpha = torch.nn.Parameter(torch.tensor([float(alpha)]))

    @property
    def bitwidth(self) -> int:
        return self._bitwidth

    @property
    def int_max(self) -> int:
        return 2 ** (self._bitwidth - 1) - 1 if self.signed else 2**self._bitwidth - 1

    @property
    def scale_factor(self) -> float:
        return self.int_max / float(self.alpha)

    def forward(self, x):
        return pact(x, self.alpha, bits=self._bitwidth, signed=self.signed)

    def quantize(self, x):
        return (self.forward(x) * self.scale_factor).round()
