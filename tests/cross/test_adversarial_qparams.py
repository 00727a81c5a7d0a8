"""Regressions from adversarial fuzzing of the qparam rules and observers against torch/torchao:
histograms whose bin arithmetic overflows, FBGEMM's unchecked ranges, torchao's signed zeros and
infinite ranges."""

import warnings

import numpy as np
import pytest

import refquant as rq
from refquant import qparams as qp

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _bits32(a):
    return np.asarray(a, np.float32).view(np.uint32)


# ---- Histogram: (x - min) * bins overflowing float32


@pytest.mark.parametrize("batch", [
    [2.4648543e37, 9.913112e36, -3.9094717e37],
    [1e-45, 3e38, 2e38],
    [-1.5e38, 0.0, 1.7e38, 1.1e38],
    # one value: the range widens to its float32 neighbours (+-FLT_MAX: to one side only)
    [3.4028235e38], [-3.4028235e38], [2.0**127], [-(2.0**127)], [2.0**126], [3.3e38], [1.0], [0.0],
])
def test_histogram_counts_where_the_bin_product_overflows(batch):
    from torch.ao.quantization import HistogramObserver

    x = np.float32(batch)
    theirs = HistogramObserver()
    theirs(torch.from_numpy(x))
    ours = rq.observers.Histogram(fmt=rq.uint8).update(x)
    assert ours.histogram.astype(np.float32).tolist() == theirs.histogram.tolist()
    s, z = theirs.calculate_qparams()
    ts, tz = ours.qparams()
    assert _bits32(ts) == _bits32(s.item()) and int(tz) == int(z.item())


def test_histogram_of_a_range_wider_than_float32_is_empty_and_refused():
    from torch.ao.quantization import HistogramObserver

    x = np.float32([-3.4e38, 0.0, 1.7e38, 3.3e38])
    theirs = HistogramObserver()
    theirs(torch.from_numpy(x))
    ours = rq.observers.Histogram(fmt=rq.uint8).update(x)
    assert ours.histogram.sum() == theirs.histogram.sum() == 0
    assert np.isnan(theirs.calculate_qparams()[0].item())  # refquant refuses the NaN range instead
    with pytest.raises(ValueError, match="must be finite"):
        ours.qparams()


@pytest.mark.parametrize("batches", [
    [[0.0, 255.0], [3.4028235e38, -3.3e38], [-3.4028235e38]],
    [[1.0, 2.0], [-3.4028235e38, 3.4028235e38]],
    [[-1.0, 1.0], [3.4e38], [-3.4e38]],
])
def test_histogram_moved_onto_a_range_wider_than_float32(batches):
    """The old histogram moved onto a new range whose width overflows float32: the midpoints and
    edges are inf or NaN, and ATen's bucketize steps right past a NaN comparison."""
    from torch.ao.quantization import HistogramObserver

    theirs = HistogramObserver(dtype=torch.quint8)
    ours = rq.observers.Histogram(dtype="quint8")
    for b in batches:
        x = np.float32(b)
        theirs(torch.from_numpy(x))
        ours.update(x)
        assert ours.histogram.astype(np.float32).tolist() == theirs.histogram.tolist()


def test_histogram_kernel_stays_in_bounds_for_every_overflowing_value():
    from refquant._kernels._histogram import histc

    lo, hi = np.float32(-3.3e38), np.float32(3.3e38)
    x = np.float32([3.3e38, -3.3e38, 0.0, 1e38, -1e38, 3.29e38])
    counts = histc(x, 2048, lo, hi, True)
    assert counts.sum() == torch.histc(torch.from_numpy(x), 2048, float(lo), float(hi)).sum()


# ---- FBGEMM ChooseQuantizationParams (the fused QAT op)


def _fused(mn, mx, qmin, qmax, symmetric):
    s, z = torch.tensor([1.0]), torch.tensor([0], dtype=torch.int32)
    torch.fused_moving_avg_obs_fake_quant(
        torch.zeros(1), torch.tensor([0]), torch.tensor([1]), torch.tensor([mn], dtype=torch.float32),
        torch.tensor([mx], dtype=torch.float32), s, z, 0.01, qmin, qmax, 0, False, symmetric)
    return s.item(), z.item()


