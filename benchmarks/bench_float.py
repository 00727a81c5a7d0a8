"""Float element casts and MX quantization: refquant against ml_dtypes and torchao, in one run.

- rq.encode to float8_e4m3fn vs ml_dtypes' astype of the same 2**24 float32 array;
- rq.mx.quantize (MXFP8 e4m3, MXFP4) vs torchao's to_mx (FLOOR) on the same array;
- rq.quantize per-channel (axis 0, float32 scales) to float8_e4m3fn vs the per-tensor encode
  (scale 1) and vs per-channel int8 quantize, all refquant, on a 4096 x 4096 float32 array.

Ratios are taken within one run; on a shared machine they move with its load.
Run: python benchmarks/bench_float.py
"""

import importlib.util

import numpy as np
from _common import best as best_of

import refquant as rq


def main():
    n = 1 << 24
    x = (np.random.default_rng(0).standard_normal(n) * 50).astype(np.float32)
    print("N = 2**24 float32")
    if importlib.util.find_spec("ml_dtypes"):
        import ml_dtypes

        peer = best_of(lambda: x.astype(ml_dtypes.float8_e4m3fn))
        ours = best_of(lambda: rq.encode(x, rq.float8_e4m3fn))
        print(f"encode float8_e4m3fn: refquant {ours * 1e3:7.1f} ms, ml_dtypes astype {peer * 1e3:7.1f} ms"
              f" -> {peer / ours:.1f}x")
    x2d = x.reshape(4096, 4096)
    s_ch = (np.abs(x2d).max(axis=1) / 448).astype(np.float32)
    ch = best_of(lambda: rq.quantize(x2d, s_ch, fmt=rq.float8_e4m3fn, axis=0), repeat=3)
    one = best_of(lambda: rq.quantize(x2d, 1.0, fmt=rq.float8_e4m3fn), repeat=3)
    i8 = best_of(lambda: rq.quantize(x2d, s_ch, 0, qmin=-128, qmax=127, axis=0), repeat=3)
    print(f"quantize float8_e4m3fn per-channel: {ch * 1e3:7.1f} ms ({x2d.nbytes / ch / 1e9:.2f} GB/s); "
          f"per-tensor scale 1 {one * 1e3:7.1f} ms -> {one / ch:.2f}x; int8 per-channel {i8 * 1e3:7.1f} ms"
          f" -> {i8 / ch:.2f}x")
    if importlib.util.find_spec("torchao"):
        import torch
        from torchao.prototype.mx_formats.mx_tensor import to_mx

        xt = torch.from_numpy(x.reshape(-1, 1024))
        x2 = x.reshape(-1, 1024)
        for fmt, dt in ((rq.float8_e4m3fn, torch.float8_e4m3fn), (rq.float4_e2m1fn, torch.float4_e2m1fn_x2)):
            peer = best_of(lambda dt=dt: to_mx(xt, dt, 32), repeat=3)
            ours = best_of(lambda fmt=fmt: rq.mx.quantize(x2, fmt), repeat=3)
            print(f"mx.quantize {fmt.name}: refquant {ours * 1e3:7.1f} ms, torchao to_mx {peer * 1e3:7.1f} ms"
                  f" -> {peer / ours:.1f}x")


if __name__ == "__main__":
    main()
