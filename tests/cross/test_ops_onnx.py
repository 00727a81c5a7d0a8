"""rq.ops against onnx.reference (the ``onnx`` row) and onnxruntime's CPU kernels (its row), bitwise."""

import warnings

import numpy as np
import pytest

import refquant as rq

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)
NP_TO_ONNX = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
              np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32}


def model(op, inputs, attrs=None, out_dtype=np.uint8):
    names = [f"i{i}" if v is not None else "" for i, v in enumerate(inputs)]
    node = helper.make_node(op, names, ["y"], **(attrs or {}))
    ins = [helper.make_tensor_value_info(n, NP_TO_ONNX[np.asarray(v).dtype], np.shape(v))
           for n, v in zip(names, inputs) if v is not None]
    out = helper.make_tensor_value_info("y", NP_TO_ONNX[np.dtype(out_dtype)], None)
    graph = helper.make_graph([node], "g", ins, [out])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    feeds = {n: np.asarray(v) for n, v in zip(names, inputs) if v is not None}
    return m, feeds


def run_reference(op, inputs, attrs=None, out_dtype=np.uint8):
    m, feeds = model(op, inputs, attrs, out_dtype)
    return ReferenceEvaluator(m).run(None, feeds)[0]


def run_ort(op, inputs, attrs=None, out_dtype=np.uint8):
    ort = pytest.importorskip("onnxruntime")
    m, feeds = model(op, inputs, attrs, out_dtype)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def f32(v):
    return np.asarray(v, np.float32)


def codes(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)


def matmul_case(rng, adt, bdt, ydt, m, k, n, per_axis):
    a, b = codes(rng, adt, (m, k)), codes(rng, bdt, (k, n))
    za, zb, zy = (codes(rng, d, ()) for d in (adt, bdt, ydt))
    sa = f32(2.0 ** rng.uniform(-8, -2))
    sb = f32(2.0 ** rng.uniform(-8, -2, n)) if per_axis else f32(2.0 ** rng.uniform(-8, -2))
    if per_axis:
        zb = np.full(n, zb, bdt)
    sy = f32(float(np.sqrt(k)) * 100 * sa * float(np.max(sb)) / 50)
    return a, sa, za, b, sb, zb, sy, zy


@pytest.mark.parametrize("adt,bdt,ydt", [(np.uint8, np.uint8, np.uint8), (np.uint8, np.int8, np.int8),
                                         (np.int8, np.int8, np.int8), (np.int8, np.uint8, np.uint8)])
@pytest.mark.parametrize("per_axis", [False, True])
def test_qlinear_matmul_reference(adt, bdt, ydt, per_axis):
    rng = np.random.default_rng([np.dtype(adt).num, np.dtype(bdt).num, per_axis])
    for m, k, n in [(1, 1, 1), (4, 7, 3), (16, 64, 16), (3, 1000, 5)]:
        case = matmul_case(rng, adt, bdt, ydt, m, k, n, per_axis)
        got = rq.ops.qlinear_matmul(*case)
        want = run_reference("QLinearMatMul", list(case), out_dtype=ydt)
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_qlinear_matmul_ties_reference():
    """s_a * s_b / s_y = 1/2: every odd accumulator is a tie; the zero point goes in before rounding."""
    rng = np.random.default_rng(1)
    a, b = codes(rng, np.uint8, (32, 8)), codes(rng, np.int8, (8, 32))
    for zy in (np.uint8(0), np.uint8(1), np.uint8(128), np.uint8(255)):
        case = (a, f32(0.25), np.uint8(3), b, f32(0.5), np.int8(-1), f32(0.25), zy)
        got = rq.ops.qlinear_matmul(*case)
        assert np.array_equal(got, run_reference("QLinearMatMul", list(case)))


