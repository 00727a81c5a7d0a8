"""Differential fuzz of the affine conventions against the backends they name, on adversarial
inputs (see ``strategies``).

Each target draws cases, runs the backend and refquant under the backend's convention, and
compares bit patterns. A case the backend refuses is discarded; a case refquant refuses must be
refused with a ValueError (documented refusals), never a wrong answer. Bounded in CI by the
hypothesis profile; ``python -m pytest -m fuzz --hypothesis-profile=long`` runs the long profile.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import assume, given, reject
from hypothesis import strategies as st

import refquant as rq
from tests.fuzz.strategies import BF16, blocked_cases, per_channel_cases, per_tensor_cases
from tests.references import assert_bitwise_equal

torch = pytest.importorskip("torch")
warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")

pytestmark = [pytest.mark.fuzz,
              pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning",
                                         "ignore::DeprecationWarning")]

# the variants the installed torch runs on this machine (ATEN_CPU_CAPABILITY, FBGEMM's CPU checks)
FQ = rq.conventions.detect("torch.fake_quantize")
TQ = rq.conventions.detect("torch.quantize")


def ours_or_reject(fn):
    """refquant's answer; a ValueError is a documented refusal, so the case is discarded."""
    try:
        return fn()
    except ValueError:
        reject()


# ---------------------------------------------------------------------------------------------
# torch


