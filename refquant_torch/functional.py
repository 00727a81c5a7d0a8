"""Differentiable fake quantizers as torch custom ops (``torch.ops.refquant.*``).

Each op runs the core on the input's bits (see :mod:`refquant_torch._bridge`) and has a fake
(meta) kernel and an autograd formula, so that ``torch.compile(fullgraph=True)`` and
``torch.export`` see one opaque node instead of breaking the graph. Backward formulas are custom
ops as well, and their math is the core's:

* ``fake_quantize``: ``grad_x = grad * m(x)`` with the straight-through mask ``m`` of
  :mod:`refquant_torch._ste`; when ``scale`` or ``zero_point`` requires grad, all three gradients
  come from ``rq.lsq.fake_quantize_grad`` (LSQ, arXiv:1902.08153, or torch's learnable variant).
* ``pact``: ``rq.pact.fake_quantize_grad`` (arXiv:1805.06085).
* ``apot_fake_quantize``: ``rq.apot.fake_quantize_grad`` (arXiv:1909.13144).

Gradients of a qparam come back in that qparam's dtype and shape (the core's float64 or float32
value, rounded once by ``Tensor.to``).
"""

from __future__ import annotations

import numpy as np
import torch

import refquant as rq
from refquant._validation import check_axis, resolve_range

from ._bridge import check_float_tensor, from_numpy, scalar_or_array, to_numpy
from ._ste import ste_bounds

__all__ = ["fake_quantize", "pact", "apot_fake_quantize"]

_CUSTOM_CONVENTIONS: dict[str, object] = {}


def _convention_key(convention) -> str:
    """A string that names ``convention`` inside an op schema (an unregistered Convention object
    is kept in a private table under a generated key)."""
    if isinstance(convention, str):
        rq.conventions.get(convention)  # a ValueError lists the known names
        return convention
    if isinstance(convention, rq.Convention):
        registered = convention.name in rq.conventions.names()
        if registered and rq.conventions.get(convention.name) == convention:
            return convention.name
        key = f"<custom {convention.name} {id(convention)}>"
        _CUSTOM_CONVENTIONS[key] = convention
        return key
    raise TypeError(f"convention must be a name or an rq.Convention; got {convention!r}")


def _convention(key: str):
    return _CUSTOM_CONVENTIONS.get(key, key)


