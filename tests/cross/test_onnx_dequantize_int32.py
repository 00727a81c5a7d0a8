"""DequantizeLinear of int32 codes (opset 21), per tensor, per axis and blocked, bit for bit.

The spec wants a zero point of 0 for int32 codes. The ``onnx`` row computes
``f32(f32(q - z) * f32(s))``, then the output dtype: onnxruntime's CPU kernel wherever the spec
defines the result (``z = 0``; onnxruntime subtracts a nonzero ``z`` in int32, wrapping).
onnx.reference computes ``x.astype(float32) - z`` with an int32 zero point, which NumPy promotes to
float64: ``out(f64(f64(f32(q)) - z) * f64(s)))``, one rounding from float64 to the output dtype
(float16 and bfloat16 included). That differs from the 8/16-bit rule of the ``onnx.reference`` row
for a nonzero ``z`` past 2**24 and for float16 / bfloat16 scales.
"""

import warnings

import numpy as np
import pytest

import refquant as rq
from tests.references import assert_bitwise_equal

onnx = pytest.importorskip("onnx")
ml_dtypes = pytest.importorskip("ml_dtypes")
from onnx import TensorProto, helper  # noqa: E402
from onnx.reference.ops.op_dequantize_linear import DequantizeLinear_21  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
SCALE_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": BF16}
ONNX_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16,
              BF16: TensorProto.BFLOAT16}
SCALES = [0.1, 1 / 3, 3e-5, 1.0, 6e-8, 250.0, 1e-45, 3e38]
LAYOUTS = ["tensor", "axis0", "axis1", "blocked"]
BLOCK = 8


def _codes(seed):
    """int32 codes: the ends, float32's rounding boundaries (2**24 + 1, ties of f32(q)), random."""
    rng = np.random.default_rng(seed)
    special = [-(2**31), 2**31 - 1, -(2**31) + 1, 0, 1, -1, 2**24 + 1, -(2**24) - 1, 2**25 + 2,
               2**25 + 6, 2**30 + 64, 2**31 - 128, 2**31 - 64, 2**31 - 65]
    q = rng.integers(-(2**31), 2**31, 24 * 32)
    near = rng.integers(-(2**25), 2**25, 24 * 32)
    q = np.where(rng.random(q.size) < 0.3, near, q)
    q[: len(special)] = special
    return q.astype(np.int32).reshape(24, 32)


