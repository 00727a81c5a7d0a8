"""APoT levels, projection, tie rule, torch.experimental codes and RCF gradients."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refquant as rq
from tests.apot_oracles import (
    authors_levels,
    f32_distance_code,
    nearest_code,
    paper_levels,
    signed_levels,
)
from tests.references import assert_bitwise_equal, round_to_format

UNSIGNED = [(b, k) for b in range(1, 9) for k in range(1, b + 1) if b % k == 0]


def test_paper_example_b4_k2():
    expected = [0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48]
    assert rq.apot.levels(4, 2).tolist() == [float(Fraction(n, 48)) for n in expected]


@pytest.mark.parametrize("bits,k", UNSIGNED)
def test_unsigned_levels_match_eq5(bits, k):
    lv = rq.apot.levels(bits, k)
    assert lv.dtype == np.float64 and lv.size == 2**bits == np.unique(lv).size
    assert lv.tolist() == [float(v) for v in paper_levels(bits, k)]
    assert np.all(np.diff(lv) > 0) and lv[-1] == 1.0


@pytest.mark.parametrize("bits", range(1, 9))
def test_k1_is_uniform(bits):
    n = 2**bits - 1
    assert rq.apot.levels(bits, 1, alpha=2.2).tolist() == [
        float(Fraction(2.2) * m / n) for m in range(n + 1)
    ]


@pytest.mark.parametrize("bits,B", [(3, 2), (4, 3), (5, 4), (6, 5), (7, 6)])
def test_signed_k2_matches_authors_tables(bits, B):
    lv = rq.apot.levels(bits, 2, alpha=3.0, signed=True)
    want = signed_levels([3 * v for v in authors_levels(B)])
    assert lv.size == 2**bits - 1
    assert lv.tolist() == [float(v) for v in want]


def test_research_tables():
    assert (rq.apot.levels(3, 2, signed=True, alpha=3.0) == [-3, -1.5, -0.75, 0, 0.75, 1.5, 3]).all()
    b5 = authors_levels(5)
    assert sorted(v * 100 for v in b5)[:8] == list(range(8))
    lv = rq.apot.levels(8, 2)
    assert lv[1] == float(Fraction(1, 3840)) and lv[-2] == 15 / 16
    lv = rq.apot.levels(8, 4)
    assert lv[1] == float(Fraction(1, 805306368)) and lv[-2] == 0.75
    assert rq.apot.levels(6, 3).tolist() == [float(v) for v in paper_levels(6, 3)]
    assert rq.apot.levels(6, 2).tolist() == [float(v) for v in authors_levels(6)]


@pytest.mark.parametrize(
    "kwargs,exc",
    [
        ({"bits": 4, "k": 3}, ValueError),
        ({"bits": 0, "k": 1}, ValueError),
        ({"bits": 17, "k": 1}, ValueError),
        ({"bits": 4, "k": 0}, ValueError),
        ({"bits": 5, "k": 3, "signed": True}, ValueError),
        ({"bits": 1, "k": 1, "signed": True}, ValueError),
        ({"bits": 4, "k": 2, "alpha": 0.0}, ValueError),
        ({"bits": 4, "k": 2, "alpha": -1.0}, ValueError),
        ({"bits": 4, "k": 2, "alpha": np.inf}, ValueError),
        ({"bits": 4, "k": 2, "alpha": np.nan}, ValueError),
        ({"bits": 4.5, "k": 2}, TypeError),
    ],
)
def test_bad_arguments(kwargs, exc):
    with pytest.raises(exc):
        rq.apot.levels(**kwargs)


CASES = [(4, 2, False, 1.0), (4, 2, True, 3.0), (6, 3, False, 2.2), (8, 2, False, 1.0),
         (8, 4, False, 0.7), (6, 2, True, 1.1), (5, 1, True, 0.3)]


def _oracle_levels(bits, k, signed, alpha):
    if signed:
        width = bits - 1
        mags = paper_levels(width, k) if width % k == 0 else authors_levels(width)
        unit = signed_levels(mags)
    else:
        unit = paper_levels(bits, k)
    return [Fraction(float(Fraction(alpha) * u)) for u in unit]  # the float64 levels, exactly


@pytest.mark.parametrize("bits,k,signed,alpha", CASES)
def test_every_level_maps_to_itself(bits, k, signed, alpha):
    lv = rq.apot.levels(bits, k, alpha=alpha, signed=signed)
    codes = rq.apot.quantize(lv, alpha, bits=bits, k=k, signed=signed)
    assert codes.tolist() == list(range(lv.size))
    out = rq.apot.fake_quantize(lv, alpha, bits=bits, k=k, signed=signed)
    assert_bitwise_equal(out, lv)
    back = rq.apot.dequantize(codes, alpha, bits=bits, k=k, signed=signed, dtype=np.float64)
    assert_bitwise_equal(back, lv)


def _around(v: Fraction, dtype):
    """The float of ``dtype`` nearest v and one ulp either side, as an array of that dtype."""
    c = np.array(float(v), dtype=dtype)
    return np.array([np.nextafter(c, -np.inf), c, np.nextafter(c, np.inf)], dtype=dtype)


@pytest.mark.parametrize("bits,k,signed,alpha", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thresholds_and_neighbours_follow_tie_rule(bits, k, signed, alpha, dtype):
    exact = _oracle_levels(bits, k, signed, alpha)
    xs = np.concatenate([_around((a + b) / 2, dtype) for a, b in zip(exact[:-1], exact[1:])])
    want = [nearest_code(Fraction(float(v)), exact) for v in xs]
    got = rq.apot.quantize(xs, alpha, bits=bits, k=k, signed=signed)
    assert got.tolist() == want


def test_documented_ties():
    x = np.float32([0.875, -0.875, 0.5 * (1 / 48)])
    assert rq.apot.quantize(x[:1], 1.0, bits=4, k=2).tolist() == [14]  # 0.75, not 1.0
    out = rq.apot.fake_quantize(x[:2], 1.0, bits=5, k=2, signed=True)
    assert out.tolist() == [0.75, -0.75]


def test_clipping_nan_inf_and_dtypes():
    x = np.array([-np.inf, -5.0, 5.0, np.inf, np.nan], np.float32)
    out = rq.apot.fake_quantize(x, 2.0, bits=4, k=2, signed=True)
    assert out[:4].tolist() == [-2.0, -2.0, 2.0, 2.0] and np.isnan(out[4])
    out = rq.apot.fake_quantize(x, 2.0, bits=4, k=2)
    assert out[:4].tolist() == [0.0, 0.0, 2.0, 2.0] and out.dtype == np.float32
    with pytest.raises(ValueError, match="NaN"):
        rq.apot.quantize(x, 2.0, bits=4, k=2)
    with pytest.raises(TypeError):
        rq.apot.quantize(np.arange(3), 1.0, bits=4, k=2)
    assert rq.apot.quantize(np.zeros(3), 1.0, bits=8, k=2).dtype == np.uint8
    assert rq.apot.quantize(np.zeros(3), 1.0, bits=10, k=2).dtype == np.uint16
    with pytest.raises(ValueError, match="codes"):
        rq.apot.dequantize(np.int64([16]), 1.0, bits=4, k=2)


@pytest.mark.parametrize("fmt", ["float16", "bfloat16", "float32"])
def test_levels_rounded_once_to_output_dtype(fmt):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dtype = ml_dtypes.bfloat16 if fmt == "bfloat16" else np.dtype(fmt)
    alpha = 2.2
    unit = paper_levels(6, 2)
    want = np.array([round_to_format(Fraction(alpha) * u, fmt) for u in unit], np.float64)
    got = rq.apot.dequantize(np.arange(64), alpha, bits=6, k=2, dtype=dtype)
    assert got.dtype == dtype
    assert_bitwise_equal(got.astype(np.float64), want)
    x = np.linspace(-1, 3, 301).astype(dtype)
    fq = rq.apot.fake_quantize(x, alpha, bits=6, k=2)
    assert fq.dtype == dtype
    assert set(fq.astype(np.float64).tolist()) <= set(want.tolist())


# ----------------------------------------------------------------------------- torch.experimental

E1_X = np.float32([0.0, 0.0215, 0.1692, 0.385, 1.0, 0.0391])
E1_INDICES = [0, 3, 12, 15, 2, 14, 8, 11, 10, 1, 13, 9, 4, 7, 6, 5]


def test_torch_experimental_e1():
    alpha, gamma, lv, idx = rq.apot.torch_experimental_qparams(E1_X, bits=4, k=2)
    assert alpha.dtype == np.float32 and alpha == 1.0
    assert gamma == np.float32(2 / 3) and lv.dtype == np.float32
    assert idx.tolist() == E1_INDICES
    assert_bitwise_equal(lv, np.float32([float(v) for v in paper_levels(4, 2)]))
    x = E1_X.copy()
    codes = rq.apot.quantize(x, alpha, bits=4, k=2, convention="torch.experimental")
    assert codes.tolist() == [0, 3, 8, 13, 5, 12] and codes.dtype == np.int32
    assert_bitwise_equal(x, E1_X)
    back = rq.apot.dequantize(codes, alpha, bits=4, k=2, convention="torch.experimental",
                              dtype=np.float64)
    assert back.round(6).tolist() == [0.0, 0.020833, 0.166667, 0.375, 1.0, 0.041667]


def test_torch_experimental_b6_indices_and_ties():
    want = [0, 3, 12, 15, 48, 51, 60, 63, 2, 14, 50, 62, 8, 11, 56, 59, 10, 58, 32, 35, 44, 47,
            34, 46, 40, 43, 42, 1, 13, 49, 61, 9, 57, 33, 45, 41, 4, 7, 52, 55, 6, 54, 36, 39,
            38, 5, 53, 37, 16, 19, 28, 31, 18, 30, 24, 27, 26, 17, 29, 25, 20, 23, 22, 21]
    _, g, _, idx = rq.apot.torch_experimental_qparams(np.float32([1.0]), bits=6, k=2)
    assert idx.tolist() == want and round(float(g), 7) == 0.5714286
    tie = rq.apot.quantize(np.float32([0.875, 2.0]), 1.0, bits=4, k=2,
                           convention="torch.experimental")
    assert tie.tolist() == [6, 5]  # 0.75 (lower level at a tie); 2.0 clips to alpha's code


def test_torch_experimental_e2():
    x = np.float32([0.0, -100.23, -37.18, 3.42, 8.93, 9.21, 87.92])
    alpha, *_ = rq.apot.torch_experimental_qparams(x, bits=4, k=2)
    assert alpha == np.float32(100.23)
    codes = rq.apot.quantize(x, alpha, bits=4, k=2, convention="torch.experimental")
    assert codes.tolist() == [0, 0, 0, 12, 2, 2, 5]


@pytest.mark.parametrize("bits,k,alpha", [(4, 2, 1.0), (8, 2, 1.7), (6, 3, 0.3)])
def test_torch_experimental_float32_distance_rule(bits, k, alpha):
    _, _, lv, idx = rq.apot.torch_experimental_qparams(np.float32([alpha]), bits=bits, k=k)
    mids = (lv[:-1].astype(np.float64) + lv[1:]) / 2
    rng = np.random.default_rng(3)
    x = np.concatenate([
        mids.astype(np.float32),
        np.nextafter(mids.astype(np.float32), np.float32(np.inf)),
        np.nextafter(mids.astype(np.float32), np.float32(-np.inf)),
        rng.uniform(0, alpha, 500).astype(np.float32),
    ])
    want = [int(idx[f32_distance_code(float(v), lv.tolist())]) for v in x]
    got = rq.apot.quantize(x, alpha, bits=bits, k=k, convention="torch.experimental")
    assert got.tolist() == want


E_SIGNED_INDICES = [48, 47, 46, 45, 44, 43, 41, 34, 42, 27, 20, 40, 39, 38, 13, 37, 33, 36, 26, 32,
                    31, 19, 30, 25, 24, 23, 18, 17, 29, 16, 12, 22, 15, 11, 35, 10, 9, 8, 28, 21, 6,
                    14, 7, 5, 4, 3, 2, 1, 0]  # research 2.3, torch's calculate_qparams(signed=True)


def test_torch_experimental_signed_levels():
    """torch's per-term-signed set: 49 levels, 39 distinct; values and, where a level is unique,
    its index equal torch's (duplicates' order is torch's unstable sort, documented)."""
    alpha, gamma, lv, idx = rq.apot.torch_experimental_qparams(np.float32([-1.0, 0.5]), bits=4,
                                                               k=2, signed=True)
    assert lv.size == 49 and np.unique(lv).size == 39 and alpha == 1.0
    assert gamma == np.float32(2 / 3)
    p = [[0.0, 1, -1, 2**-2, -(2**-2), 2**-4, -(2**-4)], [0.0, 2**-1, -(2**-1), 2**-3, -(2**-3),
                                                        2**-5, -(2**-5)]]
    terms = [sorted(t, reverse=True) for t in p]
    rows = [np.float32(np.float32(a) + np.float32(b)) for a in terms[0] for b in terms[1]]
    want = sorted(np.float32(gamma * r) for r in rows)
    assert_bitwise_equal(lv, np.array(want, np.float32))
    unique = [m for m in range(49) if (lv == lv[m]).sum() == 1]
    assert [idx[m] for m in unique] == [E_SIGNED_INDICES[m] for m in unique]
    assert sorted(idx.tolist()) == list(range(49))
    x = np.float32([-2.0, -0.3, 0.0, 0.15, 0.6, 3.0])
    codes = rq.apot.quantize(x, 1.0, bits=4, k=2, signed=True, convention="torch.experimental")
    back = rq.apot.dequantize(codes, 1.0, bits=4, k=2, signed=True, dtype=np.float32,
                              convention="torch.experimental")
    want = [lv[f32_distance_code(float(min(max(v, -1.0), 1.0)), lv.tolist())] for v in x]
    assert_bitwise_equal(back, np.array(want, np.float32))
    fq = rq.apot.fake_quantize(x, 1.0, bits=4, k=2, signed=True, convention="torch.experimental")
    assert_bitwise_equal(fq, back)


