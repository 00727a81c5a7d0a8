"""refquant.nf4: the exact convention against a Fraction oracle, each named disagreement between
conventions, properties, and bad input."""

from __future__ import annotations

import importlib.util
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import refquant as rq
from tests.nf4_cases import block_cases, special_blocks
from tests.references import assert_bitwise_equal, float_dtype, nearest_level_code, round_to_format

DTYPES = ["float64", "float32", "float16", "bfloat16"]
# double quantization stores absmaxes on bitsandbytes' dynamic map, which refquant builds the way
# torch's linspace runs on this machine (measured on torch)
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="the dynamic map is measured on torch's linspace")


def oracle_codes(x: np.ndarray, block: int, codebook: str) -> np.ndarray:
    levels = rq.nf4.codebook(codebook, convention="exact")
    flat = x.astype(np.float64).reshape(-1)
    out = np.empty(flat.size, np.uint8)
    for lo in range(0, flat.size, block):
        blk = flat[lo:lo + block]
        a = float(np.max(np.abs(blk)))
        for i, v in enumerate(blk):
            out[lo + i] = nearest_level_code(float(v), a, levels)
    return out.reshape(x.shape)


@pytest.mark.parametrize("dtname", DTYPES)
@pytest.mark.parametrize("codebook", ["nf4", "fp4"])
def test_exact_matches_fraction_oracle(dtname, codebook):
    dt = float_dtype(dtname)
    x = block_cases(rq.nf4.codebook(codebook), dt)
    codes, state = rq.nf4.quantize(x, convention="exact", codebook=codebook)
    assert_bitwise_equal(codes, oracle_codes(x, 64, codebook), "codes")
    fmt = dtname
    levels = rq.nf4.codebook(codebook, convention="exact")
    a = np.repeat(state.absmax.astype(np.float64), 64)[:x.size]
    want = np.array([round_to_format(Fraction(float(levels[c])) * Fraction(float(s)), fmt)
                     for c, s in zip(codes, a)]).astype(dt)
    assert_bitwise_equal(rq.nf4.dequantize(codes, state), want, "dequantize")


def test_exact_ties_go_to_the_lower_level():
    srt = np.sort(rq.nf4.codebook("nf4"))
    mids = (srt[:-1] + srt[1:]) / 2
    exact32 = mids[mids.astype(np.float32).astype(np.float64) == mids]  # ties representable in float32
    assert exact32.size >= 1
    x = np.concatenate([[1.0], exact32, np.zeros(63 - exact32.size)]).astype(np.float32)
    codes, _ = rq.nf4.quantize(x, convention="exact")
    lower = np.searchsorted(srt, exact32) - 1
    assert codes[1:1 + exact32.size].tolist() == lower.tolist()


def _codes(x, convention, **kw):
    return rq.nf4.quantize(np.asarray(x, np.float32), block=x.size, convention=convention, **kw)[0]


def test_q1_float32_midpoints_give_the_farther_level():
    """Between a true midpoint and its float32 rounding, bitsandbytes takes the farther level."""
    srt = np.sort(rq.nf4.codebook("nf4"))
    true_mid = (srt[:-1] + srt[1:]) / 2
    f32_mid = (srt[:-1] + srt[1:]).astype(np.float32) / np.float32(2)
    up = np.flatnonzero(f32_mid.astype(np.float64) > true_mid)
    assert up.size == 6
    for k in up:
        x = np.float32([1.0, f32_mid[k]])  # above the true midpoint: the upper level is nearer
        assert _codes(x, "bitsandbytes")[1] == k  # the lower, farther level
        assert _codes(x, "exact")[1] == k + 1


