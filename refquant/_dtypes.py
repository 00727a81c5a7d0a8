"""Floating dtypes refquant accepts, with bfloat16 taken from ml_dtypes when it is installed."""

from __future__ import annotations

import importlib.util

import numpy as np

from ._codes import Format

_BF16 = None


def bfloat16() -> np.dtype | None:
    """ml_dtypes' bfloat16 dtype, or None when ml_dtypes is not installed (imported on demand).

    >>> from refquant.interop import bfloat16
    >>> bfloat16() is None or bfloat16().name == "bfloat16"
    True
    """
    global _BF16
    if _BF16 is None and importlib.util.find_spec("ml_dtypes") is not None:
        import ml_dtypes

        _BF16 = np.dtype(ml_dtypes.bfloat16)
    return _BF16


def is_bfloat16(dtype) -> bool:
    dtype = np.dtype(dtype)
    return dtype.kind == "V" and dtype.name == "bfloat16"  # ml_dtypes types are kind "V"


def is_supported_float(dtype) -> bool:
    """float16, bfloat16, float32 or float64."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" and dtype.itemsize in (2, 4, 8) or is_bfloat16(dtype)


def finfo(dtype):
    """``np.finfo`` of a float dtype, bfloat16 included (ml_dtypes' finfo)."""
    dtype = np.dtype(dtype)
    if is_bfloat16(dtype):
        import ml_dtypes

        return ml_dtypes.finfo(dtype)
    return np.finfo(dtype)


_CODES = {np.dtype(np.float64): Format.FLOAT64, np.dtype(np.float32): Format.FLOAT32,
          np.dtype(np.float16): Format.FLOAT16}


def float_code(dtype) -> int:
    """Kernel code of a float dtype (:class:`refquant._codes.Format`): 0 float64, 1 float32,
    2 float16, 3 bfloat16."""
    code = _CODES.get(np.dtype(dtype))
    return int(Format.BFLOAT16 if code is None and is_bfloat16(dtype) else code)


def f32_of_fraction(r):
    """The float32 nearest to the rational ``r`` (a ``fractions.Fraction``; ties to even), as
    ``np.float32``: ``float(r)`` is correctly rounded to float64, and its float32 neighbours are
    compared exactly (rounding twice can miss by one)."""
    from fractions import Fraction

    c = np.float32(float(r))
    best = c
    for n in (np.nextafter(c, np.float32(-np.inf)), np.nextafter(c, np.float32(np.inf))):
        if not np.isfinite(n):
            continue
        dn, db = abs(Fraction(float(n)) - r), abs(Fraction(float(best)) - r)
        if dn < db or (dn == db and int(n.view(np.uint32)) % 2 == 0):
            best = n
    return np.float32(best)
