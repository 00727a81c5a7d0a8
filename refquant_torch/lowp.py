"""Differentiable fake quantizers for low-precision float element and block formats.

Each function runs the core on the input's bits (``rq.fake_quantize`` with a FloatFormat,
``rq.mx.fake_quantize``, ``rq.nvfp4.fake_quantize``, ``rq.nf4.fake_quantize``) inside a torch
custom op (``torch.ops.refquant.*``) with a fake kernel and an autograd formula, so that
``torch.compile(fullgraph=True)`` and ``torch.export`` see one opaque node.

Gradients are straight-through, as torchao's QAT measured on torch 2.13 / torchao 0.18:

* element formats with a scale (:func:`float_fake_quantize`), ``ste="clipped"`` (default):
  ``grad_x = grad * m(x)`` with ``m = 1`` where ``-max <= x / scale <= max`` (``0 <= x / scale``
  for an unsigned format) and 0 elsewhere, NaN and +-inf included. The quotient is the real
  number, or ``fl32(fl32(x) / fl32(scale))`` under a convention whose quotient is float32. This is
  the mask of torchao's float8 fake quantizer (``clamp(x / s, -max, max)`` before an STE cast).
  Outside the mask the gradient is +0.0 (``torch.where``, as torch's clamp backward), whatever
  ``grad`` holds there. ``ste="identity"``: ``grad_x = grad``.
* block formats (:func:`mx_fake_quantize`, :func:`nvfp4_fake_quantize`,
  :func:`nf4_fake_quantize`): ``grad_x = grad`` everywhere, as torchao's MX and NVFP4 QAT linears
  (their backward multiplies the incoming gradient by the dequantized operands).

The gradient values are the incoming gradient itself (no rounding): torchao's float8 fake quant
also rounds the gradient through the float8 format (its autograd casts ``grad * s`` to the float8
intermediate's dtype); refquant does not reproduce that rounding. The scale gets no gradient: a
scale tensor that requires grad is a NotImplementedError.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch

import refquant as rq
from refquant.floatformats import NAMED_FLOAT_FORMATS, FloatFormat, float_format
from refquant.formats import IntFormat

from ._bridge import check_float_tensor, from_numpy, to_numpy
from ._conventions import convention_key, convention_of
from .functional import _seed

__all__ = ["float_fake_quantize", "mx_fake_quantize", "nvfp4_fake_quantize", "nf4_fake_quantize"]

STE_RULES = ("clipped", "identity")

# ----------------------------------------------------------------------------- op arguments


def _format_key(fmt, *, allow_int8: bool = False) -> str:
    """``fmt`` as a string for an op schema: a named format's name, else ``FloatFormat:`` and its
    fields, the name last (a string, so it survives ``torch.export.save``/``load``). MX takes
    ``rq.int8`` as ``"int8"``."""
    if allow_int8 and isinstance(fmt, IntFormat):
        if fmt != rq.int8:
            raise ValueError(f"the MX integer element format is int8 (MXINT8); got {fmt}")
        return "int8"
    fmt = float_format(fmt)
    if NAMED_FLOAT_FORMATS.get(fmt.name) == fmt:
        return fmt.name
    return (f"FloatFormat:{fmt.exponent_bits},{fmt.mantissa_bits},{fmt.bias},{int(fmt.has_inf)},"
            f"{fmt.nan},{int(fmt.signed)},{int(fmt.subnormals)},{fmt.name}")


def _format_of(key: str):
    if key == "int8":
        return rq.int8
    if key.startswith("FloatFormat:"):
        e, m, bias, has_inf, nan, signed, subnormals, name = key[len("FloatFormat:"):].split(",", 7)
        return FloatFormat(int(e), int(m), int(bias), has_inf == "1", nan, signed == "1",
                           subnormals == "1", name)
    return float_format(key)


def _like_x(x, *args):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _check_scale(scale, like: torch.Tensor) -> torch.Tensor:
    """The scale as a tensor for the op: a tensor as it is (no gradient), a Python or NumPy number
    or array as a float64 tensor holding the same values."""
    if isinstance(scale, (bool, np.bool_)):
        raise TypeError(f"scale must be a number or a tensor; got {scale!r}")
    if isinstance(scale, torch.Tensor):
        if scale.requires_grad and torch.is_grad_enabled():
            raise NotImplementedError("float_fake_quantize gives no gradient to the scale; pass "
                                      "scale.detach() (a learnable float-format scale is not "
                                      "defined yet)")
        if not (scale.dtype.is_floating_point or scale.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"scale must be a float or integer tensor; got dtype {scale.dtype}")
        return scale
    if isinstance(scale, (int, float)):
        return torch.tensor(float(scale), dtype=torch.float64, device=like.device)
    arr = np.asarray(scale)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"scale must be a number, an array or a tensor; got {scale!r}")
    return torch.as_tensor(arr.astype(np.float64), device=like.device)


# ----------------------------------------------------------------------------- element formats
@torch.library.custom_op("refquant::float_fake_quantize", mutates_args=())
def _float_op(x: torch.Tensor, scale: torch.Tensor, fmt: str, saturate: bool | None,
              rounding: str | None, convention: str, axis: int | None, block_size: list[int] | None,
              seed: int | None, ste: str) -> torch.Tensor:
    block = None if block_size is None else tuple(block_size)
    out = rq.fake_quantize(to_numpy(x), to_numpy(scale), fmt=_format_of(fmt), saturate=saturate,
                           rounding=rounding, convention=convention_of(convention), axis=axis,
                           block_size=block, rng=seed)
    return from_numpy(out, x.device)


def _largest_at_most(m: float, s: np.ndarray) -> np.ndarray:
    """Per scale ``s > 0`` (float64), the largest float64 ``b`` with ``b <= m * s`` as real numbers
    ``m`` is a format's largest value (a few significant
    bits), so ``m * hi`` and ``m * lo`` of Veltkamp's split ``s = hi + lo`` are exact and their
    rounded sum ``p`` carries an exact error ``e``: ``b = p`` if ``e >= 0``, else ``p``'s
    predecessor. Scales where a product could leave the normal range take Fractions (``b`` is at
    most the largest finite float64, so +-inf is never inside)."""
    s = np.asarray(s, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        t = s * 134217729.0
        hi = t - (t - s)
        a, b = m * hi, m * (s - hi)
        p = a + b
        e = b - (p - a)
    out = np.where(e < 0, np.nextafter(p, 0.0), p)
    odd = ~((s > 2.0**-800) & (s < 2.0**800) & (np.abs(p) < 2.0**1000))
    for i in np.flatnonzero(odd):
        real = Fraction(m) * Fraction(float(s[i]))
        if real >= Fraction(np.finfo(np.float64).max):
            out[i] = np.finfo(np.float64).max
            continue
        f = float(real)
        out[i] = np.nextafter(f, 0.0) if Fraction(f) > real else f
    return out


def _per_element(values: np.ndarray, shape, axis, block_size) -> np.ndarray:
    """Per-group values (one per scale entry, the forward having checked the shapes) laid over
    x's shape: along ``axis``, repeated over each block of ``block_size``, or one for all."""
    if values.size == 1:
        return values.reshape(())
    if axis is not None:
        return values.reshape([-1 if i == axis else 1 for i in range(len(shape))])
    out = values.reshape([dim // b for dim, b in zip(shape, block_size)])
    for dim, b in enumerate(block_size):
        out = np.repeat(out, b, axis=dim)
    return out


def _clip_mask(x: np.ndarray, scale: np.ndarray, fmt, convention, axis, block_size) -> np.ndarray:
    """``-max <= x / scale <= max`` per element (``0 <=`` for unsigned formats; NaN: False), the
    quotient real, or float32 under a convention whose quotient is float32."""
    m = float(fmt.max)
    if rq.float_conventions.get(convention).quotient == "float32":
        s32 = _per_element(scale.astype(np.float64).astype(np.float32), x.shape, axis, block_size)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            t = x.astype(np.float32) / s32
        return (t >= (-m if fmt.signed else 0.0)) & (t <= m)
    b = _per_element(_largest_at_most(m, scale.reshape(-1)), x.shape, axis, block_size)
    v = x.astype(np.float64)
    return (v >= (-b if fmt.signed else 0.0)) & (v <= b)


@torch.library.custom_op("refquant::float_fake_quantize_backward", mutates_args=())
def _float_backward_op(grad: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, fmt: str,
                       convention: str, axis: int | None,
                       block_size: list[int] | None) -> torch.Tensor:
    block = None if block_size is None else tuple(block_size)
    mask = _clip_mask(to_numpy(x), to_numpy(scale), _format_of(fmt), convention_of(convention), axis,
                      block)
    zero = torch.zeros((), dtype=grad.dtype, device=grad.device)
    return torch.where(from_numpy(mask, grad.device), grad, zero)


_float_op.register_fake(_like_x)
_float_backward_op.register_fake(_like_x)


def _float_setup(ctx, inputs, output):
    x, scale, fmt, _, _, convention, axis, block_size, _, ste = inputs
    ctx.ste = ste
    if ste == "clipped":
        ctx.save_for_backward(x, scale)
        ctx.static = (fmt, convention, axis, block_size)


def _float_backward(ctx, grad):
    if ctx.ste == "identity":
        gx = grad
    else:
        x, scale = ctx.saved_tensors
        gx = torch.ops.refquant.float_fake_quantize_backward(grad, x, scale, *ctx.static)
    return (gx, *(None,) * 9)


_float_op.register_autograd(_float_backward, setup_context=_float_setup)


def float_fake_quantize(x, scale=1.0, *, fmt, saturate=None, rounding=None, convention="exact",
                        axis=None, block_size=None, rng=None, ste="clipped"):
    """Differentiable ``rq.fake_quantize`` to a float format: the value of ``fmt`` nearest
    ``x / scale`` (one rounding; ``rounding``, ``saturate`` and the special values as
    ``rq.encode`` under ``convention``), times ``scale``, rounded once to x's dtype, on x's device.

    ``scale`` is a positive number, a 1-D tensor along ``axis`` or a block tensor
    (``block_size``, one entry per dimension of x), as the core takes it; float formats have no
    zero point. ``rng`` (stochastic rounding) is an int seed or a NumPy Generator, from which one
    seed is drawn per call. Backward (``ste``): ``"clipped"`` gives ``grad`` where
    ``-max <= x / scale <= max`` and 0 elsewhere (NaN, +-inf included), torchao's float8 fake
    quant mask; ``"identity"`` gives ``grad`` everywhere. The scale takes no gradient.

    >>> import torch, refquant as rq, refquant_torch as rqt
    >>> x = torch.tensor([0.3, 0.26, 100.0], requires_grad=True)
    >>> y = rqt.float_fake_quantize(x, 0.1, fmt=rq.float4_e2m1fn)
    >>> y.tolist() == rq.fake_quantize(x.detach().numpy(), 0.1, fmt=rq.float4_e2m1fn).tolist()
    True
    >>> y.sum().backward(); x.grad.tolist()        # 100 / 0.1 is beyond max = 6
    [1.0, 1.0, 0.0]
    """
    x = check_float_tensor(x)
    fmt_key = _format_key(fmt)
    conv_key = convention_key(convention, rq.float_conventions, "float")
    if saturate is not None and not isinstance(saturate, (bool, np.bool_)):
        raise TypeError(f"saturate must be True, False or None; got {saturate!r}")
    if rounding is not None and rounding not in rq.ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {', '.join(rq.ROUNDING_MODES)}; got {rounding!r}")
    if ste not in STE_RULES:
        raise ValueError(f"ste must be one of {', '.join(STE_RULES)}; got {ste!r}")
    if axis is not None:
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"axis must be an int or None; got {axis!r}")
        if not -x.dim() <= axis < x.dim():
            raise ValueError(f"axis {axis} is out of range for x with {x.dim()} dimensions")
        axis %= x.dim()
    block = None if block_size is None else [int(b) for b in block_size]
    return torch.ops.refquant.float_fake_quantize(
        x, _check_scale(scale, x), fmt_key, None if saturate is None else bool(saturate), rounding,
        conv_key, axis, block, _seed(rng), ste)


# ----------------------------------------------------------------------------- block formats
def _identity_backward(n_static: int):
    def backward(ctx, grad):
        return (grad, *(None,) * n_static)
    return backward


def _no_setup(ctx, inputs, output):
    pass


@torch.library.custom_op("refquant::mx_fake_quantize", mutates_args=())
def _mx_op(x: torch.Tensor, fmt: str, axis: int, block: int, scale_rule: str,
           convention: str) -> torch.Tensor:
    out = rq.mx.fake_quantize(to_numpy(x), _format_of(fmt), axis=axis, block=block,
                              scale_rule=scale_rule, convention=convention_of(convention))
    return from_numpy(out, x.device)


@torch.library.custom_op("refquant::nvfp4_fake_quantize", mutates_args=())
def _nvfp4_op(x: torch.Tensor, global_scale: torch.Tensor | None, convention: str) -> torch.Tensor:
    g = None if global_scale is None else to_numpy(global_scale).reshape(()).item()
    out = rq.nvfp4.fake_quantize(to_numpy(x), global_scale=g, convention=convention_of(convention))
    return from_numpy(out, x.device)


@torch.library.custom_op("refquant::nf4_fake_quantize", mutates_args=())
def _nf4_op(x: torch.Tensor, block: int, double_quant: bool, convention: str, codebook: str,
            nested_block: int) -> torch.Tensor:
    out = rq.nf4.fake_quantize(to_numpy(x), block=block, double_quant=double_quant,
                               convention=convention_of(convention), codebook=codebook,
                               nested_block=nested_block)
    return from_numpy(np.asarray(out), x.device)


for _op, _n in ((_mx_op, 5), (_nvfp4_op, 2), (_nf4_op, 5)):
    _op.register_fake(_like_x)
    _op.register_autograd(_identity_backward(_n), setup_context=_no_setup)


def _check_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int; got {value!r}")
    return int(value)


def mx_fake_quantize(x, fmt, *, axis=-1, block=32, scale_rule="floor", convention="ocp"):
    """Differentiable ``rq.mx.fake_quantize``: OCP MX blocks of ``block`` elements along ``axis``
    sharing an e8m0 scale ``X = 2**E``, ``E = floor(log2(amax)) - emax_elem`` under the OCP
    ``floor`` rule, elements the value of ``fmt`` nearest ``x / X`` (MXINT8 with ``rq.int8``),
    dequantized in x's dtype; ``scale_rule`` and ``convention`` (``rq.mx.conventions.names()``) as the core.
    Backward: ``grad`` everywhere (straight through, as torchao's MX QAT).

    >>> import torch, refquant as rq, refquant_torch as rqt
    >>> x = torch.tensor([0.3, -3.3, 1.2, 7.0], requires_grad=True)
    >>> y = rqt.mx_fake_quantize(x, rq.float4_e2m1fn, block=4)
    >>> y.tolist()
    [0.5, -3.0, 1.0, 6.0]
    >>> y.sum().backward(); x.grad.tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    x = check_float_tensor(x)
    fmt_key = _format_key(fmt, allow_int8=True)
    conv_key = convention_key(convention, rq.mx.conventions, "mx")
    axis, block = _check_int(axis, "axis"), _check_int(block, "block")
    if x.dim() == 0:
        raise ValueError("MX needs x with at least one dimension; got a 0-d tensor")
    if not -x.dim() <= axis < x.dim():
        raise ValueError(f"axis {axis} is out of range for x with {x.dim()} dimensions")
    axis %= x.dim()
    if block < 1 or x.shape[axis] % block:
        raise ValueError(f"block={block} must be a positive integer dividing x.shape[{axis}] = "
                         f"{x.shape[axis]}")
    if scale_rule not in rq.mx.SCALE_RULES:
        raise ValueError(f"scale_rule must be one of {', '.join(rq.mx.SCALE_RULES)}; got {scale_rule!r}")
    return torch.ops.refquant.mx_fake_quantize(x, fmt_key, axis, block, scale_rule, conv_key)


def nvfp4_fake_quantize(x, *, global_scale=None, convention="exact"):
    """Differentiable ``rq.nvfp4.fake_quantize``: e2m1 elements with an e4m3 scale per 16
    consecutive elements of the last axis and a float32 global scale (``amax / 2688`` unless
    ``global_scale`` gives it, stored as ``convention`` stores it), dequantized in x's dtype.
    Backward: ``grad`` everywhere (straight through, as torchao's NVFP4 QAT).

    >>> import torch, refquant_torch as rqt
    >>> x = torch.tensor([0.3, -1.1, 2.6, 6.0] + [0.0] * 12, requires_grad=True)
    >>> y = rqt.nvfp4_fake_quantize(x, global_scale=1.0)
    >>> y[:4].tolist()
    [0.5, -1.0, 3.0, 6.0]
    >>> y.sum().backward(); x.grad[:4].tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    x = check_float_tensor(x)
    conv_key = convention_key(convention, rq.nvfp4.conventions, "nvfp4")
    if x.dim() == 0 or x.shape[-1] % rq.nvfp4.BLOCK:
        raise ValueError(f"x needs a last axis that is a multiple of {rq.nvfp4.BLOCK} (NVFP4 "
                         f"blocks); got shape {tuple(x.shape)}")
    g = global_scale
    if g is not None:
        if isinstance(g, torch.Tensor):
            if g.numel() != 1 or not g.dtype.is_floating_point:
                raise ValueError(f"global_scale must be a one-element float tensor; got shape "
                                 f"{tuple(g.shape)} dtype {g.dtype}")
        elif isinstance(g, (bool, np.bool_)) or not isinstance(g, (int, float, np.integer, np.floating)):
            raise TypeError(f"global_scale must be a number, a tensor or None; got {g!r}")
        else:
            g = torch.tensor(float(g), dtype=torch.float64, device=x.device)
    return torch.ops.refquant.nvfp4_fake_quantize(x, g, conv_key)


def nf4_fake_quantize(x, *, block=64, double_quant=False, convention="bitsandbytes", codebook="nf4",
                      nested_block=256):
    """Differentiable ``rq.nf4.fake_quantize``: per block of ``block`` elements (x flattened in C
    order) ``absmax = max |x|`` and each element the level of the NF4 (or bitsandbytes FP4,
    ``codebook="fp4"``) codebook chosen by ``convention``, times absmax, in x's dtype;
    ``double_quant`` stores the absmaxes in 8 bits as the convention's library does.
    Backward: ``grad`` everywhere (straight through).

    >>> import torch, refquant_torch as rqt
    >>> x = torch.tensor([0.3, -0.6, 0.05, 1.0], requires_grad=True)
    >>> y = rqt.nf4_fake_quantize(x, block=4)
    >>> y.tolist()
    [0.33791524171829224, -0.5250730514526367, 0.07958029955625534, 1.0]
    >>> y.sum().backward(); x.grad.tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    x = check_float_tensor(x)
    conv_key = convention_key(convention, rq.nf4.conventions, "nf4")
    block, nested_block = _check_int(block, "block"), _check_int(nested_block, "nested_block")
    if not isinstance(double_quant, (bool, np.bool_)):
        raise TypeError(f"double_quant must be True or False; got {double_quant!r}")
    if codebook not in ("nf4", "fp4"):
        raise ValueError(f"codebook must be 'nf4' or 'fp4'; got {codebook!r}")
    return torch.ops.refquant.nf4_fake_quantize(x, block, bool(double_quant), conv_key, codebook,
                                                nested_block)
