"""``exact`` element casts against the Fraction oracle: every value, midpoint and neighbour."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refquant as rq
from tests.float_oracles import MODES, SPEC, ieee_overflows, positive_levels, probes, round_code

NAMES = list(SPEC)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", MODES)
def test_exact_matches_fraction_oracle(name, mode):
    fmt = getattr(rq, name)
    x = probes(name)
    if not fmt.signed:
        x = x[x > 0]
    want = np.array([round_code(v, name, mode) for v in x], np.uint8)
    got = rq.encode(x, fmt, rounding=mode)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, [(x[i], got[i], want[i]) for i in bad[:5]]
    # float32 input takes the bit-twiddling fast path for half_even
    x32 = x[np.abs(x) < 3.4e38].astype(np.float32)
    x32 = x32[x32 != 0]
    want32 = np.array([round_code(float(v), name, mode) for v in x32], np.uint8)
    np.testing.assert_array_equal(rq.encode(x32, fmt, rounding=mode), want32)


@pytest.mark.parametrize("name", [n for n in NAMES if SPEC[n][4] != "none"])
def test_exact_ieee_overflow(name):
    fmt = getattr(rq, name)
    x = probes(name)
    x = x[np.abs(x) >= fmt.max / 2]
    if not fmt.signed:
        x = x[x > 0]
    got = rq.encode(x, fmt, saturate=False)
    over = np.array([ieee_overflows(v, name) for v in x])
    special = fmt.inf_code if fmt.has_inf else fmt.nan_code
    sign = np.where((x < 0) & (fmt.nan != "neg_zero"), fmt.sign_bit, 0).astype(np.uint8)
    np.testing.assert_array_equal(got[over], (special | sign)[over])
    want = np.array([round_code(v, name) for v in x[~over]], np.uint8)
    np.testing.assert_array_equal(got[~over], want)


def test_specials_exact():
    x = np.float32([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0])
    assert rq.encode(x, rq.float8_e4m3fn).tolist() == [0x7F, 0xFF, 0x7E, 0xFE, 0, 0x80]
    assert rq.encode(x, rq.float8_e5m2).tolist() == [0x7E, 0xFE, 0x7B, 0xFB, 0, 0x80]
    assert rq.encode(x, rq.float8_e5m2, saturate=False).tolist() == [0x7E, 0xFE, 0x7C, 0xFC, 0, 0x80]
    assert rq.encode(x, rq.float8_e4m3fnuz).tolist() == [0x80, 0x80, 0x7F, 0xFF, 0, 0]
    assert rq.encode(x, rq.float8_e4m3fnuz, saturate=False).tolist() == [0x80] * 4 + [0, 0]
    assert rq.encode(x, rq.float8_e8m0fnu).tolist() == [0xFF, 0xFF, 0xFE, 0xFF, 0xFF, 0xFF]
    assert rq.encode(x[2:], rq.float4_e2m1fn).tolist() == [7, 15, 0, 8]


def test_nan_into_no_nan_format_is_an_error_under_exact():
    with pytest.raises(ValueError, match="NaN"):
        rq.encode(np.float32([1.0, np.nan]), rq.float4_e2m1fn)
    with pytest.raises(ValueError, match="saturate=False"):
        rq.encode(np.float32([1.0]), rq.float6_e2m3fn, saturate=False)


def test_e8m0_ties_and_range():
    x = np.float64([1.5, 3.0, 0.75, 2.0**-128, 1e-45, 2.0**127 * 1.5, 2.0**127 * 1.4])
    assert rq.encode(x, rq.float8_e8m0fnu).tolist() == [128, 129, 127, 0, 0, 254, 254]
    assert rq.encode(x, rq.float8_e8m0fnu, saturate=False).tolist()[-2:] == [255, 254]


@pytest.mark.parametrize("name", NAMES)
def test_decode_roundtrip_every_code(name):
    fmt = getattr(rq, name)
    codes = np.arange(1 << fmt.bits, dtype=np.uint8)
    v = rq.decode(codes, fmt, dtype=np.float64)
    levels = {c: float(f) for f, c in positive_levels(name)}
    for c in codes:
        mag = int(c) & ~fmt.sign_bit if fmt.signed else int(c)
        neg = fmt.signed and int(c) & fmt.sign_bit
        if mag in levels and not (neg and mag == 0 and fmt.nan == "neg_zero"):
            want = -levels[mag] if neg else levels[mag]
            assert v[c] == want and np.signbit(v[c]) == bool(neg), (c, v[c], want)
        elif not fmt.has_inf or mag != fmt.inf_code:
            assert np.isnan(v[c]), (c, v[c])
    finite = np.isfinite(v)
    back = rq.encode(v[finite], fmt)
    np.testing.assert_array_equal(back, codes[finite])


def test_decode_bad_codes():
    with pytest.raises(ValueError, match=r"\[0, 15\].*16"):
        rq.decode(np.uint8([16]), rq.float4_e2m1fn)
    with pytest.raises(TypeError, match="codes"):
        rq.decode(np.float32([1]), rq.float4_e2m1fn)


def test_unknown_format_lists_names():
    with pytest.raises(ValueError, match="float8_e4m3fn.*float4_e2m1fn"):
        rq.encode(np.float32([1]), "float8_e4m3")


def test_stochastic_is_seeded_and_unbiased():
    x = np.full(200_000, 1.1, np.float64)  # between 1.0 and 1.125 in e4m3fn
    a = rq.encode(x, rq.float8_e4m3fn, rounding="stochastic", rng=7)
    b = rq.encode(x, rq.float8_e4m3fn, rounding="stochastic", rng=7)
    np.testing.assert_array_equal(a, b)
    v = rq.decode(a, rq.float8_e4m3fn, dtype=np.float64)
    assert set(np.unique(v)) == {1.0, 1.125}
    assert abs(v.mean() - 1.1) < 4 * 0.125 * np.sqrt(0.8 * 0.2 / x.size)


def test_inputs_not_mutated_and_dtypes():
    x = np.float32([1.0, -3.3, np.inf])
    keep = x.copy()
    out = rq.encode(x, rq.float8_e5m2)
    assert out.dtype == np.uint8 and out.shape == x.shape
    np.testing.assert_array_equal(x, keep)
    assert rq.encode(np.float32(2.0), rq.float8_e5m2).shape == ()


@settings(max_examples=200)
@given(st.floats(allow_nan=False, allow_infinity=False, width=64),
       st.sampled_from(NAMES), st.sampled_from(MODES))
def test_exact_property(v, name, mode):
    fmt = getattr(rq, name)
    if v == 0 or (not fmt.signed and v < 0):
        return
    assert rq.encode(np.float64([v]), fmt, rounding=mode)[0] == round_code(v, name, mode)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float16, "bfloat16", np.float64])
def test_decode_dtypes_round_once(name, dtype):
    fmt = getattr(rq, name)
    codes = np.arange(1 << fmt.bits, dtype=np.uint8)
    if dtype == "bfloat16":
        ml = pytest.importorskip("ml_dtypes")
    v64 = rq.decode(codes, fmt, dtype=np.float64)
    got = rq.decode(codes, fmt, dtype=dtype)
    if dtype == "bfloat16":
        want = v64.astype(ml.bfloat16)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    else:
        with np.errstate(over="ignore"):  # values beyond float16's range round to inf, as they should
            want = v64.astype(dtype)
        assert got.dtype == np.dtype(dtype)
        bits = f"u{want.dtype.itemsize}"
        np.testing.assert_array_equal(got.view(bits), want.view(bits))


@settings(max_examples=300)
@given(st.integers(0, 2**32 - 1), st.sampled_from(NAMES))
def test_float32_patterns_against_oracle(bits, name):
    fmt = getattr(rq, name)
    x = np.uint32([bits]).view(np.float32)
    v = float(x[0])
    got = int(rq.encode(x, fmt, saturate=True if fmt.has_nan or fmt.has_inf else None,
                        convention="exact")[0]) if not np.isnan(v) or fmt.has_nan else None
    if np.isnan(v):
        if fmt.has_nan:
            assert np.isnan(fmt.decode_table()[got])
        return
    sign = fmt.sign_bit if np.signbit(v) else 0
    if np.isinf(v):
        want = fmt.nan_code if (v < 0 and not fmt.signed) else fmt.max_code | sign
    elif v == 0 or (v < 0 and not fmt.signed):
        no_value = not fmt.has_zero or v < 0
        want = fmt.nan_code if no_value else (sign if fmt.has_negative_zero else 0)
    else:
        want = round_code(v, name)
    assert got == want, (v, got, want)
