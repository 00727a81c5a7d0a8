"""rq.ste: the STE bounds against a direct quantize of every float16 bit pattern, and the fused
masked gradient against grad * mask."""

import numpy as np
import pytest

import refquant as rq

ALL_F16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)


def _direct_mask(x, scale, zp, qmin, qmax, convention):
    conv = rq.conventions.get(convention).resolve(per_channel=False, float_zero_point=False,
                                                  wide=(qmax - qmin) >= 256)
    safe = np.where(np.isnan(x), 0, x).astype(x.dtype)
    q = rq.quantize(safe, scale, zp, qmin=qmin - 1, qmax=qmax + 1, convention=conv)
    return (q >= qmin) & (q <= qmax) & ~np.isnan(x)


@pytest.mark.parametrize("convention", ["exact", "torch.fake_quantize", "onnx"])
@pytest.mark.parametrize("scale,zp,qmin,qmax", [
    (0.1, 3, 0, 255), (1e-38, 0, 0, 255), (3e38, 0, 0, 255), (6e-8, -2, -8, 7),
    (65504.0, 0, -128, 127), (0.25, 0, -8, 7), (2.0**-30, 100, 0, 255),
])
def test_bounds_equal_direct_mask_on_every_float16(convention, scale, zp, qmin, qmax):
    if convention == "onnx" and not 2.0**-24 <= scale <= 65504:
        pytest.skip("onnx computes x / s in float16 here, and this scale is 0 or inf there")
    a, b = rq.ste.bounds(np.float16, scale, zp, qmin, qmax, convention=convention)
    with np.errstate(invalid="ignore"):
        searched = (ALL_F16 >= a) & (ALL_F16 <= b)
    assert np.array_equal(searched, _direct_mask(ALL_F16, scale, zp, qmin, qmax, convention))


def test_bounds_per_group_use_each_groups_own_reach():
    a, b = rq.ste.bounds(np.float32, np.float32([0.1, 3e38]), np.int32([0, 0]), 0, 255, groups=2,
                         convention="torch.fake_quantize")
    assert a.tolist()[0] == np.float32(-0.05) and b[1] == np.finfo(np.float32).max


def _edges_agree(dtype, scale, zp, qmin, qmax, rounding, convention, groups=None):
    """The bounds of each group, and their neighbours outside, against a direct quantize."""
    a, b = rq.ste.bounds(dtype, scale, zp, qmin, qmax, groups=groups, rounding=rounding,
                         convention=convention)
    conv = rq.conventions.get(convention).resolve(per_channel=groups is not None,
                                                  float_zero_point=False, wide=qmax - qmin >= 256)
    mode = "half_even" if rounding == "stochastic" else rounding
    a, b = np.atleast_1d(a), np.atleast_1d(b)
    probes = np.stack([a, b, np.nextafter(a, dtype(-np.inf)), np.nextafter(b, dtype(np.inf))], 1)
    kw = {} if groups is None else {"axis": 0}
    q = rq.quantize(probes if groups is not None else probes.reshape(-1), scale, zp,
                    qmin=qmin - 1, qmax=qmax + 1, rounding=mode, convention=conv, **kw)
    inside = ((q >= qmin) & (q <= qmax)).reshape(probes.shape)
    return inside[:, :2].all() and not inside[:, 2:].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rounding", [None, "half_away", "floor", "ceil", "toward_zero",
                                      "stochastic"])
@pytest.mark.parametrize("convention", ["exact", "torch.fake_quantize", "onnx"])
def test_bounds_are_the_exact_edges_for_every_rounding_mode(dtype, rounding, convention):
    for scale, zp, qmin, qmax in [(0.0123, 3, 0, 127), (0.05, -128, -128, 127), (7.0, 0, -8, 7),
                                  (2.0**-20 * 3, 255, 0, 255)]:
        assert _edges_agree(dtype, np.float32(scale), np.int32(zp), qmin, qmax, rounding,
                            convention)
    scales = np.float32([0.01, 0.3, 2.0**-12])
    assert _edges_agree(dtype, scales, np.int32([0, 5, -3]), -8, 7, rounding, convention, groups=3)


def test_bounds_search_the_whole_range_where_no_guessed_window_holds_the_edge(monkeypatch):
    cases = [(np.float32, 0.0123, 3, 0, 127, "torch.fake_quantize"),
             (np.float64, 0.05, 7, -8, 7, "exact")]
    expected = [rq.ste.bounds(d, s, z, lo, hi, convention=c) for d, s, z, lo, hi, c in cases]
    monkeypatch.setattr(rq.ste, "_GUESSES", np.array([1e6]))   # no window near either edge
    for (d, s, z, lo, hi, c), (a, b) in zip(cases, expected, strict=True):
        a2, b2 = rq.ste.bounds(d, s, z, lo, hi, convention=c)
        assert a2.tobytes() == a.tobytes() and b2.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [7, 1 << 17])
def test_masked_grad_equals_grad_times_mask(dtype, n):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(n) * 4).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    x[:5] = [np.nan, np.inf, -np.inf, -0.0, 1.5]
    g[:5] = [np.inf, np.nan, -3.0, -1.0, -np.inf]
    a, b = rq.ste.bounds(dtype, 0.05, 3, 0, 255, convention="torch.fake_quantize")
    with np.errstate(invalid="ignore"):
        expected = g * ((x >= a) & (x <= b)).astype(dtype)
    got = rq.ste.masked_grad(g, x, a, b)
    assert got.dtype == dtype
    assert np.array_equal(got.view(np.uint8), expected.view(np.uint8))


def test_masked_grad_refuses_mixed_dtypes():
    with pytest.raises(TypeError, match="float32/float64"):
        rq.ste.masked_grad(np.ones(2, np.float32), np.ones(2), 0.0, 1.0)
