"""rqt's low-precision fake quantizers against torchao's, forward + backward, in one run.

Best-of-N wall time on a 1024x1024 float32 CPU tensor:

* ``rqt.float_fake_quantize(x, s, fmt=float8_e4m3fn)`` (clipped straight-through backward) vs
  torchao's float8 fake quant (``_quantize_affine_float8`` + ``_dequantize_affine_float8``);
* ``rqt.mx_fake_quantize(x, float8_e4m3fn / float4_e2m1fn, convention="torchao.floor")`` vs
  torchao's ``MXTensor.to_mx(...).dequantize()`` (forward only: torchao's has no autograd; its QAT
  backward is the identity, as rqt's);

and the per-call time on a 64-element tensor (the adapter's overhead next to the core's own call).

    python benchmarks/bench_lowp_torch.py
"""

from __future__ import annotations

import torch
from _common import best, fwd_bwd

import refquant as rq
import refquant_torch as rqt


def main():
    from torchao.prototype.mx_formats.config import ScaleCalculationMode
    from torchao.prototype.mx_formats.mx_tensor import MXTensor
    from torchao.quantization.quant_primitives import _dequantize_affine_float8, _quantize_affine_float8

    torch.manual_seed(0)
    x = torch.randn(1024, 1024) * 100
    g = torch.randn_like(x)
    s = torch.tensor(0.125)

    def ao_fp8(t):
        return _dequantize_affine_float8(_quantize_affine_float8(t, s, torch.float8_e4m3fn), s)

    def rq_fp8(t):
        return rqt.float_fake_quantize(t, s, fmt=rq.float8_e4m3fn)

    t_ao = best(fwd_bwd(ao_fp8, x, g), 5)
    t_rq = best(fwd_bwd(rq_fp8, x, g), 5)
    print(f"float8_e4m3fn fwd+bwd 2**20: torchao {t_ao * 1e3:.1f} ms, rqt {t_rq * 1e3:.1f} ms, "
          f"rqt/torchao {t_rq / t_ao:.2f}")

    for elem, fmt in ((torch.float8_e4m3fn, rq.float8_e4m3fn), (torch.float4_e2m1fn_x2, rq.float4_e2m1fn)):
        def ao_mx(t, elem=elem):
            return MXTensor.to_mx(t, elem, 32, scaling_mode=ScaleCalculationMode.FLOOR).dequantize(t.dtype)

        def rq_mx(t, fmt=fmt):
            return rqt.mx_fake_quantize(t, fmt, convention="torchao.floor")

        t_ao = best(lambda f=ao_mx: f(x), 5)
        t_rq = best(lambda f=rq_mx: f(x), 5)
        print(f"MX {fmt.name} forward 2**20: torchao {t_ao * 1e3:.1f} ms, rqt {t_rq * 1e3:.1f} ms, "
              f"rqt/torchao {t_rq / t_ao:.2f}")

    small = torch.randn(64)
    core = best(lambda: rq.fake_quantize(small.numpy(), 0.125, fmt=rq.float8_e4m3fn), 200)
    adapter = best(lambda: rq_fp8(small), 200)
    print(f"64 elements forward: rqt {adapter * 1e6:.1f} us, core {core * 1e6:.1f} us "
          f"(adapter overhead {(adapter - core) * 1e6:.1f} us)")


if __name__ == "__main__":
    main()
