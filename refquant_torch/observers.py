"""torch.ao / torchao observers whose statistics and qparams come from :mod:`refquant.observers`.

``MinMaxObserver``, ``MovingAverageMinMaxObserver``, ``PerChannelMinMaxObserver`` and
``MovingAveragePerChannelMinMaxObserver`` take torch's constructor arguments and keep torch's
buffers (``min_val`` / ``max_val``, so state_dict, ``convert_pt2e`` and QConfigs work unchanged),
but ``forward(x)`` updates them with ``rq.observers.MinMax`` / ``MovingAverageMinMax`` (float32
statistics) and ``calculate_qparams()`` is ``rq.choose_qparams(min_val, max_val,
method="torch", ...)`` with the observer's range, dtype, qscheme, eps and reduce_range. The
result equals torch's observers bit for bit (tests/torch/test_observers.py). ``x`` is returned
unchanged and never modified.
"""

from __future__ import annotations

import numpy as np
import torch

import refquant as rq

from ._bridge import check_float_tensor, to_numpy
from ._torchao import quiet_import

_ao = quiet_import("torchao.quantization.pt2e")

__all__ = ["MinMaxObserver", "MovingAverageMinMaxObserver", "PerChannelMinMaxObserver",
           "MovingAveragePerChannelMinMaxObserver", "histogram_arithmetic"]


def histogram_arithmetic() -> dict:
    """The ``rq.observers.Histogram`` arguments that reproduce the installed torch's
    ``HistogramObserver`` on this machine: ``rq.interop.torch_histogram_arithmetic()``
    (``sum_lanes`` and ``linspace_fma``, measured by running torch).

    >>> import refquant as rq, refquant_torch.observers as obs
    >>> kw = obs.histogram_arithmetic()
    >>> sorted(kw), kw["sum_lanes"] in (4, 8, 16)
    (['linspace_fma', 'sum_lanes'], True)
    >>> rq.observers.Histogram(fmt=rq.uint8, **kw).sum_lanes == kw["sum_lanes"]
    True
    """
    return rq.interop.torch_histogram_arithmetic()


def _name(value) -> str:
    return str(value).rsplit(".", 1)[-1]


class _RefStatistics:
    """The refquant core behind a torch observer's buffers."""

    _core = rq.observers.MinMax

    def _core_kwargs(self) -> dict:
        kw = {"symmetric": self.qscheme in (torch.per_tensor_symmetric, torch.per_channel_symmetric),
              "qscheme": _name(self.qscheme), "eps": float(self.eps),
              "reduce_range": bool(self.reduce_range), "dtype": _name(self.dtype)}
        if self.has_customized_qrange:
            kw["qmin"], kw["qmax"] = int(self.quant_min), int(self.quant_max)
        if hasattr(self, "averaging_constant"):
            kw["averaging_constant"] = float(self.averaging_constant)
        if getattr(self, "ch_axis", None) is not None and self._per_channel:
            kw["axis"] = int(self.ch_axis)
        return kw

    _per_channel = False

    def _core_observer(self):
        obs = self._core(**self._core_kwargs())
        if self._per_channel:
            if self.min_val.numel():
                obs.min_val = to_numpy(self.min_val.detach()).astype(np.float32)
                obs.max_val = to_numpy(self.max_val.detach()).astype(np.float32)
        else:
            obs.min_val = np.float32(self.min_val.item())
            obs.max_val = np.float32(self.max_val.item())
        return obs

    def forward(self, x_orig):
        """Record ``x_orig`` in ``min_val`` / ``max_val`` (by the core); returns it unchanged."""
        if x_orig.numel() == 0:
            return x_orig
        check_float_tensor(x_orig, "x")
        obs = self._core_observer()
        obs.update(to_numpy(x_orig.detach()))
        mn = torch.as_tensor(np.asarray(obs.min_val, dtype=np.float32))
        mx = torch.as_tensor(np.asarray(obs.max_val, dtype=np.float32))
        if self._per_channel:
            self.min_val.resize_(mn.shape)
            self.max_val.resize_(mx.shape)
        self.min_val.copy_(mn.reshape(self.min_val.shape))
        self.max_val.copy_(mx.reshape(self.max_val.shape))
        return x_orig

    @torch.jit.export
    def calculate_qparams(self):
        """``rq.choose_qparams(min_val, max_val, method="torch", ...)`` as tensors (torch's
        dtypes: float32 scale; int32, int64 or float32 zero point)."""
        s, z = self._core_observer().qparams()
        device = self.min_val.device
        scale = torch.as_tensor(np.array(s, ndmin=1)).to(device)
        zp = torch.as_tensor(np.array(z, ndmin=1)).to(device)
        if not self._per_channel:
            scale, zp = scale.reshape(1), zp.reshape(1)
        return scale, zp


class MinMaxObserver(_RefStatistics, _ao.MinMaxObserver):
    """torch's ``MinMaxObserver`` with refquant statistics and qparams (see the module doc).

    >>> import torch, refquant_torch.observers as obs
    >>> o = obs.MinMaxObserver(dtype=torch.quint8)
    >>> _ = o(torch.tensor([-1.0, 0.5])); _ = o(torch.tensor([2.0]))
    >>> [t.tolist() for t in o.calculate_qparams()]
    [[0.0117647061124444], [85]]
    """


class MovingAverageMinMaxObserver(_RefStatistics, _ao.MovingAverageMinMaxObserver):
    """torch's ``MovingAverageMinMaxObserver`` with refquant statistics and qparams."""

    _core = rq.observers.MovingAverageMinMax


class PerChannelMinMaxObserver(_RefStatistics, _ao.PerChannelMinMaxObserver):
    """torch's ``PerChannelMinMaxObserver`` with refquant statistics and qparams."""

    _per_channel = True


class MovingAveragePerChannelMinMaxObserver(_RefStatistics,
                                            _ao.MovingAveragePerChannelMinMaxObserver):
    """torch's ``MovingAveragePerChannelMinMaxObserver`` with refquant statistics and qparams."""

    _core = rq.observers.MovingAverageMinMax
    _per_channel = True
