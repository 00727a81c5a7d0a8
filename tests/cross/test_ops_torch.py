"""rq.ops.linear / conv2d under ``fbgemm`` against torch's FBGEMM kernels, bitwise.

torch 2.13 on x86: ``quantized.linear`` runs FBGEMM under the ``x86`` and ``fbgemm`` engines;
``quantized.conv2d`` runs FBGEMM under ``fbgemm`` (the ``x86`` engine sends a convolution with
symmetric weights to oneDNN on CPUs with AVX512-VNNI, which these tests do not use).

FBGEMM adds u8 x i8 products in int32 with AVX512-VNNI, but in pairs saturated to int16
(vpmaddubsw) in its depthwise kernels (which the ``fbgemm`` row reproduces) and, on CPUs without
VNNI, in its GEMMs (not reproduced: ``_pairs_saturate`` probes the installed kernels, and the
full-range GEMM tests run only where torch's sums are exact).
"""

import warnings

import numpy as np
import pytest

import refquant as rq

torch = pytest.importorskip("torch")
warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
if "fbgemm" not in torch.backends.quantized.supported_engines:
    pytest.skip("torch was built without FBGEMM", allow_module_level=True)


def _pairs_saturate():
    """Probe: does torch's FBGEMM linear add 255 * 127 + 255 * 127 exactly (VNNI) or saturate it?"""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    try:
        xq, wq = np.full((1, 2), 255, np.uint8), np.full((1, 2), 127, np.int8)
        y = torch_linear(xq, 1.0, 0, wq, 1.0, 0, None, 1024.0, 0, False)
    finally:
        torch.backends.quantized.engine = before
    return int(y[0, 0]) != 63  # exact: rne(64770 / 1024) = 63; saturated: rne(32767 / 1024) = 32


@pytest.fixture(scope="module")
def exact_gemm():
    if _pairs_saturate():
        pytest.skip("torch's FBGEMM GEMM on this CPU saturates pair sums to int16 (no AVX512-VNNI)")


@pytest.fixture(autouse=True)
def fbgemm_engine():
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    yield
    torch.backends.quantized.engine = before


def qx(xq, scale, zp):
    return torch._make_per_tensor_quantized_tensor(torch.from_numpy(np.ascontiguousarray(xq)), scale, zp)


def qw(wq, scale, zp):
    t = torch.from_numpy(np.ascontiguousarray(wq))
    if np.ndim(scale):
        return torch._make_per_channel_quantized_tensor(
            t, torch.from_numpy(np.asarray(scale, np.float64)), torch.from_numpy(np.asarray(zp, np.int64)), 0)
    return torch._make_per_tensor_quantized_tensor(t, scale, zp)


def torch_linear(xq, xs, xz, wq, ws, wz, bias, ys, yz, relu):
    b = None if bias is None else torch.from_numpy(bias)
    packed = torch.ops.quantized.linear_prepack(qw(wq, ws, wz), b)
    op = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
    return op(qx(xq, xs, xz), packed, ys, yz).int_repr().numpy()


def torch_conv(xq, xs, xz, wq, ws, wz, bias, ys, yz, relu, stride, padding, dilation, groups):
    b = None if bias is None else torch.from_numpy(bias)
    packed = torch.ops.quantized.conv2d_prepack(qw(wq, ws, wz), b, [stride] * 2, [padding] * 2,
                                                [dilation] * 2, groups)
    op = torch.ops.quantized.conv2d_relu if relu else torch.ops.quantized.conv2d
    return op(qx(xq, xs, xz), packed, ys, yz).int_repr().numpy()


def ours_linear(xq, xs, xz, wq, ws, wz, bias, ys, yz, relu):
    return rq.ops.linear(xq, xs, xz, wq, ws, wz, bias, ys, yz, axis=0 if np.ndim(ws) else None,
                         qmin=yz if relu else 0, qmax=255)


