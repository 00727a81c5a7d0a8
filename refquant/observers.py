"""Stateful observers: watch a stream of arrays, then choose ``(scale, zero_point)``.

Every observer takes the integer range as ``qmin=``/``qmax=`` or ``fmt=`` (or, under
``method="torch"``, a torch ``dtype=`` name such as ``"quint8"``), ``symmetric=False``,
``axis=None`` (an int gives per-channel statistics along that axis) and ``method="torch"``;
other keywords go to :func:`refquant.choose_qparams` (``eps``, ``reduce_range``, ``qscheme``,
``mapping``, ...). Methods:

* ``update(x)`` records ``x`` and returns ``self``; ``x`` is never modified. An empty ``x`` is
  ignored. Data are held in float32 (torch's observer buffers): float64 input is rounded to
  float32 first, float16/bfloat16 widen exactly.
* ``qparams()`` -> ``(scale, zero_point)`` from the statistics (see :mod:`refquant.qparams`);
  an observer that saw nothing returns torch's default ``(1.0, 0)`` under ``method="torch"`` and
  raises ValueError otherwise.
* ``reset()`` forgets everything; ``state_dict()`` / ``from_state_dict(d)`` round-trip through
  a plain JSON-safe dict (non-finite floats are written as the strings "inf", "-inf", "nan").

Edge cases, the same for every observer unless its docstring says otherwise:

* empty ``x``: ignored (as torch's observers do);
* signed zeros: ``min_val``/``max_val`` equal torch's as numbers, but the sign of a zero statistic
  follows NumPy's reduction where torch's follows its vector loop; every qparam rule gives the
  same scale and zero point for either sign;
* all-equal data (``min == max``): a valid range; the rules' ``eps`` (or their own fallback)
  keeps the scale positive;
* NaN: the min/max observers propagate it as ``torch.aminmax`` does (the statistics become NaN
  and stay NaN), and ``qparams()`` then raises ValueError (``"fbgemm"`` and ``"torchao"``: the
  backend's own NaN result); :class:`Histogram` (and
  :class:`Percentile`) raise ValueError at ``update`` and keep their state (torch's ``histc``
  raises RuntimeError); :class:`APoT` makes alpha NaN;
* +-inf: the min/max observers record it (``qparams()`` then raises ValueError under
  ``method="torch"``, where torch would return an infinite scale; ``"fbgemm"`` and ``"torchao"``
  compute with it as those backends do); :class:`Histogram` drops +-inf elements as torch does;
* ``min > max`` cannot arise from plain min/max data, but a moving average can leave min a few
  ulps above max: ``method="fbgemm"`` computes qparams from it as the fused op does, the other
  methods raise ValueError (torch's observers raise AssertionError).

>>> import numpy as np, refquant as rq
>>> obs = rq.observers.MinMax(fmt=rq.uint8)
>>> obs.update(np.float32([-1.0, 0.5])).update(np.float32([2.0])).qparams()
(np.float32(0.011764706), np.int32(85))
"""

from __future__ import annotations

import numpy as np

from ._validation import check_axis, dtype_named, float_array, integer_scalar, resolve_range
from .qparams import choose_qparams

_FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")

__all__ = ["MinMax", "MovingAverageMinMax", "Histogram", "Percentile", "MSE", "APoT"]


def _as_f32(x) -> np.ndarray:
    a = float_array(x, "x")
    return np.ascontiguousarray(a, dtype=np.float32)


def _enc(v):
    """JSON-safe float or list of floats (None stays None)."""
    if v is None:
        return None
    if isinstance(v, np.ndarray):
        return [_enc(float(t)) for t in v.ravel()]
    v = float(v)
    return v if np.isfinite(v) else ("nan" if np.isnan(v) else ("inf" if v > 0 else "-inf"))


def _dec(v, dtype=np.float32):
    if isinstance(v, list):
        return np.array([float(t) for t in v], dtype)
    return dtype(float(v))


