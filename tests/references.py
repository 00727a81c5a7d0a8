"""Obviously-correct oracles for tests only: Python integers and fractions.Fraction.

Nothing here is fast or clever; each function is the definition written out.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

# (significand bits p including the hidden one, minimum normal exponent, max finite)
FORMATS = {
    "float64": (53, -1022, float(np.finfo(np.float64).max)),
    "float32": (24, -126, float(np.finfo(np.float32).max)),
    "float16": (11, -14, 65504.0),
    "bfloat16": (8, -126, 3.3895313892515355e38),
}


def round_half_even(r: Fraction) -> int:
    f = math.floor(r)
    d = r - f
    if d > Fraction(1, 2) or (d == Fraction(1, 2) and f % 2):
        return f + 1
    return f


ROUNDERS = {
    "half_even": round_half_even,
    "half_away": lambda r: math.floor(abs(r) + Fraction(1, 2)) * (1 if r >= 0 else -1),
    "half_up": lambda r: math.floor(r + Fraction(1, 2)),
    "half_down": lambda r: math.ceil(r - Fraction(1, 2)),
    "floor": math.floor,
    "ceil": math.ceil,
    "toward_zero": math.trunc,
}


def round_to_format(v: Fraction, fmt: str) -> float:
    """The exact rational ``v`` rounded half-to-even to a float format, as a Python float."""
    p, emin, vmax = FORMATS[fmt]
    if v == 0:
        return 0.0
    sign = -1.0 if v < 0 else 1.0
    a = abs(v)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    ulp = Fraction(2) ** (max(e, emin) - (p - 1))
    r = round_half_even(a / ulp) * ulp
    if r > vmax:
        return sign * math.inf
    return sign * float(r)


def exact_code(x: float, scale: float, zp: int, qmin: int, qmax: int, rounding="half_even"):
    """clamp(round(x / s) + z) with the real quotient; +-inf saturate; NaN -> None."""
    if math.isnan(x):
        return None
    if math.isinf(x):
        return qmax if x > 0 else qmin
    q = ROUNDERS[rounding](Fraction(x) / Fraction(scale)) + zp
    return min(max(q, qmin), qmax)


def exact_fake(x: float, scale: float, zp: int, qmin: int, qmax: int, fmt: str) -> float:
    q = exact_code(x, scale, zp, qmin, qmax)
    if q is None:
        return math.nan
    return round_to_format((q - zp) * Fraction(scale), fmt)


def tie_heavy(scale: float, zp: int, qmin: int, qmax: int, n: int, seed: int = 0,
              dtype=np.float32) -> np.ndarray:
    """Inputs built around the decision points: exact ties (k + 1/2) * s in the target dtype, one
    ulp either side, exact codes, values beyond the range, and a uniform quarter."""
    rng = np.random.default_rng(seed)
    lo, hi = qmin - zp - 3, qmax - zp + 3
    k = rng.integers(lo, hi, n).astype(np.float64)
    tie = ((k + 0.5) * scale).astype(dtype)
    code = (k * scale).astype(dtype)
    up = np.nextafter(tie, np.array(np.inf, dtype))
    down = np.nextafter(tie, np.array(-np.inf, dtype))
    uniform = rng.uniform(lo * scale, hi * scale, n).astype(dtype)
    choice = rng.integers(0, 5, n)
    return np.choose(choice, [tie, up, down, code, uniform]).astype(dtype)


def bits(a: np.ndarray) -> np.ndarray:
    """The bit patterns of a float array as unsigned integers, with every NaN made one pattern."""
    a = np.asarray(a)
    view = a.view(f"u{a.dtype.itemsize}").copy()
    nan = np.isnan(a.astype(np.float32) if a.dtype.itemsize == 2 else a)
    view[nan] = 0
    return view


def assert_bitwise_equal(actual, expected, context=""):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype, context)
    assert actual.shape == expected.shape, (actual.shape, expected.shape, context)
    if actual.dtype.kind == "f" or actual.dtype.name == "bfloat16":
        diff = bits(actual) != bits(expected)
    else:
        diff = actual != expected
    n = int(diff.sum())
    if n:
        i = np.flatnonzero(diff.ravel())[:5]
        raise AssertionError(
            f"{n} of {diff.size} differ {context}: at {i.tolist()} actual "
            f"{actual.ravel()[i].tolist()} expected {expected.ravel()[i].tolist()}"
        )


# ---------------------------------------------------------------------------------------------
# integer operators: gemmlowp / TFLite fixed point, written from the published algorithm with
# Python integers, and the exact (Fraction) requantization


def gemmlowp_srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul, literally: nudge, then a division truncating to 0."""
    if a == b == -(2**31):
        return 2**31 - 1
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else (1 - (1 << 30))
    num = ab + nudge
    q = abs(num) // (1 << 31)  # C++ integer division truncates toward zero
    return q if num >= 0 else -q


