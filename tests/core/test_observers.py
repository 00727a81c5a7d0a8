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
    for fma in (True, False):
        np.testing.assert_array_equal(h.histc(x, 64, np.float32(-3), np.float32(7), fma),
                                      _histc_oracle(x, 64, np.float32(-3), np.float32(7)))
    a, b, n = np.float32(-1.3), np.float32(2.7), 33
    step = np.float32(np.float32(b - a) / np.float32(n - 1))
    ref = [np.float32(float(step) * i + float(a)) if i < n // 2 else
           np.float32(float(b) - float(step) * (n - 1 - i)) for i in range(n)]
    # float64 emulation of the fused multiply-add is exact here (24 x 6 bits)
    np.testing.assert_array_equal(h.linspace32(a, b, n, True), np.float32(ref))
    f32 = np.float32
    a, b, n = f32(-0.37), f32(5.3), 129
    step = f32(f32(b - a) / f32(n - 1))
    unfused = [f32(f32(step * f32(i)) + a) if i < n // 2 else f32(f32(-step * f32(n - 1 - i)) + b)
               for i in range(n)]
    np.testing.assert_array_equal(h.linspace32(a, b, n, False), np.float32(unfused))
    assert (h.linspace32(a, b, n, True) != np.float32(unfused)).any()  # the variants differ here


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


# ---------------------------------------------------------------------------------------------
# per-channel min/max kernels read the array in place, any axis


def _minmax_oracle(x, axis):
    """Per channel along ``axis``: Python min/max over the channel's elements; NaN if any."""
    moved = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    mins, maxs = [], []
    for row in moved:
        vals = [float(v) for v in row]
        if any(v != v for v in vals):
            mins.append(np.nan)
            maxs.append(np.nan)
        else:
            mins.append(min(vals))
            maxs.append(max(vals))
    return np.float32(mins), np.float32(maxs)


@pytest.mark.parametrize("shape", [(7, 5), (5, 300), (300, 5), (3, 4, 70), (2, 9, 3, 5), (1, 13),
                                   (40, 1), (6, 1000), (520, 3)])
def test_aminmax_axis_matches_oracle_every_axis(shape):
    from refquant._kernels import _observers as k
    from tests.references import assert_bitwise_equal

    x = (RNG.standard_normal(shape) * 10 ** RNG.uniform(-3, 3, shape)).astype(np.float32)
    flat = x.reshape(-1)
    flat[RNG.integers(0, flat.size, 3)] = [np.inf, -np.inf, np.nan]
    before = x.copy()
    for axis in range(x.ndim):
        mn, mx = k.aminmax_axis(x, axis)
        emn, emx = _minmax_oracle(x, axis)
        assert_bitwise_equal(mn, emn, f"min axis {axis}")
        assert_bitwise_equal(mx, emx, f"max axis {axis}")
    np.testing.assert_array_equal(x.view(np.uint32), before.view(np.uint32))


