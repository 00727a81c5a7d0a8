"""Observers against torch.ao's, bit for bit on random and adversarial streams."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import refquant as rq  # noqa: E402
from refquant._kernels import _histogram as h  # noqa: E402
from refquant_torch.observers import histogram_arithmetic  # noqa: E402

tq = pytest.importorskip("torch.ao.quantization")
RNG = np.random.default_rng(11)
HIST = histogram_arithmetic()  # the variant of torch's arithmetic measured in this process


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
    ours = rq.observers.Histogram(dtype=dtype, symmetric=sym, **HIST)
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
    ours = rq.observers.Histogram(dtype="quint8", **HIST)
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
        assert (h.linspace32(a, b, n, HIST["linspace_fma"]).view(np.uint32) == t.view(np.uint32)).all()
        x = (RNG.standard_normal(3000) * 10 ** RNG.uniform(-5, 5)).astype(np.float32)
        lo, hi = np.float32(x.min() * 1.25), x.max()
        th = torch.histc(torch.from_numpy(x), 2048, float(lo), float(hi)).numpy()
        np.testing.assert_array_equal(h.histc(x, 2048, lo, hi, HIST["linspace_fma"]), th)
    for v in (3.0, 1e10, -5e12):
        x = np.full(7, v, np.float32)
        th = torch.histc(torch.from_numpy(x), 2048, float(v), float(v)).numpy()
        np.testing.assert_array_equal(
            h.histc(x, 2048, np.float32(v), np.float32(v), HIST["linspace_fma"]), th)


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


# ---------------------------------------------------------------------------------------------
# torch's float32 sums, and Histogram streams where the sum order decides the search


def test_detected_histogram_arithmetic_follows_the_kernel_set():
    """x86: torch.sum's order is that of 8 lanes under every kernel set (AVX512 included);
    linspace fuses its multiply-add except in the DEFAULT kernels."""
    cap = torch.backends.cpu.get_cpu_capability()
    if cap not in ("DEFAULT", "AVX2", "AVX512"):
        pytest.skip(f"expectations written for x86 kernel sets; this torch runs {cap}")
    assert HIST == {"sum_lanes": 8, "linspace_fma": cap != "DEFAULT"}, cap


def test_torch_sum32_matches_torch_sum():
    width = HIST["sum_lanes"]
    lengths = list(range(1, 40)) + [63, 64, 65, 100, 255, 256, 257, 1000, 2047, 2048, 2049,
                                      4099, 10000, 32768]
    mismatches = 0
    for n in lengths:
        for _ in range(3):
            x = (RNG.standard_normal(n) * 10 ** RNG.uniform(-3, 6, n)).astype(np.float32)
            x[RNG.random(n) < 0.3] = 0.0
            ours = h.torch_sum32(x, width)
            theirs = torch.sum(torch.from_numpy(x)).numpy()
            mismatches += int(bits(ours) != bits(theirs))
    assert mismatches == 0


def _long_streams(count):
    """Seeded streams of 2-5 batches (1e3 to 4e5 values, heavy tails, growing ranges), each with
    the (dtype, symmetric) it is tested under; stream 18 is one where a float64 sum of the
    histogram took the L2 search onto another path than torch's float32 cascade sum."""
    r = np.random.default_rng(5)
    out = []
    for trial in range(count):
        dtype, sym = [("quint8", False), ("qint8", True), ("qint8", False), ("quint8", True)][trial % 4]
        batches = []
        for b in range(int(r.integers(2, 6))):
            size = int(r.choice([1000, 30000, 200000]))
            sc = 10 ** r.uniform(-3, 3) * (b + 1) ** r.uniform(0, 2)
            x = r.standard_t(r.uniform(1.5, 10), size) * sc + r.uniform(-1, 1) * sc
            batches.append(x.astype(np.float32))
        out.append((dtype, sym, batches))
    return out


LONG = _long_streams(24)


@pytest.mark.parametrize("trial", [18, 0, 5, 10, 15, 21, 23])
def test_histogram_long_streams(trial):
    dtype, sym, batches = LONG[trial]
    scheme = torch.per_tensor_symmetric if sym else torch.per_tensor_affine
    theirs = tq.HistogramObserver(dtype=getattr(torch, dtype), qscheme=scheme)
    ours = rq.observers.Histogram(dtype=dtype, symmetric=sym, **HIST)
    for x in batches:
        theirs(torch.from_numpy(x.copy()))
        ours.update(x)
    expected = theirs.calculate_qparams()
    assert (ours.histogram.view(np.uint32) == theirs.histogram.numpy().view(np.uint32)).all()
    same(ours.qparams(), expected)


@pytest.mark.parametrize("dtype,sym", [("int16", True), ("int16", False), ("uint16", False)])
def test_histogram_16_bit_dtypes_search_65536_bins(dtype, sym):
    scheme = torch.per_tensor_symmetric if sym else torch.per_tensor_affine
    theirs = tq.HistogramObserver(dtype=getattr(torch, dtype), qscheme=scheme)
    ours = rq.observers.Histogram(dtype=dtype, symmetric=sym, **HIST)
    assert ours.dst_bits == 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x in STREAMS["outlier"] + STREAMS["growing"]:
            theirs(torch.from_numpy(x.copy()))
            ours.update(x)
        expected = theirs.calculate_qparams()
    same(ours.qparams(), expected)


# ---------------------------------------------------------------------------------------------
# per-channel statistics on every axis, NaN and inf channels


