"""choose_qparams against Fraction oracles written from the backends' formulas."""

from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refquant as rq
from refquant import qparams as qp
from tests.references import round_half_even, round_to_format

RNG = np.random.default_rng(7)


def f32(v):
    return round_to_format(F(v), "float32")


def random_pairs(n=300):
    mags = 10.0 ** RNG.uniform(-8, 8, n)
    a = (RNG.standard_normal(n) * mags).astype(np.float32)
    b = (RNG.standard_normal(n) * mags).astype(np.float32)
    extra = np.float32([[0, 0], [1, 1], [-1, -1], [-1e-30, 1e-30], [0, 1e-40], [-2, 0], [0, 7]])
    return (np.concatenate([np.minimum(a, b), extra[:, 0]]),
            np.concatenate([np.maximum(a, b), extra[:, 1]]))


def oracle_torch_affine(mn, mx, lo, hi, eps=F(2) ** -23):
    mn, mx = float(mn), float(mx)
    mn_, mx_ = min(F(mn), 0), max(F(mx), 0)
    s = F(max(f32(F(f32(mx_ - mn_)) / (hi - lo)), eps))
    r = round_half_even(F(f32(mn_ / s)))
    return s, min(max(lo - r, lo), hi)


def oracle_torch_symmetric(mn, mx, lo, hi, eps=F(2) ** -23):
    mn, mx = float(mn), float(mx)
    amax = max(-min(F(mn), 0), max(F(mx), 0))
    return max(F(f32(amax / F(f32(F(hi - lo) / 2)))), eps)


