"""Affine API: validation, layouts, immutability, granularity and the algebraic properties."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refquant as rq
from tests.references import assert_bitwise_equal


def test_formats():
    assert (rq.int8.qmin, rq.int8.qmax, rq.uint8.qmax, rq.int4.qmin, rq.uint2.qmax) == (-128, 127, 255, -8, 3)
    assert (rq.int32.qmin, rq.int32.qmax) == (-(2**31), 2**31 - 1)
    assert (rq.IntFormat(8, narrow=True).qmin, rq.IntFormat(1).qmin, rq.IntFormat(1).qmax) == (-127, -1, 0)
    assert rq.IntFormat(16, signed=False).dtype == np.uint16
    for bits in (0, 17, 31, 64):
        with pytest.raises(ValueError, match="bits"):
            rq.IntFormat(bits)
    with pytest.raises(TypeError, match="bits"):
        rq.IntFormat(8.0)


X = np.float32([0.1, -0.2, 0.3])


@pytest.mark.parametrize("kwargs,error,match", [
    ({"scale": 0.0}, ValueError, "scale must be finite and > 0"),
    ({"scale": -0.1}, ValueError, "scale"),
    ({"scale": np.nan}, ValueError, "scale"),
    ({"scale": np.inf}, ValueError, "scale"),
    ({"qmin": 5, "qmax": 2, "fmt": None}, ValueError, "qmin must be <= qmax"),
    ({"qmin": 0, "qmax": 255, "fmt": rq.uint8}, ValueError, "not both"),
    ({"qmin": None, "qmax": None, "fmt": None}, ValueError, "qmin and qmax, or fmt"),
    ({"zero_point": 300}, ValueError, "zero_point 300 is outside"),
    ({"zero_point": 1.5}, ValueError, "zero_point must be an integer"),
    ({"scale": np.float32([0.1, 0.2]), "axis": 0}, ValueError, "length x.shape\\[0\\] = 3"),
    ({"scale": np.float32([0.1, 0.2, 0.3]), "axis": 1}, ValueError, "axis=1 is out of range"),
    ({"scale": np.float32([0.1]), "block_size": (2,)}, ValueError, "block_size\\[0\\] = 2"),
    ({"convention": "tensorflow"}, ValueError, "exact, torch.fake_quantize"),
    ({"rounding": "nearest"}, ValueError, "half_even, half_away"),
])
def test_bad_arguments_name_themselves(kwargs, error, match):
    args = {"scale": 0.1, "zero_point": 0, "qmin": 0, "qmax": 255, "fmt": None}
    args.update(kwargs)
    scale, zp = args.pop("scale"), args.pop("zero_point")
    with pytest.raises(error, match=match):
        rq.fake_quantize(X, scale, zp, **args)


@pytest.mark.parametrize("bad", [np.int32([1, 2]), np.complex64([1j]), np.array([1.0], object),
                                 np.array([True])])
def test_non_float_input_is_refused(bad):
    with pytest.raises(TypeError, match="x must be a float16, bfloat16, float32 or float64"):
        rq.fake_quantize(bad, 0.1, 0, fmt=rq.int8)


@pytest.mark.parametrize("rounding", rq.ROUNDING_MODES)
@pytest.mark.parametrize("convention", ["exact", "torch.fake_quantize", "onnx", "torchao"])
def test_huge_quotients_saturate_under_every_rounding(rounding, convention):
    x = np.float32([1e30, -1e30, 3e38, -3e38, np.inf, -np.inf, 1e10, -1e10])
    q = rq.quantize(x, np.float32(0.1), 0, qmin=-128, qmax=127, rounding=rounding,
                    convention=convention, rng=0)
    assert q.tolist() == [127, -128] * 4


@pytest.mark.parametrize("convention,qmin,qmax", [
    (c, lo, hi) for c in rq.conventions.names() for lo, hi in [(-8, 0), (-3, -1), (1, 5)]
    if c != "modelopt" or lo <= 0 < hi  # modelopt: no zero point, amax = s * qmax > 0
])
def test_ranges_that_exclude_or_end_at_zero(convention, qmin, qmax):
    """Far from ties every convention gives the real-number codes, whatever side of 0 the range
    lies on."""
    x = np.float32([-4.1, -2.9, -1.2, -0.6, -0.2, 0.2, 0.6, 1.2, 2.9, 4.1])
    zp = 0 if qmin <= 0 <= qmax else qmin
    q = rq.quantize(x, np.float32(0.5), zp, qmin=qmin, qmax=qmax, convention=convention)
    expected = np.clip(np.rint(x.astype(np.float64) / 0.5) + zp, qmin, qmax)
    assert q.tolist() == expected.astype(int).tolist()


def test_amax_based_convention_needs_a_positive_qmax():
    with pytest.raises(ValueError, match="needs qmax > 0"):
        rq.quantize(np.float32([-1.0]), 0.5, 0, qmin=-8, qmax=0, convention="modelopt")


def test_backend_input_dtypes_are_enforced():
    with pytest.raises(TypeError, match="torch.quantize.*float32.*got float64"):
        rq.quantize(X.astype(np.float64), 0.1, 0, fmt=rq.uint8, convention="torch.quantize")


def test_shapes_strides_and_byte_order():
    x = np.linspace(-3, 3, 60, dtype=np.float32).reshape(6, 10)
    ref = rq.fake_quantize(x, 0.07, 2, fmt=rq.int8)
    assert_bitwise_equal(rq.fake_quantize(x[:, ::-1], 0.07, 2, fmt=rq.int8), ref[:, ::-1])
    assert_bitwise_equal(rq.fake_quantize(x.T, 0.07, 2, fmt=rq.int8), ref.T)
    assert_bitwise_equal(rq.fake_quantize(x[::2, 1::3], 0.07, 2, fmt=rq.int8), ref[::2, 1::3])
    big = x.astype(">f4")
    assert_bitwise_equal(rq.fake_quantize(big, 0.07, 2, fmt=rq.int8), ref)
    assert rq.fake_quantize(np.float32(0.3), 0.1, 0, fmt=rq.int8).shape == ()
    empty = rq.quantize(np.empty((0, 3), np.float16), 0.1, 0, fmt=rq.uint4)
    assert empty.shape == (0, 3) and empty.dtype == np.uint8
    assert rq.fake_quantize(np.empty(0, np.float64), 0.1, 0, fmt=rq.int8).dtype == np.float64


def test_inputs_are_never_modified():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    s, z = np.float32([0.1, 0.2, 0.3, 0.4]), np.int32([0, 1, 2, 3])
    copies = [a.copy() for a in (x, s, z)]
    rq.fake_quantize(x, s, z, fmt=rq.int8, axis=1, convention="torch.fake_quantize")
    q = rq.quantize(x, s, z, fmt=rq.int8, axis=1)
    q_copy = q.copy()
    rq.dequantize(q, s, z, axis=1)
    for a, b in zip((x, s, z, q), (*copies, q_copy)):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("convention", ["exact", "torch.fake_quantize", "onnx", "torchao"])
def test_per_channel_equals_per_tensor_on_each_slice(convention):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 7, 3)).astype(np.float32)
    s = rng.uniform(0.01, 0.2, 7).astype(np.float32)
    z = rng.integers(-20, 20, 7).astype(np.int32)
    y = rq.fake_quantize(x, s, z, fmt=rq.int8, axis=1, convention=convention)
    for c in range(7):
        one = rq.fake_quantize(x[:, c], s[c], z[c], fmt=rq.int8, convention=convention)
        assert_bitwise_equal(y[:, c], one, f"channel {c}")


def test_per_block_equals_per_tensor_on_each_block():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 12)).astype(np.float32)
    s = rng.uniform(0.01, 0.2, (2, 3)).astype(np.float32)
    z = rng.integers(-5, 5, (2, 3))
    q = rq.quantize(x, s, z, fmt=rq.int8, block_size=(2, 4))
    for i in range(2):
        for j in range(3):
            block = x[2 * i:2 * i + 2, 4 * j:4 * j + 4]
            expected = rq.quantize(block, s[i, j], z[i, j], fmt=rq.int8)
            assert np.array_equal(q[2 * i:2 * i + 2, 4 * j:4 * j + 4], expected)


finite32 = st.floats(-1e4, 1e4, width=32, allow_subnormal=True)
scales = st.floats(1e-4, 10.0).map(lambda v: float(np.float32(v)))
formats = st.sampled_from([rq.int8, rq.uint8, rq.int4, rq.IntFormat(8, narrow=True), rq.int16])


@st.composite
def cases(draw):
    fmt = draw(formats)
    x = np.float32(draw(st.lists(finite32, min_size=1, max_size=40)))
    z = draw(st.integers(fmt.qmin, fmt.qmax))
    return x, draw(scales), z, fmt


@given(cases())
def test_fake_quantize_is_idempotent(case):
    x, s, z, fmt = case
    y = rq.fake_quantize(x, s, z, fmt=fmt)
    assert_bitwise_equal(rq.fake_quantize(y, s, z, fmt=fmt), y)


@given(cases())
def test_fake_quantize_equals_dequantize_of_quantize(case):
    x, s, z, fmt = case
    y = rq.fake_quantize(x, s, z, fmt=fmt)
    assert_bitwise_equal(rq.dequantize(rq.quantize(x, s, z, fmt=fmt), s, z), y)


@given(cases())
def test_error_is_at_most_half_a_step_inside_the_range(case):
    x, s, z, fmt = case
    y = rq.fake_quantize(x.astype(np.float64), s, z, fmt=fmt)
    inside = (x >= (fmt.qmin - z) * s) & (x <= (fmt.qmax - z) * s)
    err = np.abs(y - x.astype(np.float64))[inside]
    assert (err <= s / 2 * (1 + 1e-12)).all()


@given(cases())
def test_quantize_is_monotone(case):
    x, s, z, fmt = case
    order = np.argsort(x, kind="stable")
    q = rq.quantize(x[order], s, z, fmt=fmt).astype(np.int64)
    assert (np.diff(q) >= 0).all()


@given(st.lists(finite32, min_size=1, max_size=40), scales)
def test_symmetric_format_is_odd(values, s):
    x = np.float32(values)
    fmt = rq.IntFormat(8, narrow=True)
    assert np.array_equal(rq.quantize(-x, s, 0, fmt=fmt), -rq.quantize(x, s, 0, fmt=fmt))


def test_import_leaves_torch_and_numba_out():
    code = ("import sys, refquant; "
            "print('torch' in sys.modules, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("convention", ["exact", "torch.fake_quantize", "onnx", "torchao", "tflite"])
@pytest.mark.parametrize("dtype_name", ["float32", "float16", "bfloat16"])
def test_out_is_filled_with_the_same_bits(convention, dtype_name):
    conv = rq.conventions.get(convention)
    if dtype_name not in conv.input_dtypes:
        pytest.skip(f"{convention} takes no {dtype_name}")
    if dtype_name == "bfloat16":
        dtype = np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    else:
        dtype = np.dtype(dtype_name)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((70, 1030)) * 3).astype(dtype)  # past the parallel threshold
    x.flat[::997] = np.float32(np.nan)
    before = x.copy()
    for per_channel in (False, True):
        args = (x, np.float32(0.05) * (1 + np.arange(70) % 4).astype(np.float32), np.arange(70) % 5) \
            if per_channel else (x, 0.05, 3)
        kw = {"axis": 0} if per_channel else {}
        want_fq = rq.fake_quantize(*args, fmt=rq.uint8, convention=conv, **kw)
        out = np.full(x.shape, 7, x.dtype)
        assert rq.fake_quantize(*args, fmt=rq.uint8, convention=conv, out=out, **kw) is out
        assert_bitwise_equal(out, want_fq)
        if conv.nan == "error":
            continue
        want_q = rq.quantize(*args, fmt=rq.uint8, convention=conv, **kw)
        codes = np.full(x.shape, 7, np.uint8)
        assert rq.quantize(*args, fmt=rq.uint8, convention=conv, out=codes, **kw) is codes
        assert_bitwise_equal(codes, want_q)
    assert_bitwise_equal(x, before)


def test_out_for_float_formats():
    x = np.float32([0.1, -2.5, 448.0, 1e6])
    out = np.empty(4, np.float32)
    assert rq.fake_quantize(x, 1.0, fmt=rq.float8_e4m3fn, out=out) is out
    assert_bitwise_equal(out, rq.fake_quantize(x, 1.0, fmt=rq.float8_e4m3fn))
    codes = np.empty(4, np.uint8)
    assert rq.quantize(x, 1.0, fmt=rq.float8_e4m3fn, out=codes) is codes
    assert_bitwise_equal(codes, rq.quantize(x, 1.0, fmt=rq.float8_e4m3fn))


@pytest.mark.parametrize("make_out,error,match", [
    (lambda x: [0.0] * 4, TypeError, "out must be a NumPy array"),
    (lambda x: np.empty(4, np.float64), ValueError, "out must have dtype float32 and shape"),
    (lambda x: np.empty((2, 2), np.float32), ValueError, "shape"),
    (lambda x: np.empty(8, np.float32)[::2], ValueError, "C-contiguous"),
    (lambda x: np.frombuffer(bytes(16), np.float32), ValueError, "writeable"),
    (lambda x: x, ValueError, "out must not share memory with x"),
])
def test_out_is_checked(make_out, error, match):
    x = np.float32([0.1, -0.2, 0.3, 0.4])
    before = x.copy()
    with pytest.raises(error, match=match):
        rq.fake_quantize(x, 0.1, 0, fmt=rq.int8, out=make_out(x))
    assert_bitwise_equal(x, before)
    with pytest.raises(ValueError, match="dtype int8"):
        rq.quantize(x, 0.1, 0, fmt=rq.int8, out=np.empty(4, np.int16))
