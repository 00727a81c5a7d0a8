"""Differentiable fake quantizers as torch custom ops (``torch.ops.refquant.*``).

Each op runs the core on the input's bits (see :mod:`refquant_torch._bridge`) and has a fake
(meta) kernel and an autograd formula, so that ``torch.compile(fullgraph=True)`` and
``torch.export`` see one opaque node instead of breaking the graph. Backward formulas are custom
ops as well, and their math is the core's:

* ``fake_quantize``: ``grad_x = grad * m(x)`` with the straight-through mask ``m`` of
  :mod:`refquant.ste`; when ``scale`` or ``zero_point`` requires grad, all three gradients
  come from ``rq.lsq.fake_quantize_grad`` (LSQ, arXiv:1902.08153, or torch's learnable variant).
* ``pact``: ``rq.pact.fake_quantize_grad`` (arXiv:1805.06085).
* ``apot_fake_quantize``: ``rq.apot.fake_quantize_grad`` (arXiv:1909.13144).

Gradients of a qparam come back in that qparam's dtype and shape (the core's float64 or float32
value, rounded once by ``Tensor.to``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import torch

import refquant as rq
from refquant.affine import Spec, apply
from refquant.interop import check_axis, resolve_range
from refquant.ste import apply_with_mask, mask_grad, masked_grad
from refquant.ste import bounds as ste_bounds

from ._bridge import check_float_tensor, from_numpy, scalar_or_array, to_numpy
from ._conventions import convention_key
from ._conventions import convention_of as _convention

__all__ = ["fake_quantize", "pact", "apot_fake_quantize"]

# ----------------------------------------------------------------------------- affine
class _Spec(NamedTuple):
    """The static arguments of one fake_quantize call, as the core takes them."""

    qmin: int
    qmax: int
    axis: int | None
    block_size: tuple[int, ...] | None
    rounding: str | None
    convention: object  # a name or an rq.Convention
    seed: int | None
    grad_factor: float
    lsq_convention: str
    round_zero_point: bool = False
    core: object = None  # the core's validated rq.affine.Spec of the same arguments

    def kwargs(self) -> dict:
        return {"axis": self.axis, "block_size": self.block_size}

    def forward_zero_point(self, z):
        """The zero point the forward and the mask use: with ``round_zero_point``,
        ``clamp(round_half_even(z), qmin, qmax)`` as int64, else ``z`` itself."""
        if not self.round_zero_point:
            return z
        r = np.clip(np.rint(np.asarray(z, dtype=np.float64)), self.qmin, self.qmax).astype(np.int64)
        return int(r) if np.ndim(z) == 0 and not isinstance(z, np.ndarray) else r


def _forward(x: torch.Tensor, s, z, spec: _Spec) -> torch.Tensor:
    """``rq.fake_quantize`` on x's bits with core qparams ``s`` / ``z``, on x's device."""
    out = apply(spec.core, to_numpy(x), s, spec.forward_zero_point(z), fake=True,
                rng=spec.seed)
    return from_numpy(out, x.device)


def _forward_with_mask(x: torch.Tensor, s, z, spec: _Spec):
    """``(rq.fake_quantize, its straight-through mask)`` on x's bits, on x's device, from one core
    pass (``rq.ste.apply_with_mask``); the mask is None where the kernels cannot give it."""
    y, m = apply_with_mask(spec.core, to_numpy(x), s, spec.forward_zero_point(z), rng=spec.seed,
                           one_pass=True)
    return from_numpy(y, x.device), None if m is None else from_numpy(m, x.device)


def _mask_grad(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``grad * mask`` (torch's rule for a saved mask): by ``rq.ste.mask_grad`` (one pass) for a
    float32/float64 CPU grad of the mask's shape, else by torch."""
    if (grad.device.type == "cpu" and grad.dtype in (torch.float32, torch.float64)
            and grad.shape == mask.shape and mask.device.type == "cpu"):
        return from_numpy(mask_grad(to_numpy(grad), to_numpy(mask)))
    return grad * mask


def _straight_through(spec: _Spec, qparam_grads: bool) -> bool:
    """Whether x's gradient is ``grad * mask`` (no qparam learns; a learnable fake quant's
    x-gradient follows the LSQ rule even while its qparams do not learn, as torch's module)."""
    return not qparam_grads and (not spec.round_zero_point or spec.block_size is not None)


