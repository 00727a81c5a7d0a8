"""Additive powers-of-two (APoT) quantization (Li, Dong, Wang, ICLR 2020, arXiv:1909.13144).

Level set (paper eq. 5), unsigned, ``k | bits``, ``n = bits / k`` additive terms::

    Q(alpha) = gamma * { p_0 + ... + p_{n-1} },  p_i in {0, 2^-i, 2^-(i+n), ..., 2^-(i+(2^k-2)n)}
    gamma    = alpha / (2 - 2^(1-n))              (the largest level is alpha)

``2**bits`` distinct levels; ``k = 1`` is the uniform grid ``alpha * m / (2**bits - 1)``.
Signed is sign and magnitude (the paper and the authors' code for weights): ``+-`` the unsigned
magnitudes over ``bits - 1`` bits, ``2**bits - 1`` levels. When ``k = 2`` does not divide
``bits - 1`` the magnitude mixes ``(bits - 2) / 2`` two-bit terms with one one-bit term, as the
authors' ``build_power_value`` does for B = 3 and B = 5 (exponents dealt round-robin to the two-bit
terms, the one-bit term taking the exponent before their last round); that rule is applied to
every odd B. Other ``k`` that do not divide the width are refused.

Every level is the real number ``alpha * S / S_max`` (S an integer sum of powers of two) rounded
once to float64, or once to the output dtype in :func:`fake_quantize` / :func:`dequantize`.

Projection: clip to ``[0, alpha]`` (``[-alpha, alpha]`` signed), then the nearest level. The
decision threshold between adjacent float64 levels ``a < b`` is their *real* midpoint; an input
exactly on it goes to the level of smaller magnitude. Inputs are compared exactly (float16,
bfloat16 and float32 widen to float64 without rounding).

``convention="torch.experimental"`` reproduces torch.ao's experimental ``APoTObserver`` /
``APoTQuantizer``: float32 levels ``f32(gamma32 * f32(p_0 + p_1 + ...))`` (float32 terms, each row
summed left to right in float32) with ``gamma32 = f32(alpha32 / sum_i 2^-i)``, codes
``level_indices`` (the level's position in the Cartesian product of the terms, not monotone in
value), the first ascending level of minimal float32 distance ``f32(|level - f32(x)|)``.
``signed=True`` is torch's per-term-signed set (see :func:`torch_experimental_qparams`). Unlike
torch it never writes into its input and clips out-of-range inputs to the end codes.
"""

from __future__ import annotations

import functools

import numpy as np

from ._dtypes import is_bfloat16
from ._registry import MethodConvention, Registry
from ._validation import (
    flat_float,
    float_array,
    grad_buffers,
    grad_like,
    group_sums,
    integer_array,
    integer_scalar,
    positive_finite,
)
from .formats import integer_dtype_for

__all__ = [
    "conventions",
    "levels",
    "quantize",
    "dequantize",
    "fake_quantize",
    "fake_quantize_grad",
    "normalize_weight",
    "torch_experimental_qparams",
]

conventions = Registry("apot", [
    MethodConvention(
        "paper", "levels alpha * S / S_max rounded once; the nearest level by exact real midpoints, "
        "a tie to the smaller magnitude", "tests/core/test_apot.py (Fraction oracle, every threshold "
        "+-1 ulp)"),
    MethodConvention(
        "torch.experimental", "float32 levels f32(gamma32 * f32(p_0 + p_1 + ...)), codes "
        "level_indices, the first level of minimal f32(|level - f32(x)|)",
        "tests/cross/test_apot_torch_experimental.py (torch's observer code run on torch)",
        backend="torch.ao.quantization.experimental APoTObserver / APoTQuantizer"),
])
_MAX_BITS = 16


# ----------------------------------------------------------------------------- level sets


def _term_exponents(width: int, k: int) -> list[list[int]]:
    """Each additive term's exponents e (the term takes 0 or 2^-e), for a ``width``-bit set."""
    if width % k == 0:
        n = width // k
        return [[i + j * n for j in range(2**k - 1)] for i in range(n)]
    if k == 2:
        m = (width - 1) // 2
        terms = [[t, m + t, 2 * m + 1 + t] for t in range(m)]
        return [*terms, [2 * m]]
    raise ValueError(f"k={k} must divide the magnitude width {width} (or k=2 for odd widths)")


