"""Hypothesis properties of rq.ops: exact sums, range, monotonicity, per-channel slices, no mutation."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import refquant as rq
from tests.references import exact_requantize

CODE_DTYPES = [np.uint8, np.int8, np.uint16, np.int16]
ROWS = sorted(rq.ops.conventions.names())


@st.composite
def code_arrays(draw, shape):
    dt = draw(st.sampled_from(CODE_DTYPES))
    info = np.iinfo(dt)
    ends = st.sampled_from([int(info.min), int(info.max), 0])
    vals = draw(
        st.lists(
            st.one_of(ends, st.integers(int(info.min), int(info.max))),
            min_size=int(np.prod(shape)),
            max_size=int(np.prod(shape)),
        )
    )
    zp = draw(st.one_of(ends, st.integers(int(info.min), int(info.max))))
    return np.asarray(vals, dt).reshape(shape), zp


@given(st.integers(1, 4), st.integers(1, 40), st.integers(1, 4), st.data())
def test_matmul_integer_equals_int64_matmul(m, k, n, data):
    a, za = data.draw(code_arrays((m, k)))
    b, zb = data.draw(code_arrays((k, n)))
    a0, b0 = a.copy(), b.copy()
    got = rq.ops.matmul_integer(a, b, za, zb, dtype=np.int64)
    want = (a.astype(np.int64) - za) @ (b.astype(np.int64) - zb)
    assert np.array_equal(got, want)
    assert np.array_equal(a, a0) and np.array_equal(b, b0)


@given(
    st.integers(1, 3),
    st.integers(3, 7),
    st.integers(1, 3),
    st.integers(1, 2),
    st.integers(0, 2),
    st.integers(1, 2),
    st.data(),
)
def test_conv_integer_equals_per_tap_sum(c, hw, k, stride, pad, dil, data):
    x, zx = data.draw(code_arrays((1, c, hw, hw)))
    w, zw = data.draw(code_arrays((2, c, k, k)))
    if hw + 2 * pad < (k - 1) * dil + 1:
        return
    got = rq.ops.conv_integer(
        x, w, zx, zw, strides=[stride] * 2, pads=[pad] * 4, dilations=[dil] * 2, dtype=np.int64
    )
    xp = np.pad(x.astype(np.int64) - zx, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    oh = (hw + 2 * pad - (k - 1) * dil - 1) // stride + 1
    want = np.zeros((1, 2, oh, oh), np.int64)
    for p in range(k):
        for q in range(k):
            tap = xp[
                :,
                :,
                p * dil : p * dil + (oh - 1) * stride + 1 : stride,
                q * dil : q * dil + (oh - 1) * stride + 1 : stride,
            ]
            want += np.einsum("nchw,mc->nmhw", tap, w[:, :, p, q].astype(np.int64) - zw)
    assert np.array_equal(got, want)


multipliers = st.one_of(
    st.floats(2.0**-20, 2.0**4, allow_nan=False), st.integers(-20, 4).map(lambda e: 2.0**e)
)


@given(
    st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=50),
    multipliers,
    st.integers(-128, 127),
    st.sampled_from(ROWS),
)
def test_requantize_in_range_and_monotone(acc, m, zp, row):
    a = np.sort(np.asarray(acc, np.int64)).astype(np.int32)
    a0 = a.copy()
    try:
        y = rq.ops.requantize(a, m, zp, qmin=-128, qmax=127, convention=row)
    except ValueError as exc:  # fixed point: acc * 2**shift beyond int32
        assert "overflows int32" in str(exc)
        return
    assert y.dtype == np.int8 and np.array_equal(a, a0)
    if row != "fbgemm":  # fbgemm sends products at or beyond 2**31 to INT32_MIN, not monotone there
        assert np.all(np.diff(y.astype(np.int64)) >= 0)


@given(st.integers(-(2**20), 2**20), st.integers(-30, 4), st.integers(-128, 127))
def test_exact_requantize_on_ties(k, e, zp):
    """acc * 2**e exactly on a half-integer (or an integer): exact rounds half to even."""
    m = 2.0**e
    acc = int(np.floor((k + 0.5) / m)) if e < 0 else k
    got = rq.ops.requantize(np.int64([acc]), m, zp, qmin=-(2**31), qmax=2**31 - 1)
    assert got.tolist() == [exact_requantize(acc, m, 1.0, 0.0, 1.0, zp, -(2**31), 2**31 - 1)]


@given(st.sampled_from(["fbgemm", "exact", "onnxruntime"]), st.integers(0, 2**32 - 1))
def test_linear_per_channel_equals_per_tensor_slices(row, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (3, 11)).astype(np.uint8)
    w = rng.integers(-128, 128, (4, 11)).astype(np.int8)
    ws = 2.0 ** rng.uniform(-9, -3, 4)
    bias = rng.integers(-500, 500, 4).astype(np.int32)
    full = rq.ops.linear(x, 0.02, 100, w, ws, 0, bias, 0.3, 128, axis=0, convention=row)
    for j in range(4):
        one = rq.ops.linear(x, 0.02, 100, w[j : j + 1], ws[j], 0, bias[j : j + 1], 0.3, 128, convention=row)
        assert np.array_equal(full[:, j : j + 1], one)