def _grads(grad: torch.Tensor, x: torch.Tensor, s, z, spec: _Spec, qparam_grads: bool):
    """(grad_x, grad_scale, grad_zero_point) from the core: the STE mask alone, or
    ``rq.lsq.fake_quantize_grad`` (ndarrays or numbers for the qparams; None without them).
    A learnable fake quant (``round_zero_point``) takes its x-gradient from the LSQ rule even
    while its qparams do not learn, as torch's module does."""
    if _straight_through(spec, qparam_grads):
        return _ste_grad(grad, x, s, spec.forward_zero_point(z), spec), None, None
    if spec.round_zero_point and spec.lsq_convention != "torch.learnable":
        z = spec.forward_zero_point(z)  # the LSQ terms of the rounded zero point (straight through)
    if spec.block_size is not None:
        raise NotImplementedError("learnable scale/zero_point gradients with block_size: "
                                  "rq.lsq.fake_quantize_grad takes per-tensor or axis qparams")
    gx, gs, gz = rq.lsq.fake_quantize_grad(
        to_numpy(x), s, z, to_numpy(grad), qmin=spec.qmin, qmax=spec.qmax, axis=spec.axis,
        grad_factor=spec.grad_factor, convention=spec.lsq_convention,
    )
    gx = from_numpy(np.asarray(gx), x.device).to(grad.dtype).reshape(x.shape)
    return (gx, gs, gz) if qparam_grads else (gx, None, None)


def _spec_of(qmin, qmax, axis, block_size, rounding, convention, seed, grad_factor,
             lsq_convention, round_zero_point) -> _Spec:
    block = None if block_size is None else tuple(block_size)
    conv = _convention(convention)
    core = Spec.of(qmin=qmin, qmax=qmax, axis=axis, block_size=block, rounding=rounding,
                   convention=conv)
    return _Spec(qmin, qmax, axis, block, rounding, conv, seed, grad_factor, lsq_convention,
                 round_zero_point, core)


def _fake_quantize_impl(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
    axis: int | None, block_size: list[int] | None, rounding: str | None, convention: str,
    seed: int | None, scale_weak: bool, zp_weak: bool, grad_factor: float, lsq_convention: str,
    round_zero_point: bool,
) -> torch.Tensor:
    spec = _spec_of(qmin, qmax, axis, block_size, rounding, convention, seed, grad_factor,
                    lsq_convention, round_zero_point)
    return _forward(x, scalar_or_array(scale, scale_weak), scalar_or_array(zero_point, zp_weak),
                    spec)


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
    """The straight-through mask of ``fake_quantize`` (bool, x's shape); see :mod:`refquant.ste`.
    ``scale``/``zero_point`` are what the core receives (numbers or arrays).

    Small tensors take one core call on x (:func:`_direct_mask`), unless per-tensor qparams
    repeat: their bounds ``[a, b]`` (:func:`refquant.ste.bounds`, a pure function of the dtype,
    qparams, range, rounding and convention) are memoized from the second call on, and the
    mask is ``a <= x <= b``. Large tensors always use the bounds."""
    per_group = axis is not None or block_size is not None
    small = x.numel() <= _DIRECT_MASK_MAX
    if not per_group:
        bounds = _per_tensor_bounds(to_numpy(x).dtype, scale, zero_point, qmin, qmax, rounding,
                                    convention, compute=not small)
        if bounds is not None:
            lo, hi = bounds
            if x.device.type != "cpu":
                lo, hi = lo.to(x.device), hi.to(x.device)
            return (x >= lo) & (x <= hi)
    if small:
        return _direct_mask(x, scale, zero_point, qmin, qmax, axis, block_size, rounding, convention)
    s, z = np.asarray(scale), np.asarray(zero_point)
    lo, hi = ste_bounds(
        to_numpy(x).dtype, s.reshape(-1), zero_point if z.size == 1 else z.reshape(-1),
        qmin, qmax, groups=s.size, rounding=rounding, convention=_convention(convention),
    )
    lo_t = _broadcast_bounds(from_numpy(np.asarray(lo), x.device), x.shape, axis, block_size)
    hi_t = _broadcast_bounds(from_numpy(np.asarray(hi), x.device), x.shape, axis, block_size)
    return (x >= lo_t) & (x <= hi_t)


