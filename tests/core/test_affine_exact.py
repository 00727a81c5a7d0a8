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
    round_to_format,
    tie_heavy,
)

ml_dtypes = pytest.importorskip("ml_dtypes")

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
    dtype = np.dtype(np.float16) if dtype_name == "float16" else np.dtype(ml_dtypes.bfloat16)
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
