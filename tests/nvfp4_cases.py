"""Adversarial NVFP4 inputs (tests only): rows of 16-element blocks.

Exact element ties (x = s * g * midpoint), their float32 neighbours, blocks whose amax sits on an
e4m3 scale midpoint (times 6 g) and beside it, amax a power of two and just below one, all-zero,
tiny (subnormal) and random blocks.
"""

from __future__ import annotations

import numpy as np

E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
MIDS = (E2M1[:-1] + E2M1[1:]) / 2


def e4m3_values() -> np.ndarray:
    """The 126 positive finite e4m3fn values, ascending (from the bit layout)."""
    out = []
    for code in range(1, 0x7F):
        e, m = code >> 3, code & 7
        out.append(m * 2.0**-9 if e == 0 else (8 + m) * 2.0 ** (e - 10))
    return np.array(out)


def _nb(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float32)
    return np.concatenate([v, np.nextafter(v, np.float32(np.inf)), np.nextafter(v, np.float32(-np.inf))])


def blocks(g: float = 1.0, seed: int = 0) -> np.ndarray:
    """float32 array of shape (n, 16) for the decode global scale ``g``."""
    rng = np.random.default_rng(seed)
    rows = []
    s_vals = e4m3_values()
    # element ties and neighbours under a block scale s: amax = 6 s g fixes s exactly
    for s in s_vals[::5]:
        amax = np.float32(6 * s * g)
        if not np.isfinite(amax) or amax == 0:
            continue
        vals = _nb(np.concatenate([MIDS, E2M1]) * s * g)
        vals = vals[np.abs(vals) <= amax]
        vals = np.concatenate([vals, -vals])
        for i in range(0, vals.size, 15):
            row = np.zeros(16, np.float32)
            row[0] = amax
            chunk = vals[i:i + 15]
            row[1:1 + chunk.size] = chunk
            rows.append(row)
    # block amax on and beside e4m3 scale midpoints (times 6 g)
    smid = (s_vals[:-1] + s_vals[1:]) / 2
    for a in _nb(smid * 6 * g):
        if np.isfinite(a) and a > 0:
            row = rng.uniform(-1, 1, 16).astype(np.float32) * a
            row[3] = a
            rows.append(row.astype(np.float32))
    for k in range(-20, 12, 3):
        for a in (np.float32(2.0**k), np.nextafter(np.float32(2.0**k), np.float32(0))):
            row = rng.standard_normal(16).astype(np.float32)
            row = (row / np.abs(row).max() * a).astype(np.float32)
            row[5] = -a
            rows.append(row)
    rows.append(np.zeros(16, np.float32))
    rows.append(-np.zeros(16, np.float32))
    tiny = np.zeros(16, np.float32)
    tiny[::2] = np.float32(1e-40)
    tiny[1::4] = -np.float32(3e-42)
    rows.append(tiny)
    rows.extend(rng.standard_normal((32, 16)).astype(np.float32))
    return np.stack(rows).astype(np.float32)


def special_rows(seed: int = 0) -> list[np.ndarray]:
    """(4, 32) float32 arrays with a NaN, +inf, -inf or an all-NaN block in row 1."""
    rng = np.random.default_rng(seed)
    out = []
    for bad in (np.nan, np.inf, -np.inf, "all"):
        x = rng.standard_normal((4, 32)).astype(np.float32)
        if bad == "all":
            x[1, :16] = np.nan
        else:
            x[1, 7] = bad
        out.append(x)
    return out