def test_torch_experimental_float32_row_sums():
    """b=8, k=4 spans exponents 0..29: torch sums each row in float32 (1 + 2**-29 -> 1)."""
    _, _, lv, _ = rq.apot.torch_experimental_qparams(np.float32([1.0]), bits=8, k=4)
    assert lv.size == 256 and np.unique(lv).size < 256  # float32 row sums coincide
    assert lv[-1] == np.float32(1.0) and (lv == np.float32(2 / 3)).sum() >= 2


def test_bad_convention():
    with pytest.raises(ValueError, match="convention"):
        rq.apot.quantize(np.float32([0.1]), 1.0, bits=4, k=2, convention="torch")
    with pytest.raises(ValueError, match="bits"):
        rq.apot.torch_experimental_qparams(np.float32([1.0]), bits=4, k=3)


# ----------------------------------------------------------------------------- gradients


def test_rcf_gradient_research_table():
    x = np.float64([-4.0, -1.3, -0.5, -0.05, 0.0, 0.12, 1.1, 2.9, 3.5])
    want_a = [-1.0, 0.033333, -0.033333, 0.016667, 0.0, -0.04, 0.033333, 0.033333, 1.0]
    for i in range(x.size):
        g = np.zeros_like(x)
        g[i] = 1.0
        _, ga = rq.apot.fake_quantize_grad(x, 3.0, g, bits=4, k=2, signed=True)
        assert round(float(ga), 6) == want_a[i]
    gx, _ = rq.apot.fake_quantize_grad(x, 3.0, np.ones_like(x), bits=4, k=2, signed=True)
    assert gx.tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 0]


