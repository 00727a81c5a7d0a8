"""refquant.nvfp4: exact against a Fraction oracle, each named disagreement between the
conventions (N1-N5), the bit layouts against rq.decode, properties and bad input."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import refquant as rq
from tests.float_oracles import positive_levels, round_code
from tests.nvfp4_cases import blocks, special_rows
from tests.references import assert_bitwise_equal, round_to_format

LIBRARIES = ("torchao", "transformer_engine", "modelopt", "onnx")
E4M3 = {code: v for v, code in positive_levels("float8_e4m3fn")}
E2M1 = {code: v for v, code in positive_levels("float4_e2m1fn")}


def oracle(x: np.ndarray, g: np.float32, out: str = "float32"):
    """Exact NVFP4 codes, scale codes and dequantized values (rounded to ``out``) of ``x`` (rows
    of 16-element blocks) for the decode global scale ``g``, from Fractions."""
    G = Fraction(float(g))
    flat = x.reshape(-1, 16)
    codes = np.zeros(flat.shape, np.uint8)
    scales = np.zeros(flat.shape[0], np.uint8)
    deq = np.zeros(flat.shape, np.float64)
    for b, blk in enumerate(flat):
        a = max(Fraction(float(v)) if v >= 0 else -Fraction(float(v)) for v in blk)
        sc = 0 if a == 0 else round_code(a / (6 * G), "float8_e4m3fn")
        scales[b] = sc
        S = E4M3[sc]
        for i, v in enumerate(blk):
            neg = math.copysign(1.0, float(v)) < 0
            if S == 0 or v == 0:
                c = 8 if neg else 0
            else:
                c = round_code(Fraction(float(v)) / (S * G), "float4_e2m1fn")
            codes[b, i] = c
            q = E2M1[c & 7] * (-1 if c & 8 else 1)
            deq[b, i] = round_to_format(q * S * G, out) if q else (-0.0 if c & 8 else 0.0)
    return (codes.reshape(x.shape), scales.reshape(x.shape[:-1] + (x.shape[-1] // 16,)),
            deq.reshape(x.shape).astype(x.dtype))


@pytest.mark.parametrize("g", [1.0, 2.0**-10, 0.0123, 3.5e-6, None])
def test_exact_matches_fraction_oracle(g):
    x = blocks(1.0 if g is None else g)
    q, s, gs = rq.nvfp4.quantize(x, global_scale=g)
    if g is None:
        assert gs == np.float32(np.float32(np.abs(x).max()) / np.float32(2688))
    codes, scales, deq = oracle(x, np.float32(gs))
    assert_bitwise_equal(q, codes, "codes")
    assert_bitwise_equal(s, scales, "scales")
    assert_bitwise_equal(rq.nvfp4.dequantize(q, s, gs), deq, "dequantize")
    assert_bitwise_equal(rq.nvfp4.fake_quantize(x, global_scale=g), deq, "fake_quantize")


@pytest.mark.parametrize("convention", ["exact", *LIBRARIES])
def test_codes_are_the_formats_bit_patterns(convention):
    """Every convention's codes decode (rq.decode) to its own dequantized values."""
    x = blocks(0.01, seed=3)
    q, s, g = rq.nvfp4.quantize(x, global_scale=0.01, convention=convention)
    deq = rq.nvfp4.dequantize(q, s, g, convention=convention, dtype=np.float64)
    dec = rq.decode(q, rq.float4_e2m1fn, dtype=np.float64)
    if not rq.nvfp4.conventions.get(convention).dequant_negative_zero:
        dec = np.where(dec == 0, 0.0, dec)
    sdec = np.repeat(rq.decode(s, rq.float8_e4m3fn, dtype=np.float64), 16, axis=-1)
    gdec = np.float64(np.float32(1) / np.float32(g)) if convention == "transformer_engine" else float(g)
    if convention == "exact":
        assert_bitwise_equal(deq, dec * sdec * gdec, "exact product")
    else:
        want = (dec * (sdec * gdec).astype(np.float32)).astype(np.float32).astype(np.float64)
        assert_bitwise_equal(deq, want, "float32 product")


def _q(x, convention, g=1.0):
    return rq.nvfp4.quantize(np.asarray(x, np.float32).reshape(1, -1), global_scale=g, convention=convention)


