"""FBGEMM's depthwise convolution sums: u8 x i8 products added in pairs saturated to int16.

FBGEMM's depthwise kernels multiply raw codes with ``vpmaddubsw``, which adds the products of two
consecutive kernel taps (row-major over (kh, kw), an odd last tap paired with zero) and
saturates that pair sum to int16; the pair sums are then added exactly in int32 and the zero
points are corrected afterwards with exact row and column sums:

``acc = sum_pairs sat16(x[t0]*w[t0] + x[t1]*w[t1]) - zx * sum_t w[t] - zw * sum_t x[t] + T * zx * zw``

where ``x`` is the input padded with ``zx`` and ``T`` the number of taps. The kernels are taken
(measured with torch 2.13's FBGEMM) for a 2-D convolution with groups == C, C % 8 == 0, M = C
or 2C, a square 3x3, 5x5 or 7x7 kernel padded by (k - 1) / 2 on every side, strides 1 or 2 and
dilation 1, on uint8 input and int8 weights; other convolutions take FBGEMM's GEMM path.
"""

from __future__ import annotations

import numpy as np

from ._accumulate import codes, zero_point
from ._conv import ConvGeometry, check_shapes


def takes_depthwise_path(x: np.ndarray, w: np.ndarray, geo: ConvGeometry) -> bool:
    c, m = x.shape[1], w.shape[0]
    return (x.ndim == 4 and x.dtype == np.uint8 and w.dtype == np.int8 and geo.group == c and c % 8 == 0
            and m in (c, 2 * c) and w.shape[2] == w.shape[3] and w.shape[2] in (3, 5, 7)
            and all(s in (1, 2) for s in geo.strides) and all(d == 1 for d in geo.dilations)
            and all(p == (w.shape[2] - 1) // 2 for p in geo.pads))


def depthwise_pair_acc(x, w, x_zero_point, w_zero_point, geo: ConvGeometry, names=("x", "w")) -> np.ndarray:
    """The int64 sums FBGEMM's depthwise kernels compute (see the module notes)."""
    x, w = codes(x, names[0]), codes(w, names[1])
    check_shapes(x, w, geo.group, names)
    zx = int(zero_point(x_zero_point, x.dtype, f"{names[0]}_zero_point"))
    m = w.shape[0]
    zw = np.broadcast_to(zero_point(w_zero_point, w.dtype, f"{names[1]}_zero_point", m,
                                    " (one per output channel)"), (m,)).reshape(1, m, 1, 1)
    n, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    (sh, sw), (p0, p1, p2, p3) = geo.strides, geo.pads
    xp = np.full((n, c, h + p0 + p2, wd + p1 + p3), zx, np.int64)
    xp[:, :, p0:p0 + h, p1:p1 + wd] = x
    xp = np.repeat(xp, m // c, axis=1)  # output channel j reads input channel j // (M / C)
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    taps = [xp[:, :, p:p + (oh - 1) * sh + 1:sh, q:q + (ow - 1) * sw + 1:sw]
            for p in range(kh) for q in range(kw)]
    wt = w.astype(np.int64).reshape(m, kh * kw)
    prods = [t * wt[None, :, i, None, None] for i, t in enumerate(taps)]
    if len(prods) % 2:
        prods.append(np.zeros_like(prods[0]))
    raw = sum(np.clip(prods[i] + prods[i + 1], -(2**15), 2**15 - 1) for i in range(0, len(prods), 2))
    row_sum = sum(taps)
    col_sum = wt.sum(axis=1).reshape(1, m, 1, 1)
    return raw - zx * col_sum - zw * row_sum + kh * kw * zx * zw