class _Observer:
    """Shared constructor, range handling and state (de)serialization."""

    _fields: tuple[str, ...] = ()

    def __init__(self, *, qmin=None, qmax=None, fmt=None, symmetric=False, axis=None,
                 method="torch", **options):
        self.qmin, self.qmax, self.fmt = qmin, qmax, fmt
        self.symmetric = bool(symmetric)
        self.axis = None if axis is None else integer_scalar(axis, "axis")
        self.method = method
        self.options = dict(options)
        self._validate()
        self.reset()

    def _validate(self):
        """Refuse a bad configuration now rather than at the first ``qparams()``."""
        choose_qparams(np.float32(0), np.float32(1), **self._range_kw())

    def _range_kw(self):
        kw = {"qmin": self.qmin, "qmax": self.qmax, "symmetric": self.symmetric,
              "method": self.method, **self.options}
        if self.fmt is not None:
            kw["fmt"] = self.fmt
        return kw

    def _choose(self, mn, mx):
        return choose_qparams(mn, mx, **self._range_kw())

    def _rows(self, x: np.ndarray) -> np.ndarray:
        """x with the channel axis first, flattened to (channels, -1), C-contiguous."""
        ax = check_axis(self.axis, x.ndim)
        return np.ascontiguousarray(np.moveaxis(x, ax, 0).reshape(x.shape[ax], -1))

    def _config(self):
        fmt = self.fmt
        if fmt is not None and not isinstance(fmt, str):
            fmt = {"bits": fmt.bits, "signed": fmt.signed, "narrow": fmt.narrow}
        return {"qmin": self.qmin, "qmax": self.qmax, "fmt": fmt, "symmetric": self.symmetric,
                "axis": self.axis, "method": self.method, "options": self.options}

    def state_dict(self) -> dict:
        """A plain JSON-safe dict: the configuration and the statistics."""
        return {"type": type(self).__name__, "config": self._config(),
                "state": {k: _enc(getattr(self, k)) for k in self._fields}}

    @classmethod
    def from_state_dict(cls, d: dict):
        """Rebuild an observer from :meth:`state_dict` output."""
        if d.get("type") != cls.__name__:
            raise ValueError(f"state is for {d.get('type')!r}, not {cls.__name__}")
        cfg = dict(d["config"])
        fmt = cfg.pop("fmt")
        if isinstance(fmt, dict):
            from .formats import IntFormat

            fmt = IntFormat(**fmt)
        options = cfg.pop("options")
        obs = cls(fmt=fmt, **cfg, **options)
        obs.load_state_dict(d)
        return obs

    def load_state_dict(self, d: dict):
        """Restore the statistics saved by :meth:`state_dict`; returns self."""
        for k in self._fields:
            v = d["state"][k]
            setattr(self, k, None if v is None else _dec(v, self._dtype_of(k)))
        return self

    def _dtype_of(self, field):
        return np.float32


