"""Affine speed: every convention's fake_quantize against a memory copy, and quantize against
torch's own kernel, in one run.

    python benchmarks/bench_affine.py [--quick]

Times are the best of several runs, on 2**24 float32 elements unless stated. Printed ratios:

- per convention, per-tensor int8 ``fake_quantize`` / ``np.copyto`` of the same array
  (targets: <= 1.5, ``exact`` <= 2), returning a new array, and into an existing one (``out=``,
  the same work as the copy into ``dst``);
- per-channel (axis 0 of 4096 x 4096, float32 scales: the dtype torch's and ONNX's per-channel
  scales have, and the arithmetic of the per-tensor row's Python-float scale) / per-tensor
  (target <= 1.5); with float64 scales too, for information: conventions that promote then
  compute in float64, whose division costs more;
- float16 and bfloat16 inputs / float32 (target <= 2);
- ``quantize`` to int8 under ``torch.quantize`` / ``torch.quantize_per_tensor`` (target <= 1.2);
- first call in a fresh process with a warm Numba cache (target <= 0.5 s) and with an empty one
  (target <= 5 s), with what importing numpy and numba (and its CPU target) alone take.

Also printed: a floor, the fastest a kernel returning a new array can be here (a parallel Numba
loop of four float32 operations writing a fresh array, as every fake_quantize does; the kernel
zeroes each fresh page before the loop writes it, which a copy into an existing array does not pay).

Ratios are taken within one run; on a machine shared with other jobs they are noisy.
"""

import os
import subprocess
import sys
import tempfile

import numpy as np
from _common import best

import refquant as rq
from refquant.interop import bfloat16

N = 2**24


def best_ms(fn, repeat=7):
    return best(fn, repeat) * 1e3


def floor_kernel():
    """x * 50 rounded, clamped to int8 and scaled back, in float32, into a fresh array."""
    import numba

    @numba.njit(parallel=True, cache=True)
    def loop(x, out):
        for i in numba.prange(x.size):
            v = min(max(np.rint(x[i] * np.float32(50.0)), np.float32(-128.0)), np.float32(127.0))
            out[i] = v * np.float32(0.02)

    def run(x):
        out = np.empty_like(x)
        loop(x, out)
        return out

    return run


FIRST_CALL = ("import time; t = time.perf_counter(); import numpy as np, refquant as rq; "
              "rq.fake_quantize(np.float32([0.1, 0.2]), 0.1, 0, fmt=rq.int8, "
              "convention='torch.fake_quantize'); print(time.perf_counter() - t)")
# what the first call cannot avoid: importing numba and building its CPU target (which imports
# numba's NumPy and linear-algebra support, and SciPy when it is installed)
NUMBA_ONLY = ("import time; t = time.perf_counter(); import numba; "
              "from numba.core.registry import cpu_target; cpu_target.typing_context.refresh(); "
              "cpu_target.target_context.refresh(); print(time.perf_counter() - t)")
NUMPY_ONLY = "import time; t = time.perf_counter(); import numpy; print(time.perf_counter() - t)"


def fresh_process_seconds(code, env=None):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env)
    return float(out.stdout)


