"""Obviously-correct oracles for APoT, PACT and LSQ tests: fractions.Fraction and the definitions.

Nothing here shares code with refquant's APoT/PACT/LSQ modules.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np


def paper_levels(bits: int, k: int) -> list[Fraction]:
    """APoT eq. 5 with alpha = 1: gamma * sum of one element of each p_i, sorted, as Fractions."""
    n = bits // k
    choices = [
        [Fraction(0)] + [Fraction(1, 2 ** (i + j * n)) for j in range(2**k - 1)] for i in range(n)
    ]
    gamma = 1 / sum(Fraction(1, 2**i) for i in range(n))
    return sorted({gamma * sum(row) for row in itertools.product(*choices)})


def authors_levels(B: int) -> list[Fraction]:
    """The authors' build_power_value(B) (yhhhli/APoT_Quantization, additive=True), exactly."""
    a, b, c = [Fraction(0)], [Fraction(0)], [Fraction(0)]
    if B == 2:
        a += [Fraction(1, 2 ** (i + 1)) for i in range(3)]
    elif B == 4:
        for i in range(3):
            a.append(Fraction(1, 2 ** (2 * i + 1)))
            b.append(Fraction(1, 2 ** (2 * i + 2)))
    elif B == 6:
        for i in range(3):
            a.append(Fraction(1, 2 ** (3 * i + 1)))
            b.append(Fraction(1, 2 ** (3 * i + 2)))
            c.append(Fraction(1, 2 ** (3 * i + 3)))
    elif B == 3:
        for i in range(3):
            if i < 2:
                a.append(Fraction(1, 2 ** (i + 1)))
            else:
                b.append(Fraction(1, 2**3))
                a.append(Fraction(1, 2**4))
    elif B == 5:
        for i in range(3):
            if i < 2:
                a.append(Fraction(1, 2 ** (2 * i + 1)))
                b.append(Fraction(1, 2 ** (2 * i + 2)))
            else:
                c.append(Fraction(1, 2**5))
                a.append(Fraction(1, 2**6))
                b.append(Fraction(1, 2**7))
    else:
        raise ValueError(B)
    values = {x + y + z for x in a for y in b for z in c}
    top = max(values)
    return sorted(v / top for v in values)


def signed_levels(mags: list[Fraction]) -> list[Fraction]:
    return sorted({-m for m in mags} | set(mags))


def nearest_code(x: Fraction, levels: list[Fraction]) -> int:
    """Index of the nearest level to x after clipping; a tie goes to the smaller magnitude."""
    x = min(max(x, levels[0]), levels[-1])
    best = None
    for i, lv in enumerate(levels):
        d = abs(lv - x)
        if best is None or d < best[0] or (d == best[0] and abs(lv) < abs(levels[best[1]])):
            best = (d, i)
    return best[1]


def f32_distance_code(x32: float, levels32: list[float]) -> int:
    """torch experimental float_to_apot's choice: strict '<' on float32 distances, ascending."""
    best, idx = math.inf, 0
    for i, lv in enumerate(levels32):
        d = float(np.float32(abs(np.float32(lv) - np.float32(x32))))
        if d < best:
            best, idx = d, i
    return idx


def pact_fake(x: Fraction, alpha: Fraction, bits: int, signed: bool, rounder) -> Fraction:
    """PACT (Choi et al. eq. 1-2), exactly: clip, round(y * N / alpha) * alpha / N."""
    n = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    lo = -alpha if signed else Fraction(0)
    y = min(max(x, lo), alpha)
    return Fraction(rounder(y * n / alpha)) * alpha / n


def lsq_grads(x: Fraction, s: Fraction, z: int, qmin: int, qmax: int, rounder):
    """LSQ (Esser et al.) with a zero point, exactly: (dx, d scale, d zero_point) per unit grad."""
    t = x / s
    if t <= qmin - z:
        return 0, Fraction(qmin - z), -s
    if t >= qmax - z:
        return 0, Fraction(qmax - z), -s
    return 1, rounder(t) - t, Fraction(0)