def mismatches(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return int(np.count_nonzero(a != b))


def random_case(rng, m, k, n, per_channel, with_bias, loose=False):
    xq = rng.integers(0, 256, (m, k), dtype=np.uint8)
    wq = rng.integers(-128, 128, (n, k), dtype=np.int8)
    xs, xz = float(2.0 ** rng.uniform(-10, 0)), int(rng.integers(0, 256))
    if per_channel:
        ws = 2.0 ** rng.uniform(-10, -2, n)
        wz = rng.integers(-3, 4, n) if loose else np.zeros(n, np.int64)
    else:
        ws, wz = float(2.0 ** rng.uniform(-10, -2)), int(rng.integers(-3, 4)) if loose else 0
    # an output scale that puts the results mostly inside the range
    spread = float(np.sqrt(k)) * 128 * 80 * xs * float(np.max(ws))
    ys, yz = float(spread / 100 * 2.0 ** rng.uniform(-1, 1)), int(rng.integers(0, 256))
    bias = (rng.normal(0, spread / 50, n)).astype(np.float32) if with_bias else None
    return xq, xs, xz, wq, ws, wz, bias, ys, yz


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_linear_random_shapes(per_channel, with_bias, relu, exact_gemm):
    rng = np.random.default_rng([per_channel, with_bias, relu])
    total = 0
    for m, k, n in [(1, 1, 1), (3, 7, 5), (5, 33, 17), (2, 64, 40), (17, 255, 9), (4, 1000, 31), (2, 4096, 3),
                    (8, 4095, 65)]:
        for loose in (False, True):
            case = random_case(rng, m, k, n, per_channel, with_bias, loose)
            got = ours_linear(*case, relu)
            assert mismatches(got, torch_linear(*case, relu)) == 0, (m, k, n, loose)
            total += got.size
    assert total > 1500


def tie_case(rng, m, k, n, bias_kind, per_channel=False):
    """Scales with s_x * s_w / s_y = 2**-e exactly: every odd multiple of 2**(e-1) in acc is a tie
    (per channel: one power of two per output channel, each channel its own e)."""
    xq = rng.integers(0, 256, (m, k), dtype=np.uint8)
    wq = rng.integers(-128, 128, (n, k), dtype=np.int8)
    xs = 2.0 ** -int(rng.integers(1, 8))
    ws = 2.0 ** -rng.integers(1, 8, n).astype(np.float64) if per_channel else 2.0 ** -int(rng.integers(1, 8))
    e = int(rng.integers(1, 4))
    ys = xs * float(np.max(ws)) * 2.0**e
    unit = xs * np.asarray(ws) * 2.0 ** (e - 1)
    # a bias that is a multiple of half a multiplier step keeps the ties
    steps = rng.integers(-50, 50, n)
    bias = None if bias_kind is None else (unit * steps).astype(np.float32)
    wz = np.zeros(n, np.int64) if per_channel else 0
    return xq, xs, int(rng.integers(0, 256)), wq, ws, wz, bias, ys, int(rng.integers(0, 256))


def test_pair_probe_runs():
    assert isinstance(_pairs_saturate(), bool)


@pytest.mark.parametrize("bias_kind", [None, "float"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_linear_ties(bias_kind, per_channel, relu, exact_gemm):
    rng = np.random.default_rng([7, per_channel, relu])
    ties = total = 0
    for m, k, n in [(64, 3, 64), (32, 1, 8), (16, 100, 16)]:
        for _ in range(4):
            case = tie_case(rng, m, k, n, bias_kind, per_channel)
            got = ours_linear(*case, relu)
            assert mismatches(got, torch_linear(*case, relu)) == 0
            exact = rq.ops.linear(*case, convention="exact", qmin=case[-1] if relu else 0, qmax=255,
                                  axis=0 if per_channel else None)
            assert np.array_equal(got, exact)  # power-of-two steps: fbgemm's float32 math rounds once here
            xq, xs, xz, wq, ws, _, bias, ys, _ = case
            acc = rq.ops.matmul_integer(xq, wq.T, xz).astype(np.float64)
            twice = 2 * (acc * xs * np.asarray(ws) + (0 if bias is None else bias)) / ys
            ties += int(np.count_nonzero(twice % 2 == 1))
            total += got.size
    assert ties > total // 10
    assert total > 10000


def test_linear_accumulator_near_int32_limits(exact_gemm):
    """K = 65793 of 255 * (-128): the sum is -2**31 + 128; f32(acc) rounds; products beyond 2**31."""
    k = 65793
    xq = np.full((2, k), 255, np.uint8)
    xq[1, :5] = 0
    wq = np.full((6, k), -128, np.int8)
    wq[1] = 127
    wq[2, ::2] = 127
    acc = rq.ops.matmul_integer(xq, wq.T)
    assert acc.min() == -(2**31) + 128
    for ys, yz, ws in [(1e-3, 0, 1.0), (0.5, 128, 1e-3), (1.0, 255, 2.0 ** -20), (4.0, 7, 3.0),
                       (0.5, 100, 2.0 ** -np.arange(6.0))]:
        for bias in (None, np.float32([1e6, -3.5, 0.25, 7, -7, 1e-3])):
            for relu in (False, True):
                case = (xq, 1.0, 0, wq, ws, np.zeros(6, np.int64) if np.ndim(ws) else 0, bias, ys, yz)
                assert mismatches(ours_linear(*case, relu), torch_linear(*case, relu)) == 0, (ys, ws, relu)


@pytest.mark.parametrize("relu", [False, True])
def test_conv2d_accumulator_near_int32_limits(relu, exact_gemm):
    """A 3x3 convolution over 7310 channels (K = 65790 taps of 255 * (-128), -2**31 + 98048) and a
    mixed one, per tensor and per channel."""
    c = 7310
    xq = np.full((1, c, 4, 3), 255, np.uint8)
    xq[0, :, 3] = 0
    wq = np.full((4, c, 3, 3), -128, np.int8)
    wq[1] = 127
    wq[2, ::2] = 127
    acc = rq.ops.conv_integer(xq, wq)
    assert acc.min() == -32640 * 65790
    for ys, yz, ws in [(1e-3, 0, 1.0), (0.5, 128, 1e-3), (4.0, 7, 3.0), (0.5, 100, 2.0 ** -np.arange(4.0))]:
        wz = np.zeros(4, np.int64) if np.ndim(ws) else 0
        got = rq.ops.conv2d(xq, 1.0, 0, wq, ws, wz, None, ys, yz, axis=0 if np.ndim(ws) else None,
                            qmin=yz if relu else 0, qmax=255)
        want = torch_conv(xq, 1.0, 0, wq, ws, wz, None, ys, yz, relu, 1, 0, 1, 1)
        assert mismatches(got, want) == 0, (ys, yz, ws)


def test_linear_products_beyond_int32_become_int32_min():
    """A multiplier above 1 takes f32(acc) * m past 2**31: x86's conversion gives INT32_MIN -> qmin."""
    k = 40000
    xq = np.full((1, k), 255, np.uint8)
    wq = np.full((3, k), 100, np.int8)
    wq[1] = -100
    wq[2, :] = 0
    case = (xq, 1.0, 0, wq, 1.0, 0, None, 0.25, 3)
    got = ours_linear(*case, False)
    assert mismatches(got, torch_linear(*case, False)) == 0
    assert got.tolist() == [[0, 0, 3]]  # saturating would give 255 for the first


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_conv2d_random(per_channel, with_bias, relu, exact_gemm):
    rng = np.random.default_rng([3, per_channel, with_bias, relu])
    total = 0
    for c, o, hw, kk, stride, padding, dilation, groups in [
        (1, 1, 5, 1, 1, 0, 1, 1), (3, 8, 9, 3, 1, 1, 1, 1), (8, 8, 10, 3, 2, 1, 1, 8),
        (4, 6, 11, 3, 1, 2, 2, 2), (16, 4, 7, 5, 1, 2, 1, 1), (64, 16, 8, 3, 1, 1, 1, 1),
        (16, 16, 9, 3, 1, 1, 1, 16), (8, 16, 6, 3, 1, 1, 1, 2), (32, 32, 6, 3, 2, 1, 1, 8),
        (448, 8, 5, 3, 1, 1, 1, 1), (455, 7, 4, 3, 2, 0, 1, 1),  # K = 4032 and 4095 taps
    ]:
        xq = rng.integers(0, 256, (2, c, hw, hw), dtype=np.uint8)
        wq = rng.integers(-128, 128, (o, c // groups, kk, kk), dtype=np.int8)
        xs, xz = float(2.0 ** rng.uniform(-8, 0)), int(rng.integers(0, 256))
        if per_channel:
            ws, wz = 2.0 ** rng.uniform(-10, -2, o), rng.integers(-2, 3, o)
        else:
            ws, wz = float(2.0 ** rng.uniform(-10, -2)), int(rng.integers(-2, 3))
        spread = float(np.sqrt(c // groups * kk * kk)) * 128 * 80 * xs * float(np.max(ws))
        ys, yz = spread / 100, int(rng.integers(0, 256))
        bias = rng.normal(0, spread / 50, o).astype(np.float32) if with_bias else None
        got = rq.ops.conv2d(xq, xs, xz, wq, ws, wz, bias, ys, yz, stride=stride, padding=padding,
                            dilation=dilation, groups=groups, axis=0 if per_channel else None,
                            qmin=yz if relu else 0, qmax=255)
        want = torch_conv(xq, xs, xz, wq, ws, wz, bias, ys, yz, relu, stride, padding, dilation, groups)
        assert mismatches(got, want) == 0, (c, o, hw, kk)
        total += got.size
    assert total > 2000


def test_conv2d_ties():
    rng = np.random.default_rng(11)
    for _ in range(6):
        xq = rng.integers(0, 256, (1, 4, 8, 8), dtype=np.uint8)
        wq = rng.integers(-3, 4, (8, 4, 3, 3), dtype=np.int8)
        xs, ws, e = 2.0 ** -3, 2.0 ** -4, int(rng.integers(1, 4))
        ys, yz = xs * ws * 2.0**e, int(rng.integers(0, 256))
        bias = (xs * ws * rng.integers(-9, 9, 8) * 2.0 ** (e - 1)).astype(np.float32)
        got = rq.ops.conv2d(xq, xs, 3, wq, ws, 0, bias, ys, yz, padding=1)
        assert mismatches(got, torch_conv(xq, xs, 3, wq, ws, 0, bias, ys, yz, False, 1, 1, 1, 1)) == 0


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv2d_depthwise_pairs_saturate_like_fbgemm(per_channel, with_bias):
    """Full-range depthwise convolutions: FBGEMM's int16 pair sums, reproduced (the exact sums differ)."""
    rng = np.random.default_rng([21, per_channel, with_bias])
    differ = 0
    for c, m, k, stride, padding in [(8, 8, 3, 1, 1), (16, 32, 3, 2, 1), (8, 8, 5, 1, 2), (16, 16, 7, 2, 3),
                                     (24, 24, 3, 1, 0), (16, 16, 5, 1, 1)]:  # the last two: GEMM path
        xq = rng.integers(0, 256, (2, c, 12, 12), dtype=np.uint8)
        wq = rng.integers(-128, 128, (m, 1, k, k), dtype=np.int8)
        xs, xz, yz = 0.02, int(rng.integers(0, 256)), int(rng.integers(0, 256))
        if per_channel:
            ws, wz = 2.0 ** rng.uniform(-9, -5, m), rng.integers(-2, 3, m)
        else:
            ws, wz = 0.004, 1
        ys = float(k * 128 * 128 * xs * np.max(ws) / 40)
        bias = rng.normal(0, 1, m).astype(np.float32) if with_bias else None
        args = (xq, xs, xz, wq, ws, wz, bias, ys, yz)
        kw = dict(stride=stride, padding=padding, groups=c, axis=0 if per_channel else None)
        want = torch_conv(*args, False, stride, padding, 1, c)
        assert mismatches(rq.ops.conv2d(*args, **kw), want) == 0, (c, m, k)
        differ += mismatches(rq.ops.conv2d(*args, convention="exact", **kw), want)
    assert differ > 100  # the pair saturation matters on these inputs