def _qparams(layout, sdt, scale, zero_point, seed):
    """(scale, zero point, onnx attributes, refquant keywords, per-element scale, per-element z)."""
    rng = np.random.default_rng(seed)
    info = ml_dtypes.finfo(sdt)
    clip = (float(info.smallest_subnormal), float(info.max))  # scales positive and finite in sdt
    if layout == "tensor":
        s, z = np.array(np.clip(scale, *clip), sdt), np.array(zero_point, np.int32)
        return s, z, {}, {}, s, z
    shape = {"axis0": (24,), "axis1": (32,), "blocked": (24, 32 // BLOCK)}[layout]
    s = np.clip(scale * rng.uniform(0.5, 2.0, shape), *clip).astype(sdt)
    z = np.full(shape, zero_point, np.int32)
    if zero_point:
        z = rng.integers(-(2**31), 2**31, shape).astype(np.int32)
        z.flat[0] = zero_point
    if layout == "blocked":
        full = [np.repeat(a, BLOCK, axis=1) for a in (s, z)]
        return s, z, {"axis": 1, "block_size": BLOCK}, {"block_size": (1, BLOCK)}, *full
    axis = int(layout[-1])
    full = [a.reshape((-1, 1) if axis == 0 else (1, -1)) for a in (s, z)]
    return s, z, {"axis": axis}, {"axis": axis}, *full


def _reference(q, s, z, attrs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DequantizeLinear_21.eval(q, s, z, **attrs)


def _ours(q, s, z, kw, convention):
    return rq.dequantize(q, s, z if z.ndim else int(z), convention=convention, dtype=s.dtype, **kw)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("sdt", ["float32", "float16"])
@pytest.mark.parametrize("scale", SCALES)
def test_onnx_row_is_onnxruntime_for_int32_codes(layout, sdt, scale):
    ort = pytest.importorskip("onnxruntime")
    q = _codes(1)
    s, z, attrs, kw, _, _ = _qparams(layout, SCALE_DTYPES[sdt], scale, 0, 2)
    node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)
    graph = helper.make_graph(
        [node], "dq",
        [helper.make_tensor_value_info("q", TensorProto.INT32, None),
         helper.make_tensor_value_info("s", ONNX_TYPES[s.dtype], None),
         helper.make_tensor_value_info("z", TensorProto.INT32, None)],
        [helper.make_tensor_value_info("y", ONNX_TYPES[s.dtype], None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y_ort = session.run(None, {"q": q, "s": s, "z": z})[0]
    assert_bitwise_equal(_ours(q, s, z, kw, "onnx"), y_ort, f"{layout} {sdt} {scale}")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("sdt", sorted(SCALE_DTYPES))
@pytest.mark.parametrize("zero_point", [0, 5, -(2**31), 2**31 - 1])
def test_the_reference_rule_for_int32_codes(layout, sdt, zero_point):
    """The rule the module doc states, as NumPy operations, against onnx.reference."""
    q = _codes(3)
    for scale in SCALES:
        s, z, attrs, _, s_full, z_full = _qparams(layout, SCALE_DTYPES[sdt], scale, zero_point, 4)
        with np.errstate(over="ignore", invalid="ignore"):
            rule = ((q.astype(np.float32).astype(np.float64) - z_full.astype(np.float64))
                    * s_full.astype(np.float64)).astype(s.dtype)
        assert_bitwise_equal(rule, _reference(q, s, z, attrs), f"{layout} {sdt} {scale}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_onnx_reference_row_int32_codes_float32_scale_zero_point_0(layout):
    # here the float64 rule and the float32 rule coincide: f32(q) * f32(s) is exact in float64
    q = _codes(5)
    for scale in SCALES:
        s, z, attrs, kw, _, _ = _qparams(layout, SCALE_DTYPES["float32"], scale, 0, 6)
        assert_bitwise_equal(_ours(q, s, z, kw, "onnx.reference"), _reference(q, s, z, attrs),
                             f"{layout} {scale}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_onnx_reference_row_int32_codes(layout):
    q = _codes(7)
    bad = []
    for sdt in sorted(SCALE_DTYPES):
        for zero_point in (0, 5, -(2**31), 2**31 - 1):
            for scale in SCALES:
                s, z, attrs, kw, _, _ = _qparams(layout, SCALE_DTYPES[sdt], scale, zero_point, 8)
                ours, ref = _ours(q, s, z, kw, "onnx.reference"), _reference(q, s, z, attrs)
                if ours.tobytes() != ref.tobytes():
                    bad.append((sdt, zero_point, scale))
    assert not bad, bad[:10]


def test_int32_reproduction_q_rounds_to_float32_before_the_zero_point():
    # f32(2**24 + 3) = 2**24 + 4 (a tie, to even), then - (-2) in float64: 2**24 + 6; the 8/16-bit
    # rule rounds q - z = 2**24 + 5, a tie, to 2**24 + 4
    q, s, z = np.int32([2**24 + 3]), np.array(1.0, np.float32), np.array(-2, np.int32)
    assert _reference(q, s, z, {}).tolist() == [2.0**24 + 6]
    assert _ours(q, s, z, {}, "onnx.reference").tolist() == [2.0**24 + 6]


def test_int32_reproduction_one_rounding_to_float16():
    # (2**21 - 1023) * (1 + 2**-10) * 2**-14 = 128 + 2**-4 + 2**-24 rounds once to float16: 128.125;
    # through float32 it lands on the midpoint 128 + 2**-4 and ties to 128
    q, z = np.int32([2**21 - 1023]), np.array(0, np.int32)
    s = np.array((1 + 2**-10) * 2**-14, np.float16)
    assert _reference(q, s, z, {}).tolist() == [128.125]
    assert _ours(q, s, z, {}, "onnx.reference").tolist() == [128.125]
