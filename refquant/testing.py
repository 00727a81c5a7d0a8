"""Bitwise assertions for quantized outputs, with a report in quantization terms.

``assert_quant_equal(actual, expected)`` compares bit patterns (floats viewed as unsigned
integers, every NaN equal to every NaN; integer codes by value). On a difference the
AssertionError says how many elements differ, by how many quantization steps (given ``scale``,
or directly for integer codes), the first few indices with input, expected and actual, and how
many differing elements sit on a rounding tie (``x / s`` exactly half-way between two integers,
checked with exact rational arithmetic).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

__all__ = ["assert_quant_equal", "quant_mismatch_report"]


def _bits(a: np.ndarray) -> np.ndarray:
    """Bit patterns as int64-comparable unsigned ints, with all NaNs made one pattern."""
    view = np.ascontiguousarray(a).view(f"u{a.dtype.itemsize}").copy()
    nan = np.isnan(a.astype(np.float32) if a.dtype.itemsize == 2 else a)
    view[nan] = 0
    return view


def _differ(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    if actual.dtype.kind in "iub" and expected.dtype.kind in "iub":
        return actual.astype(np.int64) != expected.astype(np.int64)
    return _bits(actual) != _bits(expected)


def _broadcast_qparam(v, axis, shape):
    a = np.asarray(v, np.float64)
    if axis is not None and a.ndim == 1:
        view = [1] * len(shape)
        view[axis] = -1
        a = a.reshape(view)
    return np.broadcast_to(a, shape)


def _is_tie(x: float, s: float) -> bool:
    if not np.isfinite(x):
        return False
    r = Fraction(x) / Fraction(s)
    return r.denominator == 2


def quant_mismatch_report(actual, expected, *, x=None, scale=None, zero_point=None, axis=None,
                          max_examples=5):
    """The text :func:`assert_quant_equal` would raise, or None when the two agree bit for bit."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        return f"shapes differ: actual {actual.shape}, expected {expected.shape}"
    if actual.dtype != expected.dtype:
        return f"dtypes differ: actual {actual.dtype}, expected {expected.dtype}"
    diff = _differ(actual, expected)
    n = int(diff.sum())
    if n == 0:
        return None
    lines = [f"{n} of {diff.size} elements differ ({100 * n / diff.size:.3g}%)"]
    idx = np.flatnonzero(diff.ravel())
    a64, e64 = actual.ravel().astype(np.float64), expected.ravel().astype(np.float64)
    steps = None
    if actual.dtype.kind in "iu":
        steps = (a64 - e64)[idx]
    elif scale is not None:
        s = _broadcast_qparam(scale, axis, actual.shape).ravel()[idx]
        with np.errstate(invalid="ignore"):
            steps = (a64[idx] - e64[idx]) / s
    if steps is not None:
        finite = np.isfinite(steps)
        if finite.any():
            k = np.round(steps[finite]).astype(np.int64)
            vals, counts = np.unique(k, return_counts=True)
            hist = ", ".join(f"{v:+d}: {c}" for v, c in zip(vals.tolist(), counts.tolist()))
            lines.append(f"steps (actual - expected in units of the scale): {hist}")
        if (~finite).any():
            lines.append(f"{int((~finite).sum())} differences involve NaN or inf")
    xs = None
    if x is not None:
        xs = np.asarray(x).ravel()
        if scale is not None:
            s_all = _broadcast_qparam(scale, axis, actual.shape).ravel()
            ties = sum(_is_tie(float(xs[i]), float(s_all[i])) for i in idx[:100_000])
            checked = min(idx.size, 100_000)
            lines.append(f"{ties} of {checked} differing elements sit on a rounding tie (x / s = k + 1/2)")
    for i in idx[:max_examples]:
        where = np.unravel_index(i, actual.shape) if actual.ndim > 1 else int(i)
        inp = f"x={xs[i].item()!r} " if xs is not None else ""
        lines.append(f"  at {where}: {inp}expected={expected.ravel()[i].item()!r} "
                     f"actual={actual.ravel()[i].item()!r}")
    return "\n".join(lines)


def assert_quant_equal(actual, expected, *, x=None, scale=None, zero_point=None, axis=None,
                       max_examples=5, err_msg=""):
    """Assert that ``actual`` and ``expected`` are equal bit for bit (NaN equals NaN).

    Float outputs are compared as bit patterns (so ``-0.0 != 0.0``); integer codes by value; the
    dtypes and shapes must agree. Give ``x`` (the inputs) and ``scale`` (scalar, or 1-D with
    ``axis``) for a report of step sizes and rounding ties.

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([0.125, 0.375])
    >>> rq.testing.assert_quant_equal(rq.quantize(x, 0.25, 0, fmt=rq.int8), np.int8([0, 2]))
    >>> try:
    ...     rq.testing.assert_quant_equal(np.int8([1, 2]), np.int8([0, 2]), x=x, scale=0.25)
    ... except AssertionError as e:
    ...     print(str(e).splitlines()[0])
    1 of 2 elements differ (50%)
    """
    text = quant_mismatch_report(actual, expected, x=x, scale=scale, zero_point=zero_point,
                                 axis=axis, max_examples=max_examples)
    if text is not None:
        raise AssertionError((err_msg + "\n" if err_msg else "") + text)
