"""AIMET's affine encodings: the range rule of its min-max encoding analyzer, the scale and offset of
a range, and the gradients of its quantize and dequantize functions.

An encoding of ``n = qmax - qmin + 1`` codes over ``[min, max]`` has::

    scale  = (max - min) / (qmax - qmin)                  (each op in the range's dtype)
    offset = round_half_even(min / scale) - qmin         (0 when symmetric); zero point = -offset
    code   = clamp(round(x / scale) - offset, qmin, qmax)   (``rq.quantize(x, scale, -offset, ...)``)
    value  = (code + offset) * scale

Symmetric encodings use signed codes ``[-2**(b-1), 2**(b-1) - 1]``, asymmetric ones unsigned
``[0, 2**b - 1]`` (``rq.IntFormat(b, signed=symmetric)``).

:func:`scale`, :func:`offset`, :func:`quantize_grad` and :func:`dequantize_grad` use only
arithmetic operators, so they apply to NumPy arrays and to any array type with the same operators
(a torch adapter passes tensors and keeps autograd); :func:`encoding_range` takes NumPy arrays.

>>> import numpy as np, refquant as rq
>>> lo, hi = rq.aimet.encoding_range(np.float32(-1.0), np.float32(3.0), qmin=0, qmax=255)
>>> s = rq.aimet.scale(lo, hi, qmin=0, qmax=255)
>>> float(s), float(rq.aimet.offset(lo, hi, qmin=0, qmax=255))
(0.01568627543747425, -64.0)
"""

from __future__ import annotations

import numpy as np

from ._dtypes import finfo
from ._validation import float_array, integer_scalar

__all__ = ["encoding_range", "scale", "offset", "quantize_grad", "dequantize_grad"]


def _range(qmin, qmax) -> int:
    lo, hi = integer_scalar(qmin, "qmin"), integer_scalar(qmax, "qmax")
    if lo >= hi:
        raise ValueError(f"qmin must be < qmax; got qmin={lo}, qmax={hi}")
    return hi - lo


def encoding_range(x_min, x_max, *, qmin, qmax, symmetric=False):
    """``(min, max)`` of the encoding AIMET's min-max analyzer computes from observed extremes,
    every op rounded to the inputs' float dtype, the integers first rounded to it as well
    (``n = qmax - qmin``, ``tiny`` the dtype's smallest normal)::

        lo, hi = min(x_min, 0), max(x_max, 0)      (x_min = -0.0 stays -0.0, as NaN stays NaN)
        if (hi - lo) / n < tiny:  hi += floor(n / 2) * tiny;  lo -= ceil(n / 2) * tiny
        symmetric:  d = max(hi / floor(n / 2), -lo / ceil(n / 2));
                    lo, hi = -ceil(n / 2) * d, floor(n / 2) * d
        return max(lo, -finite_max), min(hi, finite_max)

    ``x_min`` and ``x_max`` are float arrays (or scalars) of one shape and dtype; NaN propagates.

    >>> import numpy as np, refquant as rq
    >>> rq.aimet.encoding_range(np.float32([-1.0]), np.float32([3.0]), qmin=-128, qmax=127,
    ...                         symmetric=True)
    (array([-3.023622], dtype=float32), array([3.], dtype=float32))
    """
    lo_in, hi_in = float_array(x_min, "x_min"), float_array(x_max, "x_max")
    if lo_in.dtype != hi_in.dtype:
        raise TypeError(f"x_min and x_max must have one dtype; got {lo_in.dtype} and {hi_in.dtype}")
    n = _range(qmin, qmax)
    info = finfo(lo_in.dtype)
    zero, tiny = lo_in.dtype.type(0), lo_in.dtype.type(info.tiny)
    with np.errstate(over="ignore", invalid="ignore"):
        lo, hi = np.where(lo_in > zero, zero, lo_in), np.where(hi_in < zero, zero, hi_in)
        adjust = tiny * ((hi - lo) / lo_in.dtype.type(n) < tiny)
        pos, neg = lo_in.dtype.type(n // 2), lo_in.dtype.type(n - n // 2)
        hi = hi + pos * adjust
        lo = lo - neg * adjust
        if symmetric:
            delta = np.maximum(hi / pos, -lo / neg)
            lo, hi = -neg * delta, pos * delta
        big = lo_in.dtype.type(info.max)
        return np.maximum(lo, -big), np.minimum(hi, big)


def scale(min, max, *, qmin, qmax):
    """``(max - min) / (qmax - qmin)``, each op in the dtype of ``min`` and ``max``.

    >>> import numpy as np, refquant as rq
    >>> rq.aimet.scale(np.float32(-2.0), np.float32(5.5), qmin=0, qmax=15)
    np.float32(0.5)
    """
    return (max - min) / _range(qmin, qmax)


def offset(min, max, *, qmin, qmax, rint=np.rint):
    """The asymmetric offset ``rint(min / scale(min, max)) - qmin`` (the zero point is its
    negation; a symmetric encoding's offset is 0). ``rint`` rounds half to even; an autograd
    adapter passes its straight-through rounding, ``r + (round(r) - r)`` with the bracket held
    constant, whose value is the same except that a zero is +0.0.

    >>> import numpy as np, refquant as rq
    >>> rq.aimet.offset(np.float32(-2.0), np.float32(5.5), qmin=0, qmax=15)
    np.float32(-4.0)
    """
    if isinstance(min, (np.ndarray, np.generic)):
        with np.errstate(divide="ignore", invalid="ignore"):  # an empty range: +-inf or NaN, quietly
            return _offset(min, max, qmin, qmax, rint)
    return _offset(min, max, qmin, qmax, rint)


def _offset(min, max, qmin, qmax, rint):
    return rint(min / scale(min, max, qmin=qmin, qmax=qmax)) - qmin


def quantize_grad(x, scale, grad_output, mask):
    """AIMET's gradients of ``code = clamp(round(x / scale) - offset, qmin, qmax)``, element by
    element (sum over the elements sharing a qparam for its gradient), with ``mask`` the
    straight-through mask (1 where the unclamped code lies in ``[qmin, qmax]``, else 0;
    :func:`refquant.ste.mask`) in the gradient's dtype::

        g = grad_output * mask
        (grad_x, grad_scale, grad_offset) = (g / scale, -g * x / scale / scale, -g)

    >>> import numpy as np, refquant as rq
    >>> gx, gs, go = rq.aimet.quantize_grad(np.float32([1.0, 9.0]), np.float32(0.5),
    ...                                     np.float32([1.0, 1.0]), np.float32([1.0, 0.0]))
    >>> gx.tolist(), gs.tolist(), go.tolist()
    ([2.0, 0.0], [-4.0, -0.0], [-1.0, -0.0])
    """
    g = grad_output * mask
    return g / scale, -g * x / scale / scale, -g


def dequantize_grad(codes, scale, offset, grad_output):
    """AIMET's gradients of ``value = (codes + offset) * scale``, element by element::

        (grad_codes, grad_scale, grad_offset) = (grad * scale, grad * (codes + offset), grad * scale)

    >>> import numpy as np, refquant as rq
    >>> gq, gs, go = rq.aimet.dequantize_grad(np.float32([3.0]), np.float32(0.5), np.float32(-4.0),
    ...                                       np.float32([2.0]))
    >>> gq.tolist(), gs.tolist(), go.tolist()
    ([1.0], [-2.0], [1.0])
    """
    g = grad_output * scale
    return g, grad_output * (codes + offset), g
