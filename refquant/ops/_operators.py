"""Whole quantized operators: exact accumulation, then one convention's requantization."""

from __future__ import annotations

import numpy as np

from .._validation import integer_scalar, resolve_range
from ..formats import integer_dtype_for
from . import _int8
from ._accumulate import _matmul_acc, codes, integer_tuple, positive, zero_point
from ._conv import conv_acc, conv_inputs, geometry
from ._pairs import depthwise_pair_acc, takes_depthwise_path
from ._requantize import _check_int32, _zero_point_in, apply, float32_epilogue, row


def _scale(s, name, length=None, what="") -> np.ndarray:
    """A positive finite scale: a scalar, or 1-D of ``length`` when ``length`` is given."""
    a = positive(s, name)
    if a.ndim == 0 or (a.ndim == 1 and a.size == 1 and length is None):
        return a.reshape(())
    if length is None or a.ndim != 1 or a.size != length:
        want = "a scalar" if length is None else f"a scalar or 1-D of length {length}{what}"
        raise ValueError(f"{name} must be {want}; got shape {a.shape}")
    return a


def _out_range(qmin, qmax, fmt, y_zero_point, fallback):
    if qmin is None and qmax is None and fmt is None:
        dt = np.asarray(y_zero_point).dtype
        info = np.iinfo(dt if dt.kind in "iu" and dt.itemsize <= 4 else fallback)
        return int(info.min), int(info.max)
    return resolve_range(qmin, qmax, fmt)


def _bias(bias, length, name="bias"):
    if bias is None:
        return None
    b = np.asarray(bias)
    if b.dtype.kind == "b" or b.dtype.kind not in "iuf" or b.shape != (length,):
        raise ValueError(f"{name} must be 1-D of length {length} (one per output channel), integer or float; "
                         f"got {b.dtype} of shape {b.shape}")
    if b.dtype.kind == "f" and not np.all(np.isfinite(b.astype(np.float64))):
        bad = b[~np.isfinite(b.astype(np.float64))][0]
        raise ValueError(f"{name} must be finite; got {float(bad)!r}")
    if b.dtype.kind in "iu" and b.dtype.itemsize > 4:
        raise TypeError(f"{name} must be int32 codes or floats; got dtype {b.dtype}")
    return b


def _per_channel(w_scale, w_zero_point, axis, n, wdtype, names=("w_scale", "w_zero_point")):
    """The weight scale and zero point, per tensor or (axis=0) one per output channel."""
    if axis is not None:
        if integer_scalar(axis, "axis") != 0:
            raise ValueError(f"axis must be None or 0 (the weight's output channels); got {axis!r}")
        ws = _scale(w_scale, names[0], n, " (one per output channel)")
    else:
        ws = _scale(w_scale, names[0])
    wz = zero_point(w_zero_point, wdtype, names[1], n, " (one per output channel)")
    if axis is None and wz.ndim == 1 and wz.size > 1:
        raise ValueError(f"{names[1]} is per channel but axis is None; pass axis=0")
    return ws, wz


def _qparams(x, x_scale, w, w_scale, w_zero_point, axis, bias, y_scale, y_zero_point, qmin, qmax, fmt):
    """The validated quantization parameters of linear / conv2d (channels: w's first axis)."""
    n = w.shape[0]
    sx, sy = _scale(x_scale, "x_scale"), _scale(y_scale, "y_scale")
    ws, wz = _per_channel(w_scale, w_zero_point, axis, n, w.dtype)
    lo, hi = _out_range(qmin, qmax, fmt, y_zero_point, x.dtype)
    zy = _zero_point_in(y_zero_point, lo, hi, "y_zero_point")
    return sx, ws, wz, sy, zy, _bias(bias, n), lo, hi


