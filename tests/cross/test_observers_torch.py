"""Observers against torch.ao's, bit for bit on random and adversarial streams."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import refquant as rq  # noqa: E402
from refquant._kernels import _histogram as h  # noqa: E402

tq = pytest.importorskip("torch.ao.quantization")
RNG = np.random.default_rng(11)


def streams():
    """name -> list of float32 batches."""
    r = RNG
    out = {
        "random": [(r.standard_normal(3000) * 10 ** r.uniform(-3, 3)).astype(np.float32)
                   for _ in range(4)],
        "zeros": [np.zeros(500, np.float32)] * 3,
        "constant": [np.full(500, 3.25, np.float32)] * 2,
        "negative_constant": [np.full(100, -7.0, np.float32), np.full(100, -7.0, np.float32)],
        "outlier": [np.concatenate([r.standard_normal(3000), [1e4]]).astype(np.float32),
                    r.standard_normal(3000).astype(np.float32)],
        "tiny": [(r.standard_normal(2000) * 1e-30).astype(np.float32) for _ in range(2)],
        "huge": [(r.standard_normal(2000) * 1e30).astype(np.float32) for _ in range(2)],
        "growing": [(r.uniform(-1, 1, 2000) * (k + 1) ** 3).astype(np.float32)
                    for k in range(4)],
        "constant_then_range": [np.full(100, 2.0, np.float32),
                                r.uniform(-3, 5, 1000).astype(np.float32)],
        "heavy": [(r.standard_t(2, 5000)).astype(np.float32) for _ in range(3)],
    }
    return out


STREAMS = streams()


def bits(v):
    return np.asarray(v, np.float32).view(np.uint32)


def same(ours, theirs):
    s, z = ours
    ts, tz = theirs
    assert (bits(np.atleast_1d(s)) == bits(ts.numpy())).all(), (s, ts)
    assert (np.atleast_1d(np.asarray(z, np.int64)) == tz.numpy().astype(np.int64)).all(), (z, tz)


CONFIGS = [("quint8", False), ("qint8", False), ("qint8", True), ("quint8", True)]


@pytest.mark.parametrize("name", sorted(STREAMS))
@pytest.mark.parametrize("dtype,sym", CONFIGS)
def test_minmax_and_moving_average(name, dtype, sym):
    scheme = torch.per_tensor_symmetric if sym else torch.per_tensor_affine
    pairs = [
        (tq.MinMaxObserver(dtype=getattr(torch, dtype), qscheme=scheme),
         rq.observers.MinMax(dtype=dtype, symmetric=sym)),
        (tq.MovingAverageMinMaxObserver(averaging_constant=0.3, dtype=getattr(torch, dtype),
                                        qscheme=scheme),
         rq.observers.MovingAverageMinMax(averaging_constant=0.3, dtype=dtype, symmetric=sym)),
    ]
    for theirs, ours in pairs:
        for x in STREAMS[name]:
            theirs(torch.from_numpy(x.copy()))
            ours.update(x)
        assert bits(ours.min_val) == bits(theirs.min_val.numpy())
        assert bits(ours.max_val) == bits(theirs.max_val.numpy())
        same(ours.qparams(), theirs.calculate_qparams())


@pytest.mark.parametrize("moving", [False, True])
@pytest.mark.parametrize("scheme", ["per_channel_affine", "per_channel_symmetric",
                                    "per_channel_affine_float_qparams"])
@pytest.mark.parametrize("axis", [0, 1])
def test_per_channel(moving, scheme, axis):
    kw = {"averaging_constant": 0.2} if moving else {}
    tcls = tq.MovingAveragePerChannelMinMaxObserver if moving else tq.PerChannelMinMaxObserver
    ocls = rq.observers.MovingAverageMinMax if moving else rq.observers.MinMax
    theirs = tcls(ch_axis=axis, dtype=torch.quint8, qscheme=getattr(torch, scheme), **kw)
    ours = ocls(axis=axis, dtype="quint8", symmetric=scheme.endswith("symmetric"),
                qscheme=scheme, **kw)
    for k in range(4):
        x = (RNG.standard_normal((16, 8, 5)) * 10 ** RNG.uniform(-4, 4, (16, 1, 1)))
        x = x.astype(np.float32)
        if k == 1:
            x[3] = 0.0
            x[:, 2] = 1.5
        theirs(torch.from_numpy(x.copy()))
        ours.update(x)
    same(ours.qparams(), theirs.calculate_qparams())


# torch's own search is slow on the tiny/huge streams: one configuration each
HIST_CASES = [(n, d, s) for n in sorted(STREAMS) for d, s in CONFIGS
              if n not in ("tiny", "huge") or (d, s) in (("quint8", False), ("qint8", True))]


@pytest.mark.parametrize("name,dtype,sym", HIST_CASES)
def test_histogram(name, dtype, sym):
    scheme = torch.per_tensor_symmetric if sym else torch.per_tensor_affine
    theirs = tq.HistogramObserver(dtype=getattr(torch, dtype), qscheme=scheme)
    ours = rq.observers.Histogram(dtype=dtype, symmetric=sym)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x in STREAMS[name]:
            theirs(torch.from_numpy(x.copy()))
            ours.update(x)
        expected = theirs.calculate_qparams()
    assert (ours.histogram.view(np.uint32) == theirs.histogram.numpy().view(np.uint32)).all()
    same(ours.qparams(), expected)


def test_histogram_drops_inf_like_torch():
    theirs = tq.HistogramObserver()
    ours = rq.observers.Histogram(dtype="quint8")
    x = np.float32([1.0, np.inf, -2.0, -np.inf, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs(torch.from_numpy(x.copy()))
        theirs(torch.tensor([np.inf]))
        expected = theirs.calculate_qparams()
    ours.update(x).update(np.float32([np.inf]))
    same(ours.qparams(), expected)


def test_linspace_and_histc_kernels():
    for _ in range(50):
        a, b = np.sort(RNG.standard_normal(2) * 10 ** RNG.uniform(-5, 5)).astype(np.float32)
        n = int(RNG.choice([2, 257, 2049, 32769]))
        t = torch.linspace(torch.tensor(a), torch.tensor(b), n).numpy()
        assert (h.linspace32(a, b, n).view(np.uint32) == t.view(np.uint32)).all()
        x = (RNG.standard_normal(3000) * 10 ** RNG.uniform(-5, 5)).astype(np.float32)
        lo, hi = np.float32(x.min() * 1.25), x.max()
        th = torch.histc(torch.from_numpy(x), 2048, float(lo), float(hi)).numpy()
        np.testing.assert_array_equal(h.histc(x, 2048, lo, hi), th)
    for v in (3.0, 1e10, -5e12):
        x = np.full(7, v, np.float32)
        th = torch.histc(torch.from_numpy(x), 2048, float(v), float(v)).numpy()
        np.testing.assert_array_equal(h.histc(x, 2048, np.float32(v), np.float32(v)), th)


@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("per_channel", [False, True])
def test_fused_moving_average_stream(sym, per_channel):
    """The fused QAT op's running min/max and qparams over a stream, via the fbgemm rule."""
    lo, hi = (-128, 127) if sym else (0, 127)
    c = 0.01
    n = 6 if per_channel else 1
    run_min, run_max = torch.full((n,), np.inf), torch.full((n,), -np.inf)
    scale, zp = torch.ones(n), torch.zeros(n, dtype=torch.int32)
    ours = rq.observers.MovingAverageMinMax(averaging_constant=c, qmin=lo, qmax=hi,
                                            symmetric=sym, method="fbgemm",
                                            axis=0 if per_channel else None)
    for _ in range(30):
        x = (RNG.standard_normal((6, 40)) * 10 ** RNG.uniform(-6, 1.5)).astype(np.float32)
        torch.fused_moving_avg_obs_fake_quant(
            torch.from_numpy(x.copy()), torch.tensor([1]), torch.tensor([1]), run_min, run_max,
            scale, zp, c, lo, hi, 0, per_channel, sym)
        ours.update(x)
        same(ours.qparams(), (scale, zp))