def to_torch(x):
    x = np.ascontiguousarray(x).astype(x.dtype.newbyteorder("="))
    if x.dtype == BF16:
        return torch.from_numpy(x.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(x.copy())


def to_numpy(t):
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(BF16)
    return t.numpy()


def backend(fn):
    """The backend's answer; a case it refuses (RuntimeError, ValueError...) is discarded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    except Exception:  # noqa: BLE001 - any refusal of the backend discards the case
        reject()


def same(ours, theirs, case):
    ours, theirs = np.ascontiguousarray(ours), np.ascontiguousarray(theirs)
    if theirs.dtype.kind in "iu":
        ours, theirs = ours.astype(np.int64), theirs.astype(np.int64)
    assert_bitwise_equal(ours, theirs, repr(case))


@given(per_tensor_cases())
def test_torch_fake_quantize_per_tensor(case):
    t = backend(lambda: torch.fake_quantize_per_tensor_affine(
        to_torch(case.x), case.scale, case.zero_point, case.qmin, case.qmax))
    y = ours_or_reject(lambda: rq.fake_quantize(case.x, case.scale, case.zero_point, qmin=case.qmin,
                                                qmax=case.qmax, convention=FQ))
    same(y, to_numpy(t), case)


def _same_per_channel(case, z):
    """torch's per-channel fake quantize and the ``torch.fake_quantize`` variant agree on ``case``
    with zero points ``z``."""
    t = backend(lambda: torch.fake_quantize_per_channel_affine(
        to_torch(case.x), torch.from_numpy(case.scale), torch.from_numpy(z), case.axis, case.qmin,
        case.qmax))
    y = ours_or_reject(lambda: rq.fake_quantize(case.x, case.scale, z, qmin=case.qmin,
                                                qmax=case.qmax, axis=case.axis,
                                                convention=FQ))
    same(y, to_numpy(t), case)


@given(per_channel_cases(), st.booleans())
def test_torch_fake_quantize_per_channel(case, float_zp):
    z = case.zero_point.astype(np.float32 if float_zp else np.int32)
    _same_per_channel(case, z)


@given(per_channel_cases(float_zero_point=True, max_bits=8))
def test_torch_fake_quantize_per_channel_float_zero_point(case):
    t = backend(lambda: torch.fake_quantize_per_channel_affine(
        to_torch(case.x), torch.from_numpy(case.scale), torch.from_numpy(case.zero_point),
        case.axis, case.qmin, case.qmax))
    y = ours_or_reject(lambda: rq.fake_quantize(case.x, case.scale, case.zero_point, qmin=case.qmin,
                                                qmax=case.qmax, axis=case.axis,
                                                convention=FQ))
    same(y, to_numpy(t), case)


QDTYPES = {"quint8": (0, 255), "qint8": (-128, 127), "qint32": (-(2**31), 2**31 - 1)}


@given(per_tensor_cases(dtypes=("float32",)), st.sampled_from(sorted(QDTYPES)))
def test_torch_quantize_per_tensor_and_dequantize(case, qdtype):
    lo, hi = QDTYPES[qdtype]
    z = int(np.clip(case.zero_point, lo, hi))
    tq = backend(lambda: torch.quantize_per_tensor(to_torch(case.x), case.scale, z,
                                                   getattr(torch, qdtype)))
    q = ours_or_reject(lambda: rq.quantize(case.x, case.scale, z, qmin=lo, qmax=hi,
                                           convention=TQ))
    same(q, tq.int_repr().numpy(), case)
    same(rq.dequantize(q, case.scale, z, convention=TQ), tq.dequantize().numpy(), case)


@given(per_channel_cases(dtypes=("float32",), scale_dtype=np.float64), st.sampled_from(sorted(QDTYPES)))
def test_torch_quantize_per_channel_and_dequantize(case, qdtype):
    lo, hi = QDTYPES[qdtype]
    z = np.clip(case.zero_point, lo, hi)
    tq = backend(lambda: torch.quantize_per_channel(
        to_torch(case.x), torch.from_numpy(case.scale), torch.from_numpy(z), case.axis,
        getattr(torch, qdtype)))
    q = ours_or_reject(lambda: rq.quantize(case.x, case.scale, z, qmin=lo, qmax=hi, axis=case.axis,
                                           convention=TQ))
    same(q, tq.int_repr().numpy(), case)
    same(rq.dequantize(q, case.scale, z, axis=case.axis, convention=TQ),
         tq.dequantize().numpy(), case)


@given(st.sampled_from(["quint8", "qint8"]).flatmap(lambda name: st.tuples(
    st.just(name), per_channel_cases(dtypes=("float32",), float_zero_point=True,
                                     range_strategy=st.just(QDTYPES[name])))))
def test_torch_quantize_per_channel_float_zero_point(drawn):
    qdtype, case = drawn
    lo, hi = QDTYPES[qdtype]
    tq = backend(lambda: torch.quantize_per_channel(
        to_torch(case.x), torch.from_numpy(case.scale), torch.from_numpy(case.zero_point),
        case.axis, getattr(torch, qdtype)))
    q = ours_or_reject(lambda: rq.quantize(case.x, case.scale, case.zero_point, qmin=lo, qmax=hi,
                                           axis=case.axis, convention=TQ))
    same(q, tq.int_repr().numpy(), case)


CODE_DTYPES = ("uint8", "int8", "uint16", "int16", "int32")
OUT_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
              "bfloat16": torch.bfloat16}


@st.composite
def code_dtypes(draw, lo, hi):
    """A torch code dtype holding [lo, hi]: the smallest, or a wider one (NaN and overflowing
    values convert differently in each)."""
    fits = [n for n in CODE_DTYPES if np.iinfo(n).min <= lo and hi <= np.iinfo(n).max]
    assume(fits)
    return draw(st.sampled_from(fits))


def np_of(name):
    return BF16 if name == "bfloat16" else np.dtype(name)


@given(per_tensor_cases(dtypes=("float32", "float16", "bfloat16")), st.data(),
       st.sampled_from(sorted(OUT_DTYPES)))
def test_torch_decomposed_per_tensor(case, data, out):
    from torch.ao.quantization.fx import _decomposed  # noqa: F401  (registers the ops)

    ops = torch.ops.quantized_decomposed
    name = data.draw(code_dtypes(case.qmin, case.qmax))
    tq = backend(lambda: ops.quantize_per_tensor(to_torch(case.x), case.scale, case.zero_point,
                                                 case.qmin, case.qmax, getattr(torch, name)))
    q = ours_or_reject(lambda: rq.quantize(case.x, case.scale, case.zero_point, qmin=case.qmin,
                                           qmax=case.qmax, convention="torch.decomposed", dtype=name))
    same(q, tq.numpy(), case)
    tdq = backend(lambda: ops.dequantize_per_tensor(tq, case.scale, case.zero_point, case.qmin,
                                                    case.qmax, getattr(torch, name),
                                                    out_dtype=OUT_DTYPES[out]))
    same(rq.dequantize(q, case.scale, case.zero_point, convention="torch.decomposed", dtype=np_of(out)),
         to_numpy(tdq), case)


@given(per_tensor_cases(dtypes=("float32", "float16", "bfloat16"), max_bits=32), st.data(),
       st.sampled_from(["int32", "int64", "float32", "float16", "bfloat16", "float64"]),
       st.sampled_from(["float32", "float16", "bfloat16", "float64", "x"]),
       st.sampled_from(["float32", "float16", "bfloat16"]))
def test_torchao_per_tensor(case, data, zp_dtype, scale_dtype, out):
    with np.errstate(over="ignore"):
        s_np = np.array([case.scale], np_of(case.x.dtype.name if scale_dtype == "x" else scale_dtype))
        zp = np.array([case.zero_point], np_of(zp_dtype))
    _same_torchao(case, data.draw(code_dtypes(case.qmin, case.qmax)), s_np, zp, out,
                  list(case.x.shape), {})


def _same_torchao(case, name, s_np, zp, out, block, layout):
    """torchao's quantize_affine / dequantize_affine / _fake_quantize_affine and the torchao row
    agree on ``case`` with qparams ``s_np``, ``zp`` over ``block`` (refquant: per tensor when
    ``layout`` is empty, else its ``block_size``)."""
    from torchao.quantization.quant_primitives import (
        _fake_quantize_affine,
        dequantize_affine,
        quantize_affine,
    )

    assume(np.isfinite(s_np.astype(np.float64)).all() and (s_np.astype(np.float64) > 0).all())
    x, s, z = to_torch(case.x), to_torch(s_np), to_torch(zp)
    rs, rz = (s_np, zp) if layout else (s_np.reshape(()), zp.reshape(()))
    kw = {"qmin": case.qmin, "qmax": case.qmax, "convention": "torchao", **layout}
    tq = backend(lambda: quantize_affine(x, block, s, z, getattr(torch, name), case.qmin, case.qmax))
    q = ours_or_reject(lambda: rq.quantize(case.x, rs, rz, dtype=name, **kw))
    same(q, tq.numpy(), case)
    tdq = backend(lambda: dequantize_affine(tq, block, s, z, getattr(torch, name), case.qmin,
                                            case.qmax, output_dtype=OUT_DTYPES[out]))
    same(rq.dequantize(q, rs, rz, convention="torchao", dtype=np_of(out), **layout), to_numpy(tdq),
         case)
    tf = backend(lambda: _fake_quantize_affine(x, block, s, z, getattr(torch, name), case.qmin,
                                               case.qmax))
    same(ours_or_reject(lambda: rq.fake_quantize(case.x, rs, rz, **kw)), to_numpy(tf), case)


@given(per_channel_cases(dtypes=("float32", "float16", "bfloat16"), scale_dtype=np.float64), st.data(),
       st.sampled_from(["float32", "float64"]), st.sampled_from(["int32", "int64"]),
       st.sampled_from(sorted(OUT_DTYPES)))
def test_torch_decomposed_per_channel(case, data, scale_dtype, zp_dtype, out):
    from torch.ao.quantization.fx import _decomposed  # noqa: F401  (registers the ops)

    ops = torch.ops.quantized_decomposed
    name = data.draw(code_dtypes(case.qmin, case.qmax))
    with np.errstate(over="ignore", under="ignore"):
        s = case.scale.astype(scale_dtype)
    assume(np.isfinite(s).all() and (s > 0).all())
    z = case.zero_point.astype(zp_dtype)
    tq = backend(lambda: ops.quantize_per_channel(to_torch(case.x), torch.from_numpy(s),
                                                  torch.from_numpy(z), case.axis, case.qmin,
                                                  case.qmax, getattr(torch, name)))
    q = ours_or_reject(lambda: rq.quantize(case.x, s, z, qmin=case.qmin, qmax=case.qmax,
                                           axis=case.axis, convention="torch.decomposed",
                                           dtype=name))
    same(q, tq.numpy(), case)
    tdq = backend(lambda: ops.dequantize_per_channel(tq, torch.from_numpy(s), torch.from_numpy(z),
                                                     case.axis, case.qmin, case.qmax,
                                                     getattr(torch, name),
                                                     out_dtype=OUT_DTYPES[out]))
    same(rq.dequantize(q, s, z, axis=case.axis, convention="torch.decomposed", dtype=np_of(out)),
         to_numpy(tdq), case)


@given(blocked_cases(dtypes=("float32", "float16", "bfloat16")), st.data(),
       st.sampled_from(["int32", "int64", "float32"]), st.sampled_from(["float32", "x"]),
       st.sampled_from(["float32", "float16", "bfloat16"]))
def test_torchao_blocked(case, data, zp_dtype, scale_dtype, out):
    with np.errstate(over="ignore"):
        s_np = case.scale.astype(np_of(case.x.dtype.name if scale_dtype == "x" else scale_dtype))
        zp = case.zero_point.astype(np_of(zp_dtype))
    _same_torchao(case, data.draw(code_dtypes(case.qmin, case.qmax)), s_np, zp, out,
                  list(case.block_size), {"block_size": case.block_size})


@given(per_tensor_cases(dtypes=("float32",)), st.sampled_from([(-8, 7), (0, 15), (-(2**15), 2**15 - 1),
                                                             (-(2**31), 2**31 - 1)]),
       st.sampled_from(["tensor", "channel"]))
def test_reference_linear_decomposed_qint32(case, quant_range, scheme):
    """refquant_torch's reference Linear with decomposed qint32 weights (int32 codes whatever the
    range) against torch.ao's."""
    from torch.ao.quantization.fx import _decomposed  # noqa: F401  (registers the ops)

    import refquant_torch as rqt

    lo, hi = quant_range
    z = int(np.clip(case.zero_point, lo, hi))
    w = to_torch(case.x)
    lin = torch.nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(w)
    qp = {"qscheme": torch.per_tensor_affine, "dtype": torch.qint32, "is_decomposed": True,
          "quant_min": lo, "quant_max": hi, "scale": case.scale, "zero_point": z}
    if scheme == "channel":
        rows = w.shape[0]
        qp.update(qscheme=torch.per_channel_affine, axis=0,
                  scale=torch.full((rows,), case.scale, dtype=torch.float32),
                  zero_point=torch.full((rows,), z, dtype=torch.int32))
    theirs = backend(lambda: torch.ao.nn.quantized.reference.Linear.from_float(lin, qp))
    tq, tw = backend(theirs.get_quantized_weight), backend(theirs.get_weight)
    ours = rqt.nn.reference.Linear.from_float(lin, qp)
    same(ours_or_reject(ours.get_quantized_weight).numpy(), tq.numpy(), case)
    same(ours_or_reject(ours.get_weight).numpy(), tw.numpy(), case)


