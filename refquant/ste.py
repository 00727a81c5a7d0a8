"""The straight-through (STE) mask of an affine fake quantizer, with the affine core as the only
arithmetic.

The gradient of ``fake_quantize`` with respect to ``x`` is ``grad * m(x)`` where ``m(x) = 1`` when
the unclamped code ``round(x / s) + z`` (computed under the call's convention) lies in
``[qmin, qmax]``, else 0 (NaN gives 0). torch's fake quant uses the same mask.

* :func:`mask` gives ``m`` on an array (one core call);
* :func:`fake_quantize_with_mask` gives ``fake_quantize`` and ``m`` together, from the same pass
  of the kernels where they can (deterministic rounding, a finite nonzero scale and reciprocal),
  as torch's ``*_cachemask`` ops do: a training step saves ``m`` for its backward, ``grad * m``;
* :func:`mask_grad` applies a saved mask: ``grad * m``;
* :func:`bounds` gives the interval ``[a, b]`` of x's dtype where ``m = 1``;
* :func:`masked_grad` applies it: ``grad * (a <= x <= b)`` in one pass.

Every convention's unclamped code is monotone in ``x``, so ``m`` is the indicator of an interval
``[a, b]`` of values of x's dtype. ``a`` and ``b`` are found by a K-ary search over the ordered bit
patterns of x's dtype, each probe asking the core for ``rq.quantize`` with the range widened to
``[qmin - 1, qmax + 1]`` (so that "clamped" is visible), under the convention resolved for the
original call. A handful of core calls on a few hundred elements, whatever the size of x.
Stochastic rounding takes the half-to-even bounds.
"""

from __future__ import annotations

import numpy as np

from . import affine as _affine
from . import conventions
from .affine import Spec, quantize

__all__ = ["mask", "fake_quantize_with_mask", "apply_with_mask", "mask_grad", "bounds", "masked_grad"]

_K = 128
_INT_VIEW = {2: np.int16, 4: np.int32, 8: np.int64}
_INT_MIN = {size: np.int64(np.iinfo(t).min) for size, t in _INT_VIEW.items()}