@pytest.mark.parametrize("lo,hi", [(0, 255), (-128, 127), (-8, 7), (0, 15), (-64, 63)])
def test_torch_affine_and_symmetric(lo, hi):
    mn, mx = random_pairs()
    s, z = rq.choose_qparams(mn, mx, qmin=lo, qmax=hi)
    assert s.dtype == np.float32 and z.dtype == np.int32
    ss, zs = rq.choose_qparams(mn, mx, qmin=lo, qmax=hi, symmetric=True)
    assert ss.dtype == np.float32 and zs.dtype == np.int64
    for i in range(len(mn)):
        es, ez = oracle_torch_affine(mn[i], mx[i], lo, hi)
        assert (float(s[i]), int(z[i])) == (float(es), ez), (mn[i], mx[i])
        assert float(ss[i]) == float(oracle_torch_symmetric(mn[i], mx[i], lo, hi))
        assert int(zs[i]) == ((lo + hi) // 2 if lo == 0 else 0)


def test_torch_float_qparams():
    mn, mx = random_pairs()
    s, z = rq.choose_qparams(mn, mx, qmin=0, qmax=255, qscheme="per_channel_affine_float_qparams")
    assert s.dtype == z.dtype == np.float32
    for i in range(len(mn)):
        es = f32(F(f32(F(float(mx[i])) - F(float(mn[i])))) / 255)
        es = es if es > 2.0**-23 else 1.0
        assert float(s[i]) == es
        assert float(z[i]) == f32(-F(float(mn[i])) / F(float(es)))


def test_torch_defaults_and_dtypes():
    assert qp.torch_qrange(dtype="qint8", reduce_range=True)[:2] == (-64, 63)
    assert qp.torch_qrange(dtype="qint32", reduce_range=True)[:2] == (-(2**31), 2**31 - 1)
    assert qp.torch_qrange(-128, 127, reduce_range=True)[:2] == (-64, 63)
    assert qp.torch_qrange(0, 255, reduce_range=True)[:2] == (0, 127)
    s, z = rq.choose_qparams(np.inf, -np.inf, dtype="quint8")
    assert (float(s), int(z)) == (1.0, 0)
    with pytest.raises(NotImplementedError):
        rq.choose_qparams(-1.0, 1.0, dtype="quint8", symmetric=True, reduce_range=True)


def oracle_torchao(mn, mx, lo, hi, fmt, mapping):
    r = lambda v: F(round_to_format(F(v), fmt))  # noqa: E731
    mn_, mx_ = min(F(mn), 0), max(F(mx), 0)
    eps = F(2) ** (-14 if fmt == "float16" else -126)
    if mapping == "asymmetric":
        s = max(r(r(mx_ - mn_) / (hi - lo)), eps)
        z = r(lo - round_half_even(r(mn_ / s)))
        return s, int(min(max(z, lo), hi))
    if mapping == "symmetric":
        s = r(max(-mn_, mx_) / (F(hi - lo) / 2))
    else:
        smin, smax = r(mn_ / lo), r(mx_ / hi)
        s = smin if smin > smax else smax
    return max(s, eps), int((hi + lo + 1) / 2)


@pytest.mark.parametrize("fmt", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("mapping", ["asymmetric", "symmetric", "symmetric_no_clipping_err"])
@pytest.mark.parametrize("lo,hi", [(-128, 127), (0, 255), (-8, 7)])
def test_torchao_op_by_op(fmt, mapping, lo, hi):
    if mapping == "symmetric_no_clipping_err" and lo == 0:
        pytest.skip("qmin = 0 divides by zero")
    from refquant._dtypes import bfloat16

    if fmt == "bfloat16" and bfloat16() is None:
        pytest.skip("bfloat16 needs ml_dtypes")
    dt = {"bfloat16": bfloat16(), "float16": np.float16, "float32": np.float32}[fmt]
    mn, mx = random_pairs(200)
    if fmt == "float16":
        keep = (np.abs(mn) < 3e4) & (np.abs(mx) < 3e4)
        mn, mx = mn[keep], mx[keep]
    mn, mx = mn.astype(dt), mx.astype(dt)
    s, z = qp.torchao_qparams(mn, mx, lo, hi, mapping=mapping)
    assert s.dtype == np.dtype(dt) and z.dtype == np.int32
    for i in range(len(mn)):
        es, ez = oracle_torchao(float(mn[i]), float(mx[i]), lo, hi, fmt, mapping)
        assert (float(s[i]), int(z[i])) == (float(es), ez), (mn[i], mx[i])


def test_onnx_oracle():
    mn, mx = random_pairs()
    s, z = rq.choose_qparams(mn, mx, method="onnx")
    assert s.dtype == np.float32 and z.dtype == np.uint8
    for i in range(len(mn)):
        lo, hi = min(F(float(mn[i])), 0), max(F(float(mx[i])), 0)
        es = f32(F(f32(hi - lo) if hi != lo else 1) / 255)
        z0 = F(f32(0 - F(f32(lo / F(float(es))))))
        assert float(s[i]) == es
        assert int(z[i]) == round_half_even(min(max(z0, 0), 255))


@pytest.mark.parametrize("variant,div", [("amax/127.5", F(255, 2)), ("amax/127", 127),
                                         ("amax/128", 128)])
def test_amax_variants(variant, div):
    mn, mx = random_pairs()
    s, z = rq.choose_qparams(mn, mx, fmt=rq.int8, method=variant)
    for i in range(len(mn)):
        assert float(s[i]) == f32(max(abs(F(float(mn[i]))), abs(F(float(mx[i])))) / div)
    assert not z.any()


def test_fbgemm_known_values():
    assert rq.choose_qparams(0.0, 0.0, fmt=rq.uint8, method="fbgemm") == (0.1, 0)
    s, z = rq.choose_qparams(-1e-6, 1e-6, fmt=rq.uint8, method="fbgemm")
    assert (float(s), int(z)) == (float(np.float32(6.1e-5)), 128)
    s, z = rq.choose_qparams(-1.0, 1.0, fmt=rq.int8, symmetric=True, method="fbgemm")
    m = F(f32(F(1) / 127))
    assert int(z) == 0 and float(s) == f32((F(f32(127 * m)) - F(f32(-128 * m))) / 255)
    s, z = rq.choose_qparams(-1.0, 0.5, fmt=rq.uint8, method="fbgemm",
                             small_scale_threshold=False)
    assert float(s) == f32(F(3, 2) / 255)


@pytest.mark.parametrize("method", ["torch", "fbgemm", "torchao", "onnx", "amax/127.5"])
def test_errors_and_no_mutation(method):
    kw = {} if method == "onnx" else {"fmt": rq.uint8 if method != "amax/127.5" else rq.int8}
    # FBGEMM checks nothing and torchao takes non-finite ranges (their results are tested against
    # the backends in tests/cross); every other rule refuses these ranges
    refused = {"fbgemm": [], "torchao": [(2.0, 1.0)]}.get(
        method, [(np.nan, 1.0), (-1.0, np.inf), (2.0, 1.0)])
    for bad in refused:
        with pytest.raises(ValueError, match="min_val"):
            rq.choose_qparams(*bad, method=method, **kw)
    mn, mx = np.float32([-1, 0]), np.float32([2, 3])
    c1, c2 = mn.copy(), mx.copy()
    rq.choose_qparams(mn, mx, method=method, **kw)
    np.testing.assert_array_equal(mn, c1)
    np.testing.assert_array_equal(mx, c2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        rq.choose_qparams(0.0, 1.0, fmt=rq.int8, method="nope")
    with pytest.raises(ValueError, match="qscheme"):
        rq.choose_qparams(0.0, 1.0, fmt=rq.int8, qscheme="per_tensor_symmetric")
    with pytest.raises(ValueError, match="dtype"):
        rq.choose_qparams(0.0, 1.0, dtype="qint4")
    with pytest.raises(ValueError, match="narrow"):
        rq.choose_qparams(0.0, 1.0, fmt=rq.int8, method="amax/127-narrow")
    with pytest.raises(TypeError, match="min_val"):
        rq.choose_qparams("a", 1.0, fmt=rq.int8)


finite32 = st.floats(-(2.0**100), 2.0**100, width=32)


@settings(deadline=None, max_examples=40)
@given(st.lists(st.tuples(finite32, finite32), min_size=1, max_size=8),
       st.sampled_from(["torch", "fbgemm", "torchao", "onnx", "amax/127"]),
       st.booleans())
def test_per_channel_equals_per_tensor(pairs, method, symmetric):
    mn = np.float32([min(a, b) for a, b in pairs])
    mx = np.float32([max(a, b) for a, b in pairs])
    kw = {} if method == "onnx" else {"fmt": rq.int8}
    if method in ("onnx", "amax/127"):
        symmetric = False
    s, z = rq.choose_qparams(mn, mx, symmetric=symmetric, method=method, **kw)
    for i in range(len(mn)):
        si, zi = rq.choose_qparams(mn[i], mx[i], symmetric=symmetric, method=method, **kw)
        assert np.float32(si).view(np.uint32) == s[i].view(np.uint32) and zi == z[i]
        assert np.asarray(si).dtype == s.dtype and np.asarray(zi).dtype == z.dtype


def test_torch_custom_ranges_checked_as_torch_observers_do():
    # torch.ao: validate_qmin_qmax and calculate_qmin_qmax raise AssertionError here
    with pytest.raises(ValueError, match="includes 0"):
        rq.choose_qparams(-1.0, 1.0, qmin=1, qmax=10)
    with pytest.raises(ValueError, match="includes 0"):
        rq.choose_qparams(-1.0, 1.0, qmin=-10, qmax=-1)
    with pytest.raises(ValueError, match="qmin < qmax"):
        rq.choose_qparams(-1.0, 1.0, qmin=0, qmax=0)
    with pytest.raises(ValueError, match="256"):
        rq.choose_qparams(-1.0, 1.0, qmin=-200, qmax=100, dtype="qint8")
    # without a dtype, a wide signed range is int16 or qint32, as a torch user would pick
    assert qp.torch_qrange(-(2**15), 2**15 - 1)[2] == "int16"
    assert qp.torch_qrange(-(2**20), 2**20)[2] == "qint32"
    assert qp.torch_qrange(-200, 100)[2] == "int16"
    assert qp.torch_qrange(0, 1000)[2] == "quint8"
    s, z = rq.choose_qparams(-1.0, 1.0, qmin=-(2**15), qmax=2**15 - 1, symmetric=True)
    assert float(s) == f32(F(1) / F(65535, 2)) and z == 0


@pytest.mark.parametrize("method", ["fbgemm", "torchao"])
def test_empty_integer_range_is_an_error(method):
    with pytest.raises(ValueError, match="qmin must be < qmax"):
        rq.choose_qparams(-1.0, 1.0, qmin=3, qmax=3, method=method)


def test_onnx_tiny_range_quietly_as_the_reference():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s, z = rq.choose_qparams(np.float32(-1e-45), np.float32(0.0), method="onnx")
    assert float(s) == 0.0 and z == 255  # -1e-45 / 255 underflows; 0 - (-x / 0) = +inf -> 255
