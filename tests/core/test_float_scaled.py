"""Scaled float quantization (rq.quantize / dequantize / fake_quantize with a FloatFormat), and
packing of sub-byte codes."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refquant as rq
from tests.float_oracles import SPEC, probes, round_code
from tests.references import round_to_format

NAMES = [n for n in SPEC if n != "float8_e8m0fnu"]
SCALES = [0.1, 3.0, 2.0**-20, 1e-30, 7.0e12, 0.3333333333333333]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", SCALES)
def test_quantize_is_one_rounding_of_the_real_quotient(name, scale):
    fmt = getattr(rq, name)
    t = probes(name)[::7]
    with np.errstate(over="ignore"):  # probes beyond float32's range become inf, dropped below
        x = np.concatenate([t * scale, (t * scale).astype(np.float32).astype(np.float64)])
    x = x[np.isfinite(x) & (x != 0)]
    got = rq.quantize(x, scale, fmt=fmt)
    want = [round_code(Fraction(float(v)) / Fraction(scale), name) for v in x]
    bad = np.flatnonzero(got != np.array(want, np.uint8))
    assert bad.size == 0, [(x[i], got[i], want[i]) for i in bad[:5]]
    # fake_quantize: the format value times the scale, rounded once to float32
    x32 = x[np.abs(x) < 3e38].astype(np.float32)
    fake = rq.fake_quantize(x32, np.float64(scale), fmt=fmt)
    table = fmt.decode_table()
    codes = rq.quantize(x32, scale, fmt=fmt)
    want32 = np.float32([round_to_format(Fraction(float(table[c])) * Fraction(scale), "float32")
                         for c in codes])
    want32 = np.copysign(want32, np.where(codes & fmt.sign_bit, -1, 1)).astype(np.float32)  # -0 kept
    np.testing.assert_array_equal(fake.view(np.uint32), want32.view(np.uint32))


def test_per_channel_and_per_block_equal_per_tensor_slices():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    s = np.float32([0.5, 0.1, 3.0, 0.07])
    q = rq.quantize(x, s, fmt=rq.float8_e4m3fn, axis=0)
    for i in range(4):
        np.testing.assert_array_equal(q[i], rq.quantize(x[i], s[i], fmt=rq.float8_e4m3fn))
    sb = np.float32([[0.5, 0.2], [0.1, 0.9]])
    qb = rq.quantize(x, sb, fmt="float4_e2m1fn", block_size=(2, 3))
    np.testing.assert_array_equal(qb[2:, 3:], rq.quantize(x[2:, 3:], sb[1, 1], fmt="float4_e2m1fn"))
    back = rq.dequantize(qb, sb, fmt="float4_e2m1fn", block_size=(2, 3))
    np.testing.assert_array_equal(back, rq.fake_quantize(x, sb, fmt="float4_e2m1fn", block_size=(2, 3)))


def test_affine_entry_points_dispatch_float_formats():
    x = np.float32([0.3, -1.7, 100.0])
    direct = rq.floatquant.quantize(x, 0.25, fmt=rq.float8_e5m2, saturate=False)
    np.testing.assert_array_equal(rq.quantize(x, 0.25, fmt=rq.float8_e5m2, saturate=False), direct)
    assert rq.dequantize(direct, 0.25, fmt=rq.float8_e5m2).dtype == np.float32
    with pytest.raises(ValueError, match="zero point"):
        rq.quantize(x, 0.25, 3, fmt=rq.float8_e5m2)
    with pytest.raises(ValueError, match="qmin"):
        rq.quantize(x, 0.25, qmin=0, qmax=3, fmt=rq.float8_e5m2)
    with pytest.raises(ValueError, match="saturate applies to float formats"):
        rq.quantize(x, 0.25, fmt=rq.int8, saturate=True)
    with pytest.raises(ValueError, match="has no saturate switch"):
        rq.encode(x, rq.float8_e4m3fn, convention="torch", saturate=False)
    with pytest.raises(ValueError, match="implements"):
        rq.encode(x, rq.float6_e2m3fn, convention="torch")
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        rq.quantize(x, 0.0, fmt=rq.float8_e5m2)


def test_onnx_divides_in_float32():
    """ONNX rounds fl32(x / s); exact rounds the real quotient: they differ next to a midpoint."""
    s = 3.0
    x = np.float32(np.nextafter(np.float32(1.0625 * s), np.float32(0)))  # just below a tie * s
    exact = rq.quantize(np.float32([x]), s, fmt=rq.float8_e4m3fn)
    onnx = rq.quantize(np.float32([x]), s, fmt=rq.float8_e4m3fn, convention="onnx")
    want = round_code(Fraction(float(x)) / 3, "float8_e4m3fn")
    assert exact[0] == want and onnx[0] == rq.encode(np.float32([x]) / np.float32(3), rq.float8_e4m3fn)[0]


@settings(max_examples=150)
@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32),
       st.floats(min_value=2.0**-20, max_value=1024.0, width=32), st.sampled_from(NAMES))
def test_fake_quantize_idempotent_and_monotone(v, s, name):
    x = np.float32([v, np.nextafter(np.float32(v), np.float32(np.inf))])
    y = rq.fake_quantize(x, s, fmt=name)
    np.testing.assert_array_equal(rq.fake_quantize(y, s, fmt=name), y)
    assert y[0] <= y[1]
    np.testing.assert_array_equal(x, np.float32([v, np.nextafter(np.float32(v), np.float32(np.inf))]))


# -------------------------------------------------------------------------------------- packing


@pytest.mark.parametrize("bits", [2, 4, 6])
@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_pack_roundtrip(bits, order):
    rng = np.random.default_rng(bits)
    for n in (0, 1, 3, 8, 101):
        codes = rng.integers(0, 1 << bits, n).astype(np.uint8)
        packed = rq.pack(codes, bits, order=order)
        assert packed.dtype == np.uint8 and packed.size == -(-n * bits // 8)
        np.testing.assert_array_equal(rq.unpack(packed, bits, n, order=order), codes)


def test_pack_layouts():
    assert rq.pack(np.uint8([1, 2]), 4).tolist() == [0x21]  # element 0 in the low nibble
    assert rq.pack(np.uint8([1, 2]), 4, order="high_first").tolist() == [0x12]
    assert rq.pack(np.uint8([1, 2, 3, 0]), 2).tolist() == [0b00111001]
    assert rq.pack(np.uint8([0x3F, 0, 0, 0]), 6).tolist() == [0x3F, 0, 0]
    assert rq.pack(np.uint8([0x3F, 0, 0, 0]), 6, order="high_first").tolist() == [0xFC, 0, 0]


def test_pack_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 15\].*16"):
        rq.pack(np.uint8([16]), 4)
    with pytest.raises(ValueError, match="bits must be one of 2, 4, 6"):
        rq.pack(np.uint8([1]), 3)
    with pytest.raises(ValueError, match="order"):
        rq.pack(np.uint8([1]), 4, order="middle")
    with pytest.raises(ValueError, match="n must be in"):
        rq.unpack(np.uint8([1]), 4, 3)


def test_pack_matches_torchao_and_bitsandbytes_nibble_orders():
    torch = pytest.importorskip("torch")
    kernels = pytest.importorskip("torchao.prototype.mx_formats.kernels")
    codes = np.random.default_rng(0).integers(0, 16, 64).astype(np.uint8)
    want = kernels.pack_uint4(torch.from_numpy(codes.reshape(4, 16))).numpy().reshape(-1)
    np.testing.assert_array_equal(rq.pack(codes, 4), want)
