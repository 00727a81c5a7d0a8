"""Min/max reductions for the observers: NaN propagates (as ``torch.aminmax`` does).

A reduction that meets a NaN returns NaN for both the minimum and the maximum. Between ``-0.0``
and ``+0.0`` the minimum is ``-0.0`` and the maximum ``+0.0`` (torch's own kernels disagree on
which zero they keep; no qparams rule depends on it).

The kernels read the float32 data as int32 bit patterns: ``key(b) = b ^ ((b >> 31) & 0x7fffffff)``
orders the keys of all non-NaN floats as the floats (``-0.0`` just below ``+0.0``) and is its
own inverse, and ``b & 0x7fffffff > 0x7f800000`` is NaN. Integer min/max reductions vectorize
without fast-math (float ones cannot), so one pass runs at memory speed. Per-channel statistics
read the array in place as ``(outer, channels, inner)`` (C order): long ``inner`` spans are
reduced one channel per thread; short ones (the channel axis last: ``inner == 1``) keep a running
min/max per column while the rows stream past in order, the columns split among threads.
"""

import numpy as np

from ._jit import bits_to_f32, kernel, prange, sized_kernel

_LOW31 = np.int32(0x7FFFFFFF)
_INF_BITS = np.int32(0x7F800000)
_KEY_MAX = np.int32(2**31 - 1)
_KEY_MIN = np.int32(-(2**31))
SPAN_MIN_INNER = 64  # below this, a channel's spans are too short for one thread each


@kernel
def _key(b):
    """The order-preserving int32 key of float32 bits ``b`` (also the inverse map)."""
    return np.int32(b ^ np.int32(np.int32(b >> 31) & _LOW31))


@kernel
def _minmax_keys(x, start, stop):
    """(min key, max key, max |bits|) of int32 bit patterns ``x[start:stop]``."""
    kmin = _KEY_MAX
    kmax = _KEY_MIN
    amax = np.int32(0)
    for i in range(start, stop):
        b = x[i]
        key = _key(b)
        kmin = min(kmin, key)
        kmax = max(kmax, key)
        amax = max(amax, np.int32(b & _LOW31))
    return kmin, kmax, amax


@kernel
def _decode(kmin, kmax, amax):
    """float32 (min, max) from the keys; both NaN when ``amax`` is a NaN's bits."""
    if amax > _INF_BITS:
        return np.float32(np.nan), np.float32(np.nan)
    return bits_to_f32(_key(kmin)), bits_to_f32(_key(kmax))


@kernel
def _aminmax_bits(x):
    kmin, kmax, amax = _minmax_keys(x, 0, x.shape[0])
    return _decode(kmin, kmax, amax)


def aminmax(x):
    """(min, max) of a non-empty 1-D float32 array as float32; both NaN when any element is.
    Serial: one pass is memory-bound, and thread start-up costs more than it saves at 10**6
    elements."""
    return _aminmax_bits(np.ascontiguousarray(x, np.float32).view(np.int32))


@sized_kernel
def _spans(x, out_min, out_max):
    """Per channel ``c``: reduce the contiguous spans ``x[o, c, :]`` (int32 bits) over all ``o``."""
    outer, channels, inner = x.shape
    for c in prange(channels):
        kmin = _KEY_MAX
        kmax = _KEY_MIN
        amax = np.int32(0)
        for o in range(outer):
            a, b, n = _minmax_keys(x[o, c], 0, inner)
            kmin = min(kmin, a)
            kmax = max(kmax, b)
            amax = max(amax, n)
        out_min[c], out_max[c] = _decode(kmin, kmax, amax)


@sized_kernel
def _columns(x, col_min, col_max):
    """Per column ``j`` of a C-contiguous 2-D int32 (bits) ``x``: running keys over the rows,
    the columns split into contiguous blocks, one per thread."""
    rows, cols = x.shape
    blocks = max(1, min(cols // 256, 64))
    for blk in prange(blocks):
        j0 = blk * cols // blocks
        n = (blk + 1) * cols // blocks - j0
        kmin = np.full(n, _KEY_MAX, np.int32)
        kmax = np.full(n, _KEY_MIN, np.int32)
        amax = np.zeros(n, np.int32)
        for r in range(rows):
            row = x[r, j0:j0 + n]
            for j in range(n):
                b = row[j]
                key = _key(b)
                kmin[j] = min(kmin[j], key)
                kmax[j] = max(kmax[j], key)
                amax[j] = max(amax[j], np.int32(b & _LOW31))
        for j in range(n):
            col_min[j0 + j], col_max[j0 + j] = _decode(kmin[j], kmax[j], amax[j])


@kernel
def _fold_inner(col_min, col_max, channels, inner, out_min, out_max):
    """Channel ``c`` of ``channels * inner`` float32 column statistics: NaN if any is NaN."""
    for c in range(channels):
        mn = np.float32(np.inf)
        mx = np.float32(-np.inf)
        nan = False
        for i in range(c * inner, (c + 1) * inner):
            a, b = col_min[i], col_max[i]
            nan = nan or a != a
            mn = a if a < mn else mn
            mx = b if b > mx else mx
        out_min[c] = np.float32(np.nan) if nan else mn
        out_max[c] = np.float32(np.nan) if nan else mx


def aminmax_axis(x, axis):
    """Per-channel ``(min, max)`` float32 arrays of a C-contiguous float32 ``x`` along ``axis``
    (``0 <= axis < x.ndim``), read in place (no moved or transposed copy). Every channel must
    hold at least one element."""
    channels = x.shape[axis]
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    inner = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
    bits = np.ascontiguousarray(x, np.float32).view(np.int32)
    out_min = np.empty(channels, np.float32)
    out_max = np.empty(channels, np.float32)
    if inner >= SPAN_MIN_INNER or outer == 1:
        _spans(bits.size, bits.reshape(outer, channels, inner), out_min, out_max)
        return out_min, out_max
    flat = bits.reshape(outer, channels * inner)
    if inner == 1:
        _columns(bits.size, flat, out_min, out_max)
        return out_min, out_max
    col_min = np.empty(channels * inner, np.float32)
    col_max = np.empty(channels * inner, np.float32)
    _columns(bits.size, flat, col_min, col_max)
    _fold_inner(col_min, col_max, channels, inner, out_min, out_max)
    return out_min, out_max
