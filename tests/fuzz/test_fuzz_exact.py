"""Differential fuzz of ``exact`` against the Fraction oracle on adversarial inputs (see
``strategies``). A ValueError is a documented refusal and discards the case. Bounded in CI by the
hypothesis profile; ``python -m pytest -m fuzz --hypothesis-profile=long`` runs the long profile.
"""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, reject

import refquant as rq
from tests.fuzz.strategies import BF16, per_tensor_cases, scales64
from tests.references import assert_bitwise_equal, exact_code, exact_fake, round_to_format

pytestmark = [pytest.mark.fuzz, pytest.mark.filterwarnings("ignore::RuntimeWarning")]

FMT = {"float32": "float32", "float64": "float64", "float16": "float16", "bfloat16": "bfloat16"}


def ours_or_reject(fn):
    """refquant's answer; a ValueError is a documented refusal, so the case is discarded."""
    try:
        return fn()
    except ValueError:
        reject()




@given(per_tensor_cases(scale_strategy=scales64, n=32))
def test_exact_quantize_matches_the_oracle(case):
    x = case.x
    assume(not np.isnan(x.astype(np.float64)).any())
    q = ours_or_reject(lambda: rq.quantize(x, case.scale, case.zero_point, qmin=case.qmin,
                                           qmax=case.qmax))
    want = [exact_code(float(v), case.scale, case.zero_point, case.qmin, case.qmax)
            for v in x.astype(np.float64).ravel(order="C")]
    got = np.asarray(q).astype(object).ravel(order="C").tolist()
    assert [int(v) for v in got] == want, case


@given(per_tensor_cases(scale_strategy=scales64, n=32))
def test_exact_fake_quantize_matches_the_oracle(case):
    x = case.x
    y = ours_or_reject(lambda: rq.fake_quantize(x, case.scale, case.zero_point, qmin=case.qmin,
                                                qmax=case.qmax))
    # (np.dtype compares equal to None as float64: test BF16 first)
    fmt = "bfloat16" if BF16 is not None and x.dtype == BF16 else FMT[x.dtype.name]
    want = np.array([exact_fake(float(v), case.scale, case.zero_point, case.qmin, case.qmax, fmt)
                     for v in x.astype(np.float64).ravel(order="C")]).astype(x.dtype.newbyteorder("="))
    assert_bitwise_equal(np.ascontiguousarray(y).astype(want.dtype).ravel(), want, repr(case))


@given(per_tensor_cases(dtypes=("float64",), scale_strategy=scales64, n=16))
def test_exact_dequantize_matches_the_oracle(case):
    codes = np.clip(np.nan_to_num(case.x.astype(np.float64), posinf=case.qmax, neginf=case.qmin),
                    case.qmin, case.qmax).astype(np.int64)
    for out in ("float32", "float64"):
        y = ours_or_reject(lambda out=out: rq.dequantize(codes, case.scale, case.zero_point,
                                                         dtype=np.dtype(out)))
        want = np.array([round_to_format((int(q) - case.zero_point) * Fraction(case.scale), out)
                         for q in codes.ravel()], out).reshape(codes.shape)
        assert_bitwise_equal(y, want, repr(case))