@pytest.mark.parametrize("signed", [False, True])
def test_grad_alpha_finite_difference(signed):
    rng = np.random.default_rng(5)
    alpha, h = 1.3, 1e-7
    x = rng.uniform(-2, 2, 400)
    lv = rq.apot.levels(5, 1 if signed else 5, alpha=alpha, signed=signed)
    mids = (lv[:-1] + lv[1:]) / 2
    keep = np.min(np.abs(x[:, None] - mids[None, :]), axis=1) > 1e-4
    keep &= np.abs(np.abs(x) - alpha) > 1e-4
    x = x[keep]
    g = rng.normal(size=x.size)
    k = 1 if signed else 5
    plus = rq.apot.fake_quantize(x, alpha + h, bits=5, k=k, signed=signed)
    minus = rq.apot.fake_quantize(x, alpha - h, bits=5, k=k, signed=signed)
    fd = (plus - minus) / (2 * h)
    inside = (x >= (-alpha if signed else 0)) & (x <= alpha)
    rcf = np.where(inside, fd - x / alpha, fd)  # d/d alpha [alpha * u] minus the STE's x / alpha
    _, ga = rq.apot.fake_quantize_grad(x, alpha, g, bits=5, k=k, signed=signed)
    assert ga.shape == () and ga.dtype == np.float64
    assert abs(float(ga) - float(np.sum(g * rcf))) < 1e-6


