"""Exact sums of 8-bit code products on integer SIMD (x86 AVX-512 VNNI), with zero points as rank-1 terms.

For codes ``a`` (M, K) and ``b`` (K, N) of 8 bits and zero points ``za`` (per row) and ``zb``
(per column):

``sum_k (a[i,k] - za[i]) * (b[k,j] - zb[j]) = S[i,j] - zb[j]*R[i] - za[i]*C[j] + K*za[i]*zb[j]``

with ``S = a @ b`` on the raw codes, ``R[i] = sum_k a[i,k]`` and ``C[j] = sum_k b[k,j]``; the
identity holds in the integers, and every term on the right is formed in int64 (each magnitude is
below K * 2**16, far from 2**63). ``vpdpbusd`` multiplies an unsigned byte by a signed byte, so
int8 ``a`` is first moved to uint8 (``a + 128``, a flip of the top bit) and uint8 ``b`` to int8
(``b - 128``), with the same shift applied to the zero point, which leaves every difference
``a - za``, ``b - zb`` unchanged.

``S`` is accumulated in int32 lanes, one lane per output: each ``vpdpbusd`` adds four products
of magnitude at most 255 * 128 = 32640 to a lane, without saturation. A chunk of at most
65792 = 4 * 16448 terms keeps every partial sum, in any order, below 65792 * 32640 = 2147450880
< 2**31, so no int32 operation wraps and each chunk's sum is exact; longer rows are split into
such chunks and the chunk sums added in int64. K is padded to a multiple of 4 with zeros on both
sides (zero products) and the row counts to multiples of 4 and 64 (rows that are never stored).

The path is taken only where Numba compiles for a CPU with AVX-512 VNNI; elsewhere the float GEMM
of ``_accumulate`` computes the same integers. The result never depends on the path.
"""

from __future__ import annotations

import numpy as np

from .._kernels import _ops as kernels

_ENABLED: bool | None = None  # decided on first use; tests set it to compare both paths


def enabled() -> bool:
    global _ENABLED
    if _ENABLED is None:
        _ENABLED = kernels.vnni_available()
    return _ENABLED