def _ste_grad(grad: torch.Tensor, x: torch.Tensor, s, z, spec: _Spec) -> torch.Tensor:
    """``grad * ste_mask(x, ...)``. A float32/float64 CPU x computes it on the arrays: with
    per-tensor qparams whose bounds are memoized (or a large x) by ``rq.ste.masked_grad`` (one
    pass), otherwise by one core call on x for the mask and NumPy's product."""
    if not (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and grad.dtype == x.dtype and grad.shape == x.shape):
        mask = ste_mask(x, s, z, spec.qmin, spec.qmax, rounding=spec.rounding,
                        convention=spec.convention, **spec.kwargs())
        return grad * mask
    bounds = None
    if spec.axis is None and spec.block_size is None:  # small and new: no bounds yet
        bounds = _per_tensor_bounds(to_numpy(x).dtype, s, z, spec.qmin, spec.qmax, spec.rounding,
                                    spec.convention, compute=x.numel() > _DIRECT_MASK_MAX)
    if bounds is not None:
        lo, hi = bounds[0].numpy(), bounds[1].numpy()
        return from_numpy(np.asarray(masked_grad(to_numpy(grad), to_numpy(x), lo, hi)))
    # per-group qparams (they move every step): one core call on x for the mask
    mask = _direct_mask(x, s, z, spec.qmin, spec.qmax, spec.axis, spec.block_size, spec.rounding,
                        spec.convention, numpy=True)
    with np.errstate(invalid="ignore"):  # inf * 0 is NaN, as torch's grad * mask
        return from_numpy(np.asarray(to_numpy(grad) * mask))


_BOUNDS: OrderedDict = OrderedDict()  # key -> (lo, hi) 0-d CPU tensors of x's dtype
_SEEN: dict = {}
_BOUNDS_MAX, _SEEN_MAX = 256, 4096


def _value_key(v):
    """A hashable key of a per-tensor qparam that tells apart values and dtypes (a Python number
    is weak in promoting conventions, an array is not)."""
    if isinstance(v, (int, float)):
        return (type(v).__name__, v)
    a = np.asarray(v)
    return (a.dtype.name, type(v).__name__, a.reshape(-1)[0].item() if a.size == 1 else None,
            a.shape)


def _per_tensor_bounds(dtype, scale, zero_point, qmin, qmax, rounding, convention, compute):
    """Memoized per-tensor STE bounds as 0-d tensors; None for a first sighting when not
    ``compute`` (the caller then takes the direct mask)."""
    try:
        key = (dtype, _value_key(scale), _value_key(zero_point), qmin, qmax,
               rounding, _convention(convention))
        hash(key)
    except TypeError:  # an unhashable custom convention: no memo
        key = None
    if key is not None and key in _BOUNDS:
        _BOUNDS.move_to_end(key)
        return _BOUNDS[key]
    if not compute:
        if key is None:
            return None
        if len(_SEEN) >= _SEEN_MAX:
            _SEEN.clear()
        _SEEN[key] = _SEEN.get(key, 0) + 1
        if _SEEN[key] < 2:
            return None
    lo, hi = ste_bounds(dtype, scale, zero_point, qmin, qmax, groups=None, rounding=rounding,
                        convention=_convention(convention))
    bounds = (from_numpy(np.asarray(lo).reshape(())), from_numpy(np.asarray(hi).reshape(())))
    if key is not None:
        _BOUNDS[key] = bounds
        _SEEN.pop(key, None)
        if len(_BOUNDS) > _BOUNDS_MAX:
            _BOUNDS.popitem(last=False)
    return bounds


_DIRECT_MASK_MAX = 1 << 14  # below this one core call on x beats the bound search


def _direct_mask(x, scale, zero_point, qmin, qmax, axis, block_size, rounding, convention, *,
                 numpy=False):
    """``rq.ste.mask`` of x (one core call: a quantize over the range widened by one code), a
    tensor on x's device, or with ``numpy`` the ndarray."""
    inside = rq.ste.mask(to_numpy(x), scale, zero_point, qmin=qmin, qmax=qmax, axis=axis,
                         block_size=block_size, rounding=rounding,
                         convention=_convention(convention))
    return inside if numpy else from_numpy(inside, x.device)


