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
                                                qmax=case.qmax, convention="torch.fake_quantize"))
    same(y, to_numpy(t), case)


@pytest.mark.xfail(strict=True, reason=(
                   "known open mismatch: float64 input past 2**31 after scaling: torch's float64 "
                   "per-channel product and cast are not modelled there yet"))
@given(per_channel_cases(), st.booleans())
def test_torch_fake_quantize_per_channel(case, float_zp):
    z = case.zero_point.astype(np.float32 if float_zp else np.int32)
    t = backend(lambda: torch.fake_quantize_per_channel_affine(
        to_torch(case.x), torch.from_numpy(case.scale), torch.from_numpy(z), case.axis, case.qmin,
        case.qmax))
    y = ours_or_reject(lambda: rq.fake_quantize(case.x, case.scale, z, qmin=case.qmin,
                                                qmax=case.qmax, axis=case.axis,
                                                convention="torch.fake_quantize"))
    same(y, to_numpy(t), case)


@pytest.mark.xfail(strict=True, reason=(
                   "known open mismatch: float64 input with float zero points past 2**31 after "
                   "scaling: not modelled yet"))
@given(per_channel_cases(float_zero_point=True, max_bits=8))
def test_torch_fake_quantize_per_channel_float_zero_point(case):
    t = backend(lambda: torch.fake_quantize_per_channel_affine(
        to_torch(case.x), torch.from_numpy(case.scale), torch.from_numpy(case.zero_point),
        case.axis, case.qmin, case.qmax))
    y = ours_or_reject(lambda: rq.fake_quantize(case.x, case.scale, case.zero_point, qmin=case.qmin,
                                                qmax=case.qmax, axis=case.axis,
                                                convention="torch.fake_quantize"))
    same(y, to_numpy(t), case)


QDTYPES = {"quint8": (0, 255), "qint8": (-128, 127), "qint32": (-(2**31), 2**31 - 1)}


@given(per_tensor_cases(dtypes=("float32",)), st.sampled_from(sorted(QDTYPES)))
def test_torch_quantize_per_tensor_and_dequantize(case, qdtype):
    lo, hi = QDTYPES[qdtype]
    z = int(np.clip(case.zero_point, lo, hi))
    tq = backend(lambda: torch.quantize_per_tensor(to_torch(case.x), case.scale, z,
                                                   getattr(torch, qdtype)))
    q = ours_or_reject(lambda: rq.quantize(case.x, case.scale, z, qmin=lo, qmax=hi,
                                           convention="torch.quantize"))
    same(q, tq.int_repr().numpy(), case)
    same(rq.dequantize(q, case.scale, z, convention="torch.quantize"), tq.dequantize().numpy(), case)


@given(per_channel_cases(dtypes=("float32",), scale_dtype=np.float64), st.sampled_from(sorted(QDTYPES)))
def test_torch_quantize_per_channel_and_dequantize(case, qdtype):
    lo, hi = QDTYPES[qdtype]
    z = np.clip(case.zero_point, lo, hi)
    tq = backend(lambda: torch.quantize_per_channel(
        to_torch(case.x), torch.from_numpy(case.scale), torch.from_numpy(z), case.axis,
        getattr(torch, qdtype)))
    q = ours_or_reject(lambda: rq.quantize(case.x, case.scale, z, qmin=lo, qmax=hi, axis=case.axis,
                                           convention="torch.quantize"))
    same(q, tq.int_repr().numpy(), case)
    same(rq.dequantize(q, case.scale, z, axis=case.axis, convention="torch.quantize"),
         tq.dequantize().numpy(), case)


@pytest.mark.xfail(strict=True, reason=(
                   "known open mismatch: float zero points with |x/s| past 2**31 on some layouts: "
                   "not modelled yet"))
@given(per_channel_cases(dtypes=("float32",), float_zero_point=True, max_bits=8),
       st.sampled_from(["quint8", "qint8"]))
def test_torch_quantize_per_channel_float_zero_point(case, qdtype):
    lo, hi = QDTYPES[qdtype]
    assume((case.qmin, case.qmax) == (lo, hi))
    tq = backend(lambda: torch.quantize_per_channel(
        to_torch(case.x), torch.from_numpy(case.scale), torch.from_numpy(case.zero_point),
        case.axis, getattr(torch, qdtype)))
    q = ours_or_reject(lambda: rq.quantize(case.x, case.scale, case.zero_point, qmin=lo, qmax=hi,
                                           axis=case.axis, convention="torch.quantize"))
    same(q, tq.int_repr().numpy(), case)


DECOMPOSED_DTYPES = {8: ("uint8", "int8"), 16: ("uint16", "int16"), 32: (None, "int32")}


def _code_dtype(lo, hi):
    for bits, (u, s) in DECOMPOSED_DTYPES.items():
        if lo >= 0 and u and hi < 2**bits:
            return u
        if -(2 ** (bits - 1)) <= lo and hi < 2 ** (bits - 1):
            return s
    return None


