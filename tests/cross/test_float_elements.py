"""Element casts against every installed library, bit for bit, and the named disagreements."""

from __future__ import annotations

import numpy as np
import pytest

import refquant as rq
from tests.float_oracles import SPEC, probes32

NAMES = list(SPEC)
FP8 = ["float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz"]
SUB_BYTE = ["float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn"]


def every_half_pattern():
    ml = pytest.importorskip("ml_dtypes")
    pats = np.arange(1 << 16, dtype=np.uint16)
    return [pats.view(np.float16), pats.view(ml.bfloat16)]


def _assert_codes(got, want, x):
    bad = np.flatnonzero(np.asarray(got) != np.asarray(want))
    assert bad.size == 0, [(float(x.reshape(-1)[i]), int(got.reshape(-1)[i]), int(want.reshape(-1)[i]))
                           for i in bad[:6]]


# ------------------------------------------------------------------------------------ ml_dtypes


@pytest.mark.parametrize("name", NAMES)
def test_ml_dtypes_every_half_pattern(name):
    ml = pytest.importorskip("ml_dtypes")
    for x in every_half_pattern() + [probes32(name)]:
        want = x.astype(getattr(ml, name)).view(np.uint8)
        _assert_codes(rq.encode(x, name, convention="ml_dtypes"), want, x)


@pytest.mark.parametrize("name", NAMES)
def test_ml_dtypes_decode(name):
    ml = pytest.importorskip("ml_dtypes")
    codes = np.arange(1 << getattr(rq, name).bits, dtype=np.uint8)
    want = codes.view(getattr(ml, name)).astype(np.float32)
    got = rq.decode(codes, name)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_ml_dtypes_differs_from_exact_on_overflow_and_nan():
    """ml_dtypes is IEEE for fp8 (e4m3fn overflow -> NaN) and sends +NaN to -0 in fp4."""
    ml = pytest.importorskip("ml_dtypes")
    x = np.float32([500.0, np.inf])
    want = x.astype(ml.float8_e4m3fn).view(np.uint8)
    assert not np.array_equal(rq.encode(x, rq.float8_e4m3fn), want)
    np.testing.assert_array_equal(rq.encode(x, rq.float8_e4m3fn, convention="ml_dtypes"), want)
    nan = np.float32([np.nan])
    assert nan.astype(ml.float4_e2m1fn).view(np.uint8)[0] == 8
    with pytest.raises(ValueError, match="NaN"):
        rq.encode(nan, rq.float4_e2m1fn)


# ----------------------------------------------------------------------------------------- torch


@pytest.mark.parametrize("name", FP8)
def test_torch_to(name):
    torch = pytest.importorskip("torch")
    dt = getattr(torch, name)
    for x in every_half_pattern()[:1] + [probes32(name)]:
        x32 = x.astype(np.float32)
        want = torch.from_numpy(x32).to(dt).view(torch.uint8).numpy()
        _assert_codes(rq.encode(x32, name, convention="torch"), want, x32)


def test_torch_saturates_e4m3fn_only():
    """E1: torch saturates e4m3fn; ml_dtypes does not; torch's e5m2 overflow is inf."""
    torch = pytest.importorskip("torch")
    x = np.float32([1000.0, -np.inf])
    t = torch.from_numpy(x)
    assert t.to(torch.float8_e4m3fn).view(torch.uint8).tolist() == [126, 254]
    assert rq.encode(x, "float8_e4m3fn", convention="torch").tolist() == [126, 254]
    assert rq.encode(x, "float8_e4m3fn", convention="ml_dtypes").tolist() == [127, 255]
    big = np.float32([70000.0])
    assert torch.from_numpy(big).to(torch.float8_e5m2).view(torch.uint8).tolist() == [124]
    assert rq.encode(big, "float8_e5m2", convention="torch").tolist() == [124]
    assert rq.encode(big, "float8_e5m2").tolist() == [123]


def _e8m0_probes():
    """Every float32 exponent field with mantissas around the guard, round and sticky bits, both
    signs (NaN payloads and +-inf included)."""
    e = np.arange(256, dtype=np.uint32)
    mant = np.uint32([0, 1, 0x1FFFFF, 0x200000, 0x200001, 0x3FFFFF, 0x400000, 0x400001, 0x600000,
                      0x7FFFFF])
    b = ((e[:, None] << 23) | mant[None, :]).ravel()
    return np.concatenate([b, b | 0x80000000]).view(np.float32)