# ---------------------------------------------------------------------------------------------
# onnx.reference

ONNX_ZP = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767)}
PRECISION = {None: None, "float32": 1, "float16": 10, "bfloat16": 16}  # onnx TensorProto codes


@given(per_tensor_cases(dtypes=("float32", "float16", "bfloat16")), st.sampled_from(sorted(ONNX_ZP)),
       st.sampled_from([None, "float32", "float16", "bfloat16"]))
def test_onnx_reference_quantize_linear(case, zp_name, precision):
    pytest.importorskip("onnx")
    from onnx.reference.ops.op_dequantize_linear import DequantizeLinear_21
    from onnx.reference.ops.op_quantize_linear import QuantizeLinear_21, QuantizeLinear_23

    lo, hi = ONNX_ZP[zp_name]
    z = np.array(np.clip(case.zero_point, lo, hi), zp_name)
    x = np.ascontiguousarray(case.x).astype(case.x.dtype.newbyteorder("="))
    with np.errstate(over="ignore"):
        s = np.array(case.scale, x.dtype)
    assume(np.isfinite(s.astype(np.float64)) and s.astype(np.float64) > 0)
    conv = rq.conventions.get("onnx.reference")
    if precision is None:
        tq = backend(lambda: QuantizeLinear_21.eval(x, s, z))
    else:
        tq = backend(lambda: QuantizeLinear_23.eval(x, s, z, precision=PRECISION[precision]))
        conv = conv.replace(compute=precision)
    q = ours_or_reject(lambda: rq.quantize(x, s, int(z), qmin=lo, qmax=hi, convention=conv))
    same(q, tq, case)
    tdq = backend(lambda: DequantizeLinear_21.eval(tq, s, z))
    same(rq.dequantize(q, s, int(z), convention=conv, dtype=x.dtype), tdq, case)


