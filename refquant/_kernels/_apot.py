"""APoT projection kernels: nearest level by exact comparison with decision thresholds.

``bounds`` holds ``2**p - 1`` float64 thresholds (the real ones, padded with ``+inf``): element x
gets code ``#{m < top : x >= bounds[m]}``. x is compared in float64 (exact for float32 and
float64 inputs), so the thresholds alone encode the tie rule.

Speed: a bucket table ``hint`` over ``[lo, lo + len(hint) / inv_width)`` guesses the code from
``(x - lo) * inv_width``; the guess is kept only when the two neighbouring thresholds confirm it,
else a branch-free binary search decides. The guess never decides alone, so rounding in the
bucket arithmetic cannot change a code; the guess is clamped into the table, so no input (inf,
extreme alpha) can index outside it.
"""

import numpy as np

from ._jit import kernel


@kernel
def search(xi, bounds, top):
    """Branch-free binary search: the number of thresholds ``<= xi``, at most ``top``."""
    idx = 0
    step = (bounds.size + 1) // 2
    while step > 0:
        idx += step * np.int64(xi >= bounds[idx + step - 1])
        step >>= 1
    return min(idx, top)


@kernel
def code_of(xi, bounds, top, hint, edges, lo, inv_width):
    """The code of the non-NaN float64 ``xi``: the bucket guess when ``edges`` (the thresholds
    between -inf and +inf) confirm it, else the search."""
    t = (xi - lo) * inv_width
    if not t >= 0.0:  # below the table, or NaN from inf * 0: any in-range guess is safe
        t = 0.0
    c = np.int64(hint[np.int64(min(t, hint.size - 1.0))])
    if (xi >= edges[c]) & (xi < edges[c + 1]):
        return c
    return search(xi, bounds, top)


@kernel
def apot_codes(x, bounds, top, hint, edges, lo, inv_width, out):
    """``out[i]`` = code of ``x[i]`` (the caller rejects NaN beforehand)."""
    for i in range(x.size):
        xi = np.float64(x[i])
        out[i] = code_of(xi, bounds, top, hint, edges, lo, inv_width) if xi == xi else 0


@kernel
def apot_fake(x, bounds, top, hint, edges, lo, inv_width, table, out):
    """``out[i] = table[code(x[i])]``; NaN stays NaN."""
    for i in range(x.size):
        xi = np.float64(x[i])
        if xi != xi:
            out[i] = x[i]
        else:
            out[i] = table[code_of(xi, bounds, top, hint, edges, lo, inv_width)]


@kernel
def apot_grad(x, g, bounds, top, hint, edges, lo_bucket, inv_width, unit, alpha, signed, gx, ga):
    """RCF gradients per element, in float64: ``gx = g * [x inside the clip range]`` and
    ``ga = g * (sign(x) outside | unit[code] - x / alpha inside)`` (0 below 0 when unsigned)."""
    lo = -alpha if signed else 0.0
    for i in range(x.size):
        xi = np.float64(x[i])
        gi = np.float64(g[i])
        if xi != xi:
            gx[i] = xi
            ga[i] = xi
        elif xi > alpha:
            gx[i] = 0.0
            ga[i] = gi
        elif xi < lo:
            gx[i] = 0.0
            ga[i] = -gi if signed else 0.0
        else:
            c = code_of(xi, bounds, top, hint, edges, lo_bucket, inv_width)
            gx[i] = gi
            ga[i] = gi * (unit[c] - xi / alpha)


@kernel
def torch_experimental_codes(x, bounds, top, hint, edges, lo, inv_width, levels32, indices,
                             alpha, out):
    """torch.ao experimental APoT codes: clip to [-alpha, alpha], then the first level (ascending)
    whose float32 distance ``f32(|level - x|)`` is minimal; the code is ``indices[level]``.

    The float64 nearest level (ties to smaller magnitude) is never farther in float32 distance than
    its neighbours (rounding is monotone), so walking down over equal distances finds torch's
    first minimum."""
    for i in range(x.size):
        xi = min(max(np.float32(x[i]), -alpha), alpha)
        idx = code_of(np.float64(xi), bounds, top, hint, edges, lo, inv_width)
        best = abs(levels32[idx] - xi)
        while idx > 0 and abs(levels32[idx - 1] - xi) == best:
            idx -= 1
        out[i] = indices[idx]