def _fake_quantize_backward_impl(
    grad: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
    qmin: int, qmax: int, axis: int | None, block_size: list[int] | None, rounding: str | None,
    convention: str, scale_weak: bool, zp_weak: bool, qparam_grads: bool, grad_factor: float,
    lsq_convention: str, round_zero_point: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    spec = _spec_of(qmin, qmax, axis, block_size, rounding, convention, None, grad_factor,
                    lsq_convention, round_zero_point)
    gx, gs, gz = _grads(grad, x, scalar_or_array(scale, scale_weak),
                        scalar_or_array(zero_point, zp_weak), spec, qparam_grads)
    if not qparam_grads:
        return gx, torch.zeros_like(scale), torch.zeros_like(zero_point)
    return gx, _as_like(gs, scale), _as_like(gz, zero_point)


_NUMPY_FLOAT = {torch.float32: np.float32, torch.float64: np.float64}


def _as_like(value, like: torch.Tensor) -> torch.Tensor:
    """A core gradient (float64 or float32 value) in ``like``'s dtype, shape and device, rounded
    once (an integer ``like`` gets zeros: it cannot take a gradient)."""
    if not like.dtype.is_floating_point:
        return torch.zeros_like(like)
    np_dtype = _NUMPY_FLOAT.get(like.dtype)
    if np_dtype is not None and like.device.type == "cpu":  # NumPy's cast rounds as Tensor.to
        return torch.from_numpy(np.array(value, dtype=np_dtype).reshape(like.shape))
    t = torch.from_numpy(np.array(value, dtype=np.float64, ndmin=1))
    return t.to(like.dtype).reshape(like.shape).to(like.device)


_fake_quantize_backward_op = torch.library.custom_op(
    "refquant::fake_quantize_backward", mutates_args=()
)(_fake_quantize_backward_impl)


@_fake_quantize_backward_op.register_fake
def _(grad, x, scale, zero_point, *args):
    return torch.empty_like(x), torch.empty_like(scale), torch.empty_like(zero_point)


_FQ_STATIC = ("qmin", "qmax", "axis", "block_size", "rounding", "convention", "seed",
              "scale_weak", "zp_weak", "grad_factor", "lsq_convention", "round_zero_point")


def _fq_setup(ctx, inputs, output):
    x, scale, zero_point, *static = inputs
    ctx.save_for_backward(x, scale, zero_point)
    ctx.static = dict(zip(_FQ_STATIC, static, strict=True))


def _fq_backward(ctx, grad):
    x, scale, zero_point = ctx.saved_tensors
    st = ctx.static
    need = ctx.needs_input_grad
    qparam_grads = bool(need[1] or need[2])
    gx, gs, gz = torch.ops.refquant.fake_quantize_backward(
        grad, x, scale, zero_point, st["qmin"], st["qmax"], st["axis"], st["block_size"],
        st["rounding"], st["convention"], st["scale_weak"], st["zp_weak"], qparam_grads,
        st["grad_factor"], st["lsq_convention"], st["round_zero_point"],
    )
    return (gx if need[0] else None, gs if need[1] else None, gz if need[2] else None,
            *([None] * len(_FQ_STATIC)))


_fake_quantize_op.register_autograd(_fq_backward, setup_context=_fq_setup)


def _core_qparam(value):
    """A qparam as the core takes it: a plain tensor's values as an ndarray, anything else as is."""
    return to_numpy(value) if isinstance(value, torch.Tensor) else value


class _EagerFakeQuantize(torch.autograd.Function):
    """The custom op's forward and backward without its dispatch cost: used in eager mode on plain
    tensors, with Python-number or NumPy qparams handed to the core as they are; compile,
    export and tensor subclasses take the op. Where x alone takes the straight-through gradient,
    the forward keeps the mask from its own pass (as torch's ``*_cachemask`` ops) and the backward
    is ``grad * mask``; otherwise x and tensor qparams are saved with their version counters, so
    an in-place change before backward raises as for any torch op."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, spec):
        need = ctx.needs_input_grad
        ctx.spec, ctx.mask_only = spec, False
        s, z = _core_qparam(scale), _core_qparam(zero_point)
        if _straight_through(spec, bool(need[1] or need[2])):
            y, mask = _forward_with_mask(x, s, z, spec)
            if mask is not None:
                ctx.save_for_backward(mask)
                ctx.mask_only = True
                return y
        else:
            y = None
        is_tensor = (isinstance(scale, torch.Tensor), isinstance(zero_point, torch.Tensor))
        ctx.save_for_backward(x, *(t for t in (scale, zero_point) if isinstance(t, torch.Tensor)))
        ctx.is_tensor = is_tensor
        ctx.numbers = (None if is_tensor[0] else scale, None if is_tensor[1] else zero_point)
        return _forward(x, s, z, spec) if y is None else y

    @staticmethod
    def backward(ctx, grad):
        if ctx.mask_only:
            (mask,) = ctx.saved_tensors
            return _mask_grad(grad, mask), None, None, None
        x, *saved = ctx.saved_tensors
        qparams = [saved.pop(0) if is_t else num for is_t, num in zip(ctx.is_tensor, ctx.numbers)]
        need = ctx.needs_input_grad
        qparam_grads = bool(need[1] or need[2])
        gx, gs, gz = _grads(grad, x, _core_qparam(qparams[0]), _core_qparam(qparams[1]), ctx.spec,
                            qparam_grads)
        return (gx if need[0] else None,
                _as_like(gs, qparams[0]) if need[1] else None,
                _as_like(gz, qparams[1]) if need[2] else None,
                None)


def _straight_through_only(x, scale, zero_point, spec: _Spec) -> bool:
    """Whether only x takes a gradient, the straight-through one, and x is small (the cost there
    is per call, not per element)."""
    return (x.numel() <= _DIRECT_MASK_MAX and not _learns(scale) and not _learns(zero_point)
            and (not spec.round_zero_point or spec.block_size is not None))


def _learns(value) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad


def _masked_forward(x: torch.Tensor, s, z, spec: _Spec) -> torch.Tensor:
    """The core's forward with the straight-through gradient of a small x, without a Python
    autograd node: ``y = x * mask`` records torch's own product node (its backward is
    ``grad * mask``, torch's rule), then y's values are replaced by the core's output (the node
    saves the mask only, never y)."""
    out, mask = _forward_with_mask(x, s, z, spec)
    if mask is None:
        mask = _small_mask(x, s, spec.forward_zero_point(z), spec)
    y = x * mask
    y.detach().copy_(out)
    return y


def _small_mask(x: torch.Tensor, s, z, spec: _Spec) -> torch.Tensor:
    """:func:`ste_mask` of a small x; per-tensor on the CPU in float32/float64 with memoized
    bounds ``[a, b]``, ``a <= x <= b`` on x's array (NumPy costs less per call than torch)."""
    if (spec.axis is None and spec.block_size is None and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)):
        xa = to_numpy(x)
        bounds = _per_tensor_bounds(xa.dtype, s, z, spec.qmin, spec.qmax, spec.rounding,
                                    spec.convention, compute=False)
        if bounds is not None:
            return from_numpy((xa >= bounds[0].numpy()) & (xa <= bounds[1].numpy()))
        return _direct_mask(x, s, z, spec.qmin, spec.qmax, None, None, spec.rounding,
                            spec.convention)
    return ste_mask(x, s, z, spec.qmin, spec.qmax, rounding=spec.rounding,
                    convention=spec.convention, **spec.kwargs())