class MinMax(_Observer):
    """Running minimum and maximum (torch.ao ``MinMaxObserver`` / ``PerChannelMinMaxObserver``).

    ``min = min(min, aminmax(x).min)``, ``max = max(max, aminmax(x).max)`` in float32, per tensor
    or, with ``axis``, per channel (the axis moved first, the rest flattened). ``qparams()`` is
    ``choose_qparams(min, max, ...)``. A per-channel update with a different number of channels
    raises ValueError.

    >>> import numpy as np, refquant as rq
    >>> w = np.float32([[-1.0, 0.5], [0.25, 2.0]])
    >>> s, z = rq.observers.MinMax(fmt=rq.int8, symmetric=True, axis=0).update(w).qparams()
    >>> s.tolist(), z.tolist()
    ([0.007843137718737125, 0.01568627543747425], [0, 0])
    """

    _fields = ("min_val", "max_val")

    def reset(self):
        """Forget every update: back to the state of a new observer."""
        self.min_val = None if self.axis is not None else np.float32(np.inf)
        self.max_val = None if self.axis is not None else np.float32(-np.inf)
        self._input_dtype = None

    def _current(self, x):
        """(min, max) of x: float32 scalars, or float32 arrays per channel."""
        from ._kernels import _observers as k

        if self.axis is None:
            mn, mx = k.aminmax(x.reshape(-1))
            return np.float32(mn), np.float32(mx)
        ax = check_axis(self.axis, x.ndim)
        if self.min_val is not None and x.shape[ax] != self.min_val.shape[0]:
            raise ValueError(f"x has {x.shape[ax]} channels along axis {self.axis}; "
                             f"the observer holds {self.min_val.shape[0]}")
        return k.aminmax_axis(x, ax)

    def state_dict(self) -> dict:
        """A plain JSON-safe dict: the configuration, the statistics and the last input dtype
        (``method="torchao"`` computes in it)."""
        d = super().state_dict()
        d["state"]["input_dtype"] = None if self._input_dtype is None else self._input_dtype.name
        return d

    def load_state_dict(self, d: dict):
        """Restore the statistics saved by :meth:`state_dict`; returns self."""
        super().load_state_dict(d)
        name = d["state"].get("input_dtype")
        self._input_dtype = None if name is None else dtype_named(name, _FLOAT_NAMES, "input_dtype")
        return self

    def _prepare(self, x):
        a = float_array(x, "x")
        if a.size == 0:
            return None
        self._input_dtype = a.dtype
        return np.ascontiguousarray(a, dtype=np.float32)

    def update(self, x):
        """Record ``x`` (see the class docstring); returns self."""
        a = self._prepare(x)
        if a is not None:
            self._record(*self._current(a))
        return self

    def _record(self, mn, mx):
        """Fold the batch's (min, max) into the statistics."""
        if self.min_val is None:
            self.min_val, self.max_val = mn, mx
        else:
            self.min_val = _nan_min(mn, self.min_val)
            self.max_val = _nan_max(mx, self.max_val)

    def _empty(self) -> bool:
        """Whether no finite statistic has been recorded yet."""
        return self.min_val is None or (self.axis is None and self.min_val == np.inf
                                        and self.max_val == -np.inf)

    def qparams(self):
        """``choose_qparams(min, max, ...)`` (see :mod:`refquant.qparams`)."""
        if self._empty():
            if self.method == "torch":
                return np.float32(1.0), np.int64(0)
            raise ValueError("the observer has seen no data")
        return self._choose(self.min_val, self.max_val)

    def _choose(self, mn, mx):
        """choose_qparams; ``method="torchao"`` computes in the observed float16/bfloat16 dtype
        as torchao does in its input's dtype (unless ``dtype=`` was given)."""
        if self.method == "torchao" and "dtype" not in self.options and \
                self._input_dtype is not None and self._input_dtype.itemsize == 2:
            return choose_qparams(mn, mx, dtype=self._input_dtype.name, **self._range_kw())
        return choose_qparams(mn, mx, **self._range_kw())


def _in_half_open(value, name: str, lo, hi) -> float:
    """``float(value)`` when it lies in ``(lo, hi]``, else a ValueError naming ``name``."""
    v = float(value)
    if not lo < v <= hi:
        raise ValueError(f"{name} must be in ({lo}, {hi}]; got {value!r}")
    return v


def _nan_min(a, b):
    """torch.min(a, b): NaN when either is."""
    return np.minimum(a, b).astype(np.float32)


def _nan_max(a, b):
    return np.maximum(a, b).astype(np.float32)


class MovingAverageMinMax(MinMax):
    """Exponential moving average of min and max (torch.ao ``MovingAverageMinMaxObserver`` and
    ``MovingAveragePerChannelMinMaxObserver``).

    The first batch sets ``min, max = aminmax(x)``; later ones do, in float32 with
    ``c = f32(averaging_constant)``: ``min = f32(min + f32(c * f32(cur_min - min)))`` and the same
    for max. Under ``method="fbgemm"`` the statistics follow ``torch.fused_moving_avg_obs_fake_quant``
    instead: an entry that is +-inf is replaced by the batch's value (``isinf(r) ? cur : r + c *
    (cur - r)``, per channel), the rest averaged as above.

    >>> import numpy as np, refquant as rq
    >>> obs = rq.observers.MovingAverageMinMax(averaging_constant=0.5, fmt=rq.uint8)
    >>> obs.update(np.float32([0.0, 1.0])).update(np.float32([0.0, 3.0])).max_val
    np.float32(2.0)
    """

    def __init__(self, averaging_constant=0.01, **kw):
        self.averaging_constant = _in_half_open(averaging_constant, "averaging_constant", 0, 1)
        super().__init__(**kw)

    def _config(self):
        return {**super()._config(), "averaging_constant": self.averaging_constant}

    def _record(self, mn, mx):
        if self._empty():
            self.min_val, self.max_val = mn, mx
            return
        c = np.float32(self.averaging_constant)
        with np.errstate(invalid="ignore", over="ignore"):
            new_min = (self.min_val + c * (mn - self.min_val)).astype(np.float32)
            new_max = (self.max_val + c * (mx - self.max_val)).astype(np.float32)
        if self.method == "fbgemm":  # the fused QAT op restarts every infinite entry
            new_min = np.where(np.isinf(self.min_val), mn, new_min).astype(np.float32)
            new_max = np.where(np.isinf(self.max_val), mx, new_max).astype(np.float32)
        self.min_val, self.max_val = new_min, new_max
        if self.axis is None:
            self.min_val, self.max_val = self.min_val[()], self.max_val[()]