def test_q2_reciprocal_differs_from_division():
    """absmax 0.7: x * f32(1/0.7) moves inputs across thresholds that x / 0.7 does not."""
    x = block_cases(rq.nf4.codebook("nf4"), np.float32)
    a = np.float32(0.7)
    keep = np.zeros(x.size // 64, bool)
    blocks = x.reshape(-1, 64)
    keep = np.abs(blocks).max(axis=1) == a
    xs = blocks[keep].reshape(-1)
    bnb = rq.nf4.quantize(xs, convention="bitsandbytes")[0]
    exact = rq.nf4.quantize(xs, convention="exact")[0]
    assert (bnb != exact).sum() > 0


def test_q3_torchao_codebook_is_four_decimals_in_the_dtype():
    bnb = rq.nf4.codebook("nf4")
    tao32 = rq.nf4.codebook("nf4", convention="torchao", dtype=np.float32)
    tao16 = rq.nf4.codebook("nf4", convention="torchao", dtype=float_dtype("bfloat16"))
    assert np.abs(bnb - tao32).max() < 5.1e-5 and (bnb != tao32).sum() == 13
    assert tao16[1] == -0.6953125
    # an input between the two codebooks' midpoints: torchao and bitsandbytes part ways
    m_b = (bnb[13] + bnb[14]) / 2
    m_t = (tao32[13] + tao32[14]) / 2
    v = np.float32((m_b + m_t) / 2)
    x = np.float32([1.0, v])
    assert _codes(x, "torchao")[1] != _codes(x, "bitsandbytes")[1]


def test_q4_zero_and_nan_blocks():
    z = np.zeros(64, np.float32)
    assert set(_codes(z, "bitsandbytes").tolist()) == {7}
    assert set(_codes(z, "exact").tolist()) == {7}
    assert set(_codes(z, "torchao").tolist()) == {0}
    n = np.ones(64, np.float32)
    n[3] = np.nan
    assert set(_codes(n, "bitsandbytes").tolist()) == {15}
    assert set(_codes(n, "torchao").tolist()) == {0}
    with pytest.raises(ValueError, match="x contains nan"):
        _codes(n, "exact")
    fq = rq.nf4.fake_quantize(np.concatenate([n, np.ones(64, np.float32)]), convention="exact")
    assert np.isnan(fq[:64]).all() and (fq[64:] == 1).all()


@needs_torch
def test_q5_double_quant_layouts_differ():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((256 * 4, 64)) * np.exp(rng.standard_normal((256 * 4, 1)))).astype(np.float32)
    _, sb = rq.nf4.quantize(x, double_quant=True, convention="bitsandbytes")
    _, st_ = rq.nf4.quantize(x, double_quant=True, convention="torchao")
    _, plain = rq.nf4.quantize(x)
    assert sb.nested_codes.dtype == np.uint8 and st_.nested_codes.dtype == np.int8
    assert (sb.absmax != st_.absmax).mean() > 0.9
    rel_b = np.abs(sb.absmax / plain.absmax - 1).max()
    rel_t = np.abs(st_.absmax.astype(np.float64) / plain.absmax - 1).max()
    assert rel_b > 0 and rel_t > 0


def test_fp4_small_positive_takes_the_sign_bit_zero_under_bitsandbytes():
    x = np.float32([1.0, 1e-4, -1e-4, 0.0])
    assert _codes(x, "bitsandbytes", codebook="fp4").tolist() == [3, 8, 0, 0]  # +0 sorts before code 8
    assert _codes(x, "exact", codebook="fp4").tolist() == [3, 0, 8, 0]


@settings(deadline=None, max_examples=60)
@given(hnp.arrays(np.float32, st.integers(1, 300),
                  elements=st.floats(-1e6, 1e6, width=32, allow_subnormal=True)),
       st.sampled_from([1, 7, 64]), st.sampled_from(["nf4", "fp4"]))
def test_exact_properties(x, block, codebook):
    before = x.copy()
    fq = rq.nf4.fake_quantize(x, block=block, convention="exact", codebook=codebook)
    assert_bitwise_equal(x, before, "input unchanged")
    again = rq.nf4.fake_quantize(fq, block=block, convention="exact", codebook=codebook)
    assert np.array_equal(again, fq)  # idempotent (the block absmax survives)
    codes, state = rq.nf4.quantize(x, block=block, convention="exact", codebook=codebook)
    assert_bitwise_equal(codes, oracle_codes(x, block, codebook), "codes")
    assert_bitwise_equal(rq.nf4.dequantize(codes, state), fq, "fake == dequantize(quantize)")


@pytest.mark.parametrize("convention", ["bitsandbytes", "torchao", "exact"])
def test_within_a_block_levels_are_monotone(convention):
    x = np.sort(np.random.default_rng(1).uniform(-1, 1, 64 * 256)).astype(np.float32)
    x[::64] = 1.0
    codes, state = rq.nf4.quantize(x, convention=convention)
    y = rq.nf4.dequantize(codes, state).reshape(-1, 64)[:, 1:]
    assert (np.diff(y, axis=1) >= 0).all()


