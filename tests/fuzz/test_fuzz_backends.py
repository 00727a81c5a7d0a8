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
from tests.fuzz.strategies import BF16, per_channel_cases, per_tensor_cases
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
    from torchao.quantization.quant_primitives import (
        _fake_quantize_affine,
        dequantize_affine,
        quantize_affine,
    )

    name = data.draw(code_dtypes(case.qmin, case.qmax))
    x = to_torch(case.x)
    with np.errstate(over="ignore"):
        s_np = np.array([case.scale], np_of(case.x.dtype.name if scale_dtype == "x" else scale_dtype))
        zp = np.array([case.zero_point], np_of(zp_dtype))
    assume(np.isfinite(s_np.astype(np.float64)).all() and float(s_np[0]) > 0)
    s, z = to_torch(s_np), to_torch(zp)
    tq = backend(lambda: quantize_affine(x, list(x.shape), s, z, getattr(torch, name), case.qmin,
                                         case.qmax))
    q = ours_or_reject(lambda: rq.quantize(case.x, s_np.reshape(()), zp.reshape(()), qmin=case.qmin,
                                           qmax=case.qmax, convention="torchao", dtype=name))
    same(q, tq.numpy(), case)
    tdq = backend(lambda: dequantize_affine(tq, list(x.shape), s, z, getattr(torch, name),
                                            case.qmin, case.qmax, output_dtype=OUT_DTYPES[out]))
    same(rq.dequantize(q, s_np.reshape(()), zp.reshape(()), convention="torchao", dtype=np_of(out)),
         to_numpy(tdq), case)
    tf = backend(lambda: _fake_quantize_affine(x, list(x.shape), s, z, getattr(torch, name), case.qmin,
                                               case.qmax))
    y = ours_or_reject(lambda: rq.fake_quantize(case.x, s_np.reshape(()), zp.reshape(()), qmin=case.qmin,
                                                qmax=case.qmax, convention="torchao"))
    same(y, to_numpy(tf), case)


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


# ---------------------------------------------------------------------------------------------
# float64 per-channel (the product is computed in float64 by torch)


@given(per_channel_cases(dtypes=("float64",)))
def test_torch_fake_quantize_per_channel_float64(case):
    z = case.zero_point.astype(np.int32)
    _same_per_channel(case, z)
