"""MX (OCP) against a Fraction oracle, and the MX API's bad-input handling."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refquant as rq
from tests.cross.test_float_mx import adversarial_blocks
from tests.float_oracles import round_code
from tests.references import round_half_even

FORMATS = ["float8_e4m3fn", "float8_e5m2", "float6_e3m2fn", "float6_e2m3fn", "float4_e2m1fn"]
EMAX = {"float8_e4m3fn": 8, "float8_e5m2": 15, "float6_e3m2fn": 4, "float6_e2m3fn": 2,
        "float4_e2m1fn": 2, "int8": 0}


def oracle_exponent(row, emax):
    amax = max(abs(Fraction(float(v))) for v in row)
    if amax == 0:
        return -127
    e = amax.numerator.bit_length() - amax.denominator.bit_length()
    if Fraction(2) ** e > amax:
        e -= 1
    return min(max(e - emax, -127), 127)


@pytest.mark.parametrize("name", FORMATS + ["int8"])
def test_ocp_matches_fraction_oracle(name):
    x = adversarial_blocks(name if name != "int8" else "float8_e4m3fn")[::3]
    fmt = getattr(rq, name)
    codes, scales = rq.mx.quantize(x, fmt)
    for r, row in enumerate(x):
        E = oracle_exponent(row, EMAX[name])
        assert scales[r, 0] == E + 127, (r, scales[r, 0], E)
        for j, v in enumerate(row):
            t = Fraction(float(v)) / Fraction(2) ** E
            if name == "int8":
                want = min(max(round_half_even(t * 64), -127), 127)
            elif t == 0:
                want = 0 if not np.signbit(v) else fmt.sign_bit
            else:
                want = round_code(t, name)
            assert int(codes[r, j]) == want, (r, j, float(v), int(codes[r, j]), want)


@pytest.mark.parametrize("name", FORMATS + ["int8"])
def test_dequantize_and_fake(name):
    fmt = getattr(rq, name)
    x = adversarial_blocks("float4_e2m1fn")[:40].reshape(20, 2, 32).transpose(0, 2, 1).copy()
    codes, scales = rq.mx.quantize(x, fmt, axis=1)
    assert codes.shape == x.shape and scales.shape == (20, 1, 2)
    back = rq.mx.dequantize(codes, scales, fmt, axis=1, dtype=np.float64)
    table = (np.arange(-128, 128) / 64.0) if name == "int8" else fmt.decode_table()
    v = table[codes.astype(np.int64) + (128 if name == "int8" else 0)]
    np.testing.assert_array_equal(back, v * np.repeat(np.ldexp(1.0, scales.astype(int) - 127), 32, axis=1))
    fake = rq.mx.fake_quantize(x, fmt, axis=1)
    assert fake.dtype == x.dtype
    np.testing.assert_array_equal(fake, back.astype(np.float32))
    # idempotent: the fake-quantized blocks quantize to the same codes
    c2, s2 = rq.mx.quantize(fake, fmt, axis=1)
    np.testing.assert_array_equal(rq.mx.dequantize(c2, s2, fmt, axis=1), fake)


def test_nonfinite_blocks_ocp():
    x = np.ones((3, 32), np.float32)
    x[0, 1], x[1, 2] = np.nan, np.inf
    codes, scales = rq.mx.quantize(x, rq.float8_e4m3fn)
    assert scales.ravel().tolist() == [255, 255, 127 - 8]  # 1.0 in e4m3: E = 0 - emax
    out = rq.mx.fake_quantize(x, rq.float8_e4m3fn)
    assert np.isnan(out[:2]).all() and (out[2] == 1).all()


def test_bad_input():
    x = np.ones((2, 30), np.float32)
    with pytest.raises(ValueError, match="block=32 must be a positive integer dividing x.shape"):
        rq.mx.quantize(x, rq.float8_e4m3fn)
    with pytest.raises(ValueError, match="ocp"):
        rq.mx.quantize(x, rq.float8_e4m3fn, block=10, convention="nope")
    with pytest.raises(TypeError, match="brevitas"):
        rq.mx.quantize(x.astype(np.float64), rq.float8_e4m3fn, block=10, convention="brevitas")
    with pytest.raises(ValueError, match="not a power of two"):
        rq.mx.quantize(np.zeros((1, 32), np.float32), rq.float8_e4m3fn, convention="brevitas")
    with pytest.raises(ValueError, match="fixes scale_rule"):
        rq.mx.quantize(x, rq.float8_e4m3fn, block=10, scale_rule="ceil", convention="torchao.rceil")
    with pytest.raises(ValueError, match="int8"):
        rq.mx.quantize(x, rq.int4, block=10)
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        rq.mx.quantize(x, "float8_e4m3", block=10)
    with pytest.raises(ValueError, match="scale_codes"):
        rq.mx.dequantize(np.zeros((2, 30), np.uint8), np.zeros((2, 2), np.uint8), rq.float8_e4m3fn, block=10)
    with pytest.raises(ValueError, match="codes must lie"):
        rq.mx.dequantize(np.full((1, 4), 16), np.zeros((1, 1), np.uint8), rq.float4_e2m1fn, block=4)


@pytest.mark.parametrize("rule", ["ceil", "even", "rceil"])
def test_scale_rules_differ_from_floor(rule):
    """M7: the rules give other exponents on blocks whose amax is not a power of two."""
    x = np.float32([[3.9] + [0.1] * 31])  # floor(log2 3.9) = 1, ceil = 2; 3.9 / 6 = 0.65
    _, s_floor = rq.mx.quantize(x, rq.float4_e2m1fn)
    _, s_rule = rq.mx.quantize(x, rq.float4_e2m1fn, scale_rule=rule)
    assert s_floor[0, 0] == 126 and s_rule[0, 0] == 127
    y = np.float32([[3.0] + [0.1] * 31])  # 1.5 * 2: its 1-bit mantissa does not carry under even
    assert rq.mx.quantize(y, rq.float4_e2m1fn, scale_rule="even")[1][0, 0] == 126


@settings(max_examples=60)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=8, max_size=8),
       st.sampled_from(FORMATS + ["int8"]), st.sampled_from(["float16", "float32", "float64"]))
def test_blocks_are_independent_and_dtype_exact(vals, name, dtype):
    """Each block is quantized alone; float16/float64 inputs (the general path) agree with the
    oracle as float32 inputs (the fast path) do; the input is not modified."""
    fmt = getattr(rq, name)
    with np.errstate(over="ignore"):  # float32 values beyond float16's range: inf, skipped below
        x = np.array(vals + vals[::-1], dtype=np.float32).astype(dtype)
    if not np.isfinite(x).all():
        return
    keep = x.copy()
    codes, scales = rq.mx.quantize(x, fmt, block=8)
    np.testing.assert_array_equal(x, keep)
    for b in range(2):
        c1, s1 = rq.mx.quantize(x[8 * b:8 * b + 8], fmt, block=8)
        np.testing.assert_array_equal(c1, codes[8 * b:8 * b + 8])
        assert s1[0] == scales[b]
        E = oracle_exponent(x[8 * b:8 * b + 8], EMAX[name])
        assert scales[b] == E + 127
        for j, v in enumerate(x[8 * b:8 * b + 8]):
            t = Fraction(float(v)) / Fraction(2) ** E
            if name == "int8":
                want = min(max(round_half_even(t * 64), -127), 127)
            elif t == 0:
                want = fmt.sign_bit if np.signbit(v) else 0
            else:
                want = round_code(t, name)
            assert int(codes[8 * b + j]) == want


@pytest.mark.parametrize("dtype,fmt", [("float64", "float8_e4m3fn"), ("float32", "int8"),
                                       ("float64", "int8"), ("float64", "float4_e2m1fn")])
def test_nonfinite_blocks_on_the_general_path(dtype, fmt):
    """A NaN/inf block under exact scaling once wrote into a buffer only microxcaling allocates
    (heap corruption, a later crash): run where a crash shows as a failed child process."""
    import subprocess
    import sys

    code = (f"import numpy as np, refquant as rq, gc\n"
            f"x = np.ones((64, 64), np.{dtype}); x[0, 5] = np.nan; x[1, 40] = -np.inf\n"
            f"for _ in range(10):\n"
            f"    y = rq.mx.fake_quantize(x, rq.{fmt}, convention='ocp'); gc.collect()\n"
            f"assert np.isnan(y[0, :32]).all() and np.isnan(y[1, 32:]).all() and (y[2:] == 1).all()\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()[-500:]
