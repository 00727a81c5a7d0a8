"""refquant.nvfp4 under the ``torchao`` convention against torchao's nvfp4_quantize and
NVFP4Tensor dequantize, bit for bit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refquant as rq
from tests.cross.test_affine_torch import to_torch
from tests.nvfp4_cases import blocks, special_rows
from tests.references import assert_bitwise_equal

torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    nv = pytest.importorskip("torchao.prototype.mx_formats.nvfp4_tensor")



def torchao(x, g):
    t = to_torch(x)
    scale, packed = nv.nvfp4_quantize(t, block_size=16, per_tensor_scale=torch.tensor(g, dtype=torch.float32))
    p = packed.view(torch.uint8).numpy().reshape(x.shape[0], -1)
    codes = np.stack([p & 15, p >> 4], axis=-1).reshape(x.shape).astype(np.uint8)
    return codes, scale.view(torch.uint8).numpy()


def check(x, g, convention="torchao"):
    codes, scales = torchao(x, g)
    q, s, gs = rq.nvfp4.quantize(x, global_scale=g, convention=convention)
    assert_bitwise_equal(q, codes, "codes")
    assert_bitwise_equal(s, scales, "scales")
    # dequantize as NVFP4Tensor does: f32(q * f32(g * s)), then the dtype
    t = nv.NVFP4Tensor.to_nvfp4(to_torch(x), per_tensor_scale=torch.tensor(g, dtype=torch.float32))
    ref = t.dequantize(torch.float32).numpy()
    assert_bitwise_equal(rq.nvfp4.dequantize(q, s, gs, convention=convention), ref, "dequantize")


@pytest.mark.parametrize("g", [1.0, 2.0**-10, 0.0123, 3.5e-6])
def test_adversarial_blocks_bitwise(g):
    x = blocks(g)
    check(x, np.float32(g))


def test_bfloat16_and_global_from_amax():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((64, 64)) * 5).astype(ml_dtypes.bfloat16)
    amax = torch.from_numpy(np.abs(x.astype(np.float32)).max(keepdims=True)).reshape(())
    g = nv.per_tensor_amax_to_scale(amax)
    codes, scales = torchao(x, float(g))
    q, s, gs = rq.nvfp4.quantize(x, convention="torchao")
    assert np.float32(gs).view(np.uint32) == g.numpy().view(np.uint32)
    assert_bitwise_equal(q, codes, "codes")
    assert_bitwise_equal(s, scales, "scales")


def test_single_level_is_global_scale_one():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((8, 64)) * 100).astype(np.float32)
    scale, packed = nv.nvfp4_quantize(torch.from_numpy(x), block_size=16)
    p = packed.view(torch.uint8).numpy().reshape(8, -1)
    codes = np.stack([p & 15, p >> 4], axis=-1).reshape(x.shape)
    q, s, _ = rq.nvfp4.quantize(x, global_scale=1.0, convention="torchao")
    assert_bitwise_equal(q, codes.astype(np.uint8), "codes")
    assert_bitwise_equal(s, scale.view(torch.uint8).numpy(), "scales")


@pytest.mark.parametrize("k", range(4))
def test_nonfinite_blocks(k):
    """NaN and inf blocks under the variant measured on this torch (``detect``)."""
    check(special_rows()[k], np.float32(0.01), rq.nvfp4.detect("torchao"))


def test_nan_times_nan_lanes_differ():
    """In a NaN-scale block, a NaN element is NaN * NaN: the vector kernels keep the scale's NaN
    (code 4) in all 16 positions, torch's DEFAULT kernels in the first 3 only (code 3 after)."""
    x = np.full((1, 16), np.nan, np.float32)
    vec, _, _ = rq.nvfp4.quantize(x, global_scale=0.01, convention="torchao")
    default = rq.nvfp4.conventions.get("torchao").replace(nan_multiplier_lanes=3)
    dft, _, _ = rq.nvfp4.quantize(x, global_scale=0.01, convention=default)
    assert vec.tolist() == [[4] * 16] and dft.tolist() == [[4] * 3 + [3] * 13]


_CHILD = """
import numpy as np, refquant as rq
from tests.cross.test_nvfp4_torchao import check, special_rows
conv = rq.nvfp4.detect("torchao")
for k in range(4):
    check(special_rows()[k], np.float32(0.01), conv)
print(conv.nan_multiplier_lanes)
"""


@pytest.mark.parametrize("capability", ["default", None])
def test_nonfinite_blocks_under_each_kernel_set(capability):
    """In a child process per ATEN_CPU_CAPABILITY: detect's variant reproduces torchao."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, cwd=root,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lanes = int(r.stdout.split()[-1])
    assert lanes == 3 if capability == "default" else lanes in (3, 16)


@settings(deadline=None, max_examples=40)
@given(st.integers(1, 5), st.integers(1, 4), st.sampled_from(["float32", "bfloat16"]),
       st.sampled_from([None, 1.0, 0.013, 2.0**-30]), st.integers(0, 2**32 - 1))
def test_random_tensors_bitwise(rows, nblocks, dtname, g, seed):
    rng = np.random.default_rng(seed)
    spread = np.exp(3 * rng.standard_normal((rows, nblocks))).repeat(16, 1)
    x = rng.standard_normal((rows, 16 * nblocks)) * spread
    x = x.astype(np.float32)
    if dtname == "bfloat16":
        x = x.astype(ml_dtypes.bfloat16)
    if g is None:
        g = np.float32(np.abs(x.astype(np.float32)).max()) / np.float32(2688)
    codes, scales = torchao(x, np.float32(g))
    q, s, _ = rq.nvfp4.quantize(x, global_scale=g, convention="torchao")
    assert_bitwise_equal(q, codes, "codes")
    assert_bitwise_equal(s, scales, "scales")