def test_torch_e8m0():
    torch = pytest.importorskip("torch")
    dt = torch.float8_e8m0fnu
    x = _e8m0_probes()
    for a in [x] + every_half_pattern():
        a32 = a.astype(np.float32)
        want = torch.from_numpy(a32).to(dt).view(torch.uint8).numpy()
        _assert_codes(rq.encode(a, "float8_e8m0fnu", convention="torch"), want, a32)
    x64 = np.nextafter(x[np.isfinite(x)].astype(np.float64), np.inf)
    want = torch.from_numpy(x64).to(dt).view(torch.uint8).numpy()
    _assert_codes(rq.encode(x64, "float8_e8m0fnu", convention="torch"), want, x64)
    codes = np.arange(256, dtype=np.uint8)
    got = rq.decode(codes, "float8_e8m0fnu")
    want = torch.from_numpy(codes).view(dt).to(torch.float32).numpy()
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    assert same.all()  # code 255: NaN (torch's payload 0x7F800001)
    s = np.float32(0.75)  # scaled: fl32(x / s), then the same rule
    xs = x[np.isfinite(x)]
    want = (torch.from_numpy(xs) / s).to(dt).view(torch.uint8).numpy()
    _assert_codes(rq.quantize(xs, s, fmt="float8_e8m0fnu", convention="torch"), want, xs)


def test_torch_e8m0_reads_the_exponent_field():
    """torch's e8m0 ignores the sign, sends 0 to code 0 (2**-127) and 1.5 * 2**127 to NaN; the
    value conventions give NaN, NaN and the largest code 254."""
    torch = pytest.importorskip("torch")
    x = np.float32([-4.0, 0.0, 1.5 * 2.0**127, 5.877473e-39])
    want = torch.from_numpy(x).to(torch.float8_e8m0fnu).view(torch.uint8).numpy()
    assert want.tolist() == [129, 0, 255, 1]
    assert rq.encode(x, "float8_e8m0fnu", convention="torch").tolist() == want.tolist()
    for conv in ("exact", "ml_dtypes", "gfloat", "onnx"):
        assert rq.encode(x, "float8_e8m0fnu", convention=conv).tolist() != want.tolist(), conv


# ------------------------------------------------------------------------------- onnx reference

_ONNX_TYPES = {"float8_e4m3fn": "FLOAT8E4M3FN", "float8_e4m3fnuz": "FLOAT8E4M3FNUZ",
               "float8_e5m2": "FLOAT8E5M2", "float8_e5m2fnuz": "FLOAT8E5M2FNUZ",
               "float4_e2m1fn": "FLOAT4E2M1", "float6_e2m3fn": "FLOAT6E2M3", "float6_e3m2fn": "FLOAT6E3M2"}


def _quantize_linear_model(name, saturate, scale, opset, dequantize=False):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    to = getattr(TensorProto, _ONNX_TYPES[name], None)
    if to is None:
        pytest.skip(f"this onnx has no {name}")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], saturate=saturate)]
    if dequantize:  # float output: onnxruntime returns no numpy array for most float8 types
        nodes.append(helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]))
    else:
        nodes[0].output[0] = "y"
    z = helper.make_tensor("z", to, [], [0])
    s = helper.make_tensor("s", TensorProto.FLOAT, [], [scale])
    out_type = TensorProto.FLOAT if dequantize else to
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
                              [helper.make_tensor_value_info("y", out_type, [None])], initializer=[s, z])
    return onnx, helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("name", FP8 + SUB_BYTE)
def test_onnx_reference_quantize_linear(name, saturate):
    if name in SUB_BYTE and not saturate:
        pytest.skip("fp4/fp6 have no inf or NaN: saturate=0 is not defined")
    opset = 28 if name.startswith("float6") else 23
    for scale in (1.0, 0.3):
        onnx, model = _quantize_linear_model(name, saturate, scale, opset)
        from onnx.reference import ReferenceEvaluator

        x = probes32(name) * np.float32(scale)
        try:
            want = ReferenceEvaluator(model).run(None, {"x": x})[0].view(np.uint8)
        except Exception as e:  # an onnx without this opset
            pytest.skip(f"onnx.reference cannot run it: {e}")
        got = rq.quantize(x, scale, fmt=name, convention="onnx",
                          saturate=None if name in SUB_BYTE else bool(saturate))
        _assert_codes(got, want, x)


def _cast_model(to, saturate, opset, round_mode=None, back=False):
    from onnx import TensorProto, helper

    attrs = {"saturate": saturate} if round_mode is None else {"saturate": saturate, "round_mode": round_mode}
    nodes = [helper.make_node("Cast", ["x"], ["q" if back else "y"], to=to, **attrs)]
    if back:  # float output: onnxruntime returns no numpy array for most float8 types
        nodes.append(helper.make_node("Cast", ["q"], ["y"], to=TensorProto.FLOAT))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT if back else to, [None])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("name", FP8 + SUB_BYTE)
