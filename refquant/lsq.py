"""LSQ: learned step size quantization (Esser et al., ICLR 2020, arXiv:1902.08153), and torch's
learnable fake quant (``torch._fake_quantize_learnable_per_tensor_affine`` / ``_per_channel_affine``).

Forward (both): ``xhat = (clamp(round(x / s) + z, qmin, qmax) - z) * s`` (see :func:`fake_quantize`).

``convention="lsq"`` (the paper, with a zero point; ``t = x / s`` the real quotient)::

    t <= qmin - z  : dx = 0, d s = qmin - z, d z = -s
    t >= qmax - z  : dx = 0, d s = qmax - z, d z = -s
    otherwise      : dx = 1, d s = round_half_even(t) - fl64(x / s), d z = 0

The clip test is exact and decided before rounding; each term is ``grad_output * d * grad_factor``
in float64.

``convention="torch.learnable"`` is torch 2.13's CPU backward, per element, bit for bit, all
float32: ``inv = 1 / s``, ``xq = rint(fma(x, inv, z))`` (or ``rint(f32(x * inv) + z)`` with
``fma=False``: torch's DEFAULT kernels), clip decided *after* rounding (``xq`` outside
``[qmin, qmax]``); outside ``d s = (g * (qmin|qmax - z)) * gf``, ``d z = ((g * -1) * s) * gf``;
inside ``d s = ((g * fma(xq - z, s, -x)) * inv) * gf``. Its zero point differs from the forward's:
per-tensor ``trunc(clamp(f32(z + 0.5), qmin, qmax))``, per-channel
``clamp(round_half_even(z), qmin, qmax)``. ``fma`` defaults to
:func:`refquant._platform.torch_kernels_use_fma`.

Reductions: ``grad_scale`` / ``grad_zero_point`` sum the per-element terms over every element that
shares a scale (all but ``axis``) in float64 (NumPy's pairwise order), rounded once to the output
dtype; torch's own float32 summation order is not reproduced. ``reduce=False`` returns the
per-element terms (x's shape) instead.
"""

from __future__ import annotations

import numpy as np

from . import _validation
from ._platform import torch_kernels_use_fma
from ._registry import MethodConvention, Registry

__all__ = ["conventions", "fake_quantize", "fake_quantize_grad", "grad_scale"]

conventions = Registry("lsq", [
    MethodConvention(
        "lsq", "the paper's gradients with a zero point; the clip test on the real x / s, decided "
        "before rounding; terms in float64", "tests/core/test_lsq.py (Fraction oracle)"),
    MethodConvention(
        "torch.learnable", "torch 2.13's CPU learnable fake-quant backward, per element in float32 "
        "(module docstring)", "tests/cross/test_lsq_torch.py (torch's backward, bit for bit)",
        backend="torch._fake_quantize_learnable_per_tensor_affine / _per_channel_affine"),
])


def _groups(values, name, shape, axis):
    a = np.asarray(values)
    if a.dtype.kind not in "fiu" or a.dtype == np.bool_:
        raise TypeError(f"{name} must be real numbers; got dtype {a.dtype}")
    return _validation.channel_groups(a, name, shape, axis)


def _torch_zero_points(z, qmin, qmax, per_channel):
    z32 = z.astype(np.float32)
    if per_channel:
        return np.clip(np.rint(z32), qmin, qmax).astype(np.float32)
    return np.trunc(np.clip(z32 + np.float32(0.5), qmin, qmax)).astype(np.float32)


def grad_scale(numel, qmax) -> float:
    """LSQ's gradient scale ``g = 1 / sqrt(numel * qmax)`` (the paper's ``1 / sqrt(N * Q_P)``), in
    float64 as torch's ``_LearnableFakeQuantize`` computes it; pass it as ``grad_factor``.

    >>> import refquant as rq
    >>> rq.lsq.grad_scale(64, 127)
    0.011091956367701423
    """
    n = _validation.integer_scalar(numel, "numel")
    q = _validation.integer_scalar(qmax, "qmax")
    if n <= 0 or q <= 0:
        raise ValueError(f"numel and qmax must be positive; got numel={n}, qmax={q}")
    return 1.0 / (n * q) ** 0.5