def _channel_view(v, ndim, axis):
    v = np.asarray(v)
    if v.ndim == 0:
        return v
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def _fused(conv, sx, ws, sy, bias, zy, lo, hi, channels):
    """The float32 rows' requantization as the integer GEMM's epilogue, or None (see _int8)."""
    epi = float32_epilogue(conv, (sx, ws, sy), bias, channels)
    if epi is None:
        return None
    return (*epi, zy, lo, hi, conv.out_of_range == "int32_indefinite")


def _checked(result):
    """The codes of a fused requantization, once its least and largest sums are known to fit int32."""
    out, (least, largest) = result
    _check_int32(np.array([least, largest], np.int64), "the accumulator")
    return out


def _finish(acc, conv, sx, ws, sy, bias, zy, lo, hi, channel_axis):
    nd = acc.ndim
    b = None if bias is None else _channel_view(bias, nd, channel_axis)
    out = apply(acc, conv, scales=(sx, _channel_view(ws, nd, channel_axis), sy), bias=b, zero_point=zy,
                qmin=lo, qmax=hi, name="the accumulator")
    return out.astype(integer_dtype_for(lo, hi))


def linear(xq, x_scale, x_zero_point, wq, w_scale, w_zero_point, bias, y_scale, y_zero_point, *, axis=None,
           qmin=None, qmax=None, fmt=None, convention="fbgemm"):
    """A quantized linear layer: ``y = requantize(sum_k (xq - zx)(wq[n] - zw[n]), bias)`` under a convention.

    Formula: the exact int32 accumulator ``acc[..., n] = sum_k (xq[..., k] - zx) * (wq[n, k] - zw[n])``
    (``wq`` is ``(N, K)`` as in torch), then the convention's requantization (``rq.ops.conventions``)
    with multiplier ``s_x * s_w[n] / s_y``:

    * ``fbgemm`` (torch's x86 ``quantized.linear``): ``u = f32(f32(s_x) * f32(s_w))``,
      ``m = f32(u / f32(s_y))``, ``y = clamp(rne(f32(f32(f32(acc) + f32(f32(bias) / u)) * m)) + zy)``,
      every step a float32 operation; a float32 product at or beyond 2**31 becomes INT32_MIN first.
    * ``exact``: ``clamp(rne((acc * s_x * s_w + bias) / s_y) + zy)`` in real numbers.
    * ``onnx``, ``onnxruntime``, ``xnnpack``, ``gemmlowp``, ``tflite``: as :func:`requantize`, with an
      int32 ``bias`` (codes at scale ``s_x * s_w``) added to the accumulator.

    ``bias`` is None, a float array (real values; fbgemm and exact) or integer codes (every row).
    Per-channel weights: ``axis=0`` with ``w_scale`` (and optionally ``w_zero_point``) of length N.
    The output range is ``qmin``/``qmax`` or ``fmt``, else ``y_zero_point``'s dtype when it has one,
    else ``xq``'s; a fused ReLU is ``qmin=y_zero_point``. An accumulator outside int32 is a
    ValueError (except under ``exact``).

    >>> import numpy as np, refquant as rq
    >>> x = np.uint8([[120, 140, 128]]); w = np.int8([[10, -20, 30], [1, 2, 3]])
    >>> rq.ops.linear(x, 0.1, 128, w, 0.05, 0, np.float32([0.5, -1.0]), 0.2, 100).tolist()
    [[94, 95]]
    """
    conv = row(convention)
    x = codes(xq, "xq")
    w = codes(wq, "wq")
    if x.ndim < 1 or w.ndim != 2 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"xq (..., K) and wq (N, K) do not match: shapes {x.shape} and {w.shape}")
    sx, ws, wz, sy, zy, b, lo, hi = _qparams(x, x_scale, w, w_scale, w_zero_point, axis, bias, y_scale,
                                             y_zero_point, qmin, qmax, fmt)
    zx = zero_point(x_zero_point, x.dtype, "x_zero_point")  # one per tensor
    epilogue = _fused(conv, sx, ws, sy, b, zy, lo, hi, w.shape[0])
    rows = x.reshape(-1, x.shape[-1])
    if epilogue is not None and _int8.applies(rows, w.T):
        out = _checked(_int8.matmul(rows, w.T, zx, wz, epilogue, integer_dtype_for(lo, hi)))
        return out.reshape(x.shape[:-1] + (w.shape[0],))
    acc = _matmul_acc(x, w.T, x_zero_point, wz, names=("x", "w"))
    return _finish(acc, conv, sx, ws, sy, b, zy, lo, hi, acc.ndim - 1)


