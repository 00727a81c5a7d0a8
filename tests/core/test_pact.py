"""PACT against the exact Fraction definition, the paper's worked example and finite differences."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refquant as rq
from tests.apot_oracles import pact_fake
from tests.references import ROUNDERS, assert_bitwise_equal, round_to_format


def test_paper_worked_example():
    x = np.float64([-3, -2.2, -1, -0.01, 0, 0.3, 1, 2.2, 3])
    out = rq.pact.fake_quantize(x, 2.2, bits=4)
    assert out.round(5).tolist() == [0, 0, 0, 0, 0, 0.29333, 1.02667, 2.2, 2.2]


def _tie_heavy(alpha, n, signed, dtype, count=600, seed=0):
    """Values at (m + 1/2) * alpha / n rounded to dtype, their neighbours, and random ones."""
    rng = np.random.default_rng(seed)
    m = np.arange(-n - 1 if signed else -1, n + 1)
    mids = np.array([float(Fraction(alpha) * (Fraction(int(v)) + Fraction(1, 2)) / n) for v in m])
    mids = mids.astype(dtype)
    near = np.concatenate([mids, np.nextafter(mids, dtype(np.inf)), np.nextafter(mids, dtype(-np.inf))])
    rand = rng.uniform(-1.2 * alpha, 1.2 * alpha, count).astype(dtype)
    return np.concatenate([near, rand, dtype([alpha, -alpha, 0.0])])


CASES = [(2.2, 4, False), (1.0, 4, False), (0.75, 3, True), (6.0, 8, False), (1.7, 8, True)]


@pytest.mark.parametrize("alpha,bits,signed", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rounding", ["half_even", "half_away", "half_up", "half_down", "floor",
                                      "ceil", "toward_zero"])
def test_matches_fraction_oracle(alpha, bits, signed, dtype, rounding):
    """Exact for every dtype: no intermediate rounding of y * N / alpha (float64 included)."""
    n = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    x = _tie_heavy(alpha, n, signed, dtype)
    got = rq.pact.fake_quantize(x, alpha, bits=bits, signed=signed, rounding=rounding)
    assert got.dtype == dtype
    fmt = np.dtype(dtype).name
    want = np.array([
        round_to_format(pact_fake(Fraction(float(v)), Fraction(alpha), bits, signed,
                                  ROUNDERS[rounding]), fmt) + 0.0
        for v in x
    ], dtype)
    assert_bitwise_equal(got, want)


@pytest.mark.parametrize("fmt", ["float16", "bfloat16"])
def test_half_formats_rounded_once(fmt):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dtype = ml_dtypes.bfloat16 if fmt == "bfloat16" else np.float16
    x = np.linspace(-1, 3, 257).astype(dtype)
    got = rq.pact.fake_quantize(x, 2.2, bits=6)
    assert got.dtype == dtype
    want = [round_to_format(pact_fake(Fraction(float(v)), Fraction(2.2), 6, False,
                                      ROUNDERS["half_even"]), fmt) for v in x]
    assert_bitwise_equal(got.astype(np.float64), np.array(want))


def test_nan_stochastic_and_errors():
    x = np.float32([np.nan, 0.5, 5.0])
    out = rq.pact.fake_quantize(x, 1.0, bits=2)
    assert np.isnan(out[0]) and out[1:].tolist() == [float(np.float32(2 / 3)), 1.0]
    xs = np.full(20000, 0.1, np.float32)
    mean = rq.pact.fake_quantize(xs, 1.0, bits=2, rounding="stochastic", rng=0).astype(float).mean()
    assert abs(mean - 0.1) < 0.01
    with pytest.raises(ValueError):
        rq.pact.fake_quantize(x, 0.0, bits=4)
    with pytest.raises(ValueError):
        rq.pact.fake_quantize(x, 1.0, bits=0)
    with pytest.raises(ValueError):
        rq.pact.fake_quantize(x, 1.0, bits=1, signed=True)
    with pytest.raises(ValueError, match="rounding"):
        rq.pact.fake_quantize(x, 1.0, bits=4, rounding="nearest")
    with pytest.raises(TypeError):
        rq.pact.fake_quantize(np.arange(3), 1.0, bits=4)


def test_per_channel_equals_per_tensor_slices():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 50)).astype(np.float32)
    alphas = np.array([0.5, 1.0, 2.5])
    out = rq.pact.fake_quantize(x, alphas, bits=4, signed=True, axis=0)
    g = rng.normal(size=x.shape).astype(np.float32)
    _, ga = rq.pact.fake_quantize_grad(x, alphas, g, bits=4, signed=True, axis=0)
    assert ga.shape == (3,) and ga.dtype == np.float32
    for c in range(3):
        assert_bitwise_equal(out[c], rq.pact.fake_quantize(x[c], alphas[c], bits=4, signed=True))
        _, gac = rq.pact.fake_quantize_grad(x[c], alphas[c], g[c], bits=4, signed=True)
        assert_bitwise_equal(ga[c], gac)
    with pytest.raises(ValueError):
        rq.pact.fake_quantize(x, alphas[:2], bits=4, axis=0)


@pytest.mark.parametrize("signed", [False, True])
def test_gradients_finite_difference(signed):
    rng = np.random.default_rng(2)
    alpha, h = 1.5, 1e-6
    x = rng.uniform(-3, 3, 500)
    x = x[np.abs(np.abs(x) - alpha) > 1e-3]
    g = rng.normal(size=x.size)
    gx, ga = rq.pact.fake_quantize_grad(x, alpha, g, bits=4, signed=signed)
    # STE surrogate: clip(x, lo, alpha) has the same derivatives as PACT's forward under the STE
    lo = (lambda a: -a) if signed else (lambda a: 0.0)
    fd_alpha = (np.clip(x, lo(alpha + h), alpha + h) - np.clip(x, lo(alpha - h), alpha - h)) / (2 * h)
    assert abs(float(ga) - float(np.sum(g * fd_alpha))) < 1e-6
    fd_x = (np.clip(x + h, lo(alpha), alpha) - np.clip(x - h, lo(alpha), alpha)) / (2 * h)
    assert np.allclose(gx, g * fd_x, atol=1e-6)


def test_grad_boundaries_and_sign():
    x = np.float32([-3.0, -2.0, -1.0, 2.0, 3.0])
    g = np.float32([1, 1, 1, 1, 1])
    gx, ga = rq.pact.fake_quantize_grad(x, 2.0, g, bits=4, signed=True, reduce=False)
    assert gx.tolist() == [0, 1, 1, 1, 0]
    assert ga.tolist() == [-1, -1, 0, 1, 1]  # the lower clip contributes -1 (TorchApprox: +1)
    gx, ga = rq.pact.fake_quantize_grad(x, 2.0, g, bits=4)
    assert gx.tolist() == [0, 0, 0, 1, 0] and float(ga) == 2.0


@given(st.lists(st.floats(-5, 5, width=32), min_size=1, max_size=30),
       st.sampled_from(CASES))
def test_idempotent_on_grid_and_no_mutation(xs, case):
    alpha, bits, signed = case
    x = np.array(xs, np.float64)
    x0 = x.copy()
    out = rq.pact.fake_quantize(x, alpha, bits=bits, signed=signed)
    assert_bitwise_equal(rq.pact.fake_quantize(out, alpha, bits=bits, signed=signed), out)
    assert_bitwise_equal(x, x0)
    n = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    assert (np.abs(np.clip(x, -alpha if signed else 0, alpha) - out) <= alpha / n / 2 * (1 + 1e-9)).all()


@pytest.mark.parametrize("alpha", [2.2, 0.1, 1 / 3, 7.3e-5, 3.1e4, 1e-300, 1e300])
@pytest.mark.parametrize("rounding", ["half_even", "half_away", "floor", "ceil"])
def test_float64_quotient_is_exact_near_every_tie(alpha, rounding):
    """float64 inputs within a few ulps of every tie and every code: y * N / alpha is not
    rounded before the decision (the Fraction oracle has no intermediate rounding)."""
    bits, signed = 8, True
    n = 2 ** (bits - 1) - 1
    centres = [Fraction(alpha) * Fraction(2 * m + 1, 2 * n) for m in range(-n - 1, n)]
    centres += [Fraction(alpha) * Fraction(m, n) for m in range(-n, n + 1, 7)]
    xs = []
    for c in centres:
        v = np.float64(float(c))
        for _ in range(3):
            v = np.nextafter(v, -np.inf)
        for _ in range(7):
            xs.append(v)
            v = np.nextafter(v, np.inf)
    x = np.array(xs, np.float64)
    got = rq.pact.fake_quantize(x, alpha, bits=bits, signed=signed, rounding=rounding)
    want = np.array([round_to_format(pact_fake(Fraction(float(v)), Fraction(alpha), bits, signed,
                                               ROUNDERS[rounding]), "float64") + 0.0 for v in x])
    assert_bitwise_equal(got, want)


@pytest.mark.parametrize("alpha,bits,signed", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantize_codes_match_the_fraction_oracle(alpha, bits, signed, dtype):
    n = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    x = _tie_heavy(alpha, n, signed, dtype)
    q = rq.pact.quantize(x, alpha, bits=bits, signed=signed)
    lo = -Fraction(alpha) if signed else Fraction(0)
    want = [ROUNDERS["half_even"](min(max(Fraction(float(v)), lo), Fraction(alpha)) * n / Fraction(alpha))
            for v in x]
    assert q.dtype == np.int32 and q.tolist() == want


@pytest.mark.parametrize("alpha,bits,signed", CASES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_fake_quantize_is_dequantize_of_quantize(alpha, bits, signed, dtype):
    n = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    x = _tie_heavy(alpha, n, signed, np.float32).astype(dtype)
    q = rq.pact.quantize(x, alpha, bits=bits, signed=signed)
    assert_bitwise_equal(rq.pact.dequantize(q, alpha, bits=bits, signed=signed, dtype=dtype),
                         rq.pact.fake_quantize(x, alpha, bits=bits, signed=signed))


def test_quantize_and_dequantize_refuse_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        rq.pact.quantize(np.float32([np.nan]), 1.0, bits=4)
    with pytest.raises(ValueError, match=r"q must lie in \[0, 15\]"):
        rq.pact.dequantize(np.int32([16]), 1.0, bits=4)
    with pytest.raises(TypeError, match="q must hold integer"):
        rq.pact.dequantize(np.float32([1.0]), 1.0, bits=4)
    with pytest.raises(TypeError, match="rng must be"):
        rq.pact.fake_quantize(np.float32([0.5]), 1.0, bits=4, rounding="stochastic", rng=True)
    with pytest.raises(TypeError, match="dtype must be"):
        rq.pact.dequantize(np.int32([1]), 1.0, bits=4, dtype=np.int32)