FBGEMM_CASES = [
    (1.0000001, 1.0, 0, 255, False),          # a moving average leaves min a few ulps above max
    (-1.0, -1.0000001, 0, 255, False),
    (0.5000001, 0.5, -128, 127, True),
    (-3.78e-44, 3.08e-44, 0, 255, True),      # subnormal symmetric: the adjusted range is 0
    (-1e-40, 2e-40, -128, 127, True),
    (-1.0, 1.0, 0, 1, True),                  # 1-bit symmetric: NaN scale, INT32_MIN zero point
    (-1.0, 1.0, -1, 0, True),
    (-np.inf, 1.0, 0, 255, False),            # FBGEMM checks nothing: IEEE arithmetic
    (-1.0, np.inf, 0, 255, False),
    (-np.inf, np.inf, -128, 127, True),
    (np.nan, 1.0, 0, 255, False),
    (-3e38, 3e38, 0, 255, False),
]


@pytest.mark.parametrize("mn,mx,lo,hi,sym", FBGEMM_CASES)
def test_fbgemm_qparams_match_the_fused_op(mn, mx, lo, hi, sym):
    s, z = _fused(mn, mx, lo, hi, sym)
    ours = qp.fbgemm_qparams(mn, mx, lo, hi, preserve_sparsity=sym)
    assert _bits32(ours[0]) == _bits32(s) or (np.isnan(ours[0]) and np.isnan(s))
    assert int(ours[1]) == z


def test_fbgemm_observer_gives_qparams_when_the_average_crosses():
    obs = rq.observers.MovingAverageMinMax(averaging_constant=0.5, fmt=rq.uint8, method="fbgemm")
    obs.min_val, obs.max_val = np.float32(1.0000001), np.float32(1.0)
    s, z = _fused(1.0000001, 1.0, 0, 255, False)
    got = obs.qparams()
    assert _bits32(got[0]) == _bits32(s) and int(got[1]) == z
    with pytest.raises(ValueError, match="min_val must be <= max_val"):
        rq.choose_qparams(1.0000001, 1.0, fmt=rq.uint8, method="torch")


# ---- torchao choose_qparams_affine


def _torchao(mn, mx, mapping, lo, hi, eps, tdtype):
    from torchao.quantization.quant_primitives import (
        MappingType,
        choose_qparams_affine_with_min_max,
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return choose_qparams_affine_with_min_max(mn, mx, getattr(MappingType, mapping.upper()), [],
                                                  torch.int32, lo, hi, eps=eps)


@pytest.mark.parametrize("tdtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("mapping", ["asymmetric", "symmetric", "symmetric_no_clipping_err"])
@pytest.mark.parametrize("eps", [None, 0.0, 1e-10, 1e-30])
def test_torchao_qparams_signed_zeros_and_infinite_ranges(tdtype, mapping, eps):
    from refquant._dtypes import bfloat16

    rng = np.random.default_rng(7)
    vals = np.float32([0.0, -0.0, 6e-8, -6e-8, 1e-5, -1e-5, 1.0, -1.0, np.inf, -np.inf, 3e38, -3e38,
                       1e-40, -1e-40])
    n = 1000  # 1000 % 16 and 1000 % 32 leave scalar tails
    pair = np.sort(rng.choice(vals, (n, 2)), axis=1)
    tt = getattr(torch, tdtype)
    # contiguous, as the amin/amax torchao computes (a strided tensor takes torch's scalar loop)
    mn = torch.from_numpy(np.ascontiguousarray(pair[:, 0])).to(tt)
    mx = torch.from_numpy(np.ascontiguousarray(pair[:, 1])).to(tt)
    ts, tz = _torchao(mn, mx, mapping, -8, 7, eps, tt)
    npdt = {"float32": np.float32, "float16": np.float16, "bfloat16": bfloat16()}[tdtype]
    s, z = qp.torchao_qparams(mn.float().numpy().astype(npdt), mx.float().numpy().astype(npdt), -8, 7,
                              mapping=mapping, eps=eps)
    assert (_bits32(np.asarray(s).astype(np.float32)) == _bits32(ts.float().numpy())).all()
    assert (np.asarray(z).astype(np.float64) == tz.double().numpy()).all()


def test_torchao_zero_scale_sign_depends_on_the_block_position():
    # eps rounds to 0 in float16; the vector body of torch.maximum returns +0.0, its tail -0.0
    n = 40
    zeros = torch.zeros(n, dtype=torch.float16)
    ts, _ = _torchao(zeros, zeros, "symmetric", -8, 7, 1e-10, torch.float16)
    s, _ = qp.torchao_qparams(np.zeros(n, np.float16), np.zeros(n, np.float16), -8, 7, mapping="symmetric",
                              eps=1e-10)
    assert np.signbit(s).tolist() == torch.signbit(ts).tolist() == [False] * 32 + [True] * 8
