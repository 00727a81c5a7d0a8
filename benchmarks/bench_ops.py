"""Integer operators against torch's FBGEMM kernels in one run; prints ratios (refquant / torch).

    python benchmarks/bench_ops.py

* linear: 1024x1024 uint8 input times a 1024x1024 int8 weight, float bias, requantized to
  uint8 (``rq.ops.linear``, convention ``fbgemm``) vs ``torch.ops.quantized.linear`` on the same
  codes (target: ratio <= 3).
* conv2d: 64 -> 64 channels, 3x3, padding 1, on a 1x64x56x56 uint8 input (``rq.ops.conv2d``) vs
  ``torch.ops.quantized.conv2d`` (target: ratio <= 3).
Both sides are checked equal before timing. Each figure is the best of several repetitions, the two
sides alternating, after a warm-up call; torch uses its default thread count, refquant its BLAS threads.
"""

import warnings

import numpy as np
import torch
from _common import best_pair

import refquant as rq


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
    t_ours, t_torch = best_pair(ours, theirs, 10)
    print(f"linear 1024^3  refquant {t_ours * 1e3:8.2f} ms  torch {t_torch * 1e3:8.2f} ms  "
          f"ratio {t_ours / t_torch:5.2f} (target <= 3)")

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
    t_ours, t_torch = best_pair(ours, theirs, 20)
    print(f"conv2d 64->64 3x3 on 1x64x56x56  refquant {t_ours * 1e3:8.2f} ms  torch {t_torch * 1e3:8.2f} ms  "
          f"ratio {t_ours / t_torch:5.2f} (target <= 3)")


if __name__ == "__main__":
    main()