class Histogram(_Observer):
    """torch.ao ``HistogramObserver``: a running histogram and the L2 range search.

    ``update(x)``: ``+-inf`` are dropped (nothing left: ignored); the first batch sets
    ``[min, max] = aminmax(x)`` and ``hist = histc(x, bins, min, max)``; later batches widen the
    range to ``[min(min, x_min), max(max, x_max)]``, histogram ``x`` over it, and add the old
    histogram moved onto the new range (``upsample_rate`` sub-bins per bin; a single-valued old
    histogram is moved whole). ``histc`` and ``linspace`` are torch's CPU float32 arithmetic
    (``linspace_fma``: its fused multiply-add, as torch's AVX2/AVX512 kernels compute it; False
    for its DEFAULT kernels), see :mod:`refquant._kernels._histogram`.

    ``qparams()``: the search of ``_non_linear_param_search`` (quantile steps of 1e-5, L2 error
    of quantizing the histogram onto ``2**dst_bits`` bins, stop when the error grows) gives a
    clipped range, then ``choose_qparams`` on it. Under ``method="torch"`` this matches torch
    bit for bit.
    ``dst_bits`` (default: torch's ``iinfo(dtype).bits`` for the torch dtype of the range, see
    :func:`refquant.qparams.torch_dtype_bits`: 8 for qint8/quint8 and every custom range of
    them, 16 for int16/uint16, 32 for qint32) ignores a custom range, as torch does. The sums
    (``torch.sum`` of the histogram and of the per-bin errors) follow ATen's float32 cascade
    order for vectors of ``sum_lanes`` lanes (8 on x86 whatever its kernel set, 4 on NEON), so the
    search takes torch's steps bit for bit. Both are arguments, never read from the machine:
    ``refquant_torch.observers.histogram_arithmetic()`` measures the installed torch's.

    Per tensor only (``axis`` raises NotImplementedError, as in torch). Data are binned in float32:
    float64 input is rounded to float32 first, where torch's HistogramObserver (unlike its
    min/max observers) would bin float64 data in float64.

    >>> import numpy as np, refquant as rq
    >>> x = np.linspace(-1, 3, 1001, dtype=np.float32)
    >>> rq.observers.Histogram(fmt=rq.uint8).update(x).qparams()
    (np.float32(0.015678614), np.int32(64))
    """

    _fields = ("min_val", "max_val", "histogram")

    def __init__(self, bins=2048, upsample_rate=16, dst_bits=None, *, sum_lanes=8,
                 linspace_fma=True, **kw):
        from .qparams import torch_dtype_bits

        self.sum_lanes = integer_scalar(sum_lanes, "sum_lanes")
        if self.sum_lanes not in (1, 2, 4, 8, 16, 32, 64):
            raise ValueError(f"sum_lanes must be a power of two from 1 to 64; got {sum_lanes!r}")
        if not isinstance(linspace_fma, (bool, np.bool_)):
            raise TypeError(f"linspace_fma must be True or False; got {linspace_fma!r}")
        self.linspace_fma = bool(linspace_fma)

        self.bins = integer_scalar(bins, "bins")
        self.upsample_rate = integer_scalar(upsample_rate, "upsample_rate")
        if dst_bits is None and kw.get("method", "torch") == "torch":
            dst_bits = torch_dtype_bits(kw.get("qmin"), kw.get("qmax"), kw.get("fmt"),
                                        dtype=kw.get("dtype"))
        elif dst_bits is None:  # the smallest of 8, 16, 32 bits that holds the range
            lo, hi = resolve_range(kw.get("qmin"), kw.get("qmax"), kw.get("fmt"))
            dst_bits = next(b for b in (8, 16, 32, 64) if hi - lo < 2**b)
        self.dst_bits = integer_scalar(dst_bits, "dst_bits")
        if self.bins < 1 or self.upsample_rate < 1 or not 1 <= self.dst_bits <= 32:
            raise ValueError(f"bins and upsample_rate must be >= 1 and dst_bits in 1..32; got "
                             f"{bins!r}, {upsample_rate!r}, {dst_bits!r}")
        if kw.get("axis") is not None:
            raise NotImplementedError("Histogram observers are per tensor only")
        super().__init__(**kw)

    def _config(self):
        return {**super()._config(), "bins": self.bins, "upsample_rate": self.upsample_rate,
                "dst_bits": self.dst_bits, "sum_lanes": self.sum_lanes,
                "linspace_fma": self.linspace_fma}

    def reset(self):
        """Forget every update: an empty histogram and no range."""
        self.min_val = np.float32(np.inf)
        self.max_val = np.float32(-np.inf)
        self.histogram = np.zeros(self.bins, np.float32)

    def update(self, x):
        """Record ``x`` (see the class docstring); returns self."""
        from ._kernels import _histogram as h
        from ._kernels import _observers as k

        a = _as_f32(x).reshape(-1)
        if a.size == 0:
            return self
        lo, hi = k.aminmax(a)
        if np.isnan(lo):
            raise ValueError("x contains NaN; the histogram cannot place it")
        if np.isinf(lo) or np.isinf(hi):
            a = a[np.isfinite(a)]
            if a.size == 0:
                return self
            lo, hi = k.aminmax(a)
        lo, hi = np.float32(lo), np.float32(hi)
        if self.min_val == np.inf or self.max_val == -np.inf:
            self.min_val, self.max_val = lo, hi
            self.histogram = h.histc(a, self.bins, lo, hi, self.linspace_fma).astype(np.float32)
            return self
        cur_min, cur_max = self.min_val, self.max_val
        new_min, new_max = min(cur_min, lo), max(cur_max, hi)
        upd = h.histc(a, self.bins, new_min, new_max, self.linspace_fma).astype(np.float32)
        if new_min == cur_min and new_max == cur_max:
            self.histogram = self.histogram + upd
            return self
        if cur_min == cur_max:
            one = h.histc(np.float32([cur_min]), self.bins, new_min, new_max,
                          self.linspace_fma).astype(np.float32)
            moved = one * h.torch_sum32(self.histogram, self.sum_lanes)
        else:
            moved = h.upscale(self.histogram, cur_min, cur_max, new_min, new_max,
                              self.upsample_rate, self.linspace_fma)
        self.histogram = upd + moved
        self.min_val, self.max_val = new_min, new_max
        return self

    def clipped_range(self):
        """The (min, max) float32 pair that the L2 search picks."""
        from ._kernels import _histogram as h

        return h.param_search(self.histogram, self.min_val, self.max_val, 2**self.dst_bits,
                              self.sum_lanes)

    def qparams(self):
        """``choose_qparams`` on :meth:`clipped_range` (see the class docstring)."""
        if self.min_val == np.inf and self.max_val == -np.inf:
            if self.method == "torch":
                return np.float32(1.0), np.int64(0)
            raise ValueError("the observer has seen no data")
        return self._choose(*self.clipped_range())


