"""torch.ao HistogramObserver's arithmetic, op by op in float32.

Every ``f32`` operation below takes float32 operands and rounds once, as torch's separate
elementwise kernels do; ``fma32`` is used exactly where torch's CPU ``linspace`` contracts (its
AVX2/AVX512 kernels; the ``fma`` argument), and sums follow the cascade order of ``width``-lane
vectors.
"""


import numpy as np

from ._jit import fma32, kernel

f32 = np.float32


@kernel
def _mul_add(a, b, c, fma):
    """``fma(a, b, c)`` (one rounding) or ``f32(f32(a * b) + c)``."""
    return fma32(a, b, c) if fma else f32(f32(a * b) + c)


@kernel
def linspace32(start, end, steps, fma):
    """torch.linspace(start, end, steps) for float32 on a CPU:
    ``step = f32(f32(end - start) / f32(steps - 1))``; ``step * i + start`` for the first
    half, ``-step * (steps - 1 - i) + end`` for the second, each a fused multiply-add when
    ``fma`` (torch's AVX2/AVX512 kernels), else a float32 product and sum (its DEFAULT kernels)."""
    out = np.empty(steps, np.float32)
    if steps == 1:
        out[0] = start
        return out
    step = f32(f32(end - start) / f32(steps - 1))
    half = steps // 2
    for i in range(steps):
        if i < half:
            out[i] = _mul_add(step, f32(i), start, fma)
        else:
            out[i] = _mul_add(-step, f32(steps - 1 - i), end, fma)
    return out


@kernel
def histc_edges(lo, hi):
    """torch.histc's outer edges: (lo, hi); when equal, widened in float64 to the farther of
    ``lo - 1`` and lo's float32 neighbour below (``hi + 1`` and hi's neighbour above; at +-FLT_MAX
    the neighbour is itself), then rounded to float32."""
    if lo == hi:
        below = np.float64(np.nextafter(f32(lo), f32(-3.4028234663852886e38)))
        above = np.float64(np.nextafter(f32(hi), f32(3.4028234663852886e38)))
        return f32(min(below, np.float64(lo) - 1.0)), f32(max(above, np.float64(hi) + 1.0))
    return lo, hi


@kernel
def _bin_of(v, left, fb, den, bins):
    if den == 0:  # collapsed edges (|v| >= 2**25): 0/0, whose x86 result in torch is the middle
        return bins // 2
    q = f32(f32(f32(v - left) * fb) / den)
    if not q < 9.2e18:  # an overflowed product (inf, NaN): torch's int64 cast gives INT64_MIN,
        return 0        # an index whose byte offset wraps to bin 0
    pos = int(q)
    if pos == bins:
        pos -= 1
    return pos


@kernel
def histc(x, bins, lo, hi, fma):
    """torch.histc(x, bins, lo, hi) on float32 ``x``: int64 counts. The edges are the ends of
    ``linspace32`` over the (widened) range; NaN and values outside them are skipped; the bin is
    ``int(f32(f32(f32(x - left) * bins) / f32(right - left)))``, the last one including its
    right edge."""
    left, right = histc_edges(lo, hi)
    edges = linspace32(left, right, bins + 1, fma)
    left = edges[0]
    right = edges[bins]
    fb = f32(bins)
    den = f32(right - left)
    out = np.zeros(bins, np.int64)
    for i in range(x.shape[0]):
        v = x[i]
        if v >= left and v <= right:
            out[_bin_of(v, left, fb, den, bins)] += 1
    return out


