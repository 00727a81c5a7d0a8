"""Timing helpers shared by the benchmark scripts (``python benchmarks/bench_*.py`` puts this
folder on ``sys.path``)."""

from __future__ import annotations

import time


def best(fn, repeat=7):
    """Fastest of ``repeat`` single runs of ``fn`` after one warm-up call (which compiles the
    kernels), in seconds."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def best_pair(fn_a, fn_b, repeat):
    """Best-of-``repeat`` times of two functions run alternately (a load that comes and goes hits
    both alike), in seconds."""
    fn_a(), fn_b()
    times_a, times_b = [], []
    for _ in range(repeat):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return min(times_a), min(times_b)


def fwd_bwd(op, x, g):
    """A function running ``op`` forward and backward (gradient ``g``) on a fresh leaf copy of the
    tensor ``x``."""

    def run():
        xr = x.detach().requires_grad_()
        op(xr).backward(g)

    return run
