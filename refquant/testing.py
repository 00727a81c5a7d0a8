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


def _is_tie(x: float, s: float, z: float = 0.0) -> bool:
    """``x / s + z`` is exactly half-way between two integers (exact rational arithmetic)."""
    if not (np.isfinite(x) and np.isfinite(z)):
        return False
    r = Fraction(x) / Fraction(s) + Fraction(z)
    return r.denominator == 2


def _step_lines(steps: np.ndarray) -> list:
    """Histogram of whole-step differences, plus the count of sub-step (last-bit) ones."""
    lines = []
    finite = np.isfinite(steps)
    k = np.round(steps[finite])
    whole = (np.abs(steps[finite] - k) <= 1e-3) & (k != 0)
    if whole.any():
        vals, counts = np.unique(k[whole].astype(np.int64), return_counts=True)
        hist = ", ".join(f"{v:+d}: {c}" for v, c in zip(vals.tolist(), counts.tolist()))
        lines.append(f"steps (actual - expected in units of the scale): {hist}")
    if (~whole).any():
        lines.append(f"{int((~whole).sum())} differ by a fraction of a step (the last bits of the "
                     "value: dequantization arithmetic, not the code)")
    if (~finite).any():
        lines.append(f"{int((~finite).sum())} differences involve NaN or inf")
    return lines


