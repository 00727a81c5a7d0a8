"""Integer operators against torch's FBGEMM kernels in one run; prints ratios (refquant / torch).

    python benchmarks/bench_ops.py

* linear: 1024x1024 uint8 input times a 1024x1024 int8 weight, float bias, requantized to
  uint8 (``rq.ops.linear``, convention ``fbgemm``) vs ``torch.ops.quantized.linear`` on the same
  codes (target: ratio <= 3).
* conv2d: 64 -> 64 channels, 3x3, padding 1, on a 1x64x56x56 uint8 input (``rq.ops.conv2d``) vs
  ``torch.ops.quantized.conv2d`` (target: ratio <= 3).
Both sides are checked equal before timing. Each side runs several repetitions, the two sides
alternating, after a warm-up call; the best and the median are printed and the ratio is of the
bests. torch uses its default thread count, refquant Numba's (8-bit codes take the integer VNNI
path where Numba targets such a CPU, else NumPy's float GEMM). On a shared machine, run it
several times.
"""

import warnings

import numpy as np
import torch
from _common import best_median_pair

import refquant as rq


def report(name, ours, theirs):
    print(f"{name}  refquant {ours[0] * 1e3:8.2f} ms (median {ours[1] * 1e3:.2f})  "
          f"torch {theirs[0] * 1e3:8.2f} ms (median {theirs[1] * 1e3:.2f})  "
          f"ratio {ours[0] / theirs[0]:5.2f} (target <= 3)")


def main():
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.backends.quantized.engine = "fbgemm"
    rng = np.random.default_rng(0)
    xs, xz, ws, ys, yz = 0.02, 128, 0.004, 0.9, 120

    x = rng.integers(0, 256, (1024, 1024), dtype=np.uint8)
    w = rng.integers(-128, 128, (1024, 1024), dtype=np.int8)
    b = rng.normal(0, 1, 1024).astype(np.float32)
    tx = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x), xs, xz)
    tw = torch._make_per_tensor_quantized_tensor(torch.from_numpy(w), ws, 0)
    packed = torch.ops.quantized.linear_prepack(tw, torch.from_numpy(b))
    ours = lambda: rq.ops.linear(x, xs, xz, w, ws, 0, b, ys, yz)  # noqa: E731
    theirs = lambda: torch.ops.quantized.linear(tx, packed, ys, yz)  # noqa: E731
    assert np.array_equal(ours(), theirs().int_repr().numpy())
    report("linear 1024^3", *best_median_pair(ours, theirs, 10))

    x = rng.integers(0, 256, (1, 64, 56, 56), dtype=np.uint8)
    w = rng.integers(-128, 128, (64, 64, 3, 3), dtype=np.int8)
    b = rng.normal(0, 1, 64).astype(np.float32)
    ys = 4.0
    tx = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x), xs, xz)
    tw = torch._make_per_tensor_quantized_tensor(torch.from_numpy(w), ws, 0)
    packed = torch.ops.quantized.conv2d_prepack(tw, torch.from_numpy(b), [1, 1], [1, 1], [1, 1], 1)
    ours = lambda: rq.ops.conv2d(x, xs, xz, w, ws, 0, b, ys, yz, padding=1)  # noqa: E731
    theirs = lambda: torch.ops.quantized.conv2d(tx, packed, ys, yz)  # noqa: E731
    assert np.array_equal(ours(), theirs().int_repr().numpy())
    report("conv2d 64->64 3x3 on 1x64x56x56", *best_median_pair(ours, theirs, 20))


if __name__ == "__main__":
    main()
