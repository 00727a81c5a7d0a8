"""The affine kernels' fast paths against their general twins, bit for bit: the float32-operations
path, float16/bfloat16 carried as bits, the exact pass per channel; and the rounding of float
quotients just above -1/2 under every mode."""

from fractions import Fraction

import numpy as np
import pytest

import refquant as rq
from refquant import affine
from refquant._kernels import _affine as k
from refquant._kernels._round import round_value
from refquant.rounding import rounding_code
from tests.references import ROUNDERS, assert_bitwise_equal

MODES = ["half_even", "half_away", "half_up", "half_down", "floor", "ceil", "toward_zero"]
# conventions whose quotient is computed in float32 for float32 x, with knob variants that leave
# or refuse the float32 path (a float zero point added before rounding in another format, the
# int32-first clamp, the scalar dequantization rule)
FLOAT32_CONVENTIONS = [
    rq.conventions.get("torch.fake_quantize"),
    rq.conventions.get("torch.fake_quantize").replace(fma=False),
    rq.conventions.get("torch.quantize"),
    rq.conventions.get("torch.quantize").replace(fma=False),
    rq.conventions.get("torch.decomposed"),
    rq.conventions.get("torchao"),
    rq.conventions.get("onnx"),
    rq.conventions.get("onnx.reference"),
    rq.conventions.get("onnx.reference").replace(compute="float32"),
    rq.conventions.get("aimet"),
    rq.conventions.get("brevitas"),
    rq.conventions.get("tflite"),
    rq.conventions.get("modelopt"),
]


def adversarial(s, z, lo, hi, seed=0):
    """Ties of x / s (and of x / f32(s)), their float32 neighbours, quotients just above -1/2,
    subnormals, huge values, NaN, +-inf, -0.0 and noise, as float64."""
    rng = np.random.default_rng(seed)
    k_ = np.arange(lo - 2, hi + 3, dtype=np.float64) - z
    s32 = float(np.float32(s))
    ties = np.concatenate([(k_ + 0.5) * s, (k_ + 0.5) * s32, k_ * s, (k_ + 0.25) * s32,
                           (-0.5 + np.ldexp(1.0, -np.arange(1, 40))) * s32,
                           (-0.25 - np.ldexp(1.0, -np.arange(1, 40))) * s32])
    t32 = ties.astype(np.float32)
    up, down = np.nextafter(t32, np.float32(np.inf)), np.nextafter(t32, np.float32(-np.inf))
    near = np.concatenate([ties, t32, up, down])
    special = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, -1e-45, 1e-40, -3e-39, 3e38, -3e38, 1e300, 2.0**31,
               -(2.0**31), 2.0**63, 65504.0, 65520.0, -65520.0, 6e-8, 2.9802322387695312e-08]
    noise = rng.standard_normal(500) * s * (hi - lo) / 3
    return np.concatenate([near, special, noise])


def _both_paths(monkeypatch, fn):
    """fn() with the float32 path allowed, then refused (the general float64 path)."""
    fast = fn()
    with monkeypatch.context() as m:
        m.setattr(affine, "_float32_valued", lambda values: False)
        general = fn()
    return fast, general


def _spy_keys(monkeypatch):
    """The keys the affine kernels are compiled for, as the calls run."""
    keys = []
    original = k.affine_kernel

    def spy(key):
        keys.append(key)
        return original(key)

    monkeypatch.setattr(k, "affine_kernel", spy)
    return keys


def _bfloat16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    return np.dtype(ml_dtypes.bfloat16)


@pytest.mark.parametrize("conv", FLOAT32_CONVENTIONS, ids=lambda c: f"{c.name}-fma{int(c.fma)}-{c.compute}")
@pytest.mark.parametrize("s,z,lo,hi", [(0.02, 0, -128, 127), (1 / 3, 3, 0, 255), (2.0**-130, -1, -8, 7),
                                       (3e35, 0, -128, 127), (0.7, 100, -32768, 32767)])
def test_float32_path_matches_the_general_path(monkeypatch, conv, s, z, lo, hi):
    z = 0 if conv.zero_point == "none" else z
    with np.errstate(over="ignore"):
        x = adversarial(s, z, lo, hi).astype(np.float32)
    if conv.nan == "error":
        x = x[~np.isnan(x)]
    # every mode under a few conventions (each mode is its own compiled loop)
    every = conv.name in ("torch.fake_quantize", "tflite") and s == 0.02
    modes = MODES if every else [conv.rounding, "floor"]
    for mode in modes:
        rounding = None if mode == conv.rounding else mode
        for fake in (False, True):
            op = rq.fake_quantize if fake else rq.quantize
            for scale in (s, np.float32(s)):
                def run(op=op, scale=scale, rounding=rounding):
                    with np.errstate(all="ignore"):
                        return op(x, scale, z, qmin=lo, qmax=hi, rounding=rounding, convention=conv)

                fast, general = _both_paths(monkeypatch, run)
                assert_bitwise_equal(fast, general, f"{conv.name} {mode} fake={fake} scale={scale!r}")


