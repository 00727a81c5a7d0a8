"""Peer conventions against their formulas as read from the libraries' source, emulated with NumPy
float32 operations: the packages need a CUDA torch to install."""

import numpy as np
import pytest

import refquant as rq
from tests.references import assert_bitwise_equal, bits, tie_heavy

CONFIGS = [(0.0123, 3, 0, 255), (0.1, 0, -128, 127), (1 / 3, 7, 0, 15), (0.0025, 128, 0, 255)]


def half_away(t):
    """std::round: ties away from zero, computed exactly (float64 holds |t| + 1/2 exactly here)."""
    t64 = t.astype(np.float64)
    return (np.sign(t64) * np.floor(np.abs(t64) + 0.5)).astype(np.float32)


def emulate(name, x, s, z, lo, hi):
    s32, z32 = np.float32(s), np.float32(z)
    t = x / s32                                    # float32 division
    if name == "aimet":
        q = np.clip(np.rint(t) + z32, lo, hi)      # formula B
    elif name == "brevitas":
        q = np.clip(np.rint(t + z32), lo, hi)      # formula C: zero point before rounding
    else:
        q = np.clip(half_away(t) + z32, lo, hi)    # tflite reference: std::round
    return q, (q - z32) * s32


@pytest.mark.parametrize("name", ["aimet", "brevitas", "tflite"])
@pytest.mark.parametrize("s,z,lo,hi", CONFIGS)
def test_peer_formula_bitwise(name, s, z, lo, hi):
    x = tie_heavy(float(np.float32(s)), z, lo, hi, 200_000, seed=abs(lo) + z)
    x = np.concatenate([x, np.float32([np.inf, -np.inf, 1e6, -1e6, 0.0, -0.0])])
    q_ref, y_ref = emulate(name, x, s, z, lo, hi)
    q = rq.quantize(x, np.float32(s), z, qmin=lo, qmax=hi, convention=name)
    assert_bitwise_equal(q.astype(np.int64), q_ref.astype(np.int64), name)
    y = rq.fake_quantize(x, np.float32(s), z, qmin=lo, qmax=hi, convention=name)
    assert_bitwise_equal(y, y_ref.astype(np.float32), name)


def test_tflite_saturates_huge_inputs():
    q = rq.quantize(np.float32([1e30, -1e30]), np.float32(0.1), 0, qmin=-128, qmax=127,
                    convention="tflite")
    assert q.tolist() == [127, -128]


def test_peers_differ_where_the_research_says():
    s, z, lo, hi = np.float32(0.0123), 100, 0, 255
    x = tie_heavy(float(s), z, lo, hi, 200_000, seed=1)
    codes = {n: rq.quantize(x, s, z, qmin=lo, qmax=hi, convention=n)
             for n in ("aimet", "brevitas", "tflite", "torch.fake_quantize")}
    assert (codes["aimet"] != codes["brevitas"]).any()      # B vs C
    assert (codes["aimet"] != codes["tflite"]).any()        # ties
    assert (codes["aimet"] != codes["torch.fake_quantize"]).any()  # division vs reciprocal


def test_peer_nan():
    x = np.float32([np.nan, 1.0])
    assert np.isnan(rq.fake_quantize(x, 0.1, 0, qmin=-8, qmax=7, convention="brevitas")[0])
    with pytest.raises(ValueError, match="NaN"):
        rq.quantize(x, 0.1, 0, qmin=-8, qmax=7, convention="tflite")
    with pytest.raises(TypeError, match="float32"):
        rq.quantize(x.astype(np.float16), 0.1, 0, qmin=-8, qmax=7, convention="tflite")


def modelopt_fake_tensor_quant(x, amax, qmax, qmin):
    """ModelOpt 0.47 ``_tensor_quant`` + the CPU legacy fake path, in NumPy float32 (every torch op
    here is one IEEE float32 operation): ``scale = max_bound / amax``; ``clamp(round(x * scale))``;
    ``outputs / scale``."""
    m = np.float32(qmax) / np.float32(amax)
    tiny = np.float32(amax) <= np.float32(2.0**-24)  # ModelOpt: multiplier 0, divisor 1
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.clip(np.rint(x * (np.float32(0) if tiny else m)), np.float32(qmin), np.float32(qmax))
        return q, m, q / (np.float32(1) if tiny else m)


AMAX = [np.float32(3.7), np.float32(0.0123) * 127, np.float32(1.0), np.float32(448.0 / 3)]


