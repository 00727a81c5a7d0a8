"""refquant.nf4 under the ``bitsandbytes`` convention against bitsandbytes' CPU quantize_4bit /
dequantize_4bit, bit for bit: codes, absmax, double-quantization fields and dequantized values."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refquant as rq
from tests.cross.test_affine_torch import to_numpy, to_torch
from tests.nf4_cases import block_cases, pad_to, special_blocks
from tests.references import assert_bitwise_equal

torch = pytest.importorskip("torch")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    try:
        F = pytest.importorskip("bitsandbytes.functional")
    finally:
        logging.disable(logging.NOTSET)
ml_dtypes = pytest.importorskip("ml_dtypes")

ROW = rq.nf4.detect("bitsandbytes")
DTYPES = {"float32": (np.float32, torch.float32), "float16": (np.float16, torch.float16),
          "bfloat16": (ml_dtypes.bfloat16, torch.bfloat16)}




def bnb_unpacked(packed, n):
    p = packed.reshape(-1).numpy()
    return np.stack([p >> 4, p & 15], axis=1).reshape(-1)[:n].astype(np.uint8)


def run_bnb(x, quant_type, compress):
    npdt, tdt = DTYPES[np.dtype(x.dtype).name]
    t = to_torch(x)
    packed, st = F.quantize_4bit(t, blocksize=64, compress_statistics=compress, quant_type=quant_type)
    deq = F.dequantize_4bit(packed, st, quant_type=quant_type)
    return packed, st, to_numpy(deq).reshape(x.shape)


def inputs(codebook, dtname):
    npdt = DTYPES[dtname][0]
    x = block_cases(rq.nf4.codebook(codebook), npdt)
    return pad_to(x, 64 * 256)


@pytest.mark.parametrize("dtname", list(DTYPES))
@pytest.mark.parametrize("codebook", ["nf4", "fp4"])
@pytest.mark.parametrize("compress", [False, True])
def test_adversarial_blocks_bitwise(dtname, codebook, compress):
    x = inputs(codebook, dtname)
    packed, st, deq = run_bnb(x, codebook, compress)
    codes, state = rq.nf4.quantize(x, block=64, double_quant=compress, codebook=codebook,
                                   convention=ROW)
    assert_bitwise_equal(codes, bnb_unpacked(packed, x.size), "codes")
    if compress:
        assert_bitwise_equal(state.nested_codes, st.absmax.numpy(), "nested codes")
        assert_bitwise_equal(state.nested_scale, st.state2.absmax.numpy(), "nested absmax")
        assert_bitwise_equal(np.float32(state.offset), np.float32(st.offset.item()), "offset")
    else:
        assert_bitwise_equal(state.absmax, st.absmax.numpy(), "absmax")
    assert_bitwise_equal(rq.nf4.dequantize(codes, state), deq, "dequantize")
    assert_bitwise_equal(rq.nf4.fake_quantize(x, double_quant=compress, codebook=codebook,
                                                               convention=ROW), deq, "fake")


@pytest.mark.parametrize("codebook", ["nf4", "fp4"])
def test_partial_trailing_block_divides(codebook):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(64 * 5 + 32) * 3).astype(np.float32)
    x[-7] = 4.5  # the trailing block's absmax
    packed, st, deq = run_bnb(x, codebook, False)
    codes, state = rq.nf4.quantize(x, codebook=codebook, convention=ROW)
    assert_bitwise_equal(codes, bnb_unpacked(packed, x.size), "codes")
    assert_bitwise_equal(state.absmax, st.absmax.numpy(), "absmax")
    assert_bitwise_equal(rq.nf4.dequantize(codes, state), deq, "dequantize")


@pytest.mark.parametrize("codebook", ["nf4", "fp4"])
@pytest.mark.parametrize("dtname", list(DTYPES))
def test_nonfinite_blocks(codebook, dtname):
    for x in special_blocks(DTYPES[dtname][0]):
        packed, st, deq = run_bnb(x, codebook, False)
        codes, state = rq.nf4.quantize(x, codebook=codebook, convention=ROW)
        assert_bitwise_equal(codes, bnb_unpacked(packed, x.size), "codes")
        assert_bitwise_equal(state.absmax, st.absmax.numpy(), "absmax")
        assert_bitwise_equal(rq.nf4.dequantize(codes, state), deq, "dequantize")


@pytest.mark.parametrize("compress", [False, True])
def test_random_2d_bitwise(compress):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((256, 128)) * np.exp(rng.standard_normal((256, 1)))).astype(np.float32)
    packed, st, deq = run_bnb(x, "nf4", compress)
    codes, state = rq.nf4.quantize(x, double_quant=compress, convention=ROW)
    assert_bitwise_equal(codes.reshape(-1), bnb_unpacked(packed, x.size), "codes")
    assert_bitwise_equal(rq.nf4.dequantize(codes, state), deq, "dequantize")


def test_dynamic_map_is_bitsandbytes():
    assert_bitwise_equal(rq.nf4.dynamic_map(), F.create_dynamic_map().numpy(), "dynamic map")


def test_codebooks_are_bitsandbytes():
    for name in ("nf4", "fp4"):
        ref = F.get_4bit_type(name, device="cpu").numpy()
        assert_bitwise_equal(rq.nf4.codebook(name).astype(np.float32), ref, name)


def test_bf16_subnormal_products():
    """bfloat16 dequantize of products below 2**-126: the detected row matches, the other does not."""
    x = np.zeros(128, np.float32)
    x[0], x[64] = 2.0**-127, -(2.0**-120)
    x[1:64] = np.linspace(-(2.0**-127), 2.0**-127, 63)
    x[65:] = np.linspace(-(2.0**-120), 2.0**-120, 63)
    xb = x.astype(ml_dtypes.bfloat16)
    packed, st, deq = run_bnb(xb, "nf4", False)
    other = "bitsandbytes" if ROW.name != "bitsandbytes" else "bitsandbytes.avx512_bf16"
    outs = {}
    for row in (ROW, rq.nf4.conventions.get(other)):
        codes, state = rq.nf4.quantize(xb, convention=row)
        outs[row.name] = rq.nf4.dequantize(codes, state)
    assert_bitwise_equal(outs[ROW.name], deq, ROW.name)
    assert (outs[other].view(np.uint16) != deq.view(np.uint16)).any()


def test_double_quant_mean_over_threads():
    """More than 32768 blocks: torch splits the absmax mean among its threads."""
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((40000, 64)) * np.exp(rng.standard_normal((40000, 1)))).astype(np.float32)
    packed, st, _ = run_bnb(x.reshape(-1), "nf4", True)
    _, state = rq.nf4.quantize(x, double_quant=True, convention=ROW)
    assert np.float32(state.offset) == np.float32(st.offset.item())
    assert_bitwise_equal(state.nested_codes, st.absmax.numpy(), "nested codes")


@settings(deadline=None, max_examples=40)
@given(st.integers(1, 6), st.sampled_from([32, 64, 128]), st.sampled_from(["nf4", "fp4"]),
       st.sampled_from(list(DTYPES)), st.booleans(), st.integers(0, 2**32 - 1))
def test_random_tensors_bitwise(rows, block, codebook, dtname, compress, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, 2 * block)) * np.exp(4 * rng.standard_normal((rows, 1))))
    with np.errstate(over="ignore"):  # past float16's range: inf, a value the kernels must take too
        x = x.astype(np.float32).astype(DTYPES[dtname][0])
    t = to_torch(x)
    packed, st_ = F.quantize_4bit(t, blocksize=block, compress_statistics=compress, quant_type=codebook)
    deq = to_numpy(F.dequantize_4bit(packed, st_, quant_type=codebook)).reshape(x.shape)
    codes, state = rq.nf4.quantize(x, block=block, double_quant=compress, codebook=codebook, convention=ROW)
    assert_bitwise_equal(codes.reshape(-1), bnb_unpacked(packed, x.size), "codes")
    assert_bitwise_equal(rq.nf4.dequantize(codes, state), deq, "dequantize")