def _check_qparam(value, name: str):
    """``value`` if it is a number, a NumPy number or array of numbers, or a tensor."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number or a tensor; got {value!r}")
    if isinstance(value, (int, float, torch.Tensor, np.ndarray, np.integer, np.floating)):
        return value
    arr = np.asarray(value)
    if arr.dtype.kind in "iuf":
        return arr
    raise TypeError(f"{name} must be a number, an array or a tensor; got {value!r}")


def _op_qparam(value, like: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(tensor, weak) for the op schema: a Python number becomes a 0-d float64/int64 tensor
    marked weak (given back to the core as the same Python number); NumPy values keep their
    dtype."""
    if isinstance(value, torch.Tensor):
        return value, False
    if isinstance(value, int):
        return torch.tensor(value, dtype=torch.int64, device=like.device), True
    if isinstance(value, float):
        return torch.tensor(value, dtype=torch.float64, device=like.device), True
    return torch.as_tensor(np.asarray(value), device=like.device), False


_PLAIN = (torch.Tensor, torch.nn.Parameter)  # tensor subclasses other than Parameter take the op


def _eager(x, scale, zero_point) -> bool:
    return (type(x) in _PLAIN and _plain_or_not_tensor(scale) and _plain_or_not_tensor(zero_point)
            and not torch.compiler.is_compiling())


def _plain_or_not_tensor(value) -> bool:
    return type(value) in _PLAIN or not isinstance(value, torch.Tensor)


def _needs_grad(*values) -> bool:
    if not torch.is_grad_enabled():
        return False
    for v in values:
        if _learns(v):
            return True
    return False


