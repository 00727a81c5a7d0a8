"""quantized_decomposed.dequantize_per_channel against the ``torch.decomposed`` row, bit for bit.

torch computes ``(q - z) * s`` with tensors: ``q - z`` in the promotion of the code and zero-point
dtypes (int32 codes with an int32 zero-point tensor subtract in int32 and wrap), the product in the
scales' dtype (float64 scales: float64), then ``.to(out_dtype)`` (float64 reaches float16 /
bfloat16 through float32). The row's per-channel ``tensor`` dequant rule is that arithmetic.
"""

import warnings

import numpy as np
import pytest

import refquant as rq
from tests.references import assert_bitwise_equal

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

OUT = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16}
CODES = {"uint8": (0, 255), "int8": (-128, 127), "int16": (-(2**15), 2**15 - 1),
         "int32": (-(2**31), 2**31 - 1)}


def _ops():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization.fx import _decomposed  # noqa: F401  (registers the ops)
    return torch.ops.quantized_decomposed


def _both(q, s, z, code, out):
    lo, hi = CODES[code]
    t = _ops().dequantize_per_channel(torch.from_numpy(q), torch.from_numpy(s), torch.from_numpy(z),
                                      0, lo, hi, getattr(torch, code), out_dtype=OUT[out]).numpy()
    ours = rq.dequantize(q, s, z, axis=0, convention="torch.decomposed", dtype=out)
    return ours, t


def _codes(code, seed):
    lo, hi = CODES[code]
    rng = np.random.default_rng(seed)
    q = rng.integers(lo, hi + 1, (4, 64), dtype=np.int64)
    q[:, :4] = [lo, hi, 0, lo + 1]
    return q.astype(code)


@pytest.mark.parametrize("code", sorted(CODES))
@pytest.mark.parametrize("zp_dtype", ["int64", "int32"])
@pytest.mark.parametrize("out", sorted(OUT))
@pytest.mark.parametrize("s_dtype", ["float32", "float64"])
def test_every_dtype(code, zp_dtype, out, s_dtype):
    # zero points at the range ends: int32 codes minus int32 zero points wrap
    lo, hi = CODES[code]
    z = np.array([lo, hi, 0, 2**21 + 1 if hi > 2**22 else hi // 2], zp_dtype)
    s = np.array([0.1, 1e-40, 3e38, 2.0**-20 * 1.3], s_dtype)
    ours, theirs = _both(_codes(code, 1), s, z, code, out)
    assert_bitwise_equal(ours, theirs, f"{code} {zp_dtype} {out} {s_dtype}")


def test_float64_scales_multiply_in_float64():
    ours, theirs = _both(np.uint8([[1]]), np.float64([0.1]), np.int64([0]), "uint8", "float64")
    assert theirs.tolist() == [[0.1]]
    assert_bitwise_equal(ours, theirs)


def test_int32_codes_and_int32_zero_points_wrap():
    ours, theirs = _both(np.int32([[-(2**31)]]), np.float32([1.0]), np.int32([5]), "int32", "float32")
    assert theirs.tolist() == [[2.0**31]]  # -2**31 - 5 wraps to 2**31 - 5, 2**31 in float32
    assert_bitwise_equal(ours, theirs)
