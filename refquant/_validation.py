"""Argument checks shared by every public function: clear errors that name the argument."""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._dtypes import is_supported_float
from .formats import IntFormat


def native(a: np.ndarray) -> np.ndarray:
    """``a`` in native byte order (a copy only when it was big-endian); never modifies ``a``."""
    if not a.dtype.isnative:
        return a.astype(a.dtype.newbyteorder("="))
    return a


def float_array(x, name: str = "x") -> np.ndarray:
    """``x`` as a native-order float16/bfloat16/float32/float64 array, else a TypeError."""
    a = np.asarray(x)
    if not is_supported_float(a.dtype):
        raise TypeError(
            f"{name} must be a float16, bfloat16, float32 or float64 array; got dtype {a.dtype}"
        )
    return native(a)


def integer_array(q, name: str = "q") -> np.ndarray:
    """``q`` as a native-order integer array (bool is refused), else a TypeError."""
    a = np.asarray(q)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array; got dtype {a.dtype}")
    return native(a)


def resolve_range(qmin, qmax, fmt) -> tuple[int, int]:
    """The integer range ``(qmin, qmax)`` from ``qmin``/``qmax`` or ``fmt`` (an IntFormat or its
    name; exactly one of the two), else a ValueError/TypeError naming the argument.

    >>> from refquant.interop import resolve_range
    >>> resolve_range(-8, 7, None), resolve_range(None, None, "uint4")
    ((-8, 7), (0, 15))
    """
    given_pair = qmin is not None or qmax is not None
    if fmt is not None and given_pair:
        raise ValueError(
            f"give either qmin/qmax or fmt, not both (qmin={qmin!r}, qmax={qmax!r}, fmt={fmt!r})"
        )
    if fmt is not None:
        if isinstance(fmt, str):
            from .formats import NAMED_FORMATS

            if fmt not in NAMED_FORMATS:
                raise ValueError(f"fmt must be an IntFormat or one of {sorted(NAMED_FORMATS)}; got {fmt!r}")
            fmt = NAMED_FORMATS[fmt]
        if not isinstance(fmt, IntFormat):
            raise TypeError(f"fmt must be an IntFormat; got {fmt!r}")
        return fmt.qmin, fmt.qmax
    if qmin is None or qmax is None:
        raise ValueError(
            f"the integer range needs both qmin and qmax, or fmt (qmin={qmin!r}, qmax={qmax!r})"
        )
    lo, hi = integer_scalar(qmin, "qmin"), integer_scalar(qmax, "qmax")
    if lo > hi:
        raise ValueError(f"qmin must be <= qmax; got qmin={lo}, qmax={hi}")
    if lo < -(2**63) or hi >= 2**63:
        raise ValueError(f"the range [{lo}, {hi}] does not fit in int64")
    return lo, hi


def out_array(out, shape, dtype: np.dtype, x: np.ndarray, name: str = "out") -> np.ndarray:
    """``out`` checked as the destination of a result of ``shape`` and ``dtype``: a writeable
    C-contiguous ndarray of exactly that shape and dtype that shares no memory with ``x`` (the
    kernels may read ``x`` again after writing ``out``), else a TypeError/ValueError naming it."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array; got {type(out).__name__}")
    if out.dtype != dtype or out.shape != tuple(shape):
        raise ValueError(f"{name} must have dtype {dtype} and shape {tuple(shape)}; got {out.dtype} "
                         f"{out.shape}")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"{name} must be a writeable C-contiguous array")
    if np.shares_memory(out, x):
        raise ValueError(f"{name} must not share memory with x (the result is not computed in place)")
    return out


def integer_scalar(v, name: str) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Integral, np.integer)):
        if isinstance(v, (numbers.Real, np.floating)) and float(v).is_integer():
            return int(v)
        raise TypeError(f"{name} must be an integer; got {v!r}")
    return int(v)


def positive_finite(values, name: str) -> np.ndarray:
    """float64 copy of ``values``; every entry must be finite and > 0."""
    a = np.asarray(values)
    if a.dtype.kind not in "fiu" and not is_supported_float(a.dtype):
        raise TypeError(f"{name} must be real numbers; got dtype {a.dtype}")
    a64 = a.astype(np.float64)
    if a64.size <= 64 and all(0 < v < math.inf for v in a64.reshape(-1).tolist()):
        return a64  # a few values: Python floats are quicker than NumPy's calls
    bad = ~(np.isfinite(a64) & (a64 > 0))
    if bad.any():
        raise ValueError(f"{name} must be finite and > 0; got {float(a64[bad].ravel()[0])!r}")
    return a64


def check_axis(axis, ndim: int, name: str = "axis") -> int:
    """``axis`` as an index in ``[0, ndim)`` (negative counts from the end), else a ValueError or
    TypeError naming it.

    >>> from refquant.interop import check_axis
    >>> check_axis(-1, 4), check_axis(1, 2)
    (3, 1)
    """
    a = integer_scalar(axis, name)
    if not -ndim <= a < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array of {ndim} dimension(s)")
    return a % ndim


def dtype_named(dtype_name, allowed, name: str = "dtype", error=ValueError) -> np.dtype:
    """The NumPy dtype called ``dtype_name``, one of the names ``allowed`` ("bfloat16" is
    ml_dtypes' and needs it installed), else ``error`` naming the argument ``name``.

    >>> from refquant._validation import dtype_named
    >>> dtype_named("float16", ("float16", "bfloat16"))
    dtype('float16')
    """
    from ._dtypes import bfloat16

    if not isinstance(dtype_name, str) or dtype_name not in allowed:
        raise error(f"{name} must be one of {', '.join(allowed)}; got {dtype_name!r}")
    if dtype_name != "bfloat16":
        return np.dtype(dtype_name)
    if bfloat16() is None:
        raise error(f"{name} 'bfloat16' needs ml_dtypes (pip install ml_dtypes)")
    return bfloat16()


def dtype_in(dtype, accepted, name: str, expected: str) -> np.dtype:
    """``np.dtype(dtype)`` when ``accepted`` (a predicate) holds for it, else a TypeError:
    ``{name} must be {expected}; got ...``.

    >>> import numpy as np
    >>> from refquant._validation import dtype_in
    >>> dtype_in("int32", lambda dt: dt.kind == "i", "dtype", "a signed integer dtype")
    dtype('int32')
    """
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or not accepted(dt):
        raise TypeError(f"{name} must be {expected}; got {repr(dtype) if dt is None else dt}")
    return dt


def float_dtype(dtype, name: str = "dtype") -> np.dtype:
    """An output float dtype (float16, bfloat16, float32 or float64) from a dtype, type or name."""
    if isinstance(dtype, str) and dtype == "bfloat16":
        return dtype_named(dtype, ("bfloat16",), name, TypeError)
    return dtype_in(dtype, is_supported_float, name, "float16, bfloat16, float32 or float64")


def generator(rng) -> np.random.Generator:
    """``rng`` as a NumPy Generator: a Generator, an int seed, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, (int, np.integer)):
        raise TypeError(f"rng must be a numpy Generator or an int seed; got {rng!r}")
    return np.random.default_rng(int(rng))