def _qparam(value, name: str, like: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(tensor, weak): a Python number becomes a 0-d float64/int64 tensor marked weak."""
    if isinstance(value, torch.Tensor):
        return value, False
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number or a tensor; got {value!r}")
    if isinstance(value, (int, np.integer)):
        return torch.tensor(int(value), dtype=torch.int64, device=like.device), True
    if isinstance(value, (float, np.floating)):
        return torch.tensor(float(value), dtype=torch.float64, device=like.device), True
    arr = np.asarray(value)
    if arr.dtype.kind in "iuf":
        return torch.as_tensor(arr, device=like.device), False
    raise TypeError(f"{name} must be a number, an array or a tensor; got {value!r}")


def _core_args(x, scale, zero_point, scale_weak, zp_weak, axis, block_size):
    kwargs = {"axis": axis, "block_size": None if block_size is None else tuple(block_size)}
    s = scalar_or_array(scale, scale_weak)
    return to_numpy(x), s, scalar_or_array(zero_point, zp_weak), kwargs


# ----------------------------------------------------------------------------- affine
def _fake_quantize_impl(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
    axis: int | None, block_size: list[int] | None, rounding: str | None, convention: str,
    seed: int | None, scale_weak: bool, zp_weak: bool, grad_factor: float, lsq_convention: str,
) -> torch.Tensor:
    xa, s, z, kw = _core_args(x, scale, zero_point, scale_weak, zp_weak, axis, block_size)
    out = rq.fake_quantize(xa, s, z, qmin=qmin, qmax=qmax, rounding=rounding,
                           convention=_convention(convention), rng=seed, **kw)
    return from_numpy(out, x.device)


_fake_quantize_op = torch.library.custom_op("refquant::fake_quantize", mutates_args=())(
    _fake_quantize_impl
)


@_fake_quantize_op.register_fake
def _(x, scale, zero_point, *static):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _broadcast_bounds(bound: torch.Tensor, shape, axis, block_size) -> torch.Tensor:
    """Per-group bounds spread over x's shape (per-channel along ``axis`` or per-block)."""
    if axis is not None:
        view = [1] * len(shape)
        view[axis % len(shape)] = -1
        return bound.reshape(view)
    if block_size is not None:
        groups = [dim // b for dim, b in zip(shape, block_size, strict=True)]
        out = bound.reshape(groups)
        for dim, b in enumerate(block_size):
            out = out.repeat_interleave(b, dim=dim)
        return out
    return bound


def ste_mask(x: torch.Tensor, scale, zero_point, qmin, qmax, axis=None, block_size=None,
             rounding=None, convention="exact") -> torch.Tensor:
    """The straight-through mask of ``fake_quantize`` (bool, x's shape); see :mod:`._ste`.
    ``scale``/``zero_point`` are what the core receives (numbers or arrays)."""
    s, z = np.asarray(scale), np.asarray(zero_point)
    per_group = axis is not None or block_size is not None
    if x.numel() <= _DIRECT_MASK_MAX:
        return _direct_mask(x, scale, zero_point, qmin, qmax, axis, block_size, rounding, convention)
    lo, hi = ste_bounds(
        to_numpy(x).dtype,
        scale if not per_group else s.reshape(-1),
        zero_point if not per_group or z.size == 1 else z.reshape(-1),
        qmin, qmax, groups=s.size if per_group else None, rounding=rounding,
        convention=_convention(convention),
    )
    lo_t = _broadcast_bounds(from_numpy(np.asarray(lo), x.device), x.shape, axis, block_size)
    hi_t = _broadcast_bounds(from_numpy(np.asarray(hi), x.device), x.shape, axis, block_size)
    return (x >= lo_t) & (x <= hi_t)


_DIRECT_MASK_MAX = 1 << 14  # below this one core call on x beats the bound search


def _direct_mask(x, scale, zero_point, qmin, qmax, axis, block_size, rounding, convention):
    """The mask from one ``rq.quantize`` of x itself with the range widened by one code (NaN: 0),
    under the convention resolved for the original range."""
    xa = to_numpy(x)
    nan = np.isnan(xa)
    conv = rq.conventions.get(_convention(convention)).resolve(
        per_channel=axis is not None or block_size is not None,
        float_zero_point=np.asarray(zero_point).dtype.kind == "f",
        wide=(qmax - qmin) >= 256,
    )
    q = rq.quantize(np.where(nan, 0, xa).astype(xa.dtype), scale, zero_point, qmin=qmin - 1,
                    qmax=qmax + 1, axis=axis, block_size=block_size,
                    rounding="half_even" if rounding == "stochastic" else rounding, convention=conv)
    inside = (q >= qmin) & (q <= qmax) & ~nan
    return from_numpy(inside, x.device)


def _fake_quantize_backward_impl(
    grad: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
    qmin: int, qmax: int, axis: int | None, block_size: list[int] | None, rounding: str | None,
    convention: str, scale_weak: bool, zp_weak: bool, qparam_grads: bool, grad_factor: float,
    lsq_convention: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xa, s, z, kw = _core_args(x, scale, zero_point, scale_weak, zp_weak, axis, block_size)
    if not qparam_grads:
        mask = ste_mask(x, s, z, qmin, qmax, rounding=rounding, convention=convention, **kw)
        grad_x = grad * mask.to(grad.dtype)
        return grad_x, torch.zeros_like(scale), torch.zeros_like(zero_point)
    if block_size is not None:
        raise NotImplementedError("learnable scale/zero_point gradients with block_size: "
                                  "rq.lsq.fake_quantize_grad takes per-tensor or axis qparams")
    gx, gs, gz = rq.lsq.fake_quantize_grad(
        xa, s, z, to_numpy(grad), qmin=qmin, qmax=qmax, axis=axis, grad_factor=grad_factor,
        convention=lsq_convention,
    )
    return (
        from_numpy(np.asarray(gx), x.device).to(grad.dtype).reshape(x.shape),
        _as_like(gs, scale),
        _as_like(gz, zero_point),
    )


def _as_like(value, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(value, dtype=np.float64)).to(like.device)
    if not like.dtype.is_floating_point:
        return torch.zeros_like(like)
    return t.to(like.dtype).reshape(like.shape)


_fake_quantize_backward_op = torch.library.custom_op(
    "refquant::fake_quantize_backward", mutates_args=()
)(_fake_quantize_backward_impl)


@_fake_quantize_backward_op.register_fake
def _(grad, x, scale, zero_point, *args):
    return torch.empty_like(x), torch.empty_like(scale), torch.empty_like(zero_point)


_FQ_STATIC = ("qmin", "qmax", "axis", "block_size", "rounding", "convention", "seed",
              "scale_weak", "zp_weak", "grad_factor", "lsq_convention")


def _fq_setup(ctx, inputs, output):
    x, scale, zero_point, *static = inputs
    ctx.save_for_backward(x, scale, zero_point)
    ctx.static = dict(zip(_FQ_STATIC, static, strict=True))


def _fq_backward(ctx, grad, backward=None):
    backward = backward or torch.ops.refquant.fake_quantize_backward
    x, scale, zero_point = ctx.saved_tensors
    st = ctx.static
    need = ctx.needs_input_grad
    qparam_grads = bool(need[1] or need[2])
    gx, gs, gz = backward(
        grad, x, scale, zero_point, st["qmin"], st["qmax"], st["axis"], st["block_size"],
        st["rounding"], st["convention"], st["scale_weak"], st["zp_weak"], qparam_grads,
        st["grad_factor"], st["lsq_convention"],
    )
    return (gx if need[0] else None, gs if need[1] else None, gz if need[2] else None,
            *([None] * len(_FQ_STATIC)))


_fake_quantize_op.register_autograd(_fq_backward, setup_context=_fq_setup)


class _EagerFakeQuantize(torch.autograd.Function):
    """The same forward and backward as the custom op, without its dispatch cost (~80 us a call):
    used in eager mode on plain tensors; compile, export and tensor subclasses take the op."""

    @staticmethod
    def forward(ctx, *inputs):
        out = _fake_quantize_impl(*inputs)
        _fq_setup(ctx, inputs, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        return _fq_backward(ctx, grad, _fake_quantize_backward_impl)


def _eager(*tensors) -> bool:
    return not torch.compiler.is_compiling() and all(type(t) is torch.Tensor for t in tensors)


def fake_quantize(x, scale, zero_point=0, *, qmin=None, qmax=None, fmt=None, axis=None,
                  block_size=None, rounding=None, convention="exact", rng=None,
                  grad_factor=1.0, lsq_convention="lsq"):
    """Differentiable ``rq.fake_quantize``: ``(q - z) * s`` with
    ``q = clamp(round(x / s) + z, qmin, qmax)`` under ``convention``, in x's dtype and device.

    The forward is ``rq.fake_quantize`` on x's bits (same arguments; ``rng`` is an int seed or a
    NumPy Generator, from which one seed is drawn). Backward: ``grad * m(x)``, m the
    straight-through mask (1 where the unclamped code lies in ``[qmin, qmax]``; torch's rule).
    When ``scale`` or ``zero_point`` is a tensor that requires grad, the three gradients are
    ``rq.lsq.fake_quantize_grad(..., grad_factor=grad_factor, convention=lsq_convention)``.

    >>> import torch, refquant_torch as rqt
    >>> x = torch.tensor([0.125, 0.375, 9.0], requires_grad=True)
    >>> y = rqt.fake_quantize(x, 0.25, 0, qmin=-8, qmax=7)
    >>> y.tolist()
    [0.0, 0.5, 1.75]
    >>> y.sum().backward(); x.grad.tolist()
    [1.0, 1.0, 0.0]
    """
    x = check_float_tensor(x)
    qmin, qmax = resolve_range(qmin, qmax, fmt)
    scale_t, scale_weak = _qparam(scale, "scale", x)
    zp_t, zp_weak = _qparam(zero_point, "zero_point", x)
    if axis is not None:
        axis = check_axis(axis, x.dim())
    block = None if block_size is None else [int(b) for b in block_size]
    seed = _seed(rng)
    key = _convention_key(convention)
    args = (x, scale_t, zp_t, qmin, qmax, axis, block, rounding, key, seed, scale_weak, zp_weak,
            float(grad_factor), str(lsq_convention))
    if _eager(x, scale_t, zp_t):
        return _EagerFakeQuantize.apply(*args)
    return torch.ops.refquant.fake_quantize(*args)


def _seed(rng) -> int | None:
    if rng is None:
        return None
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2**62))
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, (int, np.integer)):
        raise TypeError(f"rng must be a numpy Generator or an int seed; got {rng!r}")
    return int(rng)


# ----------------------------------------------------------------------------- PACT and APoT
def _alpha_tensor(alpha, x: torch.Tensor) -> torch.Tensor:
    if isinstance(alpha, torch.Tensor):
        if alpha.numel() != 1 or not alpha.dtype.is_floating_point:
            raise ValueError(f"alpha must be a one-element float tensor; got shape "
                             f"{tuple(alpha.shape)} dtype {alpha.dtype}")
        return alpha
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.number)):
        raise TypeError(f"alpha must be a number or a tensor; got {alpha!r}")
    return torch.tensor(float(alpha), dtype=torch.float64, device=x.device)


