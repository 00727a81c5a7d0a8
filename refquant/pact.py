"""PACT: parameterized clipping activation (Choi et al. 2018, arXiv:1805.06085).

Unsigned (the paper, eq. 1-2), ``N = 2**bits - 1``::

    y    = clip(x, 0, alpha)
    xhat = round(y * N / alpha) * alpha / N

Signed symmetric variant: ``clip(x, -alpha, alpha)`` with ``N = 2**(bits-1) - 1`` (``2N + 1``
levels). ``round`` is half to even unless ``rounding`` names another mode
(:data:`refquant.ROUNDING_MODES`). The quotient ``y * N / alpha`` is rounded as a real number,
with no intermediate rounding, for every input dtype (float64 included; a clipped input takes the
end code directly). The output is the real ``q * alpha / N`` rounded once to x's dtype (+0.0 for
a zero result); NaN stays NaN.

:func:`quantize` returns the integer level ``q = round(y * N / alpha)`` (in ``[0, N]``, or
``[-N, N]`` signed) and :func:`dequantize` the real ``q * alpha / N`` rounded once, so that
``fake_quantize == dequantize(quantize(x))``.

``alpha`` is a positive scalar, or 1-D per-channel along ``axis``. Gradients (paper eq. 3, STE,
with the inclusive bounds of the reference code)::

    d xhat / d x     = 1 if lo <= x <= alpha else 0        (lo = -alpha signed, 0 unsigned)
    d xhat / d alpha = 1 if x >= alpha; -1 if signed and x <= -alpha; else 0
"""

from __future__ import annotations

import numpy as np

from ._dtypes import float_code
from ._registry import MethodConvention, Registry
from ._validation import (
    channel_groups,
    flat_float,
    float_array,
    float_dtype,
    grad_buffers,
    grad_like,
    group_sums,
    integer_scalar,
    positive_finite,
    uniforms,
)
from .rounding import rounding_code

__all__ = ["conventions", "quantize", "dequantize", "fake_quantize", "fake_quantize_grad"]

conventions = Registry("pact", [
    MethodConvention(
        "paper", "q = round(clip(x) * N / alpha) with the real quotient; q * alpha / N rounded once",
        "tests/core/test_pact.py (Fraction oracle, tie-heavy, every rounding mode)"),
])


def _levels_n(bits, signed: bool) -> int:
    bits = integer_scalar(bits, "bits")
    low = 2 if signed else 1
    if not low <= bits <= 16:
        raise ValueError(f"bits must be in [{low}, 16] for {'signed' if signed else 'unsigned'} "
                         f"PACT; got {bits}")
    return 2 ** (bits - 1) - 1 if signed else 2**bits - 1


_NO_GROUPS = np.empty(0, np.intp)
_NO_GROUPS.flags.writeable = False


def _alpha_groups(alpha, shape, axis):
    """(float64 alpha per group, group index per element or empty)."""
    if axis is None and type(alpha) is float and 0.0 < alpha < np.inf:  # the common case, quickly
        return np.array([alpha]), _NO_GROUPS
    a, gidx = channel_groups(positive_finite(alpha, "alpha"), "alpha", shape, axis)
    return np.ascontiguousarray(a), gidx


def _prepare(x, alpha, bits, signed, axis, rounding, convention, rng):
    """The checked arguments of quantize / fake_quantize: (x, its flat kernel input, N, rounding
    code, alpha per group, group index, stochastic draws)."""
    conventions.check(convention)
    x = float_array(x)
    n = _levels_n(bits, bool(signed))
    mode = rounding_code(rounding)
    a, gidx = _alpha_groups(alpha, x.shape, axis)
    xk = flat_float(x)
    return x, xk, n, mode, a, gidx, uniforms(mode, rng, xk.size)


def quantize(x, alpha, *, bits, signed=False, axis=None, rounding="half_even", convention="paper",
             rng=None):
    """PACT's integer levels ``q = round(clip(x) * N / alpha)`` (module docstring) as int32.

    NaN has no level and is a ValueError. ``rng`` (NumPy Generator or int seed) feeds
    ``rounding="stochastic"``.

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([-3, -1, 0, 0.3, 1, 2.2, 3])
    >>> rq.pact.quantize(x, 2.2, bits=4).tolist()
    [0, 0, 0, 2, 7, 15, 15]
    >>> rq.pact.quantize(x, 2.2, bits=4, signed=True).tolist()
    [-7, -3, 0, 1, 3, 7, 7]
    """
    x, xk, n, mode, a, gidx, u = _prepare(x, alpha, bits, signed, axis, rounding, convention, rng)
    if np.isnan(xk).any():
        raise ValueError("x holds NaN, which has no PACT level")
    out = np.empty(xk.size, np.int32)
    if xk.size:
        from ._kernels._pact import pact_codes

        pact_codes(xk, a, gidx, float(n), bool(signed), mode, u, out)
    return out.reshape(x.shape)