def gemmlowp_rdbpot(x: int, exponent: int) -> int:
    """gemmlowp RoundingDivideByPOT, literally: mask, remainder, threshold."""
    mask = (1 << exponent) - 1
    remainder = x & mask  # two's complement bits of x (Python ints behave as infinite two's complement)
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def tflite_quantize_multiplier(m: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier (default build) with Fractions: frexp, round half away, carry, flush."""
    q, shift = math.frexp(m)
    v = Fraction(q) * (1 << 31)
    fixed = math.floor(v)
    if v - fixed >= Fraction(1, 2):
        fixed += 1
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return fixed, shift


def tflite_mbqm(x: int, q: int, shift: int) -> int:
    """TFLite MultiplyByQuantizedMultiplier, double rounding (the default build)."""
    left, right = max(shift, 0), max(-shift, 0)
    return gemmlowp_rdbpot(gemmlowp_srdhm(x * (1 << left), q), right)


def tflite_mbqm_single(x: int, q: int, shift: int) -> int:
    """TFLite MultiplyByQuantizedMultiplier with TFLITE_SINGLE_ROUNDING: one rounding, ties up."""
    if shift > 30:
        shift, q = 30, (1 << 31) - 1
    total = 31 - shift
    return (x * q + (1 << (total - 1))) >> total


def exact_requantize(acc: int, a1: float, a2: float, bias: float, c: float, zp: int, qmin: int,
                     qmax: int) -> int:
    """clamp(round_half_even((acc * a1 * a2 + bias) / c) + zp, qmin, qmax) in rational arithmetic."""
    real = (Fraction(int(acc)) * Fraction(a1) * Fraction(a2) + Fraction(bias)) / Fraction(c)
    return min(max(round_half_even(real) + zp, qmin), qmax)
def nearest_level_code(x: float, absmax: float, levels_by_code) -> int:
    """The code whose level is nearest to the real ``x / absmax`` (a tie: the lower level; a zero
    level: the zero code carrying x's sign bit when the codebook has two). ``absmax == 0``: zero."""
    levels = [Fraction(float(v)) for v in levels_by_code]
    t = Fraction(0) if absmax == 0 else Fraction(x) / Fraction(absmax)
    best = min(range(len(levels)), key=lambda k: (abs(levels[k] - t), levels[k]))
    zeros = [k for k, v in enumerate(levels) if v == 0]
    if levels[best] == 0 and len(zeros) == 2:
        return max(zeros) if math.copysign(1.0, x) < 0 else min(zeros)
    return best


def clip_mask(x: float, scale: float, fmax: float, signed: bool = True) -> bool:
    """Whether the real ``x / scale`` lies in ``[-fmax, fmax]`` (``[0, fmax]`` unsigned); NaN and
    +-inf: False. The straight-through mask of a clipped float fake quantizer."""
    if not math.isfinite(x):
        return False
    t = Fraction(x) / Fraction(scale)
    return (-Fraction(fmax) if signed else Fraction(0)) <= t <= Fraction(fmax)


def aimet_range(x_min: float, x_max: float, n: int, symmetric: bool, fmt: str = "float32"):
    """AIMET's min-max encoding range from observed extremes, each op rounded to ``fmt``
    (Fractions; ``n = qmax - qmin``; the integers are rounded to ``fmt`` first):
    lo, hi = min(x_min, 0), max(x_max, 0); a range under ``n * tiny`` widened by floor(n / 2)
    tiny up and ceil(n / 2) tiny down; symmetric
    d = max(hi / floor(n / 2), -lo / ceil(n / 2)), (lo, hi) = (-ceil(n / 2) d, floor(n / 2) d);
    both clamped to the finite range."""
    p, emin, vmax = FORMATS[fmt]

    def r(v):  # one rounding; an overflow is +-inf (a float), which stays so
        if isinstance(v, float):
            return v
        out = round_to_format(v, fmt)
        return out if math.isinf(out) else Fraction(out)

    tiny = Fraction(2) ** emin
    pos, neg, nf = r(Fraction(n // 2)), r(Fraction(n - n // 2)), r(Fraction(n))  # ints meet the dtype
    lo, hi = min(Fraction(x_min), Fraction(0)), max(Fraction(x_max), Fraction(0))
    if r(r(hi - lo) / nf) < tiny:
        hi, lo = r(hi + r(pos * tiny)), r(lo - r(neg * tiny))
    if symmetric:
        d = max(r(hi / pos), r(-lo / neg))
        lo, hi = r(-neg * d), r(pos * d)
    return float(max(lo, Fraction(-vmax))), float(min(hi, Fraction(vmax)))


def float_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a float format name; bfloat16 (ml_dtypes) skips the calling test when
    ml_dtypes is not installed."""
    if name == "bfloat16":
        import pytest

        return np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    return np.dtype(name)
