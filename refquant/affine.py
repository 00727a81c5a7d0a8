"""Affine (uniform) quantization: ``quantize``, ``dequantize`` and ``fake_quantize``.

The ``exact`` convention (the default) is the real-number definition::

    q    = clamp(round(x / s) + z, qmin, qmax)     x / s the real quotient, one rounding
    x_hat = (q - z) * s                            rounded once to the output dtype

Other conventions (``rq.conventions.names()``) reproduce a backend's float arithmetic bit for bit;
their knobs are documented in :mod:`refquant.conventions`.

Granularity: per-tensor (scalar ``scale``), per-channel (``axis``: 1-D ``scale`` of length
``x.shape[axis]``) or per-block (``block_size``, one entry per dimension, torchao's meaning:
``scale.shape[i] == x.shape[i] // block_size[i]``). ``zero_point`` is a scalar or has the shape of
``scale``.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass, field

import numpy as np

from . import conventions as _conventions
from . import floatquant as _floatquant
from ._codes import Dequant, Format, code
from ._dtypes import float_code, is_bfloat16
from ._validation import (
    check_axis,
    dtype_in,
    float_array,
    float_dtype,
    integer_array,
    out_array,
    positive_finite,
    resolve_range,
    uniforms,
)
from .formats import integer_dtype_for
from .rounding import rounding_code

__all__ = ["quantize", "dequantize", "fake_quantize"]

_F64, _F32, _F16, _BF16 = map(int, Format)
_WIDTH = {_F16: 16, _BF16: 16, _F32: 32, _F64: 64}


def _promote(a: int, b: int) -> int:
    """torch/NumPy promotion of two float formats (bfloat16 with float16 gives float32)."""
    if a == b:
        return a
    if {a, b} == {_F16, _BF16}:
        return _F32
    return a if _WIDTH[a] > _WIDTH[b] else b


def _round_to(values: np.ndarray, fmt: int) -> np.ndarray:
    """float64 values rounded to format ``fmt`` (half to even), as float64."""
    if fmt == _F64:
        return values.astype(np.float64)
    if fmt == _F32:
        return values.astype(np.float32).astype(np.float64)
    from ._kernels._affine import rnd

    return np.array([rnd(float(v), fmt) for v in values], dtype=np.float64)


@functools.cache
def _kernels():
    """The kernel module, imported on first use (it imports Numba) and kept (a call with new
    qparams asks for it several times)."""
    from ._kernels import _affine

    return _affine


class _Layout:
    """How scale and zero point map onto x: one group, or a group index per element."""

    def __init__(self, shape, scale, zero_point, axis, block_size, scale_name="scale", array_name="x"):
        self.array_name = array_name
        self.scale = np.asarray(scale)
        self.zero_point = np.asarray(zero_point)
        self.per_channel = axis is not None or block_size is not None
        self.block_size = block_size
        if axis is not None and block_size is not None:
            raise ValueError("give axis or block_size, not both")
        if axis is not None:
            self.group_shape = self._per_channel(shape, axis, scale_name)
        elif block_size is not None:
            self.group_shape = self._per_block(shape, block_size, scale_name)
        else:
            if self.scale.size != 1:
                raise ValueError(
                    f"{scale_name} must be a scalar without axis or block_size; "
                    f"got shape {self.scale.shape}"
                )
            self.group_shape = ()
            self._gidx = np.empty(0, np.intp)
            self.shape3 = (1, 1, math.prod(shape))
        n_groups = math.prod(self.group_shape)
        if self.zero_point.size != 1 and self.zero_point.shape != self.scale.shape:
            raise ValueError(
                f"zero_point must be a scalar or have {scale_name}'s shape {self.scale.shape}; "
                f"got shape {self.zero_point.shape}"
            )
        self.scales = self.scale.reshape(-1)
        self.zero_points = self.zero_point.reshape(-1)
        if self.zero_points.size != n_groups:
            self.zero_points = np.repeat(self.zero_points, n_groups)

    def _per_channel(self, shape, axis, scale_name):
        if len(shape) == 0:
            raise ValueError("axis needs an array with at least one dimension; got a 0-d array")
        ax = check_axis(axis, len(shape))
        channels = shape[ax]
        if self.scale.ndim != 1 or self.scale.shape[0] != channels:
            raise ValueError(
                f"per-channel {scale_name} must be 1-D of length {self.array_name}.shape[{ax}] = {channels}; "
                f"got shape {self.scale.shape}"
            )
        self._gidx = None  # built on demand: the kernels walk (outer, channels, inner)
        self.shape3 = (math.prod(shape[:ax]), channels, math.prod(shape[ax + 1:]))
        return (channels,)

    def _per_block(self, shape, block_size, scale_name):
        block = tuple(block_size) if np.iterable(block_size) else None
        if block is None or len(block) != len(shape):
            raise ValueError(
                f"block_size must have one entry per dimension of x (ndim {len(shape)}); "
                f"got {block_size!r}"
            )
        for i, (dim, b) in enumerate(zip(shape, block)):
            if not isinstance(b, (int, np.integer)) or b < 1 or dim % b:
                raise ValueError(
                    f"block_size[{i}] = {b!r} must be a positive integer dividing "
                    f"{self.array_name}.shape[{i}] = {dim}"
                )
        groups = tuple(dim // b for dim, b in zip(shape, block))
        if self.scale.shape != groups and not (self.scale.size == int(np.prod(groups)) == 1):
            raise ValueError(
                f"{scale_name} for block_size {block} must have shape {groups}; "
                f"got {self.scale.shape}"
            )
        ids = np.arange(int(np.prod(groups, dtype=np.int64)), dtype=np.intp).reshape(groups)
        for i, b in enumerate(block):
            ids = np.repeat(ids, b, axis=i)
        self._gidx = ids.ravel()
        self.shape3 = (1, 1, self._gidx.size)
        return groups

    @property
    def gidx(self) -> np.ndarray:
        """The group of every element in C order (empty for one group)."""
        if self._gidx is None:
            outer, channels, inner = self.shape3
            ids = np.arange(channels, dtype=np.intp).reshape(1, channels, 1)
            self._gidx = np.broadcast_to(ids, self.shape3).ravel()
        return self._gidx

    def grouping(self):
        """(grouping code of :mod:`refquant._kernels._affine`, (outer, channels, inner))."""
        k = _kernels()
        if not self.per_channel:
            return k.GROUP_NONE, self.shape3
        if self.block_size is not None:
            return k.GROUP_INDEX, self.shape3
        return (k.GROUP_ROWS if self.shape3[2] >= k.ROW_MIN else k.GROUP_OUTER), self.shape3


@dataclass(frozen=True)
class Spec:
    """The static arguments of an affine call: the code range, the granularity, the rounding and
    the convention, validated once. ``Spec.of(...)`` takes the public keywords;
    :func:`apply` runs it on data.

    >>> import numpy as np, refquant as rq
    >>> from refquant.affine import Spec, apply
    >>> spec = Spec.of(fmt=rq.int8, convention="torch.fake_quantize")
    >>> (spec.qmin, spec.qmax, spec.convention.name)
    (-128, 127, 'torch.fake_quantize')
    >>> apply(spec, np.float32([0.26, -9.0]), 0.1, 0, fake=False).tolist()
    [3, -90]
    """

    qmin: int
    qmax: int
    axis: int | None = None
    block_size: tuple | None = None
    rounding: str | None = None
    convention: _conventions.Convention = _conventions.get("exact")

    @classmethod
    def of(cls, *, qmin=None, qmax=None, fmt=None, axis=None, block_size=None, rounding=None,
           convention="exact") -> Spec:
        conv = _conventions.get(convention)
        block_key = (tuple((type(b), b) for b in block_size)
                     if isinstance(block_size, (tuple, list)) else (type(block_size), block_size))
        key = (type(qmin), qmin, type(qmax), qmax, type(fmt), fmt, type(axis), axis, block_key,
               type(rounding), rounding, id(conv))
        spec = _memo_get(_SPECS, key)
        if spec is not None and spec.convention is conv:
            return spec
        spec = cls._validated(qmin, qmax, fmt, axis, block_size, rounding, conv)
        _memo_put(_SPECS, key, spec)
        return spec

    @classmethod
    def _validated(cls, qmin, qmax, fmt, axis, block_size, rounding, conv) -> Spec:
        lo, hi = resolve_range(qmin, qmax, fmt)
        if rounding is not None:
            rounding_code(rounding)  # a ValueError names the known modes
        if block_size is not None and np.iterable(block_size):
            block_size = tuple(block_size)
        return cls(lo, hi, axis, block_size, rounding, conv)


# Per-call overhead cache: a Spec (validated keywords) and a _Plan (validated, resolved qparams)
# depend only on their arguments' types and values, so repeated calls with the same ones reuse
# them. Keys hold each argument's type next to its value (a bool, an np.float32 or a float64
# array stay apart from an int or a float), floats with their sign (so -0.0 is not 0.0), and
# arrays by their bytes; an argument that is not hashable, or an array above _MEMO_ARRAY
# elements, is not memoized, nor a per-channel or per-block plan of an x above _MEMO_GROUPED
# elements (its layout holds a group index per element). Failed validations raise and are never
# stored.
_SPECS: dict = {}
_PLANS: dict = {}
_MEMO_MAX, _MEMO_ARRAY, _MEMO_GROUPED = 256, 4096, 1 << 14


def _memo_get(memo: dict, key):
    try:
        return memo.get(key)
    except TypeError:  # an unhashable argument
        return None


def _memo_put(memo: dict, key, value) -> None:
    try:
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        memo[key] = value
    except TypeError:
        pass


def _value_key(v):
    """A hashable key that tells apart the type, dtype, shape and bits of a qparam; None when it
    should not be memoized."""
    t = type(v)
    if t is int:
        return (t, v)
    if t is float:
        return (t, v, math.copysign(1.0, v))
    if t is np.ndarray or isinstance(v, np.generic):
        a = np.asarray(v)
        if a.size > _MEMO_ARRAY or a.dtype.kind not in "iuf" or not a.dtype.isnative:
            return None
        return (t, a.dtype.str, a.shape, a.tobytes())
    return None


def _plan_for(spec: Spec, x_dtype, shape, scale, zero_point, code_dtype=None) -> _Plan:
    """``_Plan.build(spec, x_dtype, shape, scale, zero_point, code_dtype=code_dtype)``, memoized (a
    plan is read only)."""
    grouped = spec.axis is not None or spec.block_size is not None
    ks, kz = _value_key(scale), _value_key(zero_point)
    if ks is None or kz is None or (grouped and math.prod(shape) > _MEMO_GROUPED):
        return _Plan.build(spec, x_dtype, shape, scale, zero_point, code_dtype=code_dtype)
    key = (id(spec), x_dtype, shape, ks, kz, code_dtype)
    entry = _PLANS.get(key)
    if entry is not None and entry[0] is spec:
        return entry[1]
    if type(scale) is np.ndarray:  # copies: a stored plan never sees the caller's later writes
        scale = scale.copy()
    if type(zero_point) is np.ndarray:
        zero_point = zero_point.copy()
    plan = _Plan.build(spec, x_dtype, shape, scale, zero_point, code_dtype=code_dtype)
    _memo_put(_PLANS, key, (spec, plan))
    return plan


def apply(spec: Spec, x, scale, zero_point=0, *, fake: bool, rng=None) -> np.ndarray:
    """:func:`quantize` (``fake=False``: ``clamp(round(x / s) + z, qmin, qmax)``) or
    :func:`fake_quantize` (``(q - z) * s`` in x's dtype) of ``x`` under ``spec``'s range,
    granularity, rounding and convention; the same as calling them with its keywords.

    >>> import numpy as np
    >>> from refquant.affine import Spec, apply
    >>> spec = Spec.of(qmin=0, qmax=15)
    >>> apply(spec, np.float32([0.125, 0.375, 9.0]), 0.25, 1, fake=True).tolist()
    [0.0, 0.5, 3.5]
    """
    return _run(x, scale, zero_point, spec, rng, fake)


@dataclass(frozen=True)
class _Plan:
    """Everything a kernel call needs: the resolved convention, the codes of its knobs and the
    per-group parameters. Built by :meth:`build`."""

    lo: int
    hi: int
    layout: _Layout
    conv: _conventions.Convention  # resolved for this call's granularity and zero point
    mode: int  # rounding code
    x_fmt: int
    s_fmt: int
    c_fmt: int
    a_fmt: int  # format of a float zero-point add (and of cast_last's clamp bounds)
    s64: np.ndarray
    z: np.ndarray
    for_dequantize: bool
    code_dtype: np.dtype | None = None  # quantize's output dtype (None: the smallest for the range)
    # the compiled loop and its arguments per (fake, drawn), filled by _compute on first use
    kernel_calls: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, spec: Spec, x_dtype, shape, scale, zero_point, for_dequantize=False,
              code_dtype=None) -> _Plan:
        lo, hi = (spec.qmin, spec.qmax) if not for_dequantize else (0, 0)
        for name, end in (("qmin", lo), ("qmax", hi)):
            if abs(end) > _EXACT_INTEGERS:
                raise ValueError(f"{name}={end} is past 2**53 in magnitude: refquant computes codes in "
                                 "float64, which holds every integer only up to 2**53")
        layout = _Layout(shape, scale, zero_point, spec.axis, spec.block_size,
                         array_name="q" if for_dequantize else "x")
        float_zp = layout.zero_point.dtype.kind == "f" or is_bfloat16(layout.zero_point.dtype)
        conv = spec.convention.resolve(per_channel=layout.per_channel, float_zero_point=float_zp,
                                       wide=(hi - lo) >= 256)
        x_fmt = float_code(x_dtype)
        weak = not isinstance(scale, (np.ndarray, np.generic)) or layout.scale.dtype.kind in "iub"
        s_fmt = x_fmt if weak else float_code(layout.scale.dtype)
        c_fmt = {
            "exact": _F64,
            "float32": _F32,
            "float64": _F64,
            "input64": _F64 if x_fmt == _F64 else _F32,
            "promote": _promote(x_fmt, s_fmt),
            "float16": _F16,
            "bfloat16": _BF16,
        }[conv.compute]
        a_fmt = _F32 if conv.zero_point_add == "float32" else c_fmt
        if conv.zero_point_add == "promote" and float_zp and isinstance(zero_point, (np.ndarray, np.generic)):
            a_fmt = _promote(c_fmt, float_code(layout.zero_point.dtype))
        return cls(lo, hi, layout, conv,
                   rounding_code(conv.rounding if spec.rounding is None else spec.rounding),
                   x_fmt, s_fmt, c_fmt, a_fmt, positive_finite(layout.scales, "scale"),
                   cls._zero_points(layout.zero_points, conv, for_dequantize, lo, hi),
                   for_dequantize, code_dtype)

    @staticmethod
    def _zero_points(zps, conv, for_dequantize, lo, hi):
        if (zps.dtype.kind not in "iuf" or zps.dtype == np.bool_) and not is_bfloat16(zps.dtype):
            raise TypeError(f"zero_point must be integer or float; got dtype {zps.dtype}")
        if zps.dtype.kind in "iu" and zps.dtype.itemsize == 8:
            _check_exact_integers(zps, "zero_point")
        z = zps.astype(np.float64)
        if z.size <= 64 and _ordinary_zero_points(z.tolist(), conv, for_dequantize, lo, hi):
            return z  # the checks below on Python floats (a new zero point every call in training)
        if not np.isfinite(z).all():
            raise ValueError(f"zero_point must be finite; got {zps[~np.isfinite(z)][0]!r}")
        if not conv.float_zero_point and not (z == np.round(z)).all():
            bad = z[z != np.round(z)][0]
            raise ValueError(
                f"zero_point must be an integer under convention {conv.name!r}; got {bad!r}"
            )
        if conv.zero_point == "none" and (z != 0).any():
            raise ValueError(
                f"zero_point must be 0 under convention {conv.name!r} (it has none); got {z[z != 0][0]:g}"
            )
        if conv.zero_point_in_range and not for_dequantize:
            outside = (z < lo) | (z > hi)
            if outside.any():
                raise ValueError(
                    f"zero_point {z[outside][0]:g} is outside [qmin, qmax] = [{lo}, {hi}]"
                )
        return z

    def quotient_params(self):
        """(s_q, inv, z_c) per group: the scale used by the quotient (in its dtype, then in the
        compute dtype), the reciprocal, and the zero point rounded to the format of its add."""
        if self.conv.quotient == "exact":
            s_q, inv = self.s64, np.ones_like(self.s64)
        else:
            s_q = _round_to(_round_to(self.s64, self.s_fmt), self.c_fmt)
            inv = self._reciprocal()
            if self.conv.tiny_amax > 0:
                inv = np.where(self._zero_multiplier(), 0.0, inv)
        z_c = _round_to(self.z, self.a_fmt)
        return np.ascontiguousarray(s_q), np.ascontiguousarray(inv), z_c

    def _reciprocal(self):
        """The reciprocal of the scale, as the convention's ``reciprocal`` knob forms it."""
        how = self.conv.reciprocal
        with np.errstate(over="ignore", divide="ignore"):  # a subnormal scale's reciprocal is inf
            if how == "float32":
                return (np.float32(1.0) / self.s64.astype(np.float32)).astype(np.float64)
            if how == "float64":
                return (1.0 / self.s64).astype(np.float32).astype(np.float64)
            return _round_to(1.0 / _round_to(self.s64, self.s_fmt), self.s_fmt)

    def _zero_multiplier(self):
        """Groups whose ``amax = s * qmax`` is at most ``tiny_amax``: their multiplier is 0 (codes
        round(x * 0)) and their dequantizing divisor 1. ``dequantize`` has no qmax: none."""
        if self.for_dequantize or self.conv.tiny_amax <= 0:
            return np.zeros(self.s64.shape, bool)
        if self.hi <= 0:
            raise ValueError(f"convention {self.conv.name!r} is amax based (amax = scale * qmax) and "
                             f"needs qmax > 0; got qmax={self.hi}")
        return self.s64 * self.hi <= self.conv.tiny_amax

    def dequant_params(self, out_fmt):
        """(mode, s_d, promote format) for the dequantization into ``out_fmt``."""
        rule = self._kernel_dequant()
        if rule in ("float32", "int32_float32"):
            s_d = self.s64.astype(np.float32).astype(np.float64)
        elif rule in ("promote", "scalar"):
            # "scalar": a Python float scale multiplies in the output's opmath (float32 for halves)
            s_fmt = self.s_fmt if rule == "promote" else (_F64 if out_fmt == _F64 else _F32)
            # a float64 scale reaches a half format through float32
            s_d = _round_to(_round_to(self.s64, _F32 if s_fmt in (_F16, _BF16) else _F64), s_fmt)
            return code("dequant", "promote"), np.ascontiguousarray(s_d), _promote(out_fmt, s_fmt)
        elif rule == "divide":
            s_d = np.where(self._zero_multiplier(), 1.0, self._reciprocal())
        else:
            s_d = self.s64
        return code("dequant", rule), np.ascontiguousarray(s_d), _promote(out_fmt, self.s_fmt)

    @property
    def codes(self) -> np.dtype:
        """The dtype of the codes: quantize's ``dtype=``, else the smallest holding the range."""
        return self.code_dtype if self.code_dtype is not None else integer_dtype_for(self.lo, self.hi)

    def _kernel_dequant(self) -> str:
        """The kernel's rule for this call: the ``tensor`` and ``onnx_reference`` rules depend on
        dtypes (:func:`dequantize` computes them whole-array where the kernels cannot); the codes
        of ``fake_quantize`` have the smallest dtype of the range."""
        rule = self.conv.dequant
        if rule == "onnx_reference":
            return "float32"
        if rule != "tensor":
            return rule
        if self.s_fmt == _F64:
            return "float64"
        wraps = self.codes == np.int32 and self.layout.zero_point.dtype == np.int32
        return "int32_float32" if wraps else "float32"

    def nan_code(self, fake: bool) -> float:
        conv = self.conv
        if fake and conv.fake_nan == "propagate":
            return np.nan
        if conv.nan == "cast":
            return self.cast_params()[1]
        return {"qmin": self.lo, "qmax": self.hi, "zero": 0.0, "error": np.nan}[conv.nan]

    def clamp_params(self, fake: bool):
        """(clamp mode, lo, hi, cast) for the kernel. Under ``cast_last`` the bounds are rounded
        to the format of the zero-point add (as torch.clamp does with integer bounds) and, for
        integer output, the clamped value goes through the float-to-integer conversion. Under
        ``int32_first`` the rounded quotient goes through NumPy's conversion to int32 (NaN, +-inf
        and ``|v| >= 2**31`` give INT32_MIN; ml_dtypes' from bfloat16 gives 0)."""
        NO_CAST = _kernels().NO_CAST
        lo, hi = float(self.lo), float(self.hi)
        if self.conv.clamp == "int32_first":
            return code("clamp", "int32_first"), lo, hi, (2.0**31, 0.0 if self.c_fmt == _BF16 else -(2.0**31),
                                                          0.0, 0.0)
        if self.conv.clamp != "cast_last":
            return code("clamp", self.conv.clamp), lo, hi, NO_CAST
        lo, hi = _round_to(np.float64([lo, hi]), self.a_fmt)
        if fake:
            return code("clamp", "float"), lo, hi, NO_CAST
        return code("clamp", "cast_last"), lo, hi, self.cast_params()

    def cast_params(self):
        """``(lim, overflow_q, mod, top)`` of x86's float-to-integer conversion into the code dtype:
        a 32-bit conversion (64-bit for int64 and uint32 codes) whose out-of-range and NaN result,
        INT_MIN, is wrapped to the dtype's width (0 for 8- and 16-bit codes)."""
        dt = self.codes
        width = dt.itemsize * 8
        conv_width = 32 if width < 32 or dt == np.int32 else 64
        lim = 2.0 ** (conv_width - 1)
        mod = 2.0**width if width < conv_width else 0.0
        top = 2.0 ** (width - 1) if dt.kind == "i" else 2.0**width
        overflow = 0.0 if mod else -lim
        return lim, overflow, mod, top


_EXACT_INTEGERS = 2**53  # float64 holds every integer up to this magnitude


def _ordinary_zero_points(zs: list, conv, for_dequantize: bool, lo: int, hi: int) -> bool:
    """Whether the zero points ``zs`` (floats) pass :meth:`_Plan._zero_points`'s checks."""
    for v in zs:
        if not math.isfinite(v) or (not conv.float_zero_point and not v.is_integer()):
            return False
        if (conv.zero_point == "none" and v != 0) or (conv.zero_point_in_range and not for_dequantize
                                                      and not lo <= v <= hi):
            return False
    return True


def _check_exact_integers(values: np.ndarray, name: str) -> None:
    """A ValueError naming ``name`` where a 64-bit integer array holds a value past 2**53."""
    big = values > _EXACT_INTEGERS
    if values.dtype.kind == "i":
        big |= values < -_EXACT_INTEGERS
    if big.any():
        raise ValueError(f"{name} holds {int(values[big].flat[0])}, past 2**53 in magnitude: refquant "
                         "computes in float64, which holds every integer only up to 2**53")


def _code_dtype(dtype, lo: int, hi: int) -> np.dtype:
    """quantize's output dtype: ``dtype`` (an integer dtype holding ``[lo, hi]``), else the smallest."""
    if dtype is None:
        return integer_dtype_for(lo, hi)
    dt = dtype_in(dtype, lambda d: d in _CODE_DTYPES, "dtype",
                  f"an integer dtype among {', '.join(d.name for d in _CODE_DTYPES)}")
    info = np.iinfo(dt)
    if not (info.min <= lo and hi <= info.max):
        raise ValueError(f"dtype {dt.name} cannot hold the range [qmin, qmax] = [{lo}, {hi}]")
    return dt


_CODE_DTYPES = tuple(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
                                           np.int64))


