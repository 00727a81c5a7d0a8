"""Differential fuzz of the observers and qparam rules against torch.ao's observers, the fused QAT
op (FBGEMM's rule) and torchao's choose_qparams_affine, on adversarial ranges and batches: huge
and subnormal values, signed zeros, +-inf, all-equal and single-element batches, and moving
averages that cross."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refquant as rq
from refquant import qparams as qp

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.fuzz, pytest.mark.filterwarnings("ignore::UserWarning")]

EDGES = [0.0, -0.0, 1e-45, -1e-45, 1e-40, 3e-44, 6.1e-5, 1e-5, 0.5, 1.0, 255.0, 1e30, 1e37, 3.3e38,
         -3.3e38, 3.4028235e38]

floats32 = st.one_of(st.sampled_from(EDGES), st.floats(-1e6, 1e6, width=32),
                     st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True))


@st.composite
def batches(draw, allow_inf=False):
    vals = floats32 if not allow_inf else st.one_of(floats32, st.sampled_from([np.inf, -np.inf]))
    x = np.float32(draw(st.lists(vals, min_size=1, max_size=24)))
    return x * np.float32(draw(st.sampled_from([1.0, -1.0])))


def _bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


def _same_qparams(ours, theirs):
    s, z = ours
    ts, tz = (t.detach().numpy() for t in theirs)
    s, ts = np.asarray(s, np.float32).ravel(), np.asarray(ts, np.float32).ravel()
    assert ((_bits(s) == _bits(ts)) | (np.isnan(s) & np.isnan(ts))).all(), (s, ts)
    assert np.asarray(z).astype(np.int64).ravel().tolist() == tz.astype(np.int64).ravel().tolist()


RANGES = [(0, 255, "quint8"), (-128, 127, "qint8")]


@given(st.lists(batches(), min_size=1, max_size=3), st.sampled_from(RANGES), st.booleans())
def test_minmax_observer(xs, rng, symmetric):
    from torch.ao.quantization import MinMaxObserver

    lo, hi, dt = rng
    theirs = MinMaxObserver(dtype=getattr(torch, dt),
                            qscheme=torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine)
    ours = rq.observers.MinMax(dtype=dt, symmetric=symmetric)
    for x in xs:
        theirs(torch.from_numpy(x))
        ours.update(x)
    # as numbers: the sign of a zero min/max follows torch's reduction order, and no qparam rule
    # can see it (documented in refquant.observers)
    assert ours.min_val == theirs.min_val.item() and ours.max_val == theirs.max_val.item()
    try:
        got = ours.qparams()
    except ValueError:  # documented refusal: a non-finite range under method="torch"
        assert not np.isfinite([ours.min_val, ours.max_val]).all()
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _same_qparams(got, theirs.calculate_qparams())


@given(st.lists(batches(), min_size=1, max_size=3), st.sampled_from(RANGES))
def test_histogram_observer(xs, rng):
    from torch.ao.quantization import HistogramObserver

    lo, hi, dt = rng
    theirs = HistogramObserver(dtype=getattr(torch, dt))
    ours = rq.observers.Histogram(dtype=dt)
    for x in xs:
        try:
            theirs(torch.from_numpy(x))
        except RuntimeError:  # torch's histc refuses a range it cannot bin; so must we
            with pytest.raises(ValueError):
                ours.update(x)
            return
        ours.update(x)
    assert ours.histogram.astype(np.float32).tolist() == theirs.histogram.tolist()
    try:
        got = ours.qparams()
    except ValueError:
        return  # documented refusal of a non-finite clipped range
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _same_qparams(got, theirs.calculate_qparams())


@given(floats32, floats32, st.sampled_from([(0, 255), (-128, 127), (0, 1), (-1, 0), (0, 15)]),
       st.booleans())
def test_fbgemm_rule_against_the_fused_op(mn, mx, rng, symmetric):
    lo, hi = rng
    s, z = torch.tensor([1.0]), torch.tensor([0], dtype=torch.int32)
    torch.fused_moving_avg_obs_fake_quant(
        torch.zeros(1), torch.tensor([0]), torch.tensor([1]), torch.tensor([mn], dtype=torch.float32),
        torch.tensor([mx], dtype=torch.float32), s, z, 0.01, lo, hi, 0, False, symmetric)
    _same_qparams(qp.fbgemm_qparams(mn, mx, lo, hi, preserve_sparsity=symmetric), (s, z))


@given(st.lists(st.tuples(floats32, floats32), min_size=1, max_size=70),
       st.sampled_from(["asymmetric", "symmetric", "symmetric_no_clipping_err"]),
       st.sampled_from([(-128, 127), (0, 255), (-8, 7)]), st.sampled_from(["float32", "float16", "bfloat16"]),
       st.sampled_from([None, 0.0, 1e-10, 1e-5]))
def test_torchao_rule(pairs, mapping, rng, tdtype, eps):
    from torchao.quantization.quant_primitives import (
        MappingType,
        choose_qparams_affine_with_min_max,
    )

    from refquant._dtypes import bfloat16

    lo, hi = rng
    if mapping == "symmetric_no_clipping_err" and lo == 0:
        return  # qmin = 0 divides by zero in torchao
    a = np.float32(pairs)
    tt = getattr(torch, tdtype)
    mn = torch.from_numpy(np.ascontiguousarray(a.min(axis=1))).to(tt)
    mx = torch.from_numpy(np.ascontiguousarray(a.max(axis=1))).to(tt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts, tz = choose_qparams_affine_with_min_max(mn, mx, getattr(MappingType, mapping.upper()), [],
                                                    torch.int32, lo, hi, eps=eps)
    npdt = {"float32": np.float32, "float16": np.float16, "bfloat16": bfloat16()}[tdtype]
    s, z = qp.torchao_qparams(mn.float().numpy().astype(npdt), mx.float().numpy().astype(npdt), lo, hi,
                              mapping=mapping, eps=eps)
    s32, t32 = np.asarray(s).astype(np.float32), ts.float().numpy()
    assert ((_bits(s32) == _bits(t32)) | (np.isnan(s32) & np.isnan(t32))).all()
    assert np.asarray(z).astype(np.float64).tolist() == tz.double().numpy().tolist()
