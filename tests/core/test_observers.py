"""Observers without torch: oracles in NumPy/Fraction, edge cases, state round trips."""

import json

import numpy as np
import pytest

import refquant as rq
from refquant._kernels import _histogram as h

RNG = np.random.default_rng(3)
OBS = rq.observers


def test_minmax_matches_numpy_and_choose_qparams():
    xs = [(RNG.standard_normal((8, 5)) * 3).astype(np.float32) for _ in range(3)]
    obs = OBS.MinMax(fmt=rq.uint8)
    for x in xs:
        c = x.copy()
        assert obs.update(x) is obs
        np.testing.assert_array_equal(x, c)
    allx = np.concatenate([x.ravel() for x in xs])
    assert obs.min_val == allx.min() and obs.max_val == allx.max()
    assert obs.qparams() == rq.choose_qparams(allx.min(), allx.max(), fmt=rq.uint8)
    per = OBS.MinMax(fmt=rq.int8, symmetric=True, axis=1)
    for x in xs:
        per.update(x)
    stacked = np.concatenate(xs, axis=0)
    np.testing.assert_array_equal(per.min_val, stacked.min(axis=0))
    np.testing.assert_array_equal(per.max_val, stacked.max(axis=0))


def test_moving_average_float32_steps():
    obs = OBS.MovingAverageMinMax(averaging_constant=0.1, fmt=rq.uint8)
    obs.update(np.float32([0.0, 1.0])).update(np.float32([-1.0, 3.0]))
    c = np.float32(0.1)
    assert obs.min_val == np.float32(0.0 + np.float32(c * np.float32(-1.0 - 0.0)))
    assert obs.max_val == np.float32(1.0 + np.float32(c * np.float32(3.0 - 1.0)))
    with pytest.raises(ValueError, match="averaging_constant"):
        OBS.MovingAverageMinMax(averaging_constant=0, fmt=rq.uint8)


def test_empty_nan_inf_and_unobserved():
    obs = OBS.MinMax(fmt=rq.uint8)
    assert obs.qparams() == (1.0, 0)  # torch's default
    obs.update(np.float32([]))
    assert obs.min_val == np.inf
    obs.update(np.float32([1.0, np.nan]))
    assert np.isnan(obs.min_val)
    with pytest.raises(ValueError, match="finite"):
        obs.qparams()
    with pytest.raises(ValueError, match="no data"):
        OBS.MinMax(fmt=rq.int8, method="fbgemm").qparams()
    hist = OBS.Histogram(fmt=rq.uint8)
    hist.update(np.float32([np.inf, -np.inf]))
    assert hist.min_val == np.inf
    with pytest.raises(ValueError, match="NaN"):
        hist.update(np.float32([0.0, np.nan]))
    per = OBS.MinMax(fmt=rq.int8, axis=0).update(np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="channels"):
        per.update(np.zeros((4, 2), np.float32))


def test_all_equal_inputs():
    s, z = OBS.MinMax(fmt=rq.uint8).update(np.full(10, 2.5, np.float32)).qparams()
    assert s == np.float32(np.float32(2.5) / np.float32(255)) and z == 0
    hist = OBS.Histogram(fmt=rq.uint8).update(np.full(10, 2.5, np.float32))
    assert hist.histogram[1024] == 10 and hist.histogram.sum() == 10
    hist.update(np.float32([0.0, 5.0]))
    assert hist.histogram.sum() == 12


def _histc_oracle(x, bins, lo, hi):
    left, right = (lo, hi) if lo != hi else (np.float32(lo - 1.0), np.float32(hi + 1.0))
    out = np.zeros(bins, np.int64)
    for v in x:
        if left <= v <= right:
            p = int(np.float32(np.float32(np.float32(v - left) * np.float32(bins))
                               / np.float32(right - left)))
            out[min(p, bins - 1)] += 1
    return out


def test_histc_and_linspace_oracles():
    x = RNG.uniform(-3, 7, 2000).astype(np.float32)
    np.testing.assert_array_equal(h.histc(x, 64, np.float32(-3), np.float32(7)),
                                  _histc_oracle(x, 64, np.float32(-3), np.float32(7)))
    a, b, n = np.float32(-1.3), np.float32(2.7), 33
    step = np.float32(np.float32(b - a) / np.float32(n - 1))
    ref = [np.float32(float(step) * i + float(a)) if i < n // 2 else
           np.float32(float(b) - float(step) * (n - 1 - i)) for i in range(n)]
    # float64 emulation of the fused multiply-add is exact here (24 x 6 bits)
    np.testing.assert_array_equal(h.linspace32(a, b, n), np.float32(ref))