class Percentile(Histogram):
    """Clip at percentiles of the running histogram (same histogram as :class:`Histogram`).

    With ``total = sum(hist)`` and ``c = cumsum(hist)`` (float64), the range is
    ``[min + w*i, min + w*(j+1)]`` (float32, ``w = f32((max - min) / bins)``) where ``i`` is the
    first bin with ``c[i] > total * (100 - percentile) / 100`` and ``j`` the first bin with
    ``c[j] >= total * percentile / 100``; the outer edges are exactly ``min`` (``i = 0``) and
    ``max`` (``j = bins - 1``), so ``percentile=100`` gives ``[min, max]``.

    >>> import numpy as np, refquant as rq
    >>> x = np.concatenate([np.linspace(-1, 1, 9999), [50.0]]).astype(np.float32)
    >>> obs = rq.observers.Percentile(percentile=99.9, fmt=rq.int8, symmetric=True).update(x)
    >>> [round(float(v), 3) for v in obs.clipped_range()]
    [-1.0, 1.017]
    """

    def __init__(self, percentile=99.99, bins=2048, **kw):
        self.percentile = _in_half_open(percentile, "percentile", 50, 100)
        super().__init__(bins=bins, **kw)

    def _config(self):
        return {**super()._config(), "percentile": self.percentile}

    def clipped_range(self):
        """The percentile range as a float32 pair."""
        c = np.cumsum(self.histogram.astype(np.float64))
        total = c[-1]
        i = int(np.searchsorted(c, total * (100 - self.percentile) / 100, side="right"))
        j = int(np.searchsorted(c, total * self.percentile / 100, side="left"))
        i, j = min(i, self.bins - 1), min(max(j, i), self.bins - 1)
        w = np.float32((self.max_val - self.min_val) / np.float32(self.bins))
        lo = self.min_val if i == 0 else np.float32(self.min_val + w * np.float32(i))
        hi = self.max_val if j == self.bins - 1 else np.float32(self.min_val + w * np.float32(j + 1))
        return np.float32(lo), np.float32(hi)


