"""The exact convention against the Fraction oracle: tie-heavy data and every float16/bfloat16."""

from fractions import Fraction

import numpy as np
import pytest

import refquant as rq
from tests.references import (
    ROUNDERS,
    assert_bitwise_equal,
    exact_code,
    exact_fake,
    float_dtype,
    round_to_format,
    tie_heavy,
)

CONFIGS = [  # (scale, zero point, qmin, qmax)
    (0.1, 0, -128, 127),
    (0.0123, 3, 0, 255),
    (1 / 3, 7, 0, 15),
    (0.7, -5, -8, 7),
    (2.0**-10, 0, -(2**31), 2**31 - 1),
    (float(np.float32(0.02)), 1000, -32768, 32767),
]


def oracle_codes(x, s, z, lo, hi, rounding="half_even"):
    return [exact_code(float(v), s, z, lo, hi, rounding) for v in x.ravel()]


@pytest.mark.parametrize("s,z,lo,hi", CONFIGS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantize_matches_fraction_oracle(s, z, lo, hi, dtype):
    x = tie_heavy(s, z, lo, hi, 4000, seed=1, dtype=dtype)
    q = rq.quantize(x, s, z, qmin=lo, qmax=hi)
    assert q.dtype == rq.integer_dtype_for(lo, hi)
    assert q.tolist() == oracle_codes(x, s, z, lo, hi)


@pytest.mark.parametrize("s,z,lo,hi", CONFIGS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fake_quantize_matches_fraction_oracle(s, z, lo, hi, dtype):
    x = tie_heavy(s, z, lo, hi, 4000, seed=2, dtype=dtype)
    y = rq.fake_quantize(x, s, z, qmin=lo, qmax=hi)
    expected = np.array([exact_fake(float(v), s, z, lo, hi, np.dtype(dtype).name) for v in x], dtype)
    assert_bitwise_equal(y, expected)


@pytest.mark.parametrize("rounding", sorted(ROUNDERS))
def test_rounding_modes_match_oracle(rounding):
    s, z, lo, hi = 0.37, 2, -20, 20
    x = tie_heavy(s, z, lo, hi, 3000, seed=3)
    q = rq.quantize(x, s, z, qmin=lo, qmax=hi, rounding=rounding)
    assert q.tolist() == oracle_codes(x, s, z, lo, hi, rounding)


def every_pattern(dtype):
    return np.arange(2**16, dtype=np.uint16).view(dtype)


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
@pytest.mark.parametrize("s,z,lo,hi", [(0.01, 0, -128, 127), (1 / 3, 7, 0, 15), (1e-6, -3, -8, 7)])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_every_half_precision_pattern(dtype_name, s, z, lo, hi):
    dtype = float_dtype(dtype_name)
    x = every_pattern(dtype)
    finite_or_inf = ~np.isnan(x.astype(np.float32))
    values = x.astype(np.float32).astype(np.float64)[finite_or_inf]
    codes = [exact_code(float(v), s, z, lo, hi) for v in values]
    dequantized = {c: exact_fake_of_code(c, s, z, dtype_name) for c in set(codes)}
    q = rq.quantize(x[finite_or_inf], s, z, qmin=lo, qmax=hi)
    assert q.tolist() == codes
    y = rq.fake_quantize(x, s, z, qmin=lo, qmax=hi)
    assert np.isnan(y[~finite_or_inf].astype(np.float32)).all()
    expected = np.array([dequantized[c] for c in codes], np.float64).astype(dtype)
    assert_bitwise_equal(y[finite_or_inf], expected)


def exact_fake_of_code(code, s, z, dtype_name):
    return round_to_format((code - z) * Fraction(s), dtype_name)


def test_special_values():
    x = np.float32([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e30, -1e30])
    y = rq.fake_quantize(x, 0.1, 3, qmin=0, qmax=255)
    assert np.isnan(y[0])
    expected = np.float32([np.nan, 25.2, -0.3, 0.0, 0.0, 25.2, -0.3])
    assert_bitwise_equal(y[1:], expected[1:])
    assert np.signbit(y[3]) == np.False_  # -0.0 in, +0.0 out: the zero code times s
    assert rq.quantize(x[1:], 0.1, 3, qmin=0, qmax=255).tolist() == [255, 0, 3, 3, 255, 0]
    with pytest.raises(ValueError, match="NaN"):
        rq.quantize(x, 0.1, 3, qmin=0, qmax=255)


def test_stochastic_rounding_is_seeded_and_unbiased():
    x = np.full(200_000, 0.3, np.float32)
    a = rq.quantize(x, 1.0, 0, qmin=-8, qmax=7, rounding="stochastic", rng=123)
    b = rq.quantize(x, 1.0, 0, qmin=-8, qmax=7, rounding="stochastic", rng=np.random.default_rng(123))
    assert np.array_equal(a, b)
    assert set(np.unique(a).tolist()) == {0, 1}
    # mean of Bernoulli(0.3000000119): 5 standard deviations is ~0.005
    assert abs(a.mean() - float(np.float32(0.3))) < 0.005
    neg = rq.quantize(-x, 1.0, 0, qmin=-8, qmax=7, rounding="stochastic", rng=7)
    assert abs(neg.mean() + float(np.float32(0.3))) < 0.005


def midpoint_products(dtype_name):
    """(q, s) pairs whose float64 product fl(q * s) is exactly a rounding midpoint of the format
    while the real product is not: rounding fl(q * s) to the format would round twice."""
    p = {"float32": 24, "float16": 11, "bfloat16": 8}[dtype_name]
    half_ulp = 2.0 ** -p
    midpoints = [1 + half_ulp, 1.5 + half_ulp, 1 - half_ulp / 2, 1.25 - half_ulp / 2, 3 + 4 * half_ulp]
    pairs = []
    for q in range(1, 128):
        for m in midpoints:
            s = m / q
            if float(q * s) == m and q * Fraction(s) != Fraction(m):
                pairs.append((q, s))
    return pairs


@pytest.mark.parametrize("dtype_name", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("n", [3, 70_000])  # the serial and the parallel kernels
def test_products_on_a_midpoint_round_once(dtype_name, n):
    dtype = float_dtype(dtype_name)
    pairs = midpoint_products(dtype_name)
    assert len(pairs) > 20
    for q, s in pairs:
        want = np.array(round_to_format(q * Fraction(s), dtype_name), dtype)
        codes = np.full(n, q, np.int16)
        assert_bitwise_equal(rq.dequantize(codes, s, 0, dtype=dtype)[-1:], want.reshape(1), (q, s))
        x = np.full(n, q * s, dtype)
        assert rq.quantize(x[:1], s, 0, qmin=-255, qmax=255)[0] == q
        assert_bitwise_equal(rq.fake_quantize(x, s, 0, qmin=-255, qmax=255)[-1:], want.reshape(1),
                             (q, s))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # float32 data
@pytest.mark.parametrize("s", [0.1, 1 / 3, 3e-39, 1e-300, 2.0**-1021, 1e300, 6e-8])
def test_fast_pass_decides_as_the_real_quotient(s):
    """Tie-heavy float32 and float64 data (plus the extremes) over a parallel-sized array: the
    fast pass multiplies by fl(1/s) and must certify or hand over every element."""
    rng = np.random.default_rng(11)
    for dtype in (np.float32, np.float64):
        x = tie_heavy(s, 0, -128, 127, 70_000, seed=5, dtype=dtype)
        x[:6] = [0.0, -0.0, np.inf, -np.inf, np.finfo(dtype).max, np.finfo(dtype).tiny]
        x[6:1000] = rng.standard_normal(994) * np.float64(s) * 200
        q = rq.quantize(x, s, 0, qmin=-128, qmax=127)
        assert q.tolist() == oracle_codes(x, s, 0, -128, 127), (s, dtype)
        y = rq.fake_quantize(x[:3000], s, 0, qmin=-128, qmax=127)
        name = np.dtype(dtype).name
        expected = np.array([exact_fake(float(v), s, 0, -128, 127, name) for v in x[:3000]], dtype)
        assert_bitwise_equal(y, expected, (s, name))


def test_scale_beyond_the_reciprocal_range():
    s = 2.0**1021  # fl(1/s) is subnormal: the general kernel decides
    x = (np.arange(-8, 8) * 0.5 * s).astype(np.float64)
    x = np.concatenate([x, np.nextafter(x, np.inf), np.nextafter(x, -np.inf)])
    assert rq.quantize(x, s, 0, qmin=-5, qmax=5).tolist() == oracle_codes(x, s, 0, -5, 5)


@pytest.mark.parametrize("rounding", ["floor", "ceil", "toward_zero", "half_even", "half_away"])
def test_quotients_that_underflow_keep_their_sign(rounding):
    """x / s below the smallest subnormal: the real quotient's sign still decides floor/ceil."""
    x = np.float64([-5e-324, 5e-324, -1e-320, 1e-320])
    s = 7.0
    expected = [rq_oracle_round(Fraction(float(v)) / Fraction(s), rounding) for v in x]
    got = rq.quantize(x, s, 0, qmin=-8, qmax=7, rounding=rounding)
    assert got.tolist() == expected


def rq_oracle_round(t, rounding):
    f = t.numerator // t.denominator
    d = t - f
    half = Fraction(1, 2)
    return {"floor": f, "ceil": f + (d > 0), "toward_zero": f + (t < 0 and d > 0),
            "half_even": f + (d > half or (d == half and f % 2 == 1)),
            "half_away": f + (d > half or (d == half and t > 0))}[rounding]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_dequantize_products_beyond_float64_are_infinite(dtype):
    """(q - z) * s past the float64 range is +-inf in every output dtype, never NaN."""
    s = 2.0**1021 * 1.7
    out = rq.dequantize(np.int8([-128, 127, 0, 1]), s, 0, dtype=dtype)
    assert np.isinf(out[:2]).all() and (np.sign(out[:2]) == [-1, 1]).all()
    assert out[2] == 0 and (out[3] == s if dtype == np.float64 else np.isinf(out[3]))
    fq = rq.fake_quantize(np.float64([-np.inf, np.inf]), s, 0, qmin=-128, qmax=127)  # saturated
    assert np.isinf(fq).all() and (np.sign(fq) == [-1, 1]).all()