def fake_quantize(x, scale, zero_point=0, *, qmin=None, qmax=None, fmt=None, axis=None,
                  block_size=None, rounding=None, convention="exact", rng=None,
                  grad_factor=1.0, lsq_convention="lsq", round_zero_point=False):
    """Differentiable ``rq.fake_quantize``: ``(q - z) * s`` with
    ``q = clamp(round(x / s) + z, qmin, qmax)`` under ``convention``, in x's dtype and device.

    The forward is ``rq.fake_quantize`` on x's bits with the same arguments (a tensor ``scale`` /
    ``zero_point`` reaches the core as an ndarray of its dtype, a Python or NumPy number as it
    is; ``rng`` is an int seed or a NumPy Generator, from which one seed is drawn). Backward:
    ``grad * m(x)``, m the straight-through mask (1 where the unclamped code lies in
    ``[qmin, qmax]``; torch's rule). When ``scale`` or ``zero_point`` is a tensor that requires
    grad, the three gradients are ``rq.lsq.fake_quantize_grad(..., grad_factor=grad_factor,
    convention=lsq_convention)``, each qparam's in its own dtype and shape.

    ``round_zero_point=True`` (torch's learnable fake quant): a float ``zero_point`` is used by the
    forward and the mask as ``clamp(round_half_even(z), qmin, qmax)``, an integer; the LSQ
    gradients see it rounded the same way under ``lsq_convention="lsq"`` (straight through), and
    as given under ``"torch.learnable"`` (which applies torch's own backward rounding).

    >>> import torch, refquant_torch as rqt
    >>> x = torch.tensor([0.125, 0.375, 9.0], requires_grad=True)
    >>> y = rqt.fake_quantize(x, 0.25, 0, qmin=-8, qmax=7)
    >>> y.tolist()
    [0.0, 0.5, 1.75]
    >>> y.sum().backward(); x.grad.tolist()
    [1.0, 1.0, 0.0]
    """
    x = check_float_tensor(x)
    scale = _check_qparam(scale, "scale")
    zero_point = _check_qparam(zero_point, "zero_point")
    if _eager(x, scale, zero_point):
        spec = _eager_spec(x.dim(), qmin, qmax, fmt, axis, block_size, rounding, convention, rng,
                           grad_factor, lsq_convention, round_zero_point)
        if not _needs_grad(x, scale, zero_point):
            return _forward(x, _core_qparam(scale), _core_qparam(zero_point), spec)
        if _straight_through_only(x, scale, zero_point, spec):
            return _masked_forward(x, _core_qparam(scale), _core_qparam(zero_point), spec)
        return _EagerFakeQuantize.apply(x, scale, zero_point, spec)
    qmin, qmax = _resolve_range(qmin, qmax, fmt)
    if axis is not None:
        axis = check_axis(axis, x.dim())
    block = None if block_size is None else [int(b) for b in block_size]
    seed = _seed(rng)
    grad_factor, lsq_convention = float(grad_factor), str(lsq_convention)
    round_zero_point = bool(round_zero_point)
    scale_t, scale_weak = _op_qparam(scale, x)
    zp_t, zp_weak = _op_qparam(zero_point, x)
    return torch.ops.refquant.fake_quantize(
        x, scale_t, zp_t, qmin, qmax, axis, block, rounding,
        convention_key(convention, rq.conventions, "affine"), seed, scale_weak, zp_weak, grad_factor,
        lsq_convention, round_zero_point)


_EAGER_SPECS: dict = {}
_SIMPLE_SET = frozenset((type(None), bool, int, float, str, rq.IntFormat))


def _eager_spec(ndim, qmin, qmax, fmt, axis, block_size, rounding, convention, rng, grad_factor,
                lsq_convention, round_zero_point) -> _Spec:
    """The validated static arguments of an eager call, remembered (with each argument's type, so
    that a refused type is refused again) when they are plain values and ``rng`` is None."""
    args = (qmin, qmax, fmt, axis, rounding, convention, grad_factor, lsq_convention,
            round_zero_point)
    key = None
    types = tuple(map(type, args))
    if rng is None and _SIMPLE_SET.issuperset(types) and (
            block_size is None or type(block_size) in (tuple, list)):
        sign = math.copysign(1.0, grad_factor) if type(grad_factor) is float else 0.0
        key = (ndim, types, args, sign,
               None if block_size is None else tuple((type(b), b) for b in block_size))
        spec = _EAGER_SPECS.get(key)
        if spec is not None:
            return spec
    qmin, qmax = resolve_range(qmin, qmax, fmt)
    if axis is not None:
        axis = check_axis(axis, ndim)
    if isinstance(convention, str):
        rq.conventions.get(convention)  # a ValueError that lists the known names
    spec = _spec_of(qmin, qmax, axis, None if block_size is None else [int(b) for b in block_size],
                    rounding, convention, _seed(rng), float(grad_factor), str(lsq_convention),
                    bool(round_zero_point))
    if key is not None:
        if len(_EAGER_SPECS) >= 1024:
            _EAGER_SPECS.clear()
        _EAGER_SPECS[key] = spec
    return spec


_RANGES: dict = {}


def _resolve_range(qmin, qmax, fmt):
    """``resolve_range``, remembered for hashable arguments (the types are part of the key, so
    that a bool or float is still refused)."""
    key = (type(qmin), qmin, type(qmax), qmax, fmt)
    try:
        return _RANGES[key]
    except (KeyError, TypeError):
        result = resolve_range(qmin, qmax, fmt)
    try:
        if len(_RANGES) < 1024:
            _RANGES[key] = result
    except TypeError:  # an unhashable fmt
        pass
    return result


def _seed(rng) -> int | None:
    if rng is None:
        return None
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2**62))
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, (int, np.integer)):
        raise TypeError(f"rng must be a numpy Generator or an int seed; got {rng!r}")
    return int(rng)


# ----------------------------------------------------------------------------- PACT and APoT
def _check_alpha(alpha, per_channel: bool = False):
    """``alpha`` if it is a real number or a one-element float tensor (1-D with ``axis``), else
    an error naming it."""
    if isinstance(alpha, torch.Tensor):
        if not alpha.dtype.is_floating_point or (alpha.numel() != 1 and not per_channel):
            raise ValueError(f"alpha must be a one-element float tensor; got shape "
                             f"{tuple(alpha.shape)} dtype {alpha.dtype}")
        return alpha
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.integer,
                                                                      np.floating)):
        raise TypeError(f"alpha must be a number or a tensor; got {alpha!r}")
    return alpha