class MSE(MinMax):
    """The clipping range that minimizes the fake-quantization error on the observed data.

    The data are kept (float32; memory grows with the stream). Candidates are
    ``[f32(r*min), f32(r*max)]`` for ``r = 1 - k/num_candidates * (1 - min_ratio)``,
    ``k = 0..num_candidates-1`` (``r = 1`` first); each gives ``(s, z) = choose_qparams(...)``
    and the error ``sum((fake_quantize(x, s, z, convention=convention) - x)**2)`` in float64
    (per channel with ``axis``). The first candidate with the smallest error wins, so ties keep
    the widest range. Rules with float zero points (``qscheme="per_channel_affine_float_qparams"``)
    need a ``convention`` that takes them (``"exact"`` raises ValueError).

    >>> import numpy as np, refquant as rq
    >>> x = np.concatenate([np.linspace(-1, 1, 999), [8.0]]).astype(np.float32)
    >>> mse = rq.observers.MSE(fmt=rq.int4, symmetric=True).update(x).qparams()[0]
    >>> minmax = rq.observers.MinMax(fmt=rq.int4, symmetric=True).update(x).qparams()[0]
    >>> bool(mse < minmax)
    True
    """

    _fields = ("min_val", "max_val")

    def __init__(self, num_candidates=100, min_ratio=0.1, convention="exact", **kw):
        self.num_candidates = integer_scalar(num_candidates, "num_candidates")
        self.min_ratio = float(min_ratio)
        if self.num_candidates < 1 or not 0 < self.min_ratio <= 1:
            raise ValueError(f"num_candidates must be >= 1 and min_ratio in (0, 1]; got "
                             f"{num_candidates!r}, {min_ratio!r}")
        self.convention = convention
        super().__init__(**kw)

    def _config(self):
        return {**super()._config(), "num_candidates": self.num_candidates,
                "min_ratio": self.min_ratio, "convention": self.convention}

    def reset(self):
        """Forget every update, the data kept for the search too."""
        super().reset()
        self._data = []

    def update(self, x):
        """Record ``x`` and keep a float32 copy of it; returns self."""
        a = self._prepare(x)
        if a is None:
            return self
        observed = self._input_dtype
        super().update(a)
        self._input_dtype = observed  # x's own dtype, not the float32 copy's
        self._data.append(self._rows(a) if self.axis is not None else a.reshape(-1).copy())
        return self

    def _range(self):
        """The integer range the chosen qparams are meant for (the one ``choose_qparams`` uses)."""
        from .qparams import torch_qrange

        if self.method == "torch":
            return torch_qrange(self.qmin, self.qmax, self.fmt, dtype=self.options.get("dtype"),
                                reduce_range=self.options.get("reduce_range", False))[:2]
        if self.method == "onnx":
            return 0, 255
        return resolve_range(self.qmin, self.qmax, self.fmt)

    def qparams(self):
        """The best candidate's ``(scale, zero_point)`` (see the class docstring)."""
        import refquant as rq

        if not self._data:
            return super().qparams()
        data = np.concatenate(self._data, axis=-1 if self.axis is not None else 0)
        lo, hi = self._range()
        best = None
        for kk in range(self.num_candidates):
            r = np.float32(1 - kk / self.num_candidates * (1 - self.min_ratio))
            s, z = self._choose(np.float32(r * self.min_val), np.float32(r * self.max_val))
            axis = 0 if self.axis is not None else None
            fq = rq.fake_quantize(data, s, z, qmin=lo, qmax=hi, axis=axis,
                                  convention=self.convention)
            d = fq.astype(np.float64) - data
            err = (d * d).sum(axis=-1) if self.axis is not None else (d * d).sum()
            if best is None:
                best = [np.array(err), np.array(s), np.array(z)]
                continue
            better = err < best[0]
            best[0] = np.where(better, err, best[0])
            best[1] = np.where(better, s, best[1])
            best[2] = np.where(better, z, best[2])
        return (best[1][()], best[2][()])

    def state_dict(self):
        d = super().state_dict()
        d["state"]["data"] = [_enc(a) for a in self._data]
        d["state"]["data_shapes"] = [list(a.shape) for a in self._data]
        return d

    def load_state_dict(self, d):
        super().load_state_dict(d)
        self._data = [_dec(a).reshape(shp) for a, shp in
                      zip(d["state"]["data"], d["state"]["data_shapes"], strict=True)]
        return self


