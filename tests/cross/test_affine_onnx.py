"""The onnx convention against onnx.reference QuantizeLinear / DequantizeLinear (opset 21)."""

import numpy as np
import pytest

import refquant as rq
from tests.references import assert_bitwise_equal, tie_heavy

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

N = 1_000_000
ZP_TYPES = {  # numpy zero-point dtype -> (onnx type, qmin, qmax)
    np.uint8: (TensorProto.UINT8, 0, 255),
    np.int8: (TensorProto.INT8, -128, 127),
    np.int16: (TensorProto.INT16, -32768, 32767),
    np.uint16: (TensorProto.UINT16, 0, 65535),
}
FLOAT_TYPES = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}


def run_qdq(x, scale, zp, axis=1, block_size=0):
    ftype = FLOAT_TYPES[x.dtype.type]
    ztype = ZP_TYPES[zp.dtype.type][0]
    attrs = {"axis": axis, "block_size": block_size} if scale.ndim else {}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs),
    ]
    graph = helper.make_graph(
        nodes, "qdq",
        [helper.make_tensor_value_info("x", ftype, None),
         helper.make_tensor_value_info("s", ftype, None),
         helper.make_tensor_value_info("z", ztype, None)],
        [helper.make_tensor_value_info("q", ztype, None),
         helper.make_tensor_value_info("y", ftype, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    return ReferenceEvaluator(model).run(None, {"x": x, "s": scale, "z": zp})


@pytest.mark.parametrize("zp_dtype", list(ZP_TYPES))
@pytest.mark.parametrize("x_dtype", list(FLOAT_TYPES))
@pytest.mark.parametrize("s,z_frac", [(0.0123, 0.3), (1 / 3, 0.5), (0.002148, 0.9)])
def test_per_tensor(zp_dtype, x_dtype, s, z_frac):
    _, lo, hi = ZP_TYPES[zp_dtype]
    z = int(lo + z_frac * (hi - lo))
    s = x_dtype(s)
    x = tie_heavy(float(s), z, lo, hi, N, seed=3, dtype=np.float32).astype(x_dtype)
    q_ref, y_ref = run_qdq(x, np.array(s, x_dtype), np.array(z, zp_dtype))
    q = rq.quantize(x, s, z, qmin=lo, qmax=hi, convention="onnx")
    assert_bitwise_equal(q.astype(np.int64), q_ref.astype(np.int64), "QuantizeLinear")
    y = rq.fake_quantize(x, s, z, qmin=lo, qmax=hi, convention="onnx")
    assert_bitwise_equal(y, y_ref, "QuantizeLinear + DequantizeLinear")
    dq = rq.dequantize(q_ref, s, z, convention="onnx", dtype=x_dtype)
    assert_bitwise_equal(dq, y_ref, "DequantizeLinear")


@pytest.mark.parametrize("zp_dtype", [np.uint8, np.int8, np.int16])
def test_per_axis(zp_dtype):
    _, lo, hi = ZP_TYPES[zp_dtype]
    channels, rows = 16, N // 16
    rng = np.random.default_rng(5)
    scales = rng.uniform(0.001, 0.3, channels).astype(np.float32)
    zps = rng.integers(lo, hi + 1, channels).astype(zp_dtype)
    x = np.stack([tie_heavy(float(s), int(z), lo, hi, rows, seed=i)
                  for i, (s, z) in enumerate(zip(scales, zps))], axis=1)
    q_ref, y_ref = run_qdq(x, scales, zps, axis=1)
    q = rq.quantize(x, scales, zps, qmin=lo, qmax=hi, axis=1, convention="onnx")
    assert_bitwise_equal(q.astype(np.int64), q_ref.astype(np.int64))
    y = rq.fake_quantize(x, scales, zps, qmin=lo, qmax=hi, axis=1, convention="onnx")
    assert_bitwise_equal(y, y_ref)


def test_blocked():
    lo, hi = -128, 127
    rows, cols, block = 1024, 1024, 32
    rng = np.random.default_rng(6)
    scales = rng.uniform(0.001, 0.3, (rows, cols // block)).astype(np.float32)
    zps = rng.integers(lo, hi + 1, scales.shape).astype(np.int8)
    s_full = np.repeat(scales, block, axis=1).astype(np.float64)
    z_full = np.repeat(zps, block, axis=1).astype(np.float64)
    k = rng.integers(lo - 3, hi + 3, (rows, cols)) - z_full
    ties = ((k + 0.5) * s_full).astype(np.float32)
    x = np.where(rng.random((rows, cols)) < 0.5, ties, np.nextafter(ties, np.float32(np.inf)))
    q_ref, y_ref = run_qdq(x, scales, zps, axis=1, block_size=block)
    q = rq.quantize(x, scales, zps, qmin=lo, qmax=hi, block_size=(1, block), convention="onnx")
    assert_bitwise_equal(q.astype(np.int64), q_ref.astype(np.int64))
    y = rq.fake_quantize(x, scales, zps, qmin=lo, qmax=hi, block_size=(1, block), convention="onnx")
    assert_bitwise_equal(y, y_ref)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_special_values_and_the_reference_overflow_defect():
    x = np.float32([np.nan, 1e6, 2.1e9, 3e9, 1e20, np.inf, -1e6, -3e9, -np.inf, 0.0, -0.0])
    q_ref, _ = run_qdq(x, np.float32(1.0), np.int8(10))
    q = rq.quantize(x, np.float32(1.0), 10, qmin=-128, qmax=127, convention="onnx")
    # the spec saturates (onnxruntime does); onnx.reference sends |x/s| >= 2**31 and +inf to qmin
    # through an undefined int32 cast
    agree = np.abs(x.astype(np.float64)) < 2**31
    agree[0] = True  # NaN -> qmin in both
    assert q[agree].tolist() == q_ref[agree].astype(np.int64).tolist()
    assert q.tolist() == [-128, 127, 127, 127, 127, 127, -128, -128, -128, 10, 10]