@functools.lru_cache(maxsize=64)
def _unit_integers(bits: int, k: int, signed: bool) -> tuple[tuple[int, ...], int]:
    """Sorted integers S and S_max with unit levels ``S / S_max`` (negative S when signed)."""
    width = bits - 1 if signed else bits
    terms = _term_exponents(width, k)
    top = max(max(t) for t in terms)
    sums = [0]
    for term in terms:
        sums = [s + c for s in sums for c in [0, *(1 << (top - e) for e in term)]]
    mags = sorted(set(sums))
    if len(mags) != len(sums):  # pragma: no cover - the exponents are distinct by construction
        raise AssertionError("APoT level construction produced duplicates")
    s_max = sum(1 << (top - min(t)) for t in terms)
    if signed:
        return tuple([-m for m in reversed(mags[1:])] + mags), s_max
    return tuple(mags), s_max


def _check_bits_k(bits, k, signed: bool) -> tuple[int, int]:
    bits = integer_scalar(bits, "bits")
    k = integer_scalar(k, "k")
    low = 2 if signed else 1
    if not low <= bits <= _MAX_BITS:
        kind = "signed" if signed else "unsigned"
        raise ValueError(f"bits must be in [{low}, {_MAX_BITS}] for {kind} APoT; got {bits}")
    width = bits - 1 if signed else bits
    if k < 1 or k > width:
        raise ValueError(f"k must be in [1, {width}] for bits={bits}, signed={signed}; got {k}")
    if width % k and not (signed and k == 2):
        what = "bits - 1" if signed else "bits"
        raise ValueError(f"k={k} must divide {what} = {width} (signed also allows k=2)")
    return bits, k


def _alpha(alpha) -> float:
    a = positive_finite(alpha, "alpha")
    if a.size != 1:
        raise ValueError(f"alpha must be a scalar; got shape {np.shape(alpha)}")
    return float(a.reshape(-1)[0])


def _round_ratio(num: int, den: int, fmt: str) -> float:
    """The rational num/den (den > 0) rounded half-to-even once to ``fmt``, as a Python float."""
    v = num / den  # Python int division is correctly rounded to float64
    if fmt == "float64" or v == 0.0:
        return v
    p, q = v.as_integer_ratio()
    if p * den != num * q:  # inexact: round to odd so that the next rounding is the only one
        bits = np.float64(v).view(np.int64)
        if bits & 1 == 0:
            toward = np.inf if num * q > p * den else -np.inf
            v = float(np.nextafter(v, toward))
    if fmt == "float32":
        return float(np.float32(v))
    from ._codes import Format
    from ._kernels._affine import rnd

    return float(rnd(v, int(Format.FLOAT16 if fmt == "float16" else Format.BFLOAT16)))


def _fmt(dtype) -> str:
    dtype = np.dtype(dtype)
    return "bfloat16" if is_bfloat16(dtype) else dtype.name


@functools.lru_cache(maxsize=64)
def _level_values(bits: int, k: int, signed: bool, alpha: float, fmt: str) -> np.ndarray:
    ints, s_max = _unit_integers(bits, k, signed)
    a_num, a_den = alpha.as_integer_ratio()
    den = a_den * s_max
    vals = np.array([_round_ratio(a_num * s, den, fmt) for s in ints], dtype=np.float64)
    vals.setflags(write=False)
    return vals


