"""Golden cases and identification of the integer operators' requantization."""

import numpy as np
import pytest

import refquant as rq
from tests.references import exact_requantize, tflite_mbqm, tflite_quantize_multiplier


@pytest.mark.parametrize("m", [0.5, 0.3, 1 / 3, 2.0**-7, 3.0])
def test_requantize_cases_hit_every_tie(m):
    acc, codes = rq.ops.requantize_cases(m, 3, qmin=-20, qmax=20)
    assert acc.dtype == np.int32
    assert codes.tolist() == [exact_requantize(int(a), m, 1.0, 0.0, 1.0, 3, -20, 20) for a in acc]
    # every half-way point k + 1/2 between output codes has an accumulator at its floor and ceiling
    for k in range(-20 - 3 - 1, 20 - 3 + 1):
        t = (k + 0.5) / m
        assert np.any(acc <= t) and np.any(acc >= t)


def test_requantize_cases_under_gemmlowp_follow_the_oracle():
    acc, codes = rq.ops.requantize_cases(0.3, 0, qmin=-50, qmax=50, convention="gemmlowp")
    q, shift = tflite_quantize_multiplier(0.3)
    assert codes.tolist() == [min(max(tflite_mbqm(int(a), q, shift), -50), 50) for a in acc]


ROWS = ["exact", "fbgemm", "onnxruntime", "onnx", "gemmlowp", "tflite.single_rounding"]


@pytest.mark.parametrize("name", ROWS)
def test_identify_names_the_row_that_made_the_codes(name):
    acc, codes = rq.ops.requantize_cases(0.75, 1, qmin=-128, qmax=127, convention=name)
    r = rq.ops.identify_requantization(acc, codes, 0.75, 1, qmin=-128, qmax=127)
    assert name in r.matches and r.size == acc.size
    assert all(r.mismatches[n] > 0 for n in r.mismatches if n not in r.matches)


def test_identify_tells_rounding_families_apart():
    acc = np.arange(-50, 51, dtype=np.int32)
    fixed = rq.ops.requantize(acc, 0.125, 0, qmin=-128, qmax=127, convention="gemmlowp")
    r = rq.ops.identify_requantization(acc, fixed, 0.125, 0, qmin=-128, qmax=127)
    assert "gemmlowp" in r.matches and "exact" not in r.matches and r.mismatches["exact"] > 0


def test_identify_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        rq.ops.identify_requantization(np.int32([1, 2]), np.int8([1]), 0.5, 0, qmin=0, qmax=9)
    with pytest.raises(TypeError, match="integer codes"):
        rq.ops.identify_requantization(np.int32([1]), np.float32([1]), 0.5, 0, qmin=0, qmax=9)


@pytest.mark.parametrize("per_channel", [False, True])
def test_linear_cases_are_tie_heavy_and_self_consistent(per_channel):
    case = rq.ops.linear_cases(8, 16, 8, per_channel=per_channel, seed=3)
    expected = case.pop("expected")
    assert np.array_equal(rq.ops.linear(**case), expected)
    acc = rq.ops.matmul_integer(case["xq"], case["wq"].T, case["x_zero_point"]).astype(np.float64)
    twice = 2 * (acc * case["x_scale"] * np.asarray(case["w_scale"]) + case["bias"]) / case["y_scale"]
    assert np.count_nonzero(twice % 2 == 1) > expected.size // 4
    exact = rq.ops.linear(**case, convention="exact")
    assert np.array_equal(exact, expected)  # power-of-two scales: fbgemm's float32 steps are exact here