@pytest.mark.parametrize("conv", FLOAT32_CONVENTIONS[:2], ids=["fma", "nofma"])
def test_float32_path_per_channel_float_zero_points(monkeypatch, conv):
    x = adversarial(0.05, 0, -128, 127)[:1536].astype(np.float32).reshape(-1, 96)
    s = np.float32(0.05) * (1 + np.arange(96) % 5).astype(np.float32)
    zf = (np.arange(96) % 7 - 3).astype(np.float32) + np.float32(0.375)
    for fake in (False, True):
        op = rq.fake_quantize if fake else rq.quantize
        fast, general = _both_paths(monkeypatch, lambda: op(x, s, zf, fmt=rq.int8, axis=1,  # noqa: B023
                                                            convention=conv))
        assert_bitwise_equal(fast, general, f"fake={fake}")


def test_the_float32_path_is_taken_only_where_it_is_the_same_arithmetic(monkeypatch):
    keys = _spy_keys(monkeypatch)
    conv = rq.conventions.get("torch.fake_quantize")
    x = np.float32([0.1, -0.3, 7.0])
    rq.fake_quantize(x, 0.1, 0, fmt=rq.int8, convention=conv)  # float32 compute, float32 inv
    rq.fake_quantize(x.astype(np.float64), 0.1, 0, fmt=rq.int8, convention=conv)  # float64 compute
    rq.fake_quantize(x, np.float64(0.1), 0, fmt=rq.int8, convention="torchao")  # float64 1 / s
    promoted = rq.conventions.get("torch.quantize").replace(zero_point_add="promote", float_zero_point=True,
                                                            zero_point_in_range=False)
    rq.quantize(x, 0.1, np.float64(0.5), fmt=rq.int8, convention=promoted)  # before rounding, in float64
    assert [key.f32ops for key in keys] == [True, False, False, False]


@pytest.mark.parametrize("fmt", [2, 3])
def test_half_bits_round_trip_every_pattern(fmt):
    dtype = np.dtype(np.float16) if fmt == 2 else _bfloat16()
    patterns = np.arange(2**16, dtype=np.uint16)
    with np.errstate(invalid="ignore"):
        widened = patterns.view(dtype).astype(np.float32).astype(np.float64)
    values = np.array([k.half_value(int(b), fmt) for b in patterns])
    nan = np.isnan(widened)
    assert (np.isnan(values) == nan).all()
    assert_bitwise_equal(values[~nan], widened[~nan])
    back = np.array([k.half_bits(v, fmt) for v in values[~nan]], np.uint16)
    assert (back == patterns[~nan]).all()


@pytest.mark.parametrize("fmt", [2, 3])
def test_half_bits_round_as_the_float32_cast(fmt):
    """The kernels' store of a float64 v: f32(v) cast to the half format, as NumPy / ml_dtypes do."""
    dtype = np.dtype(np.float16) if fmt == 2 else _bfloat16()
    rng = np.random.default_rng(4)
    edges = np.float64([65504, 65519.99, 65520, 65536, 6.1e-5, 6.097555160522461e-05, 2.98e-8,
                        2.9802322387695312e-08, 5.96e-8, 3.3895313892515355e38, 3.3961e38, 1e-39, 9.2e-41,
                        4.6e-41, 1e-45, np.inf, np.nan])
    v = np.concatenate([edges, -edges, rng.standard_normal(4000) * 10.0 ** rng.integers(-45, 39, 4000),
                        np.ldexp(1 + rng.integers(0, 2**12, 3000) / 2**11, rng.integers(-30, 20, 3000))])
    with np.errstate(all="ignore"):
        want = v.astype(np.float32).astype(dtype).view(np.uint16)
        got = np.array([k.half_bits(k.rnd(k.rnd(x, 1), fmt), fmt) for x in v], np.int64)
    assert (got == want.astype(np.int64)).all(), v[got != want][:5]


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("s,z,lo,hi", [(0.02, 0, -128, 127), (float(np.float32(0.0123)), 7, 0, 255),
                                       (1 / 3, -2, -8, 7), (2.0**-1000, 0, -128, 127)])