def levels(bits, k, *args, alpha=1.0, signed=False) -> np.ndarray:
    """The APoT level set, sorted ascending, float64 (each level rounded once from the real value).

    ``2**bits`` levels unsigned, ``2**bits - 1`` signed (sign and magnitude over ``bits - 1``
    bits). ``bits`` is at most 16; ``k`` must divide the magnitude width (signed also takes
    ``k = 2`` with the authors' mixed terms). ``alpha`` and ``signed`` are keywords, as everywhere
    (given by position they still work, with a DeprecationWarning, for one release).

    >>> import refquant as rq
    >>> (rq.apot.levels(4, 2) * 48).astype(int).tolist()
    [0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48]
    >>> rq.apot.levels(4, 2, alpha=3.0, signed=True).round(6).tolist()[7:]
    [0.0, 0.3, 0.6, 0.9, 1.2, 1.8, 2.4, 3.0]
    """
    if args:
        if len(args) > 2:
            raise TypeError(f"levels takes bits, k and the keywords alpha, signed; got {len(args) + 2} "
                            "positional arguments")
        import warnings

        warnings.warn("rq.apot.levels(bits, k, alpha, signed): pass alpha= and signed= by keyword",
                      DeprecationWarning, stacklevel=2)
        alpha, signed = (*args, signed)[:2] if len(args) == 1 else args
    bits, k = _check_bits_k(bits, k, bool(signed))
    vals = _level_values(bits, k, bool(signed), _alpha(alpha), "float64")
    if np.unique(vals).size != vals.size:
        raise ValueError(f"alpha={alpha!r} is too small: APoT levels underflow and coincide")
    return vals.copy()


# ----------------------------------------------------------------------------- projection


_BUCKETS = 1 << 16


def _projector(lv: np.ndarray) -> tuple:
    """(bounds, hint, edges, lo, inv_width) for the kernels: threshold c_m means code >= m + 1 iff
    x >= c_m; bounds is padded with +inf to 2**p - 1 entries; hint is the bucket table."""
    from fractions import Fraction

    out = []
    for a, b in zip(lv[:-1].tolist(), lv[1:].tolist()):
        mid = (Fraction(a) + Fraction(b)) / 2
        c = float(mid)
        if mid >= 0:  # upper iff x > mid: the smallest float64 above mid
            if Fraction(c) <= mid:
                c = float(np.nextafter(c, np.inf))
        elif Fraction(c) < mid:  # upper iff x >= mid: the smallest float64 at or above mid
            c = float(np.nextafter(c, np.inf))
        out.append(c)
    size = 1
    while size < lv.size:
        size *= 2
    bounds = np.full(max(size - 1, 1), np.inf)
    bounds[: len(out)] = out
    lo = float(lv[0])
    width = float(lv[-1]) / _BUCKETS - lo / _BUCKETS  # finite even when lv[-1] - lo overflows
    inv_width = min(1.0 / width, np.finfo(np.float64).max) if width > 0 else 1.0
    frac = (np.arange(_BUCKETS) + 0.5) / _BUCKETS
    mids = lo * (1.0 - frac) + float(lv[-1]) * frac  # no overflow, unlike lo + i * width
    hint = np.searchsorted(np.asarray(out), mids, side="right").astype(integer_dtype_for(0, lv.size))
    edges = np.concatenate([[-np.inf], out, [np.inf]])
    for arr in (bounds, hint, edges):
        arr.setflags(write=False)
    return bounds, hint, edges, lo, inv_width


def _check_convention(convention):
    conventions.check(convention)


def _paper_plan(bits, k, signed, alpha):
    bits, k = _check_bits_k(bits, k, bool(signed))
    a = _alpha(alpha)
    return (bits, k, a, *_paper_projection(bits, k, bool(signed), a))


@functools.lru_cache(maxsize=64)
def _paper_projection(bits, k, signed, alpha):
    lv = _level_values(bits, k, signed, alpha, "float64")
    if np.unique(lv).size != lv.size:
        raise ValueError(f"alpha={alpha!r} is too small: APoT levels underflow and coincide")
    return lv, _projector(lv)