def test_aminmax_nan_anywhere_and_signed_zeros():
    from refquant._kernels import _observers as k

    for n in (1, 7, 8, 9, 17, 1000):
        x = RNG.standard_normal(n).astype(np.float32)
        for i in {0, n // 2, n - 1}:
            y = x.copy()
            y[i] = np.nan
            assert all(np.isnan(v) for v in k.aminmax(y))
        assert k.aminmax(x) == (x.min(), x.max())
    z = np.float32([0.0, -0.0] * 9)
    mn, mx = k.aminmax(z)
    assert np.signbit(mn) and not np.signbit(mx)  # -0.0 < +0.0 in the kernels' order
    mn, mx = k.aminmax_axis(z.reshape(2, 9), 1)
    assert np.signbit(mn).all() and not np.signbit(mx).any()
    inf = np.float32([np.inf, -np.inf, 1.0])
    assert k.aminmax(inf) == (-np.inf, np.inf)


def test_per_channel_observer_on_every_axis_and_nan_channel():
    x = RNG.standard_normal((4, 6, 80)).astype(np.float32)
    x[1, 2, 3] = np.nan
    for axis in (0, 1, 2, -1):
        obs = OBS.MinMax(fmt=rq.int8, axis=axis).update(x).update(x * 2)
        other = (axis % 3 + 1) % 3  # the batches stack along a non-channel axis
        emn, emx = _minmax_oracle(np.concatenate([x, x * 2], axis=other), axis % 3)
        np.testing.assert_array_equal(bits(obs.min_val), bits(emn))
        np.testing.assert_array_equal(bits(obs.max_val), bits(emx))
    with pytest.raises(ValueError, match="finite"):
        OBS.MinMax(fmt=rq.int8, axis=0).update(x).qparams()


def bits(a):
    from tests.references import bits as _bits

    return _bits(np.asarray(a, np.float32))


# ---------------------------------------------------------------------------------------------
# audit fixes: ranges, state, edge cases


def test_histogram_dst_bits_follow_torch_dtype():
    assert OBS.Histogram(fmt=rq.uint8).dst_bits == 8
    assert OBS.Histogram(qmin=-8, qmax=7).dst_bits == 8  # a custom qint8 range: torch's 8 bits
    assert OBS.Histogram(dtype="int16", symmetric=True).dst_bits == 16
    assert OBS.Histogram(fmt=rq.IntFormat(16)).dst_bits == 16
    assert OBS.Histogram(dtype="qint32").dst_bits == 32
    assert OBS.Histogram(fmt=rq.IntFormat(16), method="fbgemm").dst_bits == 16
    assert OBS.Histogram(fmt=rq.uint8, dst_bits=4).dst_bits == 4


def test_percentile_100_gives_exactly_min_and_max():
    r = np.random.default_rng(0)
    xs = [(r.standard_normal(5000) * 10 ** r.uniform(-3, 3)).astype(np.float32) for _ in range(8)]
    for x in xs:
        lo, hi = OBS.Percentile(percentile=100, fmt=rq.int8).update(x).clipped_range()
        assert bits(lo) == bits(x.min()) and bits(hi) == bits(x.max())
    x = xs[1]  # min + f32(f32(max - min) / 2048) * 2048 != max here
    obs = OBS.Percentile(percentile=100, fmt=rq.int8).update(x)
    lo, hi = obs.clipped_range()
    assert bits(lo) == bits(x.min()) and bits(hi) == bits(x.max())
    s, z = obs.qparams()
    assert (s, z) == rq.choose_qparams(x.min(), x.max(), fmt=rq.int8)


def test_mse_uses_the_range_of_its_method():
    x = np.linspace(-1, 3, 401).astype(np.float32)
    # reduce_range on a custom range: torch's (0, 127); the error must be measured on it too
    obs = OBS.MSE(qmin=0, qmax=255, reduce_range=True, num_candidates=5).update(x)
    errors = []
    for kk in range(5):
        r = np.float32(1 - kk / 5 * (1 - 0.1))
        s, z = rq.choose_qparams(np.float32(r * x.min()), np.float32(r * x.max()), qmin=0,
                                 qmax=255, reduce_range=True)
        d = rq.fake_quantize(x, s, z, qmin=0, qmax=127).astype(np.float64) - x
        errors.append((float((d * d).sum()), kk, s, z))
    _, _, es, ez = min(errors)
    s, z = obs.qparams()
    assert bits(s) == bits(es) and z == ez and z <= 127
    onnx = OBS.MSE(method="onnx", num_candidates=4).update(x)
    assert onnx.qparams()[1].dtype == np.uint8


def test_apot_constructor_checks():
    with pytest.raises(TypeError, match="bits, k"):
        OBS.APoT(bits=4, k=2, fmt=rq.int8)
    with pytest.raises(NotImplementedError):
        OBS.APoT(bits=4, k=2, axis=0)
    with pytest.raises(ValueError):
        OBS.APoT(bits=5, k=2)  # k must divide the width
    obs = OBS.APoT(bits=4, k=2).update(np.float32([])).update(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="alpha"):
        obs.qparams()
    obs.update(np.float32([np.inf]))
    with pytest.raises(ValueError, match="alpha"):
        obs.qparams()


def test_torchao_state_keeps_the_input_dtype():
    from refquant._dtypes import bfloat16

    bf = bfloat16()
    if bf is None:
        pytest.skip("ml_dtypes is not installed")
    x = (RNG.standard_normal(300) * 3).astype(bf)
    obs = OBS.MinMax(fmt=rq.uint8, method="torchao").update(x)
    s, z = obs.qparams()
    assert s.dtype == bf
    back = OBS.MinMax.from_state_dict(json.loads(json.dumps(obs.state_dict(), allow_nan=False)))
    s2, z2 = back.qparams()
    assert s2.dtype == bf and s2.view(np.uint16) == s.view(np.uint16) and z2 == z


def test_moving_average_fbgemm_restarts_infinite_entries():
    obs = OBS.MovingAverageMinMax(averaging_constant=0.5, qmin=0, qmax=255, method="fbgemm")
    obs.update(np.float32([-np.inf, 1.0])).update(np.float32([-2.0, 3.0]))
    assert obs.min_val == np.float32(-2.0)  # isinf(r) ? cur : ...
    assert obs.max_val == np.float32(1.0 + np.float32(0.5) * np.float32(3.0 - 1.0))
    torch_rule = OBS.MovingAverageMinMax(averaging_constant=0.5, qmin=0, qmax=255)
    torch_rule.update(np.float32([-np.inf, 1.0])).update(np.float32([-2.0, 3.0]))
    assert np.isnan(torch_rule.min_val)  # -inf + c * (cur - -inf)


def test_min_greater_than_max_state_and_empty_updates():
    obs = OBS.MinMax(fmt=rq.uint8).update(np.float32([1.0, 2.0]))
    d = obs.state_dict()
    d["state"]["min_val"], d["state"]["max_val"] = 3.0, 1.0
    with pytest.raises(ValueError, match="min_val must be <= max_val"):
        OBS.MinMax.from_state_dict(d).qparams()
    for make in (lambda: OBS.Histogram(fmt=rq.uint8), lambda: OBS.MovingAverageMinMax(fmt=rq.uint8),
                 lambda: OBS.MinMax(fmt=rq.int8, axis=1), lambda: OBS.Percentile(fmt=rq.uint8)):
        o = make()
        empty = json.dumps(o.state_dict(), allow_nan=False)
        o.update(np.zeros((0, 3), np.float32))
        assert json.dumps(o.state_dict(), allow_nan=False) == empty
        assert o.qparams() == (1.0, 0)  # torch's default for an observer that saw nothing


def test_mse_torchao_computes_in_the_observed_dtype():
    x = (RNG.standard_normal(200) * 2).astype(np.float16)
    one = OBS.MSE(fmt=rq.uint8, method="torchao", num_candidates=1).update(x).qparams()
    ref = OBS.MinMax(fmt=rq.uint8, method="torchao").update(x).qparams()
    assert one[0].dtype == ref[0].dtype == np.float16
    assert one[0].view(np.uint16) == ref[0].view(np.uint16) and one[1] == ref[1]
