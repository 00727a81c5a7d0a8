"""LSQ gradients against the exact Fraction definition; torch.learnable structure without torch."""

from fractions import Fraction

import numpy as np
import pytest

import refquant as rq
from tests.apot_oracles import lsq_grads
from tests.references import ROUNDERS, assert_bitwise_equal


def _tie_heavy(s, z, qmin, qmax, dtype):
    k = np.arange(qmin - z - 2, qmax - z + 2)
    ties = ((k + 0.5) * s).astype(dtype)
    ends = (np.array([qmin - z, qmax - z]) * s).astype(dtype)
    base = np.concatenate([ties, ends, (k * s).astype(dtype)])
    return np.concatenate([base, np.nextafter(base, dtype(np.inf)),
                           np.nextafter(base, dtype(-np.inf))])


@pytest.mark.parametrize("s,z,qmin,qmax", [(0.1, 0, -8, 7), (0.0123, 3, 0, 255), (0.25, -2, -8, 7)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lsq_matches_fraction_oracle(s, z, qmin, qmax, dtype):
    x = _tie_heavy(s, z, qmin, qmax, dtype)
    g = np.random.default_rng(0).normal(size=x.size).astype(dtype)
    gx, gs, gz = rq.lsq.fake_quantize_grad(x, s, z, g, qmin=qmin, qmax=qmax, grad_factor=0.5,
                                           reduce=False)
    for i, v in enumerate(x.tolist()):
        dx, ds, dz = lsq_grads(Fraction(v), Fraction(s), z, qmin, qmax, ROUNDERS["half_even"])
        assert gx[i] == dtype(float(g[i]) * dx)
        if dx:  # inside: round(t) - fl64(x / s), then products in float64
            want = float(g[i]) * (float(ROUNDERS["half_even"](Fraction(v) / Fraction(s))) - v / s)
            assert gs[i] == dtype(want * 0.5)
        else:
            assert gs[i] == dtype(float(g[i]) * float(ds) * 0.5)
            assert gz[i] == dtype(-float(g[i]) * s * 0.5)
        assert (gz[i] == 0) == bool(dx)


def test_paper_table_and_reduction():
    x = np.float32([-1.0, -0.85, -0.80, -0.26, 0.0, 0.71, 0.74, 0.76, 2.0])
    g = np.ones_like(x)
    gx, gs, gz = rq.lsq.fake_quantize_grad(x, 0.1, 0, g, qmin=-8, qmax=7, reduce=False)
    assert gx.tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert gs.astype(float).round(4).tolist() == [-8, -8, -8, -0.4, 0, 7, 7, 7, 7]
    assert gz.astype(float).round(4).tolist() == [-0.1, -0.1, -0.1, 0, 0, -0.1, -0.1, -0.1, -0.1]
    gx2, gs2, gz2 = rq.lsq.fake_quantize_grad(x, np.float32(0.1), 0, g, qmin=-8, qmax=7)
    assert gs2.shape == () and gs2.dtype == np.float32
    assert gs2 == np.float32(np.sum(gs.astype(np.float64)))


def test_per_channel_equals_slices():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 30)).astype(np.float32)
    g = rng.normal(size=x.shape).astype(np.float32)
    s = np.float32([0.1, 0.05, 0.2, 0.3])
    z = np.float32([0, 1, -2, 3])
    for conv in ("lsq", "torch.learnable"):
        fma = {"fma": True} if conv == "torch.learnable" else {}  # the variant, not the probe
        gx, gs, gz = rq.lsq.fake_quantize_grad(x.T, s, z, g.T, qmin=-8, qmax=7, axis=1,
                                               convention=conv, reduce=False, **fma)
        for c in range(4):
            kw = {"qmin": -8, "qmax": 7, "convention": conv, "reduce": False, "axis": 0, **fma}
            ex, es, ez = rq.lsq.fake_quantize_grad(x[c:c + 1], s[c:c + 1], z[c:c + 1],
                                                   g[c:c + 1], **kw)
            assert_bitwise_equal(gx.T[c], ex[0])
            assert_bitwise_equal(gs.T[c], es[0])
            assert_bitwise_equal(gz.T[c], ez[0])
        _, rs, rz = rq.lsq.fake_quantize_grad(x.T, s, z, g.T, qmin=-8, qmax=7, axis=1,
                                              convention=conv, **fma)
        assert rs.shape == rz.shape == (4,) and rs.dtype == np.float32
        want = gs.astype(np.float64).sum(axis=0).astype(np.float32)
        if conv == "torch.learnable":  # float32 terms summed in float64
            assert_bitwise_equal(rs, want)
        else:  # float64 terms summed in float64, then rounded
            assert np.allclose(rs, want, rtol=1e-5)