def test_histogram_search_stays_inside_range():
    x = np.concatenate([RNG.standard_normal(20000), [200.0]]).astype(np.float32)
    obs = OBS.Histogram(fmt=rq.uint8).update(x)
    lo, hi = obs.clipped_range()
    w = np.float32((obs.max_val - obs.min_val) / np.float32(obs.bins))
    assert obs.min_val <= lo < hi <= obs.max_val + w
    assert obs.histogram.sum() == x.size


def test_percentile_and_mse():
    x = np.concatenate([np.linspace(-1, 1, 10000), [100.0]]).astype(np.float32)
    lo, hi = OBS.Percentile(percentile=99.9, fmt=rq.int8).update(x).clipped_range()
    assert -1.01 < lo and hi < 2
    lo, hi = OBS.Percentile(percentile=100, fmt=rq.int8).update(x).clipped_range()
    assert lo == np.float32(-1) and hi >= np.float32(100) * np.float32(0.9999)
    w = (RNG.standard_normal((4, 200)) * [[1], [2], [3], [50]]).astype(np.float32)
    w[0, 0] = 30.0
    mse = OBS.MSE(fmt=rq.int4, symmetric=True, axis=0).update(w)
    s, z = mse.qparams()
    s0, _ = OBS.MinMax(fmt=rq.int4, symmetric=True, axis=0).update(w).qparams()
    assert s.shape == (4,) and (s <= s0).all() and (s < s0).any() and not z.any()
    for conv in ("torch.fake_quantize", "onnx"):
        assert np.isfinite(OBS.MSE(fmt=rq.int8, convention=conv).update(w).qparams()[0])


def test_apot():
    obs = OBS.APoT(bits=4, k=2).update(np.float32([-3.0, 2.0])).update(np.float32([1.0]))
    assert obs.qparams() == (3.0, 0)
    assert obs.levels()[-1] == 3.0
    with pytest.raises(ValueError, match="alpha"):
        OBS.APoT().qparams()


@pytest.mark.parametrize("make", [
    lambda: OBS.MinMax(fmt=rq.uint8),
    lambda: OBS.MinMax(qmin=-8, qmax=7, symmetric=True, axis=0),
    lambda: OBS.MovingAverageMinMax(averaging_constant=0.2, dtype="quint8", reduce_range=True),
    lambda: OBS.Histogram(dtype="qint8", symmetric=True, bins=256),
    lambda: OBS.Percentile(percentile=99.0, fmt=rq.IntFormat(8, narrow=True)),
    lambda: OBS.MSE(fmt=rq.int4, method="fbgemm"),
    lambda: OBS.APoT(bits=4, k=2),
])
def test_state_round_trip_json(make):
    obs = make()
    empty = json.loads(json.dumps(obs.state_dict(), allow_nan=False))
    type(obs).from_state_dict(empty)
    obs.update((RNG.standard_normal((6, 7)) * 2).astype(np.float32))
    obs.update(np.full((6, 7), 9.0, np.float32))
    d = json.loads(json.dumps(obs.state_dict(), allow_nan=False))
    back = type(obs).from_state_dict(d)
    a, b = obs.qparams(), back.qparams()
    np.testing.assert_array_equal(np.asarray(a[0]).view(np.uint32),
                                  np.asarray(b[0]).view(np.uint32))
    np.testing.assert_array_equal(a[1], b[1])
    obs.reset()
    assert obs.state_dict()["state"] == make().state_dict()["state"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        OBS.MinMax(fmt=rq.int8, method="nope")
    with pytest.raises(NotImplementedError):
        OBS.Histogram(fmt=rq.int8, axis=0)
    with pytest.raises(TypeError, match="x"):
        OBS.MinMax(fmt=rq.int8).update(np.array(["a"]))
    with pytest.raises(ValueError, match="percentile"):
        OBS.Percentile(percentile=20, fmt=rq.int8)