class APoT(_Observer):
    """Running ``alpha = max |x|`` for additive powers-of-two quantization (arXiv:1909.13144).

    ``alpha`` is float32 (``max(alpha, max(|aminmax(x)|))``); ``qparams()`` returns
    ``(alpha, 0)`` and ``levels()`` the level set ``rq.apot.levels(bits, k, alpha=alpha,
    signed=signed)``. Empty updates are ignored; NaN in the data makes alpha NaN for good, +-inf
    makes it inf, and ``qparams()`` then raises ValueError, as it does before any nonzero data
    (alpha 0).

    >>> import numpy as np, refquant as rq
    >>> obs = rq.observers.APoT(bits=4, k=2).update(np.float32([-0.5, 1.5]))
    >>> obs.qparams()
    (np.float32(1.5), np.int32(0))
    """

    _fields = ("alpha",)

    def __init__(self, bits=4, k=2, signed=False, *, axis=None, **kw):
        if kw:
            raise TypeError(f"APoT takes bits, k, signed and axis=None (its levels are its range);"
                            f" got {sorted(kw)}")
        if axis is not None:
            raise NotImplementedError("APoT observers are per tensor only")
        self.bits = integer_scalar(bits, "bits")
        self.k = integer_scalar(k, "k")
        self.signed = bool(signed)
        super().__init__(symmetric=True, method="apot")

    def _validate(self):
        import refquant as rq

        rq.apot.levels(self.bits, self.k, signed=self.signed)

    def _config(self):
        return {"bits": self.bits, "k": self.k, "signed": self.signed}

    @classmethod
    def from_state_dict(cls, d):
        if d.get("type") != cls.__name__:
            raise ValueError(f"state is for {d.get('type')!r}, not {cls.__name__}")
        return cls(**d["config"]).load_state_dict(d)

    def reset(self):
        """Forget every update: alpha back to 0."""
        self.alpha = np.float32(0)

    def update(self, x):
        """Record ``max |x|``; returns self."""
        from ._kernels import _observers as k

        a = _as_f32(x).reshape(-1)
        if a.size:
            lo, hi = k.aminmax(a)
            m = np.float32(max(abs(lo), abs(hi))) if not np.isnan(lo) else np.float32(np.nan)
            self.alpha = np.float32(np.nan) if np.isnan(m) else max(self.alpha, m)
        return self

    def qparams(self):
        """``(alpha, 0)``: float32 alpha, int32 zero."""
        if not np.isfinite(self.alpha) or self.alpha <= 0:
            raise ValueError(f"alpha must be finite and > 0 to quantize; got {self.alpha!r}")
        return np.float32(self.alpha), np.int32(0)

    def levels(self):
        """The APoT levels for the observed alpha (float64, ascending)."""
        import refquant as rq

        return rq.apot.levels(self.bits, self.k, alpha=float(self.qparams()[0]),
                              signed=self.signed)