def test_onnx_reference_cast(name, saturate):
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    to = getattr(onnx.TensorProto, _ONNX_TYPES[name], None)
    if to is None:
        pytest.skip(f"this onnx has no {name}")
    opset = 28 if name.startswith("float6") else 23
    x = probes32(name)
    want = np.asarray(ReferenceEvaluator(_cast_model(to, saturate, opset)).run(None, {"x": x})[0])
    want = want.view(np.uint8)
    sat = None if name in SUB_BYTE else bool(saturate)
    _assert_codes(rq.encode(x, name, convention="onnx.cast", saturate=sat), want, x)


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("round_mode,rounding", [("up", "ceil"), ("nearest", "half_even"), ("down", "floor")])
def test_onnx_reference_cast_e8m0(round_mode, rounding, saturate):
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    to = getattr(onnx.TensorProto, "FLOAT8E8M0", None)
    if to is None:
        pytest.skip("this onnx has no float8e8m0")
    x = np.concatenate([_e8m0_probes(), probes32("float8_e8m0fnu")])
    model = _cast_model(to, saturate, 25, round_mode)
    want = np.asarray(ReferenceEvaluator(model).run(None, {"x": x})[0]).view(np.uint8)
    got = rq.encode(x, "float8_e8m0fnu", convention="onnx.cast", saturate=bool(saturate), rounding=rounding)
    _assert_codes(got, want, x)


