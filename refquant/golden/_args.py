"""Argument checks the golden entry points share (cases, identify, sweep and their float, block
and requantization forms): one message for each mistake."""

from __future__ import annotations

import numpy as np

OPS = ("quantize", "fake_quantize")


def check_op(op) -> str:
    """``op`` when it is ``"quantize"`` or ``"fake_quantize"``, else a ValueError naming it."""
    if op not in OPS:
        raise ValueError(f"op must be 'quantize' or 'fake_quantize'; got {op!r}")
    return op


def same_shape(a, b, names=("x", "y")) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` as arrays of one shape, else a ValueError naming both."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape; got {a.shape} and {b.shape}")
    return a, b


def op_outputs(x, y, op, *, codes="iu", holding="integer codes") -> tuple[np.ndarray, np.ndarray]:
    """``x`` and the outputs ``y`` of ``op`` on it, as arrays: one shape, ``fake_quantize`` values
    in x's dtype, ``quantize`` codes of a dtype kind in ``codes`` (``holding`` says what they
    are); else a ValueError or TypeError naming ``y``."""
    x, y = same_shape(x, y)
    if op == "fake_quantize" and y.dtype != x.dtype:
        raise TypeError(f"fake_quantize output y must have x's dtype {x.dtype}; got {y.dtype}")
    if op == "quantize" and y.dtype.kind not in codes:
        raise TypeError(f"quantize output y must hold {holding}; got dtype {y.dtype}")
    return x, y
