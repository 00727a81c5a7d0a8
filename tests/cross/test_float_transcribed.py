"""Element conventions of libraries that do not install here, against their published algorithms
(re-typed in NumPy from the libraries' reference code)."""

from __future__ import annotations

import numpy as np
import pytest

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


_MXC_ELEM = {"float8_e4m3fn": (4, 5, 448.0), "float8_e5m2": (5, 4, 57344.0),
             "float6_e3m2fn": (3, 4, 28.0), "float6_e2m3fn": (2, 5, 7.5), "float4_e2m1fn": (2, 3, 6.0)}


def microxcaling_elemwise(A, ebits, mbits, max_norm, rnd):
    """microxcaling's _quantize_elemwise_core (pure torch path, saturate_normals=True), re-typed
    from its published source."""
    import torch

    private = torch.floor(torch.log2(torch.abs(A) + (A == 0).float()))
    private = private.clip(min=-(2 ** (ebits - 1)) + 2)
    out = A / (2**private) * (2 ** (mbits - 2))
    if rnd == "nearest":
        out = torch.sign(out) * torch.floor(torch.abs(out) + 0.5)
    else:
        absA = torch.abs(out)
        mask = ((absA - 0.5) % 2 == torch.zeros_like(out)).float()
        out = torch.sign(out) * (torch.floor(absA + 0.5) - mask)
    out = out / (2 ** (mbits - 2)) * (2**private)
    out = torch.clamp(out, min=-max_norm, max=max_norm)
    out[A == float("inf")] = float("inf")
    out[A == -float("inf")] = -float("inf")
    return out


@pytest.mark.parametrize("rnd", ["nearest", "even"])
@pytest.mark.parametrize("name", list(_MXC_ELEM))
def test_microxcaling_elements(name, rnd):
    torch = pytest.importorskip("torch")
    x = probes32(name)
    x = np.concatenate([x, np.float32([3.4028235e38, -3.4028235e38, 0.00097656244])])
    want = microxcaling_elemwise(torch.from_numpy(x), *_MXC_ELEM[name], rnd).numpy()
    rounding = "half_away" if rnd == "nearest" else "half_even"
    got = rq.fake_quantize(x, 1.0, fmt=name, convention="microxcaling", rounding=rounding)
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), (x[~same][:5], got[~same][:5], want[~same][:5])
    # E6: ties go away from zero under 'nearest'; the exact convention rounds them to even
    if rnd == "nearest":
        finite = np.isfinite(x) & (np.abs(x) < 1e38)
        exact = rq.fake_quantize(x[finite], 1.0, fmt=name)
        assert (got[finite] != exact).sum() > 0


_BREVITAS = {  # E, M, bias, max_available_float (brevitas' OCP and FNUZ quantizers and mixins)
    "float8_e4m3fn": (4, 3, 7, 448.0), "float8_e5m2": (5, 2, 15, 57344.0),
    "float8_e4m3fnuz": (4, 3, 8, 240.0), "float8_e5m2fnuz": (5, 2, 16, 57344.0),
    "float6_e3m2fn": (3, 2, 3, 28.0), "float6_e2m3fn": (2, 3, 1, 7.5), "float4_e2m1fn": (2, 1, 1, 6.0),
}


def brevitas_float_quant(x, E, M, bias, max_val, saturating, has_inf):
    """brevitas FloatQuant.quantize + FloatClamp with a constant scale of 1, re-typed in torch
    from its published source (float_internal_scale, RoundSte, FloatClamp.forward)."""
    import torch

    eps = torch.finfo(torch.float32).tiny
    internal = torch.floor(torch.log2(torch.abs(x) + eps)) - M
    internal = torch.clamp_min(internal, torch.tensor(1.0 - bias - M))
    internal = torch.exp2(internal)
    y = internal * torch.round(x / internal)
    inf_mask = y.isinf()
    p_mask, n_mask = y > max_val, y < -max_val
    y = torch.clamp(y, min=-max_val, max=max_val)
    if not saturating:
        if has_inf:
            y[p_mask] = float("inf")
            y[n_mask] = float("-inf")
        else:
            y[p_mask | n_mask] = float("nan")
            y[inf_mask] = float("nan")
    return y


@pytest.mark.parametrize("saturating", [True, False])
@pytest.mark.parametrize("name", list(_BREVITAS))
def test_brevitas_elements(name, saturating):
    torch = pytest.importorskip("torch")
    fmt = getattr(rq, name)
    if not saturating and not (fmt.has_inf or fmt.has_nan):
        pytest.skip("brevitas needs inf or NaN codes when not saturating")
    x = probes32(name)
    want = brevitas_float_quant(torch.from_numpy(x), *_BREVITAS[name], saturating, fmt.has_inf).numpy()
    got = rq.fake_quantize(x, 1.0, fmt=name, convention="brevitas", saturate=saturating)
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), (x[~same][:5], got[~same][:5], want[~same][:5])
    # E2: +-inf gives NaN even when saturating; exact saturates it to +-max
    assert np.isnan(rq.fake_quantize(np.float32([np.inf]), 1.0, fmt=name, convention="brevitas")[0])
    assert rq.fake_quantize(np.float32([np.inf]), 1.0, fmt=name)[0] == fmt.max


def test_modelopt_float8():
    """ModelOpt's FP8 export, ``(weight / weights_scaling_factor).to(torch.float8_e4m3fn)`` with a
    float32 per-channel scale (the 16-bit weight promoted to float32), run on torch."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("ml_dtypes")
    from refquant_torch._bridge import to_numpy

    rng = np.random.default_rng(3)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        w = torch.from_numpy(rng.standard_normal((64, 256)) * 0.02).to(dtype)
        w[0, :6] = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e4]).to(dtype)
        s = w.float().abs().nan_to_num(0.0, 0.0, 0.0).amax(dim=1, keepdim=True) / 448.0
        want = (w / s).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
        got = rq.quantize(to_numpy(w), s.numpy().reshape(-1), fmt="float8_e4m3fn", axis=0,
                          convention="modelopt.float8")
        np.testing.assert_array_equal(got, want)
