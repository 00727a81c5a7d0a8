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
    (best_a, _), (best_b, _) = best_median_pair(fn_a, fn_b, repeat)
    return best_a, best_b


def fwd_bwd(op, x, g):
    """A function running ``op`` forward and backward (gradient ``g``) on a fresh leaf copy of the
    tensor ``x``."""

    def run():
        xr = x.detach().requires_grad_()
        op(xr).backward(g)

    return run


def best_median_pair(fn_a, fn_b, repeat):
    """``[(best, median), (best, median)]`` times of two functions run alternately, in seconds."""
    fn_a(), fn_b()
    times_a, times_b = [], []
    for _ in range(repeat):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return [(min(t), sorted(t)[len(t) // 2]) for t in (times_a, times_b)]


def best_rounds(fns: dict, rounds: int, calls: int) -> dict:
    """Best per-call time of each function over ``rounds`` rounds of ``calls`` calls, the
    functions taking turns within each round (a loaded machine's swings hit all alike)."""
    times = dict.fromkeys(fns, float("inf"))
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name] = min(times[name], (time.perf_counter() - t0) / calls)
    return times
