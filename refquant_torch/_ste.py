"""The straight-through mask of an affine fake quantizer, with the core as the only arithmetic.

The gradient of ``fake_quantize`` with respect to ``x`` is ``grad * m(x)`` where ``m(x) = 1`` when
the unclamped code ``round(x / s) + z`` (computed under the call's convention) lies in
``[qmin, qmax]``, else 0 (NaN gives 0). torch's fake quant uses the same mask.

Every convention's unclamped code is monotone in ``x``, so ``m`` is the indicator of an interval
``[a, b]`` of values of x's dtype. ``a`` and ``b`` are found by a K-ary search over the ordered bit
patterns of x's dtype, each probe asking the core for ``rq.quantize`` with the range widened to
``[qmin - 1, qmax + 1]`` (so that "clamped" is visible), under the convention resolved for the
original call. A handful of core calls on a few hundred elements, whatever the size of x.
Stochastic rounding takes the half-to-even bounds.
"""

from __future__ import annotations

import numpy as np

import refquant as rq

_K = 128
_INT_VIEW = {2: np.int16, 4: np.int32, 8: np.int64}


def _keys_of(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint64 keys of float values (-0.0 and +0.0 share a key)."""
    ints = values.view(_INT_VIEW[values.dtype.itemsize]).astype(np.int64)
    smin = np.int64(np.iinfo(_INT_VIEW[values.dtype.itemsize]).min)
    signed = np.where(ints >= 0, ints, smin - ints)
    return (signed.astype(np.uint64) ^ np.uint64(1 << 63)).astype(np.uint64)


def _values_of(keys: np.ndarray, dtype: np.dtype) -> np.ndarray:
    signed = (keys ^ np.uint64(1 << 63)).astype(np.int64)
    smin = np.int64(np.iinfo(_INT_VIEW[dtype.itemsize]).min)
    ints = np.where(signed >= 0, signed, smin - signed)
    return ints.astype(_INT_VIEW[dtype.itemsize]).view(dtype)


def _first_true(lo: np.ndarray, hi: np.ndarray, probe) -> np.ndarray:
    """Per row, the smallest key in (lo, hi] where a monotone predicate holds (it holds at hi and
    not at lo). ``probe(keys)`` evaluates it on a (rows, n) key array."""
    lo, hi = lo.copy(), hi.copy()
    j = np.arange(1, _K, dtype=np.uint64)
    while np.any(hi - lo > 1):
        diff = hi - lo
        cand = lo[:, None] + (diff // _K)[:, None] * j + ((diff % _K)[:, None] * j) // _K
        truth = probe(cand)
        any_true = truth.any(axis=1)
        first = np.argmax(truth, axis=1)
        rows = np.arange(lo.size)
        new_hi = np.where(any_true, cand[rows, first], hi)
        prev = np.where(first > 0, cand[rows, np.maximum(first - 1, 0)], lo)
        new_lo = np.where(any_true, prev, cand[:, -1])
        lo, hi = new_lo, new_hi
    return hi


def ste_bounds(dtype, scale, zero_point, qmin: int, qmax: int, *, groups: int | None,
               rounding, convention):
    """``(a, b)``: arrays of x's dtype (one entry per group, or 0-d per-tensor) such that the STE
    mask is ``a <= x <= b``. ``groups`` is None per-tensor, else the number of qparam groups, with
    ``scale`` and ``zero_point`` flattened to that length (or zero_point a scalar)."""
    dtype = np.dtype(dtype)
    zp_arr = np.asarray(zero_point)
    conv = rq.conventions.get(convention).resolve(
        per_channel=groups is not None,
        float_zero_point=zp_arr.dtype.kind == "f",
        wide=(qmax - qmin) >= 256,
    )
    if rounding == "stochastic":
        rounding = "half_even"
    rows = 1 if groups is None else groups
    s64 = np.asarray(scale, dtype=np.float64).reshape(-1)
    z64 = np.asarray(zero_point, dtype=np.float64).reshape(-1)
    reach = float(np.max(s64)) * (max(abs(qmin), abs(qmax)) + float(np.max(np.abs(z64))) + 2) * 4
    finfo_max = float(np.finfo(np.float32 if dtype.name == "bfloat16" else dtype).max)
    if dtype.name == "bfloat16":
        finfo_max = float(np.array(3.3895313892515355e38, dtype=dtype).astype(np.float64))
    end = np.array(min(reach, finfo_max), dtype=np.float64).astype(dtype)
    if not np.isfinite(end.astype(np.float64)):
        end = np.array(finfo_max, dtype=np.float64).astype(dtype)
    ends = _keys_of(np.stack([-end, end]).astype(dtype))
    lo0 = np.full(2 * rows, ends[0], dtype=np.uint64)
    hi0 = np.full(2 * rows, ends[1], dtype=np.uint64)

    def codes(keys_2rows: np.ndarray) -> np.ndarray:
        # keys_2rows: (2 * rows, n); rows [0, rows) probe "q >= qmin", [rows, 2 rows) "q > qmax"
        vals = _values_of(keys_2rows, dtype)
        n = vals.shape[1]
        if groups is None:
            q = rq.quantize(vals.reshape(-1), scale, zero_point, qmin=qmin - 1, qmax=qmax + 1,
                            rounding=rounding, convention=conv)
            return q.reshape(2, n).astype(np.int64)
        per_group = vals.reshape(2, rows, n).transpose(1, 0, 2).reshape(rows, 2 * n)
        q = rq.quantize(per_group, scale, zero_point, qmin=qmin - 1, qmax=qmax + 1, axis=0,
                        rounding=rounding, convention=conv)
        return q.reshape(rows, 2, n).transpose(1, 0, 2).reshape(2 * rows, n).astype(np.int64)

    def probe(keys):
        q = codes(keys)
        return np.concatenate([q[:rows] >= qmin, q[rows:] > qmax])

    end_truth = probe(np.stack([lo0, hi0], axis=1))
    first = _first_true(lo0, hi0, probe)
    lower_keys, upper_keys = first[:rows], first[rows:] - np.uint64(1)
    a = _values_of(lower_keys, dtype).astype(dtype)
    b = _values_of(upper_keys, dtype).astype(dtype)
    inf = np.array(np.inf, dtype=np.float64).astype(dtype)
    # predicate already true at -end: every value below is inside (lower) / outside (upper)
    a = np.where(end_truth[:rows, 0], -inf, a)
    a = np.where(end_truth[:rows, 1], a, inf)          # never true: the mask is empty
    b = np.where(end_truth[rows:, 1], b, inf)          # never above qmax within reach
    b = np.where(end_truth[rows:, 0], -inf, b)
    if groups is None:
        return a.reshape(()), b.reshape(())
    return a, b
