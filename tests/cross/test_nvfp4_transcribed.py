"""refquant.nvfp4's ``transformer_engine`` and ``modelopt`` rows against their published NVFP4
algorithms, re-typed here in torch because neither library installs on a CPU-only machine:
TransformerEngine's reference quantizer (custom_recipes/quantization_ref_nvfp4.py, 1x16 tiles,
no Hadamard transform, no 4over6) and ModelOpt's NVFP4QTensor (dynamic weight path). Each
function below follows the published sequence of float32 torch operations step by step."""

from __future__ import annotations

import numpy as np
import pytest

import refquant as rq
from tests.nvfp4_cases import blocks, special_rows
from tests.references import assert_bitwise_equal

torch = pytest.importorskip("torch")
F32_MAX = torch.finfo(torch.float32).max


def te_reference(x: torch.Tensor):
    """TransformerEngine: (codes, e4m3 scale codes, encode scale S)."""
    m, n = x.shape
    xb = x.view(m, n // 16, 16)
    vec_max = xb.abs().amax(dim=-1, keepdim=True).float()
    amax = x.abs().max().float().view(1)
    s_enc = torch.div(torch.tensor(448.0) * torch.tensor(6.0), amax)
    s_enc = torch.min(s_enc, torch.tensor(F32_MAX))
    if s_enc == 0:
        s_enc = torch.tensor([1.0])
    g_dec = torch.div(1.0, s_enc)
    mult = s_enc * torch.reciprocal(torch.tensor(6.0))
    dscale = torch.min(vec_max * mult, torch.tensor(F32_MAX))
    dscale = torch.clamp(dscale, min=-448.0, max=448.0).to(torch.float8_e4m3fn)
    enc = torch.min(torch.div(1.0, dscale.float() * g_dec), torch.tensor(F32_MAX))
    v = torch.clamp(xb.float() * enc, -6.0, 6.0).reshape(m, n)
    codes = torch.zeros_like(v, dtype=torch.uint8)
    # thresholds of the published cast (a tie goes to the even code); -0.0 and NaN stay 0
    pos = ((0.25, 0.75, False), (0.75, 1.25, True), (1.25, 1.75, False), (1.75, 2.5, True),
           (2.5, 3.5, False), (3.5, 5.0, True))
    for k, (lo, hi, closed) in enumerate(pos, start=1):
        inside = (v >= lo) & (v <= hi) if closed else (v > lo) & (v < hi)
        codes[inside] = k
        inside_neg = (v <= -lo) & (v >= -hi) if closed else (v < -lo) & (v > -hi)
        codes[inside_neg] = 8 + k
    codes[v > 5.0] = 7
    codes[v < -5.0] = 15
    codes[(v >= -0.25) & (v < -0.0)] = 8
    return codes.numpy(), dscale.view(torch.uint8).numpy().reshape(m, n // 16), np.float32(s_enc.item())


def modelopt_reference(x: torch.Tensor):
    """ModelOpt NVFP4QTensor: (codes, e4m3 scale codes, weights_scaling_factor_2, dequantized)."""
    m, n = x.shape
    g = x.abs().amax().float() / (6.0 * 448.0)
    amax_b = x.view(m, n // 16, 16).abs().amax(dim=-1).float()
    s = amax_b / (6.0 * g)
    s[s == 0] = 1.0
    s = s.clamp(min=2**-9).to(torch.float8_e4m3fn)
    scaled = x.view(m, n // 16, 16) / (s.float() * g).unsqueeze(-1)
    scaled = scaled.view(m, n)
    sign = (scaled < 0).to(torch.uint8)
    bounds = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    mag = scaled.abs()
    ordv = torch.searchsorted(bounds, mag, out_int32=True).to(torch.uint8)
    odd = torch.any(mag.unsqueeze(-1) == bounds[[1, 3, 5]], dim=-1).to(torch.uint8)
    codes = (sign << 3) + ordv + odd
    values = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6])
    deq = (values[codes.long()].view(m, n // 16, 16) * (s.float() * g).unsqueeze(-1)).view(m, n)
    return codes.numpy(), s.view(torch.uint8).numpy(), np.float32(g.item()), deq.numpy()


def cases():
    out = [blocks(1.0), blocks(0.0123, seed=1), blocks(3.5e-6, seed=2)]
    return out + special_rows()


@pytest.mark.parametrize("k", range(7))
def test_transformer_engine_bitwise(k):
    x = cases()[k]
    codes, scales, s_enc = te_reference(torch.from_numpy(x.copy()))
    q, s, g = rq.nvfp4.quantize(x, convention="transformer_engine")
    assert np.float32(g).view(np.uint32) == s_enc.view(np.uint32)
    assert_bitwise_equal(q, codes, "codes")
    assert_bitwise_equal(s, scales, "scales")


@pytest.mark.parametrize("k", range(7))
def test_modelopt_bitwise(k):
    x = cases()[k]
    codes, scales, g_ref, deq = modelopt_reference(torch.from_numpy(x.copy()))
    q, s, g = rq.nvfp4.quantize(x, convention="modelopt")
    assert np.float32(g).view(np.uint32) == g_ref.view(np.uint32)
    assert_bitwise_equal(q, codes, "codes")
    assert_bitwise_equal(s, scales, "scales")
    assert_bitwise_equal(rq.nvfp4.dequantize(q, s, g, convention="modelopt"), deq, "dequantize")