def test_grad_dtypes_and_no_mutation():
    x = np.float32([-1.0, 0.2, 0.9, 3.0])
    g = np.float32([1.0, 2.0, 3.0, 4.0])
    x0, g0 = x.copy(), g.copy()
    gx, ga = rq.apot.fake_quantize_grad(x, 1.0, g, bits=4, k=2)
    assert gx.dtype == ga.dtype == np.float32
    assert gx.tolist() == [0.0, 2.0, 3.0, 0.0]
    assert_bitwise_equal(x, x0)
    assert_bitwise_equal(g, g0)
    with pytest.raises(ValueError):
        rq.apot.fake_quantize_grad(x, 1.0, g[:2], bits=4, k=2)


def test_normalize_weight():
    w = np.float32([1.0, 2.0, 4.0, 9.0])
    out = rq.apot.normalize_weight(w)
    ref = (w.astype(np.float64) - 4.0) / np.std(w.astype(np.float64), ddof=1)
    assert out.dtype == np.float32 and np.array_equal(out, ref.astype(np.float32))
    with pytest.raises(ValueError):
        rq.apot.normalize_weight(np.ones(4))


# ----------------------------------------------------------------------------- properties

finite32 = st.floats(-4, 4, width=32, allow_nan=False)


@given(st.lists(finite32, min_size=1, max_size=40), st.sampled_from(CASES[:5]))
def test_output_is_a_level_nearest_and_idempotent(xs, case):
    bits, k, signed, alpha = case
    x = np.array(xs, np.float64)
    x0 = x.copy()
    out = rq.apot.fake_quantize(x, alpha, bits=bits, k=k, signed=signed)
    lv = rq.apot.levels(bits, k, alpha=alpha, signed=signed)
    assert np.isin(out, lv).all()
    lo = lv[0]
    clipped = np.clip(x, lo, lv[-1])
    dist = np.abs(clipped[:, None] - lv[None, :]).min(axis=1)
    assert (np.abs(clipped - out) <= dist * (1 + 1e-12)).all()
    again = rq.apot.fake_quantize(out, alpha, bits=bits, k=k, signed=signed)
    assert_bitwise_equal(again, out)
    assert_bitwise_equal(x, x0)