@pytest.mark.parametrize("axis", [0, 1, 2, 3])
@pytest.mark.parametrize("moving", [False, True])
def test_per_channel_every_axis_with_special_values(axis, moving):
    kw = {"averaging_constant": 0.25} if moving else {}
    tcls = tq.MovingAveragePerChannelMinMaxObserver if moving else tq.PerChannelMinMaxObserver
    ocls = rq.observers.MovingAverageMinMax if moving else rq.observers.MinMax
    theirs = tcls(ch_axis=axis, dtype=torch.qint8, qscheme=torch.per_channel_symmetric, **kw)
    ours = ocls(axis=axis, dtype="qint8", symmetric=True, **kw)
    shape = (5, 3, 70, 2)
    for k in range(3):
        x = (RNG.standard_normal(shape) * 10 ** RNG.uniform(-3, 3)).astype(np.float32)
        if k == 1:
            x[(slice(None),) * axis + (1,)] = 7.0  # a constant channel
        theirs(torch.from_numpy(x.copy()))
        ours.update(x)
    for mine, ref in ((ours.min_val, theirs.min_val), (ours.max_val, theirs.max_val)):
        assert (bits(mine) == bits(ref.numpy())).all()
    same(ours.qparams(), theirs.calculate_qparams())
    x = np.zeros(shape, np.float32)
    x[(slice(None),) * axis + (0,)] = np.nan
    x[(slice(None),) * axis + (1,)] = np.inf
    theirs(torch.from_numpy(x.copy()))
    ours.update(x)
    for mine, ref in ((ours.min_val, theirs.min_val), (ours.max_val, theirs.max_val)):
        ref = ref.numpy()
        assert (np.isnan(mine) == np.isnan(ref)).all()
        keep = ~np.isnan(ref)
        assert (bits(mine[keep]) == bits(ref[keep])).all()


def test_fused_op_restarts_infinite_running_values():
    c = 0.5
    run_min, run_max = torch.full((1,), np.inf), torch.full((1,), -np.inf)
    scale, zp = torch.ones(1), torch.zeros(1, dtype=torch.int32)
    ours = rq.observers.MovingAverageMinMax(averaging_constant=c, qmin=0, qmax=255,
                                            method="fbgemm")
    batches = [np.float32([-np.inf, 1.0]), np.float32([-2.0, 3.0]), np.float32([np.inf, 0.0]),
               np.float32([-1.0, 2.0])]
    for x in batches:
        torch.fused_moving_avg_obs_fake_quant(
            torch.from_numpy(x.copy()), torch.tensor([1]), torch.tensor([1]), run_min, run_max,
            scale, zp, c, 0, 255, 0, False, False)
        ours.update(x)
        assert bits(ours.min_val) == bits(run_min.numpy())[0]
        assert bits(ours.max_val) == bits(run_max.numpy())[0]
    same(ours.qparams(), (scale, zp))


# ---------------------------------------------------------------------------------------------
# torchao choose_qparams_affine on whole streams (float32 and bfloat16)


TORCHAO_STREAMS = ["random", "zeros", "constant", "negative_constant", "outlier", "tiny", "huge"]


@pytest.mark.parametrize("name", TORCHAO_STREAMS)
@pytest.mark.parametrize("tdtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("mapping,lo,hi", [("asymmetric", 0, 255), ("asymmetric", -128, 127),
                                           ("symmetric", -128, 127), ("symmetric", -8, 7)])
def test_torchao_observer_streams(name, tdtype, mapping, lo, hi):
    from torchao.quantization.quant_primitives import MappingType, choose_qparams_affine

    tt = getattr(torch, tdtype)
    batches = [torch.from_numpy(x.copy()).to(tt) for x in STREAMS[name]]
    whole = torch.cat(batches)
    ts, tz = choose_qparams_affine(whole, getattr(MappingType, mapping.upper()), whole.shape,
                                   torch.int32, lo, hi)
    ours = rq.observers.MinMax(qmin=lo, qmax=hi, symmetric=mapping == "symmetric",
                               method="torchao")
    for b in batches:
        if tdtype == "bfloat16":
            from refquant._dtypes import bfloat16

            ours.update(b.float().numpy().astype(bfloat16()))
        else:
            ours.update(b.numpy())
    s, z = ours.qparams()
    assert (bits(np.asarray(s).astype(np.float32)) == bits(ts.float().numpy())).all(), (s, ts)
    assert np.asarray(z).dtype == np.int32 and int(z) == int(tz)


@pytest.mark.parametrize("dtype,sym,reduce_range,qrange", [
    ("quint8", False, True, None), ("qint8", True, True, None), ("quint8", False, False, (0, 15)),
    ("qint8", True, False, (-8, 7)), ("quint8", True, False, (0, 31))])
@pytest.mark.parametrize("name", ["heavy", "growing", "constant_then_range"])
def test_histogram_custom_and_reduced_ranges(dtype, sym, reduce_range, qrange, name):
    scheme = torch.per_tensor_symmetric if sym else torch.per_tensor_affine
    tkw = {} if qrange is None else {"quant_min": qrange[0], "quant_max": qrange[1]}
    okw = {} if qrange is None else {"qmin": qrange[0], "qmax": qrange[1]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = tq.HistogramObserver(dtype=getattr(torch, dtype), qscheme=scheme,
                                      reduce_range=reduce_range, **tkw)
        for x in STREAMS[name]:
            theirs(torch.from_numpy(x.copy()))
        expected = theirs.calculate_qparams()
    ours = rq.observers.Histogram(dtype=dtype, symmetric=sym, reduce_range=reduce_range, **okw,
                                  **HIST)
    for x in STREAMS[name]:
        ours.update(x)
    same(ours.qparams(), expected)
