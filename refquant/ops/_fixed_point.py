"""The 31-bit fixed-point requantization of gemmlowp and TFLite, in exact int64 arithmetic."""

from __future__ import annotations

import numpy as np

from ._accumulate import positive

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real):
    """TFLite's ``QuantizeMultiplier``: a positive real as ``(q, shift)`` with ``real ~ q * 2**(shift - 31)``.

    Formula: ``(f, shift) = frexp(real)`` with ``f`` in [0.5, 1); ``q = round_half_away(f * 2**31)``
    (exact in float64, then one rounding to an integer); ``q == 2**31`` becomes ``2**30`` with
    ``shift + 1``; a ``shift < -31`` (``real`` below about 2**-32) flushes to ``(0, 0)``. ``q`` is
    an int32 in [2**30, 2**31 - 1] (or 0) and ``shift`` an int32. ``real`` is a positive finite
    scalar or array (float64 values; a float32 scale is used as its exact value); the result has
    its shape (NumPy scalars for a scalar).

    >>> import refquant as rq
    >>> [tuple(map(int, rq.ops.quantize_multiplier(m))) for m in (0.5, 1.0, 0.75, 0.125)]
    [(1073741824, 0), (1073741824, 1), (1610612736, 0), (1073741824, -2)]
    """
    m = positive(real, "real")
    frac, shift = np.frexp(m)
    scaled = frac * 2.0**31  # exact: a power-of-two scaling
    q = np.floor(scaled + 0.5).astype(np.int64)  # frac > 0, so half away from zero is floor(x + 0.5)
    carry = q == 2**31
    q = np.where(carry, q // 2, q)
    shift = shift.astype(np.int64) + carry
    flush = shift < -31
    q = np.where(flush, 0, q).astype(np.int32)
    shift = np.where(flush, 0, shift).astype(np.int32)
    if q.ndim == 0:
        return q[()], shift[()]
    return q, shift


def _srdhm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul: round(a * b / 2**31), ties toward +inf; (MIN, MIN) -> MAX."""
    out = (a * b + 2**30) >> 31  # int64: |a * b| <= 2**62; >> floors
    return np.where((a == _INT32_MIN) & (b == _INT32_MIN), _INT32_MAX, out)


def _rounding_divide_by_pot(x: np.ndarray, e: np.ndarray) -> np.ndarray:
    """RoundingDivideByPOT: x / 2**e rounded to nearest, ties away from zero (e in [0, 31])."""
    half = np.where(e > 0, np.left_shift(1, np.maximum(e - 1, 0)), 0)
    mag = (np.abs(x) + half) >> e
    return np.where(x < 0, -mag, mag)


def multiply_by_quantized_multiplier(acc: np.ndarray, q: np.ndarray, shift: np.ndarray, rounding: str,
                                     name: str = "acc") -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier on int64 arrays holding int32 values.

    ``rounding="double"`` (the default TFLite build, gemmlowp):
    ``RoundingDivideByPOT(SRDHM(acc * 2**max(shift, 0), q), max(-shift, 0))``;
    ``rounding="single"`` (``TFLITE_SINGLE_ROUNDING``): ``floor((acc*q + 2**(30-shift)) / 2**(31-shift))``.
    """
    acc = acc.astype(np.int64)
    q = np.asarray(q, np.int64)
    shift = np.asarray(shift, np.int64)
    if rounding == "single":
        total = 31 - np.minimum(shift, 30)
        qq = np.where(shift > 30, _INT32_MAX, q)
        return _shift_round_up(acc, qq, total)
    left = np.maximum(shift, 0)
    shifted = acc << left
    bad = (shifted < _INT32_MIN) | (shifted > _INT32_MAX)
    if bad.any():
        i = np.argmax(np.broadcast_to(bad, shifted.shape).ravel())
        raise ValueError(
            f"{name} * 2**shift overflows int32 in the fixed-point multiply (int32 arithmetic): "
            f"{name}={int(np.broadcast_to(acc, shifted.shape).ravel()[i])}, "
            f"shift={int(np.broadcast_to(left, shifted.shape).ravel()[i])}"
        )
    return _rounding_divide_by_pot(_srdhm(shifted, q), np.maximum(-shift, 0))


def _shift_round_up(acc, q, total):
    # acc * q needs up to 62 bits and the rounding term up to 2**61: no int64 overflow
    return (acc * q + np.left_shift(1, total - 1)) >> total
