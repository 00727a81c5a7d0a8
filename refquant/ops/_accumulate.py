"""Exact integer accumulation: sum_k (a - za)(b - zb) for matrix products and convolutions.

The sums are computed with a floating-point GEMM (BLAS) where that is provably exact, and with
integers otherwise. A float GEMM of integer operands is exact when every partial sum, in any
order, is an integer below the format's 2**p (p = 24 for float32, 53 for float64): each product
and each partial sum is then representable, so no operation rounds. With K terms of magnitude at
most |a - za|max * |b - zb|max, every partial sum is bounded by K * |a - za|max * |b - zb|max,
and that bound (from the data, not from the dtypes) decides the path:

* bound <= 2**24: one float32 GEMM;
* otherwise the K terms are split into chunks whose bound is at most 2**24 (float32 GEMMs, when
  eight chunks or fewer do) or 2**53 (float64 GEMMs), and the chunk sums (integers) are added in
  int64; when one product's bound times K reaches 2**62, Python integers.

The result is then checked against the accumulator the caller asks for (``dtype``): an exact sum
outside its range is a ValueError, never a silent wrap.
"""

from __future__ import annotations

import numpy as np

from .._validation import dtype_in, integer_array, integer_scalar, positive_finite
from . import _int8

_F32_EXACT = 2.0**24
_F64_EXACT = 2.0**53
_I64_SAFE = 2.0**62
_ACCUMULATORS = (np.dtype(np.int32), np.dtype(np.int64))


def accumulator_dtype(dtype) -> np.dtype:
    """int32 or int64, else a TypeError naming ``dtype``."""
    return dtype_in(dtype, _ACCUMULATORS.__contains__, "dtype", "np.int32 or np.int64")


positive = positive_finite  # finite and > 0, as float64


def codes(q, name: str) -> np.ndarray:
    """An integer code array of at most 32 bits (bool and 64-bit codes are refused)."""
    a = integer_array(q, name)
    if a.dtype.itemsize > 4:
        raise TypeError(f"{name} must hold integer codes of at most 32 bits; got dtype {a.dtype}")
    return a


def zero_point(zp, dtype: np.dtype, name: str, length: int | None = None, what: str = "") -> np.ndarray:
    """``zp`` as int64, scalar or 1-D of ``length``; every value inside ``dtype``'s range."""
    a = np.asarray(zp)
    if a.dtype.kind == "b" or a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be an integer; got {zp!r}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise TypeError(f"{name} must be an integer; got {_show(a)}")
    if a.ndim > 1 or (a.ndim == 1 and length is not None and a.size not in (1, length)):
        raise ValueError(f"{name} must be a scalar or 1-D of length {length}{what}; got shape {a.shape}")
    if a.ndim == 1 and length is None and a.size != 1:
        raise ValueError(f"{name} must be a scalar; got shape {a.shape}")
    info = np.iinfo(dtype)
    a64 = a.astype(np.float64)
    bad = (a64 < info.min) | (a64 > info.max)
    if bad.any():
        raise ValueError(
            f"{name} must lie in the range of {dtype} [{info.min}, {info.max}]; got {_show(a[bad])}"
        )
    return a.astype(np.int64)


def _show(a) -> str:
    v = np.asarray(a).ravel()[0]
    return repr(v.item() if hasattr(v, "item") else v)


def centered(q: np.ndarray, zp: np.ndarray, zp_axis: int) -> tuple[np.ndarray, int]:
    """(q - zp) with zp broadcast along ``zp_axis``, and max |q - zp| (an int).

    float32 for codes of at most 16 bits (|q - zp| < 2**17 is exact there), else float64 (exact
    for 32-bit codes)."""
    ftype = np.float32 if q.dtype.itemsize <= 2 else np.float64
    z = zp.astype(ftype)
    if z.ndim == 1 and z.size > 1:
        shape = [1] * q.ndim
        shape[zp_axis] = -1
        z = z.reshape(shape)
    c = q.astype(ftype) - z
    return c, int(max(abs(float(c.max())), abs(float(c.min())))) if c.size else 0


