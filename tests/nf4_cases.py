"""Adversarial inputs for absmax-block codebook formats (NF4, FP4): tests only.

Each block holds its absmax (so the scale is known) and, scaled by it, every level, every
midpoint between neighbouring levels (the real one and its float32 rounding) and their
neighbours one and two ulps away in the input dtype.
"""

from __future__ import annotations

import numpy as np

ABSMAXES = (1.0, 2.0**-5, 3.0, 0.7, 2.0**20, float(np.nextafter(np.float32(2.0**20), np.float32(0))),
            float(np.nextafter(np.float32(0.5), np.float32(0))), 2.0**-126, 2.0**-140, 1e-38)


def _neighbours(v: np.ndarray, dtype, steps: int = 2) -> np.ndarray:
    out = [v]
    up = down = v
    for _ in range(steps):
        up = np.nextafter(up, np.asarray(np.inf, dtype))
        down = np.nextafter(down, np.asarray(-np.inf, dtype))
        out += [up, down]
    return np.concatenate(out)


def block_cases(levels, dtype=np.float32, *, block=64, seed=0) -> np.ndarray:
    """Finite adversarial blocks (1-D, a multiple of ``block``) for sorted float64 ``levels``."""
    dtype = np.dtype(dtype)
    lv = np.sort(np.asarray(levels, np.float64))
    true_mid = (lv[:-1] + lv[1:]) / 2
    f32_mid = ((lv[:-1] + lv[1:]).astype(np.float32) / np.float32(2)).astype(np.float64)
    rng = np.random.default_rng(seed)
    blocks = []
    for a in ABSMAXES:
        with np.errstate(over="ignore"):
            a64 = float(np.asarray(a).astype(dtype).astype(np.float64))
        if a64 == 0 or not np.isfinite(a64) or a64 * 2 > float(np.finfo(dtype).max):
            continue
        vals = np.concatenate([lv, true_mid, f32_mid]) * a64
        work = np.float32 if dtype.itemsize == 2 else dtype
        v = vals.astype(dtype).astype(work)
        v = _neighbours(v, work).astype(dtype)
        v = v[np.abs(v.astype(np.float64)) <= a64]
        rng.shuffle(v)
        for sign in (1, -1):
            for i in range(0, v.size, block - 1):
                chunk = np.concatenate([np.asarray([sign * a64]).astype(dtype), v[i:i + block - 1]])
                chunk = np.concatenate([chunk, np.zeros(block - chunk.size, dtype)])
                blocks.append(chunk.astype(dtype))
    blocks.append(np.zeros(block, dtype))
    blocks.append(-np.zeros(block, dtype))
    tiny = np.zeros(block, dtype)
    tiny[::3] = np.asarray(np.finfo(np.float32).smallest_subnormal).astype(dtype) if dtype.itemsize >= 4 \
        else np.asarray(2.0**-120).astype(dtype)
    blocks.append(tiny)
    blocks.append(rng.standard_normal(block * 8).astype(dtype))
    return np.concatenate(blocks)


def pad_to(x: np.ndarray, multiple: int, seed: int = 1) -> np.ndarray:
    """``x`` followed by random normal values up to a multiple of ``multiple`` elements."""
    rest = (-x.size) % multiple
    fill = np.random.default_rng(seed).standard_normal(rest).astype(x.dtype)
    return np.concatenate([x, fill])


def special_blocks(dtype=np.float32, *, block=64, seed=0) -> list[np.ndarray]:
    """Arrays of a few blocks, each with one non-finite block: NaN, +inf, -inf, all NaN."""
    rng = np.random.default_rng(seed)
    out = []
    for bad in (np.nan, np.inf, -np.inf, "all_nan"):
        x = rng.standard_normal(4 * block).astype(dtype)
        if bad == "all_nan":
            x[block:2 * block] = np.nan
        else:
            x[block + 5] = bad
        out.append(x)
    return out