def quantize(x, alpha, *, bits, k, signed=False, convention="paper") -> np.ndarray:
    """APoT codes: the index into :func:`levels` of the nearest level after clipping.

    ``q = argmin_m |clip(x) - level_m|`` with the real-midpoint thresholds; an exact tie goes to
    the level of smaller magnitude. NaN is a ValueError; +-inf clip. Codes are the smallest
    unsigned dtype holding ``len(levels) - 1``. Under ``convention="torch.experimental"`` the codes
    are torch's ``level_indices`` as int32 (module docstring).

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([0.0, 0.0215, 0.1692, 0.385, 1.0, 0.0391, 0.875, 7.0, -1.0])
    >>> rq.apot.quantize(x, 1.0, bits=4, k=2).tolist()
    [0, 1, 6, 10, 15, 2, 14, 15, 0]
    >>> rq.apot.quantize(x[:6], 1.0, bits=4, k=2, convention="torch.experimental").tolist()
    [0, 3, 8, 13, 5, 12]
    """
    _check_convention(convention)
    x = float_array(x)
    xk = flat_float(x)
    nan = np.isnan(xk)
    if nan.any():
        raise ValueError(f"x contains NaN (first at flat index {int(np.flatnonzero(nan)[0])})")
    if convention == "torch.experimental":
        return _torch_codes(xk, alpha, bits, k, signed).reshape(x.shape)
    bits, k, _, lv, proj = _paper_plan(bits, k, signed, alpha)
    out = np.empty(xk.size, integer_dtype_for(0, lv.size - 1))
    if xk.size:
        from ._kernels._apot import apot_codes

        apot_codes(xk, proj[0], lv.size - 1, *proj[1:], out)
    return out.reshape(x.shape)


def _table(bits, k, signed, alpha, dtype, convention):
    if convention == "torch.experimental":
        _, _, lv32, _ = _torch_tables(*_check_bits_k(bits, k, False), _alpha32(alpha), bool(signed))
        return np.asarray(lv32, np.float64), lv32.astype(dtype)
    bits, k = _check_bits_k(bits, k, bool(signed))
    a = _alpha(alpha)
    lv = _level_values(bits, k, bool(signed), a, _fmt(dtype))
    return lv, lv.astype(dtype)


def dequantize(codes, alpha, *, bits, k, signed=False, dtype=np.float32,
               convention="paper") -> np.ndarray:
    """``levels(bits, k, alpha=alpha, signed=signed)[codes]``, each level rounded once (from its
    real value) to ``dtype``. Under ``"torch.experimental"`` codes are torch's level_indices and
    the values torch's float32 levels.

    >>> import numpy as np, refquant as rq
    >>> rq.apot.dequantize(np.uint8([0, 1, 15]), 1.0, bits=4, k=2)
    array([0.        , 0.02083333, 1.        ], dtype=float32)
    """
    _check_convention(convention)
    from ._dtypes import is_supported_float

    dtype = np.dtype(dtype)
    if not is_supported_float(dtype):
        raise TypeError(f"dtype must be float16, bfloat16, float32 or float64; got {dtype}")
    q = integer_array(codes, "codes")
    _, table = _table(bits, k, signed, alpha, dtype, convention)
    if convention == "torch.experimental":
        _, _, _, indices = _torch_tables(*_check_bits_k(bits, k, False), _alpha32(alpha),
                                         bool(signed))
        position = np.empty(indices.size, np.int64)
        position[indices] = np.arange(indices.size)
        _check_codes(q, indices.size)
        return table[position[q]]
    _check_codes(q, table.size)
    return table[q]


def _check_codes(q, n):
    if q.size and (q.min() < 0 or q.max() >= n):
        bad = q[(q < 0) | (q >= n)].reshape(-1)[0]
        raise ValueError(f"codes must lie in [0, {n - 1}]; got {bad}")


def fake_quantize(x, alpha, *, bits, k, signed=False, convention="paper") -> np.ndarray:
    """The nearest level after clipping (as :func:`quantize`), in x's dtype; NaN stays NaN.

    Each level is rounded once from its real value to x's dtype.

    >>> import numpy as np, refquant as rq
    >>> rq.apot.fake_quantize(np.float32([-1.0, 0.3, 0.875, 2.0, np.nan]), 1.0, bits=4, k=2)
    array([0.    , 0.3333, 0.75  , 1.    ,    nan], dtype=float32)
    """
    _check_convention(convention)
    x = float_array(x)
    xk = flat_float(x)
    if convention == "torch.experimental":
        codes_dtype_out = np.empty(x.shape, x.dtype)
        nan = np.isnan(xk)
        safe = np.where(nan, 0, xk).astype(xk.dtype)
        codes = _torch_codes(safe, alpha, bits, k, signed)
        vals = dequantize(codes, alpha, bits=bits, k=k, signed=signed, dtype=x.dtype,
                          convention=convention)
        codes_dtype_out[...] = np.where(nan, xk, vals.astype(xk.dtype)).reshape(x.shape)
        return codes_dtype_out
    bits, k, _, lv, proj = _paper_plan(bits, k, signed, alpha)
    kdt = np.float64 if x.dtype == np.float64 else np.float32
    table = _level_values(bits, k, bool(signed), _alpha(alpha), _fmt(x.dtype)).astype(kdt)
    out = np.empty(xk.size, kdt)
    if xk.size:
        from ._kernels._apot import apot_fake

        apot_fake(xk, proj[0], lv.size - 1, *proj[1:], table, out)
    out = out.reshape(x.shape)
    return out if out.dtype == x.dtype else out.astype(x.dtype)


