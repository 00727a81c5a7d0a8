"""rq.identify: names the convention behind an output and the cause of planted faults."""

import warnings

import numpy as np
import pytest

import refquant as rq
from refquant.golden._cases import edge_inputs

S, Z, LO, HI = np.float32(0.0123), 100, 0, 255


@pytest.fixture(scope="module")
def x():
    v = edge_inputs(S, Z, qmin=LO, qmax=HI, n_random=3000)
    return v[np.isfinite(v) & (np.abs(v) < 1e6)]


def dequant(q):
    """Independent dequantization: (q - z) * s is exact in float64, then one rounding."""
    return ((q - Z) * np.float64(S)).astype(np.float32)


def test_exact_output_matches_exact(x):
    # built independently: float64 quotient decides float32 / float32 roundings correctly
    q = np.clip(np.rint(x.astype(np.float64) / np.float64(S)) + Z, LO, HI)
    r = rq.identify(x, dequant(q), S, Z, qmin=LO, qmax=HI)
    assert ("exact", "half_even") in r.matches
    assert r.causes == {}
    assert "matches exactly" in str(r)


def test_fault_half_away(x):
    t = x.astype(np.float64) / np.float64(S)
    y = dequant(np.clip(np.sign(t) * np.floor(np.abs(t) + 0.5) + Z, LO, HI))
    # make sure the data has exact ties (k + 1/2) * s that the fault moves
    r = rq.identify(x, y, S, Z, qmin=LO, qmax=HI)
    assert ("exact", "half_away") in r.matches
    assert r.cause == "tie rounding"


def test_fault_reciprocal(x):
    y = dequant(np.clip(np.rint(x * (np.float32(1) / S)) + Z, LO, HI))
    r = rq.identify(x, y, S, Z, qmin=LO, qmax=HI)
    assert not any(c == "exact" for c, _ in r.matches)
    assert set(r.causes) == {"reciprocal vs division"}


def test_fault_zero_point_before_rounding(x):
    y = dequant(np.clip(np.rint(x / S + np.float32(Z)), LO, HI))
    r = rq.identify(x, y, S, Z, qmin=LO, qmax=HI)
    assert r.matches == [("brevitas", "half_even")]  # Brevitas' formula C is this fault
    # two changes of exact: the float32 division alone explains some elements, with the zero
    # point added before rounding all of them
    assert set(r.causes) == {"reciprocal vs division",
                             "reciprocal vs division + zero point before/after rounding"}
    assert sum(r.causes.values()) == r.diagnosis.differing
    r = rq.identify(x, y, S, Z, qmin=LO, qmax=HI, conventions=["exact", "onnx"])
    assert r.matches == [] and "no convention matches; nearest" in str(r)


def test_fault_no_saturation(x):
    y = dequant(np.rint(x.astype(np.float64) / np.float64(S)) + Z)
    r = rq.identify(x, y, S, Z, qmin=LO, qmax=HI)
    assert r.matches == []
    assert set(r.causes) == {"clamp/saturation"}
    assert sum(r.causes.values()) == int((~np.equal(y, rq.fake_quantize(x, S, Z, qmin=LO, qmax=HI))).sum())


def test_nan_handling_cause():
    x = np.float32([np.nan, 1.0, 2.0])
    y = np.float32([0.0, 1.0, 2.0])
    r = rq.identify(x, y, 1.0, 0, qmin=-8, qmax=7)
    assert r.causes == {"nan/inf handling": 1}


def test_quantize_op_and_bad_args():
    x = np.float32([0.125, 0.375, 3.0])
    r = rq.identify(x, np.int8([0, 2, 7]), 0.25, 0, qmin=-8, qmax=7, op="quantize")
    assert ("exact", "half_even") in r.matches
    with pytest.raises(ValueError, match="op must be"):
        rq.identify(x, x, 0.25, 0, qmin=-8, qmax=7, op="dequantize")
    with pytest.raises(ValueError, match="same shape"):
        rq.identify(x, x[:2], 0.25, 0, qmin=-8, qmax=7)


torch = None


def test_identifies_torch_fake_quantize(x):
    torch = pytest.importorskip("torch")
    y = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x.copy()), float(S), Z, LO, HI).numpy()
    r = rq.identify(x, y, float(S), Z, qmin=LO, qmax=HI)
    assert ("torch.fake_quantize", "half_even") in r.matches
    assert r.mismatches[("exact", "half_even")] > 0


def test_identifies_onnx_reference(x):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    graph = helper.make_graph(
        nodes, "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.UINT8, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = ReferenceEvaluator(model).run(None, {"x": x, "s": np.array(S), "z": np.uint8(Z)})[0]
    r = rq.identify(x, y, S, Z, qmin=LO, qmax=HI)
    assert ("onnx", "half_even") in r.matches
    assert ("torch.fake_quantize", "half_even") not in r.matches
