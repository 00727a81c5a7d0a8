"""rqt.fake_quantize against torch.fake_quantize_per_tensor_affine, in one run.

Prints the best-of-N wall time of forward + backward on a 4096x4096 float32 CPU tensor for torch
and for rqt.fake_quantize under the "torch.fake_quantize" and "exact" conventions, with the
ratios, and the per-call time on a 64-element tensor (forward; forward with x requiring grad;
forward + backward, next to torch's own), next to the core's own per-call time on the same data
(the difference is the adapter's overhead), and rqt.pact's.

    python benchmarks/bench_torch.py
"""

from __future__ import annotations

import time

import torch

import refquant as rq
import refquant_torch as rqt


def best(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def fwd_bwd(op, x, g):
    def run():
        xr = x.detach().requires_grad_()
        op(xr).backward(g)

    return run


def main():
    torch.manual_seed(0)
    x = torch.randn(4096, 4096)
    g = torch.randn(4096, 4096)
    scale, zp = 0.05, 3
    t_torch = best(fwd_bwd(lambda t: torch.fake_quantize_per_tensor_affine(t, scale, zp, 0, 255),
                           x, g), 5)
    print(f"torch.fake_quantize_per_tensor_affine fwd+bwd 4096x4096 f32: {t_torch * 1e3:8.1f} ms")
    for conv in ("torch.fake_quantize", "exact"):
        t = best(fwd_bwd(lambda t, c=conv: rqt.fake_quantize(t, scale, zp, qmin=0, qmax=255,
                                                            convention=c), x, g), 5)
        print(f"rqt.fake_quantize [{conv:>19}] fwd+bwd:             {t * 1e3:8.1f} ms"
              f"   ratio {t / t_torch:5.2f}x")

    small = torch.randn(64)
    small_np = small.numpy()
    n = 2000
    core = best(lambda: [rq.fake_quantize(small_np, scale, zp, qmin=0, qmax=255)
                         for _ in range(n)], 3) / n
    fwd = best(lambda: [rqt.fake_quantize(small, scale, zp, qmin=0, qmax=255)
                        for _ in range(n)], 3) / n
    small_req = small.clone().requires_grad_()
    fwd_req = best(lambda: [rqt.fake_quantize(small_req, scale, zp, qmin=0, qmax=255)
                            for _ in range(n)], 3) / n
    sg = torch.ones(64)
    fb = best(lambda: [fwd_bwd(lambda t: rqt.fake_quantize(t, scale, zp, qmin=0, qmax=255),
                               small, sg)() for _ in range(200)], 3) / 200
    t_fb = best(lambda: [fwd_bwd(lambda t: torch.fake_quantize_per_tensor_affine(t, scale, zp, 0, 255),
                                 small, sg)() for _ in range(200)], 3) / 200
    print(f"64 elements: core rq.fake_quantize {core * 1e6:7.1f} us/call; rqt forward "
          f"{fwd * 1e6:7.1f} us/call (adapter overhead {(fwd - core) * 1e6:6.1f} us); "
          f"forward with x requiring grad {fwd_req * 1e6:7.1f} us/call")
    print(f"64 elements forward+backward: rqt {fb * 1e6:7.1f} us/call; "
          f"torch.fake_quantize_per_tensor_affine {t_fb * 1e6:7.1f} us/call")
    alpha = torch.tensor([1.0], requires_grad=True)
    p_fwd = best(lambda: [rqt.pact(small, 1.0, bits=4) for _ in range(n)], 3) / n
    p_fb = best(lambda: [fwd_bwd(lambda t: rqt.pact(t, alpha, bits=4), small, sg)()
                         for _ in range(200)], 3) / 200
    print(f"64 elements rqt.pact: forward {p_fwd * 1e6:7.1f} us/call; forward+backward "
          f"{p_fb * 1e6:7.1f} us/call")


if __name__ == "__main__":
    main()