def fake_quantize(x, scale, zero_point, *, qmin=None, qmax=None, fmt=None, axis=None):
    """LSQ forward ``(clamp(round(x / s) + z, qmin, qmax) - z) * s``: the affine ``exact``
    convention (:func:`refquant.fake_quantize`), which torch's learnable forward matches up to its
    float32 arithmetic (use ``convention="torch.fake_quantize"`` there for torch's bits).

    >>> import numpy as np, refquant as rq
    >>> rq.lsq.fake_quantize(np.float32([0.26, 5.0]), 0.1, 0, qmin=-8, qmax=7).tolist()
    [0.30000001192092896, 0.699999988079071]
    """
    from . import affine

    return affine.fake_quantize(x, scale, zero_point, qmin=qmin, qmax=qmax, fmt=fmt, axis=axis)


def fake_quantize_grad(x, scale, zero_point, grad_output, *, qmin=None, qmax=None, fmt=None,
                       axis=None, grad_factor=1.0, convention="lsq", fma=None, reduce=True):
    """Gradients ``(grad_x, grad_scale, grad_zero_point)`` of LSQ fake quantization.

    The range is ``qmin``/``qmax`` or ``fmt``, as everywhere. Formulas per convention in the
    module docstring. ``grad_x`` has x's shape and dtype;
    ``grad_scale`` / ``grad_zero_point`` have the shape of ``scale`` / ``zero_point`` (or x's
    shape with ``reduce=False``) and x's dtype. ``torch.learnable`` computes in float32 (float16
    and bfloat16 inputs widen exactly; float64 inputs are rounded to float32 first, as torch's
    kernel requires float32).

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([-1.0, -0.85, 0.05, 0.35, 0.74, 2.0])
    >>> g = np.ones_like(x)
    >>> rq.lsq.fake_quantize_grad(x, 0.1, 0.0, g, qmin=-8, qmax=7, reduce=False)[1].round(4).tolist()
    [-8.0, -8.0, 0.5, -0.5, 7.0, 7.0]
    >>> rq.lsq.fake_quantize_grad(x, 0.1, 0.0, g, qmin=-8, qmax=7,  # doctest: +NEEDS_TORCH
    ...                           reduce=False, convention="torch.learnable")[1].round(4).tolist()
    [-8.0, 0.5, -0.5, 0.5, -0.4, 7.0]
    """
    conventions.check(convention)
    x = _validation.float_array(x)
    g = _validation.grad_like(grad_output, x)
    lo, hi = _validation.resolve_range(qmin, qmax, fmt)
    gf = float(grad_factor)
    if not np.isfinite(gf):
        raise ValueError(f"grad_factor must be finite; got {grad_factor!r}")
    s, gidx = _groups(scale, "scale", x.shape, axis)
    z, _ = _groups(zero_point, "zero_point", x.shape, axis)
    _validation.positive_finite(s, "scale")
    if not np.isfinite(z.astype(np.float64)).all():
        raise ValueError(f"zero_point must be finite; got {zero_point!r}")
    n = x.size
    if convention == "lsq":
        xk, gk, *outs = _validation.grad_buffers(x, g, 3)
        if n:
            from ._kernels._lsq import lsq_grad

            lsq_grad(xk, gk, s.astype(np.float64),
                     z.astype(np.float64), gidx, float(lo), float(hi), gf, *outs)
    else:
        if not lo <= 0 <= hi:
            raise ValueError(f"torch.learnable needs qmin <= 0 <= qmax; got [{lo}, {hi}]")
        fma = torch_kernels_use_fma() if fma is None else bool(fma)
        xk = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
        gk = np.ascontiguousarray(g, dtype=np.float32).reshape(-1)
        z32 = _torch_zero_points(z, lo, hi, axis is not None)
        outs = [np.empty(n, np.float32) for _ in range(3)]
        if n:
            from ._kernels._lsq import torch_learnable_grad

            torch_learnable_grad(xk, gk, s.astype(np.float32), z32, gidx, float(lo), float(hi),
                                 np.float32(gf), fma, *outs)
    dx, ds, dz = (o.reshape(x.shape) for o in outs)
    grad_x = dx.astype(x.dtype)
    if not reduce:
        return grad_x, ds.astype(x.dtype), dz.astype(x.dtype)
    return (grad_x, _reduce(ds, x, axis, np.shape(scale)),
            _reduce(dz, x, axis, np.shape(zero_point)))


def _reduce(terms, x, axis, shape):
    return _validation.group_sums(terms, x, axis).reshape(shape)