def quant_mismatch_report(actual, expected, *, x=None, scale=None, zero_point=None, axis=None,
                          max_examples=5, qmin=None, qmax=None, convention="exact", block_size=None):
    """The text :func:`assert_quant_equal` would raise, or None when the two agree bit for bit.

    With ``x``, ``scale``, ``qmin`` and ``qmax`` the causes come from the diagnosis engine that
    ``identify`` and ``refquant check`` use: ``actual`` is compared with ``convention``'s output
    (``rq.quantize`` for integer ``actual``, else ``rq.fake_quantize``) and a cause is named only
    where recomputing under that change reproduces ``actual``. Steps are ``(actual - expected)
    / s`` (integer codes: ``actual - expected``); a difference
    that is not a whole number of steps is reported as a last-bit (dequantization) difference;
    a tie is an input with ``x / s + z = k + 1/2`` exactly (``fractions.Fraction``).

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([0.125, 0.3])
    >>> print(rq.testing.quant_mismatch_report(np.float32([0.25, 0.25]), np.float32([0.0, 0.25]),
    ...                                        x=x, scale=0.25))
    1 of 2 elements differ (50%)
    steps (actual - expected in units of the scale): +1: 1
    1 of 1 differing elements sit on a rounding tie (x / s + z = k + 1/2 exactly)
      at 0: x=0.125 expected=0.0 actual=0.25
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        return f"shapes differ: actual {actual.shape}, expected {expected.shape}"
    if actual.dtype != expected.dtype:
        return f"dtypes differ: actual {actual.dtype}, expected {expected.dtype}"
    xs = None
    if x is not None:
        xs = np.asarray(x)
        if xs.shape != actual.shape:
            raise ValueError(f"x must have the outputs' shape {actual.shape}; got {xs.shape}")
        xs = xs.ravel()
    diff = _differ(actual, expected)
    n = int(diff.sum())
    if n == 0:
        return None
    lines = [f"{n} of {diff.size} elements differ ({100 * n / diff.size:.3g}%)"]
    idx = np.flatnonzero(diff.ravel())
    a64, e64 = actual.ravel().astype(np.float64), expected.ravel().astype(np.float64)
    s_all = None if scale is None else _broadcast_qparam(scale, axis, actual.shape).ravel()
    signed_zero = (a64[idx] == 0) & (e64[idx] == 0)
    moved = idx[~signed_zero]
    with np.errstate(invalid="ignore", over="ignore"):
        if actual.dtype.kind in "iu":
            lines += _step_lines(a64[moved] - e64[moved])
        elif s_all is not None and moved.size:
            lines += _step_lines((a64[moved] - e64[moved]) / s_all[moved])
    if signed_zero.any():
        lines.append(f"{int(signed_zero.sum())} differ only in the sign of zero (+0.0 vs -0.0)")
    if xs is not None and s_all is not None:
        z_all = _broadcast_qparam(0 if zero_point is None else zero_point, axis, actual.shape).ravel()
        checked = idx[:100_000]
        ties = sum(_is_tie(float(xs[i]), float(s_all[i]), float(z_all[i])) for i in checked)
        lines.append(f"{ties} of {checked.size} differing elements sit on a rounding tie "
                     "(x / s + z = k + 1/2 exactly)")
    if xs is not None and scale is not None and qmin is not None and qmax is not None:
        lines += _engine_lines(np.asarray(x), actual, scale, zero_point, qmin, qmax, axis, block_size,
                               convention)
    for i in idx[:max_examples]:
        where = np.unravel_index(i, actual.shape) if actual.ndim > 1 else int(i)
        inp = f"x={xs[i].item()!r} " if xs is not None else ""
        lines.append(f"  at {where}: {inp}expected={expected.ravel()[i].item()!r} "
                     f"actual={actual.ravel()[i].item()!r}")
    return "\n".join(lines)


def _engine_lines(x, actual, scale, zero_point, qmin, qmax, axis, block_size, convention) -> list:
    from .conventions import get
    from .golden._diagnose import Setting, diagnose

    op = "quantize" if actual.dtype.kind in "iu" else "fake_quantize"
    setting = Setting(op, scale, 0 if zero_point is None else zero_point, qmin, qmax,
                      get(convention), axis, block_size)
    d = diagnose(x, actual, setting)
    return ["diagnosis: " + line for line in d.lines(get(convention).name)]


def assert_quant_equal(actual, expected, *, x=None, scale=None, zero_point=None, axis=None,
                       max_examples=5, err_msg="", qmin=None, qmax=None, convention="exact",
                       block_size=None):
    """Assert that ``actual`` and ``expected`` are equal bit for bit (NaN equals NaN).

    Float outputs are compared as bit patterns (so ``-0.0 != 0.0``); integer codes by value; the
    dtypes and shapes must agree. Give ``x`` (the inputs) and ``scale`` (scalar, or 1-D with
    ``axis``) for a report of step sizes and rounding ties; add ``qmin``, ``qmax`` (and the
    ``convention`` that made ``expected``, default ``"exact"``) for the causes, found by the same
    engine as ``rq.identify`` and ``refquant check``.

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([0.125, 0.375])
    >>> rq.testing.assert_quant_equal(rq.quantize(x, 0.25, 0, fmt=rq.int8), np.int8([0, 2]))
    >>> try:
    ...     rq.testing.assert_quant_equal(np.int8([1, 2]), np.int8([0, 2]), x=x, scale=0.25)
    ... except AssertionError as e:
    ...     print(str(e).splitlines()[0])
    1 of 2 elements differ (50%)
    >>> x = np.float32([0.125, 0.375, 1.0])
    >>> y = rq.fake_quantize(x, 0.25, 0, qmin=-8, qmax=7, rounding="half_away")
    >>> try:
    ...     rq.testing.assert_quant_equal(y, rq.fake_quantize(x, 0.25, 0, qmin=-8, qmax=7), x=x,
    ...                                   scale=0.25, qmin=-8, qmax=7)
    ... except AssertionError as e:
    ...     print([ln for ln in str(e).splitlines() if "tie rounding" in ln][0])
    diagnosis:   tie rounding: 1 (rounding='half_away')
    """
    text = quant_mismatch_report(actual, expected, x=x, scale=scale, zero_point=zero_point,
                                 axis=axis, max_examples=max_examples, qmin=qmin, qmax=qmax,
                                 convention=convention, block_size=block_size)
    if text is not None:
        raise AssertionError((err_msg + "\n" if err_msg else "") + text)