def _onnx_layout(case):
    """(onnx attributes, refquant keywords) of a per-tensor, per-axis or blocked case."""
    if case.block_size is not None:
        return {"axis": 1, "block_size": case.block_size[1]}, {"block_size": case.block_size}
    if case.axis is not None:
        return {"axis": case.axis}, {"axis": case.axis}
    return {}, {}


def _native(x):
    return np.ascontiguousarray(x).astype(x.dtype.newbyteorder("="))


@given(st.one_of(per_channel_cases(dtypes=("float32", "float16", "bfloat16"), max_bits=16),
                 blocked_cases(dtypes=("float32", "float16", "bfloat16"), max_bits=16)),
       st.sampled_from(sorted(ONNX_ZP)))
def test_onnx_reference_quantize_linear_per_axis_and_blocked(case, zp_name):
    pytest.importorskip("onnx")
    from onnx.reference.ops.op_dequantize_linear import DequantizeLinear_21
    from onnx.reference.ops.op_quantize_linear import QuantizeLinear_21

    lo, hi = ONNX_ZP[zp_name]
    z = np.clip(case.zero_point, lo, hi).astype(zp_name)
    x = _native(case.x)
    with np.errstate(over="ignore", under="ignore"):
        s = np.asarray(case.scale).astype(x.dtype)
    assume(np.isfinite(s.astype(np.float64)).all() and (s.astype(np.float64) > 0).all())
    attrs, kw = _onnx_layout(case)
    tq = backend(lambda: QuantizeLinear_21.eval(x, s, z, **attrs))
    q = ours_or_reject(lambda: rq.quantize(x, s, z.astype(np.int64), qmin=lo, qmax=hi,
                                           convention="onnx.reference", **kw))
    same(q, tq, case)
    tdq = backend(lambda: DequantizeLinear_21.eval(tq, s, z, **attrs))
    same(rq.dequantize(q, s, z.astype(np.int64), convention="onnx.reference", dtype=x.dtype, **kw),
         tdq, case)