_FLOAT_NAMES = {np.dtype(t): np.dtype(t).name for t in (np.float16, np.float32, np.float64)}


def _check_input(x, conv, name="x"):
    a = float_array(x, name)
    dt = _FLOAT_NAMES.get(a.dtype) or ("bfloat16" if is_bfloat16(a.dtype) else a.dtype.name)
    if dt not in conv.input_dtypes:
        raise TypeError(
            f"convention {conv.name!r} accepts {name} of dtype {', '.join(conv.input_dtypes)}; "
            f"got {dt}"
        )
    return a


def _run(x, scale, zero_point, spec: Spec, rng, fake, dtype=None, out=None, with_mask=False):
    """quantize or fake_quantize; ``with_mask`` (fake_quantize, no ``out``): ``(y, m)`` with ``m``
    the straight-through mask from the same pass, or None where the kernels cannot give it."""
    x = _check_input(x, spec.convention)
    code_dtype = None if fake else _code_dtype(dtype, spec.qmin, spec.qmax)
    plan = _plan_for(spec, x.dtype, x.shape, scale, zero_point, code_dtype)
    if out is not None:
        out_array(out, x.shape, x.dtype if fake else code_dtype, x)
    conv = plan.conv
    # float16 / bfloat16 travel as their bits: the kernels widen and narrow them element by element
    half = x.dtype.itemsize == 2
    if fake:
        kernel_dtype = np.uint16 if half else x.dtype
    else:
        kernel_dtype = code_dtype
    xk = np.ascontiguousarray(x).reshape(-1)
    if conv.nan == "error" and not fake and _has_nan(xk):
        i = int(np.flatnonzero(np.isnan(xk))[0])
        raise ValueError(
            f"x contains NaN (first at flat index {i}); convention {conv.name!r} has no code for NaN"
        )
    result = out
    out = _fresh(xk.size, kernel_dtype) if out is None else out.reshape(-1).view(kernel_dtype)
    mask = _fresh(xk.size, np.bool_) if with_mask else None
    if xk.size:
        xv, u = xk.view(np.uint16) if half else xk, uniforms(plan.mode, rng, xk.size)
        if not _compute(plan, xv, fake, out, u, mask):
            _compute(plan, xv, fake, out, u)
            mask = None
    if result is not None:
        return result
    if fake and half:
        out = out.view(x.dtype)
    if with_mask:
        return out.reshape(x.shape), None if mask is None else mask.reshape(x.shape)
    return out.reshape(x.shape)


