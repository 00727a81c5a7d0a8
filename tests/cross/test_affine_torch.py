"""Backend conventions against torch 2.13 CPU, bitwise, on tie-heavy data (10^6 elements each)."""

import warnings

import numpy as np
import pytest

import refquant as rq
from tests.references import assert_bitwise_equal, tie_heavy

torch = pytest.importorskip("torch")
warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")
ml_dtypes = pytest.importorskip("ml_dtypes")
# the variants the installed torch runs in this process (ATEN_CPU_CAPABILITY, the CPU), measured
FQ = rq.conventions.detect("torch.fake_quantize")
Q = rq.conventions.detect("torch.quantize")

N = 1_000_000
CONFIGS = [  # (scale, zero point, qmin, qmax)
    (0.0123, 3, 0, 255),
    (0.1, 0, -128, 127),
    (1 / 3, 7, 0, 15),
    (0.00214854861, 1, 0, 255),
    (0.7, -5, -8, 7),
    (0.0025, 128, 0, 255),
    (0.037, -1000, -(2**31), 2**31 - 1),
]
TORCH_DTYPES = {
    "float32": (torch.float32, np.float32),
    "float64": (torch.float64, np.float64),
    "float16": (torch.float16, np.float16),
    "bfloat16": (torch.bfloat16, ml_dtypes.bfloat16),
}


def to_torch(x):
    if x.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(x.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(x.copy())


def to_numpy(t):
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def inputs(s, z, lo, hi, np_dtype, seed=0, n=N):
    x = tie_heavy(s, z, lo, hi, n, seed=seed, dtype=np.float32)
    return x.astype(np_dtype)


@pytest.mark.parametrize("s,z,lo,hi", CONFIGS)
@pytest.mark.parametrize("dtype", sorted(TORCH_DTYPES))
def test_fake_quantize_per_tensor(s, z, lo, hi, dtype):
    x = inputs(s, z, lo, hi, TORCH_DTYPES[dtype][1])
    expected = torch.fake_quantize_per_tensor_affine(to_torch(x), s, z, lo, hi)
    actual = rq.fake_quantize(x, s, z, qmin=lo, qmax=hi, convention=FQ)
    assert_bitwise_equal(actual, to_numpy(expected), f"{dtype} {s} {z}")


def per_channel_params(channels, lo, hi, seed, float_zp=False):
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.001, 0.5, channels).astype(np.float32)
    if float_zp:
        zps = rng.uniform(lo, hi, channels).astype(np.float32)
    else:
        zps = rng.integers(lo, hi + 1, channels).astype(np.int32)
    return scales, zps


def per_channel_inputs(scales, zps, lo, hi, rows, np_dtype, seed):
    cols = [tie_heavy(float(s), int(round(float(z))), lo, hi, rows, seed=seed + i)
            for i, (s, z) in enumerate(zip(scales, zps))]
    return np.stack(cols, axis=1).astype(np_dtype)