def test_modelopt_multiplier_is_the_float32_reciprocal_of_the_scale():
    # f32(qmax / amax) (one float32 division) == f32(1 / s) for s = float64(amax / qmax):
    # the claim behind reading refquant's scale as amax / qmax
    rng = np.random.default_rng(0)
    amax = np.concatenate([rng.uniform(1e-3, 1e3, 100_000), np.float32(AMAX)]).astype(np.float32)
    for qmax in (7, 127, 255, 32767):
        m = np.float32(qmax) / amax
        s = amax.astype(np.float64) / qmax
        assert_bitwise_equal((1.0 / s).astype(np.float32), m, f"qmax {qmax}")


@pytest.mark.parametrize("amax", AMAX)
@pytest.mark.parametrize("qmin,qmax", [(-127, 127), (-128, 127), (0, 255)])
def test_modelopt_codes_are_reciprocal_float64_codes(amax, qmin, qmax):
    s = float(amax) / qmax
    x = tie_heavy(s, 0, qmin, qmax, 100_000, seed=qmax)
    if qmin == 0:
        x = np.abs(x)  # ModelOpt's unsigned quantization refuses negative inputs
    x = np.concatenate([x, np.float32([np.inf, -np.inf, 1e30, -1e30, 0.0, -0.0])])
    q, m, fake = modelopt_fake_tensor_quant(x, amax, qmax, qmin)
    ours = rq.quantize(x, s, 0, qmin=qmin, qmax=qmax, convention="torch.decomposed")
    assert_bitwise_equal(ours.astype(np.int64), q.astype(np.int64), "codes")
    # the dequantization is a division: multiplying by the scale disagrees in the last bit often
    times_s = (q.astype(np.float64) * s).astype(np.float32)
    if 1.0 / np.float64(m) != s:  # (amax = 1.0: m = qmax exactly and the two agree)
        assert (bits(times_s) != bits(fake)).mean() > 0.05
    # ... while one rounding of q * float64(1 / m) is the division (|q| < 2**24: q / m is at least
    # 2**-49 relatively away from a float32 midpoint, far more than float64's 2**-53)
    via_inverse = ((q.astype(np.float64) * (1.0 / np.float64(m))).astype(np.float32))
    keep = q != 0  # ModelOpt keeps -0.0 for a zero code of a negative x; q * (1 / m) does too
    assert_bitwise_equal(via_inverse[keep], fake[keep], "division")
    rounded_to_zero = (x < 0) & (x * m >= -0.5)  # rne gives -0.0; clamped ones give +0.0
    assert rounded_to_zero.any() == (qmin < 0) and np.signbit(fake[rounded_to_zero]).all()


def test_brevitas_signed_zero():
    y = rq.fake_quantize(np.float32([-0.01, 0.01]), np.float32(0.1), 0, qmin=-8, qmax=7,
                         convention="brevitas")
    assert np.signbit(y).tolist() == [True, False] and (y == 0).all()


@pytest.mark.parametrize("amax", [*AMAX, np.float32(2.0**-24), np.float32(2.0**-23)])
@pytest.mark.parametrize("qmin,qmax", [(-127, 127), (-128, 127), (0, 255), (-7, 7)])
def test_modelopt_row_bitwise(amax, qmin, qmax):
    s = float(amax) / qmax
    x = tie_heavy(s, 0, qmin, qmax, 100_000, seed=qmax + 1)
    if qmin == 0:
        x = np.abs(x)
    x = np.concatenate([x, np.float32([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, -0.0, -1e-30])])
    q_ref, _, fake_ref = modelopt_fake_tensor_quant(x, amax, qmax, qmin)
    fake = rq.fake_quantize(x, s, 0, qmin=qmin, qmax=qmax, convention="modelopt")
    assert_bitwise_equal(fake, fake_ref, "fake_quantize, signed zeros and NaN included")
    finite = ~np.isnan(q_ref)
    q = rq.quantize(x[finite], s, 0, qmin=qmin, qmax=qmax, convention="modelopt")
    assert_bitwise_equal(q.astype(np.int64), q_ref[finite].astype(np.int64), "codes")
    dq = rq.dequantize(q, s, 0, convention="modelopt")
    assert_bitwise_equal(dq, (q_ref[finite] / (np.float32(1) if amax <= 2.0**-24 else
                                               np.float32(qmax) / amax)) + np.float32(0), "dequantize")


def test_modelopt_refuses_a_zero_point_and_other_dtypes():
    with pytest.raises(ValueError, match="zero_point must be 0"):
        rq.fake_quantize(np.float32([1.0]), 0.1, 3, qmin=-127, qmax=127, convention="modelopt")
    with pytest.raises(TypeError, match="float32"):
        rq.fake_quantize(np.float16([1.0]), 0.1, 0, qmin=-127, qmax=127, convention="modelopt")