def test_torch_learnable_zero_point_rules_and_fma_switch():
    # zp = 2.5: the backward uses trunc(2.5 + 0.5) = 3, so x = 1.25 (14.5 -> 16 > 15) is clipped
    x = np.float32([1.25])
    g = np.float32([1.0])
    gx, gs, gz = rq.lsq.fake_quantize_grad(x, 0.1, 2.5, g, qmin=0, qmax=15,
                                           convention="torch.learnable", fma=True)
    assert gx.tolist() == [0.0] and float(gs) == 12.0 and float(gz) == np.float32(-0.1)
    # the lsq convention decides on x / s before rounding: inside
    gx, _, _ = rq.lsq.fake_quantize_grad(x, 0.1, 2, g, qmin=0, qmax=15)
    assert gx.tolist() == [1.0]
    rng = np.random.default_rng(2)
    xs = rng.normal(size=20000).astype(np.float32)
    gs = np.ones_like(xs)
    a = rq.lsq.fake_quantize_grad(xs, 0.0123, 3.0, gs, qmin=0, qmax=255, reduce=False,
                                  convention="torch.learnable", fma=True)[1]
    b = rq.lsq.fake_quantize_grad(xs, 0.0123, 3.0, gs, qmin=0, qmax=255, reduce=False,
                                  convention="torch.learnable", fma=False)[1]
    assert (a != b).any()


def test_errors_and_no_mutation():
    x = np.float32([0.1, 0.2])
    g = np.float32([1.0, 1.0])
    x0, g0 = x.copy(), g.copy()
    rq.lsq.fake_quantize_grad(x, 0.1, 0, g, qmin=-8, qmax=7, convention="torch.learnable", fma=False)
    assert_bitwise_equal(x, x0)
    assert_bitwise_equal(g, g0)
    with pytest.raises(ValueError, match="convention"):
        rq.lsq.fake_quantize_grad(x, 0.1, 0, g, qmin=-8, qmax=7, convention="torch")
    with pytest.raises(ValueError):
        rq.lsq.fake_quantize_grad(x, 0.0, 0, g, qmin=-8, qmax=7)
    with pytest.raises(ValueError):
        rq.lsq.fake_quantize_grad(x, 0.1, 0, g[:1], qmin=-8, qmax=7)
    with pytest.raises(ValueError):
        rq.lsq.fake_quantize_grad(x, 0.1, 0, g, qmin=1, qmax=7, convention="torch.learnable")
    with pytest.raises(ValueError):
        rq.lsq.fake_quantize_grad(x, [0.1, 0.2, 0.3], 0, g, qmin=-8, qmax=7, axis=0)


def test_grad_scale_is_the_papers_and_torchs():
    import math

    assert rq.lsq.grad_scale(4096, 127) == 1.0 / (4096 * 127) ** 0.5
    assert rq.lsq.grad_scale(1, 1) == 1.0
    assert math.isclose(rq.lsq.grad_scale(64, 15), 1 / math.sqrt(960), rel_tol=0, abs_tol=2**-60)
    with pytest.raises(ValueError, match="positive"):
        rq.lsq.grad_scale(0, 127)


def test_range_by_format_equals_range_by_bounds():
    x = np.float32([-1.0, -0.85, 0.05, 0.35, 0.74, 2.0])
    g = np.ones_like(x)
    by_fmt = rq.lsq.fake_quantize_grad(x, 0.1, 0.0, g, fmt=rq.int4, reduce=False)
    by_bounds = rq.lsq.fake_quantize_grad(x, 0.1, 0.0, g, qmin=-8, qmax=7, reduce=False)
    for a, b in zip(by_fmt, by_bounds, strict=True):
        assert a.tobytes() == b.tobytes()
    assert rq.lsq.fake_quantize(x, 0.1, 0, fmt=rq.int4).tobytes() == \
        rq.lsq.fake_quantize(x, 0.1, 0, qmin=-8, qmax=7).tobytes()