_HUGE_PAGE = 1 << 21  # the x86-64 huge page; NumPy asks the kernel for them on buffers >= 4 MiB


def _fresh(n: int, dtype) -> np.ndarray:
    """``np.empty(n, dtype)``, starting on a huge-page boundary when it is large: the kernel can
    then back all of it with huge pages (far fewer page faults) instead of small pages up to the
    first boundary. Only the aligned part is ever touched, so the rest costs no memory."""
    dtype = np.dtype(dtype)
    size = n * dtype.itemsize
    if size < 2 * _HUGE_PAGE:
        return np.empty(n, dtype)
    raw = np.empty(size + _HUGE_PAGE, np.uint8)
    start = -raw.ctypes.data % _HUGE_PAGE
    return raw[start:start + size].view(dtype)


def _has_nan(xk: np.ndarray) -> bool:
    """Whether the flat float array ``xk`` (bfloat16 included) holds a NaN."""
    if xk.dtype.itemsize == 2 and xk.dtype.kind != "f":  # bfloat16: exponent all ones, fraction not 0
        return bool(((xk.view(np.uint16) & 0x7FFF) > 0x7F80).any())
    return bool(np.isnan(xk).any())


# scales whose float64 reciprocal is normal (relative error <= 2**-53): the fast exact pass
# multiplies by it; other scales take the general per-element kernel
_RECIPROCAL_SAFE = (2.0**-1020, 2.0**1020)