def test_onnx_cast_keeps_negative_zero_quantize_linear_drops_it():
    """E4: Cast keeps an input -0.0 in fp4 (code 8); QuantizeLinear adds its zero point as a float."""
    x = np.float32([-0.0, -0.1])
    assert rq.encode(x, "float4_e2m1fn", convention="onnx.cast").tolist() == [8, 8]
    assert rq.quantize(x, 1.0, fmt="float4_e2m1fn", convention="onnx").tolist() == [0, 8]


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("name", FP8)
def test_onnxruntime_fp8_cast(name, saturate):
    """Cast to float8 and back in onnxruntime, compared value for value (NaN = NaN)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _cast_model(getattr(onnx.TensorProto, _ONNX_TYPES[name]), saturate, 21, back=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    band = np.float32([480, 488, 495.9, 61440, 63000, 65535, 65536])
    x = np.concatenate([probes32(name), band, -band])
    want = np.asarray(sess.run(None, {"x": x})[0])
    got = rq.decode(rq.encode(x, name, convention="onnxruntime", saturate=bool(saturate)), name)
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), (x[~same][:6], got[~same][:6], want[~same][:6])


def test_onnx_drops_negative_zero_in_fp4():
    """E4: onnx QuantizeLinear gives +0 for an input -0.0 in fp4 (a rounded -0.1 stays -0);
    exact keeps -0."""
    x = np.float32([-0.0, -0.1])
    assert rq.quantize(x, 1.0, fmt="float4_e2m1fn", convention="onnx").tolist() == [0, 8]
    assert rq.quantize(x, 1.0, fmt="float4_e2m1fn").tolist() == [8, 8]


# -------------------------------------------------------------------------------- onnxruntime


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("name", FP8)
def test_onnxruntime_fp8(name, saturate):
    """QuantizeLinear then DequantizeLinear in onnxruntime, compared value for value (NaN = NaN)."""
    ort = pytest.importorskip("onnxruntime")
    _, model = _quantize_linear_model(name, saturate, 1.0, 21, dequantize=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = probes32(name)
    band = np.float32([480, 488, 495.9, 61440, 63000, 65535, 65536])
    x = np.concatenate([x, band, -band])
    want = np.asarray(sess.run(None, {"x": x})[0])
    got = rq.fake_quantize(x, 1.0, fmt=name, convention="onnxruntime", saturate=bool(saturate))
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), (x[~same][:6], got[~same][:6], want[~same][:6])
    if not saturate and name in ("float8_e4m3fn", "float8_e5m2"):
        onnx_vals = rq.fake_quantize(x, 1.0, fmt=name, convention="onnx", saturate=False)
        assert not np.array_equal(onnx_vals, want, equal_nan=True)  # E5: the boundary bands


# ---------------------------------------------------------------------------------------- gfloat

_GFLOAT = {"float8_e4m3fn": "format_info_ocp_e4m3", "float8_e5m2": "format_info_ocp_e5m2",
           "float6_e2m3fn": "format_info_ocp_e2m3", "float6_e3m2fn": "format_info_ocp_e3m2",
           "float4_e2m1fn": "format_info_ocp_e2m1"}


@pytest.mark.parametrize("sat", [True, False])
@pytest.mark.parametrize("name", list(_GFLOAT))
def test_gfloat_float64(name, sat):
    gf = pytest.importorskip("gfloat")
    import gfloat.formats as gff

    fi = getattr(gff, _GFLOAT[name])
    fmt = getattr(rq, name)
    if not sat and not (fmt.has_inf or fmt.has_nan):
        pytest.skip("gfloat raises for sat=False without inf/NaN, as refquant does")
    x = probes32(name).astype(np.float64)
    x = x[~np.isnan(x)] if not fmt.has_nan else x
    want = gf.round_ndarray(fi, x, sat=sat)
    got = rq.fake_quantize(x, 1.0, fmt=name, convention="gfloat", saturate=sat)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    assert same.all(), (x[~same][:5], got[~same][:5], want[~same][:5])
    np.testing.assert_array_equal(np.signbit(got[~np.isnan(got)]), np.signbit(want[~np.isnan(want)]))


def test_gfloat_nan_into_fp4_has_no_code():
    """E3: gfloat returns NaN for NaN into fp4 (no code); encode raises, fake_quantize gives NaN."""
    x = np.float64([np.nan, 1.0])
    assert np.isnan(rq.fake_quantize(x, 1.0, fmt="float4_e2m1fn", convention="gfloat")[0])
    with pytest.raises(ValueError, match="NaN"):
        rq.encode(x, "float4_e2m1fn", convention="gfloat")


# --------------------------------------------------------------------------------------- torchao


@pytest.mark.parametrize("name", SUB_BYTE)
def test_torchao_sub_byte_casts(name):
    torch = pytest.importorskip("torch")
    kernels = pytest.importorskip("torchao.prototype.mx_formats.kernels")
    fn = {"float4_e2m1fn": kernels.f32_to_f4_unpacked, "float6_e2m3fn": kernels.f32_to_f6_e2m3_unpacked,
          "float6_e3m2fn": kernels.f32_to_f6_e3m2_unpacked}[name]
    x = np.concatenate([probes32(name), every_half_pattern()[1].astype(np.float32)])
    want = fn(torch.from_numpy(x)).numpy()
    _assert_codes(rq.encode(x, name, convention="torchao"), want, x)
    assert rq.encode(np.float32([np.nan]), name, convention="torchao")[0] != \
        rq.encode(np.float32([np.nan]), name, convention="ml_dtypes")[0]  # E3: +-1.5 vs -0


def _scaled_rows(torch, name, dtype, seed=0):
    """Rows of weights in ``dtype`` with float32 scales ``amax / max`` (a float32 quotient lands on
    a rounding boundary of the format often), plus a row of the format's probes and specials."""
    fmt = getattr(rq, name)
    rng = np.random.default_rng(seed)
    w = torch.from_numpy(rng.standard_normal((64, 256)) * 0.02).to(dtype)
    w[0, :6] = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e30]).to(dtype)
    p = probes32(name)
    p = p[np.isfinite(p)][:256]
    w[1, : p.size] = torch.from_numpy(p).to(dtype)
    s = (w.float().abs().nan_to_num(0.0, 0.0, 0.0).amax(dim=1, keepdim=True) / fmt.max).clamp_min(2.0**-20)
    return w, s


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2"])
def test_torchao_float8_quantize(name, dtype):
    """torchao's Float8Tensor quantize (``_quantize_affine_float8``): the float32 quotient, clamp,
    torch's cast; the exact quotient differs where the float32 one rounds onto a boundary."""
    torch = pytest.importorskip("torch")
    qp = pytest.importorskip("torchao.quantization.quant_primitives")
    pytest.importorskip("ml_dtypes")
    from refquant_torch._bridge import to_numpy

    w, s = _scaled_rows(torch, name, getattr(torch, dtype))
    want = qp._quantize_affine_float8(w, s, getattr(torch, name)).view(torch.uint8).numpy()
    x = to_numpy(w)
    s1 = s.numpy().reshape(-1)
    got = rq.quantize(x, s1, fmt=name, axis=0, convention="torchao.float8")
    _assert_codes(got, want, x)
    if (name, dtype) == ("float8_e4m3fn", "bfloat16"):  # 448 = 7 * 2**6: ties of x / s are common
        assert (rq.quantize(x, s1, fmt=name, axis=0, convention="torchao") != want).any()
