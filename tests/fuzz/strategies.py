"""Hypothesis strategies for differential fuzzing: inputs built where quantization goes wrong.

A *case* holds an input array and affine qparams. Values are drawn around the decision points of
the drawn scale (exact ties ``(k + 1/2) * s`` in the input dtype and their ulp neighbours, exact
codes), past the range ends and past ``2**31`` / ``2**63`` after scaling, with subnormals, +-0.0,
+-inf and NaN mixed in. Scales run from subnormal to near float32's max (and float64 scales that
float32 cannot hold); zero points sit anywhere in the range, ends included; ranges run from 1 bit
to int32. Layouts: contiguous, a strided view, Fortran order and big-endian. Per-channel cases
have 1 to a few channels, now and then 3,000; blocked cases a (scale, zero point) per row and block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes is a test dependency
    BF16 = None

FLOAT_DTYPES = ("float32", "float16", "float64") + (("bfloat16",) if BF16 is not None else ())


def np_dtype(name):
    return BF16 if name == "bfloat16" else np.dtype(name)


@dataclass(frozen=True)
class Case:
    x: np.ndarray
    scale: object          # Python float (per tensor) or 1-D array (per channel)
    zero_point: object     # int or 1-D array
    qmin: int
    qmax: int
    axis: int | None
    block_size: tuple | None = None

    def __repr__(self):  # hypothesis prints the falsifying example with this
        with np.printoptions(threshold=40, precision=17):
            return (f"Case(x={self.x.dtype.name}{list(self.x.shape)} {self.x!r}, scale={self.scale!r}, "
                    f"zero_point={self.zero_point!r}, qmin={self.qmin}, qmax={self.qmax}, axis={self.axis}, "
                    f"block_size={self.block_size})")


# ---- qparams

def ranges(max_bits=32):
    """(qmin, qmax): signed or unsigned ranges of 1..max_bits bits, narrow ranges too."""
    @st.composite
    def build(draw):
        bits = draw(st.sampled_from([b for b in (1, 2, 4, 8, 16, 32) if b <= max_bits] + [3, 7]))
        signed = draw(st.booleans())
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        if bits == 32 and not signed:
            lo, hi = -(2**31), 2**31 - 1
        if draw(st.booleans()) and hi - lo > 2:  # narrow or reduced
            lo += draw(st.integers(0, 1))
        return lo, hi
    return build()


scales32 = st.one_of(
    st.floats(1e-3, 1e1),
    st.sampled_from([2.0**-149, 1e-45, 1e-40, 2.0**-126, 1e-38, 6.1e-5, 1e-5, 0.1, 1 / 3,
                     0.00214854861, 1.0, 255.0, 1e30, 3e38, 3.4028235e38]),
    st.floats(1e-45, 3.4e38),
).map(lambda v: float(np.float32(v))).filter(lambda v: v > 0)
"""Positive float32 scales: ordinary, special-valued and log-spread over the whole range."""

scales64 = st.one_of(scales32, st.floats(1e-300, 1e300).filter(lambda v: v > 0),
                     st.sampled_from([0.1, 2.0**-1021, 1 / 3, 1e-310]))
"""Positive float64 scales, including values float32 rounds (or flushes)."""


def zero_points(lo, hi):
    return st.one_of(st.sampled_from([lo, hi, 0 if lo <= 0 <= hi else lo, (lo + hi) // 2]),
                     st.integers(lo, hi))


# ---- values

SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 2.0**31, -(2.0**31), 2.0**63, -(2.0**63), 1e300,
            -1e300, 5e-324, -5e-324, 1e-45, -1e-45]


@st.composite
def values(draw, scale, zp, lo, hi, dtype, n):
    """``n`` values in ``dtype`` aimed at the decision points of (scale, zp, [lo, hi]); with a 1-D
    ``scale`` and ``zp`` (one per channel), an ``(n, channels)`` array, column j aimed at channel j."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    s = np.asarray(scale, np.float64)
    shape = (n,) + s.shape
    span = min(hi - lo, 2**20)
    k = rng.integers(-3, span + 4, shape).astype(np.float64) + (lo - np.asarray(zp, np.float64))
    if hi - lo > 2**20:  # wide ranges: also aim at the far end
        k = np.where(rng.random(shape) < 0.5, k, k + (hi - lo - span))
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        tie = ((k + 0.5) * s).astype(dtype)
        code = (k * s).astype(dtype)
        f = tie.astype(np.float32) if dtype.itemsize == 2 else tie
        up = np.nextafter(f, np.inf).astype(dtype)
        down = np.nextafter(f, -np.inf).astype(dtype)
        special = np.array(SPECIALS)[rng.integers(0, len(SPECIALS), shape)].astype(dtype)
        scaled = (rng.choice([2.0**31, 2.0**63, 1e10, -1e10, 2.0**53], shape) * s).astype(dtype)
        uniform = rng.uniform(-4, 4, shape).astype(dtype)
    pick = rng.integers(0, 8, shape)
    return np.choose(pick, [tie, up, down, code, special, scaled, uniform, tie]).astype(dtype)