def _compute(plan, xk, fake, out, u, mask=None) -> bool:
    """Fill ``out`` (and, fake-quantizing, the bool array ``mask`` with the straight-through mask
    in the same pass). False, with nothing written, where the kernels cannot give that mask
    (see :func:`_kernel_call`)."""
    k = _kernels()
    conv = plan.conv
    out_fmt = plan.x_fmt if fake else _F64
    grouping, shape3 = plan.layout.grouping()
    if (conv.quotient == "exact" and plan.mode == 0 and conv.dequant == "exact"
            and grouping in (k.GROUP_NONE, k.GROUP_ROWS) and _exact_fast(plan, xk, fake, out_fmt, out, mask)):
        return True
    drawn = u.size > 0
    which = (fake, drawn, mask is not None)
    call = plan.kernel_calls.get(which)
    if call is None:
        call = plan.kernel_calls[which] = _kernel_call(plan, fake, out_fmt, grouping, drawn,
                                                       mask is not None)
    if call is False:
        return False
    kern, gidx, params = call
    kern(xk.size, xk, shape3, gidx, u, *params, out, _NO_MASK if mask is None else mask)
    return True


def _kernel_call(plan, fake, out_fmt, grouping, drawn, mask=False):
    """(the compiled loop, the group index, the parameters between ``u`` and ``out``) for a plan,
    under fake_quantize or quantize, with or without stochastic draws, with or without the mask:
    a plan is read only, so each is worked out once.

    The mask comes from the loop where it is the code before the clamp lying in ``[qmin, qmax]``
    of that same computation: a deterministic fake_quantize clamped at the integer ends of the
    range, with a quotient that is NaN only for NaN x (a finite nonzero scale or reciprocal).
    Elsewhere: False."""
    k = _kernels()
    conv = plan.conv
    s_q, inv, z_c = plan.quotient_params()
    dmode, s_d, p_fmt = plan.dequant_params(out_fmt)
    clamp_mode, lo, hi, cast = plan.clamp_params(fake)
    exact = conv.quotient == "exact"
    if mask and (drawn or not fake or (lo, hi) != (float(plan.lo), float(plan.hi))
                 or not _finite_nonzero(s_q if conv.quotient == "divide" else inv)):
        return False
    zp_mode = code("zero_point", conv.zero_point)
    fma = conv.fma and conv.quotient == "reciprocal" and conv.zero_point == "before_round"
    # float32 arithmetic for a float32 quotient, and for a half one (float16, bfloat16) but for a
    # float64 x, which would round twice on its way to the half format, and a fused multiply-add
    f32ops = (not exact and (plan.c_fmt == _F32 or (plan.c_fmt in (_F16, _BF16) and plan.x_fmt != _F64
                                                     and not fma))
              and _float32_valued(s_q) and _float32_valued(inv)
              and (zp_mode != 1 or (plan.a_fmt == plan.c_fmt and _float32_valued(z_c))))
    key = k.Key(
        qmode=code("quotient", conv.quotient), cfmt=0 if exact else plan.c_fmt,
        afmt=0 if exact else plan.a_fmt, zp_mode=zp_mode,
        fma=fma, zp_add_int=conv.zero_point_add == "integer", rmode=plan.mode, clamp_mode=clamp_mode,
        dequant=fake, dmode=dmode if fake else 0, ofmt=out_fmt if fake else 0,
        pfmt=p_fmt if fake and conv.dequant in ("promote", "scalar") else 0, grouping=grouping,
        drawn=drawn, xfmt=plan.x_fmt, f32ops=f32ops, mask=mask,
    )
    if f32ops and _fast32_holds(plan, key, z_c, s_d, lo, hi):
        key = key._replace(fast32=True)
    gidx = plan.layout.gidx if grouping == k.GROUP_INDEX else _NO_GROUPS
    return k.affine_kernel(key), gidx, (s_q, inv, np.ascontiguousarray(plan.z), z_c, s_d, lo, hi, cast,
                                        float(plan.nan_code(fake)))


