"""Obviously-correct oracles for low-precision float formats (Python Fractions, tests only).

The format's values are built from the bit layout with Fractions, independently of refquant's
tables; rounding picks among the two neighbouring values by comparing Fractions.
"""

from __future__ import annotations

import bisect
import functools
import math
from fractions import Fraction

import numpy as np

SPEC = {  # name: (E, M, bias, signed, kind of NaN, subnormals)
    "float8_e4m3fn": (4, 3, 7, True, "all_ones", True),
    "float8_e4m3fnuz": (4, 3, 8, True, "neg_zero", True),
    "float8_e5m2": (5, 2, 15, True, "ieee", True),
    "float8_e5m2fnuz": (5, 2, 16, True, "neg_zero", True),
    "float8_e8m0fnu": (8, 0, 127, False, "all_ones", False),
    "float6_e2m3fn": (2, 3, 1, True, "none", True),
    "float6_e3m2fn": (3, 2, 3, True, "none", True),
    "float4_e2m1fn": (2, 1, 1, True, "none", True),
}


@functools.cache
def positive_levels(name):
    """[(Fraction value, code)] of every finite value >= 0 of the format, ascending."""
    E, M, bias, signed, nan, sub = SPEC[name]
    out = []
    for e in range(1 << E):
        for m in range(1 << M):
            if nan == "ieee" and e == (1 << E) - 1:
                continue
            if nan == "all_ones" and e == (1 << E) - 1 and m == (1 << M) - 1:
                continue
            if e == 0 and sub:
                v = Fraction(m, 1 << M) * Fraction(2) ** (1 - bias)
            else:
                v = (1 + Fraction(m, 1 << M)) * Fraction(2) ** (e - bias)
            out.append((v, (e << M) | m))
    return tuple(out)


@functools.cache
def _values(name):
    return [v for v, _ in positive_levels(name)]


MODES = ("half_even", "half_away", "half_up", "half_down", "floor", "ceil", "toward_zero")


def round_code(x: float, name: str, mode: str = "half_even") -> int:
    """The code of finite nonzero ``x`` rounded to the format, saturating at +-max.

    Ties between two neighbours go to the even code (for M = 0, whose codes are exponents, to the
    larger value: its significand 2 is the even one)."""
    E, M, bias, signed, nan, sub = SPEC[name]
    levels = positive_levels(name)
    values = _values(name)
    r = Fraction(x)
    neg = r < 0
    a = -r if neg else r
    sign = (1 << (E + M)) if signed and neg else 0
    if a >= values[-1]:
        return levels[-1][1] | sign
    i = bisect.bisect_right(values, a) - 1  # values[i] <= a < values[i+1]
    if i < 0:  # below the smallest value (a format without zero)
        return levels[0][1]
    lo, hi = levels[i], levels[i + 1]
    if a == lo[0]:
        pick = lo
    else:
        d_lo, d_hi = a - lo[0], hi[0] - a
        toward_pos_inf = {"floor": False, "ceil": True}
        if mode in toward_pos_inf:
            up = toward_pos_inf[mode] != neg
        elif mode == "toward_zero":
            up = False
        elif d_lo != d_hi:
            up = d_hi < d_lo
        elif mode == "half_even":
            up = M == 0 or hi[1] % 2 == 0
        elif mode == "half_away":
            up = True
        else:
            up = (mode == "half_up") != neg
        pick = hi if up else lo
    code = pick[1]
    if code == 0 and sub:
        return sign if nan != "neg_zero" else 0
    return code | sign


def ieee_overflows(x: float, name: str) -> bool:
    """Whether round-to-nearest-even of |x| with an unbounded exponent exceeds the format's max."""
    E, M, bias, signed, nan, sub = SPEC[name]
    top = positive_levels(name)[-1][0]
    ulp = Fraction(2) ** (math.floor(math.log2(top)) - M)
    a = abs(Fraction(x))
    mid = top + ulp / 2
    top_even = M != 0 and positive_levels(name)[-1][1] % 2 == 0  # M = 0: ties go up
    return a > mid or (a == mid and not top_even)


def probes(name: str, seed: int = 0) -> np.ndarray:
    """Every value, every midpoint and its float64 and float32 neighbours, overflow probes, tiny
    values and random log-uniform values, both signs."""
    vals = np.array([float(v) for v, _ in positive_levels(name)])
    mids = (vals[:-1] + vals[1:]) / 2
    top = vals[-1]
    ulp_top = top - vals[-2]
    over = np.array([top + ulp_top / 2, top + ulp_top, 2 * top, 1e30, 3.4028234663852886e38])
    tiny = np.array([vals[vals > 0][0] / 2, 1e-40, 1.401298464324817e-45, 5e-324])
    base = np.concatenate([vals, mids, over, tiny])
    rng = np.random.default_rng(seed)
    rand = np.exp2(rng.uniform(np.log2(tiny[0]) - 2, np.log2(top) + 2, 300))
    f32 = base[base < 3e38].astype(np.float32).astype(np.float64)
    near = np.concatenate([
        np.nextafter(base, np.inf), np.nextafter(base, -np.inf),
        np.nextafter(f32.astype(np.float32), np.float32(np.inf)).astype(np.float64),
        np.nextafter(f32.astype(np.float32), np.float32(0)).astype(np.float64),
    ])
    with np.errstate(over="ignore"):
        pos = np.concatenate([base, near, rand, rand.astype(np.float32).astype(np.float64)])
    pos = pos[(pos > 0) & np.isfinite(pos)]
    return np.concatenate([pos, -pos])


def probes32(name: str) -> np.ndarray:
    """float32 probes: :func:`probes` rounded to float32 plus +-0, +-inf and +-NaN."""
    x = probes(name)
    x = x[np.abs(x) < 3.4e38].astype(np.float32)
    return np.concatenate([x, np.float32([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan])])
