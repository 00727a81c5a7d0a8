"""rq.testing.assert_quant_equal: bitwise, with a quantization report."""

import numpy as np
import pytest

import refquant as rq


def test_equal_passes_including_nan():
    a = np.float32([0.5, np.nan, -1.0])
    rq.testing.assert_quant_equal(a, a.copy())


def test_signed_zero_differs():
    with pytest.raises(AssertionError, match="1 of 2 elements differ"):
        rq.testing.assert_quant_equal(np.float32([0.0, 1.0]), np.float32([-0.0, 1.0]))


def test_dtype_and_shape_checked():
    with pytest.raises(AssertionError, match="dtypes differ"):
        rq.testing.assert_quant_equal(np.float32([1.0]), np.float64([1.0]))
    with pytest.raises(AssertionError, match="shapes differ"):
        rq.testing.assert_quant_equal(np.int8([1, 2]), np.int8([1]))


def test_report_steps_ties_and_examples():
    s = 0.25
    x = np.float32([0.125, 0.375, 0.3, 1.0])  # two exact ties, then non-ties
    expected = np.float32([0.0, 0.5, 0.25, 1.0])
    actual = np.float32([0.25, 0.5, 0.5, 1.0])  # one tie moved, one non-tie moved
    with pytest.raises(AssertionError) as info:
        rq.testing.assert_quant_equal(actual, expected, x=x, scale=s, err_msg="kernel k")
    text = str(info.value)
    assert text.startswith("kernel k\n2 of 4 elements differ")
    assert "+1: 2" in text
    assert "1 of 2 differing elements sit on a rounding tie" in text
    assert "at 0: x=0.125 expected=0.0 actual=0.25" in text


def test_integer_codes_steps():
    with pytest.raises(AssertionError, match=r"-2: 1"):
        rq.testing.assert_quant_equal(np.int8([1, 5]), np.int8([3, 5]))


def test_inputs_not_mutated():
    a, b = np.float32([1.0, 2.0]), np.float32([1.0, 3.0])
    a0, b0 = a.copy(), b.copy()
    with pytest.raises(AssertionError):
        rq.testing.assert_quant_equal(a, b, x=a, scale=1.0)
    assert (a == a0).all() and (b == b0).all()