_NO_GROUPS = np.empty(0, np.intp)
_NO_MASK = np.empty(0, np.bool_)


def _finite_nonzero(values: np.ndarray) -> bool:
    if values.size <= 8:
        return all(math.isfinite(v) and v != 0.0 for v in values.tolist())
    return bool((np.isfinite(values) & (values != 0.0)).all())


_ORDINARY_CODES = 2.0**22  # zero points and bounds of the all-float32 pass (see _kernels._affine)


def _fast32_holds(plan, key, z_c, s_d, lo, hi) -> bool:
    """Whether the kernels' all-float32 pass computes this call's bits: every code, zero point
    and ``q - z`` an integer below 2**22 (2**11 where float16 holds them), the zero point the same
    in its add's format, a finite float32 dequantization scale (nonzero for a divide), and a
    product rounded once to a float32 or half output. (On Python floats: a new per-tensor scale
    every call, as in training, costs a few microseconds.)"""
    k = _kernels()
    if key.drawn or key.grouping == k.GROUP_INDEX or (key.dequant and key.ofmt == _F64):
        return False
    zs = plan.z.tolist()
    ends = zs + [lo, hi]
    if zs != z_c.tolist() or not all(v.is_integer() and abs(v) <= _ORDINARY_CODES for v in ends):
        return False
    if not key.dequant:
        return True
    if key.dmode == int(Dequant.PROMOTE) and key.ofmt in (_F16, _BF16):
        if max(max(abs(v) for v in ends), max(hi - v for v in zs), max(v - lo for v in zs)) > 2048:
            return False  # to_format(q) exact in float16
    if key.dmode == int(Dequant.EXACT) and key.ofmt in (_F16, _BF16):
        return False  # one rounding of the real product to the half format, not through float32
    return (_float32_valued(s_d) and all(math.isfinite(v) for v in s_d.tolist())
            and (key.dmode != int(Dequant.DIVIDE) or 0.0 not in s_d.tolist()))