INT32_SPECIAL = np.array([-(2**31), 2**31 - 1, -(2**31) + 1, 0, 1, -1, 2**24 + 1, -(2**24) - 1,
                          2**24 + 3, 2**25 + 6, 2**31 - 65, 2**31 - 64], np.int64)


@st.composite
def int32_codes(draw, shape):
    """int32 codes: anywhere, near float32's integer limit 2**24, the ends, every magnitude."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    anywhere = rng.integers(-(2**31), 2**31, shape)
    q = np.choose(rng.integers(0, 4, shape), [
        anywhere, rng.integers(-(2**25), 2**25, shape),
        INT32_SPECIAL[rng.integers(0, INT32_SPECIAL.size, shape)],
        anywhere >> rng.integers(0, 31, shape)])
    return q.astype(np.int32)


def _int32_case(zero):
    """(case, codes, zero points) for DequantizeLinear of int32 codes: x's layout, scales in x's
    dtype, int32 zero points (all 0 when ``zero``)."""
    @st.composite
    def build(draw):
        case = draw(st.one_of(
            per_tensor_cases(dtypes=("float32", "float16", "bfloat16"), max_bits=32),
            per_channel_cases(dtypes=("float32", "float16", "bfloat16"), max_bits=32),
            blocked_cases(dtypes=("float32", "float16", "bfloat16"), max_bits=32)))
        z = np.asarray(case.zero_point, np.int64).astype(np.int32)
        return case, draw(int32_codes(case.x.shape)), np.zeros_like(z) if zero else z
    return build()


def _int32_scale(case):
    with np.errstate(over="ignore", under="ignore"):
        s = np.asarray(case.scale).astype(case.x.dtype.newbyteorder("="))
    assume(np.isfinite(s.astype(np.float64)).all() and (s.astype(np.float64) > 0).all())
    return s


@given(_int32_case(zero=True))
def test_onnx_dequantize_linear_int32(drawn):
    """int32 codes with the spec's zero point 0: the onnx row against onnxruntime (float32 and
    float16 scales), the onnx.reference row against the reference where the two rules agree
    (float32 scales)."""
    pytest.importorskip("onnx")
    from onnx.reference.ops.op_dequantize_linear import DequantizeLinear_21

    case, q, z = drawn
    s = _int32_scale(case)
    attrs, kw = _onnx_layout(case)
    zz = z if z.ndim else int(z)
    if s.dtype == np.float32:
        tdq = backend(lambda: DequantizeLinear_21.eval(q, s, z, **attrs))
        same(rq.dequantize(q, s, zz, convention="onnx.reference", dtype=s.dtype, **kw), tdq, case)
    if s.dtype != BF16:
        y = _onnxruntime_dequantize(q, s, z, attrs)
        same(rq.dequantize(q, s, zz, convention="onnx", dtype=s.dtype, **kw), y, case)


def _onnxruntime_dequantize(q, s, z, attrs):
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    ftype = TensorProto.FLOAT if s.dtype == np.float32 else TensorProto.FLOAT16
    node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)
    graph = helper.make_graph(
        [node], "dq", [helper.make_tensor_value_info("q", TensorProto.INT32, None),
                       helper.make_tensor_value_info("s", ftype, None),
                       helper.make_tensor_value_info("z", TensorProto.INT32, None)],
        [helper.make_tensor_value_info("y", ftype, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"q": q, "s": s, "z": z})[0]


@given(_int32_case(zero=False))
def test_onnx_reference_dequantize_linear_int32_any_zero_point(drawn):
    pytest.importorskip("onnx")
    from onnx.reference.ops.op_dequantize_linear import DequantizeLinear_21

    case, q, z = drawn
    s = _int32_scale(case)
    attrs, kw = _onnx_layout(case)
    tdq = backend(lambda: DequantizeLinear_21.eval(q, s, z, **attrs))
    same(rq.dequantize(q, s, z if z.ndim else int(z), convention="onnx.reference", dtype=s.dtype,
                       **kw), tdq, case)


# ---------------------------------------------------------------------------------------------
# float64 per-channel (the product is computed in float64 by torch)


@given(per_channel_cases(dtypes=("float64",)))
def test_torch_fake_quantize_per_channel_float64(case):
    z = case.zero_point.astype(np.int32)
    _same_per_channel(case, z)
