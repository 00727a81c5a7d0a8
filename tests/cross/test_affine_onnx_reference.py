"""The onnx.reference convention against onnx.reference's QuantizeLinear / DequantizeLinear
(opsets 21 and 23), bit for bit, where the reference departs from the spec: the int32 cast of NaN,
+-inf and quotients past 2**31 (0 from bfloat16), the wrapping zero-point add, float16/bfloat16
quotients that overflow, and the opset-23 ``precision`` attribute."""

import warnings

import numpy as np
import pytest

import refquant as rq
from tests.references import assert_bitwise_equal, tie_heavy

onnx = pytest.importorskip("onnx")
ml_dtypes = pytest.importorskip("ml_dtypes")
from onnx import TensorProto  # noqa: E402
from onnx.reference.ops.op_dequantize_linear import DequantizeLinear_21  # noqa: E402
from onnx.reference.ops.op_quantize_linear import QuantizeLinear_21, QuantizeLinear_23  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
ZP = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767)}
PRECISION = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}
SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 2.0**31, -(2.0**31), 3e9, -3e9, 1e20, 65504.0, 6e4,
            -6e4, 2147483520.0, -2147483520.0, 1e-45, 5e-324]


def _reference(op, *args, **attrs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference's casts of NaN and inf warn
        return op.eval(*args, **attrs)


def _ours(x, s, z, lo, hi, convention="onnx.reference"):
    return rq.quantize(x, s, int(z), qmin=lo, qmax=hi, convention=convention)


def _inputs(dtype, s, z, lo, hi, seed):
    ties = tie_heavy(float(s), int(z), lo, hi, 2000, seed=seed, dtype=np.float64)
    with np.errstate(over="ignore"):
        x = np.concatenate([ties, SPECIALS, np.float64(SPECIALS) * float(s)]).astype(dtype)
    return x


@pytest.mark.parametrize("x_dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("zp_name", sorted(ZP))
@pytest.mark.parametrize("scale", [1.0, 0.1, 1e-3, 7.5e-3, 3e-5, 250.0])
def test_quantize_and_dequantize_linear(x_dtype, zp_name, scale):
    lo, hi = ZP[zp_name]
    dt = BF16 if x_dtype == "bfloat16" else np.dtype(x_dtype)
    s = np.array(scale, dt)
    for z in (lo, hi, (lo + hi) // 2, max(lo, -3), min(hi, 3)):
        zp = np.array(z, zp_name)
        x = _inputs(dt, s, z, lo, hi, seed=z & 0xFFFF)
        q_ref = _reference(QuantizeLinear_21, x, s, zp)
        q = _ours(x, s, z, lo, hi)
        assert_bitwise_equal(q, q_ref, f"z={z}")
        y_ref = _reference(DequantizeLinear_21, q_ref, s, zp)
        y = rq.dequantize(q, s, int(z), convention="onnx.reference", dtype=dt)
        assert_bitwise_equal(y, y_ref, f"dequantize z={z}")
        y_fake = rq.fake_quantize(x, s, int(z), qmin=lo, qmax=hi, convention="onnx.reference")
        assert_bitwise_equal(y_fake, y_ref, f"fake z={z}")


@pytest.mark.parametrize("x_dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("precision", sorted(PRECISION))
def test_the_precision_attribute_is_the_compute_knob(x_dtype, precision):
    dt = BF16 if x_dtype == "bfloat16" else np.dtype(x_dtype)
    conv = rq.conventions.get("onnx.reference").replace(compute=precision)
    for scale, z in ((0.1, -14), (1 / 3, 0), (7.5e-3, 100), (2.0**-14, -128)):
        s = np.array(scale, dt)
        x = _inputs(dt, s, z, -128, 127, seed=7)
        q_ref = _reference(QuantizeLinear_23, x, s, np.array(z, np.int8), precision=PRECISION[precision])
        assert_bitwise_equal(_ours(x, s, z, -128, 127, conv), q_ref, f"s={scale} z={z}")


def test_the_reproductions():
    # NaN goes to INT32_MIN, + (-3) wraps to INT32_MAX - 2, clipped to qmax
    assert _ours(np.float32([np.nan]), np.float32(1.0), -3, -128, 127).tolist() == [127]
    # a bfloat16 NaN converts to 0: the code is the zero point
    assert _ours(np.array([np.nan], BF16), np.array(1.0, BF16), -3, -128, 127).tolist() == [-3]
    # the zero-point add overflows int32
    assert _ours(np.float32([2147483520.0]), np.float32(1.0), 32767, 0, 65535).tolist() == [0]
    # a float16 quotient overflowing to +inf goes to qmin
    assert _ours(np.float16([60000.0]), np.float16(0.001), 5, -128, 127).tolist() == [-128]
    # precision=FLOAT: 2.25 / f16(0.1) in float32 is 22.5055 -> 23; in float16 22.5 -> 22
    conv = rq.conventions.get("onnx.reference").replace(compute="float32")
    assert _ours(np.float16([2.25]), np.float16(0.1), -14, -128, 127, conv).tolist() == [9]
    assert _ours(np.float16([2.25]), np.float16(0.1), -14, -128, 127).tolist() == [8]
    # the spec row saturates instead
    assert _ours(np.float32([np.nan, 3e9]), np.float32(1.0), -3, -128, 127, "onnx").tolist() == [-128, 127]
