"""The certified re-quantize path reports exactly the elements where the stored codes differ from
rq.quantize under the convention, with rq.quantize's codes: on tie-heavy inputs (exact ties,
one ulp either side, out of range, NaN, inf), for every convention, dtype and granularity."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refquant as rq
from refquant.checkpoint._checks import requantize
from refquant.checkpoint._formats import QTensor

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.dtype(np.float32), np.dtype(np.float16), BF16, np.dtype(np.float64)]


def _tie_heavy(rng, shape, scale, zp, dtype, qmin, qmax):
    """x near (k + 1/2 - z) * s for codes k across and beyond the range, nudged by 0..2 ulps."""
    k = rng.integers(qmin - 3, qmax + 3, size=shape)
    x = ((k + 0.5 - zp) * scale).astype(dtype)
    bits = x.view(f"u{dtype.itemsize}")
    nudge = rng.integers(-2, 3, size=shape).astype(bits.dtype)
    x = (bits + nudge).view(dtype)
    plain = rng.random(shape) < 0.3
    x = np.where(plain, (rng.standard_normal(shape) * scale * qmax).astype(dtype), x)
    flat = x.reshape(-1)
    flat[:3] = np.array([np.inf, -np.inf, 0.0]).astype(dtype)
    return x


def _q(qmin, qmax):
    return QTensor(name="w", format="t", kind="int", parts=(), shape=(0, 0), qmin=qmin, qmax=qmax)


def _check(conv, dtype, s_dtype, qmin, qmax, zp, group, seed):
    rng = np.random.default_rng(seed)
    r, c = 6, 64
    scale = (rng.uniform(0.5, 2.0, size=(r, c // group)) * 2.0 ** rng.integers(-8, 4)).astype(s_dtype)
    s64 = np.repeat(scale.astype(np.float64), group, axis=1)
    x = _tie_heavy(rng, (r, c), s64, zp, dtype, qmin, qmax)
    if rq.conventions.get(conv).nan != "error":
        x[1, 5] = np.nan
    try:
        truth = rq.quantize(x, scale, zp, qmin=qmin, qmax=qmax, block_size=(1, group), convention=conv)
    except (ValueError, TypeError):
        pytest.skip(f"{conv} does not run {dtype}")
    truth = truth.astype(np.int64)
    stored = truth.copy()
    flips = rng.random((r, c)) < 0.05
    stored[flips] = np.where(stored[flips] < qmax, stored[flips] + 1, stored[flips] - 1)
    zpa = np.full(scale.shape, zp, np.int64)
    bad = np.zeros(scale.shape, bool)
    rr, cc, exp, _ = requantize(_q(qmin, qmax), conv, x, stored.astype(np.int16), scale, zpa, bad, {})
    want_r, want_c = np.nonzero(stored != truth)
    assert rr.tolist() == want_r.tolist() and cc.tolist() == want_c.tolist()
    assert exp.tolist() == truth[want_r, want_c].tolist()


NAMES = rq.conventions.names()


@pytest.mark.parametrize("conv", NAMES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_certified_equals_quantize(conv, dtype):
    for s_dtype in (np.dtype(np.float32), dtype):
        for qmin, qmax, zp, group in [(-128, 127, 0, 64), (-8, 7, 0, 16), (0, 15, 3, 8), (0, 255, 128, 32)]:
            if conv == "modelopt" and zp:
                continue
            _check(conv, dtype, s_dtype, qmin, qmax, zp, group, seed=qmax + zp)


@settings(deadline=None, max_examples=40)
@given(conv=st.sampled_from(NAMES), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1),
       bits=st.sampled_from([2, 4, 8]), signed=st.booleans())
def test_certified_equals_quantize_fuzz(conv, dtype, seed, bits, signed):
    f = rq.IntFormat(bits, signed=signed)
    zp = 0 if signed or conv == "modelopt" else (f.qmax + 1) // 2
    _check(conv, dtype, dtype, f.qmin, f.qmax, zp, 16, seed)