@pytest.mark.parametrize("alpha", [1e-306, 1e-300, 1e300, 1.7e308])
@pytest.mark.parametrize("bits,k,signed", [(4, 2, True), (8, 2, False), (6, 3, False)])
def test_extreme_alpha_projection_stays_exact(alpha, bits, k, signed):
    """The bucket table must not overflow (was a segmentation fault at alpha = 1e-306 and 1.7e308):
    every level maps to itself, +-inf and 0 go where the tie rule says."""
    lv = rq.apot.levels(bits, k, alpha=alpha, signed=signed)
    x = np.concatenate([lv, [-np.inf, np.inf, 0.0, -0.0]])
    codes = rq.apot.quantize(x, alpha, bits=bits, k=k, signed=signed)
    zero = int(np.flatnonzero(lv == 0.0)[0])
    assert codes.tolist() == [*range(lv.size), 0, lv.size - 1, zero, zero]
    assert_bitwise_equal(rq.apot.fake_quantize(lv, alpha, bits=bits, k=k, signed=signed), lv)


def test_levels_alpha_and_signed_by_position_or_keyword():
    with pytest.warns(DeprecationWarning, match="by keyword"):
        old = rq.apot.levels(4, 2, 3.0, True)
    assert_bitwise_equal(old, rq.apot.levels(4, 2, alpha=3.0, signed=True))
    with pytest.warns(DeprecationWarning):
        assert_bitwise_equal(rq.apot.levels(4, 2, 3.0), rq.apot.levels(4, 2, alpha=3.0))


def _threshold_oracle(xs, exact):
    """Code by exact comparison with each real midpoint; on a midpoint, the smaller magnitude."""
    import bisect

    mids = [(a + b) / 2 for a, b in zip(exact[:-1], exact[1:])]
    out = []
    for v in xs:
        f = Fraction(float(v))
        m = bisect.bisect_left(mids, f)  # mids[m - 1] < f <= mids[m]
        if m < len(mids) and f == mids[m] and abs(exact[m + 1]) < abs(exact[m]):
            m += 1
        out.append(m)
    return out


@pytest.mark.parametrize("bits,k", UNSIGNED)
@pytest.mark.parametrize("alpha", [1.0, 2.2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_threshold_every_unsigned_set(bits, k, alpha, dtype):
    """Every (bits <= 8, k | bits) at a dyadic and a non-dyadic alpha: each float64 level maps to
    itself; each threshold and one ulp either side (in dtype) goes where the tie rule says."""
    lv = rq.apot.levels(bits, k, alpha=alpha)
    exact = [Fraction(v) for v in lv.tolist()]
    if dtype == np.float64:
        assert rq.apot.quantize(lv, alpha, bits=bits, k=k).tolist() == list(range(lv.size))
    xs = np.concatenate([_around((a + b) / 2, dtype) for a, b in zip(exact[:-1], exact[1:])])
    got = rq.apot.quantize(xs, alpha, bits=bits, k=k)
    assert got.tolist() == _threshold_oracle(xs, exact)
    fq = rq.apot.fake_quantize(xs, alpha, bits=bits, k=k)
    table = rq.apot.dequantize(np.arange(lv.size), alpha, bits=bits, k=k, dtype=dtype)
    assert_bitwise_equal(fq, table[got])