def _float32_valued(values: np.ndarray) -> bool:
    """Whether every float64 in ``values`` is a float32 value (the float32 path may then use it)."""
    if values.size <= 8:  # per tensor: Python floats are quicker than NumPy's calls
        return all(_is_float32(v) for v in values.tolist())
    with np.errstate(over="ignore"):
        return bool((values.astype(np.float32).astype(np.float64) == values).all())


def _is_float32(v: float) -> bool:
    """Whether the float ``v`` is a float32 value (C's conversion to float, which rounds to
    nearest, gives it back; past float32's range it overflows)."""
    try:
        return struct.unpack("f", struct.pack("f", v))[0] == v
    except OverflowError:
        return False


def _exact_fast(plan, xk, fake, out_fmt, out, mask=None) -> bool:
    """The exact convention's certified half-to-even pass (per tensor, or per channel by rows),
    with the straight-through mask into ``mask`` where it is an array; False, with nothing
    written, when a scale's reciprocal is not a normal float64."""
    k = _kernels()
    which = ("exact", fake, mask is not None)
    call = plan.kernel_calls.get(which)
    if call is None:
        call = plan.kernel_calls[which] = _exact_call(plan, fake, out_fmt, mask is not None)
    if call is False:
        return False
    fast, fixup, channels, task, args = call
    tasks = plan.layout.shape3[0] * channels if plan.layout.per_channel else -(-xk.size // k.CHUNK)
    uncertain = np.empty(tasks, np.int64)
    m = _NO_MASK if mask is None else mask
    fast(xk.size, xk, channels, task, *args, out, uncertain, m)
    if uncertain.any():
        fixup(xk.size, xk, channels, task, *args, out, uncertain, m)
    return True


def _exact_call(plan, fake, out_fmt, mask=False):
    """(fast pass, fixup, channels, task length, (s, inv, z, check, lo, hi)) of the certified pass
    for a plan (worked out once: a plan is read only), or False where it does not apply."""
    k = _kernels()
    s, z = plan.s64, np.ascontiguousarray(plan.z)
    if not ((s > _RECIPROCAL_SAFE[0]) & (s < _RECIPROCAL_SAFE[1])).all():
        return False
    lo, hi = float(plan.lo), float(plan.hi)
    if plan.layout.per_channel:
        _, channels, task = plan.layout.shape3
    else:
        channels, task = 1, k.CHUNK
    if not fake or out_fmt == _F64:
        check = np.zeros(s.size, np.int8)
    elif out_fmt != _F32:
        check = np.ones(s.size, np.int8)
    elif plan.layout.per_channel:  # exact products: 24-bit significands, |q - z| < 2**29
        exact = (np.frexp(s)[0] * 2.0**24 % 1 == 0) & (np.maximum(np.abs(hi - z), np.abs(lo - z)) < 2.0**29)
        check = (~exact).astype(np.int8)
    else:
        check = np.int8([not _products_round_once_to_f32(float(s[0]), lo, hi, float(z[0]))])
    fast, fixup = k.exact_half_even_kernels(k.ExactKey(xfmt=plan.x_fmt, dequant=fake,
                                                       ofmt=out_fmt if fake else 0, mask=mask))
    return fast, fixup, channels, task, (s, 1.0 / s, z, check, lo, hi)


@functools.lru_cache(maxsize=256)
def _products_round_once_to_f32(s: float, lo: float, hi: float, z: float) -> bool:
    """True when rounding ``fl64((q - z) * s)`` to float32 is the correctly rounded product for
    every code q in [lo, hi]: the products are exact in float64 (s has a 24-bit significand and
    |q - z| < 2**29, 24 + 29 = 53 bits), or, for ranges of at most 2**16 codes, none of them lands
    on a float32 rounding midpoint or in float32's subnormal range (where it could round twice)."""
    if (math.frexp(s)[0] * 2.0**24).is_integer() and max(abs(hi - z), abs(lo - z)) < 2.0**29:
        return True
    if hi - lo >= 2**16:
        return False
    p = (np.arange(lo, hi + 1) - z) * s
    on_midpoint = (p.view(np.int64) & 0x1FFFFFFF) == 0x10000000
    tiny = (p != 0) & (np.abs(p) < 2.4e-38)
    return not (on_midpoint | tiny).any()


def quantize(x, scale, zero_point=0, *, qmin=None, qmax=None, fmt=None, axis=None,
             block_size=None, rounding=None, convention="exact", rng=None, saturate=None, dtype=None,
             out=None):
    """Integer codes ``q = clamp(round(x / s) + z, qmin, qmax)``.

    Under ``convention="exact"`` the quotient ``x / s`` is the real number (no intermediate
    rounding), ``round`` is the convention's mode (half to even) unless ``rounding`` names another
    (:data:`refquant.ROUNDING_MODES`; ``"stochastic"`` draws from ``rng``, a NumPy Generator or an
    int seed), +-inf saturate and NaN raises a ValueError. Other conventions follow their knobs.

    Args:
        x: float16, bfloat16, float32 or float64 array (never modified).
        scale: positive finite scalar, 1-D array (``axis``) or block array (``block_size``).
        zero_point: scalar or shaped like ``scale``; integer unless the convention allows floats.
        qmin, qmax / fmt: the code range (exactly one of the two); integer ranges end within
            ``+-2**53`` (codes are computed in float64), else a ValueError.
        dtype: the integer dtype of the codes (int8 ... int64, uint8 ... uint32) holding
            ``[qmin, qmax]``; None (default) picks the smallest. Conventions whose backend
            converts through the code dtype (``cast`` NaN codes: torch.decomposed, torchao) give
            NaN and overflowing values the code that conversion gives in that dtype.
        out: optional destination, a writeable C-contiguous array of the result's shape and
            dtype that shares no memory with x; it is filled and returned (no new array is
            allocated, which saves the cost of fresh pages on large arrays).

    Returns:
        An array of x's shape in ``dtype`` (the smallest integer dtype holding ``[qmin, qmax]``).

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([0.125, 0.375, 0.625, -0.125, 100.0])
    >>> rq.quantize(x, 0.25, 0, fmt=rq.int8).tolist()       # exact ties go to even
    [0, 2, 2, 0, 127]
    >>> rq.quantize(x, 0.25, 0, fmt=rq.int8, rounding="half_away").tolist()
    [1, 2, 3, -1, 127]
    >>> rq.quantize(np.float32([0.05]), 0.1, 0, fmt=rq.int8).tolist()  # f32(0.05) > 0.05
    [1]
    >>> rq.quantize(np.float32([np.nan]), 1.0, 0, qmin=-8, qmax=7, convention="torchao",
    ...             dtype=np.int32).tolist()   # NaN.to(int32) is INT32_MIN, clamped before
    [-2147483648]
    >>> codes = np.empty(5, np.int8)
    >>> rq.quantize(x, 0.25, 0, fmt=rq.int8, out=codes) is codes
    True
    """
    if _floatquant.wants_float(fmt, saturate):  # float formats: refquant.floatquant
        if dtype is not None:
            raise TypeError(f"dtype is for integer codes; float formats give uint8 codes (got {dtype!r})")
        return _deliver(_floatquant.quantize(x, scale, zero_point, qmin=qmin, qmax=qmax, fmt=fmt, axis=axis,
                                             block_size=block_size, rounding=rounding,
                                             convention=convention, rng=rng, saturate=saturate), out, x)
    spec = Spec.of(qmin=qmin, qmax=qmax, fmt=fmt, axis=axis, block_size=block_size,
                   rounding=rounding, convention=convention)
    return _run(x, scale, zero_point, spec, rng, fake=False, dtype=dtype, out=out)


def _deliver(result: np.ndarray, out, x) -> np.ndarray:
    """``result``, or ``out`` (checked) filled with it."""
    if out is None:
        return result
    np.copyto(out_array(out, result.shape, result.dtype, np.asarray(x)), result)
    return out


def fake_quantize(x, scale, zero_point=0, *, qmin=None, qmax=None, fmt=None, axis=None,
                  block_size=None, rounding=None, convention="exact", rng=None, saturate=None, out=None):
    """``(q - z) * s`` with ``q = quantize(x, ...)``, in x's dtype.

    Under ``convention="exact"`` the product ``(q - z) * s`` is rounded once, to x's dtype
    (float16, bfloat16, float32 or float64); NaN stays NaN; +-inf saturate to the range ends; a
    zero result is +0.0. Other conventions reproduce their backend, NaN included. Arguments as
    :func:`quantize`; ``out`` (x's shape and dtype, no memory shared with x) is filled and
    returned.

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([0.125, 0.375, 0.26, 3.0, np.nan])
    >>> rq.fake_quantize(x, 0.25, 0, qmin=-8, qmax=7)
    array([0.  , 0.5 , 0.25, 1.75, nan], dtype=float32)
    >>> rq.fake_quantize(x, 0.1, 3, qmin=0, qmax=255, convention="torch.fake_quantize")[-1]
    np.float32(-0.3)
    """
    if _floatquant.wants_float(fmt, saturate):  # float formats: refquant.floatquant
        return _deliver(_floatquant.fake_quantize(x, scale, zero_point, qmin=qmin, qmax=qmax, fmt=fmt,
                                                  axis=axis, block_size=block_size, rounding=rounding,
                                                  convention=convention, rng=rng, saturate=saturate), out, x)
    spec = Spec.of(qmin=qmin, qmax=qmax, fmt=fmt, axis=axis, block_size=block_size,
                   rounding=rounding, convention=convention)
    return _run(x, scale, zero_point, spec, rng, fake=True, out=out)


def dequantize(q, scale, zero_point=0, *, axis=None, block_size=None, convention="exact",
               dtype=np.float32, fmt=None):
    """``x_hat = (q - z) * s`` in ``dtype``.

    ``exact`` rounds the real product once to ``dtype``; other conventions follow their
    ``dequant`` knob (e.g. torch per-tensor ``f32(f32(s) * f32(q - z))``).

    >>> import numpy as np, refquant as rq
    >>> rq.dequantize(np.int8([-3, 0, 5]), 0.1, 0)
    array([-0.3,  0. ,  0.5], dtype=float32)
    """
    if _floatquant.wants_float(fmt):  # float formats: refquant.floatquant
        return _floatquant.dequantize(q, scale, zero_point, fmt=fmt, axis=axis, block_size=block_size,
                                      convention=convention, dtype=dtype)
    q = integer_array(q, "q")
    if q.dtype.itemsize == 8:
        _check_exact_integers(q, "q")
    out_dtype = float_dtype(dtype)
    spec = Spec(0, 0, axis, block_size, None, _conventions.get(convention))
    plan = _Plan.build(spec, out_dtype, q.shape, scale, zero_point, for_dequantize=True)
    rule = plan.conv.dequant
    if rule == "tensor" or (rule == "onnx_reference" and q.dtype.itemsize >= 4):
        return _dequantize_arrays(q, plan, out_dtype)
    out_fmt = float_code(out_dtype)
    dmode, s_d, p_fmt = plan.dequant_params(out_fmt)
    kernel_dtype = np.float64 if out_fmt == _F64 else np.float32
    qk = np.ascontiguousarray(q, dtype=np.int64).reshape(-1)  # one kernel signature
    out = np.empty(qk.size, kernel_dtype)
    if qk.size:
        from ._kernels._affine import dequantize_kernel

        dequantize_kernel(qk.size, qk, plan.layout.gidx, np.ascontiguousarray(plan.z), s_d, dmode, out_fmt,
                          p_fmt, out_fmt in (_F16, _BF16), out)
    result = out.reshape(q.shape)
    if result.dtype == out_dtype:
        return result
    with np.errstate(over="ignore"):  # float32 beyond float16's range rounds to inf, as it should
        return result.astype(out_dtype)


def _dequantize_arrays(q, plan, out_dtype):
    """The dequant rules that follow the dtypes of ``q``, ``z`` and ``s`` (``tensor``, and
    ``onnx_reference`` for codes of 32 bits or more) as whole-array NumPy arithmetic in those
    dtypes: the kernels hold every value as float64 and cannot wrap an int32 difference."""
    lay = plan.layout
    s, z = lay.scales, lay.zero_points
    if s.dtype.kind in "iub" or float_code(s.dtype) != plan.s_fmt:  # a Python float: the output's dtype
        s = s.astype(out_dtype)
    if lay.per_channel:
        g = lay.gidx.reshape(q.shape)
        s, z = s[g], z[g]
    else:
        s, z = s.reshape(1), z.reshape(1)
    with np.errstate(over="ignore", invalid="ignore"):
        if plan.conv.dequant == "onnx_reference":
            wide = (q.astype(np.float32).astype(np.float64) - z.astype(np.float64)) * s.astype(np.float64)
            return wide.astype(out_dtype).reshape(q.shape)
        d = q - z if z.dtype.kind in "iu" else q.astype(z.dtype) - z  # integers wrap, as torch's
        p = (d.astype(s.dtype) if d.dtype.kind in "iu" else d) * s
        if p.dtype == np.float64 and out_dtype.itemsize == 2:
            p = p.astype(np.float32)
        return p.astype(out_dtype).reshape(q.shape)