def test_n1_global_scale_storage():
    rng = np.random.default_rng(0)
    amaxes = (rng.lognormal(0, 3, 200)).astype(np.float32)
    differ = 0
    for a in amaxes:
        x = np.zeros((1, 16), np.float32)
        x[0, 0] = a
        stored = {c: rq.nvfp4.quantize(x, convention=c)[2] for c in ("exact", *LIBRARIES)}
        dec = np.float32(a / np.float32(2688))
        for c in ("exact", "torchao", "modelopt", "onnx"):
            assert stored[c] == dec
        enc = stored["transformer_engine"]
        assert enc == np.float32(np.float32(2688) / a)
        differ += np.float32(np.float32(1) / enc) != dec
    assert differ > 0  # the decode scale transformer_engine uses is not amax / 2688


def test_n2_block_scale_rounding():
    """Block amax beside e4m3 scale midpoints: double rounding (torchao, modelopt) and the fused
    multiplier (transformer_engine) pick other scales than the exact quotient."""
    x = blocks(0.0123)
    s = {c: rq.nvfp4.quantize(x, global_scale=0.0123, convention=c)[1] for c in ("exact", *LIBRARIES)}
    assert (s["torchao"] != s["exact"]).any()
    assert (s["modelopt"] != s["exact"]).any()
    s_te = rq.nvfp4.quantize(x, global_scale=np.float32(2688) / np.float32(2688 * 0.0123),
                             convention="transformer_engine")[1]
    assert (s_te != s["exact"]).any()


def test_n3_reciprocal_breaks_exact_ties():
    """x = s * midpoint (g = 1) is a tie: exact and division keep it, the reciprocals do not."""
    x = blocks(1.0)
    out = {c: rq.nvfp4.quantize(x, global_scale=1.0, convention=c) for c in ("exact", *LIBRARIES)}
    q = {c: v[0] for c, v in out.items()}
    assert (q["torchao"] != q["exact"]).sum() > 100
    same = (out["modelopt"][1] == out["exact"][1]).reshape(-1) & (out["exact"][1].reshape(-1) > 0)
    assert same.sum() > 400
    zero_sign = lambda c: np.where(c & 7, c, 0)  # noqa: E731  (modelopt drops -0.0's sign)
    assert_bitwise_equal(zero_sign(q["modelopt"][same]), zero_sign(q["exact"][same]), "modelopt on ties")
    te = rq.nvfp4.quantize(x, global_scale=1.0, convention="transformer_engine")[0]
    assert (te != q["exact"]).sum() > 100


def test_n4_zero_and_tiny_block_scales():
    z = np.zeros(16)
    tiny = np.full(16, 1e-41)
    want = {"exact": 0, "transformer_engine": 0, "modelopt": 0x38, "onnx": 0x38, "torchao": 0x08}
    for c, code in want.items():
        assert _q(z, c)[1].tolist() == [[code]], c
    assert _q(tiny, "exact")[1].tolist() == [[0]]
    assert _q(tiny, "modelopt")[1].tolist() == [[1]]  # 2**-9, the smallest subnormal
    assert _q(tiny, "torchao")[1].tolist() == [[0x08]]  # 2**-6, the smallest normal


def test_n5_nan_and_negative_zero():
    x = np.zeros(16, np.float32)
    x[0], x[1], x[2] = 1.0, -0.0, -0.01
    for c in ("exact", "torchao"):
        assert _q(x, c)[0][0, 1:3].tolist() == [8, 8], c
    for c in ("transformer_engine", "modelopt", "onnx"):
        assert _q(x, c)[0][0, 1:3].tolist() == [0, 8], c
    x[3] = np.nan
    nan_codes = {"torchao": 4, "transformer_engine": 0, "modelopt": 7, "onnx": 8}
    for c, code in nan_codes.items():
        q, s, _ = _q(x, c)
        assert q[0, 3] == code and s.tolist() == [[0x7F]], c
    with pytest.raises(ValueError, match="x contains nan"):
        _q(x, "exact")


def test_exact_nonfinite_blocks_fake_quantize_to_nan():
    for x in special_rows():
        fq = rq.nvfp4.fake_quantize(x)
        assert np.isnan(fq[1, :16]).all()
        assert np.isfinite(fq[[0, 2, 3]]).all() and np.isfinite(fq[1, 16:]).all()