def _alpha_value(alpha: torch.Tensor) -> float:
    return float(to_numpy(alpha).reshape(()).astype(np.float64))


@torch.library.custom_op("refquant::pact", mutates_args=())
def _pact_op(x: torch.Tensor, alpha: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    out = rq.pact.fake_quantize(to_numpy(x), _alpha_value(alpha), bits=bits, signed=signed)
    return from_numpy(out, x.device)


@torch.library.custom_op("refquant::pact_backward", mutates_args=())
def _pact_backward_op(grad: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, bits: int,
                      signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    gx, ga = rq.pact.fake_quantize_grad(to_numpy(x), _alpha_value(alpha), to_numpy(grad),
                                        bits=bits, signed=signed)
    return from_numpy(np.asarray(gx), x.device).to(grad.dtype), _as_like(ga, alpha)


@torch.library.custom_op("refquant::apot_fake_quantize", mutates_args=())
def _apot_op(x: torch.Tensor, alpha: torch.Tensor, bits: int, k: int, signed: bool,
             convention: str) -> torch.Tensor:
    out = rq.apot.fake_quantize(to_numpy(x), _alpha_value(alpha), bits=bits, k=k, signed=signed,
                                convention=convention)
    return from_numpy(out, x.device)


@torch.library.custom_op("refquant::apot_fake_quantize_backward", mutates_args=())
def _apot_backward_op(grad: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, bits: int,
                      k: int, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    gx, ga = rq.apot.fake_quantize_grad(to_numpy(x), _alpha_value(alpha), to_numpy(grad),
                                        bits=bits, k=k, signed=signed)
    return from_numpy(np.asarray(gx), x.device).to(grad.dtype), _as_like(ga, alpha)


def _like_x(x, *args):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _like_x_alpha(grad, x, alpha, *args):
    return torch.empty_like(x), torch.empty_like(alpha)


for _op in (_pact_op, _apot_op):
    _op.register_fake(_like_x)
for _op in (_pact_backward_op, _apot_backward_op):
    _op.register_fake(_like_x_alpha)


def _alpha_setup(ctx, inputs, output):
    x, alpha, *static = inputs
    ctx.save_for_backward(x, alpha)
    ctx.static = static


def _pact_backward(ctx, grad):
    x, alpha = ctx.saved_tensors
    bits, signed = ctx.static
    gx, ga = torch.ops.refquant.pact_backward(grad, x, alpha, bits, signed)
    need = ctx.needs_input_grad
    return gx if need[0] else None, ga if need[1] else None, None, None


def _apot_backward(ctx, grad):
    x, alpha = ctx.saved_tensors
    bits, k, signed, _ = ctx.static
    gx, ga = torch.ops.refquant.apot_fake_quantize_backward(grad, x, alpha, bits, k, signed)
    need = ctx.needs_input_grad
    return gx if need[0] else None, ga if need[1] else None, None, None, None, None


_pact_op.register_autograd(_pact_backward, setup_context=_alpha_setup)
_apot_op.register_autograd(_apot_backward, setup_context=_alpha_setup)


def pact(x, alpha, *, bits, signed=False):
    """Differentiable PACT (arXiv:1805.06085): ``rq.pact.fake_quantize`` on x's bits, in x's
    dtype; backward ``rq.pact.fake_quantize_grad`` (``grad_x`` is the straight-through grad inside
    the clipping range, ``grad_alpha`` the sum of the clipped part). ``alpha`` is a number or a
    one-element tensor (learnable when it requires grad); its gradient has its dtype.
    """
    x = check_float_tensor(x)
    return torch.ops.refquant.pact(x, _alpha_tensor(alpha, x), int(bits), bool(signed))


def apot_fake_quantize(x, alpha, *, bits, k, signed=False, convention="paper"):
    """Differentiable APoT (arXiv:1909.13144): ``rq.apot.fake_quantize`` on x's bits, in x's
    dtype; backward ``rq.apot.fake_quantize_grad`` (straight-through ``grad_x`` inside
    ``[-alpha, alpha]``, and the paper's ``grad_alpha``). ``alpha`` as in :func:`pact`.
    """
    x = check_float_tensor(x)
    return torch.ops.refquant.apot_fake_quantize(x, _alpha_tensor(alpha, x), int(bits), int(k),
                                                 bool(signed), str(convention))