def main(quick=False):
    repeat = 3 if quick else 7
    rng = np.random.default_rng(0)
    x = rng.standard_normal(N).astype(np.float32)
    dst = np.empty_like(x)
    copy = best_ms(lambda: np.copyto(dst, x), repeat)
    floor = floor_kernel()
    floor(x)
    floor_ms = best_ms(lambda: floor(x), repeat)
    print(f"np.copyto of 2**24 float32: {copy:.2f} ms (each row's ratio uses a copy timed next to it); "
          f"floor (a minimal kernel into a fresh array): {floor_ms:.2f} ms, {floor_ms / copy:.2f} x copy")
    print(f"{'convention':22s} {'fq ms':>8s} {'/copy':>6s} {'/floor':>6s} {'out= /copy':>10s} "
          f"{'axis0 ms':>9s} {'/tensor':>8s} {'f16/f32':>8s} {'bf16/f32':>9s} {'axis0 f64 scales ms':>20s}")
    x2 = x.reshape(4096, 4096)
    into = np.empty_like(x)
    scales = np.full(4096, 0.02, np.float32)
    zps = np.zeros(4096, np.int64)
    x16 = x.astype(np.float16)
    bf = bfloat16()
    xbf = x.astype(bf) if bf is not None else None
    worst = {}
    for name in rq.conventions.names():
        conv = rq.conventions.get(name)

        def fq(a, name=name):
            return lambda: rq.fake_quantize(a, 0.02, 0, fmt=rq.int8, convention=name)

        copy = best_ms(lambda: np.copyto(dst, x), repeat)
        t = best_ms(fq(x), repeat)
        t_out = best_ms(lambda name=name: rq.fake_quantize(x, 0.02, 0, fmt=rq.int8, convention=name,
                                                           out=into), repeat)
        tc = best_ms(lambda name=name: rq.fake_quantize(x2, scales, zps, fmt=rq.int8, axis=0,
                                                        convention=name), repeat)
        cells = [f"{name:22s} {t:8.2f} {t / copy:6.2f} {t / floor_ms:6.2f} {t_out / copy:10.2f} {tc:9.2f} "
                 f"{tc / t:8.2f}"]
        limit = 2.0 if name == "exact" else 1.5
        ratios = {"fq/copy": t / copy / limit, "out=/copy": t_out / copy / limit, "axis0": tc / t / 1.5}
        for a, dt in ((x16, "float16"), (xbf, "bfloat16")):
            if a is None or dt not in conv.input_dtypes:
                cells.append(f"{'-':>8s}")
                continue
            r = best_ms(fq(a), repeat) / t
            ratios[dt] = r / 2.0
            cells.append(f"{r:8.2f}")
        t64 = best_ms(lambda name=name: rq.fake_quantize(x2, scales.astype(np.float64), zps, fmt=rq.int8,
                                                         axis=0, convention=name), repeat)
        cells.append(f"{t64:20.2f}")
        print(" ".join(cells), flush=True)
        worst[name] = max(ratios.items(), key=lambda kv: kv[1])
    over = {n: w for n, w in worst.items() if w[1] > 1.0}
    print("rows over a target: " + (", ".join(f"{n} ({k} at {v:.2f}x its target)"
                                              for n, (k, v) in over.items()) if over else "none"))
    try:
        import warnings

        import torch

        warnings.simplefilter("ignore")
        tx = torch.from_numpy(x)
        tq = best_ms(lambda: torch.quantize_per_tensor(tx, 0.02, 0, torch.qint8), repeat)
        ours = best_ms(lambda: rq.quantize(x, 0.02, 0, fmt=rq.int8, convention="torch.quantize"),
                       repeat)
        tfq = best_ms(lambda: torch.fake_quantize_per_tensor_affine(tx, 0.02, 0, -128, 127), repeat)
        print(f"quantize int8 torch.quantize: refquant {ours:.2f} ms, torch.quantize_per_tensor "
              f"{tq:.2f} ms, ratio {ours / tq:.2f} (target <= 1.2)")
        print(f"torch.fake_quantize_per_tensor_affine {tfq:.2f} ms ({tfq / copy:.2f} x copy)")
    except ImportError:
        print("torch not installed: no torch comparison")
    warm = min(fresh_process_seconds(FIRST_CALL) for _ in range(3))
    numba_only = min(fresh_process_seconds(NUMBA_ONLY) for _ in range(3))
    numpy_only = min(fresh_process_seconds(NUMPY_ONLY) for _ in range(3))
    with tempfile.TemporaryDirectory() as cache:
        cold = fresh_process_seconds(FIRST_CALL, env=dict(os.environ, NUMBA_CACHE_DIR=cache))
    print(f"first call in a fresh process (torch.fake_quantize): warm cache {warm:.3f} s "
          f"(target <= 0.5), empty cache {cold:.2f} s (target <= 5)")
    print(f"  of which importing numpy {numpy_only:.3f} s and numba with its CPU target "
          f"{numba_only:.3f} s (numpy included); refquant's own share {warm - numba_only:.3f} s")

if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
