"""Exhaustive sweep speed: every float32 pattern (2**32) of fake_quantize against a Numba candidate.

The candidate is the exact convention written as a Numba loop for a float32 scale: the float64
quotient x / s decides every rounding correctly for float32 x and s (a non-tie quotient of two
24-bit significands is at least 2**-25 relative away from a tie, far above float64's 2**-53), and
(q - z) * s is exact in float64 before its single rounding to float32. NaN stays NaN, +-inf
saturate. Swept against ``convention="exact"``; the float16/bfloat16 sweeps use refquant's own
``torch.fake_quantize`` as candidate. Prints seconds, patterns per second and the ratio of the full
sweep's time to the candidate's own time.

    python benchmarks/bench_sweep.py            # full float32 sweep (about a minute or two)
    python benchmarks/bench_sweep.py --quick    # 2**28 patterns, scaled up
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

import refquant as rq
from refquant._kernels._jit import parallel_kernel, prange

SCALE, ZP, QMIN, QMAX = float(np.float32(0.0123)), 3, 0, 255


@parallel_kernel
def _exact_f32(x, s, z, qmin, qmax, out):
    for i in prange(x.size):
        t = np.float64(x[i]) / s
        if math.isnan(t):
            out[i] = np.float32(np.nan)
        else:
            q = min(max(np.rint(t) + z, qmin), qmax)
            out[i] = np.float32((q - z) * s)


def candidate(x):
    out = np.empty_like(x)
    _exact_f32(x, float(np.float32(SCALE)), float(ZP), float(QMIN), float(QMAX), out)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    candidate(np.float32([1.0, np.nan]))  # compile
    for dt in ("float16", "bfloat16"):
        t = time.perf_counter()
        r = rq.golden.sweep(candidate_half(dt), SCALE, ZP, qmin=QMIN, qmax=QMAX, dtype=dt,
                            convention="torch.fake_quantize")
        print(f"{dt}: 65536 patterns in {time.perf_counter() - t:.3f} s, {r.mismatches} mismatches")
    n = 2**28 if args.quick else 2**32
    x = np.arange(2**24, dtype=np.uint32).view(np.float32)
    t = time.perf_counter()
    for _ in range(4):
        candidate(x)
    cand_rate = 4 * 2**24 / (time.perf_counter() - t)
    t = time.perf_counter()
    if args.quick:
        r = _partial_sweep(candidate, n)
    else:
        r = rq.golden.sweep(candidate, SCALE, ZP, qmin=QMIN, qmax=QMAX, dtype=np.float32,
                            progress=True)
    secs = time.perf_counter() - t
    full = secs * 2**32 / n
    print(f"float32: {n} patterns in {secs:.1f} s ({n / secs / 1e6:.0f} M/s); "
          f"full 2**32 sweep {'estimated ' if args.quick else ''}{full:.1f} s; "
          f"{r.mismatches} mismatches")
    print(f"candidate alone: {cand_rate / 1e6:.0f} M/s; sweep / candidate time ratio "
          f"{(n / secs) and cand_rate / (n / secs):.2f}")


def candidate_half(dt):
    def run(x):
        return rq.fake_quantize(x, SCALE, ZP, qmin=QMIN, qmax=QMAX, convention="torch.fake_quantize")
    return run


def _partial_sweep(cand, n):
    """The first n float32 patterns only (for --quick), through the same code path."""
    from refquant.golden import _sweep

    saved = _sweep._PATTERNS[4]
    _sweep._PATTERNS[4] = n
    try:
        return rq.golden.sweep(cand, SCALE, ZP, qmin=QMIN, qmax=QMAX, dtype=np.float32)
    finally:
        _sweep._PATTERNS[4] = saved


if __name__ == "__main__":
    main()