def applies(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the 8-bit integer path takes a product of codes ``a`` (..., M, K) and ``b`` (..., K, N)."""
    return a.dtype.itemsize == b.dtype.itemsize == 1 and min(a.shape[-2:] + b.shape[-1:]) > 0 and enabled()


def applies_conv(x: np.ndarray, w: np.ndarray, group: int) -> bool:
    """Whether the 8-bit integer path takes a 2-D convolution (not one of many small groups)."""
    return (x.ndim == 4 and x.dtype.itemsize == w.dtype.itemsize == 1 and x.size > 0 and w.size > 0
            and (group == 1 or w[0].size >= 32) and enabled())


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def unsigned(q: np.ndarray) -> np.ndarray:
    """8-bit codes ``q`` (rows, K) as uint8 (int8 codes + 128: the top bit flipped), C-ordered, rows
    padded to a multiple of 4 and K to a multiple of 4 with zeros."""
    rows, k = q.shape
    shape = (_round_up(rows, kernels.GEMM_ROWS), _round_up(k, 4))
    if q.dtype == np.uint8 and shape == q.shape and q.flags.c_contiguous:
        return q
    out = np.zeros(shape, np.uint8)
    if q.dtype == np.uint8:
        out[:rows, :k] = q
    else:
        np.bitwise_xor(q.view(np.uint8), np.uint8(0x80), out=out[:rows, :k])
    return out


def signed(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-bit codes ``q`` (N, K) as int8 (uint8 codes - 128) in the block kernel's layout, and their
    int64 row sums."""
    n, k = q.shape
    out = np.empty((-(-n // kernels.GEMM_COLS), _round_up(k, 4) // 4, kernels.GEMM_COLS, 4), np.int8)
    sums = np.empty(n, np.int64)
    kernels.pack_s8(q, 128 if q.dtype == np.uint8 else 0, out, sums)
    return out, sums


def shift(z: np.ndarray, dtype: np.dtype, to) -> np.ndarray:
    """The zero point ``z`` (int64) of codes of ``dtype`` once the codes are moved to ``to``."""
    if dtype == np.dtype(to):
        return z
    return z + 128 if np.dtype(to) == np.uint8 else z - 128


def row_sums(p: np.ndarray) -> np.ndarray:
    out = np.empty(p.shape[0], np.int64)
    kernels.row_sums(p, out)
    return out


def _per(z, n: int) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(z, (n,)), np.int64)


def _plain(channels: int) -> tuple:
    """The block kernels' epilogue that stores the sums themselves."""
    zeros = np.zeros(channels, np.float32)
    return False, np.zeros(channels, np.int64), zeros, zeros, False, 0, 0, 0, False


def _run(tasks: int, epilogue, dtype, shape, channels: int):
    """(out, bounds, the kernel's epilogue): int64 sums, or codes of ``dtype`` when an epilogue
    (:func:`refquant.ops._requantize.float32_epilogue` plus zero point, qmin, qmax, int32-indefinite)
    is given."""
    if epilogue is None:
        return np.empty(shape, np.int64), np.empty((tasks, 2), np.int64), _plain(channels)
    return np.empty(shape, dtype), np.empty((tasks, 2), np.int64), (True, *epilogue)


def matmul(a: np.ndarray, b: np.ndarray, za: np.ndarray, zb: np.ndarray, epilogue=None, dtype=None):
    """The exact int64 ``(a - za) @ (b - zb)`` of 8-bit codes (NumPy's matmul shapes, ``za`` scalar
    or one per row of a, ``zb`` scalar or one per column of b); with ``epilogue`` (2-D ``b`` only),
    ``(codes of dtype, (least, largest) sum)`` of the fused float32 requantization instead."""
    if b.ndim == 2:  # stack a's batch into its rows
        m = a.shape[-2]
        rows = a.reshape(-1, a.shape[-1])
        zrows = np.tile(np.broadcast_to(za, (m,)), rows.shape[0] // m)
        out, bounds = _matmul_2d(rows, b, zrows, zb, epilogue, dtype)
        out = out.reshape(a.shape[:-1] + (b.shape[-1],))
        return out if epilogue is None else (out, bounds)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a_b = np.broadcast_to(a, batch + a.shape[-2:])
    b_b = np.broadcast_to(b, batch + b.shape[-2:])
    out = np.empty(batch + (a.shape[-2], b.shape[-1]), np.int64)
    for idx in np.ndindex(*batch):
        out[idx] = _matmul_2d(a_b[idx], b_b[idx], za, zb)[0]
    return out


def _matmul_2d(a, b, za, zb, epilogue=None, dtype=None):
    m, k = a.shape
    n = b.shape[1]
    u = unsigned(a)
    s, cs = signed(b.T)
    tasks = -(-m // 64) * -(-s.shape[0] // 4)
    out, bounds, form = _run(tasks, epilogue, dtype, (m, n), n)
    kernels.gemm_u8s8(u, s, row_sums(u), cs, _per(shift(za, a.dtype, np.uint8), m),
                      _per(shift(zb, b.dtype, np.int8), n), k, form, out, bounds)
    return out, (int(bounds[:, 0].min()), int(bounds[:, 1].max()))


def conv2d(x: np.ndarray, w: np.ndarray, zx: np.ndarray, zw: np.ndarray, geo, epilogue=None, dtype=None):
    """The exact int64 sums of a 2-D convolution of 8-bit codes (``x`` padded with ``zx``), shape
    (N, M, OH, OW): the input as (H, W, C) rows, gathered 64 pixels at a time into (pixel, (kh, kw,
    C/G)) rows and summed, with the module's identity, against the weights reordered to
    (M, (kh, kw, C/G)). With ``epilogue``: ``(codes, (least, largest) sum)`` as :func:`matmul`."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    g, mg = geo.group, m // geo.group
    oh, ow = geo.output_shape((h, wd), (kh, kw))
    zu = int(shift(zx, x.dtype, np.uint8).reshape(-1)[0])
    zs = _per(shift(zw, w.dtype, np.int8), m)
    p0, p1, p2, p3 = geo.pads
    xp = np.full((n, h + p0 + p2, wd + p1 + p3, c), zu, np.uint8)
    inner = xp[:, p0:p0 + h, p1:p1 + wd, :]
    if x.dtype == np.uint8:
        inner[...] = x.transpose(0, 2, 3, 1)
    else:
        np.bitwise_xor(x.view(np.uint8).transpose(0, 2, 3, 1), np.uint8(0x80), out=inner)
    wt = w.transpose(0, 2, 3, 1).reshape(m, cg * kh * kw)
    out, bounds, form = _run(-(-oh * ow // 64), epilogue, dtype, (n, m, oh * ow), m)
    least, largest = 2**63 - 1, -(2**63)
    (sh, sw), (dh, dw) = geo.strides, geo.dilations
    for i in range(g):
        chans, outs = slice(i * cg, (i + 1) * cg), slice(i * mg, (i + 1) * mg)
        s, cs = signed(wt[outs])
        part = (form[0],) + tuple(np.ascontiguousarray(v[outs]) for v in form[1:4]) + form[4:]
        for b in range(n):
            kernels.conv_u8s8(xp[b, :, :, chans], kh, kw, sh, sw, dh, dw, ow, s, cs, zu, zs[outs],
                              cg * kh * kw, part, out[b, outs].T, bounds)
            least, largest = min(least, int(bounds[:, 0].min())), max(largest, int(bounds[:, 1].max()))
    out = out.reshape(n, m, oh, ow)
    return out if epilogue is None else (out, (least, largest))