def grad_like(grad_output, x: np.ndarray) -> np.ndarray:
    """``grad_output`` as a float array of x's shape and dtype, else a ValueError naming it."""
    g = float_array(grad_output, "grad_output")
    if g.shape != x.shape or g.dtype != x.dtype:
        raise ValueError(f"grad_output must match x (shape {x.shape}, dtype {x.dtype}); "
                         f"got shape {g.shape}, dtype {g.dtype}")
    return g


def uniforms(mode: int, rng, n: int) -> np.ndarray:
    """The ``n`` uniform draws in [0, 1) that stochastic rounding (``mode``) consumes, from
    :func:`generator`; an empty float64 array for every other mode (``rng`` unused)."""
    from .rounding import STOCHASTIC

    return generator(rng).random(n) if mode == STOCHASTIC else np.empty(0, np.float64)


def flat_float(x: np.ndarray) -> np.ndarray:
    """``x`` as a contiguous 1-D float32 or float64 array for a kernel: float16 and bfloat16
    widened exactly to float32, float32/float64 as they are (a view where possible)."""
    if x.dtype.itemsize == 2:
        return np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    return np.ascontiguousarray(x).reshape(-1)


def grad_buffers(x: np.ndarray, g: np.ndarray, outputs: int = 2) -> tuple:
    """``(xk, gk, *outs)`` for a gradient kernel: ``x`` and its upstream gradient ``g`` flattened
    (:func:`flat_float`) and ``outputs`` float64 buffers of x's size for the gradients it writes."""
    return (flat_float(x), flat_float(g), *(np.empty(x.size, np.float64) for _ in range(outputs)))


def group_sums(terms: np.ndarray, x: np.ndarray, axis) -> np.ndarray:
    """The per-element gradient ``terms`` (``x.size`` of them, in C order) summed in float64 over
    the elements that share a qparam, rounded once to x's dtype: a 0-d array per tensor (``axis``
    None; NumPy's pairwise order), one sum per channel along ``axis``."""
    if axis is None:
        return np.asarray(np.sum(terms, dtype=np.float64)).astype(x.dtype)
    ax = check_axis(axis, x.ndim)
    others = tuple(i for i in range(x.ndim) if i != ax)
    return terms.reshape(x.shape).astype(np.float64).sum(axis=others).astype(x.dtype)


def channel_index(shape, axis) -> np.ndarray:
    """The channel of every element of a C-ordered array of ``shape`` along ``axis``, flattened:
    the group index a per-channel kernel reads its qparams with."""
    ids = np.arange(shape[axis], dtype=np.intp).reshape([-1 if i == axis else 1
                                                         for i in range(len(shape))])
    return np.ascontiguousarray(np.broadcast_to(ids, shape).ravel())


def channel_groups(values: np.ndarray, name: str, shape, axis, array_name: str = "x"):
    """``(values, group index per element)`` for qparams ``values`` that are one scalar
    (``axis`` None: one group, the index empty) or one per channel of an array of ``shape`` along
    ``axis`` (:func:`channel_index`); else a ValueError naming ``name``.

    >>> import numpy as np
    >>> from refquant._validation import channel_groups
    >>> v, idx = channel_groups(np.float64([0.5, 0.25]), "scale", (2, 3), 0)
    >>> idx.tolist()
    [0, 0, 0, 1, 1, 1]
    """
    if axis is None:
        if values.size != 1:
            raise ValueError(f"{name} must be a scalar without axis; got shape {values.shape}")
        return values.reshape(1), np.empty(0, np.intp)
    if len(shape) == 0:
        raise ValueError("axis needs an array with at least one dimension; got a 0-d array")
    ax = check_axis(axis, len(shape))
    if values.ndim != 1 or values.shape[0] != shape[ax]:
        raise ValueError(f"per-channel {name} must be 1-D of length {array_name}.shape[{ax}] = "
                         f"{shape[ax]}; got shape {values.shape}")
    return values, channel_index(shape, ax)
