"""Min/max reductions for the observers: NaN propagates (as ``torch.aminmax`` does)."""

import numpy as np

from ._jit import kernel


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


@kernel
def aminmax(x):
    """(min, max) of a non-empty 1-D float32 array; both NaN when any element is. Serial: one
    pass is memory-bound, and thread start-up costs more than it saves at 10**6 elements."""
    return _minmax_span(x, 0, x.shape[0])


@kernel
def aminmax_rows(x, out_min, out_max):
    """Row-wise (min, max) of a C-contiguous 2-D float32 array into float32 outputs."""
    for r in range(x.shape[0]):
        mn, mx = _minmax_span(x[r], 0, x.shape[1])
        out_min[r] = mn
        out_max[r] = mx
