"""NF4 and bitsandbytes FP4: 4-bit codebooks scaled by the absolute maximum of each block.

A block of ``block`` consecutive elements (of ``x`` flattened in C order) shares
``absmax = max |x|``. Each element is stored as the 4-bit code of one codebook level ``c``
(16 levels in [-1, 1]) and dequantizes to ``c[code] * absmax``. ``exact`` picks the level nearest
to the real ``x / absmax`` (a tie goes to the lower level; ``+-0`` by the sign of x); the libraries
decide differently, and each way is a named convention (``rq.nf4.conventions``):

``bitsandbytes``
    ``v = f32(x * f32(1 / max(absmax, 1e-38)))`` (a trailing partial block divides instead),
    clipped to [-1, 1]; the code is the number of float32 midpoints ``f32(f32(c[i] + c[i+1]) / 2)``
    strictly below ``v`` (9 of the 15 NF4 midpoints are not float32 numbers, so inputs between a
    true midpoint and its float32 rounding take the farther level); NaN takes the last level.
    Dequantize: ``f32(c * absmax)``, then rounded to the output dtype.
``torchao``
    in the input's dtype: the codebook is the 4-decimal literals rounded to that dtype,
    ``v = x / absmax`` and the code is ``argmin |v - c|`` (each difference rounded to the dtype, the
    first on a tie); 0/0 and NaN give code 0. Dequantize: ``c * absmax`` in the dtype.

Double quantization stores the block absmaxes themselves in 8 bits (``double_quant=True``), as
the convention's library does:

``bitsandbytes``
    ``offset = mean(absmax)`` (float32, torch's summation order), then ``absmax - offset`` in
    blocks of 256 quantized to bitsandbytes' 8-bit dynamic map by its C++ CPU kernel (a 65536-entry
    lookup table, not always the nearest code); the state keeps the 8-bit codes, the float32
    absmax of each block of 256 and ``offset``. ``absmax = f32(f32(map[q] * nested_absmax) + offset)``.
``torchao``
    ``mean`` in the dtype, ``d = absmax - mean``; per 256: ``factor = 256 / (2 max |d|)`` and
    ``q = clamp(round_half_even(d * factor), -128, 127)`` as int8 (each op rounded to the dtype);
    ``absmax = q / factor + mean``.
``exact``
    bitsandbytes' layout, each stored value rounded once from the real one: the mean, each
    block's ``max |absmax - mean|``, the nearest dynamic-map level (ties to the lower) and
    ``map[q] * nested_absmax + mean``.

>>> import numpy as np, refquant as rq
>>> x = np.float32([0.0, 0.1, -0.5, 1.0, 0.3, -0.2, 0.05, -1.0])
>>> codes, state = rq.nf4.quantize(x, block=8)
>>> codes.tolist(), state.absmax.tolist()
([7, 8, 2, 15, 11, 5, 8, 0], [1.0])
>>> rq.nf4.dequantize(codes, state).tolist()[:4]
[0.0, 0.07958029955625534, -0.5250730514526367, 1.0]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from ._dtypes import bfloat16, f32_of_fraction, float_code
from ._registry import Registry, table_getattr
from ._validation import flat_float, float_array, integer_array, integer_scalar

__all__ = ["Convention", "conventions", "NF4State", "codebook", "detect", "dynamic_map", "quantize",
           "dequantize", "fake_quantize"]

# The NF4 levels as bitsandbytes stores them (float32): quantiles of N(0, 1) scaled to [-1, 1]
# (QLoRA, arXiv:2305.14314), 7 negative, zero, 8 positive.
_NF4 = np.float32([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
])
# bitsandbytes FP4 (1 sign, 2 exponent, 1 mantissa bit, no inf/NaN) by code, divided by its
# largest magnitude 12 in float32: code = sign << 3 | magnitude code.
_FP4_MAGNITUDES = (0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0)


@dataclass(frozen=True)
class Convention:
    """One named way of computing NF4/FP4 codes (knob values; formulas in the module docstring).

    ``levels``: ``"float32"`` (bitsandbytes' table) or ``"decimal4"`` (rounded to 4 decimals, then
    to the input dtype through float32). ``compute``: ``"float32"``, ``"input"`` (the input's dtype)
    or ``"exact"``. ``normalize`` / ``normalize_tail`` (a trailing partial block):
    ``"reciprocal"``, ``"divide"`` or ``"exact"``. ``select``: ``"float32_midpoints"``,
    ``"argmin"`` or ``"exact"``. ``fp4_order``: the order of FP4's two zero codes among the sorted
    levels (``"plus_first"``: code 0 before the sign-bit code 8, bitsandbytes' argsort;
    ``"minus_first"``: code 8 first, so that x's sign picks). ``double_quant``: how the absmaxes
    are stored (``"bitsandbytes"``, ``"torchao"``, ``"exact"``; module docstring).
    ``nan_absmax``: whether a NaN makes the block absmax NaN. ``full_blocks``: whether the size
    must be a multiple of ``block``. ``dequant``: ``"exact"``, ``"float32"`` (the product in
    float32, then the output dtype) or ``"input"``. ``bf16_flush``: a float32 product below 2**-126
    becomes a signed zero before its bfloat16 rounding (the AVX512-BF16 conversion instruction).
    ``sum_threads``: the threads torch splits a sum of more than 32768 absmaxes among (the double
    quantization mean; :func:`detect` reads it from torch).
    """

    name: str
    levels: str
    compute: str
    normalize: str
    normalize_tail: str
    select: str
    fp4_order: str
    double_quant: str
    nan_absmax: bool
    full_blocks: bool
    dequant: str
    formula: str
    evidence: str = field(default="", compare=False)
    bf16_flush: bool = False
    sum_threads: int = 1


_ROWS = {
    "exact": Convention(
        "exact", "float32", "exact", "exact", "exact", "exact", "minus_first", "exact", True, False,
        "exact",
        "code = nearest level to the real x / absmax (ties to the lower level, +-0 by x's sign); "
        "dequantize: c * absmax rounded once",
        "tests/core/test_nf4.py::test_exact_matches_fraction_oracle"),
    "bitsandbytes": Convention(
        "bitsandbytes", "float32", "float32", "reciprocal", "divide", "float32_midpoints",
        "plus_first", "bitsandbytes", True, False, "float32",
        "v = clip(f32(x * f32(1 / max(absmax, 1e-38))), -1, 1); code = #(f32 midpoints < v); "
        "dequantize: f32(c * absmax) to the dtype",
        "tests/cross/test_nf4_bitsandbytes.py"),
    "bitsandbytes.avx512_bf16": Convention(
        "bitsandbytes.avx512_bf16", "float32", "float32", "reciprocal", "divide", "float32_midpoints",
        "plus_first", "bitsandbytes", True, False, "float32",
        "bitsandbytes on a CPU with AVX512-BF16 (its dequantize converts with VCVTNEPS2BF16): as "
        "bitsandbytes, but a float32 product below 2**-126 dequantizes to a bfloat16 zero of its sign",
        "tests/cross/test_nf4_bitsandbytes.py::test_bf16_subnormal_products", bf16_flush=True),
    "torchao": Convention(
        "torchao", "decimal4", "input", "divide", "divide", "argmin", "plus_first", "torchao", True,
        True, "input",
        "v = x / absmax in the dtype; code = argmin |v - c| (first on ties); dequantize: c * absmax "
        "in the dtype",
        "tests/cross/test_nf4_torchao.py"),
}

_FMT_DTYPES = {0: lambda: np.dtype(np.float64), 1: lambda: np.dtype(np.float32),
               2: lambda: np.dtype(np.float16), 3: bfloat16}
_NORM = {"reciprocal": 0, "divide": 1, "exact": 2}
_SELECT = {"float32_midpoints": 0, "argmin": 1, "exact": 2}


conventions = Registry("nf4", _ROWS.values(), row_type=Convention)
__getattr__ = table_getattr(globals(), conventions)  # the old CONVENTIONS dict, deprecated


def _check_codebook(name) -> str:
    if name not in ("nf4", "fp4"):
        raise ValueError(f"codebook must be 'nf4' or 'fp4'; got {name!r}")
    return name


def _to_dtype(values: np.ndarray, dtype) -> np.ndarray:
    """float64 values rounded to ``dtype``, returned as float64."""
    return np.asarray(values, np.float64).astype(dtype).astype(np.float64)


def codebook(name="nf4", *, convention="bitsandbytes", dtype=np.float32) -> np.ndarray:
    """The 16 levels by code, as the convention holds them for inputs of ``dtype`` (float64 array).

    >>> import refquant as rq
    >>> rq.nf4.codebook("nf4")[[0, 7, 15]].tolist()
    [-1.0, 0.0, 1.0]
    >>> float(rq.nf4.codebook("nf4", convention="torchao")[1])
    -0.6962000131607056
    >>> rq.nf4.codebook("fp4")[[1, 3, 7, 8]].tolist()
    [0.005208333488553762, 1.0, 0.25, 0.0]
    """
    conv = conventions.get(convention)
    _check_codebook(name)
    if name == "fp4":
        if conv.levels != "float32":
            raise ValueError(f"convention {conv.name!r} has no fp4 codebook")
        mags = (np.float32(_FP4_MAGNITUDES) / np.float32(12.0)).astype(np.float64)
        return np.concatenate([mags, 0.0 - mags])  # the sign-bit zero (code 8) is +0.0 too
    if conv.levels == "float32":
        return _NF4.astype(np.float64)
    # 4-decimal literals: a Python float rounded to the dtype through float32 (torch.tensor)
    dec = np.array([round(float(v), 4) for v in _NF4], np.float64)
    if np.dtype(dtype) == np.float64:
        return dec
    return _to_dtype(dec.astype(np.float32), dtype)


def _tables(name: str, conv: Convention, dtype):
    return _tables_cached(name, conv.name, float_code(dtype))


@functools.cache
def _tables_cached(name: str, conv_name: str, fmt: int):
    """(sorted levels, thresholds, code of each sorted position, sorted index of -0, of +0)."""
    conv = conventions.get(conv_name)
    levels = codebook(name, convention=conv, dtype=_FMT_DTYPES[fmt]())
    order = np.argsort(levels, kind="stable")  # -0 and +0 compare equal: code 0 (+0) first
    if name == "fp4" and conv.fp4_order == "minus_first":
        plus, minus = int(np.flatnonzero(order == 0)[0]), int(np.flatnonzero(order == 8)[0])
        order[plus], order[minus] = 8, 0
    srt = levels[order]
    if conv.select == "float32_midpoints":
        bounds = ((srt[:-1] + srt[1:]).astype(np.float32) / np.float32(2)).astype(np.float64)
    else:
        bounds = (srt[:-1] + srt[1:]) / 2  # exact: float32 levels, float64 sum
    zeros = np.flatnonzero(srt == 0)
    return (np.ascontiguousarray(srt), np.ascontiguousarray(bounds), order.astype(np.uint8),
            int(zeros[0]), int(zeros[-1]))


@dataclass(frozen=True, eq=False)
class NF4State:
    """What dequantize needs besides the codes.

    ``absmax``: the scale of each block as dequantize multiplies by it (float32; the input's dtype
    under ``torchao``; float64 for float64 input under ``exact``); with double quantization it is
    the dequantized value of the stored fields. ``nested_codes`` (uint8 under bitsandbytes, int8
    under torchao), ``nested_scale`` (bitsandbytes: the float32 absmax of each block of
    ``nested_block`` absmaxes; torchao: its ``256 / (2 max|d|)`` factor) and ``offset`` (the mean)
    are the stored double-quantization fields, ``None`` without it.
    """

    absmax: np.ndarray
    block: int
    shape: tuple
    dtype: np.dtype
    codebook: str
    convention: Convention
    nested_codes: np.ndarray | None = None
    nested_scale: np.ndarray | None = None
    offset: np.ndarray | None = None
    nested_block: int = 256

    @property
    def double_quant(self) -> bool:
        return self.nested_codes is not None

    def __repr__(self):
        dq = f", double_quant (nested_block={self.nested_block})" if self.double_quant else ""
        return (f"NF4State({self.codebook}, block={self.block}, shape={self.shape}, dtype={self.dtype}, "
                f"convention={self.convention.name!r}, {self.absmax.size} blocks{dq})")


def _compute_dtype(conv: Convention, dtype: np.dtype):
    if conv.compute == "float32":
        return np.dtype(np.float32)
    if conv.compute == "input":
        return dtype
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _check_block(block, n: int, conv: Convention, name="block") -> int:
    b = integer_scalar(block, name)
    if b <= 0:
        raise ValueError(f"{name} must be a positive integer; got {b}")
    if conv.full_blocks and n % b:
        raise ValueError(f"{name}={b} does not divide the size of x ({n}) under the {conv.name!r} "
                         "convention, which needs whole blocks")
    return b


def quantize(x, *, block=64, double_quant=False, convention="bitsandbytes", codebook="nf4",
             nested_block=256):
    """4-bit codes (uint8, one per element, x's shape) and the :class:`NF4State` of ``x``.

    Per block of ``block`` elements: ``absmax = max |x|``, then each element's code by the
    convention's rule (module docstring); ``codebook`` is ``"nf4"`` or ``"fp4"`` (bitsandbytes' FP4
    levels). ``double_quant=True`` stores the absmaxes in 8 bits in blocks of ``nested_block``.
    Codes are not packed: ``rq.pack(codes, 4, order="high_first")`` gives bitsandbytes' and
    torchao's byte layout. Under ``exact``, NaN and +-inf are errors (no code holds them).

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([0.4, -0.2, 0.040, 1.0])
    >>> rq.nf4.quantize(x, block=4)[0].tolist()
    [12, 5, 8, 15]
    >>> rq.nf4.quantize(x, block=4, codebook="fp4")[0].tolist()
    [4, 14, 1, 3]
    """
    conv = conventions.get(convention)
    name = _check_codebook(codebook)
    x = float_array(x)
    if conv.compute == "float32" and x.dtype == np.float64:
        raise TypeError(f"the {conv.name!r} convention takes float16, bfloat16 or float32 x; got float64")
    b = _check_block(block, x.size, conv)
    if not isinstance(double_quant, (bool, np.bool_)):
        raise TypeError(f"double_quant must be True or False; got {double_quant!r}")
    xk = flat_float(x)
    if conv.select == "exact" and xk.size and not np.isfinite(xk).all():
        bad = xk[~np.isfinite(xk)][0]
        raise ValueError(f"x contains {float(bad)}; the 'exact' convention has no code for NaN or inf "
                         "(fake_quantize returns NaN for such blocks)")
    if conv.select == "float32_midpoints" and xk.dtype == np.float32:
        codes, absmax = _threshold_codes32(xk, b, conv, name)
    else:
        absmax = _absmax(xk, b, conv, x.dtype)
        codes = _select(xk, absmax, b, conv, name, x.dtype)
    state = NF4State(absmax=absmax, block=b, shape=x.shape, dtype=x.dtype, codebook=name,
                     convention=conv)
    if double_quant:
        state = _double_quantize(state, conv, nested_block)
    return codes.reshape(x.shape), state


def _absmax(xk: np.ndarray, b: int, conv: Convention, dtype) -> np.ndarray:
    from ._kernels._nf4 import block_absmax

    nb = -(-xk.size // b)
    out = np.empty(nb, np.float64)
    if nb:
        block_absmax(xk.size, xk, b, conv.nan_absmax, out)
    adt = dtype if conv.compute == "input" else (np.float64 if dtype == np.float64 else np.float32)
    return out.astype(adt)


def _select(xk, absmax, b, conv, name, dtype) -> np.ndarray:
    from ._kernels._nf4 import select_codes

    cdt = _compute_dtype(conv, np.dtype(dtype))
    srt, bounds, code_of, zlo, zhi = _tables(name, conv, cdt)
    out = np.empty(xk.size, np.uint8)
    if xk.size:
        full = xk.size // b
        select_codes(xk.size, xk, absmax.astype(np.float64), b, full, _NORM[conv.normalize],
                     _NORM[conv.normalize_tail], _SELECT[conv.select], float_code(cdt), srt, bounds,
                     zlo, zhi, code_of, out)
    return out


def _threshold_codes32(xk, b, conv, name):
    """The float32-midpoint rule fused into one pass (same results as ``_select``, faster)."""
    from ._kernels._nf4 import threshold_codes32

    _, bounds, code_of, _, _ = _tables(name, conv, np.dtype(np.float32))
    bounds32 = bounds.astype(np.float32)  # float32 midpoints: exact
    nb = -(-xk.size // b)
    absmax = np.empty(nb, np.float32)
    out = np.empty(xk.size, np.uint8)
    if xk.size:
        threshold_codes32(xk.size, xk, b, xk.size // b, bounds32, code_of,
                          bool((code_of == np.arange(16)).all()), absmax, out)
    return out, absmax


def _state_of(state) -> NF4State:
    if not isinstance(state, NF4State):
        raise TypeError(f"state must be the NF4State returned by rq.nf4.quantize; got {type(state).__name__}")
    return state


def dequantize(codes, state, *, dtype=None):
    """``c[code] * absmax`` per block in ``dtype`` (default: the dtype x had), by the state's
    convention: ``exact`` rounds the real product once; ``bitsandbytes`` rounds it to float32 and
    then to ``dtype``; ``torchao`` computes it in the dtype. Codes must be integers in [0, 15] with
    the state's shape.

    >>> import numpy as np, refquant as rq
    >>> codes, st = rq.nf4.quantize(np.float32([2.0, -1.0, 0.5, 0.0]), block=4)
    >>> rq.nf4.dequantize(codes, st).tolist()
    [2.0, -1.0501461029052734, 0.4922246038913727, 0.0]
    """
    from ._kernels._nf4 import dequantize_codes

    st = _state_of(state)
    conv = st.convention
    q = integer_array(codes, "codes")
    if q.shape != tuple(st.shape):
        raise ValueError(f"codes must have the state's shape {tuple(st.shape)}; got {q.shape}")
    if q.size and (q.min() < 0 or q.max() > 15):
        bad = q.ravel()[np.argmax((q.ravel() < 0) | (q.ravel() > 15))]
        raise ValueError(f"codes must be in [0, 15]; got {int(bad)}")
    out_dt = np.dtype(st.dtype if dtype is None else dtype)
    if float_code(out_dt) is None:
        raise TypeError(f"dtype must be float16, bfloat16, float32 or float64; got {out_dt}")
    cdt = _compute_dtype(conv, np.dtype(st.dtype))
    levels = codebook(st.codebook, convention=conv, dtype=cdt)
    qk = np.ascontiguousarray(q, dtype=np.uint8).reshape(-1)
    out = np.empty(qk.size, np.float64)
    if qk.size:
        prod_fmt = float_code(cdt) if conv.dequant != "exact" else 0
        dequantize_codes(qk.size, qk, np.asarray(st.absmax, np.float64), st.block, levels,
                         conv.dequant == "exact", prod_fmt, float_code(out_dt), conv.bf16_flush, out)
    return out.astype(out_dt).reshape(st.shape)


def fake_quantize(x, *, block=64, double_quant=False, convention="bitsandbytes", codebook="nf4",
                  nested_block=256):
    """``dequantize(*quantize(x, ...))`` in x's dtype. Under ``exact``, a block holding NaN or
    +-inf comes back as NaN (its scale is not a number); the other blocks are unaffected.

    >>> import numpy as np, refquant as rq
    >>> rq.nf4.fake_quantize(np.float32([0.3, -0.6, 0.05, 1.0]), block=4).tolist()
    [0.33791524171829224, -0.5250730514526367, 0.07958029955625534, 1.0]
    """
    conv = conventions.get(convention)
    xa = float_array(x)
    kw = dict(block=block, double_quant=double_quant, convention=conv, codebook=codebook,
              nested_block=nested_block)
    if conv.select != "exact" or xa.size == 0 or np.isfinite(xa.astype(np.float64)).all():
        return dequantize(*quantize(xa, **kw))
    b = _check_block(block, xa.size, conv)
    flat = np.array(xa, copy=True).reshape(-1)
    nb = -(-flat.size // b)
    pad = np.zeros(nb * b, bool)
    pad[:flat.size] = ~np.isfinite(flat.astype(np.float64))
    bad_block = pad.reshape(nb, b).any(axis=1)
    mask = np.repeat(bad_block, b)[:flat.size]
    flat[mask] = 0
    if double_quant:
        raise ValueError("x contains NaN or inf: the exact double quantization needs finite blocks")
    out = dequantize(*quantize(flat.reshape(xa.shape), **kw)).reshape(-1)
    out[mask] = np.nan
    return out.reshape(xa.shape)


# ---------------------------------------------------------------- double quantization


def _double_quantize(state: NF4State, conv: Convention, nested_block) -> NF4State:
    nblk = integer_scalar(nested_block, "nested_block")
    if nblk <= 0:
        raise ValueError(f"nested_block must be a positive integer; got {nblk}")
    with np.errstate(all="ignore"):  # NaN and inf absmaxes poison the mean, as in the libraries
        if conv.double_quant == "bitsandbytes":
            codes, scale, offset, absmax = _dq_bitsandbytes(state.absmax, nblk, conv.sum_threads)
        elif conv.double_quant == "torchao":
            codes, scale, offset, absmax = _dq_torchao(state.absmax, nblk, conv.sum_threads)
        else:
            codes, scale, offset, absmax = _dq_exact(state.absmax, nblk)
    return NF4State(absmax=absmax, block=state.block, shape=state.shape, dtype=state.dtype,
                    codebook=state.codebook, convention=state.convention, nested_codes=codes,
                    nested_scale=scale, offset=offset, nested_block=nblk)


_TORCH_GRAIN = 32768


def _torch_sum32(a: np.ndarray, lanes: int, threads: int) -> np.float32:
    """torch's float32 ``sum`` of a 1-D array on CPU: its float32 cascade sum (``lanes`` wide) over
    each of ``min(threads, ceil(n / 32768))`` equal chunks, the chunk sums then added in order
    (torch's two-pass reduction; one chunk up to 32768 elements)."""
    from ._kernels._histogram import torch_sum32

    a = np.ascontiguousarray(a, np.float32)
    n = a.size
    tasks = 1 if n <= _TORCH_GRAIN else min(max(int(threads), 1), -(-n // _TORCH_GRAIN))
    size = -(-n // tasks)
    total = np.float32(0.0)
    for t in range(tasks):
        total = np.float32(total + np.float32(torch_sum32(a[t * size:(t + 1) * size], lanes)))
    return total


def _torch_mean32(a: np.ndarray, threads: int) -> np.float32:
    """torch's float32 ``mean`` on CPU: :func:`_torch_sum32` (8 lanes, as measured on torch 2.13
    x86 builds), divided by n in float32."""
    return np.float32(_torch_sum32(a, 8, threads) / np.float32(a.size))


@functools.cache
def dynamic_map() -> np.ndarray:
    """bitsandbytes' signed 8-bit dynamic map (256 float32 values, ascending), as its
    ``create_dynamic_map()`` builds it on torch's CPU kernels here.

    For ``i = 0..6``: ``2**i + 1`` boundaries ``linspace(0.1, 1)`` in float32 (torch computes
    ``start + step * j`` for the first half and ``end - step * (n - 1 - j)`` for the rest, fused
    into one rounding where its kernels contract multiply-adds), their midpoints
    ``f32(f32(b[j] + b[j+1]) / 2)`` times ``f32(10**(i - 6))`` with both signs, then 0 and 1.

    >>> import refquant as rq
    >>> m = rq.nf4.dynamic_map()  # doctest: +NEEDS_TORCH
    >>> m.size, float(m[0]), float(m[-1])
    (256, -0.992968738079071, 1.0)
    """
    from ._kernels._nf4 import linspace32
    from ._platform import torch_kernels_use_fma

    fused = torch_kernels_use_fma()
    data = []
    for i in range(7):
        b = linspace32(np.float32(0.1), np.float32(1.0), 2**i + 1, fused)
        means = (b[:-1] + b[1:]) / np.float32(2)
        scaled = np.float32(10.0 ** (i - 6)) * means
        data.append(scaled)
        data.append(-scaled)
    data.append(np.float32([0.0, 1.0]))
    return np.sort(np.concatenate(data).astype(np.float32))


@functools.cache
def _dynamic_lut() -> np.ndarray:
    from ._kernels._nf4 import codebook_lut

    m = dynamic_map()
    mids = ((m[:-1] + m[1:]) * np.float32(0.5)).astype(np.float64)
    out = np.empty(65536, np.uint8)
    codebook_lut(out.size, mids, out)
    return out


def _dq_bitsandbytes(absmax: np.ndarray, nblk: int, threads: int):
    from ._kernels._nf4 import block_absmax, lut_codes

    a = np.asarray(absmax, np.float32)
    offset = _torch_mean32(a, threads)
    d = (a - offset).astype(np.float32)
    nb = -(-d.size // nblk)
    nested = np.empty(nb, np.float64)
    codes = np.empty(d.size, np.uint8)
    if d.size:
        block_absmax(d.size, d, nblk, False, nested)
        lut_codes(d.size, d, nested, nblk, _dynamic_lut(), codes)
    nested32 = nested.astype(np.float32)
    return codes, nested32, np.float32(offset), _dq_bitsandbytes_absmax(codes, nested32, offset, nblk)


def _dq_bitsandbytes_absmax(codes, nested, offset, nblk) -> np.ndarray:
    m = dynamic_map()
    scale = np.repeat(nested, nblk)[:codes.size]
    return ((m[codes] * scale).astype(np.float32) + np.float32(offset)).astype(np.float32)


def _dq_exact(absmax: np.ndarray, nblk: int):
    """Double quantization in bitsandbytes' layout with one rounding per stored value: the mean
    of the absmaxes, each block's ``max |a - mean|``, the dynamic-map level nearest to the real
    ``(a - mean) / M`` and the dequantized ``map[q] * M + mean``."""
    from ._kernels._nf4 import exact_nested_absmax, exact_nested_codes

    if absmax.dtype == np.float64:
        raise TypeError("the exact double quantization stores float32 absmaxes: it takes float16, "
                        "bfloat16 or float32 x; got float64")
    a = np.asarray(absmax, np.float32)
    if a.size and not np.isfinite(a).all():
        raise ValueError("the exact double quantization needs finite block absmaxes (x holds NaN or inf)")
    scaled = (a.astype(np.float64) * 2.0**149).tolist()  # float32 values are multiples of 2**-149
    offset = f32_of_fraction(Fraction(sum(map(int, scaled)), max(a.size, 1) << 149))
    m = dynamic_map().astype(np.float64)
    mids = (m[:-1] + m[1:]) / 2  # exact: neighbouring float32 levels
    nb = -(-a.size // nblk)
    scale = np.empty(nb, np.float64)
    codes = np.empty(a.size, np.uint8)
    out = np.empty(a.size, np.float64)
    if a.size:
        exact_nested_codes(a.size, a, float(offset), nblk, mids, scale, codes)
        exact_nested_absmax(a.size, codes, m, scale, float(offset), nblk, out)
    return codes, scale.astype(np.float32), offset, out.astype(np.float32)


def _dq_torchao(absmax: np.ndarray, nblk: int, threads: int):
    dt = absmax.dtype
    if absmax.size % nblk:
        raise ValueError(f"the torchao double quantization needs whole blocks of nested_block={nblk} "
                         f"absmaxes; x has {absmax.size} blocks")
    if dt == np.float64:
        raise TypeError("the torchao double quantization takes float16, bfloat16 or float32 x")
    a32 = absmax.astype(np.float32)
    if dt == np.float32:
        mean = _torch_mean32(a32, threads)
    else:
        # torch's half-precision mean: float32 sum (its reduced-float path, 16 lanes), / n, then
        # the dtype
        mean = np.float32(_torch_sum32(a32, 16, threads) / np.float32(a32.size))
    mean = np.asarray(mean).astype(dt)
    d = (a32 - mean.astype(np.float32)).astype(dt)
    blocks = d.astype(np.float64).reshape(-1, nblk)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = np.abs(blocks).max(axis=1)
        factor = (256.0 / (2 * m).astype(dt).astype(np.float64)).astype(dt)
        prod = (blocks * factor.astype(np.float64)[:, None]).astype(dt).astype(np.float64)
        q = np.clip(np.rint(prod), -128, 127)
        q = np.where(np.isnan(q), 0, q).astype(np.int8).reshape(-1)
    return q, factor, mean, _dq_torchao_absmax(q, factor, mean, nblk)


def _dq_torchao_absmax(q, factor, mean, nblk) -> np.ndarray:
    dt = factor.dtype
    f = np.repeat(factor.astype(np.float64), nblk)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        s = (q.astype(np.float64) / f).astype(dt).astype(np.float64)
        return (s + np.float64(mean.astype(np.float64))).astype(dt)


def detect(name="bitsandbytes") -> Convention:
    """The row of ``name`` as the installed library runs it on this machine, found by running it.

    ``"bitsandbytes"``: dequantizes one block to bfloat16 with bitsandbytes (imports torch): the
    ``"bitsandbytes.avx512_bf16"`` row when a float32-subnormal product came back as zero, else
    ``"bitsandbytes"``. ``"bitsandbytes"`` and ``"torchao"`` get ``sum_threads`` from
    ``torch.get_num_threads()``. Other rows are returned as they are.
    """
    conv = conventions.get(name)
    if conv.name not in ("bitsandbytes", "bitsandbytes.avx512_bf16", "torchao"):
        return conv
    import logging
    import warnings

    import torch

    if conv.name != "torchao":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)
            try:
                import bitsandbytes.functional as bnbf
            finally:
                logging.disable(logging.NOTSET)
        x = torch.zeros(64, dtype=torch.bfloat16)
        x[0] = 2.0**-127  # a bfloat16 subnormal: absmax, and code 15 dequantizes to it
        packed, st = bnbf.quantize_4bit(x, blocksize=64, quant_type="nf4")
        y = bnbf.dequantize_4bit(packed, st, quant_type="nf4").float().reshape(-1)
        conv = conventions.get("bitsandbytes.avx512_bf16" if float(y[0]) == 0.0 else "bitsandbytes")
    return replace(conv, sum_threads=torch.get_num_threads())
