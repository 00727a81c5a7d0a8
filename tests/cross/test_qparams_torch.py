"""choose_qparams against the installed backends, bit for bit (scale bits and zero point)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import refquant as rq  # noqa: E402
from refquant import qparams as qp  # noqa: E402

RNG = np.random.default_rng(20240604)


def _pairs(n=400):
    """(min, max) float32 pairs: random ranges over many magnitudes plus adversarial ones."""
    mags = 10.0 ** RNG.uniform(-12, 12, n)
    a = (RNG.standard_normal(n) * mags).astype(np.float32)
    b = (RNG.standard_normal(n) * mags).astype(np.float32)
    mn, mx = np.minimum(a, b), np.maximum(a, b)
    special = [(0, 0), (1, 1), (-1, -1), (3.5, 3.5), (-2.0, 0.0), (0.0, 7.0), (-1e-6, 1e-6),
               (-1e-30, 1e-30), (0.0, 1e-40), (-1e-45, 0.0), (-3e38, 3e38), (-1e30, 1.0),
               (-1.0, 1e30), (2.0, 5.0), (-5.0, -2.0), (-1.0, 0.5), (-0.5, 1.0),
               (-np.float32(1.0) / 3, np.float32(2.0) / 3), (-128.0, 127.0), (-0.0, 0.0)]
    mn = np.concatenate([mn, np.float32([p[0] for p in special])])
    mx = np.concatenate([mx, np.float32([p[1] for p in special])])
    return mn, mx


def _bits(a):
    a = np.asarray(a)
    if a.dtype.kind == "f":
        return a.view(f"u{a.dtype.itemsize}")
    return a.astype(np.int64)


def assert_same(ours, theirs):
    s, z = ours
    ts, tz = theirs
    ts_np = ts.detach().float().numpy() if ts.dtype == torch.bfloat16 else ts.detach().numpy()
    assert np.asarray(s).dtype == ts_np.dtype, (np.asarray(s).dtype, ts_np.dtype)
    mism = (_bits(np.asarray(s)).ravel() != _bits(ts_np).ravel()).sum()
    assert mism == 0, f"{mism} scale mismatches"
    tz_np = tz.detach().float().numpy() if tz.dtype == torch.bfloat16 else tz.detach().numpy()
    zm = (np.asarray(z).astype(np.float64).ravel() != tz_np.astype(np.float64).ravel()).sum()
    assert zm == 0, f"{zm} zero point mismatches"


OBS_CASES = [
    ("quint8", "per_tensor_affine", False, None),
    ("quint8", "per_tensor_affine", True, None),
    ("qint8", "per_tensor_affine", False, None),
    ("qint8", "per_tensor_symmetric", False, None),
    ("qint8", "per_tensor_symmetric", True, None),
    ("quint8", "per_tensor_symmetric", False, None),
    ("quint8", "per_tensor_symmetric", False, (0, 15)),
    ("quint8", "per_tensor_affine", True, (0, 15)),
    ("qint8", "per_tensor_affine", False, (-8, 7)),
    ("qint8", "per_tensor_symmetric", False, (-8, 7)),
    ("qint32", "per_tensor_affine", False, None),
    ("int16", "per_tensor_symmetric", False, None),
    ("uint16", "per_tensor_symmetric", False, None),
    ("uint16", "per_tensor_affine", False, None),
    ("int16", "per_tensor_affine", True, None),
    ("qint32", "per_tensor_symmetric", True, None),
    ("quint4x2", "per_tensor_affine", False, None),
    ("quint4x2", "per_tensor_symmetric", False, None),
    ("int8", "per_tensor_symmetric", True, None),
    ("uint8", "per_tensor_symmetric", False, None),
    ("uint8", "per_tensor_affine", True, (0, 31)),
    ("qint8", "per_tensor_symmetric", True, (-128, 127)),
    ("qint8", "per_tensor_affine", False, (-127, 127)),
    ("qint32", "per_tensor_affine", False, (-1000, 1000)),
]


@pytest.mark.parametrize("dtype,qscheme,reduce_range,rng", OBS_CASES)
def test_torch_method_matches_minmax_observer(dtype, qscheme, reduce_range, rng):
    from torch.ao.quantization import MinMaxObserver

    mn, mx = _pairs(150)
    sym = qscheme.endswith("symmetric")
    kw = {} if rng is None else {"quant_min": rng[0], "quant_max": rng[1]}
    for a, b in zip(mn, mx, strict=True):
        obs = MinMaxObserver(dtype=getattr(torch, dtype), qscheme=getattr(torch, qscheme),
                             reduce_range=reduce_range, **kw)
        obs(torch.tensor([a, b]))
        theirs = obs.calculate_qparams()
        ours = rq.choose_qparams(a, b, symmetric=sym, dtype=dtype, reduce_range=reduce_range,
                                 **({} if rng is None else {"qmin": rng[0], "qmax": rng[1]}))
        assert_same((np.atleast_1d(ours[0]), np.atleast_1d(ours[1])), theirs)


@pytest.mark.parametrize("qscheme", ["per_channel_affine", "per_channel_symmetric",
                                     "per_channel_affine_float_qparams"])
@pytest.mark.parametrize("dtype", ["quint8", "qint8"])
def test_torch_method_per_channel(qscheme, dtype):
    from torch.ao.quantization import PerChannelMinMaxObserver

    mn, mx = _pairs()
    obs = PerChannelMinMaxObserver(ch_axis=0, dtype=getattr(torch, dtype),
                                   qscheme=getattr(torch, qscheme))
    obs(torch.from_numpy(np.stack([mn, mx], axis=1)))
    theirs = obs.calculate_qparams()
    ours = rq.choose_qparams(mn, mx, dtype=dtype, symmetric=qscheme.endswith("symmetric"),
                             qscheme=qscheme)
    assert_same(ours, theirs)


def test_torch_method_fmt_is_default_dtype():
    assert rq.choose_qparams(-1.0, 0.5, fmt=rq.uint8, symmetric=True)[1] == 128
    assert rq.choose_qparams(-1.0, 0.5, qmin=0, qmax=255, symmetric=True)[1] == 127
    assert rq.choose_qparams(-1.0, 0.5, fmt=rq.uint16, symmetric=True)[1] == 2**15


def test_decomposed_determine_qparams_same_values():
    from torch.ao.quantization.utils import determine_qparams

    mn, mx = _pairs(100)
    for sym in (False, True):
        scheme = torch.per_tensor_symmetric if sym else torch.per_tensor_affine
        s, z = determine_qparams(torch.from_numpy(mn), torch.from_numpy(mx), -128, 127,
                                 torch.int8, torch.tensor([qp.F32_EPS]), has_customized_qrange=False,
                                 qscheme=scheme)
        ours = rq.choose_qparams(mn, mx, fmt=rq.int8, symmetric=sym)
        np.testing.assert_array_equal(_bits(ours[0]), _bits(s.numpy().astype(np.float32)))
        np.testing.assert_array_equal(np.asarray(ours[1], np.int64), z.numpy())


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("qrange", [(0, 255), (0, 127), (-128, 127), (-8, 7), (0, 15)])
def test_fbgemm_matches_fused_moving_avg_obs_fake_quant(symmetric, qrange):
    mn, mx = _pairs()
    lo, hi = qrange
    for a, b in zip(mn, mx, strict=True):
        run_min, run_max = torch.tensor([np.inf]), torch.tensor([-np.inf])
        scale, zp = torch.tensor([1.0]), torch.tensor([0], dtype=torch.int32)
        torch.fused_moving_avg_obs_fake_quant(
            torch.tensor([a, b]), torch.tensor([1]), torch.tensor([1]), run_min, run_max,
            scale, zp, 1.0, lo, hi, 0, False, symmetric)
        s, z = rq.choose_qparams(a, b, qmin=lo, qmax=hi, symmetric=symmetric, method="fbgemm")
        assert _bits(np.float32(s)) == _bits(scale.numpy())[0], (a, b, s, scale)
        assert int(z) == int(zp[0]), (a, b, z, zp)


def test_fbgemm_per_channel_fused():
    mn, mx = _pairs()
    x = torch.from_numpy(np.stack([mn, mx], axis=1))
    n = len(mn)
    run_min, run_max = torch.full((n,), np.inf), torch.full((n,), -np.inf)
    scale, zp = torch.ones(n), torch.zeros(n, dtype=torch.int32)
    torch.fused_moving_avg_obs_fake_quant(x, torch.tensor([1]), torch.tensor([1]), run_min,
                                          run_max, scale, zp, 1.0, -128, 127, 0, True, True)
    assert_same(rq.choose_qparams(mn, mx, fmt=rq.int8, symmetric=True, method="fbgemm"),
                (scale, zp))


TORCHAO_CASES = [("asymmetric", -128, 127), ("asymmetric", 0, 255), ("asymmetric", -8, 7),
                 ("symmetric", -128, 127), ("symmetric", 0, 255), ("symmetric", -8, 7),
                 ("symmetric", 0, 15), ("symmetric_no_clipping_err", -128, 127),
                 ("symmetric_no_clipping_err", -8, 7), ("asymmetric", -32768, 32767),
                 ("symmetric", -32768, 32767)]


@pytest.mark.parametrize("mapping,lo,hi", TORCHAO_CASES)
@pytest.mark.parametrize("tdtype", ["float32", "bfloat16", "float16"])
def test_torchao_choose_qparams_affine(mapping, lo, hi, tdtype):
    from torchao.quantization.quant_primitives import MappingType, choose_qparams_affine

    mn, mx = _pairs()
    tt = getattr(torch, tdtype)
    x = torch.from_numpy(np.stack([mn, mx], axis=1)).to(tt)
    if tdtype == "float16":
        x = x[torch.isfinite(x).all(dim=1)]
    theirs = choose_qparams_affine(x, getattr(MappingType, mapping.upper()), (1, 2), torch.int32,
                                   lo, hi)
    xs = x.float().numpy()
    from refquant._dtypes import bfloat16

    npdt = {"float32": np.float32, "float16": np.float16, "bfloat16": bfloat16()}[tdtype]
    ours = qp.torchao_qparams(xs[:, 0].astype(npdt), xs[:, 1].astype(npdt), lo, hi,
                              mapping=mapping)
    if tdtype == "float32":
        assert_same(ours, theirs)
    else:
        assert_same((np.asarray(ours[0]).astype(np.float32), ours[1]),
                    (theirs[0].float(), theirs[1]))


def test_onnx_dynamic_quantize_linear():
    from onnx.reference.ops.op_dynamic_quantize_linear import DynamicQuantizeLinear

    run = DynamicQuantizeLinear._run
    mn, mx = _pairs(200)
    for a, b in zip(mn, mx, strict=True):
        _, s, z = run(None, np.float32([a, b]))
        ours = rq.choose_qparams(a, b, method="onnx")
        assert _bits(ours[0]) == _bits(s) and ours[1] == z, (a, b)


def test_symmetric_variants_table():
    # the symmetric variants on the input [-1.0, -0.3, 0.2, 0.5]
    narrow = rq.IntFormat(8, narrow=True)
    got = {m: float(rq.choose_qparams(-1.0, 0.5, fmt=narrow if "narrow" in m else rq.int8,
                                      method=m)[0])
           for m in ("amax/127.5", "amax/127", "amax/127-narrow", "amax/128")}
    assert got["amax/127.5"] == float(np.float32(1 / 127.5))
    assert got["amax/127"] == got["amax/127-narrow"] == float(np.float32(1 / 127))
    assert got["amax/128"] == 2.0**-7


@pytest.mark.parametrize("dtype,rng", [("quint8", (1, 10)), ("qint8", (-10, -1)), ("quint8", (0, 0)),
                                       ("qint8", (-200, 100)), ("quint8", (5, 5))])
def test_torch_method_refuses_the_ranges_torch_refuses(dtype, rng):
    from torch.ao.quantization import MinMaxObserver

    with pytest.raises(AssertionError):
        MinMaxObserver(dtype=getattr(torch, dtype), quant_min=rng[0], quant_max=rng[1])
    with pytest.raises(ValueError, match="qmin"):
        rq.choose_qparams(-1.0, 1.0, qmin=rng[0], qmax=rng[1], dtype=dtype)
