"""Per-element lookups the element-wise kernels share (inlined into their loops)."""

from ._jit import inline_kernel


@inline_kernel
def group_of(gidx, i):
    """The qparam group of element ``i``: ``gidx[i]``, or 0 for one group (``gidx`` empty)."""
    return gidx[i] if gidx.size > 0 else 0


@inline_kernel
def draw(u, i):
    """The uniform draw of element ``i`` for stochastic rounding (0 when ``u`` is empty)."""
    return u[i] if u.size > 0 else 0.0
