"""rq.ops core: exact accumulation, the fixed-point and exact requantizations against oracles, errors."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refquant as rq
from tests.references import (
    exact_requantize,
    gemmlowp_rdbpot,
    gemmlowp_srdhm,
    tflite_mbqm,
    tflite_mbqm_single,
    tflite_quantize_multiplier,
)

I32 = (-(2**31), 2**31 - 1)


# ---------------------------------------------------------------- accumulation


def naive_matmul(a, b, za, zb):
    m, k = a.shape
    n = b.shape[1]
    za = np.broadcast_to(za, (m,))
    zb = np.broadcast_to(zb, (n,))
    return [
        [sum((int(a[i, t]) - int(za[i])) * (int(b[t, j]) - int(zb[j])) for t in range(k)) for j in range(n)]
        for i in range(m)
    ]


@pytest.mark.parametrize(
    "adt,bdt,k",
    [
        (np.uint8, np.int8, 5),
        (np.int8, np.int8, 1),
        (np.uint8, np.uint8, 300),
        (np.int16, np.int16, 40),
        (np.int32, np.int8, 6),
        (np.uint16, np.int16, 3000),
    ],
)
def test_matmul_integer_against_python_ints(adt, bdt, k):
    """Small and large products: float32, chunked float32, chunked float64, int64 and object paths."""
    rng = np.random.default_rng(k)
    ia, ib = np.iinfo(adt), np.iinfo(bdt)
    a = rng.integers(ia.min, int(ia.max) + 1, (3, k)).astype(adt)
    b = rng.integers(ib.min, int(ib.max) + 1, (k, 4)).astype(bdt)
    a[0] = ia.max
    b[:, 0] = ib.min
    za = rng.integers(ia.min, int(ia.max) + 1, 3).astype(adt)
    zb = np.asarray(ib.max, bdt)
    want = naive_matmul(a, b, za, zb)
    got = rq.ops.matmul_integer(a, b, za, zb, dtype=np.int64)
    assert got.dtype == np.int64 and got.tolist() == want
    if all(I32[0] <= v <= I32[1] for row in want for v in row):
        assert rq.ops.matmul_integer(a, b, za, zb).tolist() == want
    else:
        with pytest.raises(ValueError, match="dtype=int32"):
            rq.ops.matmul_integer(a, b, za, zb)


def test_matmul_integer_huge_products_use_python_ints():
    a = np.full((1, 2), 2**31 - 1, np.int32)
    b = np.full((2, 1), -(2**31), np.int32)
    want = 2 * (2**31 - 1) * -(2**31)
    assert rq.ops.matmul_integer(a, b, dtype=np.int64).tolist() == [[want]]
    with pytest.raises(ValueError, match="dtype=int64"):
        rq.ops.matmul_integer(
            np.full((1, 3), 2**31 - 1, np.int32), np.full((3, 1), -(2**31), np.int32), dtype=np.int64
        )


def test_matmul_integer_batches_and_vectors():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 3, 4, 5)).astype(np.uint8)
    b = rng.integers(-128, 128, (3, 5, 2)).astype(np.int8)
    got = rq.ops.matmul_integer(a, b, 7, -2)
    want = (a.astype(np.int64) - 7) @ (b.astype(np.int64) + 2)
    assert got.shape == want.shape and np.array_equal(got, want)
    v = rq.ops.matmul_integer(a[0, 0, 0], b[0], 7)
    assert v.shape == (2,) and np.array_equal(v, (a[0, 0, 0].astype(np.int64) - 7) @ b[0])


def naive_conv(x, w, zx, zw, strides, pads, dil, group):
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    zw = np.broadcast_to(zw, (m,))
    xp = np.full((n, c, h + pads[0] + pads[2], wd + pads[1] + pads[3]), zx, np.int64)
    xp[:, :, pads[0] : pads[0] + h, pads[1] : pads[1] + wd] = x
    oh = (xp.shape[2] - (kh - 1) * dil[0] - 1) // strides[0] + 1
    ow = (xp.shape[3] - (kw - 1) * dil[1] - 1) // strides[1] + 1
    out = np.zeros((n, m, oh, ow), object)
    for b, o, i, j in itertools.product(range(n), range(m), range(oh), range(ow)):
        g = o // (m // group)
        s = 0
        for ci, p, q in itertools.product(range(cg), range(kh), range(kw)):
            xv = int(xp[b, g * cg + ci, i * strides[0] + p * dil[0], j * strides[1] + q * dil[1]])
            s += (xv - int(zx)) * (int(w[o, ci, p, q]) - int(zw[o]))
        out[b, o, i, j] = s
    return out.tolist()


@pytest.mark.parametrize(
    "case",
    [
        dict(c=1, m=1, hw=(4, 4), k=(2, 2), strides=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1), group=1),
        dict(c=4, m=6, hw=(7, 5), k=(3, 2), strides=(2, 1), pads=(1, 0, 2, 1), dil=(1, 2), group=2),
        dict(c=3, m=3, hw=(6, 6), k=(3, 3), strides=(1, 2), pads=(1, 1, 1, 1), dil=(2, 1), group=3),
    ],
)
def test_conv_integer_against_loops(case):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (2, case["c"]) + case["hw"]).astype(np.uint8)
    w = rng.integers(-128, 128, (case["m"], case["c"] // case["group"]) + case["k"]).astype(np.int8)
    zw = rng.integers(-128, 128, case["m"]).astype(np.int8)
    got = rq.ops.conv_integer(
        x, w, 17, zw, strides=case["strides"], pads=case["pads"], dilations=case["dil"], group=case["group"]
    )
    want = naive_conv(x, w, 17, zw, case["strides"], case["pads"], case["dil"], case["group"])
    assert got.dtype == np.int32 and got.tolist() == want


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_conv_integer_auto_pad(auto_pad):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (1, 2, 5, 6)).astype(np.uint8)
    w = rng.integers(-128, 128, (2, 2, 2, 3)).astype(np.int8)
    got = rq.ops.conv_integer(x, w, 3, auto_pad=auto_pad, strides=[2, 1])
    pads = {"VALID": (0, 0, 0, 0), "SAME_UPPER": (0, 1, 1, 1), "SAME_LOWER": (1, 1, 0, 1)}[auto_pad]
    assert got.tolist() == naive_conv(x, w, 3, 0, (2, 1), pads, (1, 1), 1)


def test_conv_integer_1d_and_3d():
    rng = np.random.default_rng(3)
    x1 = rng.integers(0, 256, (1, 2, 9)).astype(np.uint8)
    w1 = rng.integers(-128, 128, (3, 2, 3)).astype(np.int8)
    got = rq.ops.conv_integer(x1, w1, 5, pads=[1, 1])
    want = naive_conv(x1[..., None], w1[..., None], 5, 0, (1, 1), (1, 0, 1, 0), (1, 1), 1)
    assert got.tolist() == np.asarray(want)[..., 0].tolist()
    x3 = rng.integers(0, 256, (1, 1, 3, 4, 4)).astype(np.uint8)
    w3 = rng.integers(-128, 128, (1, 1, 2, 2, 2)).astype(np.int8)
    got3 = rq.ops.conv_integer(x3, w3)
    assert got3.shape == (1, 1, 2, 3, 3)
    for i, j, k in itertools.product(range(2), range(3), range(3)):
        want = int((x3[0, 0, i : i + 2, j : j + 2, k : k + 2].astype(np.int64) * w3[0, 0]).sum())
        assert got3[0, 0, i, j, k] == want


def test_accumulator_overflow_names_dtype():
    a = np.full((1, 70000), 255, np.uint8)
    b = np.full((70000, 1), 127, np.int8)
    with pytest.raises(ValueError, match=r"does not fit the accumulator dtype=int32"):
        rq.ops.matmul_integer(a, b)
    assert rq.ops.matmul_integer(a, b, dtype=np.int64).item() == 70000 * 255 * 127


# ---------------------------------------------------------------- fixed point


def test_quantize_multiplier_golden_and_oracle():
    got = [tuple(map(int, rq.ops.quantize_multiplier(m))) for m in (0.5, 1.0, 0.75, 0.125, 2 - 1e-11)]
    assert got == [(2**30, 0), (2**30, 1), (1610612736, 0), (2**30, -2), (2**30, 2)]
    rng = np.random.default_rng(0)
    ms = np.concatenate(
        [
            2.0 ** rng.uniform(-40, 20, 3000),
            [2.0**-32, 2.0**-31.5, 2.0**-31, 1 - 2.0**-33, 1 - 2.0**-32, np.nextafter(2.0**-32, 0)],
        ]
    )
    q, s = rq.ops.quantize_multiplier(ms)
    assert q.dtype == np.int32 and s.dtype == np.int32
    assert list(zip(q.tolist(), s.tolist())) == [tflite_quantize_multiplier(float(m)) for m in ms]


def test_srdhm_and_rdbpot_oracles_agree_with_the_published_semantics():
    """The literal oracles against the stated exact semantics: SRDHM ties up, RDBPOT ties away."""
    for a, b in [(2**30, 1), (-(2**30), 1), (3 * 2**30, 1), (-3 * 2**30, 1), (-(2**31), -(2**31)), (5, 7)]:
        want = 2**31 - 1 if a == b == -(2**31) else (a * b + 2**30) >> 31
        assert gemmlowp_srdhm(a, b) == want
    assert [gemmlowp_rdbpot(x, 1) for x in (3, -3, 1, -1, 2, -2)] == [2, -2, 1, -1, 1, -1]


def tie_accumulators(q, shift):
    """Accumulators whose fixed-point products land on every tie class of both roundings."""
    left, right = max(shift, 0), max(-shift, 0)
    out = {0, 1, -1, 2**31 - 1, -(2**31)} if left == 0 else {0, 1, -1}
    lim = 2**31 >> left
    rng = np.random.default_rng(q % 1000 + shift + 50)
    for v in rng.integers(-lim, lim, 40).tolist():
        out.add(v)
    # SRDHM ties: x*q == (2t + 1) * 2**30 for odd x*q multiples; search near random targets
    for t in rng.integers(-(2**20), 2**20, 20).tolist():
        for target in ((2 * t + 1) << 30, ((2 * t + 1) << (30 + right))):
            x = target // q
            for d in (-1, 0, 1):
                if -lim <= x + d < lim:
                    out.add(x + d)
    return sorted(out)


@pytest.mark.parametrize(
    "m", [0.5, 0.25, 0.75, 2.0**-9, 0.3, 1.0, 1.5, 3.0, 1e-3, 2.0**-31.2, 12345.678, 0.9999999]
)
def test_gemmlowp_against_fixed_point_oracle(m):
    q, shift = map(int, rq.ops.quantize_multiplier(m))
    acc = np.asarray(
        [a for a in tie_accumulators(max(q, 1), shift) if -(2**31) <= a << max(shift, 0) < 2**31], np.int64
    )
    for name, oracle in [
        ("gemmlowp", tflite_mbqm),
        ("tflite", tflite_mbqm),
        ("tflite.single_rounding", tflite_mbqm_single),
    ]:
        got = rq.ops.requantize(acc.astype(np.int32), m, 3, qmin=-(2**31), qmax=2**31 - 1, convention=name)
        want = [min(max(oracle(int(a), q, shift) + 3, -(2**31)), 2**31 - 1) for a in acc]
        assert got.tolist() == want, name


def test_gemmlowp_tie_classes_hit():
    """The doubling high multiply ties (x*q = odd * 2**30), and the power-of-two divide ties."""
    q, shift = map(int, rq.ops.quantize_multiplier(0.5))  # q = 2**30, shift 0: x*q/2**31 = x/2
    acc = np.arange(-9, 10, dtype=np.int32)
    got = rq.ops.requantize(acc, 0.5, 0, qmin=-100, qmax=100, convention="gemmlowp")
    assert got.tolist() == [tflite_mbqm(int(a), q, shift) for a in acc]
    assert got.tolist() == [int(np.floor(a / 2 + 0.5)) for a in acc]  # ties up: -4.5 -> -4
    q, shift = map(int, rq.ops.quantize_multiplier(0.125))  # q = 2**30, shift -2: round(round(x/2)/4)
    got = rq.ops.requantize(acc, 0.125, 0, qmin=-100, qmax=100, convention="gemmlowp")
    assert got.tolist() == [tflite_mbqm(int(a), q, shift) for a in acc]
    # double rounding: 3/8 -> round(1.5) = 2 (ties up) -> 2/4 = 0.5 -> 1 (ties away); exact gives 0
    assert got[acc == 3].item() == 1 and got[acc == -4].item() == -1 and got[acc == -3].item() == 0
    exact = rq.ops.requantize(acc, 0.125, 0, qmin=-100, qmax=100)
    assert exact[acc == 3].item() == 0


def test_fixed_point_left_shift_overflow_is_an_error():
    with pytest.raises(ValueError, match="overflows int32"):
        rq.ops.requantize(np.int32([2**29]), 4.0, 0, qmin=-128, qmax=127, convention="gemmlowp")


# ---------------------------------------------------------------- exact


@pytest.mark.parametrize("m", [0.5, 0.1, 1 / 3, 2.0**-20, 7.0, 1e-300, 3e300])
def test_requantize_exact_against_fractions(m):
    rng = np.random.default_rng(4)
    acc = rng.integers(-(2**40), 2**40, 500)
    acc = np.concatenate([acc, np.arange(-50, 50), [2**53 - 1, -(2**53), 2**62]])
    # accumulators at and next to the ties of acc * m
    ties = np.floor((np.arange(-20, 20) + 0.5) / m)
    ties = ties[np.abs(ties) < 2**60].astype(np.int64)
    acc = np.concatenate([acc, ties - 1, ties, ties + 1])
    got = rq.ops.requantize(acc, m, 5, qmin=-(2**31), qmax=2**31 - 1)
    want = [exact_requantize(int(a), m, 1.0, 0.0, 1.0, 5, -(2**31), 2**31 - 1) for a in acc]
    assert got.tolist() == want


@given(st.integers(-(2**31), 2**31 - 1), st.floats(1e-6, 1e3), st.integers(-128, 127))
def test_requantize_exact_property(acc, m, zp):
    got = rq.ops.requantize(np.int64([acc]), m, zp, qmin=-128, qmax=127)
    assert got.tolist() == [exact_requantize(acc, m, 1.0, 0.0, 1.0, zp, -128, 127)]


def test_requantize_exact_every_tie():
    acc = np.arange(-40, 41)
    got = rq.ops.requantize(acc, 0.25, 0, qmin=-100, qmax=100)
    assert got.tolist() == [exact_requantize(int(a), 0.25, 1.0, 0.0, 1.0, 0, -100, 100) for a in acc]


def test_linear_exact_against_fractions():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (6, 20)).astype(np.uint8)
    w = rng.integers(-128, 128, (9, 20)).astype(np.int8)
    ws = 2.0 ** rng.uniform(-9, -3, 9)
    bias = rng.normal(0, 1, 9)
    got = rq.ops.linear(x, 0.02, 100, w, ws, 0, bias, 0.07, 128, axis=0, convention="exact")
    acc = (x.astype(np.int64) - 100) @ w.T.astype(np.int64)
    want = [
        [
            exact_requantize(int(acc[i, j]), 0.02, float(ws[j]), float(bias[j]), 0.07, 128, 0, 255)
            for j in range(9)
        ]
        for i in range(6)
    ]
    assert got.dtype == np.uint8 and got.tolist() == want


def test_per_channel_equals_per_tensor_slices():
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, (4, 30)).astype(np.uint8)
    w = rng.integers(-128, 128, (5, 30)).astype(np.int8)
    ws = 2.0 ** rng.uniform(-9, -3, 5)
    bias = rng.normal(0, 1, 5).astype(np.float32)
    for conv in ("fbgemm", "exact"):
        full = rq.ops.linear(x, 0.02, 100, w, ws, 0, bias, 0.5, 128, axis=0, convention=conv)
        for j in range(5):
            one = rq.ops.linear(
                x, 0.02, 100, w[j : j + 1], ws[j], 0, bias[j : j + 1], 0.5, 128, convention=conv
            )
            assert np.array_equal(full[:, j : j + 1], one)


def test_inputs_unchanged():
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (3, 8)).astype(np.uint8)
    w = rng.integers(-128, 128, (4, 8)).astype(np.int8)
    b = np.float32([1, 2, 3, 4])
    copies = [v.copy() for v in (x, w, b)]
    rq.ops.linear(x, 0.1, 3, w, 0.1, 0, b, 0.3, 5)
    assert all(np.array_equal(a, c) for a, c in zip((x, w, b), copies))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: rq.ops.matmul_integer(np.uint8([[1, 2]]), np.int8([[1, 2]])), ValueError, "do not multiply"),
        (lambda: rq.ops.matmul_integer(np.uint8([[1]]), np.int8([[1]]), 256), ValueError, "a_zero_point"),
        (lambda: rq.ops.matmul_integer(np.uint8([[1]]), np.int8([[1]]), 0, -129), ValueError, "b_zero_point"),
        (lambda: rq.ops.matmul_integer(np.float32([[1]]), np.int8([[1]])), TypeError, "a must be an integer"),
        (lambda: rq.ops.matmul_integer(np.uint8([[1]]), np.int8([[1]]), dtype=np.int16), TypeError, "dtype"),
        (lambda: rq.ops.requantize(np.int32([1]), 0.0, 0, qmin=0, qmax=255), ValueError, "multiplier"),
        (
            lambda: rq.ops.requantize(np.int32([1]), float("nan"), 0, qmin=0, qmax=255),
            ValueError,
            "multiplier",
        ),
        (lambda: rq.ops.requantize(np.int32([1]), -1.0, 0, qmin=0, qmax=255), ValueError, "multiplier"),
        (lambda: rq.ops.requantize(np.int32([1]), 0.5, 300, qmin=0, qmax=255), ValueError, "zero_point"),
        (
            lambda: rq.ops.requantize(np.int64([2**31]), 0.5, 0, qmin=0, qmax=255, convention="fbgemm"),
            ValueError,
            "int32",
        ),
        (
            lambda: rq.ops.requantize(np.int32([1]), 0.5, 0, qmin=0, qmax=255, convention="nope"),
            ValueError,
            "convention",
        ),
        (lambda: rq.ops.quantize_multiplier(float("inf")), ValueError, "real"),
        (
            lambda: rq.ops.linear(np.uint8([[1, 2]]), 0.1, 0, np.int8([[1, 2, 3]]), 0.1, 0, None, 0.1, 0),
            ValueError,
            "do not match",
        ),
        (
            lambda: rq.ops.linear(np.uint8([[1, 2]]), 0.1, 0, np.int8([[1, 2]]), [0.1, 0.2], 0, None, 0.1, 0),
            ValueError,
            "w_scale",
        ),
        (
            lambda: rq.ops.linear(np.uint8([[1, 2]]), 0.1, 0, np.int8([[1, 2]]), 0.1, 0, None, 0.1, 256),
            ValueError,
            "y_zero_point",
        ),
        (
            lambda: rq.ops.linear(np.uint8([[1, 2]]), -0.1, 0, np.int8([[1, 2]]), 0.1, 0, None, 0.1, 0),
            ValueError,
            "x_scale",
        ),
        (
            lambda: rq.ops.linear(
                np.uint8([[1, 2]]), 0.1, 0, np.int8([[1, 2]]), 0.1, 0, np.float32([1, 2]), 0.1, 0
            ),
            ValueError,
            "bias",
        ),
        (
            lambda: rq.ops.linear(
                np.uint8([[1, 2]]), 0.1, 0, np.int8([[1, 2]]), 0.1, 0, np.float32([np.nan]), 0.1, 0
            ),
            ValueError,
            "bias",
        ),
        (
            lambda: rq.ops.linear(
                np.uint8([[1, 2]]),
                0.1,
                0,
                np.int8([[1, 2]]),
                0.1,
                0,
                np.float32([1]),
                0.1,
                0,
                convention="gemmlowp",
            ),
            TypeError,
            "bias must be int32",
        ),
        (
            lambda: rq.ops.conv2d(
                np.zeros((1, 2, 4, 4), np.uint8),
                0.1,
                0,
                np.zeros((2, 3, 3, 3), np.int8),
                0.1,
                0,
                None,
                0.1,
                0,
            ),
            ValueError,
            "channels",
        ),
        (
            lambda: rq.ops.conv_integer(np.zeros((1, 1, 2, 2), np.uint8), np.zeros((1, 1, 3, 3), np.int8)),
            ValueError,
            "does not fit",
        ),
        (
            lambda: rq.ops.conv_integer(
                np.zeros((1, 1, 4, 4), np.uint8), np.zeros((1, 1, 3, 3), np.int8), auto_pad="SAME"
            ),
            ValueError,
            "auto_pad",
        ),
        (
            lambda: rq.ops.conv_integer(
                np.zeros((1, 1, 4, 4), np.uint8), np.zeros((1, 1, 3, 3), np.int8), 0, np.int8([1, 2])
            ),
            ValueError,
            "w_zero_point",
        ),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("convention", ["onnxruntime", "xnnpack", "fbgemm", "onnx", "gemmlowp", "exact"])
def test_per_row_and_per_column_scales_equal_row_slices(convention):
    """A grid of multipliers (per-row a_scale and per-column b_scale) takes the general NumPy path;
    each row alone takes the one-axis kernel: they agree."""
    rng = np.random.default_rng(8)
    a = rng.integers(0, 256, (6, 40)).astype(np.uint8)
    b = rng.integers(-128, 128, (40, 7)).astype(np.int8)
    sa = (2.0 ** rng.uniform(-8, -4, 6)).astype(np.float32)
    sb = (2.0 ** rng.uniform(-8, -4, 7)).astype(np.float32)
    sy = np.float32(0.001)
    full = rq.ops.qlinear_matmul(a, sa, np.uint8(9), b, sb, np.int8(0), sy, np.int8(3), convention=convention)
    for i in range(6):
        one = rq.ops.qlinear_matmul(
            a[i : i + 1], sa[i], np.uint8(9), b, sb, np.int8(0), sy, np.int8(3), convention=convention
        )
        assert np.array_equal(full[i : i + 1], one)


def test_empty_non_contiguous_and_big_endian_inputs():
    assert (
        rq.ops.matmul_integer(np.zeros((2, 0), np.uint8), np.zeros((0, 3), np.int8)).tolist() == [[0] * 3] * 2
    )
    conv = rq.ops.conv2d(
        np.zeros((0, 8, 4, 4), np.uint8),
        0.1,
        0,
        np.ones((8, 1, 3, 3), np.int8),
        0.1,
        0,
        None,
        0.1,
        0,
        groups=8,
        padding=1,
    )
    assert conv.shape == (0, 8, 4, 4) and conv.dtype == np.uint8
    assert rq.ops.linear(
        np.zeros((0, 4), np.uint8), 0.1, 3, np.ones((6, 4), np.int8), 0.1, 0, np.zeros(6, np.float32), 0.1, 7
    ).shape == (0, 6)
    x = np.arange(24, dtype=np.uint8).reshape(2, 12)[:, ::3]
    w = np.ones((2, 4), np.int8)
    assert np.array_equal(
        rq.ops.linear(x, 0.1, 3, w, 0.1, 0, None, 0.1, 7),
        rq.ops.linear(np.ascontiguousarray(x), 0.1, 3, w, 0.1, 0, None, 0.1, 7),
    )
    xb = np.arange(8, dtype=np.dtype(">u2")).reshape(2, 4)
    assert rq.ops.matmul_integer(xb, np.ones((4, 1), np.int8)).tolist() == [[6], [22]]
    batched = rq.ops.linear(np.full((2, 5, 4), 13, np.uint8), 0.1, 3, w, 0.1, 0, None, 0.1, 7)
    assert batched.shape == (2, 5, 2) and np.all(batched == 11)


def test_custom_rows_are_checked():
    import dataclasses

    row = dataclasses.replace(rq.ops.conventions.get("onnx"), name="mine", zero_point="after_rounding")
    acc = np.arange(-9, 10, dtype=np.int32)
    got = rq.ops.requantize(acc, 0.5, 1, qmin=-100, qmax=100, convention=row)
    assert got.tolist() == [int(np.rint(a * 0.5)) + 1 for a in acc]  # ties to even, then + 1
    onnx = rq.ops.requantize(acc, 0.5, 1, qmin=-100, qmax=100, convention="onnx")
    assert onnx.tolist() == [int(np.rint(a * 0.5 + 1)) for a in acc] != got.tolist()
    for bad in (
        dict(product="fixed_point"),
        dict(product="float32", zero_point="before_rounding"),
        dict(bias="real"),
        dict(out_of_range="wrap"),
        dict(bias="float32_over_scale"),
    ):
        with pytest.raises(ValueError, match="mine"):
            rq.ops.requantize(acc, 0.5, 1, qmin=-100, qmax=100, convention=dataclasses.replace(row, **bad))
        with pytest.raises(ValueError, match="mine"):  # the registry checks a row it is given
            rq.ops.conventions.register(dataclasses.replace(row, **bad))
    assert "mine" not in rq.ops.conventions


def test_float64_scales_with_a_float32_multiplier():
    import dataclasses

    row = dataclasses.replace(rq.ops.conventions.get("onnxruntime"), name="f64 scales", scales="float64")
    x = np.uint8([[200, 3, 77]])
    w = np.int8([[5, -7, 9]])
    got = rq.ops.linear(x, 0.1, 10, w, 0.03, 0, None, 0.07, 5, convention=row)
    acc = int(((x.astype(np.int64) - 10) @ w.T.astype(np.int64))[0, 0])
    m = np.float32(0.1 * 0.03 / 0.07)
    assert got.tolist() == [[int(np.clip(np.rint(np.float32(acc) * m) + 5, 0, 255))]]


def test_conv2d_exact_and_tflite_against_oracles():
    rng = np.random.default_rng(12)
    x = rng.integers(0, 256, (1, 3, 6, 6)).astype(np.uint8)
    w = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    ws = 2.0 ** rng.uniform(-9, -5, 4)
    acc = np.asarray(naive_conv(x, w, 5, 0, (1, 1), (1, 1, 1, 1), (1, 1), 1), np.int64)
    bias_f = rng.normal(0, 1, 4)
    got = rq.ops.conv2d(x, 0.03, 5, w, ws, 0, bias_f, 0.2, 100, padding=1, axis=0, convention="exact")
    want = [
        [
            [
                [
                    exact_requantize(
                        int(acc[0, m, i, j]), 0.03, float(ws[m]), float(bias_f[m]), 0.2, 100, 0, 255
                    )
                    for j in range(6)
                ]
                for i in range(6)
            ]
            for m in range(4)
        ]
    ]
    assert got.tolist() == want
    bias_i = rng.integers(-2000, 2000, 4).astype(np.int32)
    got = rq.ops.conv2d(x, 0.03, 5, w, ws, 0, bias_i, 0.2, 100, padding=1, axis=0, convention="tflite")
    mult = [tflite_quantize_multiplier(0.03 * float(ws[m]) / 0.2) for m in range(4)]
    want = [
        [
            [
                [
                    min(max(tflite_mbqm(int(acc[0, m, i, j] + bias_i[m]), *mult[m]) + 100, 0), 255)
                    for j in range(6)
                ]
                for i in range(6)
            ]
            for m in range(4)
        ]
    ]
    assert got.tolist() == want