def test_bad_input():
    x = np.ones(100, np.float32)
    with pytest.raises(ValueError, match="block=64 does not divide"):
        rq.nf4.quantize(x, convention="torchao")
    with pytest.raises(ValueError, match="block must be a positive integer; got 0"):
        rq.nf4.quantize(x, block=0)
    with pytest.raises(TypeError, match="block must be an integer; got 1.5"):
        rq.nf4.quantize(x, block=1.5)
    with pytest.raises(TypeError, match="takes float16, bfloat16 or float32 x; got float64"):
        rq.nf4.quantize(x.astype(np.float64))
    with pytest.raises(ValueError, match="convention must be one of"):
        rq.nf4.quantize(x, convention="nope")
    with pytest.raises(ValueError, match="codebook must be 'nf4' or 'fp4'; got 'af4'"):
        rq.nf4.quantize(x, codebook="af4")
    with pytest.raises(ValueError, match="has no fp4 codebook"):
        rq.nf4.quantize(np.ones(64, np.float32), convention="torchao", codebook="fp4")
    with pytest.raises(TypeError, match="x must be a float16"):
        rq.nf4.quantize(np.ones(64, np.int32))
    codes, state = rq.nf4.quantize(x)
    with pytest.raises(ValueError, match=r"codes must be in \[0, 15\]; got 16"):
        rq.nf4.dequantize(np.full(100, 16), state)
    with pytest.raises(ValueError, match=r"codes must be in \[0, 15\]; got -1"):
        rq.nf4.dequantize(np.full(100, -1), state)
    with pytest.raises(ValueError, match="codes must have the state's shape"):
        rq.nf4.dequantize(codes[:10], state)
    with pytest.raises(TypeError, match="codes must be an integer array"):
        rq.nf4.dequantize(codes.astype(np.float32), state)
    with pytest.raises(TypeError, match="state must be the NF4State"):
        rq.nf4.dequantize(codes, state.absmax)
    with pytest.raises(ValueError, match="nested_block=256 absmaxes; x has 2 blocks"):
        rq.nf4.quantize(np.ones(128, np.float32), double_quant=True, convention="torchao")
    with pytest.raises(TypeError, match="stores float32 absmaxes.*got float64"):
        rq.nf4.quantize(np.ones(128), double_quant=True, convention="exact")
    with pytest.raises(ValueError, match="nested_block must be a positive integer; got 0"):
        rq.nf4.quantize(np.ones(128, np.float32), double_quant=True, nested_block=0)


@pytest.mark.parametrize("dtname", ["float32", "float16", "bfloat16"])
def test_specials_do_not_warn(dtname, recwarn):
    for x in special_blocks(float_dtype(dtname)):
        for conv in ("bitsandbytes", "torchao"):
            rq.nf4.fake_quantize(x, convention=conv)
        rq.nf4.fake_quantize(x, convention="exact")
    assert not [w for w in recwarn if "refquant" in str(w.filename)]


@pytest.mark.parametrize("seed", range(3))
@needs_torch
def test_exact_double_quant_matches_fraction_oracle(seed):
    rng = np.random.default_rng(seed)
    nblocks = 256 * 2 + 37
    spread = np.exp(2 * rng.standard_normal((nblocks, 1)))
    x = (rng.standard_normal((nblocks, 64)) * spread).astype(np.float32)
    x[5] = 0.0
    x[9, :] = x[8, :]  # two equal absmaxes
    _, plain = rq.nf4.quantize(x, convention="exact")
    _, st_ = rq.nf4.quantize(x, double_quant=True, convention="exact")
    a = [Fraction(float(v)) for v in plain.absmax]
    offset = Fraction(round_to_format(sum(a) / len(a), "float32"))
    assert float(st_.offset) == float(offset)
    levels = rq.nf4.dynamic_map().astype(np.float64)
    for j in range(0, len(a), 256):
        d = [v - offset for v in a[j:j + 256]]
        m = round_to_format(max(abs(v) for v in d), "float32")
        assert float(st_.nested_scale[j // 256]) == m
        for i, v in enumerate(d):
            q = nearest_level_code(v, m, levels) if m else int(np.flatnonzero(levels == 0)[0])
            assert st_.nested_codes[j + i] == q, (j + i, q, st_.nested_codes[j + i])
            want = round_to_format(Fraction(float(levels[q])) * Fraction(m) + offset, "float32")
            assert float(st_.absmax[j + i]) == want


@needs_torch
def test_q6_bitsandbytes_nested_codes_are_not_always_nearest():
    """bitsandbytes' 8-bit lookup table (65536 bins over [-1, 1]) is coarser than the dynamic map
    near zero: some nested codes are not the level nearest to v = f32(d * f32(1 / M)); the exact
    row always picks the nearest (its oracle test)."""
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((256 * 8, 64)) * np.exp(rng.standard_normal((256 * 8, 1)))).astype(np.float32)
    _, plain = rq.nf4.quantize(x)
    _, st_ = rq.nf4.quantize(x, double_quant=True)
    d = (plain.absmax - np.float32(st_.offset)).astype(np.float32)
    inv = (np.float32(1) / st_.nested_scale).astype(np.float32)
    v = (d * np.repeat(inv, 256)).astype(np.float32).astype(np.float64)
    m = rq.nf4.dynamic_map().astype(np.float64)
    nearest = np.searchsorted((m[:-1] + m[1:]) / 2, v, side="left")
    assert (nearest != st_.nested_codes).sum() > 0