def dequantize(q, alpha, *, bits, signed=False, axis=None, convention="paper", dtype=np.float32):
    """The real value ``q * alpha / N`` of PACT levels ``q``, rounded once to ``dtype``.

    >>> import numpy as np, refquant as rq
    >>> rq.pact.dequantize(np.int32([0, 2, 15]), 2.2, bits=4).round(5).tolist()
    [0.0, 0.29333, 2.2]
    """
    conventions.check(convention)
    q = np.asarray(q)
    if q.dtype.kind not in "iu":
        raise TypeError(f"q must hold integer levels; got dtype {q.dtype}")
    n = _levels_n(bits, bool(signed))
    lo = -n if signed else 0
    if q.size and (q.min() < lo or q.max() > n):
        raise ValueError(f"q must lie in [{lo}, {n}] for {bits}-bit PACT; got values in "
                         f"[{int(q.min())}, {int(q.max())}]")
    out_dtype = float_dtype(dtype)
    a, gidx = _alpha_groups(alpha, q.shape, axis)
    kdt = np.float64 if out_dtype == np.float64 else np.float32
    out = np.empty(q.size, kdt)
    if q.size:
        from ._kernels._pact import pact_levels

        pact_levels(np.ascontiguousarray(q, np.int64).reshape(-1), a, gidx, float(n),
                    float_code(out_dtype), out)
    out = out.reshape(q.shape)
    return out if out.dtype == out_dtype else out.astype(out_dtype)


def fake_quantize(x, alpha, *, bits, signed=False, axis=None, rounding="half_even",
                  convention="paper", rng=None):
    """PACT fake quantization (module docstring), in x's dtype: ``dequantize(quantize(x))`` with
    NaN kept.

    ``rng`` (NumPy Generator or int seed) feeds ``rounding="stochastic"``.

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([-3, -2.2, -1, -0.01, 0, 0.3, 1, 2.2, 3])
    >>> rq.pact.fake_quantize(x, 2.2, bits=4).round(5).tolist()
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.29333, 1.02667, 2.2, 2.2]
    >>> rq.pact.fake_quantize(x, 2.2, bits=4, signed=True).round(5).tolist()[:4]
    [-2.2, -2.2, -0.94286, 0.0]
    """
    x, xk, n, mode, a, gidx, u = _prepare(x, alpha, bits, signed, axis, rounding, convention, rng)
    kdt = np.float64 if x.dtype == np.float64 else np.float32
    out = np.empty(xk.size, kdt)
    if xk.size:
        from ._kernels._pact import pact_fake

        pact_fake(xk, a, gidx, float(n), bool(signed), mode, u, float_code(x.dtype), out)
    out = out.reshape(x.shape)
    return out if out.dtype == x.dtype else out.astype(x.dtype)


def fake_quantize_grad(x, alpha, grad_output, *, bits, signed=False, axis=None, convention="paper",
                       reduce=True):
    """PACT gradients ``(grad_x, grad_alpha)`` (module docstring), in x's dtype.

    ``grad_x = grad_output * dx`` exactly. ``grad_alpha`` sums ``grad_output * d/d alpha`` in
    float64 (NumPy's pairwise order) over every element sharing an alpha, rounded once to x's
    dtype: a 0-d array for scalar alpha, alpha's length with ``axis``. ``reduce=False`` returns
    the per-element terms instead (x's shape), for callers that reduce themselves.

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([-3, -2, -1, 0, 1, 2, 3])
    >>> gx, ga = rq.pact.fake_quantize_grad(x, 2.0, np.ones_like(x), bits=4, signed=True)
    >>> gx.tolist(), float(ga)
    ([0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0], 0.0)
    >>> rq.pact.fake_quantize_grad(x, 2.0, np.ones_like(x), bits=4, reduce=False)[1].tolist()
    [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    """
    conventions.check(convention)
    x = float_array(x)
    g = grad_like(grad_output, x)
    _levels_n(bits, bool(signed))
    a, gidx = _alpha_groups(alpha, x.shape, axis)
    xk, gk, gx, ga = grad_buffers(x, g)
    if xk.size:
        from ._kernels._pact import pact_grad

        pact_grad(xk, gk, a, gidx, bool(signed), gx, ga)
    grad_x = gx.reshape(x.shape).astype(x.dtype)
    if not reduce:
        return grad_x, ga.reshape(x.shape).astype(x.dtype)
    return grad_x, group_sums(ga, x, axis)