def conv2d(xq, x_scale, x_zero_point, wq, w_scale, w_zero_point, bias, y_scale, y_zero_point, *, stride=1,
           padding=0, dilation=1, groups=1, axis=None, qmin=None, qmax=None, fmt=None, convention="fbgemm"):
    """A quantized 2-D convolution (NCHW, torch's arguments) with one convention's requantization.

    Formula: the exact int32 accumulator of ``(xq - zx)`` (zero padded, i.e. ``xq`` padded with
    ``zx``) convolved with ``(wq - zw[m])``, ``wq`` of shape ``(M, C/groups, kh, kw)``, then the
    requantization of :func:`linear` per output channel ``m`` (channel axis 1 of the output).
    ``stride``, ``padding``, ``dilation`` are an int or a pair; padding is symmetric. Under
    ``fbgemm``, a depthwise convolution that FBGEMM runs with its depthwise kernels (groups == C,
    C % 8 == 0, M = C or 2C, 3x3/5x5/7x7 with padding (k-1)/2, stride 1 or 2, no dilation,
    uint8 x int8) adds the products of consecutive taps in pairs saturated to int16, as those
    kernels do.

    >>> import numpy as np, refquant as rq
    >>> x = np.full((1, 1, 3, 3), 130, np.uint8); w = np.ones((2, 1, 2, 2), np.int8)
    >>> rq.ops.conv2d(x, 0.5, 128, w, 0.25, 0, None, 0.1, 0).tolist()
    [[[[10, 10], [10, 10]], [[10, 10], [10, 10]]]]
    """
    conv = row(convention)
    x = codes(xq, "xq")
    w = codes(wq, "wq")
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"xq must be (N, C, H, W) and wq (M, C/groups, kh, kw); "
                         f"got shapes {x.shape} and {w.shape}")
    pad = _pair(padding, "padding", 0)
    geo = geometry(x.shape, w.shape, strides=_pair(stride, "stride", 1),
                   dilations=_pair(dilation, "dilation", 1), pads=pad + pad, group=groups)
    sx, ws, wz, sy, zy, b, lo, hi = _qparams(x, x_scale, w, w_scale, w_zero_point, axis, bias, y_scale,
                                             y_zero_point, qmin, qmax, fmt)
    if conv.accumulate == "fbgemm_depthwise" and takes_depthwise_path(x, w, geo):
        acc = depthwise_pair_acc(x, w, x_zero_point, wz, geo, names=("x", "w"))
    else:
        epilogue = _fused(conv, sx, ws, sy, b, zy, lo, hi, w.shape[0])
        if epilogue is not None and _int8.applies_conv(x, w, geo.group):
            x, w, zx, wz = conv_inputs(x, w, x_zero_point, wz, geo, names=("x", "w"))
            return _checked(_int8.conv2d(x, w, zx, wz, geo, epilogue, integer_dtype_for(lo, hi)))
        acc = conv_acc(x, w, x_zero_point, wz, geo, names=("x", "w"))
    return _finish(acc, conv, sx, ws, sy, b, zy, lo, hi, 1)


def _pair(v, name, minimum):
    return integer_tuple(v, 2, name, minimum, minimum)


def qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point, *,
                   convention="onnx"):
    """ONNX QLinearMatMul: ``y = requantize((a - za) @ (b - zb))`` with multiplier ``s_a * s_b / s_y``.

    Formula (``convention="onnx"``, as ``onnx.reference`` computes): the exact int32 product, then
    ``m = f32(f32(s_a * s_b) / s_y)``, ``y = clamp(rne(f64(f64(f64(acc) * m) + zy)))`` to
    ``y_zero_point``'s dtype. ``s_a``/``za`` are scalars or one per row of ``a`` (M), ``s_b``/``zb``
    scalars or one per column of ``b`` (N). Any other row of ``rq.ops.conventions`` may be named.
    ``y_zero_point``'s dtype (a NumPy integer) is the output's; a Python int gives ``a``'s dtype.

    >>> import numpy as np, refquant as rq
    >>> a = np.uint8([[208, 236], [0, 255]]); b = np.uint8([[152, 51], [108, 80]])
    >>> rq.ops.qlinear_matmul(a, np.float32(0.0066), np.uint8(113), b, np.float32(0.0071), np.uint8(114),
    ...                       np.float32(0.0107), np.uint8(118)).tolist()
    [[131, 73], [95, 128]]
    """
    conv = row(convention)
    av, bv = codes(a, "a"), codes(b, "b")
    if av.ndim < 2 or bv.ndim < 2:
        raise ValueError(f"a and b must have at least two dimensions; got shapes {av.shape} and {bv.shape}")
    m, n = av.shape[-2], bv.shape[-1]
    sa = _scale(a_scale, "a_scale", m, " (one per row of a)")
    sb = _scale(b_scale, "b_scale", n, " (one per column of b)")
    sy = _scale(y_scale, "y_scale")
    lo, hi = _out_range(None, None, None, y_zero_point, av.dtype)
    zy = _zero_point_in(y_zero_point, lo, hi, "y_zero_point")
    acc = _matmul_acc(av, bv, a_zero_point, b_zero_point)
    sa = sa.reshape(-1, 1) if sa.ndim else sa
    out = apply(acc, conv, scales=(sa, sb, sy), zero_point=zy, qmin=lo, qmax=hi, name="the accumulator")
    return out.astype(integer_dtype_for(lo, hi))


def qlinear_conv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B=None, *,
                 auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None,
                 convention="onnx"):
    """ONNX QLinearConv: an exact integer convolution, ``B`` (int32) added, then requantization.

    Formula (``convention="onnx"``): ``acc`` as :func:`conv_integer` plus ``B[m]``, then
    ``m = f32(f32(s_x * s_w[m]) / s_y)``, ``y = clamp(rne(f64(f64(f64(acc) * m) + zy)))`` to
    ``y_zero_point``'s dtype. ``w_scale``/``w_zero_point`` are scalars or one per output channel;
    the keywords are ONNX's attributes (N-D).

    >>> import numpy as np, refquant as rq
    >>> x = np.full((1, 1, 2, 2), 10, np.uint8); w = np.int8([[[[1, -1], [2, 0]]]])
    >>> rq.ops.qlinear_conv(x, np.float32(0.5), np.uint8(0), w, np.float32(0.5), np.int8(0),
    ...                     np.float32(1.0), np.uint8(3), np.int32([4])).tolist()
    [[[[9]]]]
    """
    conv = row(convention)
    xv, wv = codes(x, "x"), codes(w, "w")
    geo = geometry(xv.shape, wv.shape, auto_pad=auto_pad, dilations=dilations, group=group,
                   kernel_shape=kernel_shape, pads=pads, strides=strides)
    mch = wv.shape[0]
    sx, sy = _scale(x_scale, "x_scale"), _scale(y_scale, "y_scale")
    ws = _scale(w_scale, "w_scale", mch, " (one per output channel)")
    lo, hi = _out_range(None, None, None, y_zero_point, xv.dtype)
    zy = _zero_point_in(y_zero_point, lo, hi, "y_zero_point")
    b = _bias(B, mch, "B")
    if b is not None and b.dtype.kind not in "iu":
        raise TypeError(f"B must be int32; got dtype {b.dtype}")
    acc = conv_acc(xv, wv, x_zero_point, w_zero_point, geo)
    return _finish(acc, conv, sx, ws, sy, b, zy, lo, hi, 1)