def fake_quantize_grad(x, alpha, grad_output, *, bits, k, signed=False):
    """Gradients of :func:`fake_quantize` under the reparameterized clipping function (RCF).

    Per element, with ``u`` the unit level (alpha = 1) of x's code::

        d xhat / d x     = 1 if lo <= x <= alpha else 0          (lo = -alpha signed, 0 unsigned)
        d xhat / d alpha = sign(x)            if |x| > alpha      (signed; unsigned: 1 if x > alpha)
                           u - x / alpha      if lo <= x <= alpha (x / alpha rounded to float64)
                           0                  if x < 0            (unsigned)

    ``grad_x = grad_output * dx`` (exact, in x's dtype). ``grad_alpha`` is the sum of
    ``grad_output * d/d alpha``: each product in float64, summed in float64 (NumPy's pairwise
    order), rounded once to x's dtype; returned as a 0-d array. NaN in x gives NaN.

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([-1.0, 0.0, 0.3, 1.0, 2.5, 5.0, 6.0, 7.5])
    >>> gx, ga = rq.apot.fake_quantize_grad(x, 6.0, np.ones_like(x), bits=4, k=2)
    >>> gx.tolist(), round(float(ga), 5)
    ([0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0], 0.86667)
    """
    x = float_array(x)
    g = grad_like(grad_output, x)
    bits, k, a, lv, proj = _paper_plan(bits, k, signed, alpha)
    unit = _level_values(bits, k, bool(signed), 1.0, "float64")
    xk, gk, gx, ga = grad_buffers(x, g)
    if xk.size:
        from ._kernels._apot import apot_grad

        apot_grad(xk, gk, proj[0], lv.size - 1, *proj[1:], unit, a, bool(signed), gx, ga)
    return gx.reshape(x.shape).astype(x.dtype), group_sums(ga, x, None)


def normalize_weight(w, *, eps=0.0, ddof=1) -> np.ndarray:
    """APoT weight normalization ``(w - mean(w)) / (std(w) + eps)`` over the whole array.

    mean and std (``ddof=1``: the unbiased estimator, as ``torch.std`` in the authors' code; the
    paper adds ``eps = 1e-5``) are computed in float64; the result is rounded once to w's dtype.

    >>> import numpy as np, refquant as rq
    >>> rq.apot.normalize_weight(np.float32([1.0, 2.0, 3.0]))
    array([-1.,  0.,  1.], dtype=float32)
    """
    w = float_array(w, "w")
    if w.size < 2:
        raise ValueError(f"w needs at least 2 elements to normalize; got {w.size}")
    eps = float(eps)
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be finite and >= 0; got {eps!r}")
    w64 = w.astype(np.float64)
    std = w64.std(ddof=ddof)
    if std + eps == 0:
        raise ValueError("w is constant and eps=0: the normalization divides by zero")
    return ((w64 - w64.mean()) / (std + eps)).astype(w.dtype)


# ----------------------------------------------------------------------------- torch.experimental


def _alpha32(alpha) -> float:
    a = _alpha(alpha)
    a32 = float(np.float32(a))
    if not np.isfinite(a32) or a32 <= 0:
        raise ValueError(f"alpha must be a positive finite float32; got {alpha!r}")
    return a32


_TORCH_MAX_LEVELS = 1 << 20


