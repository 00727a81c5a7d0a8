"""The 8-bit integer GEMM path of rq.ops against int64 oracles, bitwise, on adversarial inputs.

Where Numba targets a CPU with AVX-512 VNNI, 8-bit codes take the integer path (``vpdpbusd``, int32
chunks, zero points as rank-1 terms); elsewhere the float GEMM. Every test runs both paths where the
integer one exists, each against an oracle in int64 NumPy arithmetic (exact: no sum here nears 2**63).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refquant as rq
from refquant._kernels import _ops as kernels
from refquant.ops import _int8

I32 = (-(2**31), 2**31 - 1)


@pytest.fixture(params=["int8", "float"])
def path(request, monkeypatch):
    if request.param == "int8" and not kernels.vnni_available():
        pytest.skip("Numba does not target a CPU with AVX-512 VNNI here")
    monkeypatch.setattr(_int8, "_ENABLED", request.param == "int8")
    return request.param


def oracle_matmul(a, b, za, zb):
    za = np.asarray(za, np.int64).reshape(-1, 1) if np.ndim(za) else np.int64(za)
    return (a.astype(np.int64) - za) @ (b.astype(np.int64) - np.asarray(zb, np.int64))


def oracle_conv(x, w, zx, zw, strides, pads, dil, group):
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    mg = m // group
    xp = np.full((n, c, h + pads[0] + pads[2], wd + pads[1] + pads[3]), int(zx), np.int64)
    xp[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + wd] = x
    oh = (xp.shape[2] - (kh - 1) * dil[0] - 1) // strides[0] + 1
    ow = (xp.shape[3] - (kw - 1) * dil[1] - 1) // strides[1] + 1
    wc = w.astype(np.int64) - np.broadcast_to(np.asarray(zw, np.int64), (m,)).reshape(m, 1, 1, 1)
    out = np.zeros((n, m, oh, ow), np.int64)
    for g in range(group):
        chans, outs = slice(g * cg, (g + 1) * cg), slice(g * mg, (g + 1) * mg)
        for p in range(kh):
            for q in range(kw):
                rows = slice(p * dil[0], p * dil[0] + (oh - 1) * strides[0] + 1, strides[0])
                cols = slice(q * dil[1], q * dil[1] + (ow - 1) * strides[1] + 1, strides[1])
                patch = xp[:, chans, rows, cols] - int(zx)
                out[:, outs] += np.einsum("nchw,mc->nmhw", patch, wc[outs, :, p, q])
    return out


DTYPES = [(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8), (np.int8, np.uint8)]


@pytest.mark.parametrize("adt,bdt", DTYPES)
@pytest.mark.parametrize("k", [1, 63, 64, 65, 1000, 4096])
def test_matmul_codes_at_the_extremes(path, adt, bdt, k):
    """Every code and zero point at a range end: each term is +-(2**8 - 1)**2 or the largest raw product."""
    ia, ib = np.iinfo(adt), np.iinfo(bdt)
    a = np.array([[ia.min] * k, [ia.max] * k, [ia.min, ia.max] * (k // 2) + [ia.min] * (k % 2)], adt)
    b = np.array([[ib.min] * 5, [ib.max] * 5] * (k // 2) + [[ib.max, ib.min, ib.max, ib.min, 0]] * (k % 2),
                 bdt)
    b[:, 4] = ib.min
    per_row, per_col = np.array([ia.min, ia.max, 0], adt), np.array([ib.min, ib.max, 0, ib.min, ib.max], bdt)
    for za, zb in [(0, 0), (ia.min, ib.max), (ia.max, ib.min), (per_row, per_col)]:
        want = oracle_matmul(a, b, za, zb)
        got = rq.ops.matmul_integer(a, b, za, zb, dtype=np.int64)
        assert got.dtype == np.int64 and np.array_equal(got, want), (za, zb)


@pytest.mark.parametrize("k,fits", [(65792, True), (65793, True), (65794, False)])
def test_raw_sums_at_the_int32_chunk_bound(path, k, fits):
    """u = 255, s = -128: the raw sum is -32640 * K; 65792 terms is the one-chunk bound, 65793 takes two
    chunks and still fits int32, 65794 does not."""
    a = np.full((4, k), 255, np.uint8)
    b = np.full((k, 4), -128, np.int8)
    want = np.full((4, 4), -32640 * k, np.int64)
    assert np.array_equal(rq.ops.matmul_integer(a, b, dtype=np.int64), want)
    if fits:
        got = rq.ops.matmul_integer(a, b)
        assert got.dtype == np.int32 and np.array_equal(got, want)
    else:
        with pytest.raises(ValueError, match="dtype=int32"):
            rq.ops.matmul_integer(a, b)


@pytest.mark.parametrize("k,fits", [(33025, True), (33026, False)])
def test_centered_sums_at_the_int32_limit(path, k, fits):
    """(255 - 0) * (127 + 128) = 65025 per term: 33025 terms is 2**31 - 33023, one more overflows int32;
    the raw sums and the zero-point terms are each far larger than the result."""
    a = np.full((3, k), 255, np.uint8)
    b = np.full((k, 5), 127, np.int8)
    want = np.full((3, 5), 65025 * k, np.int64)
    assert np.array_equal(rq.ops.matmul_integer(a, b, 0, -128, dtype=np.int64), want)
    if fits:
        assert np.array_equal(rq.ops.matmul_integer(a, b, 0, -128), want)
    else:
        with pytest.raises(ValueError, match="dtype=int32"):
            rq.ops.matmul_integer(a, b, 0, -128)


def _codes(draw, dtype, shape):
    info = np.iinfo(dtype)
    ends = st.sampled_from([info.min, info.min + 1, info.max - 1, info.max, 0])
    values = draw(st.lists(st.one_of(ends, st.integers(info.min, info.max)), min_size=int(np.prod(shape)),
                           max_size=int(np.prod(shape))))
    return np.array(values, dtype).reshape(shape)


@st.composite
def matmul_cases(draw):
    adt, bdt = draw(st.sampled_from(DTYPES))
    m, n = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    k = draw(st.sampled_from([1, 2, 31, 64, 65, 127, 130, 200]))
    a, b = _codes(draw, adt, (m, k)), _codes(draw, bdt, (k, n))
    za = _codes(draw, adt, (m,) if draw(st.booleans()) else ())
    zb = _codes(draw, bdt, (n,) if draw(st.booleans()) else ())
    return a, b, za, zb


@given(matmul_cases())
def test_matmul_property(case):
    a, b, za, zb = case
    want = oracle_matmul(a, b, za, zb)
    outs = []
    for enabled in ([True, False] if kernels.vnni_available() else [False]):
        _int8._ENABLED = enabled
        try:
            outs.append(rq.ops.matmul_integer(a, b, za, zb, dtype=np.int64))
        finally:
            _int8._ENABLED = None
    assert all(np.array_equal(o, want) for o in outs)


def test_matmul_batches_and_layouts(path):
    rng = np.random.default_rng(4)
    a = rng.integers(-128, 128, (2, 3, 5, 70)).astype(np.int8)
    b = rng.integers(0, 256, (3, 70, 6)).astype(np.uint8)
    za, zb = rng.integers(-128, 128, 5).astype(np.int8), rng.integers(0, 256, 6).astype(np.uint8)
    assert np.array_equal(rq.ops.matmul_integer(a, b, za, zb, dtype=np.int64), oracle_matmul(a, b, za, zb))
    assert np.array_equal(rq.ops.matmul_integer(a, b[1], za, zb, dtype=np.int64),
                          oracle_matmul(a, b[1], za, zb))
    at, bt = np.asfortranarray(a[0, 0]), b[0, :, ::-1]  # non-contiguous operands
    assert np.array_equal(rq.ops.matmul_integer(at, bt, za, zb[::-1]), oracle_matmul(at, bt, za, zb[::-1]))


CONVS = [
    dict(c=64, m=64, hw=(12, 11), k=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1), dil=(1, 1), group=1),
    dict(c=4, m=6, hw=(7, 5), k=(3, 2), strides=(2, 1), pads=(1, 0, 2, 1), dil=(1, 2), group=2),
    dict(c=32, m=8, hw=(9, 9), k=(3, 3), strides=(2, 2), pads=(0, 1, 2, 0), dil=(2, 1), group=4),
    dict(c=512, m=5, hw=(4, 4), k=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1), dil=(1, 1), group=1),
    dict(c=3, m=5, hw=(8, 8), k=(7, 7), strides=(1, 1), pads=(3, 3, 3, 3), dil=(1, 1), group=1),
]


@pytest.mark.parametrize("case", CONVS)
@pytest.mark.parametrize("xdt,wdt", DTYPES)
def test_conv_against_int64_oracle(path, case, xdt, wdt):
    rng = np.random.default_rng([case["c"], case["m"], np.dtype(xdt).num, np.dtype(wdt).num])
    ix, iw = np.iinfo(xdt), np.iinfo(wdt)
    x = rng.integers(ix.min, ix.max + 1, (2, case["c"]) + case["hw"]).astype(xdt)
    w = rng.integers(iw.min, iw.max + 1, (case["m"], case["c"] // case["group"]) + case["k"]).astype(wdt)
    x[0] = ix.max  # one image at the range end
    w[0] = iw.min
    zw = rng.integers(iw.min, iw.max + 1, case["m"]).astype(wdt)
    zw[1] = iw.max
    for zx in (ix.min, ix.max):
        got = rq.ops.conv_integer(x, w, xdt(zx), zw, strides=case["strides"], pads=case["pads"],
                                  dilations=case["dil"], group=case["group"], dtype=np.int64)
        want = oracle_conv(x, w, zx, zw, case["strides"], case["pads"], case["dil"], case["group"])
        assert np.array_equal(got, want), zx


def test_conv_near_int32_limit(path):
    """K = 33025 taps of 65025 each (C = 3670 * 9 taps - 5 zero-point taps): the sum sits just below 2**31."""
    x = np.full((1, 3670, 3, 3), 255, np.uint8)
    w = np.full((2, 3670, 3, 3), 127, np.int8)
    w[:, 0, 0, :] = -128  # three taps at zero (w - zw = 0)
    w[:, 0, 1, :2] = -128
    want = oracle_conv(x, w, 0, -128, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    assert int(want.max()) == 65025 * (3670 * 9 - 5) and want.max() <= I32[1]
    got = rq.ops.conv_integer(x, w, 0, np.int8(-128))
    assert got.dtype == np.int32 and np.array_equal(got, want)


def test_linear_is_the_requantized_oracle_sum(path):
    """linear (fbgemm) on the benchmark's kind of inputs: the convention applied to the exact sums."""
    rng = np.random.default_rng(9)
    x = rng.integers(0, 256, (8, 200), dtype=np.uint8)
    w = rng.integers(-128, 128, (16, 200), dtype=np.int8)
    acc = oracle_matmul(x, w.T, 128, 0)
    m = np.float32(0.02) * np.float32(0.004) / np.float32(0.9)
    want = rq.ops.requantize(acc, m, 120, qmin=0, qmax=255, convention="fbgemm")
    assert np.array_equal(rq.ops.linear(x, 0.02, 128, w, 0.004, 0, None, 0.9, 120), want)


