"""Small synthetic checkpoints in the documented on-disk layouts, with oracles independent of
refquant (float64 arithmetic, one rounding through ml_dtypes), and helpers to plant faults."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from refquant.checkpoint import save_file

ml_dtypes = pytest.importorskip("ml_dtypes")  # the layouts hold bfloat16 weights

BF16 = np.dtype(ml_dtypes.bfloat16)


def rng_weights(shape, seed=0, dtype=BF16):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape) * rng.uniform(0.01, 2.0, size=(shape[0], 1))
    return w.astype(dtype)


def rne_bf16(v):
    """float64 -> bfloat16, correctly rounded (ml_dtypes >= 0.7 rounds once)."""
    return np.asarray(v, np.float64).astype(BF16)


def pack_words(codes, bits, axis, order=None):
    """int32 words holding ``32 // bits`` unsigned codes along ``axis``, code j at bits*j
    (``order[j]`` = logical position stored in field j)."""
    per = 32 // bits
    c = np.asarray(codes, np.uint64)
    if axis == 0:
        return pack_words(c.T, bits, 1, order).T.copy()
    r, n = c.shape
    c = c.reshape(r, n // per, per)
    if order is not None:
        c = c[:, :, list(order)]
    words = np.zeros((r, n // per), np.uint64)
    for j in range(per):
        words |= c[:, :, j] << np.uint64(bits * j)
    return words.astype(np.uint32).view(np.int32)


def write_config(folder, config, name="config.json"):
    with open(os.path.join(folder, name), "w") as fh:
        json.dump(config, fh)


# ------------------------------------------------------------------------------------------------
# compressed-tensors pack-quantized, symmetric int4, group G (oracle: float64, rounded once)


def ct_int4(folder, weights: dict, group=16, nibbles_reversed=False, scale_fault=None):
    """Write ``model.safetensors`` (+ config.json) in compressed-tensors' pack-quantized layout.
    Scale = bf16(amax / 7.5) (bf16 eps where amax = 0); codes = clamp(rne(bf16(x / s)), -8, 7)."""
    tensors = {}
    for name, w in weights.items():
        n, k = w.shape
        xf = w.astype(np.float64)
        amax = np.abs(xf.reshape(n, k // group, group)).max(axis=2)
        s = rne_bf16(np.where(amax == 0, 2.0**-7, amax / 7.5))  # a zero scale becomes bf16's eps
        if scale_fault is not None and name == scale_fault:
            s = s.copy()
            s.view(np.uint16)[0, 0] += 1
        s_el = np.repeat(s.astype(np.float64), group, axis=1)
        qt = rne_bf16(xf / s_el).astype(np.float64)
        q = np.clip(np.rint(qt), -8, 7).astype(np.int64)
        order = list(range(7, -1, -1)) if nibbles_reversed else None
        mod = name[: -len(".weight")]
        tensors[mod + ".weight_packed"] = pack_words(q + 8, 4, 1, order)
        tensors[mod + ".weight_scale"] = s
        tensors[mod + ".weight_shape"] = np.array([n, k], np.int64)
    save_file(os.path.join(folder, "model.safetensors"), tensors)
    write_config(folder, {"quantization_config": {
        "quant_method": "compressed-tensors", "format": "pack-quantized",
        "config_groups": {"group_0": {"weights": {"num_bits": 4, "group_size": group, "symmetric": True,
                                                  "strategy": "group"}}}}})


# ------------------------------------------------------------------------------------------------
# GPTQ (v1 / v2 zero points) and AWQ, 4-bit, fp16 scales


def _int4_rtn(w, group):
    """Asymmetric round-to-nearest int4 per group of the input dim: (codes [N,K], s [N,K/G], z)."""
    n, k = w.shape
    xf = w.astype(np.float64).reshape(n, k // group, group)
    mn, mx = np.minimum(xf.min(axis=2), 0), np.maximum(xf.max(axis=2), 0)
    s = ((mx - mn) / 15).astype(np.float16)
    s = np.where(s == 0, np.float16(1), s)
    z = np.clip(np.rint(-mn / s.astype(np.float64)), 0, 15).astype(np.int64)
    q = np.clip(np.rint(xf / s[..., None]) + z[..., None], 0, 15).astype(np.int64).reshape(n, k)
    return q, s, z


def gptq(folder, weights: dict, group=32, stored="v2", declared="v2", sym=True):
    """GPTQ layout: qweight [K/8, N], qzeros [K/G, N/8], scales [K/G, N], g_idx [K].
    ``stored``: the zero convention written; ``declared``: what quantize_config says."""
    tensors = {}
    for name, w in weights.items():
        n, k = w.shape
        q, s, z = _int4_rtn(w, group)
        if sym:
            xf = w.astype(np.float64).reshape(n, k // group, group)
            s = (np.abs(xf).max(axis=2) / 7.5).astype(np.float16)
            s = np.where(s == 0, np.float16(1), s)
            z = np.full(s.shape, 8, np.int64)
            q = np.clip(np.rint(xf / s[..., None].astype(np.float64)) + 8, 0, 15)
            q = q.astype(np.int64).reshape(n, k)
        zs = z - 1 if stored == "v1" else z
        mod = name[: -len(".weight")]
        tensors[mod + ".qweight"] = pack_words(q.T, 4, 0)
        tensors[mod + ".qzeros"] = pack_words(zs.T & 0xF, 4, 1)
        tensors[mod + ".scales"] = np.ascontiguousarray(s.T)
        tensors[mod + ".g_idx"] = (np.arange(k) // group).astype(np.int32)
    save_file(os.path.join(folder, "model.safetensors"), tensors)
    write_config(folder, {"bits": 4, "group_size": group, "sym": sym, "desc_act": False,
                          "checkpoint_format": "gptq_v2" if declared == "v2" else "gptq"},
                 "quantize_config.json")


def awq(folder, weights: dict, group=32):
    """AWQ GEMM layout: qweight [K, N/8] with the 0 2 4 6 1 3 5 7 interleave, qzeros, scales."""
    tensors = {}
    for name, w in weights.items():
        q, s, z = _int4_rtn(w, group)
        mod = name[: -len(".weight")]
        tensors[mod + ".qweight"] = pack_words(q.T, 4, 1, (0, 2, 4, 6, 1, 3, 5, 7))
        tensors[mod + ".qzeros"] = pack_words(z.T, 4, 1, (0, 2, 4, 6, 1, 3, 5, 7))
        tensors[mod + ".scales"] = np.ascontiguousarray(s.T)
    save_file(os.path.join(folder, "model.safetensors"), tensors)
    write_config(folder, {"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": group}})


def dequant_int4(q, s, z, group):
    """(q - z) * s per group, rounded once to float16 (the oracle for GPTQ/AWQ decodes)."""
    s64 = np.repeat(s.astype(np.float64), group, axis=1)
    z64 = np.repeat(z.astype(np.float64), group, axis=1)
    return ((q - z64) * s64).astype(np.float16)
