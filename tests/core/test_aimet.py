"""rq.aimet: the range rule against a Fraction oracle (bitwise), scale and offset against their
definitions, the gradients against finite differences."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refquant as rq

from .. import references

DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64}
EDGES = [0.0, -0.0, 1e-45, -1e-45, 1e-38, -1e-38, 1.0, -1.0, 3.0, -2.5, 1e-30, 6e4, -6e4, 1e30, -3e38]


def _edges(dtype):
    with np.errstate(over="ignore"):
        v = np.array(EDGES, dtype).astype(np.float64)
    return [float(x) for x in v if np.isfinite(x)]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("bits,symmetric", [(8, False), (8, True), (4, True), (16, False), (2, True)])
def test_encoding_range_matches_fraction_oracle(dtype, bits, symmetric):
    vals = _edges(dtype)
    qmin, qmax = (rq.IntFormat(bits, signed=symmetric).qmin, rq.IntFormat(bits, signed=symmetric).qmax)
    lo_in = np.array([a for a in vals for _ in vals], DTYPES[dtype])
    hi_in = np.array([b for _ in vals for b in vals], DTYPES[dtype])
    lo, hi = rq.aimet.encoding_range(lo_in, hi_in, qmin=qmin, qmax=qmax, symmetric=symmetric)
    assert lo.dtype == hi.dtype == lo_in.dtype
    expected = [references.aimet_range(float(a), float(b), qmax - qmin, symmetric, dtype)
                for a, b in zip(lo_in, hi_in, strict=True)]
    # the oracle's Fractions have no -0.0 (test_negative_zero_min_is_kept checks the sign)
    references.assert_bitwise_equal(lo + 0, np.array([e[0] for e in expected], DTYPES[dtype]))
    references.assert_bitwise_equal(hi + 0, np.array([e[1] for e in expected], DTYPES[dtype]))


def test_negative_zero_min_is_kept():
    """min(x_min, 0) keeps x_min unless it is above 0: -0.0 stays -0.0 (torch.clamp's rule); the
    widening adds 0 to hi, which makes a -0.0 there +0.0."""
    lo, hi = rq.aimet.encoding_range(np.float32([-0.0, -1.0]), np.float32([1.0, -0.0]), qmin=0, qmax=255)
    assert lo.tolist() == [0.0, -1.0] and np.signbit(lo).tolist() == [True, True]
    assert hi.tolist() == [1.0, 0.0]


@settings(deadline=None, max_examples=200)
@given(a=st.floats(width=32, allow_nan=False, allow_infinity=False),
       b=st.floats(width=32, allow_nan=False, allow_infinity=False), symmetric=st.booleans(),
       bits=st.integers(2, 16))
def test_encoding_range_fuzz(a, b, symmetric, bits):
    fmt = rq.IntFormat(bits, signed=symmetric)
    lo, hi = rq.aimet.encoding_range(np.float32(a), np.float32(b), qmin=fmt.qmin, qmax=fmt.qmax,
                                     symmetric=symmetric)
    elo, ehi = references.aimet_range(a, b, fmt.qmax - fmt.qmin, symmetric)
    references.assert_bitwise_equal(np.float32([lo, hi]) + 0, np.float32([elo, ehi]))


def test_encoding_range_keeps_nan_and_checks_arguments():
    lo, hi = rq.aimet.encoding_range(np.float32([np.nan]), np.float32([np.nan]), qmin=0, qmax=255)
    assert np.isnan(lo).all() and np.isnan(hi).all()
    with pytest.raises(TypeError, match="x_min must be a float16"):
        rq.aimet.encoding_range(np.int32([1]), np.float32([1]), qmin=0, qmax=255)
    with pytest.raises(TypeError, match="one dtype"):
        rq.aimet.encoding_range(np.float64([1]), np.float32([1]), qmin=0, qmax=255)
    with pytest.raises(ValueError, match="qmin must be < qmax"):
        rq.aimet.encoding_range(np.float32([1]), np.float32([1]), qmin=3, qmax=3)


@settings(deadline=None, max_examples=200)
@given(lo=st.floats(-1e6, 0, width=32), width=st.floats(2**-10, 1e6, width=32), bits=st.integers(2, 16))
def test_scale_and_offset_are_their_definitions(lo, width, bits):
    n = 2**bits - 1
    lo32, hi32 = np.float32(lo), np.float32(np.float32(lo) + np.float32(width))
    s = rq.aimet.scale(lo32, hi32, qmin=0, qmax=n)
    if s == 0:  # the width vanished in float32: offset is -inf for a negative min, NaN for 0
        assert np.isnan(rq.aimet.offset(lo32, hi32, qmin=0, qmax=n)) == (lo32 == 0)
        return
    # scale: f32(f32(hi - lo) / n); offset: rne(f32(lo / s)) - qmin, every op rounded once
    diff = references.round_to_format(Fraction(float(hi32)) - Fraction(float(lo32)), "float32")
    assert s == references.round_to_format(Fraction(diff) / n, "float32")
    o = rq.aimet.offset(lo32, hi32, qmin=0, qmax=n)
    q = references.round_to_format(Fraction(float(lo32)) / Fraction(float(s)), "float32")
    assert o == references.round_half_even(Fraction(q)) and o.dtype == np.float32


def _central(f, v, h):
    return (f(v + h) - f(v - h)) / (2 * h)


@pytest.mark.parametrize("x,s,o", [(0.7, 0.25, -3.0), (-1.3, 0.01, 2.0), (5.0, 2.0, 0.0)])
def test_quantize_grad_is_the_derivative_of_the_unrounded_code(x, s, o):
    """Inside the range the code is x / s - o up to the straight-through rounding."""
    g = np.float64([1.5])
    gx, gs, go = rq.aimet.quantize_grad(np.float64([x]), np.float64(s), g, np.float64([1.0]))
    code = lambda x_, s_, o_: x_ / s_ - o_  # noqa: E731
    h = 1e-6
    assert gx[0] == pytest.approx(1.5 * _central(lambda v: code(v, s, o), x, h), rel=1e-6)
    assert gs[0] == pytest.approx(1.5 * _central(lambda v: code(x, v, o), s, h * s), rel=1e-6)
    assert go[0] == pytest.approx(1.5 * _central(lambda v: code(x, s, v), o, h), rel=1e-6)
    masked = rq.aimet.quantize_grad(np.float64([x]), np.float64(s), g, np.float64([0.0]))
    assert all(float(v[0]) == 0.0 for v in masked)


@pytest.mark.parametrize("q,s,o", [(3.0, 0.25, -3.0), (-7.0, 0.01, 2.0), (0.0, 2.0, 5.0)])
def test_dequantize_grad_is_the_derivative_of_the_value(q, s, o):
    g = np.float64([0.5])
    gq, gs, go = rq.aimet.dequantize_grad(np.float64([q]), np.float64(s), np.float64(o), g)
    value = lambda q_, s_, o_: (q_ + o_) * s_  # noqa: E731
    h = 1e-6
    assert gq[0] == pytest.approx(0.5 * _central(lambda v: value(v, s, o), q, h), rel=1e-6)
    assert gs[0] == pytest.approx(0.5 * _central(lambda v: value(q, v, o), s, h), rel=1e-6, abs=1e-9)
    assert go[0] == pytest.approx(0.5 * _central(lambda v: value(q, s, v), o, h), rel=1e-6)