def _keys_of(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint64 keys of float values (-0.0 and +0.0 share a key)."""
    ints = values.view(_INT_VIEW[values.dtype.itemsize]).astype(np.int64)
    signed = np.where(ints >= 0, ints, _INT_MIN[values.dtype.itemsize] - ints)
    return (signed.astype(np.uint64) ^ np.uint64(1 << 63)).astype(np.uint64)


def _values_of(keys: np.ndarray, dtype: np.dtype) -> np.ndarray:
    signed = (keys ^ np.uint64(1 << 63)).astype(np.int64)
    ints = np.where(signed >= 0, signed, _INT_MIN[dtype.itemsize] - signed)
    return ints.astype(_INT_VIEW[dtype.itemsize]).view(dtype)


def _first_true(lo: np.ndarray, hi: np.ndarray, probe) -> np.ndarray:
    """Per row, the smallest key in (lo, hi] where a monotone predicate holds (it holds at hi and
    not at lo). ``probe(keys)`` evaluates it on a (rows, n) key array."""
    lo, hi = lo.copy(), hi.copy()
    j = np.arange(1, _K, dtype=np.uint64)
    rows = np.arange(lo.size)
    while np.any(hi - lo > 1):
        diff = hi - lo
        cand = lo[:, None] + (diff // _K)[:, None] * j + ((diff % _K)[:, None] * j) // _K
        truth = probe(cand)
        any_true = truth.any(axis=1)
        first = np.argmax(truth, axis=1)
        new_hi = np.where(any_true, cand[rows, first], hi)
        prev = np.where(first > 0, cand[rows, np.maximum(first - 1, 0)], lo)
        lo = np.where(any_true, prev, cand[:, -1])
        hi = new_hi
    return hi


# Where the search starts: the unclamped code ``R(x / s) + z`` crosses an integer m (m = qmin for
# the lower end, qmax + 1 for the upper) near ``x = (m - z + c) * s`` with c = -1, -1/2 or 0
# (ceil-like, half-way and floor-like rounding modes); the convention's own arithmetic moves the
# crossing by a few of its ulps. Every key within a window of each guess (_BRACKET keys either side
# for one row, fewer for more rows, at least 16) is probed in the same core call as the ends; a
# guess whose window starts false and ends true holds the crossing, found there. A row with no
# such window searches its whole range (:func:`_first_true`).
_BRACKET = 1 << 9
_GUESSES = np.array([-1.0, -0.5, 0.0])


def _windows(dtype, s64, z64, qmin: int, qmax: int, end, lo0, hi0) -> np.ndarray:
    """Keys (2 * rows, len(_GUESSES), 2 * w + 1): each guessed crossing's window of consecutive
    keys, clipped to ``[lo0, hi0]`` (rows as in :func:`bounds`)."""
    m = np.concatenate([qmin - z64, qmax + 1 - z64])[:, None]
    reach = end.astype(np.float64)
    reach = np.concatenate([reach, reach])[:, None]
    with np.errstate(over="ignore", invalid="ignore"):
        guess = np.clip((m + _GUESSES) * np.concatenate([s64, s64])[:, None], -reach, reach)
    centre = _keys_of(guess.astype(dtype))                 # within [lo0, hi0]: guess within +-end
    w = max(16, _BRACKET >> (s64.size.bit_length() - 1))
    start = np.maximum(centre, (lo0 + np.uint64(w))[:, None]) - np.uint64(w)
    steps = np.arange(2 * w + 1, dtype=np.uint64)
    return np.minimum(start[:, :, None] + steps, hi0[:, None, None])


def _resolved(conv, per_channel: bool, zero_point, qmin: int, qmax: int):
    """The convention as resolved for the original call (its granularity, zero point and range):
    the widened quantize that shows the mask must compute as that call does."""
    return conv.resolve(per_channel=per_channel,
                        float_zero_point=np.asarray(zero_point).dtype.kind == "f",
                        wide=(qmax - qmin) >= 256)


def _search_ends(dtype: np.dtype, s64: np.ndarray, z64: np.ndarray, qmin: int, qmax: int):
    """Per group, the largest finite value ``end`` of x's dtype to search up to: the group's own
    reach ``s * (max(|qmin|, |qmax|) + |z| + 2) * 4`` (beyond it every code lies outside the
    range, and a huge quotient may overflow and wrap under a cast-first convention), at least the
    smallest subnormal, at most the dtype's largest finite value."""
    info = np.finfo(np.float32 if dtype.name == "bfloat16" else dtype)
    finfo_max = float(info.max)
    if dtype.name == "bfloat16":
        finfo_max = float(np.array(3.3895313892515355e38, dtype=dtype).astype(np.float64))
    with np.errstate(over="ignore", invalid="ignore"):
        reach = s64 * (max(abs(qmin), abs(qmax)) + np.abs(z64) + 2) * 4
    reach = np.where(np.isfinite(reach), reach, finfo_max)
    end = np.minimum(reach, finfo_max).astype(dtype)
    tiny = _values_of(np.array([(1 << 63) + 1], dtype=np.uint64), dtype)  # smallest subnormal
    end = np.where(end.astype(np.float64) > 0, end, tiny)
    return np.where(np.isfinite(end.astype(np.float64)), end,
                    np.array(finfo_max, dtype=np.float64).astype(dtype)).astype(dtype)


def bounds(dtype, scale, zero_point, qmin: int, qmax: int, *, groups: int | None = None,
           rounding=None, convention="exact"):
    """``(a, b)``: arrays of x's dtype (one entry per group, or 0-d per-tensor) such that the STE
    mask of ``fake_quantize(x, scale, zero_point, qmin=qmin, qmax=qmax, rounding=rounding,
    convention=convention)`` is ``a <= x <= b`` (an empty mask is ``a = +inf > b = -inf``).
    ``groups`` is None per-tensor, else the number of qparam groups, with ``scale`` and
    ``zero_point`` flattened to that length (or zero_point a scalar).

    The search runs per group over ``[-end, end]`` (:func:`_search_ends`); values beyond are
    outside the mask, except +-inf, which the core is asked about directly (``rq.quantize`` on
    the range widened to ``[qmin - 1, qmax + 1]``). Stochastic rounding takes the half-to-even
    bounds.

    >>> import numpy as np, refquant as rq
    >>> rq.ste.bounds(np.float32, 0.25, 0, -8, 7)  # round_half_even(x / 0.25) in [-8, 7]
    (array(-2.125, dtype=float32), array(1.8749999, dtype=float32))
    """
    dtype = np.dtype(dtype)
    conv = _resolved(conventions.get(convention), groups is not None, zero_point, qmin, qmax)
    if rounding == "stochastic":
        rounding = "half_even"
    rows = 1 if groups is None else groups
    s64 = np.broadcast_to(np.asarray(scale, dtype=np.float64).reshape(-1), (rows,))
    z64 = np.broadcast_to(np.asarray(zero_point, dtype=np.float64).reshape(-1), (rows,))
    end = _search_ends(dtype, s64, z64, qmin, qmax)
    lo0 = np.tile(_keys_of(-end), 2)
    hi0 = np.tile(_keys_of(end), 2)

    def codes(keys_2rows: np.ndarray) -> np.ndarray:
        # keys_2rows: (2 * rows, n); rows [0, rows) probe "q >= qmin", [rows, 2 rows) "q > qmax"
        vals = _values_of(keys_2rows, dtype)
        n = vals.shape[1]
        if groups is None:
            q = quantize(vals.reshape(-1), scale, zero_point, qmin=qmin - 1, qmax=qmax + 1,
                            rounding=rounding, convention=conv)
            return q.reshape(2, n).astype(np.int64)
        per_group = vals.reshape(2, rows, n).transpose(1, 0, 2).reshape(rows, 2 * n)
        q = quantize(per_group, scale, zero_point, qmin=qmin - 1, qmax=qmax + 1, axis=0,
                        rounding=rounding, convention=conv)
        return q.reshape(rows, 2, n).transpose(1, 0, 2).reshape(2 * rows, n).astype(np.int64)

    def probe(keys):
        q = codes(keys)
        return np.concatenate([q[:rows] >= qmin, q[rows:] > qmax])

    # one core call for +-inf, the ends and the windows around the guessed crossings
    win = _windows(dtype, s64, z64, qmin, qmax, end, lo0, hi0)
    inf_keys = _keys_of(np.array([-np.inf, np.inf], dtype=np.float64).astype(dtype))
    keys = np.concatenate([np.tile(inf_keys, (2 * rows, 1)), lo0[:, None], hi0[:, None],
                           win.reshape(2 * rows, -1)], axis=1)
    q = codes(keys)
    truth = np.concatenate([q[:rows] >= qmin, q[rows:] > qmax])
    q_inf = q[:rows, :2]
    inf_inside = (q_inf >= qmin) & (q_inf <= qmax)      # (rows, 2): at -inf, at +inf
    end_truth = truth[:, 2:4]
    in_win = truth[:, 4:].reshape(win.shape)
    holds = ~in_win[:, :, 0] & in_win[:, :, -1]         # (2 rows, guesses): crossing inside
    r = np.arange(2 * rows)
    pick = np.argmax(holds, axis=1)
    first = win[r, pick, np.argmax(in_win[r, pick], axis=1)]
    lost = ~holds.any(axis=1)
    if lost.any():  # found rows stay put: (first - 1, first] with the predicate false at first - 1
        first = _first_true(np.where(lost, lo0, first - np.uint64(1)),
                            np.where(lost, hi0, first), probe)
    lower_keys, upper_keys = first[:rows], first[rows:] - np.uint64(1)
    a = _values_of(lower_keys, dtype).astype(dtype)
    b = _values_of(upper_keys, dtype).astype(dtype)
    inf = np.array(np.inf, dtype=np.float64).astype(dtype)
    low_in, up_at_lo, up_at_hi = end_truth[:rows, 0], end_truth[rows:, 0], end_truth[rows:, 1]
    # "q >= qmin" already at -end: the mask starts at -end (at -inf if the core keeps it inside)
    a = np.where(low_in, np.where(inf_inside[:, 0], -inf, -end), a)
    # "q > qmax" never within [-end, end]: the mask ends at end (at +inf if kept inside)
    b = np.where(up_at_hi, b, np.where(inf_inside[:, 1], inf, end))
    empty = ~end_truth[:rows, 1] | up_at_lo             # never >= qmin, or above qmax from -end
    a = np.where(empty, inf, a).astype(dtype)
    b = np.where(empty, -inf, b).astype(dtype)
    if groups is None:
        return a.reshape(()), b.reshape(())
    return a, b


def mask(x, scale, zero_point=0, *, qmin=None, qmax=None, fmt=None, axis=None, block_size=None,
         rounding=None, convention="exact") -> np.ndarray:
    """The straight-through mask ``m`` (bool, x's shape) of ``fake_quantize`` with the same
    arguments: ``m = 1`` where the unclamped code ``round(x / s) + z`` under the convention lies
    in ``[qmin, qmax]``, else 0 (NaN x: 0). It is ``quantize`` with the range widened to
    ``[qmin - 1, qmax + 1]`` (so that a clamped code shows), under the convention resolved for the
    original range, compared with ``[qmin, qmax]``; stochastic rounding takes half to even.

    >>> import numpy as np, refquant as rq
    >>> rq.ste.mask(np.float32([-2.2, -2.1, 1.87, 1.88, np.nan]), 0.25, 0, qmin=-8, qmax=7).tolist()
    [False, True, True, False, False]
    """
    spec = Spec.of(qmin=qmin, qmax=qmax, fmt=fmt, axis=axis, block_size=block_size,
                   rounding=rounding, convention=convention)
    return _mask_of(spec, x, scale, zero_point)


def fake_quantize_with_mask(x, scale, zero_point=0, *, qmin=None, qmax=None, fmt=None, axis=None,
                            block_size=None, rounding=None, convention="exact", rng=None):
    """``(rq.fake_quantize(x, ...), rq.ste.mask(x, ...))`` with the same arguments, both from one
    pass of the kernels where they can give the mask (a deterministic rounding, a finite nonzero
    scale and reciprocal, a range clamped at its integer ends; elsewhere the mask takes a second
    core call). The mask is the code before the clamp, as computed for the output, lying in
    ``[qmin, qmax]``; NaN x gives 0.

    >>> import numpy as np, refquant as rq
    >>> y, m = rq.ste.fake_quantize_with_mask(np.float32([0.3, 9.0, np.nan]), 0.25, 0, qmin=-8,
    ...                                      qmax=7, convention="torch.fake_quantize")
    >>> y.tolist(), m.tolist()  # torch's fake quant makes NaN the code qmin
    ([0.25, 1.75, -2.0], [True, False, False])
    """
    spec = Spec.of(qmin=qmin, qmax=qmax, fmt=fmt, axis=axis, block_size=block_size,
                   rounding=rounding, convention=convention)
    return apply_with_mask(spec, x, scale, zero_point, rng=rng)


def apply_with_mask(spec: Spec, x, scale, zero_point=0, *, rng=None, one_pass=False):
    """:func:`fake_quantize_with_mask` for a :class:`refquant.affine.Spec` (as
    :func:`refquant.affine.apply` runs one). With ``one_pass``, the mask is None where the
    kernels cannot give it in the same pass (a caller may then find it another way).

    >>> import numpy as np, refquant as rq
    >>> from refquant.affine import Spec
    >>> spec = Spec.of(qmin=0, qmax=15, convention="onnx")
    >>> y, m = rq.ste.apply_with_mask(spec, np.float32([0.125, 0.375, 9.0]), 0.25, 1)
    >>> y.tolist(), m.tolist()
    ([0.0, 0.5, 3.5], [True, True, False])
    """
    y, m = _affine._run(x, scale, zero_point, spec, rng, True, with_mask=True)
    if m is None and not one_pass:
        m = _mask_of(spec, x, scale, zero_point)
    return y, m


def _mask_of(spec: Spec, x, scale, zero_point) -> np.ndarray:
    xa = _affine._check_input(x, spec.convention)
    conv = _resolved(spec.convention, spec.axis is not None or spec.block_size is not None,
                     zero_point, spec.qmin, spec.qmax)
    nan = np.isnan(xa)
    if nan.any():
        xa = np.where(nan, 0, xa).astype(xa.dtype)
    q = quantize(xa, scale, zero_point, qmin=spec.qmin - 1, qmax=spec.qmax + 1, axis=spec.axis,
                 block_size=spec.block_size,
                 rounding="half_even" if spec.rounding == "stochastic" else spec.rounding,
                 convention=conv)
    inside = (q >= spec.qmin) & (q <= spec.qmax)
    inside &= ~nan
    return inside


def mask_grad(grad, m) -> np.ndarray:
    """``grad * m``: the straight-through gradient for a mask ``m`` (bool, grad's shape) from
    :func:`mask` or :func:`fake_quantize_with_mask`, as ``grad * 1`` or ``grad * 0`` in grad's
    float32 or float64 dtype (a NaN or infinite grad gives NaN outside the mask, and ``-g * 0``
    is ``-0.0``, as a multiplication by a mask does), in one pass.

    >>> import numpy as np, refquant as rq
    >>> rq.ste.mask_grad(np.float32([-2.0, 3.0, np.inf]), np.array([True, False, False])).tolist()
    [-2.0, 0.0, nan]
    """
    grad, m = np.asarray(grad), np.asarray(m)
    if grad.shape != m.shape or m.dtype != np.bool_ or grad.dtype not in (np.float32, np.float64):
        raise TypeError(f"grad must be float32/float64 and m a bool array of its shape; got "
                        f"grad {grad.dtype}{grad.shape} and m {m.dtype}{m.shape}")
    if grad.size < _SMALL:
        with np.errstate(invalid="ignore"):  # inf * 0 is NaN, as in the kernel
            return grad * m
    gs, ms = np.ascontiguousarray(grad).reshape(-1), np.ascontiguousarray(m).reshape(-1)
    out = np.empty_like(gs)
    t = grad.dtype.type
    from ._kernels._ste import mask_product_kernel  # Numba loads on the first kernel call

    mask_product_kernel(gs.size, gs, ms, t(1), t(0), out)
    return out.reshape(grad.shape)


def masked_grad(grad, x, a, b) -> np.ndarray:
    """``grad * (a <= x <= b)``: the straight-through gradient for the per-tensor bounds ``(a, b)``
    of :func:`bounds`, as ``grad * 1`` or ``grad * 0`` in grad's dtype (so a NaN or infinite
    grad gives NaN outside the mask, and ``-g * 0`` is ``-0.0``, as a multiplication by a mask
    does); NaN x is outside. ``grad`` and ``x`` share one shape and a float32 or float64 dtype.

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([-3.0, -2.125, 0.5, 1.875, np.nan])
    >>> a, b = rq.ste.bounds(np.float32, 0.25, 0, -8, 7)
    >>> rq.ste.masked_grad(np.full(5, -2.0, np.float32), x, a, b).tolist()
    [-0.0, -2.0, -2.0, -0.0, -0.0]
    """
    grad, x = np.asarray(grad), np.asarray(x)
    if grad.shape != x.shape or grad.dtype != x.dtype or x.dtype not in (np.float32, np.float64):
        raise TypeError(f"grad and x must share a shape and a float32/float64 dtype; got "
                        f"{grad.dtype}{grad.shape} and {x.dtype}{x.shape}")
    lo, hi = x.dtype.type(a), x.dtype.type(b)
    if x.size < _SMALL:  # NumPy's ufuncs: the same products, without the kernel's dispatch cost
        mask = (x >= lo) & (x <= hi)
        if mask.all():
            return grad * mask
        with np.errstate(invalid="ignore"):  # inf * 0 is NaN, as in the kernel
            return grad * mask
    xs, gs = np.ascontiguousarray(x).reshape(-1), np.ascontiguousarray(grad).reshape(-1)
    out = np.empty_like(gs)
    t = x.dtype.type
    from ._kernels._ste import masked_grad_kernel  # Numba loads on the first kernel call

    masked_grad_kernel(xs.size, xs, gs, lo, hi, t(1), t(0), out)
    return out.reshape(x.shape)


_SMALL = 1 << 12