def _alpha_tensor(alpha, x: torch.Tensor) -> torch.Tensor:
    if isinstance(alpha, torch.Tensor):
        return alpha
    return torch.tensor(float(alpha), dtype=torch.float64, device=x.device)


def _alpha_value(alpha, per_channel: bool = False):
    """alpha as the core takes it: a float64 value (a tensor's value widened exactly), a 1-D
    float64 array per channel."""
    if isinstance(alpha, torch.Tensor):
        if not per_channel and alpha.dtype != torch.bfloat16:
            return alpha.item()  # a Python float holds every float16/32/64 value exactly
        a = to_numpy(alpha).astype(np.float64)
        return a.reshape(-1) if per_channel else float(a.reshape(()))
    return float(alpha)


def _alpha_forward(core_fn, x: torch.Tensor, alpha, kwargs: dict) -> torch.Tensor:
    a = _alpha_value(alpha, kwargs.get("axis") is not None)
    out = core_fn(to_numpy(x), a, **kwargs)
    return from_numpy(out, x.device)


def _alpha_grads(core_grad, grad: torch.Tensor, x: torch.Tensor, alpha, kwargs: dict):
    """(grad_x in grad's dtype, grad_alpha as an ndarray) from the core's grad function."""
    a = _alpha_value(alpha, kwargs.get("axis") is not None)
    gx, ga = core_grad(to_numpy(x), a, to_numpy(grad), **kwargs)
    gx = from_numpy(np.asarray(gx), x.device)
    return (gx if gx.dtype == grad.dtype else gx.to(grad.dtype)), ga


@torch.library.custom_op("refquant::pact", mutates_args=())
def _pact_op(x: torch.Tensor, alpha: torch.Tensor, bits: int, signed: bool, rounding: str,
             axis: int | None, rng: int | None) -> torch.Tensor:
    return _alpha_forward(rq.pact.fake_quantize, x, alpha, {
        "bits": bits, "signed": signed, "rounding": rounding, "axis": axis, "rng": rng})