@pytest.mark.parametrize("xdt,wdt", [(np.uint8, np.int8), (np.uint8, np.uint8), (np.int8, np.int8)])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_qlinear_conv_reference(xdt, wdt, per_channel, with_bias):
    rng = np.random.default_rng([np.dtype(xdt).num, np.dtype(wdt).num, per_channel, with_bias])
    for c, o, hw, kk, attrs in [(1, 2, 5, 3, {}), (4, 6, 8, 3, {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
                                (4, 4, 7, 3, {"group": 2, "dilations": [2, 1], "pads": [0, 1, 2, 1]}),
                                (3, 5, 6, 2, {"auto_pad": "SAME_UPPER"})]:
        x = codes(rng, xdt, (1, c, hw, hw))
        w = codes(rng, wdt, (o, c // attrs.get("group", 1), kk, kk))
        zx, zy = codes(rng, xdt, ()), codes(rng, xdt, ())
        sx = f32(2.0 ** rng.uniform(-8, -2))
        sw = f32(2.0 ** rng.uniform(-8, -2, o)) if per_channel else f32(2.0 ** rng.uniform(-8, -2))
        zw = codes(rng, wdt, (o,)) if per_channel else codes(rng, wdt, ())
        sy = f32(float(np.sqrt(c * kk * kk)) * 100 * sx * float(np.max(sw)) / 50)
        bias = rng.integers(-5000, 5000, o).astype(np.int32) if with_bias else None
        attrs = dict(attrs, kernel_shape=[kk, kk])
        got = rq.ops.qlinear_conv(x, sx, zx, w, sw, zw, sy, zy, bias, **attrs)
        want = run_reference("QLinearConv", [x, sx, zx, w, sw, zw, sy, zy, bias], attrs, out_dtype=xdt)
        assert got.dtype == want.dtype and np.array_equal(got, want), attrs


@pytest.mark.parametrize("adt,bdt", [(np.uint8, np.uint8), (np.uint8, np.int8), (np.int8, np.int8),
                                     (np.int8, np.uint8)])
@pytest.mark.parametrize("per_column", [False, True])
def test_matmul_integer_reference_and_ort(adt, bdt, per_column):
    rng = np.random.default_rng([np.dtype(adt).num, np.dtype(bdt).num, per_column])
    for m, k, n in [(1, 1, 1), (5, 9, 3), (8, 300, 8), (17, 4096, 9)]:
        a, b = codes(rng, adt, (m, k)), codes(rng, bdt, (k, n))
        a[0], b[:, 0] = np.iinfo(adt).max, np.iinfo(bdt).min  # a row and a column at the range ends
        za, zb = codes(rng, adt, ()), codes(rng, bdt, (n,) if per_column else ())
        got = rq.ops.matmul_integer(a, b, za, zb)
        assert got.dtype == np.int32
        assert np.array_equal(got, run_reference("MatMulInteger", [a, b, za, zb], out_dtype=np.int32))
        assert np.array_equal(got, run_ort("MatMulInteger", [a, b, za, zb], out_dtype=np.int32))


@pytest.mark.parametrize("xdt,wdt", [(np.uint8, np.uint8), (np.uint8, np.int8), (np.int8, np.int8),
                                     (np.int8, np.uint8)])
def test_conv_integer_reference_and_ort(xdt, wdt):
    rng = np.random.default_rng([3, np.dtype(xdt).num, np.dtype(wdt).num])
    for c, o, hw, kk, attrs in [(2, 3, 6, 3, {"pads": [1, 1, 1, 1]}), (64, 8, 10, 3, {"pads": [1, 1, 1, 1]}),
                                (4, 4, 7, 2, {"group": 2, "strides": [2, 1]}),
                                (1, 2, 5, 3, {"auto_pad": "SAME_LOWER", "strides": [2, 1]}),
                                (1, 2, 7, 3, {"dilations": [1, 2], "pads": [2, 0, 1, 1]})]:
        x = codes(rng, xdt, (2, c, hw, hw))
        w = codes(rng, wdt, (o, c // attrs.get("group", 1), kk, kk))
        zx, zw = codes(rng, xdt, ()), codes(rng, wdt, ())
        got = rq.ops.conv_integer(x, w, zx, zw, **attrs)
        assert np.array_equal(got, run_reference("ConvInteger", [x, w, zx, zw], attrs, out_dtype=np.int32))
        assert np.array_equal(got, run_ort("ConvInteger", [x, w, zx, zw], attrs, out_dtype=np.int32))


@pytest.mark.parametrize("per_axis", [False, True])
@pytest.mark.parametrize("dts", [(np.uint8, np.uint8, np.uint8), (np.uint8, np.int8, np.uint8),
                                 (np.int8, np.int8, np.int8)])
def test_qlinear_matmul_onnxruntime(per_axis, dts):
    rng = np.random.default_rng([per_axis, np.dtype(dts[1]).num])
    mism = {"onnxruntime": 0, "onnx": 0}
    for m, k, n in [(1, 1, 1), (4, 7, 3), (16, 64, 16), (33, 500, 17), (64, 8, 64), (9, 4096, 7)]:
        for _ in range(3):
            case = matmul_case(rng, *dts, m, k, n, per_axis)
            want = run_ort("QLinearMatMul", list(case), out_dtype=dts[2])
            for name in mism:
                mism[name] += int(np.count_nonzero(rq.ops.qlinear_matmul(*case, convention=name) != want))
    assert mism["onnxruntime"] == 0, mism


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("xdt,wdt", [(np.uint8, np.int8), (np.uint8, np.uint8), (np.int8, np.int8)])
def test_qlinear_conv_onnxruntime(per_channel, xdt, wdt):
    """ORT's QLinearConv (u8 x s8, u8 x u8, s8 x s8; ORT has no s8 x u8 kernel), per-channel weights
    with their own zero points."""
    rng = np.random.default_rng([5, per_channel, np.dtype(xdt).num, np.dtype(wdt).num])
    for c, o, hw, kk, attrs in [(4, 6, 8, 3, {"pads": [1, 1, 1, 1]}), (16, 4, 6, 1, {}),
                                (8, 8, 9, 3, {"group": 8, "pads": [1, 1, 1, 1]}),
                                (64, 16, 12, 3, {"pads": [1, 1, 1, 1], "strides": [2, 2]})]:
        x = codes(rng, xdt, (1, c, hw, hw))
        w = codes(rng, wdt, (o, c // attrs.get("group", 1), kk, kk))
        zx, zy = codes(rng, xdt, ()), codes(rng, xdt, ())
        sx = f32(2.0 ** rng.uniform(-8, -2))
        sw = f32(2.0 ** rng.uniform(-8, -2, o)) if per_channel else f32(2.0 ** rng.uniform(-8, -2))
        zw = codes(rng, wdt, (o,)) if per_channel else codes(rng, wdt, ())
        sy = f32(float(np.sqrt(c * kk * kk)) * 100 * sx * float(np.max(sw)) / 50)
        bias = rng.integers(-5000, 5000, o).astype(np.int32)
        attrs = dict(attrs, kernel_shape=[kk, kk])
        got = rq.ops.qlinear_conv(x, sx, zx, w, sw, zw, sy, zy, bias, convention="onnxruntime", **attrs)
        want = run_ort("QLinearConv", [x, sx, zx, w, sw, zw, sy, zy, bias], attrs, out_dtype=xdt)
        assert np.array_equal(got, want), attrs


def test_qlinear_matmul_ties_onnxruntime_differs_from_reference():
    """On ties with an odd output zero point, ORT (zero point after rounding) and the reference
    (zero point added before rounding) disagree; each row reproduces its backend."""
    rng = np.random.default_rng(2)
    a = rng.integers(0, 12, (32, 8)).astype(np.uint8)
    b = rng.integers(-5, 5, (8, 32)).astype(np.int8)
    case = (a, f32(0.25), np.uint8(3), b, f32(0.5), np.int8(-1), f32(0.25), np.uint8(101))
    ort_y, ref_y = run_ort("QLinearMatMul", list(case)), run_reference("QLinearMatMul", list(case))
    assert np.array_equal(rq.ops.qlinear_matmul(*case, convention="onnxruntime"), ort_y)
    assert np.array_equal(rq.ops.qlinear_matmul(*case, convention="onnx"), ref_y)
    assert np.count_nonzero(ort_y != ref_y) > 100