@kernel
def upscale(hist, omin, omax, nmin, nmax, rate, fma):
    """HistogramObserver._upscale_histogram: the old histogram's mass moved to the new range."""
    bins = hist.shape[0]
    fine = bins * rate
    bin_size = f32(f32(omax - omin) / f32(fine))
    half = f32(f32(0.5) * bin_size)
    mids = linspace32(omin, omax, fine + 1, fma)
    edges = linspace32(nmin, nmax, bins + 1, fma)
    out = np.zeros(bins, np.float32)
    for j in range(fine):
        m = f32(mids[j] + half)
        # bucketize(right=True) - 1, clipped to [0, bins - 1]: ATen's upper-bound search, which
        # steps right unless edge > m, so a NaN edge or midpoint (an overflowed range) steps right
        lo = 0
        hi = bins + 1
        while lo < hi:
            mid = lo + ((hi - lo) >> 1)
            if not edges[mid] > m:
                lo = mid + 1
            else:
                hi = mid
        b = min(max(lo - 1, 0), bins - 1)
        out[b] = f32(out[b] + f32(hist[j // rate] / f32(rate)))
    return out


@kernel
def _floor_div(a, b):
    """torch.div(a, b, rounding_mode='floor') in float32 (Python's floor-division rule)."""
    if b == 0:  # a / 0 (Numba would raise where IEEE gives inf or NaN)
        if a == 0 or a != a:
            return f32(np.nan)
        return f32(np.inf) if (a > 0) == (np.copysign(f32(1), b) > 0) else f32(-np.inf)
    mod = f32(np.fmod(a, b))
    div = f32(f32(a - mod) / b)
    if mod != 0 and (b < 0) != (mod < 0):
        div = f32(div - f32(1))
    if div != 0:
        fl = f32(np.floor(div))
        if f32(div - fl) > f32(0.5):
            fl = f32(fl + f32(1))
        return fl
    return f32(np.copysign(f32(0), f32(a / b)))


@kernel
def _cube_diff(e, b):
    return f32(f32(f32(f32(e * e) * e) - f32(f32(b * b) * b)) / f32(3))


@kernel
def _ceil_log2(v):
    """c10 ``CeilLog2``: the smallest ``k`` with ``2**k >= v`` (0 for ``v <= 1``)."""
    k = 0
    while (1 << k) < v:
        k += 1
    return k


@kernel
def _add_rows(acc, x, start, stop, width):
    """Add rows ``start`` to ``stop - 1`` (each 4 vectors of ``width`` lanes) of ``x``, in order,
    into the level-0 accumulators; returns ``stop``."""
    for i in range(start, stop):
        for k in range(4):
            base = (i * 4 + k) * width
            for lane in range(width):
                acc[0, k, lane] = f32(acc[0, k, lane] + x[base + lane])
    return stop

@kernel
def torch_sum32(x, width):
    """``torch.sum`` of a contiguous 1-D float32 array on CPU, in torch's order and precision.

    ATen's ``cascade_sum`` (``SumKernel.cpp``) with float32 accumulators: ``x`` is read as
    ``m = n // width`` vectors of ``width`` lanes (``Vectorized<float>::size()``: 16 on an AVX512
    build, 8 otherwise); ``row_sum`` splits them into 4 interleaved rows that ``multi_row_sum``
    adds with a 4-level cascade of ``2**max(4, CeilLog2(m // 4) // 4)``-vector chunks, adds the
    leftover vectors to row 0 and rows 1..3 to row 0; the result is ``0 + x[m*width:]`` (in
    order) followed by the ``width`` lanes of row 0 (in order). Every ``+`` is float32. Fewer
    than ``width`` elements take the scalar path (``width = 1``). torch splits sums of more than
    32768 elements (its grain size) among threads, which this does not model."""
    n = x.shape[0]
    if n < width:
        width = 1
    m = n // width
    rows = m // 4
    power = max(4, _ceil_log2(rows) // 4)
    step = 1 << power
    mask = step - 1
    acc = np.zeros((4, 4, width), np.float32)
    i = 0
    while i + step <= rows:
        i = _add_rows(acc, x, i, i + step, width)
        for j in range(1, 4):
            for k in range(4):
                for lane in range(width):
                    acc[j, k, lane] = f32(acc[j, k, lane] + acc[j - 1, k, lane])
                    acc[j - 1, k, lane] = f32(0)
            if (i & (mask << (j * power))) != 0:
                break
    i = _add_rows(acc, x, i, rows, width)
    for j in range(1, 4):
        for k in range(4):
            for lane in range(width):
                acc[0, k, lane] = f32(acc[0, k, lane] + acc[j, k, lane])
    for v in range(rows * 4, m):
        for lane in range(width):
            acc[0, 0, lane] = f32(acc[0, 0, lane] + x[v * width + lane])
    for k in range(1, 4):
        for lane in range(width):
            acc[0, 0, lane] = f32(acc[0, 0, lane] + acc[0, k, lane])
    total = f32(0)
    for t in range(m * width, n):
        total = f32(total + x[t])
    for lane in range(width):
        total = f32(total + acc[0, 0, lane])
    return total


@kernel
def quantization_error(hist, vmin, vmax, start, end, dst_bins, width):
    """HistogramObserver._compute_quantization_error(start, end) (L2 norm): the float32 norm of
    each source bin, op by op, then :func:`torch_sum32` of them (returned as float64)."""
    bins = hist.shape[0]
    bw = (np.float64(vmax) - np.float64(vmin)) / bins
    dbw = bw * (end - start + 1) / dst_bins
    if dbw == 0.0:
        return 0.0
    bw32 = f32(bw)
    dbw32 = f32(dbw)
    h32 = f32(dbw / 2)
    nh32 = f32(-dbw / 2)
    top = f32(dst_bins - 1)
    mid_norm = _cube_diff(h32, nh32)
    norms = np.empty(bins, np.float32)
    for i in range(bins):
        sb = f32(f32(i - start) * bw32)
        se = f32(sb + bw32)
        db = min(max(_floor_div(sb, dbw32), f32(0)), top)
        de = min(max(_floor_div(se, dbw32), f32(0)), top)
        dbc = f32(f32(db + f32(0.5)) * dbw32)
        dens = f32(hist[i] / bw32)
        norm = f32(dens * _cube_diff(h32, f32(sb - dbc)))
        k = f32(f32(de - db) - f32(1))
        norm = f32(norm + f32(k * f32(dens * mid_norm)))
        dec = f32(f32(de * dbw32) + h32)
        norm = f32(norm + f32(dens * _cube_diff(f32(se - dec), nh32)))
        norms[i] = norm
    return np.float64(torch_sum32(norms, width))


@kernel
def param_search(hist, vmin, vmax, dst_bins, width):
    """HistogramObserver._non_linear_param_search: the (new_min, new_max) float32 pair
    (``width``: torch's float32 vector width, see :func:`torch_sum32`)."""
    bins = hist.shape[0]
    csum = np.empty(bins, np.float32)
    acc = 0.0
    for i in range(bins):  # torch.cumsum accumulates float32 in double
        acc += np.float64(hist[i])
        csum[i] = f32(acc)
    total = np.float64(torch_sum32(hist, width))
    step = 1e-5
    alpha = 0.0
    beta = 1.0
    start = 0
    end = bins - 1
    norm_min = np.inf
    while alpha < beta:
        na = alpha + step
        nb = beta - step
        lo_t = f32(na * total)
        hi_t = f32(nb * total)
        l = start
        while l < end and csum[l] < lo_t:
            l += 1
        r = end
        while r > start and csum[r] > hi_t:
            r -= 1
        ns = start
        ne = end
        if (l - start) > (end - r):
            ns = l
            alpha = na
        else:
            ne = r
            beta = nb
        if ns == start and ne == end:
            continue
        norm = quantization_error(hist, vmin, vmax, ns, ne, dst_bins, width)
        if norm > norm_min:
            break
        norm_min = norm
        start = ns
        end = ne
    bw = f32(f32(vmax - vmin) / f32(bins))
    new_min = f32(vmin + f32(bw * f32(start)))
    new_max = f32(vmin + f32(bw * f32(end + 1)))
    return new_min, new_max