@torch.library.custom_op("refquant::pact_backward", mutates_args=())
def _pact_backward_op(grad: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, bits: int,
                      signed: bool, axis: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    gx, ga = _alpha_grads(rq.pact.fake_quantize_grad, grad, x, alpha,
                          {"bits": bits, "signed": signed, "axis": axis})
    return gx, _as_like(ga, alpha)


@torch.library.custom_op("refquant::apot_fake_quantize", mutates_args=())
def _apot_op(x: torch.Tensor, alpha: torch.Tensor, bits: int, k: int, signed: bool,
             convention: str) -> torch.Tensor:
    return _alpha_forward(rq.apot.fake_quantize, x, alpha,
                          {"bits": bits, "k": k, "signed": signed, "convention": convention})


@torch.library.custom_op("refquant::apot_fake_quantize_backward", mutates_args=())
def _apot_backward_op(grad: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, bits: int,
                      k: int, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    gx, ga = _alpha_grads(rq.apot.fake_quantize_grad, grad, x, alpha,
                          {"bits": bits, "k": k, "signed": signed})
    return gx, _as_like(ga, alpha)


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
    bits, signed, _, axis, _ = ctx.static
    gx, ga = torch.ops.refquant.pact_backward(grad, x, alpha, bits, signed, axis)
    need = ctx.needs_input_grad
    return gx if need[0] else None, ga if need[1] else None, None, None, None, None, None


def _apot_backward(ctx, grad):
    x, alpha = ctx.saved_tensors
    bits, k, signed, _ = ctx.static
    gx, ga = torch.ops.refquant.apot_fake_quantize_backward(grad, x, alpha, bits, k, signed)
    need = ctx.needs_input_grad
    return gx if need[0] else None, ga if need[1] else None, None, None, None, None


_pact_op.register_autograd(_pact_backward, setup_context=_alpha_setup)
_apot_op.register_autograd(_apot_backward, setup_context=_alpha_setup)


class _EagerAlpha(torch.autograd.Function):
    """PACT / APoT in eager mode on plain tensors: the custom ops' math without their dispatch
    cost. ``core`` is (forward, grad, grad keyword names)."""

    @staticmethod
    def forward(ctx, x, alpha, core, kwargs):
        forward_fn, grad_fn, grad_keys = core
        if isinstance(alpha, torch.Tensor):
            ctx.save_for_backward(x, alpha)
        else:
            ctx.save_for_backward(x)
            ctx.alpha = alpha
        ctx.grad_fn, ctx.grad_kwargs = grad_fn, {k: kwargs[k] for k in grad_keys}
        return _alpha_forward(forward_fn, x, alpha, kwargs)

    @staticmethod
    def backward(ctx, grad):
        x, *alpha = ctx.saved_tensors
        alpha = alpha[0] if alpha else ctx.alpha
        gx, ga = _alpha_grads(ctx.grad_fn, grad, x, alpha, ctx.grad_kwargs)
        need = ctx.needs_input_grad
        return gx if need[0] else None, _as_like(ga, alpha) if need[1] else None, None, None


_PACT_CORE = (rq.pact.fake_quantize, rq.pact.fake_quantize_grad, ("bits", "signed", "axis"))
_APOT_CORE = (rq.apot.fake_quantize, rq.apot.fake_quantize_grad, ("bits", "k", "signed"))


def _run_alpha(x, alpha, core, kwargs: dict, op):
    if _eager(x, alpha, None):
        if not _needs_grad(x, alpha):
            return _alpha_forward(core[0], x, alpha, kwargs)
        return _EagerAlpha.apply(x, alpha, core, kwargs)
    return op(x, _alpha_tensor(alpha, x), *kwargs.values())


def pact(x, alpha, *, bits, signed=False, rounding="half_even", axis=None, rng=None):
    """Differentiable PACT (arXiv:1805.06085): ``rq.pact.fake_quantize`` on x's bits, in x's
    dtype: ``y = round(clip(x, lo, alpha) / s) * s`` with ``s = alpha / (2**bits - 1)`` and
    ``lo = 0`` (``signed``: ``lo = -alpha``, ``s = alpha / (2**(bits-1) - 1)``), as the core
    defines it (``rounding``, per-channel ``axis`` with a 1-D ``alpha``, and ``rng`` as in the
    core; ``rng`` is an int seed or a NumPy Generator, from which one seed is drawn).
    Backward ``rq.pact.fake_quantize_grad``: ``grad_x`` is the straight-through grad
    inside the clipping range, ``grad_alpha`` the core's sum over the clipped part. ``alpha`` is a
    number or a one-element float tensor (learnable when it requires grad); its gradient has its
    dtype and shape.

    >>> import torch, refquant_torch as rqt
    >>> x = torch.tensor([-0.5, 0.2, 0.5, 3.0], requires_grad=True)
    >>> alpha = torch.tensor([1.0], requires_grad=True)
    >>> y = rqt.pact(x, alpha, bits=2)
    >>> y.tolist()
    [0.0, 0.3333333432674408, 0.6666666865348816, 1.0]
    >>> y.sum().backward(); x.grad.tolist(), alpha.grad.tolist()
    ([0.0, 1.0, 1.0, 0.0], [1.0])
    """
    x = check_float_tensor(x)
    if axis is not None:
        axis = check_axis(axis, x.dim())
    kwargs = {"bits": int(bits), "signed": bool(signed), "rounding": str(rounding), "axis": axis,
              "rng": _seed(rng)}
    return _run_alpha(x, _check_alpha(alpha, axis is not None), _PACT_CORE, kwargs,
                      torch.ops.refquant.pact)


def apot_fake_quantize(x, alpha, *, bits, k, signed=False, convention="paper"):
    """Differentiable APoT (arXiv:1909.13144): ``rq.apot.fake_quantize`` on x's bits, in x's
    dtype: ``clip(x, -alpha, alpha)`` (``[0, alpha]`` unsigned) projected onto the nearest level of
    ``rq.apot.levels(bits, k, alpha=alpha, signed=signed)`` under ``convention``. Backward
    ``rq.apot.fake_quantize_grad`` (straight-through ``grad_x`` inside the clipping range, and the
    paper's ``grad_alpha``). ``alpha`` as in :func:`pact`.

    >>> import torch, refquant_torch as rqt
    >>> x = torch.tensor([0.3, 0.6, 2.0], requires_grad=True)
    >>> y = rqt.apot_fake_quantize(x, 1.0, bits=2, k=1)
    >>> y.tolist() == [float(v) for v in
    ...               __import__("refquant").apot.fake_quantize(x.detach().numpy(), 1.0, bits=2, k=1)]
    True
    >>> y.sum().backward(); x.grad.tolist()
    [1.0, 1.0, 0.0]
    """
    x = check_float_tensor(x)
    kwargs = {"bits": int(bits), "k": int(k), "signed": bool(signed), "convention": str(convention)}
    return _run_alpha(x, _check_alpha(alpha), _APOT_CORE, kwargs,
                      torch.ops.refquant.apot_fake_quantize)
