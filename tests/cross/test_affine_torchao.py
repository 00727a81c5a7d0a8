"""The torchao convention against torchao 0.18's quant primitives, bitwise (float32 and bfloat16)."""

import numpy as np
import pytest

import refquant as rq
from tests.references import assert_bitwise_equal, tie_heavy

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")
ml_dtypes = pytest.importorskip("ml_dtypes")
from torchao.quantization.quant_primitives import (  # noqa: E402
    _fake_quantize_affine,
    dequantize_affine,
    quantize_affine,
)

N = 1_000_000
RANGES = {"int8": (torch.int8, -128, 127), "uint8": (torch.uint8, 0, 255), "int4": (torch.int8, -8, 7)}


def to_torch(x):
    if x.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(x.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(x))


def to_numpy(t):
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def blockwise_case(rng_name, x_dtype, scale_dtype, group=64, seed=0):
    tdt, lo, hi = RANGES[rng_name]
    rows = N // 256
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.002, 0.2, (rows, 256 // group)).astype(np.float32)
    zps = rng.integers(lo, hi + 1, scales.shape).astype(np.int32)
    cols = []
    for j in range(256 // group):
        s, z = float(scales[0, j]), int(zps[0, j])
        cols.append(tie_heavy(s, z, lo, hi, rows * group, seed=seed + j).reshape(rows, group))
    x = np.concatenate(cols, axis=1)
    x = x * (scales.repeat(group, axis=1) / scales[0].repeat(group))  # per-row scale variation
    return (x.astype(np.float32).astype(x_dtype), scales.astype(scale_dtype), zps, (1, group),
            tdt, lo, hi)


@pytest.mark.parametrize("rng_name", sorted(RANGES))
@pytest.mark.parametrize("x_dtype,scale_dtype", [
    (np.float32, np.float32), (ml_dtypes.bfloat16, ml_dtypes.bfloat16),
    (ml_dtypes.bfloat16, np.float32), (np.float16, np.float16),
])
def test_quantize_dequantize_fake(rng_name, x_dtype, scale_dtype):
    x, s, z, block, tdt, lo, hi = blockwise_case(rng_name, x_dtype, scale_dtype)
    tx, ts, tz = to_torch(x), to_torch(s), torch.from_numpy(z)
    tq = quantize_affine(tx, block, ts, tz, tdt, lo, hi)
    q = rq.quantize(x, s, z, qmin=lo, qmax=hi, block_size=block, convention="torchao")
    assert_bitwise_equal(q.astype(np.int64), tq.numpy().astype(np.int64), "quantize")
    tdq = dequantize_affine(tq, block, ts, tz, tdt, lo, hi, output_dtype=tx.dtype)
    dq = rq.dequantize(q, s, z, block_size=block, convention="torchao", dtype=x.dtype)
    assert_bitwise_equal(dq, to_numpy(tdq), "dequantize")
    tfq = _fake_quantize_affine(tx, block, ts, tz, tdt, lo, hi)
    fq = rq.fake_quantize(x, s, z, qmin=lo, qmax=hi, block_size=block, convention="torchao")
    assert_bitwise_equal(fq, to_numpy(tfq), "fake_quantize")


def test_special_values():
    x = np.float32([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, -0.0, 3.0] * 8).reshape(8, 8)
    s, z = np.full((8, 1), 0.1, np.float32), np.zeros((8, 1), np.int32)
    tq = quantize_affine(torch.from_numpy(x), (1, 8), torch.from_numpy(s), torch.from_numpy(z),
                         torch.int8, -128, 127)
    q = rq.quantize(x, s, z, qmin=-128, qmax=127, block_size=(1, 8), convention="torchao")
    assert q.tolist() == tq.numpy().tolist()
    tfq = _fake_quantize_affine(torch.from_numpy(x), (1, 8), torch.from_numpy(s),
                                torch.from_numpy(z), torch.int8, -128, 127)
    fq = rq.fake_quantize(x, s, z, qmin=-128, qmax=127, block_size=(1, 8), convention="torchao")
    assert_bitwise_equal(fq, tfq.numpy())


WIDE = {"int16": (torch.int16, -32768, 32767), "int32": (torch.int32, -(2**31), 2**31 - 1)}


@pytest.mark.parametrize("rng_name", sorted(WIDE))
@pytest.mark.parametrize("x_dtype,scale_dtype", [
    (np.float32, np.float32), (ml_dtypes.bfloat16, ml_dtypes.bfloat16), (ml_dtypes.bfloat16, np.float32),
])
def test_wide_codes_clamp_in_the_compute_dtype_then_convert(rng_name, x_dtype, scale_dtype):
    """bfloat16 rounds the bound 32767 up to 32768, which the int16 conversion wraps to -32768;
    float32 rounds 2**31 - 1 to 2**31, which the int32 conversion turns into INT32_MIN; NaN
    converts to INT32_MIN, which is 0 in a 16-bit code."""
    tdt, lo, hi = WIDE[rng_name]
    specials = [np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, -0.0, 3.0e9, -3.0e9, 40000.0, 32767.0,
                32700.0, 65535.0, 70000.0, 2147483520.0, -2147483648.0]
    rng = np.random.default_rng(3)
    x = np.concatenate([np.float32(specials), rng.uniform(-1e5, 1e5, 4096 - len(specials))])
    x = x.astype(np.float32).astype(x_dtype).reshape(16, 256)
    s = np.float32(np.full((16, 1), 1.0)) * rng.choice([1.0, 0.5, 0.01, 1e-6], (16, 1))
    s = s.astype(np.float32).astype(scale_dtype)
    z = rng.integers(-3, 4, (16, 1)).astype(np.int32) + (0 if lo < 0 else 3)
    tx, ts, tz = to_torch(x), to_torch(s), torch.from_numpy(z)
    tq = quantize_affine(tx, (1, 256), ts, tz, tdt, lo, hi)
    q = rq.quantize(x, s, z, qmin=lo, qmax=hi, block_size=(1, 256), convention="torchao")
    assert q.dtype == rq.integer_dtype_for(lo, hi)
    assert_bitwise_equal(q.astype(np.int64), tq.numpy().astype(np.int64), "quantize")
    tfq = _fake_quantize_affine(tx, (1, 256), ts, tz, tdt, lo, hi)
    fq = rq.fake_quantize(x, s, z, qmin=lo, qmax=hi, block_size=(1, 256), convention="torchao")
    assert_bitwise_equal(fq, to_numpy(tfq), "fake_quantize")