def layout(x, how):
    """The same values in another memory layout (the values, not the bits, stay equal)."""
    if how == "strided":
        wide = np.empty((x.shape[0] * 2,) + x.shape[1:], x.dtype)
        wide[::2] = x
        return wide[::2]
    if how == "fortran":
        return np.asfortranarray(x)
    if how == "big_endian" and x.dtype.kind == "f":
        return x.astype(x.dtype.newbyteorder(">"))
    return x


@st.composite
def per_tensor_cases(draw, dtypes=FLOAT_DTYPES, max_bits=32, scale_strategy=scales32, n=64,
                     layouts=("contiguous", "strided", "fortran", "big_endian")):
    dtype = np_dtype(draw(st.sampled_from(dtypes)))
    lo, hi = draw(ranges(max_bits))
    s = draw(scale_strategy)
    z = draw(zero_points(lo, hi))
    x = draw(values(s, z, lo, hi, dtype, n)).reshape(n // 4, 4)
    return Case(layout(x, draw(st.sampled_from(layouts))), s, z, lo, hi, None)


MANY_CHANNELS = 3000


@st.composite
def channel_counts(draw, max_channels):
    """1..max_channels channels, now and then :data:`MANY_CHANNELS` (past a kernel chunk)."""
    if draw(st.integers(0, 15)) == 0:
        return MANY_CHANNELS
    return draw(st.integers(1, max_channels))


@st.composite
def per_channel_qparams(draw, c, lo, hi, strat, scale_dtype, float_zero_point):
    """(scales, zero points) of ``c`` channels: drawn one by one for a few channels; for many, a
    drawn pool of each spread over the channels at random."""
    k = min(c, 5)
    s_pool = np.array([draw(strat) for _ in range(k)], scale_dtype)
    if float_zero_point:
        z_pool = np.array([draw(st.one_of(st.floats(lo, hi, width=32), st.sampled_from([0.0, -0.0, 0.5])))
                           for _ in range(k)], np.float32)
    else:
        z_pool = np.array([draw(zero_points(lo, hi)) for _ in range(k)], np.int64)
    if c == k:
        return s_pool, z_pool
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return s_pool[rng.integers(0, k, c)], z_pool[rng.integers(0, k, c)]


@st.composite
def per_channel_cases(draw, dtypes=FLOAT_DTYPES, max_bits=32, float_zero_point=False,
                      scale_dtype=np.float32, max_channels=5, rows=16, range_strategy=None,
                      layouts=("contiguous", "strided", "fortran", "big_endian")):
    dtype = np_dtype(draw(st.sampled_from(dtypes)))
    lo, hi = draw(range_strategy if range_strategy is not None else ranges(max_bits))
    c = draw(channel_counts(max_channels))
    axis = draw(st.integers(0, 1))
    strat = scales32 if scale_dtype == np.float32 else scales64
    s, z = draw(per_channel_qparams(c, lo, hi, strat, scale_dtype, float_zero_point))
    x = draw(values(s, np.rint(z), lo, hi, dtype, rows if c < MANY_CHANNELS else 6))
    if axis == 0:
        x = np.ascontiguousarray(x.T)
    return Case(layout(x, draw(st.sampled_from(layouts))), s, z, lo, hi, axis)


@st.composite
def blocked_cases(draw, dtypes=FLOAT_DTYPES, max_bits=32, scale_dtype=np.float32,
                  layouts=("contiguous", "strided", "fortran", "big_endian")):
    """2-D x of ``rows`` x ``blocks * block`` with one (scale, zero point) per row and block of
    ``block`` columns (``block_size=(1, block)``); one block per row is per-channel on axis 0."""
    dtype = np_dtype(draw(st.sampled_from(dtypes)))
    lo, hi = draw(ranges(max_bits))
    rows, blocks = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    block = draw(st.sampled_from([1, 2, 3, 8, 32]))
    strat = scales32 if scale_dtype == np.float32 else scales64
    s, z = draw(per_channel_qparams(rows * blocks, lo, hi, strat, scale_dtype, False))
    x = draw(values(np.repeat(s, block), np.repeat(z, block), lo, hi, dtype, 1))
    x = x.reshape(rows, blocks * block)
    return Case(layout(x, draw(st.sampled_from(layouts))), s.reshape(rows, blocks),
                z.reshape(rows, blocks), lo, hi, None, (1, block))