@pytest.mark.xfail(strict=False, reason=(  # the bounded CI profile may not reach it
                   "known open mismatch: code dtypes wider than the range (NaN and 0*inf to "
                   "INT32_MIN) and dequantize's out_dtype: no way to ask for the output dtype yet"))
@given(per_tensor_cases(dtypes=("float32", "float16", "bfloat16")))
def test_torch_decomposed_per_tensor(case):
    from torch.ao.quantization.fx import _decomposed  # noqa: F401  (registers the ops)

    ops = torch.ops.quantized_decomposed
    name = _code_dtype(case.qmin, case.qmax)
    assume(name is not None)
    tq = backend(lambda: ops.quantize_per_tensor(to_torch(case.x), case.scale, case.zero_point,
                                                 case.qmin, case.qmax, getattr(torch, name)))
    q = ours_or_reject(lambda: rq.quantize(case.x, case.scale, case.zero_point, qmin=case.qmin,
                                           qmax=case.qmax, convention="torch.decomposed"))
    same(q, tq.numpy(), case)
    tdq = backend(lambda: ops.dequantize_per_tensor(tq, case.scale, case.zero_point, case.qmin,
                                                    case.qmax, getattr(torch, name)))
    same(rq.dequantize(q, case.scale, case.zero_point, convention="torch.decomposed"),
         tdq.numpy(), case)


@given(per_tensor_cases(dtypes=("float32", "float16", "bfloat16"), max_bits=16),
       st.sampled_from(["int32", "float32"]))
def test_torchao_per_tensor(case, zp_dtype):
    from torchao.quantization.quant_primitives import dequantize_affine, quantize_affine

    name = _code_dtype(case.qmin, case.qmax)
    assume(name is not None)
    x = to_torch(case.x)
    s = torch.tensor([case.scale], dtype=torch.float32)
    z = torch.tensor([case.zero_point], dtype=getattr(torch, zp_dtype))
    zp = np.array([case.zero_point], zp_dtype)
    tq = backend(lambda: quantize_affine(x, list(x.shape), s, z, getattr(torch, name), case.qmin,
                                         case.qmax))
    q = ours_or_reject(lambda: rq.quantize(case.x, np.float32(case.scale), zp[0], qmin=case.qmin,
                                           qmax=case.qmax, convention="torchao"))
    same(q, tq.numpy(), case)
    tdq = backend(lambda: dequantize_affine(tq, list(x.shape), s, z, getattr(torch, name),
                                            case.qmin, case.qmax, output_dtype=x.dtype))
    out = case.x.dtype.newbyteorder("=")
    same(rq.dequantize(q, np.float32(case.scale), zp[0], convention="torchao", dtype=out),
         to_numpy(tdq), case)


# ---------------------------------------------------------------------------------------------
# onnx.reference

ONNX_ZP = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767)}


@pytest.mark.xfail(strict=True, reason=(
                   "known open mismatch: onnx.reference's own departures from the spec (int32 wrap "
                   "of NaN and of the zero-point add, precision attribute) need a row of their own"))
@given(per_tensor_cases(dtypes=("float32", "float16")), st.sampled_from(sorted(ONNX_ZP)))
def test_onnx_quantize_linear(case, zp_name):
    pytest.importorskip("onnx")
    from onnx.reference.ops.op_dequantize_linear import DequantizeLinear_21
    from onnx.reference.ops.op_quantize_linear import QuantizeLinear_21

    lo, hi = ONNX_ZP[zp_name]
    z = np.array(np.clip(case.zero_point, lo, hi), zp_name)
    x = np.ascontiguousarray(case.x).astype(case.x.dtype.newbyteorder("="))
    s = np.array(case.scale, x.dtype)
    assume(np.isfinite(s) and s > 0)
    tq = backend(lambda: QuantizeLinear_21.eval(x, s, z))
    q = ours_or_reject(lambda: rq.quantize(x, s, int(z), qmin=lo, qmax=hi, convention="onnx"))
    same(q, tq, case)
    tdq = backend(lambda: DequantizeLinear_21.eval(tq, s, z))
    same(rq.dequantize(q, s, int(z), convention="onnx", dtype=x.dtype), tdq, case)


# ---------------------------------------------------------------------------------------------
# float64 per-channel (the product is computed in float64 by torch)


@given(per_channel_cases(dtypes=("float64",)))
def test_torch_fake_quantize_per_channel_float64(case):
    z = case.zero_point.astype(np.int32)
    t = backend(lambda: torch.fake_quantize_per_channel_affine(
        to_torch(case.x), torch.from_numpy(case.scale), torch.from_numpy(z), case.axis, case.qmin,
        case.qmax))
    y = ours_or_reject(lambda: rq.fake_quantize(case.x, case.scale, z, qmin=case.qmin,
                                                qmax=case.qmax, axis=case.axis,
                                                convention="torch.fake_quantize"))
    same(y, to_numpy(t), case)
