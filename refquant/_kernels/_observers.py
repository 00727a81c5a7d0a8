"""Min/max reductions for the observers: NaN propagates (as ``torch.aminmax`` does)."""

import numpy as np

from ._jit import kernel, parallel_kernel, prange

_CHUNK = 1 << 16


@kernel
def _minmax_span(x, start, stop):
    mn = np.inf
    mx = -np.inf
    nan = False
    for i in range(start, stop):
        v = x[i]
        if v < mn:
            mn = v
        if v > mx:
            mx = v
        if v != v:
            nan = True
    if nan:
        return np.nan, np.nan
    return mn, mx


@parallel_kernel
def aminmax(x):
    """(min, max) of a non-empty 1-D float32 array as float64; both NaN when any element is."""
    n = x.shape[0]
    nchunks = (n + _CHUNK - 1) // _CHUNK
    mins = np.empty(nchunks)
    maxs = np.empty(nchunks)
    for c in prange(nchunks):
        mins[c], maxs[c] = _minmax_span(x, c * _CHUNK, min(n, (c + 1) * _CHUNK))
    mn = mins[0]
    mx = maxs[0]
    for c in range(1, nchunks):
        if mins[c] != mins[c] or mn != mn:
            return np.nan, np.nan
        mn = min(mn, mins[c])
        mx = max(mx, maxs[c])
    return mn, mx


@parallel_kernel
def aminmax_rows(x, out_min, out_max):
    """Row-wise (min, max) of a C-contiguous 2-D float32 array into float32 outputs."""
    for r in prange(x.shape[0]):
        mn, mx = _minmax_span(x[r], 0, x.shape[1])
        out_min[r] = mn
        out_max[r] = mx