@functools.lru_cache(maxsize=64)
def _torch_tables(bits: int, k: int, alpha32: float, signed: bool = False):
    """(gamma32, projector, float32 levels ascending, int64 level_indices), computed the way
    torch's ``APoTObserver._calculate_qparams`` does: float32 terms, each row of the Cartesian
    product summed left to right in float32, times ``gamma32`` in float32."""
    n = bits // k
    count = (2 ** (k + 1) - 1 if signed else 2**k) ** n
    if count > _TORCH_MAX_LEVELS:
        raise ValueError(f"torch.experimental with bits={bits}, k={k}, signed={signed} has {count} "
                         f"levels; at most {_TORCH_MAX_LEVELS} are supported")
    terms = []
    for i in range(n):
        mags = [2.0 ** -(i + j * n) for j in range(2**k - 1)]
        vals = [0.0, *(v for m in mags for v in ((m, -m) if signed else (m,)))]
        term = np.array(vals, np.float32)
        terms.append(np.sort(term)[::-1] if signed else term)  # distinct: any sort agrees
    denom = np.float32(sum(2.0**-i for i in range(n)))
    gamma32 = np.float32(np.float32(alpha32) / denom)
    sums = np.zeros(1, np.float32)
    for term in terms:  # itertools.product order; row sums accumulate left to right in float32
        sums = (sums[:, None] + term[None, :]).reshape(-1)
    raw = gamma32 * sums
    order = np.argsort(raw, kind="stable")
    lv32 = raw[order]
    lv32.setflags(write=False)
    order.setflags(write=False)
    return gamma32, _projector(lv32.astype(np.float64)), lv32, order.astype(np.int64)


def _torch_codes(xk, alpha, bits, k, signed):
    bits, k = _check_bits_k(bits, k, False)
    a32 = _alpha32(alpha)
    _, proj, lv32, indices = _torch_tables(bits, k, a32, bool(signed))
    out = np.empty(xk.size, np.int32)
    if xk.size:
        from ._kernels._apot import torch_experimental_codes

        torch_experimental_codes(xk, proj[0], lv32.size - 1, *proj[1:], lv32, indices,
                                 np.float32(a32), out)
    return out


def torch_experimental_qparams(x, *, bits, k, signed=False):
    """What torch.ao's experimental ``APoTObserver(b, k)`` computes for ``x``:
    ``observer(x); observer.calculate_qparams(signed)``.

    Returns ``(alpha, gamma, quantization_levels, level_indices)``::

        alpha  = f32(max(-min(x), max(x)))
        gamma  = f32(alpha / sum_i 2^-i)
        p_i    = {0, 2^-i, 2^-(i+n), ..., 2^-(i+(2^k-2)n)}  as float32 (signed: each also
                 negated, the term sorted descending)
        levels = sorted( f32(gamma * f32(p_0 + p_1 + ... ))  over the Cartesian product )
        level_indices[m] = position in the product of the m-th smallest level

    float32 levels ascending, int64 indices. Signed gives torch's per-term-signed set:
    ``(2**(k+1) - 1)**n`` values with duplicates (not the paper's sign and magnitude). Among
    equal float32 levels the order is a stable sort; torch's unstable CPU sort may order such
    duplicates differently, so their ``level_indices`` (not their values) can differ.

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([0.0, 0.0215, 0.1692, 0.385, 1.0, 0.0391])
    >>> a, g, lv, idx = rq.apot.torch_experimental_qparams(x, bits=4, k=2)
    >>> float(a), round(float(g), 6), idx.tolist()
    (1.0, 0.666667, [0, 3, 12, 15, 2, 14, 8, 11, 10, 1, 13, 9, 4, 7, 6, 5])
    >>> rq.apot.torch_experimental_qparams(x, bits=4, k=2, signed=True)[2].size
    49
    """
    x = float_array(x)
    if x.size == 0:
        raise ValueError("x must not be empty")
    x32 = x.astype(np.float32)
    if np.isnan(x32).any():
        raise ValueError("x contains NaN")
    alpha = np.float32(max(-x32.min(), x32.max()))
    bits, k = _check_bits_k(bits, k, False)
    gamma, _, lv32, indices = _torch_tables(bits, k, _alpha32(alpha), bool(signed))
    return alpha, gamma, lv32.copy(), indices.copy()
