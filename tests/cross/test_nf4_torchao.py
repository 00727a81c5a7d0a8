"""refquant.nf4 under the ``torchao`` convention against torchao's NF4Tensor (``to_nf4``), bit for
bit: codes, double-quantized scalers (int8 codes, factors, mean) and the dequantized weight."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import refquant as rq
from tests.cross.test_affine_torch import to_numpy, to_torch
from tests.nf4_cases import block_cases, pad_to, special_blocks
from tests.references import assert_bitwise_equal

torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    nf4_tensor = pytest.importorskip("torchao.quantization.quantize_.workflows.nf4.nf4_tensor")

DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}




def unpacked(packed, n):
    p = packed.reshape(-1).numpy()
    return np.stack([p >> 4, p & 15], axis=1).reshape(-1)[:n].astype(np.uint8)


def check(x):
    t = nf4_tensor.to_nf4(to_torch(x).reshape(-1, 64), 64, 256)
    codes, state = rq.nf4.quantize(x, double_quant=True, convention="torchao")
    assert_bitwise_equal(codes, unpacked(t.quantized_data, x.size), "codes")
    assert_bitwise_equal(state.nested_codes, t.quantized_scalers.numpy(), "quantized scalers")
    assert_bitwise_equal(state.nested_scale, to_numpy(t.quantization_factor), "quantization factor")
    assert_bitwise_equal(np.asarray(state.offset), to_numpy(t.scaler_mean), "scaler mean")
    ref = to_numpy(t.get_original_weight()).reshape(-1)
    assert_bitwise_equal(rq.nf4.dequantize(codes, state), ref, "dequantize")
    assert_bitwise_equal(rq.nf4.fake_quantize(x, double_quant=True, convention="torchao"), ref, "fake")


@pytest.mark.parametrize("dtname", list(DTYPES))
def test_adversarial_blocks_bitwise(dtname):
    levels = rq.nf4.codebook("nf4", convention="torchao", dtype=DTYPES[dtname])
    check(pad_to(block_cases(levels, DTYPES[dtname]), 64 * 256))
    check(pad_to(block_cases(rq.nf4.codebook("nf4"), DTYPES[dtname], seed=2), 64 * 256))


@pytest.mark.parametrize("dtname", list(DTYPES))
def test_random_bitwise(dtname):
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((512, 64)) * np.exp(2 * rng.standard_normal((512, 1)))).astype(DTYPES[dtname])
    check(x.reshape(-1))


@pytest.mark.parametrize("dtname", list(DTYPES))
def test_nonfinite_blocks(dtname):
    for x in special_blocks(DTYPES[dtname]):
        check(pad_to(x, 64 * 256))


def test_codebook_in_each_dtype():
    t = nf4_tensor.to_nf4(torch.zeros(64 * 256), 64, 256)
    assert_bitwise_equal(rq.nf4.codebook("nf4", convention="torchao").astype(np.float32),
                         t.nf4.numpy(), "float32")
    for name, dt in DTYPES.items():
        t = nf4_tensor.to_nf4(to_torch(np.zeros(64 * 256, dt)), 64, 256)
        assert_bitwise_equal(rq.nf4.codebook("nf4", convention="torchao", dtype=dt).astype(dt),
                             to_numpy(t.nf4), name)
