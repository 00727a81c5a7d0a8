"""Exact integer convolution (ONNX ConvInteger), N-D, as im2col plus the exact GEMM."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _int8
from ._accumulate import accumulator_dtype, centered, codes, exact_matmul, fit, integer_tuple, zero_point

_AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")


@dataclass(frozen=True)
class ConvGeometry:
    """Strides, dilations, pads (begins then ends, ONNX order) and groups of one convolution."""

    strides: tuple
    dilations: tuple
    pads: tuple
    group: int

    def output_shape(self, spatial, kernel):
        n = len(spatial)
        return tuple(
            (spatial[i] + self.pads[i] + self.pads[n + i] - ((kernel[i] - 1) * self.dilations[i] + 1))
            // self.strides[i] + 1
            for i in range(n)
        )


def geometry(x_shape, w_shape, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
             pads=None, strides=None) -> ConvGeometry:
    """Resolve ONNX's convolution attributes for an input of ``x_shape`` and weights of ``w_shape``."""
    if len(x_shape) < 3 or len(w_shape) != len(x_shape):
        raise ValueError(f"x must be (N, C, spatial...) and w (M, C/group, kernel...) of the same rank; "
                         f"got shapes {tuple(x_shape)} and {tuple(w_shape)}")
    n = len(x_shape) - 2
    kernel = tuple(w_shape[2:])
    if kernel_shape is not None and tuple(integer_tuple(kernel_shape, n, "kernel_shape", 1, 1)) != kernel:
        raise ValueError(f"kernel_shape={kernel_shape!r} does not match the weights' shape {tuple(w_shape)}")
    strides = integer_tuple(strides, n, "strides", 1, 1)
    dilations = integer_tuple(dilations, n, "dilations", 1, 1)
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad not in _AUTO_PADS:
        raise ValueError(f"auto_pad must be one of {_AUTO_PADS}; got {auto_pad!r}")
    if auto_pad == "NOTSET":
        pads = integer_tuple(pads, 2 * n, "pads", 0, 0)
    elif pads is not None and any(pads):
        raise ValueError(f"pads must be absent when auto_pad={auto_pad!r}; got {pads!r}")
    elif auto_pad == "VALID":
        pads = (0,) * (2 * n)
    else:
        begin, end = [], []
        for i in range(n):
            extent = (kernel[i] - 1) * dilations[i] + 1
            total = max((-(-x_shape[2 + i] // strides[i]) - 1) * strides[i] + extent - x_shape[2 + i], 0)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        pads = tuple(begin + end)
    group = integer_tuple(group, 1, "group", 1, 1)[0]
    geo = ConvGeometry(strides, dilations, pads, group)
    if any(o < 1 for o in geo.output_shape(x_shape[2:], kernel)):
        raise ValueError(f"the kernel {kernel} (dilations {dilations}) does not fit the padded input "
                         f"{tuple(x_shape[2:])} (pads {pads})")
    return geo


def check_shapes(x: np.ndarray, w: np.ndarray, group: int, names=("x", "w")) -> None:
    if x.ndim < 3 or w.ndim != x.ndim:
        raise ValueError(f"{names[0]} must be (N, C, spatial...) and {names[1]} (M, C/group, kernel...) "
                         f"of the same rank; got shapes {x.shape} and {w.shape}")
    if x.shape[1] % group or w.shape[0] % group or w.shape[1] * group != x.shape[1]:
        raise ValueError(f"channels do not match: {names[0]} has {x.shape[1]}, {names[1]} {w.shape} "
                         f"with group={group}")


def conv_inputs(x, w, x_zero_point, w_zero_point, geo: ConvGeometry, names=("x", "w")):
    """``x``, ``w`` as codes and their zero points (int64), checked against each other."""
    x, w = codes(x, names[0]), codes(w, names[1])
    check_shapes(x, w, geo.group, names)
    zx = zero_point(x_zero_point, x.dtype, f"{names[0]}_zero_point")
    zw = zero_point(w_zero_point, w.dtype, f"{names[1]}_zero_point", w.shape[0], " (one per output channel)")
    return x, w, zx, zw


def conv_acc(x, w, x_zero_point, w_zero_point, geo: ConvGeometry, names=("x", "w")) -> np.ndarray:
    """The exact int64 sums of a convolution of (x - zx) with (w - zw), shape (N, M, out...)."""
    x, w, zx, zw = conv_inputs(x, w, x_zero_point, w_zero_point, geo, names)
    if _int8.applies_conv(x, w, geo.group):
        return _int8.conv2d(x, w, zx, zw, geo)
    xc, xmax = centered(x, zx, 1)
    wc, wmax = centered(w, zw, 0)
    return _conv_centered(xc, wc, xmax, wmax, geo)


def _conv_centered(xc, wc, xmax, wmax, geo: ConvGeometry):
    n_sp = xc.ndim - 2
    kernel = wc.shape[2:]
    batch, channels = xc.shape[:2]
    m, g = wc.shape[0], geo.group
    out_sp = geo.output_shape(xc.shape[2:], kernel)
    pad_width = [(0, 0), (0, 0)] + [(geo.pads[i], geo.pads[n_sp + i]) for i in range(n_sp)]
    xp = np.pad(xc, pad_width) if any(geo.pads) else xc
    # im2col: cols[n, c, kernel offset, out...] = xp[n, c, out * stride + offset * dilation]
    kprod = int(np.prod(kernel))
    cols = np.empty((batch, channels, kprod) + out_sp, xc.dtype)
    for idx, offset in enumerate(np.ndindex(*kernel)):
        window = tuple(slice(offset[i] * geo.dilations[i],
                             offset[i] * geo.dilations[i] + (out_sp[i] - 1) * geo.strides[i] + 1,
                             geo.strides[i]) for i in range(n_sp))
        cols[:, :, idx] = xp[(slice(None), slice(None)) + window]
    cols = cols.reshape(batch, g, (channels // g) * kprod, int(np.prod(out_sp)))  # (N, G, K, P)
    wmat = wc.reshape(1, g, m // g, -1)  # (1, G, M/G, K)
    acc = exact_matmul(wmat, cols, wmax, xmax)  # (N, G, M/G, P)
    return acc.reshape((batch, m) + out_sp)


def conv_integer(x, w, x_zero_point=0, w_zero_point=0, *, auto_pad="NOTSET", dilations=None, group=1,
                 kernel_shape=None, pads=None, strides=None, dtype=np.int32):
    """ONNX ConvInteger: the exact integer convolution of ``x - x_zero_point`` with ``w - w_zero_point``.

    Formula: ``y[n, m, o...] = sum_{c, k...} (xp[n, g*C/G + c, o*s + k*d] - zx) * (w[m, c, k...] - zw[m])``
    where ``xp`` is ``x`` padded with ``zx`` (so padding contributes nothing), ``g`` is the group
    of output channel ``m``. Every term and partial sum is an exact integer. ``x`` is
    ``(N, C, spatial...)`` (NCHW for 2-D), ``w`` is ``(M, C/group, kernel...)``; the keywords are
    ONNX's attributes (``pads`` lists every begin, then every end; ``auto_pad`` is NOTSET, VALID,
    SAME_UPPER or SAME_LOWER). ``x_zero_point`` is a scalar; ``w_zero_point`` a scalar or one per
    output channel. ``dtype`` is the accumulator (int32 or int64): an exact sum outside its
    range is a ValueError.

    >>> import numpy as np, refquant as rq
    >>> x = np.arange(9, dtype=np.uint8).reshape(1, 1, 3, 3); w = np.int8([[[[1, 0], [0, -1]]]])
    >>> rq.ops.conv_integer(x, w, 1, pads=[0, 0, 1, 1]).tolist()
    [[[[-4, -4, 1], [-4, -4, 4], [5, 6, 7]]]]
    """
    xa, wa = codes(x, "x"), codes(w, "w")
    if xa.ndim < 3:
        raise ValueError(f"x must be (N, C, spatial...); got shape {xa.shape}")
    geo = geometry(xa.shape, wa.shape, auto_pad=auto_pad, dilations=dilations, group=group,
                   kernel_shape=kernel_shape, pads=pads, strides=strides)
    acc = conv_acc(xa, wa, x_zero_point, w_zero_point, geo)
    return fit(acc, accumulator_dtype(dtype), "sum")
