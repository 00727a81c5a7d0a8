"""Golden cases and convention identification for the integer operators (``rq.ops``; the names
are public there: ``rq.ops.requantize_cases``, ``rq.ops.linear_cases``,
``rq.ops.identify_requantization``).

``requantize_cases`` lists accumulators on and next to every rounding tie of a multiplier (and
the int32 ends) with the codes a convention gives them; ``linear_cases`` builds a quantized
linear layer whose scales put many outputs exactly on ties; ``identify_requantization`` names
the rows of ``rq.ops.conventions`` that reproduce a candidate's codes, with the mismatch count of
every other row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._validation import resolve_range
from ..ops import conventions, linear, requantize
from ..ops._accumulate import positive
from ._args import same_shape

_I32 = (-(2**31), 2**31 - 1)


def requantize_cases(multiplier, zero_point, *, qmin=None, qmax=None, fmt=None, convention="exact"):
    """``(acc, codes)``: int32 accumulators at, one below and one above every tie of
    ``acc * multiplier`` that lands inside ``[qmin, qmax]`` (plus 0, +-1 and the int32 ends), and
    ``rq.ops.requantize(acc, multiplier, zero_point, ...)`` under ``convention``.

    >>> import refquant as rq
    >>> acc, codes = rq.ops.requantize_cases(0.5, 0, qmin=-2, qmax=2)
    >>> acc.tolist()[:6], codes.tolist()[:6]
    ([-2147483648, -6, -5, -4, -3, -2], [-2, -2, -2, -2, -2, -1])
    """
    lo, hi = resolve_range(qmin, qmax, fmt)
    m = float(positive(multiplier, "multiplier"))
    ks = np.arange(lo - zero_point - 1, hi - zero_point + 1, dtype=np.float64) + 0.5
    centre = np.floor(ks / m)
    values = np.concatenate([centre - 1, centre, centre + 1, [0, 1, -1, _I32[0], _I32[1]]])
    acc = np.unique(np.clip(values, *_I32)).astype(np.int32)
    return acc, requantize(acc, m, zero_point, qmin=lo, qmax=hi, convention=convention)


def linear_cases(m=16, k=64, n=16, *, convention="fbgemm", per_channel=False, bias=True, seed=0):
    """A dict of inputs (``xq, x_scale, x_zero_point, wq, w_scale, w_zero_point, bias, y_scale,
    y_zero_point``, ``axis``) and ``expected`` = ``rq.ops.linear(...)`` under ``convention``.

    The scales are powers of two with ``s_x * s_w / s_y = 1/2`` so that every odd accumulator is a
    rounding tie; ``bias`` (float32 halves of the accumulator step) keeps them on ties.

    >>> import refquant as rq
    >>> case = rq.ops.linear_cases(2, 3, 2, seed=1)
    >>> sorted(case)[:3], case["expected"].dtype
    (['axis', 'bias', 'expected'], dtype('uint8'))
    """
    rng = np.random.default_rng(seed)
    xq = rng.integers(0, 256, (m, k)).astype(np.uint8)
    wq = rng.integers(-8, 9, (n, k)).astype(np.int8)
    xs, ys = 2.0**-4, 2.0**-6
    ws = np.full(n, 2.0**-3) if per_channel else 2.0**-3
    b = (rng.integers(-64, 64, n) * (xs * 2.0**-4)).astype(np.float32) if bias else None
    case = dict(xq=xq, x_scale=xs, x_zero_point=int(rng.integers(100, 156)), wq=wq, w_scale=ws,
                w_zero_point=0, bias=b, y_scale=ys, y_zero_point=int(rng.integers(100, 156)),
                axis=0 if per_channel else None)
    case["expected"] = linear(**case, convention=convention)
    return case


@dataclass
class RequantizationMatch:
    """Which requantization rows reproduce a candidate: ``matches`` (names) and ``mismatches``
    (name -> count of differing codes); ``skipped`` (name -> why the row cannot run the inputs).

    >>> import numpy as np, refquant as rq
    >>> acc = np.int32([1, 3, 5])
    >>> r = rq.ops.identify_requantization(acc, np.int8([0, 2, 2]), 0.5, 0, qmin=-8, qmax=7)
    >>> r.matches, r.mismatches["gemmlowp"]
    (['exact', 'fbgemm', 'onnx', 'onnxruntime', 'xnnpack'], 2)
    """

    size: int
    matches: list = field(default_factory=list)
    mismatches: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)


def identify_requantization(acc, y, multiplier, zero_point, *, qmin=None, qmax=None, fmt=None, axis=None):
    """Run every row of ``rq.ops.conventions`` on ``acc`` and compare with the candidate's codes ``y``.

    >>> import numpy as np, refquant as rq
    >>> acc = np.arange(-9, 10, dtype=np.int32)
    >>> y = np.floor(acc / 2 + 0.5).astype(np.int8)           # ties rounded up
    >>> r = rq.ops.identify_requantization(acc, y, 0.5, 0, qmin=-128, qmax=127)
    >>> r.matches
    ['gemmlowp', 'tflite', 'tflite.single_rounding']
    """
    acc, y = same_shape(acc, y, ("acc", "y"))
    if y.dtype.kind not in "iu":
        raise TypeError(f"y must hold integer codes; got dtype {y.dtype}")
    result = RequantizationMatch(size=int(y.size))
    for name in conventions.names():
        try:
            got = requantize(acc, multiplier, zero_point, qmin=qmin, qmax=qmax, fmt=fmt, axis=axis,
                             convention=name)
        except ValueError as exc:
            result.skipped[name] = str(exc)
            continue
        bad = int(np.count_nonzero(got.astype(np.int64) != y.astype(np.int64)))
        result.mismatches[name] = bad
        if bad == 0:
            result.matches.append(name)
    return result
