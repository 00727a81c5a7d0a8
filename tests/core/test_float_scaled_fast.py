"""The certified fast path of scaled float quantization (one float64 division, the exact quotient
path only where the float64 quotient sits on a rounding boundary) against the exact quotient path
and a Fraction oracle, bit for bit, on inputs aimed at those boundaries."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refquant as rq
from refquant import floatquant as fq
from refquant._kernels import _float as k
from refquant._validation import flat_float
from tests.float_oracles import MODES, SPEC, positive_levels, round_code

ml_dtypes = pytest.importorskip("ml_dtypes")

NAMES = list(SPEC)
F32_TINY = float(np.float32(1.4e-45))  # float32 subnormal scales
SCALES = [1.0, 0.1, 3.0, 1.0 / 3.0, 2.0**-20, 7.0e12, 1e-300, 1e300, 1e-30, F32_TINY,
          float(np.float32(3e-39)), float(np.float32(0.1)), 1.0000000000000002, 0.9999999999999999]


def slow_codes(x, scales, gidx, name, mode, saturate=None):
    """The codes of the exact quotient path (encode_quotient on every element)."""
    cast = fq._Cast(getattr(rq, name), "exact", saturate, mode)
    xk = flat_float(x)
    out = np.empty(xk.size, np.uint8)
    k.encode_scaled_kernel.serial(xk, gidx, scales, *cast.fp, cast.sp, cast.mode, np.empty(0), out)
    return out.reshape(x.shape)


def boundaries(name):
    """Every format value and every midpoint between neighbours (float64, exact), positive."""
    vals = np.array([float(v) for v, _ in positive_levels(name)])
    mids = (vals[:-1] + vals[1:]) / 2
    top, ulp = vals[-1], vals[-1] - vals[-2]
    return np.concatenate([vals, mids, [top + ulp / 2, top + ulp, vals[vals > 0][0] / 2]])


def aimed(name, s):
    """x near boundary * s: products rounded to float64 and float32, their ulp neighbours, both
    signs, and the specials."""
    b = boundaries(name)
    with np.errstate(over="ignore", under="ignore"):
        x = b * s
        x32 = x.astype(np.float32).astype(np.float64)
    base = np.concatenate([x, x32])
    pos = np.concatenate([base, np.nextafter(base, np.inf), np.nextafter(base, -np.inf),
                          np.nextafter(np.nextafter(base, np.inf), np.inf),
                          np.nextafter(np.nextafter(base, -np.inf), -np.inf)])
    pos = pos[np.isfinite(pos) & (pos > 0)]
    x = np.concatenate([pos, -pos, [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 5e-324, -5e-324,
                                    1.7976931348623157e308, -1.7976931348623157e308]])
    return x if getattr(rq, name).has_nan else x[~np.isnan(x)]


def check_fast_equals_slow(x, s, name, mode, saturate=None):
    scales = np.array([s], np.float64)
    fast = rq.quantize(x, s, fmt=name, rounding=mode, saturate=saturate)
    slow = slow_codes(x, scales, np.empty(0, np.intp), name, mode, saturate)
    bad = np.flatnonzero(fast != slow)
    assert bad.size == 0, [(float(x[i]), s, int(fast[i]), int(slow[i])) for i in bad[:5]]
    return fast


def oracle_ok(xv, s, name):
    """Inputs where the Fraction oracle (finite nonzero quotients, saturating) speaks."""
    if not np.isfinite(xv) or xv == 0:
        return False
    if not SPEC[name][3] and xv < 0:
        return False
    q = Fraction(float(xv)) / Fraction(s)
    return not (SPEC[name][5] is False and q < Fraction(float(positive_levels(name)[0][0])))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("s", SCALES)
def test_fast_path_equals_exact_quotient_path_on_aimed_inputs(name, s):
    x = aimed(name, s)
    for mode in MODES:
        check_fast_equals_slow(x, s, name, mode)
    if getattr(rq, name).has_inf or getattr(rq, name).has_nan:
        check_fast_equals_slow(x, s, name, "half_even", saturate=False)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("s", [0.1, 1.0 / 3.0, 7.0e12, 1e-300, 1e300, F32_TINY])
def test_fast_path_equals_fraction_oracle(name, s):
    x = aimed(name, s)
    x = x[[oracle_ok(v, s, name) for v in x]]
    for mode in ("half_even", "half_away", "floor", "ceil", "toward_zero"):
        got = rq.quantize(x, s, fmt=name, rounding=mode)
        want = np.array([round_code(Fraction(float(v)) / Fraction(s), name, mode) for v in x], np.uint8)
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, [(float(x[i]), mode, int(got[i]), int(want[i])) for i in bad[:5]]


def test_true_ties_and_quotients_rounding_onto_ties():
    """x = midpoint * s exactly (a real tie), and x whose float64 quotient by a full-precision s
    rounds onto a midpoint though the real quotient is not one: both must round like the real."""
    rng = np.random.default_rng(7)
    for name in NAMES:
        b = boundaries(name)
        for s in np.concatenate([rng.random(8).astype(np.float32).astype(np.float64) * 4 + 0.01,
                                 rng.random(8) * 4 + 0.01]):
            x = b * s  # exact for float32 s (at most 29 bits), rounded for float64 s
            rounds_on = x[x / s == b]
            assert rounds_on.size  # the quotient lands on the boundary: the fallback is exercised
            x = np.concatenate([x, np.nextafter(x, np.inf), np.nextafter(x, 0)])
            x = x[np.isfinite(x)]
            for mode in MODES:
                got = check_fast_equals_slow(x, s, name, mode)
            keep = [oracle_ok(v, s, name) for v in x]
            want = [round_code(Fraction(float(v)) / Fraction(float(s)), name) for v in x[keep]]
            got = rq.quantize(x[keep], s, fmt=name)
            np.testing.assert_array_equal(got, np.array(want, np.uint8))


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32, np.float64])
@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn"])
def test_per_channel_and_per_block_every_input_dtype(dtype, name):
    rng = np.random.default_rng(3)
    s_ch = np.concatenate([rng.random(5) * 3 + 1e-3, [1e-30, F32_TINY, 2.0**-8]]).astype(np.float32)
    b = boundaries(name)
    x = (b[rng.integers(0, b.size, (8, 64))] * s_ch[:, None].astype(np.float64))
    x = np.where(rng.random(x.shape) < 0.3, np.nextafter(x, np.inf), x)
    x[0, :4] = [np.nan if getattr(rq, name).has_nan else 1.0, -np.inf, -0.0, 0.0]
    if not SPEC[name][3]:
        x = np.abs(x)
    with np.errstate(over="ignore", under="ignore"):
        xd = x.astype(dtype)
    for mode in ("half_even", "half_away", "ceil"):
        got = rq.quantize(xd, s_ch, fmt=name, axis=0, rounding=mode)
        scales, gidx = fq._group_index(xd.shape, s_ch, 0, None)
        np.testing.assert_array_equal(got, slow_codes(xd, scales, gidx, name, mode))
        sb = s_ch.reshape(4, 2)
        got = rq.quantize(xd, sb, fmt=name, block_size=(2, 32), rounding=mode)
        scales, gidx = fq._group_index(xd.shape, sb, None, (2, 32))
        np.testing.assert_array_equal(got, slow_codes(xd, scales, gidx, name, mode))


@st.composite
def aimed_case(draw):
    name = draw(st.sampled_from(NAMES))
    b = boundaries(name)
    s = draw(st.one_of(
        st.floats(1e-300, 1e300, allow_nan=False, allow_infinity=False),
        st.floats(F32_TINY, float(np.float32(3e38)), width=32),
        st.sampled_from(SCALES)))
    v = draw(st.sampled_from(list(b)))
    toward = np.inf if draw(st.booleans()) else -np.inf
    with np.errstate(over="ignore", under="ignore"):
        x = np.float64(v) * np.float64(s)
        if draw(st.booleans()):
            x = np.float64(np.float32(x))
        for _ in range(draw(st.integers(0, 3))):  # ulp neighbours
            x = np.nextafter(x, toward)
    if draw(st.booleans()) and SPEC[name][3]:
        x = -x
    return name, float(s), float(x), draw(st.sampled_from(MODES))


@settings(deadline=None, max_examples=300)
@given(aimed_case())
def test_hypothesis_fast_equals_slow_and_oracle(case):
    name, s, xv, mode = case
    x = np.array([xv, xv, -xv])
    got = check_fast_equals_slow(x, s, name, mode)
    if oracle_ok(xv, s, name):
        assert got[0] == round_code(Fraction(xv) / Fraction(s), name, mode)
