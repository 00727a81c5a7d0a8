"""refquant.nvfp4's ``onnx`` row: its element step against onnx.reference QuantizeLinear to
float4e2m1 with a blocked float32 scale ``f32(s g)`` (block 16, last axis), bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import refquant as rq
from tests.nvfp4_cases import blocks, special_rows
from tests.references import assert_bitwise_equal

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402


def onnx_codes(x: np.ndarray, block_scale: np.ndarray) -> np.ndarray:
    m, n = x.shape
    zp = helper.make_tensor("zp", TensorProto.FLOAT4E2M1, list(block_scale.shape), [0.0] * block_scale.size)
    node = helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["y"], axis=1, block_size=16)
    graph = helper.make_graph(
        [node], "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, n]),
                      helper.make_tensor_value_info("s", TensorProto.FLOAT, list(block_scale.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT4E2M1, [m, n])], initializer=[zp])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    y = ReferenceEvaluator(model).run(None, {"x": x, "s": block_scale})[0]
    return np.asarray(y).view(np.uint8)


@pytest.mark.parametrize("k", range(6))
def test_element_step_is_quantize_linear(k):
    x = [blocks(1.0)[:200], blocks(0.0123, seed=1)[:200], *special_rows()][k]
    q, s, g = rq.nvfp4.quantize(x, global_scale=None if k < 2 else 0.05, convention="onnx")
    sv = rq.decode(s, rq.float8_e4m3fn, dtype=np.float64)
    block_scale = (sv * np.float64(g)).astype(np.float32)
    ok = np.isfinite(block_scale) & (block_scale > 0)
    rows = ok.all(axis=1)  # ONNX needs a positive scale
    assert rows.sum() >= x.shape[0] - 1
    assert_bitwise_equal(q[rows], onnx_codes(x[rows], block_scale[rows]), "codes")
