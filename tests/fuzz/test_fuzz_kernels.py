"""Differential fuzz of the affine kernels' all-float32 pass against the general loop of the same
compiled convention, on adversarial inputs (see ``strategies``): every float32-computing
convention, every deterministic rounding mode, quantize and fake_quantize, float32 and half
inputs. Half of the cases have their NaN and infinities replaced by zeros, so that whole runs take
the pass rather than the general loop."""

import numpy as np
import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

import refquant as rq
from refquant import affine
from tests.fuzz.strategies import per_tensor_cases, scales32
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