def test_path_choice_follows_the_cpu():
    assert _int8.enabled() == kernels.vnni_available()


def _both_paths(fn):
    """fn() with the integer path (fused requantization where the row is a float32 row) and with the
    float GEMM followed by the separate requantization."""
    outs = []
    for enabled in ([True, False] if kernels.vnni_available() else [False]):
        _int8._ENABLED = enabled
        try:
            outs.append(fn())
        finally:
            _int8._ENABLED = None
    return outs


@pytest.mark.parametrize("convention", ["fbgemm", "onnxruntime", "xnnpack", "gemmlowp", "exact"])
@pytest.mark.parametrize("bias_kind", [None, "float", "int"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_operators_fused_requantization_equals_the_separate_one(convention, bias_kind, per_channel):
    rng = np.random.default_rng([len(convention), per_channel, 0 if bias_kind is None else len(bias_kind)])
    n, k = 70, 300
    x = rng.integers(0, 256, (2, 3, k)).astype(np.uint8)
    x[0, 0] = 255
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    ws = 2.0 ** rng.uniform(-10, -6, n) if per_channel else 2.0**-8
    wz = rng.integers(-3, 4, n) if per_channel else 2
    bias = {None: None, "float": rng.normal(0, 2, n).astype(np.float32),
            "int": rng.integers(-5000, 5000, n).astype(np.int32)}[bias_kind]
    if bias_kind == "float" and rq.ops.conventions.get(convention).bias == "int32":
        bias = None  # these rows take int32 codes only
    axis = 0 if per_channel else None
    ys = float(np.sqrt(k)) * 128 * 80 * 0.03 * float(np.max(ws)) / 100  # most outputs inside the range
    for qmin in (0, 100):  # with and without a fused relu
        kw = dict(axis=axis, qmin=qmin, qmax=255, convention=convention)
        outs = _both_paths(lambda kw=kw: rq.ops.linear(x, 0.03, 100, w, ws, wz, bias, ys, 100, **kw))
        assert all(o.dtype == np.uint8 and np.array_equal(o, outs[0]) for o in outs)
        assert np.count_nonzero((outs[0] > qmin) & (outs[0] < 255)) > outs[0].size // 4
    xc = rng.integers(-128, 128, (2, 16, 9, 7)).astype(np.int8)
    wc = rng.integers(-128, 128, (n, 16, 3, 3)).astype(np.int8)
    kw = dict(padding=(1, 2), stride=(2, 1), axis=axis, qmin=-128, qmax=127, convention=convention)
    outs = _both_paths(lambda: rq.ops.conv2d(xc, 0.03, -5, wc, ws, wz, bias, ys / 2, 3, **kw))
    assert all(o.dtype == np.int8 and np.array_equal(o, outs[0]) for o in outs)
    assert np.count_nonzero((outs[0] > -128) & (outs[0] < 127)) > outs[0].size // 4


def test_fused_requantization_reports_int32_overflow_like_the_separate_one():
    x = np.full((1, 33026), 255, np.uint8)
    w = np.full((2, 33026), 127, np.int8)
    xc, wc = x.reshape(1, 33026, 1, 1), w.reshape(2, 33026, 1, 1)
    for call in (lambda: rq.ops.linear(x, 1.0, 0, w, 1.0, -128, None, 1.0, 0),
                 lambda: rq.ops.conv2d(xc, 1.0, 0, wc, 1.0, -128, None, 1.0, 0)):
        messages = []
        for enabled in ([True, False] if kernels.vnni_available() else [False]):
            _int8._ENABLED = enabled
            try:
                with pytest.raises(ValueError, match="does not fit the int32 accumulator") as info:
                    call()
                messages.append(str(info.value))
            finally:
                _int8._ENABLED = None
        assert len(set(messages)) == 1 and str(65025 * 33026) in messages[0]