@pytest.mark.parametrize("lo,hi", [(0, 255), (-128, 127), (-8, 7)])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("float_zp", [False, True])
def test_fake_quantize_per_channel(lo, hi, dtype, float_zp):
    scales, zps = per_channel_params(16, lo, hi, seed=lo + 300, float_zp=float_zp)
    x = per_channel_inputs(scales, zps, lo, hi, N // 16, TORCH_DTYPES[dtype][1], seed=5)
    expected = torch.fake_quantize_per_channel_affine(
        to_torch(x), torch.from_numpy(scales), torch.from_numpy(zps), 1, lo, hi
    )
    actual = rq.fake_quantize(x, scales, zps, qmin=lo, qmax=hi, axis=1,
                              convention=FQ)
    assert_bitwise_equal(actual, to_numpy(expected), f"{dtype} float_zp={float_zp}")


@pytest.mark.parametrize("float_zp", [False, True])
def test_fake_quantize_per_channel_float64_input(float_zp):
    """torch multiplies float64 x by the float32 reciprocal in float64 per channel and returns
    (q - z) * s in float64; with float zero points it rounds z + x * inv, a float64 sum, to float32
    (lrintf), under every ATEN_CPU_CAPABILITY."""
    x = np.array([[0.45000000000000007]])
    s, z = np.float32([0.1]), np.int32([0])
    y = torch.fake_quantize_per_channel_affine(torch.from_numpy(x), torch.from_numpy(s),
                                               torch.from_numpy(z), 1, 0, 255).numpy()
    assert_bitwise_equal(rq.fake_quantize(x, s, z, qmin=0, qmax=255, axis=1, convention=FQ), y,
                         "reproduction")
    scales, zps = per_channel_params(8, 0, 255, seed=77, float_zp=float_zp)
    x = per_channel_inputs(scales, zps, 0, 255, N // 16, np.float32, seed=9).astype(np.float64)
    x += np.random.default_rng(3).integers(-3, 4, x.shape) * np.spacing(x)  # float64 ulps off ties
    y = torch.fake_quantize_per_channel_affine(torch.from_numpy(x), torch.from_numpy(scales),
                                               torch.from_numpy(zps), 1, 0, 255).numpy()
    ours = rq.fake_quantize(x, scales, zps, qmin=0, qmax=255, axis=1, convention=FQ)
    assert_bitwise_equal(ours, y, f"float64 float_zp={float_zp}")


def test_fake_quantize_per_channel_float_zero_point_gives_positive_zero():
    """torch's lrintf makes an integer code, so a code that rounds to -0.0 dequantizes to +0.0."""
    x = np.float32([[-0.1], [-0.4], [0.1]])
    for s, z, lo, hi in ((1.0, 0.0, -8, 7), (0.5, 0.0, 0, 255), (1.0, -0.0, -8, 7)):
        s32, z32 = np.float32([s]), np.float32([z])
        y = torch.fake_quantize_per_channel_affine(torch.from_numpy(x), torch.from_numpy(s32),
                                                   torch.from_numpy(z32), 1, lo, hi).numpy()
        ours = rq.fake_quantize(x, s32, z32, qmin=lo, qmax=hi, axis=1, convention=FQ)
        assert_bitwise_equal(ours, y, f"s={s} z={z} [{lo}, {hi}]")
        assert not np.signbit(ours).any()


QDTYPES = {"quint8": (torch.quint8, 0, 255), "qint8": (torch.qint8, -128, 127),
           "qint32": (torch.qint32, -(2**31), 2**31 - 1)}


@pytest.mark.parametrize(
    "qdtype,s,z",
    [(q, s, z) for q in sorted(QDTYPES) for s, z in [(0.0123, 3), (0.1, 1), (0.00214854861, 77), (1 / 3, -7)]
     if QDTYPES[q][1] <= z <= QDTYPES[q][2]],
)
def test_quantize_per_tensor_and_dequantize(qdtype, s, z):
    tdtype, lo, hi = QDTYPES[qdtype]
    x = inputs(s, z, lo, hi, np.float32, seed=11)
    tq = torch.quantize_per_tensor(torch.from_numpy(x), s, z, tdtype)
    q = rq.quantize(x, s, z, qmin=lo, qmax=hi, convention=Q)
    assert_bitwise_equal(q.astype(np.int64), tq.int_repr().numpy().astype(np.int64), qdtype)
    dq = rq.dequantize(q, s, z, convention=Q)
    assert_bitwise_equal(dq, tq.dequantize().numpy(), f"dequantize {qdtype}")


@pytest.mark.parametrize("qdtype", sorted(QDTYPES))
def test_quantize_per_channel_and_dequantize(qdtype):
    tdtype, lo, hi = QDTYPES[qdtype]
    scales, zps = per_channel_params(8, max(lo, -1000), min(hi, 1000), seed=9)
    scales64 = scales.astype(np.float64) * (1 + 1e-9)  # a float64 scale torch keeps in full
    x = per_channel_inputs(scales, zps, lo, hi, N // 8, np.float32, seed=21)
    tq = torch.quantize_per_channel(torch.from_numpy(x), torch.from_numpy(scales64),
                                    torch.from_numpy(zps.astype(np.int64)), 1, tdtype)
    q = rq.quantize(x, scales64, zps, qmin=lo, qmax=hi, axis=1, convention=Q)
    assert_bitwise_equal(q.astype(np.int64), tq.int_repr().numpy().astype(np.int64), qdtype)
    dq = rq.dequantize(q, scales64, zps, axis=1, convention=Q)
    assert_bitwise_equal(dq, tq.dequantize().numpy(), f"dequantize {qdtype}")


@pytest.mark.parametrize("s,z,lo,hi", CONFIGS[:6])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_decomposed_per_tensor(s, z, lo, hi, dtype):
    from torch.ao.quantization.fx import _decomposed  # noqa: F401  (registers the ops)

    ops = torch.ops.quantized_decomposed
    tdt = torch.uint8 if lo >= 0 else torch.int8
    x = inputs(s, z, lo, hi, TORCH_DTYPES[dtype][1], seed=4)
    tq = ops.quantize_per_tensor(to_torch(x), s, z, lo, hi, tdt)
    q = rq.quantize(x, s, z, qmin=lo, qmax=hi, convention="torch.decomposed")
    assert_bitwise_equal(q.astype(np.int64), tq.numpy().astype(np.int64), dtype)
    tdq = ops.dequantize_per_tensor(tq, s, z, lo, hi, tdt)
    assert_bitwise_equal(rq.dequantize(q, s, z, convention="torch.decomposed"), tdq.numpy())


@pytest.mark.parametrize("scale_dtype", [np.float32, np.float64])
def test_decomposed_per_channel(scale_dtype):
    from torch.ao.quantization.fx import _decomposed  # noqa: F401

    ops = torch.ops.quantized_decomposed
    lo, hi = -128, 127
    scales, zps = per_channel_params(8, lo, hi, seed=13)
    scales = scales.astype(scale_dtype)
    x = per_channel_inputs(scales, zps, lo, hi, N // 8, np.float32, seed=31)
    tq = ops.quantize_per_channel(torch.from_numpy(x), torch.from_numpy(scales),
                                  torch.from_numpy(zps.astype(np.int64)), 1, lo, hi, torch.int8)
    q = rq.quantize(x, scales, zps, qmin=lo, qmax=hi, axis=1, convention="torch.decomposed")
    assert_bitwise_equal(q, tq.numpy())


SPECIALS = np.float32([np.nan, np.inf, -np.inf, 1e30, -1e30, 3e9, -3e9, 0.0, -0.0, 12.0])


def test_special_values_fake_quantize():
    for z in (0, 3, 128):
        ref = torch.fake_quantize_per_tensor_affine(torch.from_numpy(SPECIALS), 0.1, z, 0, 255)
        ours = rq.fake_quantize(SPECIALS, 0.1, z, qmin=0, qmax=255, convention=FQ)
        assert_bitwise_equal(ours, ref.numpy(), f"per-tensor z={z}")
    x = np.stack([SPECIALS, SPECIALS], axis=1)
    s, zp = np.float32([0.1, 0.2]), np.int32([3, 0])
    ref = torch.fake_quantize_per_channel_affine(torch.from_numpy(x), torch.from_numpy(s),
                                                 torch.from_numpy(zp), 1, 0, 255)
    ours = rq.fake_quantize(x, s, zp, qmin=0, qmax=255, axis=1, convention=FQ)
    assert_bitwise_equal(ours, ref.numpy(), "per-channel")


@pytest.mark.parametrize("qdtype", sorted(QDTYPES))
def test_special_values_quantize(qdtype):
    tdtype, lo, hi = QDTYPES[qdtype]
    z = 3 if lo == 0 else 0
    ref = torch.quantize_per_tensor(torch.from_numpy(SPECIALS), 0.1, z, tdtype).int_repr().numpy()
    ours = rq.quantize(SPECIALS, 0.1, z, qmin=lo, qmax=hi, convention=Q)
    assert ours.astype(np.int64).tolist() == ref.astype(np.int64).tolist()
    x = np.stack([SPECIALS, SPECIALS], axis=1)
    ref = torch.quantize_per_channel(torch.from_numpy(x), torch.tensor([0.1, 0.2], dtype=torch.float64),
                                     torch.tensor([z, 0]), 1, tdtype).int_repr().numpy()
    ours = rq.quantize(x, np.array([0.1, 0.2]), np.array([z, 0]), qmin=lo, qmax=hi, axis=1,
                       convention=Q)
    assert ours.astype(np.int64).tolist() == ref.astype(np.int64).tolist()


FMA_SCRIPT = """
import sys, warnings, numpy as np, torch, refquant as rq
sys.path.insert(0, {root!r})
from tests.references import tie_heavy, bits
warnings.simplefilter("ignore")
scales = np.float32([0.0123, 0.37, 0.0021])
zps = np.float32([3.3, 100.7, 17.5])
x = np.stack([tie_heavy(float(s), int(z), 0, 255, 50000, seed=i) for i, (s, z) in
              enumerate(zip(scales, zps))], axis=1)
y = torch.fake_quantize_per_channel_affine(torch.from_numpy(x), torch.from_numpy(scales),
                                           torch.from_numpy(zps), 1, 0, 255).numpy()
x8 = tie_heavy(0.0123, 3, 0, 255, 200000, seed=5)
y8 = torch.quantize_per_tensor(torch.from_numpy(x8), 0.0123, 3, torch.quint8).int_repr().numpy()
print("detected", rq.conventions.detect("torch.fake_quantize").fma,
      rq.conventions.detect("torch.quantize").fma, torch.backends.cpu.get_cpu_capability())
for fma in (True, False):
    conv = rq.conventions.get("torch.fake_quantize").replace(fma=fma)
    ours = rq.fake_quantize(x, scales, zps, qmin=0, qmax=255, axis=1, convention=conv)
    q = rq.quantize(x8, 0.0123, 3, qmin=0, qmax=255,
                    convention=rq.conventions.get("torch.quantize").replace(fma=fma))
    print(fma, int((bits(ours) != bits(y)).sum()), int((q != y8).sum()))
"""


def _capabilities():
    import subprocess
    import sys

    # what this CPU can run, from torch itself (the unset default is the best kernel set)
    best = subprocess.run([sys.executable, "-c", "import torch; "
                           "print(torch.backends.cpu.get_cpu_capability())"],
                          capture_output=True, text=True, check=True).stdout.strip().lower()
    return [c for c in ("default", "avx2", "avx512") if c == "default" or
            (c == "avx2" and best in ("avx2", "avx512")) or c == best]


@pytest.mark.parametrize("capability", _capabilities())
def test_detect_picks_the_variant_each_kernel_set_runs(capability):
    """Under each ATEN_CPU_CAPABILITY the probe's variant is the one with no mismatch on
    tie-heavy data, and the data tells the variants apart."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
    lines = subprocess.run([sys.executable, "-c", FMA_SCRIPT.format(root=root)], env=env,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    _, fq_fma, q_fma, running = lines[0].split()
    assert running.lower() == capability
    counts = {fma: tuple(map(int, rest.split())) for fma, rest in (ln.split(" ", 1) for ln in lines[1:])}
    assert fq_fma == str(capability != "default")  # DEFAULT kernels do not contract
    assert counts[fq_fma][0] == 0 and counts[str(fq_fma != "True")][0] > 0
    assert counts[q_fma][1] == 0 and counts[str(q_fma != "True")][1] > 0


DECOMPOSED_WIDE = {"int16": (torch.int16, -32768, 32767), "uint16": (torch.uint16, 0, 65535),
                   "int32": (torch.int32, -(2**31), 2**31 - 1)}


@pytest.mark.parametrize("qdtype", sorted(DECOMPOSED_WIDE))
@pytest.mark.parametrize("scale_dtype", [np.float32, np.float64])
def test_decomposed_wide_codes_convert_as_x86_does(qdtype, scale_dtype):
    """clamp in the compute dtype, then .to(dtype): NaN and values that the float32 bound 2**31
    lets through become INT32_MIN (0 once truncated to 16 bits)."""
    from torch.ao.quantization.fx import _decomposed  # noqa: F401

    ops = torch.ops.quantized_decomposed
    tdt, lo, hi = DECOMPOSED_WIDE[qdtype]
    specials = np.float32([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, -0.0, 214748364.7, 214748358.0,
                           -214748364.8, 6553.5, 3276.7, 3276.75])
    x = np.concatenate([specials, tie_heavy(0.1, 0, -40000, 40000, 20000, seed=8)]).astype(np.float32)
    z = 3 if lo >= 0 else -3
    tq = ops.quantize_per_tensor(torch.from_numpy(x), 0.1, z, lo, hi, tdt)
    q = rq.quantize(x, 0.1, z, qmin=lo, qmax=hi, convention="torch.decomposed")
    assert_bitwise_equal(q.astype(np.int64), tq.numpy().astype(np.int64), "per-tensor")
    x2 = np.stack([x, x * 7], axis=1)
    scales, zps = np.array([0.1, 0.03], scale_dtype), np.array([z, 0])
    tq = ops.quantize_per_channel(torch.from_numpy(x2), torch.from_numpy(scales), torch.from_numpy(zps),
                                  1, lo, hi, tdt)
    q = rq.quantize(x2, scales, zps, qmin=lo, qmax=hi, axis=1, convention="torch.decomposed")
    assert_bitwise_equal(q.astype(np.int64), tq.numpy().astype(np.int64), "per-channel")


def test_quantize_per_channel_float_zero_point_wraps_to_int32():
    """torch assigns lrintf's int64 to a C int before the clamp: 3e9 wraps negative (code 0)."""
    x = np.float32([[3e9], [-3e9], [5e9], [2.2e9], [-2.2e9], [4.2e9], [1e19], [np.inf], [np.nan],
                    [7.3], [-1e30]])
    for s, z in ((1.0, 0.5), (0.37, 3.25), (1e-3, 100.0)):
        ref = torch.quantize_per_channel(torch.from_numpy(x), torch.tensor([s], dtype=torch.float64),
                                         torch.tensor([z]), 1, torch.quint8)
        ours = rq.quantize(x, np.float64([s]), np.float32([z]), qmin=0, qmax=255, axis=1,
                           convention=Q)
        assert ours.ravel().tolist() == ref.int_repr().numpy().ravel().tolist(), (s, z)
        fake = rq.fake_quantize(x, np.float64([s]), np.float32([z]), qmin=0, qmax=255, axis=1,
                                convention=Q)
        assert_bitwise_equal(fake, ref.dequantize().numpy(), f"fake s={s} z={z}")


def test_qint32_dequantize_wraps_and_rounds_the_zero_point():
    """Per-tensor: torch subtracts q - z in int32 (wrapping); per-channel: f32(q) - f32(z)."""
    x = np.float32([3e9, -3e9, 2.1e8, -7.0, 0.0])
    for s, z in ((0.1, -1), (0.1, 1), (1e-3, -(2**31) + 5), (0.5, 2**31 - 1)):
        tq = torch.quantize_per_tensor(torch.from_numpy(x), s, z, torch.qint32)
        q = rq.quantize(x, s, z, qmin=-(2**31), qmax=2**31 - 1, convention=Q)
        assert q.tolist() == tq.int_repr().numpy().tolist()
        assert_bitwise_equal(rq.dequantize(q, s, z, convention=Q), tq.dequantize().numpy(), f"{s} {z}")
    codes = np.int32([[2**31 - 1], [-(2**31)], [2**31 - 2], [12345]])
    for s, z in ((0.5, 2**31 - 1), (0.1, -(2**31) + 1), (0.25, 2**30 + 1)):
        tq = torch._make_per_channel_quantized_tensor(
            torch.from_numpy(codes), torch.tensor([s], dtype=torch.float64), torch.tensor([z]), 1)
        ours = rq.dequantize(codes, np.float64([s]), np.int64([z]), axis=1, convention=Q)
        assert_bitwise_equal(ours, tq.dequantize().numpy(), f"per-channel {s} {z}")