def test_exact_per_channel_matches_each_row_per_tensor(dtype_name, s, z, lo, hi):
    dtype = _bfloat16() if dtype_name == "bfloat16" else np.dtype(dtype_name)
    rows = 6
    base = adversarial(s, z, lo, hi, seed=2)
    with np.errstate(all="ignore"):
        x = np.resize(base[np.isfinite(base)], rows * 64 * 4).reshape(rows, -1).astype(dtype)
    scales = s * np.float64([1, 3, 0.5, 1.25, 2.0**-3, 7])
    zps = np.int64([z, z + 1, z - 1, z, z, z])
    for fake in (False, True):
        op = rq.fake_quantize if fake else rq.quantize
        got = op(x, scales, zps, qmin=lo, qmax=hi, axis=0)
        for r in range(rows):
            want = op(x[r], scales[r], int(zps[r]), qmin=lo, qmax=hi)
            assert_bitwise_equal(got[r], want, f"row {r} fake={fake}")


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16", "float32", "float64"])
def test_exact_fast_pass_matches_the_element_kernels(monkeypatch, dtype_name):
    """The certified pass (per tensor and per channel) against the exact element kernels alone."""
    dtype = _bfloat16() if dtype_name == "bfloat16" else np.dtype(dtype_name)
    for s, z, lo, hi in [(0.02, 0, -128, 127), (1 / 3, 3, 0, 255), (0.7, 100, -32768, 32767)]:
        with np.errstate(all="ignore"):
            x = adversarial(s, z, lo, hi, seed=5).astype(dtype)
        x = x[: (x.size // 128) * 128].reshape(-1, 128)
        sc = s * (1 + np.arange(x.shape[0]) % 3)
        for args in ((x, s, z), (x, sc, np.full(x.shape[0], z), 0)):
            kw = {"axis": args[3]} if len(args) > 3 else {}
            fast = rq.fake_quantize(*args[:3], qmin=lo, qmax=hi, **kw)
            with monkeypatch.context() as m:
                m.setattr(affine, "_exact_fast", lambda *a: False)
                general = rq.fake_quantize(*args[:3], qmin=lo, qmax=hi, **kw)
            assert_bitwise_equal(fast, general, f"{s} {kw}")


@pytest.mark.parametrize("mode", MODES)
def test_float_quotients_just_above_minus_half(mode):
    """t in (-1/2, -1/4) and (-1/4, 0): t - floor(t) is inexact there (it can round onto 1/2 or 1),
    so ties are decided by comparing t with floor(t) + 1/2."""
    t = np.concatenate([-0.5 + np.ldexp(1.0, -np.arange(2, 60)), -np.ldexp(1.0, -np.arange(2, 80)),
                        -0.25 - np.ldexp(1.0, -np.arange(3, 60)), [-0.5, -0.25, -1.0 + 2.0**-53]])
    want = [ROUNDERS[mode](Fraction(v)) for v in t]
    assert [int(round_value(v, rounding_code(mode), 0.0)) for v in t] == want
    # through a convention: onnx divides in float64 for float64 x and scale
    q = rq.quantize(t, np.float64(1.0), 0, qmin=-8, qmax=7, rounding=mode, convention="onnx")
    assert q.tolist() == want


def test_specializations_are_named_after_the_kernel_sources():
    """Numba's cache checks only the compiled function's own file; the names carry a digest of
    every kernel source a specialization compiles in, so an edit to any of them recompiles."""
    import hashlib
    import pathlib

    digest = hashlib.sha256()
    folder = pathlib.Path(k.__file__).parent
    for name in ("_affine.py", "_round.py", "_jit.py"):
        digest.update((folder / name).read_bytes())
    assert k.sources_digest() == digest.hexdigest()[:12]
    key = k.ExactKey(xfmt=1, dequant=True, ofmt=1)
    fast, _ = k.exact_half_even_kernels(key)
    assert k.sources_digest() in fast.serial.py_func.__name__


def _runs_with_specials(s, z, lo, hi, dtype):
    """Three runs of the per-tensor loop's task length: ordinary quotients (ties, their float32
    neighbours, noise) in the first and last, the same with NaN, +-inf, -0.0, subnormal and huge
    values in the middle one (which the all-float32 pass hands back to the general loop)."""
    base = adversarial(s, z, lo, hi, seed=7)
    with np.errstate(all="ignore"):
        t = base / s
        ordinary = base[np.isfinite(base) & (np.abs(t) < 2.0**21)]
        runs = [np.resize(ordinary, k._CHUNK) for _ in range(3)]
        runs[1][::97] = np.resize(base[~np.isfinite(base) | (np.abs(t) >= 2.0**21)], runs[1][::97].size)
        return np.concatenate(runs).astype(dtype)


def _accepted_dtypes(conv):
    return [d for d in ("float32", "float16", "bfloat16") if d in conv.input_dtypes]


@pytest.mark.parametrize("conv", FLOAT32_CONVENTIONS, ids=lambda c: f"{c.name}-fma{int(c.fma)}-{c.compute}")
def test_all_float32_pass_matches_the_general_loop(monkeypatch, conv):
    """Bit for bit against the same compiled convention without the all-float32 pass, with the
    ordinary runs taken by it (checked) and the run holding specials recomputed."""
    every = conv.name in ("torch.fake_quantize", "tflite")
    for s, z, lo, hi in [(0.02, 0, -128, 127), (0.7, 100, -32768, 32767), (3e35, 0, -128, 127)]:
        z = 0 if conv.zero_point == "none" else z
        for dtype_name in _accepted_dtypes(conv):
            dtype = _bfloat16() if dtype_name == "bfloat16" else np.dtype(dtype_name)
            x = _runs_with_specials(s, z, lo, hi, dtype)
            if conv.nan == "error":
                x = x[~np.isnan(x.astype(np.float32))]
            modes = MODES if every and s == 0.02 and dtype_name == "float32" else [conv.rounding]
            for mode, fake in [(m, f) for m in modes for f in (False, True)]:
                op = rq.fake_quantize if fake else rq.quantize
                if not fake and dtype_name != "float32" and conv.name == "onnx.reference":
                    continue  # quantize of halves: covered by the float32 rows (same codes path)

                def run(op=op, mode=mode, x=x, s=s, z=z, lo=lo, hi=hi):
                    with np.errstate(all="ignore"):
                        return op(x, np.float32(s), z, qmin=lo, qmax=hi, rounding=mode, convention=conv)

                keys = _spy_keys(monkeypatch)
                fast = run()
                monkeypatch.undo()
                with monkeypatch.context() as m:
                    m.setattr(affine, "_fast32_holds", lambda *a: False)
                    general = run()
                context = f"{conv.name} {dtype_name} {mode} fake={fake} s={s}"
                if hi - lo < 256:  # int8 codes: the pass is taken, but for one exact rounding to a half
                    expect_fast = not (fake and dtype_name != "float32" and conv.dequant == "exact")
                    assert [key.fast32 for key in keys] == [expect_fast], context
                assert_bitwise_equal(fast, general, context)


@pytest.mark.parametrize("name", ["torch.fake_quantize", "torchao", "onnx.reference"])
def test_all_float32_pass_per_channel(monkeypatch, name):
    conv = rq.conventions.get(name)
    x = _runs_with_specials(0.05, 3, -128, 127, np.float32)[: 3 * 128 * 96].reshape(3, 96, 128)
    s = np.float32(0.05) * (1 + np.arange(96) % 5).astype(np.float32)
    zp = (np.arange(96) % 7 - 3).astype(np.int64)
    for axis in (1, 0, -1):  # rows of 128 per channel; of 384; one element per channel per row
        xs = {1: x, 0: np.ascontiguousarray(np.swapaxes(x, 0, 1)), -1: x.reshape(-1, 96)}[axis]
        for fake in (False, True):
            op = rq.fake_quantize if fake else rq.quantize
            keys = _spy_keys(monkeypatch)
            with np.errstate(all="ignore"):
                fast = op(xs, s, zp, fmt=rq.int8, axis=axis, convention=conv)
            monkeypatch.undo()
            with monkeypatch.context() as m, np.errstate(all="ignore"):
                m.setattr(affine, "_fast32_holds", lambda *a: False)
                general = op(xs, s, zp, fmt=rq.int8, axis=axis, convention=conv)
            assert [key.fast32 for key in keys] == [True]
            assert_bitwise_equal(fast, general, f"axis={axis} fake={fake}")


def test_all_float32_pass_is_refused_where_float32_cannot_hold_the_codes(monkeypatch):
    keys = _spy_keys(monkeypatch)
    x = np.float32([0.1, -0.3, 7.0])
    conv = rq.conventions.get("onnx")
    rq.fake_quantize(x, 0.1, 0, fmt=rq.int8, convention=conv)  # taken
    rq.quantize(x, np.float32(0.1), 0, fmt=rq.int32, convention=conv)  # codes past 2**22
    rq.fake_quantize(x, np.float32(0.1), 2**23, qmin=0, qmax=2**24, convention=conv)  # zero point
    rq.fake_quantize(x.astype(np.float64), 0.1, 0, fmt=rq.int8, convention=conv)  # float64 output
    rq.fake_quantize(x, np.float32(0.1), 0, fmt=rq.int8, convention="torch.fake_quantize",
                     rounding="stochastic", rng=0)  # draws
    assert [key.fast32 for key in keys] == [True, False, False, False, False]


@pytest.mark.parametrize("impl", ["dispatch", "bits"])
@pytest.mark.parametrize("fmt", [2, 3])
def test_float32_half_conversions_every_pattern(fmt, impl):
    """half_to_f32, f32_to_half and rnd32 against NumPy / ml_dtypes for every half pattern and
    for float32 values at and between the half format's rounding points: as the kernels call them
    (float16 by the CPU's conversion where it has one) and in integer arithmetic (the path of a
    CPU without it)."""
    half_to_f32, f32_to_half, rnd32 = (
        (k.half_to_f32, k.f32_to_half, k.rnd32) if impl == "dispatch"
        else (k.half_to_f32_bits, k.f32_to_half_bits, k.rnd32_bits))
    dtype = np.dtype(np.float16) if fmt == 2 else _bfloat16()
    patterns = np.arange(2**16, dtype=np.uint16)
    with np.errstate(invalid="ignore"):
        wide = patterns.view(dtype).astype(np.float32)
    got = np.array([half_to_f32(int(b), fmt) for b in patterns], np.float32)
    finite = np.isfinite(wide)
    assert_bitwise_equal(got[finite], wide[finite])
    assert (np.isnan(got) == np.isnan(wide)).all() and (got[np.isinf(wide)] == wide[np.isinf(wide)]).all()
    mid = wide[finite].astype(np.float64)
    rng = np.random.default_rng(3)
    m32 = mid.astype(np.float32)
    between = np.concatenate([mid, np.nextafter(m32, np.float32(np.inf)).astype(np.float64),
                              np.nextafter(m32, np.float32(-np.inf)).astype(np.float64),
                              (mid[:-1] + mid[1:]) / 2,
                              rng.standard_normal(3000) * 10.0 ** rng.integers(-45, 38, 3000),
                              [65519.996, 65520.0, 3.3961e38, -65520.0, 1e-45, 3e-8, 2.9802322387695312e-08]])
    with np.errstate(all="ignore"):
        v = between.astype(np.float32)
        v = v[np.isfinite(v)]
        want = v.astype(dtype).view(np.uint16)
    got = np.array([f32_to_half(x, fmt) for x in v], np.int64) & 0xFFFF
    assert (got == want.astype(np.int64)).all(), v[got != want][:5]
    rounded = np.array([rnd32(x, fmt) for x in v], np.float32)
    with np.errstate(all="ignore"):
        assert_bitwise_equal(rounded, v.astype(dtype).astype(np.float32))


_NO_F16C = """
import sys, numpy as np
import refquant as rq
from refquant._kernels import _jit
x = np.frombuffer(sys.stdin.buffer.read(), np.float16)
y = rq.fake_quantize(x, 0.0123, 3, qmin=-128, qmax=127, convention="torchao")
e = rq.fake_quantize(x, 0.0123, 3, qmin=-128, qmax=127)
sys.stdout.buffer.write(bytes([_jit.HAS_F16C]) + y.tobytes() + e.tobytes())
"""


def test_a_cpu_without_float16_conversions_gets_the_same_bits(tmp_path):
    """Numba told to compile for this CPU less F16C (as on an x86 CPU without it) takes the
    integer-arithmetic conversions, with the same float16 bits (a fresh process and cache)."""
    import os
    import subprocess
    import sys

    from numba.core.codegen import get_host_cpu_features

    features = [f for f in str(get_host_cpu_features()).split(",") if f and f[1:] != "f16c"]
    env = dict(os.environ, NUMBA_CPU_FEATURES=",".join(features + ["-f16c"]),
               NUMBA_CACHE_DIR=str(tmp_path))
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(4096) * 2).astype(np.float16)
    x[:6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 6e-8]
    done = subprocess.run([sys.executable, "-c", _NO_F16C], input=x.tobytes(), env=env,
                          capture_output=True, timeout=600, check=True)
    out = done.stdout
    assert out[0] == 0  # the integer path was compiled
    y = np.frombuffer(out[1:1 + x.nbytes], np.float16)
    e = np.frombuffer(out[1 + x.nbytes:], np.float16)
    assert_bitwise_equal(y, rq.fake_quantize(x, 0.0123, 3, qmin=-128, qmax=127, convention="torchao"))
    assert_bitwise_equal(e, rq.fake_quantize(x, 0.0123, 3, qmin=-128, qmax=127))
