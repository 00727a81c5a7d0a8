"""Repeated affine calls reuse their validated arguments (refquant.affine memoizes Specs and
Plans): results still follow every argument's value, type, dtype and sign, and a refused
argument is refused every time."""

import numpy as np
import pytest

import refquant as rq
from tests.references import assert_bitwise_equal, exact_code, exact_fake

X = np.float32([0.26, -0.74, 1.0e-3, 3.3, -0.049, 0.051, 100.0])


def _expected_fake(scale, zp, qmin=-8, qmax=7):
    return np.float32([exact_fake(float(v), scale, zp, qmin, qmax, "float32") for v in X])


def test_an_array_scale_written_in_place_is_read_again():
    s = np.array(0.1, dtype=np.float64)
    assert_bitwise_equal(rq.fake_quantize(X, s, 0, qmin=-8, qmax=7), _expected_fake(0.1, 0))
    s[...] = 0.3
    assert_bitwise_equal(rq.fake_quantize(X, s, 0, qmin=-8, qmax=7), _expected_fake(0.3, 0))
    per_channel = np.array([0.1, 0.2], dtype=np.float32)
    x2 = np.stack([X, X])
    first = rq.quantize(x2, per_channel, 0, qmin=-8, qmax=7, axis=0)
    per_channel[1] = 0.05
    second = rq.quantize(x2, per_channel, 0, qmin=-8, qmax=7, axis=0)
    expected = [exact_code(float(v), float(np.float32(0.05)), 0, -8, 7) for v in X]
    assert second[1].tolist() == expected and not np.array_equal(first[1], second[1])


def test_types_dtypes_and_signs_are_told_apart():
    # a Python float scale takes x's dtype under a promoting convention, a float64 array does not
    conv = "torch.fake_quantize"
    weak = rq.fake_quantize(X.astype(np.float16), 0.1, 0, qmin=-8, qmax=7, convention=conv)
    strong = rq.fake_quantize(X.astype(np.float16), np.array(0.1), 0, qmin=-8, qmax=7,
                              convention=conv)
    again = rq.fake_quantize(X.astype(np.float16), 0.1, 0, qmin=-8, qmax=7, convention=conv)
    assert weak.dtype == again.dtype and np.array_equal(weak.view(np.int16), again.view(np.int16))
    assert strong.dtype == weak.dtype
    # an integer zero point is accepted, a bool never, before or after
    rq.fake_quantize(X, 0.1, 1, qmin=-8, qmax=7)
    for _ in range(2):
        with pytest.raises(TypeError, match="zero_point"):
            rq.fake_quantize(X, 0.1, True, qmin=-8, qmax=7)
    # a float zero point of -0.0 after +0.0 (equal as numbers, not as keys): each gives what a
    # first call gives
    from refquant import affine

    conv = rq.conventions.get("torch.fake_quantize").replace(name="memo.float_zp",
                                                             float_zero_point=True)
    x = np.float32([-0.01, 0.0, -0.0, 0.04, -0.06])
    for zp in (0.0, -0.0, 0.0):
        memoized = rq.fake_quantize(x, np.float32(0.1), zp, qmin=-8, qmax=7, convention=conv)
        affine._PLANS.clear()
        first = rq.fake_quantize(x, np.float32(0.1), zp, qmin=-8, qmax=7, convention=conv)
        assert_bitwise_equal(memoized, first)


def test_invalid_values_raise_every_time():
    for _ in range(2):
        with pytest.raises(ValueError, match="scale"):
            rq.fake_quantize(X, np.nan, 0, qmin=-8, qmax=7)
        with pytest.raises(ValueError, match="scale"):
            rq.fake_quantize(X, 0.0, 0, qmin=-8, qmax=7)
        with pytest.raises(ValueError, match="outside"):
            rq.fake_quantize(X, 0.1, 9, qmin=-8, qmax=7)
        with pytest.raises(ValueError, match="block_size"):
            rq.fake_quantize(np.stack([X[:6], X[:6]]), np.full((2, 3), 0.1), 0, qmin=-8, qmax=7,
                             block_size=[1, 2.0])
    rq.fake_quantize(np.stack([X[:6], X[:6]]), np.full((2, 3), 0.1), 0, qmin=-8, qmax=7,
                     block_size=[1, 2])
    with pytest.raises(ValueError, match="block_size"):
        rq.fake_quantize(np.stack([X[:6], X[:6]]), np.full((2, 3), 0.1), 0, qmin=-8, qmax=7,
                         block_size=[1, 2.0])
