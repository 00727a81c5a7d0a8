"""MX block quantization against torchao, gfloat and microxcaling's published algorithm."""

from __future__ import annotations

import numpy as np
import pytest

import refquant as rq

FORMATS = ["float8_e4m3fn", "float8_e5m2", "float6_e3m2fn", "float6_e2m3fn", "float4_e2m1fn"]


def adversarial_blocks(fmt_name: str, seed: int = 0, block: int = 32) -> np.ndarray:
    """Rows of one block each: random magnitudes, bf16-valued, element-grid midpoints, amax a
    power of two and just below one, saturating mantissas, zeros, tiny/huge amax, subnormals."""
    rng = np.random.default_rng(seed)
    fmt = getattr(rq, fmt_name)
    emax = int(np.floor(np.log2(fmt.max)))
    rows = []
    rand = rng.choice([-1, 1], (120, block)) * np.exp2(rng.uniform(-20, 20, (120, block)))
    rows.append(rand.astype(np.float32))
    rows.append(rand.astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000))
    rows[-1] = rows[-1].view(np.float32)
    vals = fmt.values()
    mids = (vals[:-1] + vals[1:]) / 2
    for _ in range(40):
        e = int(rng.integers(-30, 30))
        row = rng.choice(mids, block) * 2.0**e
        row[0] = fmt.max * 2.0**e
        rows.append(row[None].astype(np.float32))
    for k in range(-20, 20):
        row = rng.uniform(-1, 1, block) * 2.0**k
        row[3] = 2.0**k
        rows.append(row[None].astype(np.float32))
        row = row.copy()
        row[3] = 2.0**k * (1 - 2.0**-24)
        rows.append(row[None].astype(np.float32))
        row = row.copy()
        row[3] = 2.0**k * rng.uniform(1.75, 2.0)
        rows.append(row[None].astype(np.float32))
    special = [0.0, -0.0, 1e-40, 2.0**-127, 2.0**-130, 2.0**-120, 2.0**-126, 3.4e38, 2.0**127,
               1.5 * 2.0**127, 2.0 ** (-127 + emax) * 0.9, 2.0 ** (-126 + emax)]
    for amax in special:
        row = rng.uniform(-1, 1, block) * amax
        row[5] = amax
        rows.append(row[None].astype(np.float32))
    rows.append(np.float32([[0.0, -0.0] * (block // 2)]))
    sub = (rng.uniform(-1, 1, block) * 1e-39).astype(np.float32)
    rows.append(sub[None])
    return np.concatenate(rows).astype(np.float32)


def nonfinite_blocks(block: int = 32) -> np.ndarray:
    rows = np.ones((3, block), np.float32)
    rows[0, 1] = np.nan
    rows[1, 2] = np.inf
    rows[2, 2] = -np.inf
    return rows


def _torch():
    return pytest.importorskip("torch")


def _torchao_to_mx(x, fmt_name, rule):
    torch = _torch()
    mxt = pytest.importorskip("torchao.prototype.mx_formats.mx_tensor")
    cfg = pytest.importorskip("torchao.prototype.mx_formats.config")
    dt = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2,
          "float6_e2m3fn": "fp6_e2m3", "float6_e3m2fn": "fp6_e3m2",
          "float4_e2m1fn": torch.float4_e2m1fn_x2}[fmt_name]
    if isinstance(dt, str):
        dt = getattr(mxt, "DTYPE_FP6_E2M3" if dt == "fp6_e2m3" else "DTYPE_FP6_E3M2")
    mode = getattr(cfg.ScaleCalculationMode, rule.upper())
    if x.dtype == np.float32:
        xt = torch.from_numpy(x)
    else:  # bfloat16: the same bit patterns (torch's own cast would turn NaN into -NaN)
        xt = torch.from_numpy(x.view(np.int16).copy()).view(torch.bfloat16)
    scale, data = mxt.to_mx(xt, dt, 32, mode)
    scale = scale.view(torch.uint8).numpy().copy()
    data = data.view(torch.uint8).numpy().copy()
    if fmt_name == "float4_e2m1fn":
        data = rq.unpack(data.reshape(-1), 4, x.size).reshape(x.shape)
    return data, scale


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("rule", ["floor", "ceil", "even", "rceil"])
@pytest.mark.parametrize("fmt_name", FORMATS)
def test_torchao_to_mx(fmt_name, rule, dtype):
    x = adversarial_blocks(fmt_name)
    x = np.concatenate([x, nonfinite_blocks()])
    if dtype == "bfloat16":
        ml = pytest.importorskip("ml_dtypes")
        x = x.astype(ml.bfloat16)
    want_codes, want_scales = _torchao_to_mx(x, fmt_name, rule)
    codes, scales = rq.mx.quantize(x, getattr(rq, fmt_name), convention=f"torchao.{rule}")
    np.testing.assert_array_equal(scales, want_scales)
    np.testing.assert_array_equal(codes, want_codes)


@pytest.mark.parametrize("fmt_name", FORMATS)
def test_torchao_floor_differs_from_ocp_on_tiny_blocks(fmt_name):
    """M2: torchao stores 2**-127 but divides by 2**-126; the OCP result differs there."""
    fmt = getattr(rq, fmt_name)
    emax = int(np.floor(np.log2(fmt.max)))
    x = np.zeros((1, 32), np.float32)
    x[0, 0] = 2.0 ** (-127 + emax) * 1.5
    x[0, 1] = 2.0 ** (-127 + emax)
    c_ocp, s_ocp = rq.mx.quantize(x, fmt)
    c_tao, s_tao = rq.mx.quantize(x, fmt, convention="torchao.floor")
    want, _ = _torchao_to_mx(x, fmt_name, "floor")
    assert s_ocp[0, 0] == s_tao[0, 0] == 0
    assert not np.array_equal(c_ocp, want)
    np.testing.assert_array_equal(c_tao, want)


def _gfloat_block(x, fmt_name, dtype):
    gf = pytest.importorskip("gfloat")
    from gfloat.formats import (
        format_info_mxfp4_e2m1,
        format_info_mxfp6_e2m3,
        format_info_mxfp6_e3m2,
        format_info_mxfp8_e4m3,
        format_info_mxfp8_e5m2,
    )

    fi = {"float8_e4m3fn": format_info_mxfp8_e4m3, "float8_e5m2": format_info_mxfp8_e5m2,
          "float6_e3m2fn": format_info_mxfp6_e3m2, "float6_e2m3fn": format_info_mxfp6_e2m3,
          "float4_e2m1fn": format_info_mxfp4_e2m1}[fmt_name]
    return np.stack([gf.quantize_block(fi, row.astype(dtype), gf.compute_scale_amax) for row in x])


@pytest.mark.parametrize("fmt_name", FORMATS)
def test_gfloat_quantize_block_float64_is_ocp(fmt_name):
    x = adversarial_blocks(fmt_name)
    x = x[np.abs(x).max(axis=1) < 1e38]  # gfloat's scale overflows its encoding near FLT_MAX
    want = _gfloat_block(x, fmt_name, np.float64)
    got = rq.mx.fake_quantize(x.astype(np.float64), getattr(rq, fmt_name))
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    assert same.all(), (x[~same][:3], got[~same][:3], want[~same][:3])


@pytest.mark.parametrize("fmt_name", FORMATS)
def test_gfloat_quantize_block_float32(fmt_name):
    """M1: gfloat fed float32 takes floor(log2 amax) in float32."""
    x = adversarial_blocks(fmt_name)
    x = x[np.abs(x).max(axis=1) < 1e38]
    want = _gfloat_block(x, fmt_name, np.float32)
    got = rq.mx.fake_quantize(x.astype(np.float64), getattr(rq, fmt_name), convention="gfloat.float32")
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    assert same.all(), (x[~same][:3], got[~same][:3], want[~same][:3])
    ocp = rq.mx.fake_quantize(x.astype(np.float64), getattr(rq, fmt_name))
    assert not np.array_equal(ocp, want)  # the blocks with amax just below 2**k differ


_MXC = {  # ebits, mbits (sign and implicit one included), emax, max_norm, as microxcaling lists them
    "float8_e4m3fn": (4, 5, 8, 448.0), "float8_e5m2": (5, 4, 15, 57344.0),
    "float6_e3m2fn": (3, 4, 4, 28.0), "float6_e2m3fn": (2, 5, 2, 7.5),
    "float4_e2m1fn": (2, 3, 2, 6.0), "int8": (0, 8, 0, 1.984375),
}


def microxcaling_quantize_mx(A, ebits, mbits, emax, max_norm, rnd):
    """microxcaling's _quantize_mx (pure torch path, block along the last axis, scale_bits 8),
    re-typed from its published source: float32 torch ops throughout."""
    torch = _torch()
    blocks = A.reshape(-1, 32)
    amax = blocks.abs().max(dim=1, keepdim=True).values
    shared = torch.floor(torch.log2(amax + 2.0**-126 * (amax == 0).float())) - emax
    shared[shared > 127] = float("nan")
    shared[shared < -127] = -127
    x = blocks / (2 ** shared)
    if ebits != 0:
        private = torch.floor(torch.log2(torch.abs(x) + (x == 0).float()))
        private = private.clip(min=-(2 ** (ebits - 1)) + 2)
        out = x / (2 ** private) * (2 ** (mbits - 2))
    else:
        private = None
        out = x * (2 ** (mbits - 2))
    if rnd == "nearest":
        out = torch.sign(out) * torch.floor(torch.abs(out) + 0.5)
    else:
        absA = torch.abs(out)
        mask = ((absA - 0.5) % 2 == torch.zeros_like(out)).float()
        out = torch.sign(out) * (torch.floor(absA + 0.5) - mask)
    out = out / (2 ** (mbits - 2)) if private is None else out / (2 ** (mbits - 2)) * (2 ** private)
    out = torch.clamp(out, min=-max_norm, max=max_norm)
    out[x == float("inf")] = float("inf")
    out[x == -float("inf")] = -float("inf")
    return (out * (2 ** shared)).reshape(A.shape)


@pytest.mark.parametrize("rnd", ["nearest", "even"])
@pytest.mark.parametrize("name", FORMATS + ["int8"])
def test_microxcaling_transcription(name, rnd):
    torch = _torch()
    x = adversarial_blocks(name if name != "int8" else "float8_e4m3fn")
    x = np.concatenate([x, nonfinite_blocks()])
    want = microxcaling_quantize_mx(torch.from_numpy(x), *_MXC[name], rnd).numpy()
    conv = rq.mx.conventions.get("microxcaling").replace(microxcaling_round=rnd)
    got = rq.mx.fake_quantize(x, getattr(rq, name), convention=conv)
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    bad = np.argwhere(~same)
    assert bad.size == 0, [(float(x[i, j]), float(got[i, j]), float(want[i, j])) for i, j in bad[:5]]


def compressed_tensors_scale_codes(amax):
    """compressed-tensors' generate_mx_scales (round_to_power_2 on float32 bits, then
    127 + floor(log2) - offset), re-typed in torch from its published source."""
    torch = _torch()
    x = amax.view(torch.int32)
    rounded = torch.bitwise_and(x + (1 << (23 - 1 - 1)), ((1 << 9) - 1) << 23).view(torch.float32)
    return rounded


@pytest.mark.parametrize("name,offset", [("float4_e2m1fn", 2), ("float8_e4m3fn", 8)])
def test_compressed_tensors_scales(name, offset):
    torch = _torch()
    x = adversarial_blocks(name)
    amax = np.abs(x).max(axis=1)
    keep = (amax > 2.0 ** (-126 + offset)) & (amax < 2.0**126)  # codes in [1, 254]: no clipping
    x, amax = x[keep], amax[keep]
    p2 = compressed_tensors_scale_codes(torch.from_numpy(amax))
    want = (127 + torch.floor(torch.log2(p2)) - offset).numpy().astype(np.int64)
    _, scales = rq.mx.quantize(x, getattr(rq, name), convention="compressed_tensors")
    np.testing.assert_array_equal(scales[:, 0], want)
    _, ocp = rq.mx.quantize(x, getattr(rq, name))
    assert (ocp[:, 0] != want).any()  # amax with a mantissa >= 1.5 rounds up a binade