def exact_matmul(a: np.ndarray, b: np.ndarray, amax: int, bmax: int) -> np.ndarray:
    """a @ b exactly (a, b: float arrays holding integers; amax, bmax: bounds on |a|, |b|) -> int64."""
    k = a.shape[-1]
    per_term = float(amax) * float(bmax)
    if k == 0 or per_term == 0:
        return np.matmul(a, b).astype(np.int64)
    if per_term * k <= _F32_EXACT:  # every partial sum is an integer of magnitude <= 2**24
        return _matmul(a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)).astype(np.int64)
    if per_term >= _I64_SAFE / k:
        return _object_matmul(a, b)
    for limit, ftype in ((_F32_EXACT, np.float32), (_F64_EXACT, np.float64)):
        chunk = int(limit // per_term)
        if chunk >= 1 and (ftype is np.float64 or -(-k // chunk) <= 8):
            return _chunked(a, b, chunk, ftype)
    return np.matmul(a.astype(np.int64), b.astype(np.int64))


def _matmul(a, b):
    """np.matmul, one 2-D BLAS call per batch index (NumPy's stacked matmul can skip BLAS)."""
    if a.ndim <= 2 and b.ndim <= 2:
        return np.matmul(a, b)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    out = np.empty(batch + (a.shape[-2], b.shape[-1]), np.result_type(a, b))
    a_b = np.broadcast_to(a, batch + a.shape[-2:])
    b_b = np.broadcast_to(b, batch + b.shape[-2:])
    for idx in np.ndindex(*batch):
        np.matmul(a_b[idx], b_b[idx], out=out[idx])
    return out


def _chunked(a, b, chunk, ftype):
    k = a.shape[-1]
    a_f, b_f = a.astype(ftype, copy=False), b.astype(ftype, copy=False)
    total = None
    for start in range(0, k, chunk):
        part = _matmul(a_f[..., start:start + chunk], b_f[..., start:start + chunk, :]).astype(np.int64)
        total = part if total is None else total + part
    return total


def _object_matmul(a, b):
    ao = a.astype(np.int64).astype(object)
    bo = b.astype(np.int64).astype(object)
    out = np.matmul(ao, bo)
    lo, hi = -(2**63), 2**63 - 1
    flat = np.asarray(out).ravel()
    if any(v < lo or v > hi for v in flat):
        bad = next(v for v in flat if v < lo or v > hi)
        raise ValueError(f"the exact sum {bad} does not fit the accumulator dtype=int64 [{lo}, {hi}]")
    return np.asarray(out).astype(np.int64)


def fit(acc: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    """``acc`` (int64) as ``dtype``, or a ValueError naming ``dtype`` when a sum falls outside it."""
    info = np.iinfo(dtype)
    if acc.size and (acc.min() < info.min or acc.max() > info.max):
        bad = acc.min() if acc.min() < info.min else acc.max()
        raise ValueError(
            f"the exact {what} {int(bad)} does not fit the accumulator dtype={dtype} "
            f"[{info.min}, {info.max}]; pass dtype=np.int64"
        )
    return acc.astype(dtype)


def matmul_integer(a, b, a_zero_point=0, b_zero_point=0, *, dtype=np.int32):
    """ONNX MatMulInteger: the exact integer product ``(a - a_zero_point) @ (b - b_zero_point)``.

    Formula: ``y[..., i, j] = sum_k (a[..., i, k] - za[i]) * (b[..., k, j] - zb[j])`` with every
    term and every partial sum an exact integer (no rounding anywhere; see the module notes for
    how the float GEMM is proved exact). ``a`` and ``b`` are integer codes of at most 32 bits
    with NumPy's matmul shapes (batch dimensions broadcast). ``a_zero_point`` is a scalar or one
    per row of ``a`` (length M), ``b_zero_point`` a scalar or one per column of ``b`` (length N);
    each must lie in its operand's dtype. ``dtype`` is the accumulator (int32, as in ONNX, or
    int64): an exact sum outside its range is a ValueError (a wrap-around int32 accumulator
    gives the same result whenever the final sum fits, whatever the partial sums do).

    >>> import numpy as np, refquant as rq
    >>> a = np.uint8([[130, 127], [255, 0]]); b = np.int8([[3, -1], [2, 5]])
    >>> rq.ops.matmul_integer(a, b, 128).tolist()
    [[4, -7], [125, -767]]
    """
    acc = _matmul_acc(a, b, a_zero_point, b_zero_point)
    return fit(acc, accumulator_dtype(dtype), "sum")


def _matmul_acc(a, b, a_zero_point, b_zero_point, names=("a", "b")):
    a, b = codes(a, names[0]), codes(b, names[1])
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"{names[0]} and {names[1]} must have at least one dimension; "
                         f"got shapes {a.shape} and {b.shape}")
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"{names[0]} and {names[1]} do not multiply: shapes {a.shape} and {b.shape}")
    try:
        np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    except ValueError:
        raise ValueError(f"the batch dimensions of {names[0]} {a.shape} and {names[1]} {b.shape} "
                         "do not broadcast") from None
    za = zero_point(a_zero_point, a.dtype, f"{names[0]}_zero_point", a2.shape[-2], " (one per row)")
    zb = zero_point(b_zero_point, b.dtype, f"{names[1]}_zero_point", b2.shape[-1], " (one per column)")
    if _int8.applies(a2, b2):
        acc = _int8.matmul(a2, b2, za, zb)
    else:
        ac, amax = centered(a2, za, a2.ndim - 2)
        bc, bmax = centered(b2, zb, b2.ndim - 1)
        acc = exact_matmul(ac, bc, amax, bmax)
    if a.ndim == 1:
        acc = acc[..., 0, :]
    if b.ndim == 1:
        acc = acc[..., 0]
    return acc


def integer_tuple(v, n: int, name: str, default: int, minimum: int) -> tuple[int, ...]:
    """An int or a sequence of ``n`` ints (each >= minimum) as a tuple; None gives ``default``."""
    if v is None:
        return (default,) * n
    items = [v] * n if np.ndim(v) == 0 else list(v)
    if len(items) != n:
        raise ValueError(f"{name} must have {n} entries; got {v!r}")
    out = tuple(integer_scalar(i, name) for i in items)
    if any(i < minimum for i in out):
        raise ValueError(f"{name} entries must be >= {minimum}; got {v!r}")
    return out