@pytest.mark.parametrize("v", [4e-45, -1e-42, 1.9e-42])
def test_exact_global_scale_never_rounds_to_zero(v):
    """amax / 2688 below half the smallest subnormal: g is 2**-149, not 0 (which quantize would
    refuse as a global scale), and the blocks quantize against it as for any g."""
    x = np.full((1, 16), v, np.float32)
    x[0, 1] = 0.0
    q, s, gs = rq.nvfp4.quantize(x)
    assert gs == np.float32(2.0**-149)
    codes, scales, deq = oracle(x, gs)
    assert_bitwise_equal(q, codes, "codes")
    assert_bitwise_equal(s, scales, "scales")
    assert_bitwise_equal(rq.nvfp4.fake_quantize(x), deq, "fake")
    assert_bitwise_equal(rq.nvfp4.quantize(x, global_scale=gs)[0], q, "the returned g fed back")


@settings(deadline=None, max_examples=40)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.sampled_from([16, 32])),
                  elements=st.floats(-1e4, 1e4, width=32, allow_subnormal=True)),
       st.sampled_from([None, 1.0, 0.37, 2.0**-20]))
def test_exact_properties(x, g):
    before = x.copy()
    q, s, gs = rq.nvfp4.quantize(x, global_scale=g)
    assert_bitwise_equal(x, before, "input unchanged")
    codes, scales, deq = oracle(x, np.float32(gs))
    assert_bitwise_equal(q, codes, "codes")
    assert_bitwise_equal(s, scales, "scales")
    assert_bitwise_equal(rq.nvfp4.fake_quantize(x, global_scale=g), deq, "fake")


def test_bad_input():
    with pytest.raises(ValueError, match=r"last axis that is a multiple of 16.*shape \(3, 20\)"):
        rq.nvfp4.quantize(np.ones((3, 20), np.float32))
    with pytest.raises(ValueError, match="global_scale must be finite and > 0 .*got 0.0"):
        rq.nvfp4.quantize(np.ones(16, np.float32), global_scale=0.0)
    with pytest.raises(TypeError, match="global_scale must be a real scalar"):
        rq.nvfp4.quantize(np.ones(16, np.float32), global_scale=[1.0, 2.0])
    with pytest.raises(TypeError, match="takes float16, bfloat16 or float32 x; got float64"):
        rq.nvfp4.quantize(np.ones(16), convention="torchao")
    with pytest.raises(ValueError, match="convention must be one of"):
        rq.nvfp4.quantize(np.ones(16, np.float32), convention="te")
    q, s, g = rq.nvfp4.quantize(np.ones((2, 16), np.float32))
    with pytest.raises(ValueError, match=r"codes must be in \[0, 15\]; got 16"):
        rq.nvfp4.dequantize(np.full_like(q, 16), s, g)
    with pytest.raises(ValueError, match=r"scale_codes must have shape \(2, 1\)"):
        rq.nvfp4.dequantize(q, s.reshape(-1), g)
    with pytest.raises(TypeError, match="scale_codes must be an integer array"):
        rq.nvfp4.dequantize(q, s.astype(np.float32), g)
    with pytest.raises(ValueError, match=r"scale_codes must be in \[0, 255\]; got 256"):
        rq.nvfp4.dequantize(q, np.full(s.shape, 256), g)


@pytest.mark.parametrize("dtname", ["float64", "float16", "bfloat16"])
def test_exact_other_dtypes_match_fraction_oracle(dtname):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dt = {"float64": np.float64, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}[dtname]
    x = blocks(0.25, seed=5).astype(dt)
    if dtname == "float64":
        x = x * (1 + 2.0**-40)  # values between float32 numbers, and an amax that is not one
    q, s, gs = rq.nvfp4.quantize(x)
    amax = max(abs(Fraction(float(v))) for v in x.astype(np.float64).ravel())
    assert float(gs) == round_to_format(amax / 2688, "float32")
    codes, scales, deq = oracle(x, np.float32(gs), dtname)
    assert_bitwise_equal(q, codes, "codes")
    assert_bitwise_equal(s, scales, "scales")
    assert_bitwise_equal(rq.nvfp4.fake_quantize(x), deq, "fake_quantize")
