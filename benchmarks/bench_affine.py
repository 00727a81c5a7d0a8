"""Affine speed (issue 2): refquant fake_quantize vs torch and a memory copy, in one run.

    python benchmarks/bench_affine.py

Prints milliseconds (best of several runs) on 2**24 float32 elements, the ratios the issue names,
`import refquant` time, and the first-call time in a fresh process with a warm Numba cache.
"""

import subprocess
import sys
import time

import numpy as np

import refquant as rq

N = 2**24


def best_ms(fn, repeat=7):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def fresh_process_seconds(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout)


def main():
    x = np.random.default_rng(0).standard_normal(N).astype(np.float32)
    dst = np.empty_like(x)
    rows = {
        "np.copyto": best_ms(lambda: np.copyto(dst, x)),
        "rq.fake_quantize exact int8": best_ms(lambda: rq.fake_quantize(x, 0.02, 0, fmt=rq.int8)),
        "rq.fake_quantize torch.fake_quantize int8": best_ms(
            lambda: rq.fake_quantize(x, 0.02, 0, fmt=rq.int8, convention="torch.fake_quantize"), 3),
    }
    try:
        import torch

        tx = torch.from_numpy(x)
        rows["torch.fake_quantize_per_tensor_affine"] = best_ms(
            lambda: torch.fake_quantize_per_tensor_affine(tx, 0.02, 0, -128, 127))
    except ImportError:
        pass
    for name, ms in rows.items():
        print(f"{name:45s} {ms:9.2f} ms")
    exact = rows["rq.fake_quantize exact int8"]
    print(f"ratio exact / np.copyto: {exact / rows['np.copyto']:.2f}  (target <= 3)")
    if "torch.fake_quantize_per_tensor_affine" in rows:
        speedup = rows["torch.fake_quantize_per_tensor_affine"] / exact
        print(f"speed-up over torch: {speedup:.2f}x  (target >= 2)")
    imp = fresh_process_seconds(
        "import time; t = time.perf_counter(); import refquant; print(time.perf_counter() - t)")
    first = fresh_process_seconds(
        "import time; t = time.perf_counter(); import numpy as np, refquant as rq; "
        "rq.fake_quantize(np.float32([0.1, 0.2]), 0.1, 0, fmt=rq.int8); "
        "print(time.perf_counter() - t)")
    print(f"import refquant: {imp:.3f} s (target < 0.5); first call, warm cache: {first:.3f} s "
          "(target < 1)")


if __name__ == "__main__":
    main()
