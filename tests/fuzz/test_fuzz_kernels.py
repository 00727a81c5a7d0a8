"""Differential fuzz of the affine kernels' all-float32 pass against the general loop of the same
compiled convention, on adversarial inputs (see ``strategies``): every float32-computing
convention, every deterministic rounding mode, quantize and fake_quantize, float32 and half
inputs. Half of the cases have their NaN and infinities replaced by zeros, so that whole runs take
the pass rather than the general loop."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

import refquant as rq
from refquant import affine
from tests.fuzz.strategies import blocked_cases, per_channel_cases, per_tensor_cases, scales32, scales64
from tests.references import assert_bitwise_equal

pytestmark = [pytest.mark.fuzz, pytest.mark.filterwarnings("ignore::RuntimeWarning")]

CONVENTIONS = ["torch.fake_quantize", "torch.quantize", "torch.decomposed", "torchao", "onnx",
               "onnx.reference", "aimet", "brevitas", "tflite", "modelopt"]
MODES = ["half_even", "half_away", "half_up", "half_down", "floor", "ceil", "toward_zero"]


def _run(op, case, x, conv, mode):
    try:
        return op(x, np.float32(case.scale), case.zero_point, qmin=case.qmin, qmax=case.qmax,
                  rounding=mode, convention=conv)
    except (ValueError, TypeError):  # a documented refusal (NaN under nan="error", an input dtype)
        reject()


@given(per_tensor_cases(dtypes=("float32", "float16", "bfloat16"), max_bits=16, scale_strategy=scales32,
                        n=64),
       st.sampled_from(CONVENTIONS), st.sampled_from(MODES), st.booleans(), st.booleans())
def test_all_float32_pass_matches_the_general_loop(case, name, mode, fake, clean):
    conv = rq.conventions.get(name)
    x = case.x
    if clean:
        x = np.where(np.isfinite(x.astype(np.float32)), x, x.dtype.type(0))
    op = rq.fake_quantize if fake else rq.quantize
    fast = _run(op, case, x, conv, mode)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(affine, "_fast32_holds", lambda *a: False)
        general = _run(op, case, x, conv, mode)
    assert_bitwise_equal(fast, general, repr(case))


ALL_MODES = MODES + ["stochastic"]


def _with_mask_agrees(case, conv, mode, **kw):
    """``rq.ste.fake_quantize_with_mask`` (one pass where the kernels can) against
    ``rq.fake_quantize`` and ``rq.ste.mask`` (a second, widened quantize) on the same case."""
    args = (case.x, case.scale, case.zero_point)
    kw = dict(qmin=case.qmin, qmax=case.qmax, axis=case.axis, block_size=case.block_size,
              rounding=mode, convention=conv, **kw)
    try:
        y, m = rq.ste.fake_quantize_with_mask(*args, **kw, rng=7)
    except (ValueError, TypeError):  # a documented refusal (an input dtype, a zero point)
        reject()
    assert_bitwise_equal(y, rq.fake_quantize(*args, **kw, rng=7), repr(case))
    expected = rq.ste.mask(*args, **kw)
    assert m.dtype == np.bool_ and m.shape == case.x.shape
    assert np.array_equal(m, expected), (repr(case), np.flatnonzero(m != expected)[:8])


@given(per_tensor_cases(max_bits=16, scale_strategy=scales64, n=64),
       st.sampled_from(["exact"] + CONVENTIONS), st.sampled_from(ALL_MODES), st.booleans())
def test_the_one_pass_mask_is_the_widened_quantize_mask(case, name, mode, clean):
    if clean:
        case = dataclasses.replace(case, x=np.where(np.isfinite(case.x.astype(np.float32)), case.x,
                                                    case.x.dtype.type(0)))
    _with_mask_agrees(case, rq.conventions.get(name), mode)


@given(st.one_of(per_channel_cases(max_bits=16), blocked_cases(max_bits=16)),
       st.sampled_from(["exact"] + CONVENTIONS), st.sampled_from(ALL_MODES))
def test_the_one_pass_mask_per_channel_and_block(case, name, mode):
    _with_mask_agrees(case, rq.conventions.get(name), mode)
