"""Element conventions of libraries that do not install here, against their published algorithms
(re-typed in NumPy from the libraries' reference code)."""

from __future__ import annotations

import numpy as np

import refquant as rq
from tests.float_oracles import probes32

FP4_BOUNDS = np.float32([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])


def transformer_engine_cast_to_fp4(x: np.ndarray) -> np.ndarray:
    """TransformerEngine's reference cast_to_fp4x2: a table of ranges per code, zero elsewhere.
    Closed and open ends alternate so that ties go to the even code; the top range is open
    ended (saturating)."""
    out = np.zeros(x.shape, np.uint8)
    lows = np.concatenate([[0.0], FP4_BOUNDS])
    highs = np.concatenate([FP4_BOUNDS, [np.inf]])
    for code in range(8):
        lo, hi = lows[code], highs[code]
        lo_ok = (x > lo) if code % 2 else (x >= lo)
        hi_ok = (x <= hi) if code % 2 == 0 or code == 7 else (x < hi)
        out[lo_ok & hi_ok] = code
        nlo_ok = (x < -lo) if code % 2 or code == 0 else (x <= -lo)
        nhi_ok = (x >= -hi) if code % 2 == 0 or code == 7 else (x > -hi)
        out[nlo_ok & nhi_ok] = code | 8
    return out


def modelopt_cast_fp4(x: np.ndarray) -> np.ndarray:
    """ModelOpt's _cast_fp4: sign from x < 0, searchsorted on the bounds (NaN sorts last), plus
    one where |x| equals a bound of odd index."""
    sign = (x < 0).astype(np.uint8)
    ax = np.abs(x)
    ordinal = np.searchsorted(FP4_BOUNDS, ax, side="left").astype(np.uint8)
    odd_bound = (ax[..., None] == FP4_BOUNDS) & (np.arange(7) % 2 == 1)
    return (sign * 8 + ordinal + odd_bound.any(-1)).astype(np.uint8)


def _inputs():
    x = probes32("float4_e2m1fn")
    return np.concatenate([x, np.float32([-0.1, 0.1, -0.25, 0.25, 5.0, -5.0, 1e30, -1e30])])


def test_transformer_engine_fp4():
    x = _inputs()
    want = transformer_engine_cast_to_fp4(x)
    np.testing.assert_array_equal(rq.encode(x, "float4_e2m1fn", convention="transformer_engine"), want)
    assert want[np.flatnonzero(np.isnan(x))[0]] == 0


def test_modelopt_fp4():
    x = _inputs()
    want = modelopt_cast_fp4(x)
    np.testing.assert_array_equal(rq.encode(x, "float4_e2m1fn", convention="modelopt"), want)


def test_nan_into_fp4_differs_between_conventions():
    """E3: NaN into fp4 is code 0 (TE), 7 (ModelOpt), 8 (ml_dtypes), an error under exact."""
    nan = np.float32([np.nan])
    got = {c: int(rq.encode(nan, "float4_e2m1fn", convention=c)[0])
           for c in ("transformer_engine", "modelopt", "ml_dtypes", "onnx")}
    assert got == {"transformer_engine": 0, "modelopt": 7, "ml_dtypes": 8, "onnx": 8}
