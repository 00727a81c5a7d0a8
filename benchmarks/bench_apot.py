"""APoT quantize speed: refquant vs torch.ao's experimental APoTQuantizer and vs rq.fake_quantize.

torch.ao.quantization.experimental is not shipped in torch wheels (2.13 included), so its cost is
taken from an earlier measurement of its published code: 94 us per element at b=4, k=2 (10^5 elements,
2 threads) and about 1.3 ms per element at b=8, k=2. Run: python benchmarks/bench_apot.py
"""

import importlib.util

import numpy as np
from _common import best as best_of

import refquant as rq

TORCH_EXPERIMENTAL_US_PER_ELEMENT = {(4, 2): 94.0, (8, 2): 1300.0}


def main():
    n = 10**6
    x = np.random.default_rng(0).uniform(-0.2, 1.2, n).astype(np.float32)
    shipped = importlib.util.find_spec("torch") is not None and importlib.util.find_spec(
        "torch.ao.quantization.experimental") is not None
    print(f"N = {n} float32; torch.ao experimental APoT installed: {shipped}")
    affine = best_of(lambda: rq.fake_quantize(x, 1.0 / 255, 0, qmin=0, qmax=255))
    print(f"rq.fake_quantize (affine exact, uint8 range): {affine * 1e3:8.2f} ms")
    for bits, k in [(4, 2), (8, 2)]:
        tq = best_of(lambda b=bits, kk=k: rq.apot.quantize(x, 1.0, bits=b, k=kk))
        tf = best_of(lambda b=bits, kk=k: rq.apot.fake_quantize(x, 1.0, bits=b, k=kk))
        peer = TORCH_EXPERIMENTAL_US_PER_ELEMENT[(bits, k)] * 1e-6 * n
        print(f"bits={bits} k={k}: apot.quantize {tq * 1e3:7.2f} ms "
              f"(x{peer / tq:,.0f} faster than torch.ao experimental, research figure "
              f"{TORCH_EXPERIMENTAL_US_PER_ELEMENT[(bits, k)]:g} us/elem); "
              f"apot.fake_quantize {tf * 1e3:7.2f} ms; "
              f"ratio to rq.fake_quantize: quantize {tq / affine:.2f}x, fake {tf / affine:.2f}x")


if __name__ == "__main__":
    main()
