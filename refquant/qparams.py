"""How scale and zero point are chosen from a range ``[min_val, max_val]``: every backend's rule.

``choose_qparams(min_val, max_val, *, qmin, qmax | fmt, symmetric, method, **options)`` returns
``(scale, zero_point)``. Scalars give NumPy scalars (per-tensor); arrays give arrays of the
broadcast shape (per-channel or per-block), one pair per entry. Each method reproduces its
backend's arithmetic op by op; the formulas (with the dtype and rounding of every intermediate)
are in the docstring of the function named after the method:

========================  ==================================================================
``"torch"``               torch.ao observers' ``_calculate_qparams`` (:func:`torch_qparams`)
``"fbgemm"``              FBGEMM/ATen ``ChooseQuantizationParams``, the qparams of
                          ``torch.fused_moving_avg_obs_fake_quant`` on CPU (:func:`fbgemm_qparams`)
``"torchao"``             torchao ``choose_qparams_affine`` (:func:`torchao_qparams`)
``"onnx"``                ONNX ``DynamicQuantizeLinear`` (:func:`onnx_qparams`)
``"amax/127.5"`` ...      the four symmetric int8 min-max scales found in the field
                          (:func:`amax_qparams`)
========================  ==================================================================

Bad ranges are errors under every method: NaN or +-inf in ``min_val``/``max_val`` and
``min_val > max_val`` raise ValueError (torch would return a NaN or infinite scale and an
undefined zero point, or an AssertionError). The one exception is torch's "never observed" pair
``(+inf, -inf)`` for a per-tensor range under ``method="torch"``, which returns torch's default
``(1.0, 0)``. ``min_val == max_val`` (all-equal data) is a valid range under every method; each
rule's own floor (``eps``, FBGEMM's 0.1, ONNX's 1.0) keeps the scale positive, except the
``amax`` variants with ``eps=0`` at ``amax == 0``. The integer range must have ``qmin < qmax``
(``"torch"`` also checks custom ranges as torch.ao's observers do, see :func:`torch_qrange`).
"""

from __future__ import annotations

import numpy as np

from ._validation import dtype_named, integer_scalar, resolve_range

__all__ = ["choose_qparams", "torch_qparams", "fbgemm_qparams", "torchao_qparams", "onnx_qparams",
           "amax_qparams", "torch_qrange", "torch_dtype_bits", "torch_symmetric_zero_point"]

METHODS = ("torch", "fbgemm", "torchao", "onnx", "amax/127.5", "amax/127", "amax/127-narrow",
           "amax/128")

F32_EPS = float(np.finfo(np.float32).eps)
FBGEMM_SMALL_SCALE = np.float32(6.1e-5)

# torch dtype name -> (default qmin, default qmax, qmin, qmax with reduce_range) as in
# torch.ao.quantization.utils.calculate_qmin_qmax (reduce_range is ignored for the wide types)
_TORCH_DEFAULT_RANGES = {
    "qint8": (-128, 127, -64, 63),
    "int8": (-128, 127, -64, 63),
    "quint8": (0, 255, 0, 127),
    "uint8": (0, 255, 0, 127),
    "qint32": (-(2**31), 2**31 - 1, -(2**31), 2**31 - 1),
    "int32": (-(2**31), 2**31 - 1, -(2**31), 2**31 - 1),
    "uint16": (0, 2**16 - 1, 0, 2**16 - 1),
    "int16": (-(2**15), 2**15 - 1, -(2**15), 2**15 - 1),
    "quint4x2": (0, 15, 0, 15),
}
# torch dtype name -> torch.iinfo(dtype).bits (HistogramObserver searches 2**bits bins)
TORCH_DTYPE_BITS = {"qint8": 8, "int8": 8, "quint8": 8, "uint8": 8, "qint32": 32, "int32": 32,
                    "uint16": 16, "int16": 16, "quint4x2": 8}
# IntFormat name -> torch dtype whose default range it is
_FMT_TO_TORCH = {"int8": "qint8", "uint8": "quint8", "int16": "int16", "uint16": "uint16",
                 "int32": "qint32"}


def choose_qparams(min_val, max_val, *, qmin=None, qmax=None, fmt=None, symmetric=False,
                   method="torch", **options):
    """``(scale, zero_point)`` for the range ``[min_val, max_val]`` under a backend's rule.

    ``method`` is one of ``METHODS``; ``options`` are the method's own keywords (see
    :func:`torch_qparams`, :func:`fbgemm_qparams`, :func:`torchao_qparams`,
    :func:`onnx_qparams`, :func:`amax_qparams`). Scalars give a per-tensor pair of NumPy
    scalars; arrays give arrays (per-channel). ``min_val`` and ``max_val`` are never modified.

    >>> import refquant as rq
    >>> rq.choose_qparams(-1.0, 0.5, fmt=rq.uint8)
    (np.float32(0.005882353), np.int32(170))
    >>> rq.choose_qparams(-1.0, 0.5, fmt=rq.int8, symmetric=True)
    (np.float32(0.007843138), np.int64(0))
    >>> rq.choose_qparams(-1.0, 0.5, fmt=rq.IntFormat(8, narrow=True), method="amax/127-narrow")
    (np.float32(0.007874016), np.int32(0))
    >>> s, z = rq.choose_qparams([-1.0, 0.0], [0.5, 2.0], fmt=rq.uint8, method="fbgemm")
    >>> s.tolist(), z.tolist()
    ([0.0058823530562222, 0.007843137718737125], [170, 0])
    """
    if method == "torch":
        return torch_qparams(min_val, max_val, qmin=qmin, qmax=qmax, fmt=fmt,
                             symmetric=symmetric, **options)
    if method == "onnx":
        if symmetric:
            raise ValueError("method='onnx' (DynamicQuantizeLinear) has no symmetric form")
        if qmin is not None or qmax is not None or fmt is not None:
            lo, hi = resolve_range(qmin, qmax, fmt)
            if (lo, hi) != (0, 255):
                raise ValueError(f"method='onnx' is uint8 [0, 255] only; got [{lo}, {hi}]")
        return onnx_qparams(min_val, max_val, **options)
    lo, hi = resolve_range(qmin, qmax, fmt)
    if method == "fbgemm":
        return fbgemm_qparams(min_val, max_val, lo, hi, preserve_sparsity=symmetric, **options)
    if method == "torchao":
        return torchao_qparams(min_val, max_val, lo, hi, symmetric=symmetric, **options)
    if method in _AMAX_DIVISORS:
        return amax_qparams(min_val, max_val, lo, hi, variant=method, **options)
    raise ValueError(f"method must be one of {METHODS}; got {method!r}")


# ----------------------------------------------------------------------------------------------
# shared checks


def _range_arrays(min_val, max_val, dtype=np.float32):
    """(mn, mx, scalar?) as arrays of ``dtype`` with the same broadcast shape (copies)."""
    mn0, mx0 = np.asarray(min_val), np.asarray(max_val)
    for name, a in (("min_val", mn0), ("max_val", mx0)):
        if a.dtype.kind not in "fiu" and a.dtype.name != "bfloat16":
            raise TypeError(f"{name} must be real numbers; got dtype {a.dtype}")
    mn, mx = np.broadcast_arrays(mn0.astype(dtype), mx0.astype(dtype))
    return mn.copy(), mx.copy(), mn.ndim == 0


def _check_range(mn, mx, *, finite=True, ordered=True):
    """Refuse non-finite ranges (``finite``) and ``min > max`` (``ordered``) with a ValueError."""
    mn64, mx64 = mn.astype(np.float64), mx.astype(np.float64)
    rules = ((finite, ~(np.isfinite(mn64) & np.isfinite(mx64)), "min_val and max_val must be finite", ", "),
             (ordered, mn64 > mx64, "min_val must be <= max_val", " > "))
    for wanted, bad, rule, sep in rules:
        if wanted and bad.any():  # the first offending pair
            i = np.argmax(bad.ravel())
            raise ValueError(f"{rule}; got min_val={float(mn.ravel()[i])}{sep}max_val={float(mx.ravel()[i])}")


def _x86_int32(v) -> np.ndarray:
    """float -> int32 as x86's truncating conversion (torch's ``.to(torch.int32)`` on CPU): NaN and
    values outside int32 give INT32_MIN, whatever machine refquant runs on."""
    v = np.asarray(v, np.float64)
    ok = (v >= -(2.0**31)) & (v < 2.0**31)
    return np.where(ok, np.trunc(np.where(ok, v, 0.0)), -(2.0**31)).astype(np.int32)


def _strict_range(qmin, qmax) -> tuple[int, int]:
    """(qmin, qmax) as ints with ``qmin < qmax`` (the rules divide by ``qmax - qmin``)."""
    lo, hi = integer_scalar(qmin, "qmin"), integer_scalar(qmax, "qmax")
    if lo >= hi:
        raise ValueError(f"qmin must be < qmax; got qmin={lo}, qmax={hi}")
    return lo, hi


def _out(scale, zp, scalar):
    if scalar:
        return scale[()], zp[()]
    return scale, zp


def _f32_eps(eps, name="eps"):
    e = float(eps)
    if not (np.isfinite(e) and e >= 0):
        raise ValueError(f"{name} must be finite and >= 0; got {eps!r}")
    return np.float32(e)


# ----------------------------------------------------------------------------------------------
# torch.ao observers


def torch_qrange(qmin=None, qmax=None, fmt=None, *, dtype=None, reduce_range=False):
    """``(qmin, qmax, dtype, custom)`` as torch.ao's observers settle them.

    Mirrors ``torch.ao.quantization.utils.calculate_qmin_qmax``: a torch ``dtype`` name alone
    gives its default range (``reduce_range`` halves the 8-bit ones: qint8 [-64, 63], quint8
    [0, 127]); an explicit range is "custom" and ``reduce_range`` makes it
    ``(qmin // 2, qmax // 2)``. An ``IntFormat`` int8/uint8/int16/uint16/int32 stands for
    qint8/quint8/int16/uint16/qint32 with their default range. Other ranges are custom ranges
    of ``dtype``, or, without one, of quint8 when ``qmin >= 0``, else of qint8 (at most 256
    codes), int16 (inside [-2**15, 2**15 - 1]) or qint32.

    A custom range is checked as torch's observers check it (ValueError where torch raises
    AssertionError): ``qmin <= 0 <= qmax``, ``qmin < qmax``, at most 256 codes for qint8/int8
    and ``2**32`` for qint32/int32.

    >>> torch_qrange(dtype="quint8", reduce_range=True)
    (0, 127, 'quint8', False)
    >>> torch_qrange(0, 15)
    (0, 15, 'quint8', True)
    >>> torch_qrange(-(2**15), 2**15 - 1)
    (-32768, 32767, 'int16', True)
    """
    if dtype is not None and dtype not in _TORCH_DEFAULT_RANGES:
        raise ValueError(f"dtype must be one of {sorted(_TORCH_DEFAULT_RANGES)}; got {dtype!r}")
    if fmt is None and qmin is None and qmax is None:
        if dtype is None:
            raise ValueError("give the integer range as qmin/qmax, fmt, or a torch dtype name")
        d = _TORCH_DEFAULT_RANGES[dtype]
        return (d[2], d[3], dtype, False) if reduce_range else (d[0], d[1], dtype, False)
    lo, hi = resolve_range(qmin, qmax, fmt)
    if fmt is not None and dtype is None:
        from .formats import NAMED_FORMATS

        name = next((n for n, f in NAMED_FORMATS.items() if (f.qmin, f.qmax) == (lo, hi)), None)
        if name in _FMT_TO_TORCH:
            return torch_qrange(dtype=_FMT_TO_TORCH[name], reduce_range=reduce_range)
    if dtype is None:
        dtype = _torch_dtype_for_range(lo, hi)
    _check_torch_custom_range(lo, hi, dtype)
    if reduce_range:
        lo, hi = lo // 2, hi // 2
    return lo, hi, dtype, True


def _torch_dtype_for_range(lo: int, hi: int) -> str:
    if lo >= 0:
        return "quint8"
    if hi - lo + 1 <= 256:
        return "qint8"
    return "int16" if -(2**15) <= lo and hi <= 2**15 - 1 else "qint32"


def _check_torch_custom_range(lo: int, hi: int, dtype: str) -> None:
    """torch.ao's ``validate_qmin_qmax`` and ``calculate_qmin_qmax`` checks of a custom range."""
    if not lo <= 0 <= hi:
        raise ValueError(f"method='torch' needs a range that includes 0 (qmin <= 0 <= qmax); "
                         f"got qmin={lo}, qmax={hi}")
    if lo >= hi:
        raise ValueError(f"method='torch' needs qmin < qmax; got qmin={lo}, qmax={hi}")
    limit = {"qint8": 256, "int8": 256, "qint32": 2**32, "int32": 2**32}.get(dtype)
    if limit is not None and hi - lo + 1 > limit:
        raise ValueError(f"a {dtype} range holds at most {limit} codes; got qmin={lo}, qmax={hi}")


def torch_dtype_bits(qmin=None, qmax=None, fmt=None, *, dtype=None) -> int:
    """``torch.iinfo(dtype).bits`` of the torch dtype :func:`torch_qrange` settles on.

    >>> torch_dtype_bits(fmt=None, dtype="quint8"), torch_dtype_bits(-8, 7), torch_dtype_bits(dtype="int16")
    (8, 8, 16)
    """
    return TORCH_DTYPE_BITS[torch_qrange(qmin, qmax, fmt, dtype=dtype)[2]]


def torch_symmetric_zero_point(qmin: int, qmax: int, dtype: str, custom: bool) -> int:
    """torch.ao's symmetric zero point: 128 for quint8/uint8 (``(qmin + qmax) // 2`` with a
    custom range), ``2**15`` for uint16, 0 for every other dtype.

    >>> torch_symmetric_zero_point(0, 255, "quint8", False), torch_symmetric_zero_point(0, 15, "quint8", True)
    (128, 7)
    """
    if dtype in ("quint8", "uint8"):
        return (qmin + qmax) // 2 if custom else 128
    return 2**15 if dtype == "uint16" else 0


def torch_qparams(min_val, max_val, *, qmin=None, qmax=None, fmt=None, symmetric=False,
                  eps=F32_EPS, reduce_range=False, dtype=None, qscheme=None):
    """torch.ao observers' ``_calculate_qparams`` (MinMax, MovingAverage, PerChannel, Histogram).

    ``mn = f32(min_val)``, ``mx = f32(max_val)`` (the observers' float32 buffers), ``e = f32(eps)``,
    ``mn_ = min(mn, 0)``, ``mx_ = max(mx, 0)``; every operation below is float32 with
    round-to-nearest-even, and Python constants are rounded to float32 first:

    * affine: ``s = max(f32(f32(mx_ - mn_) / f32(qmax - qmin)), e)``;
      ``z = clamp(qmin - int32(rne(f32(mn_ / s))), qmin, qmax)`` with the subtraction in int32
      (wrapping) and an out-of-range int32 conversion giving INT32_MIN, as torch on x86 does
      for qint32 -> scale float32, zp **int32**
    * symmetric: ``s = max(f32(max(-mn_, mx_) / f32((qmax - qmin) / 2)), e)``; ``z`` from
      :func:`torch_symmetric_zero_point` -> scale float32, zp **int64**
    * ``qscheme="per_channel_affine_float_qparams"``: ``s = f32(f32(mx - mn) / f32(qmax - qmin))``,
      ``s = s if s > e else 1.0``; ``z = f32(-mn / s)`` -> both **float32**.

    The range comes from :func:`torch_qrange` (``dtype`` is a torch dtype name such as
    ``"quint8"``; ``reduce_range`` as in torch). A per-tensor ``(+inf, -inf)`` (an observer that
    saw nothing) gives torch's ``(1.0, 0)``. Symmetric with ``reduce_range`` on quint8 raises
    NotImplementedError as torch's observers do.

    >>> torch_qparams(-0.5, 2.0, dtype="quint8")
    (np.float32(0.009803922), np.int32(51))
    >>> torch_qparams(0.0, 0.0, dtype="qint8", symmetric=True)
    (np.float32(1.1920929e-07), np.int64(0))
    """
    lo, hi, tdtype, custom = torch_qrange(qmin, qmax, fmt, dtype=dtype, reduce_range=reduce_range)
    float_qparams = _torch_qscheme(qscheme, symmetric)
    if symmetric and reduce_range and tdtype == "quint8":
        raise NotImplementedError("torch cannot reduce the range of symmetric quint8")
    mn, mx, scalar = _range_arrays(min_val, max_val)
    if scalar and mn == np.inf and mx == -np.inf:
        return np.float32(1.0), np.int64(0)
    _check_range(mn, mx)
    e = _f32_eps(eps)
    span = np.float32(hi - lo)
    with np.errstate(over="ignore"):
        if float_qparams:
            s = (mx - mn) / span
            s = np.where(s > e, s, np.float32(1.0)).astype(np.float32)
            return _out(s, (-mn) / s, scalar)
        mn_ = np.minimum(mn, np.float32(0))
        mx_ = np.maximum(mx, np.float32(0))
        if symmetric:
            s = np.maximum(np.maximum(-mn_, mx_) / np.float32((hi - lo) / 2), e)
            z = np.full(s.shape, torch_symmetric_zero_point(lo, hi, tdtype, custom), np.int64)
            return _out(s, z, scalar)
        s = np.maximum((mx_ - mn_) / span, e)
        # .to(int32), then torch subtracts in int32 (wrapping) and clamps
        r = _x86_int32(np.rint(mn_ / s)).astype(np.int64)
        z = np.clip((lo - r).astype(np.int32), lo, hi).astype(np.int32)
        return _out(s, z, scalar)


def _torch_qscheme(qscheme, symmetric) -> bool:
    """True for per_channel_affine_float_qparams; checks qscheme against ``symmetric``."""
    if qscheme is None:
        return False
    names = {"per_tensor_affine": False, "per_channel_affine": False,
             "per_tensor_symmetric": True, "per_channel_symmetric": True}
    if qscheme == "per_channel_affine_float_qparams":
        if symmetric:
            raise ValueError("qscheme='per_channel_affine_float_qparams' is not symmetric")
        return True
    if qscheme not in names:
        raise ValueError(f"qscheme must be one of {sorted(names) + ['per_channel_affine_float_qparams']};"
                         f" got {qscheme!r}")
    if names[qscheme] != bool(symmetric):
        raise ValueError(f"qscheme={qscheme!r} contradicts symmetric={symmetric!r}")
    return False


# ----------------------------------------------------------------------------------------------
# FBGEMM / ATen ChooseQuantizationParams


def fbgemm_qparams(min_val, max_val, qmin, qmax, *, preserve_sparsity=False,
                   small_scale_threshold=True):
    """FBGEMM's ``ChooseQuantizationParams`` as ATen's CPU fused QAT op runs it.

    ``min, max = f32(min_val), f32(max_val)``; ``/`` between ints is C integer division:

    1. if ``preserve_sparsity`` and ``min < 0 < max``: ``sqmin = -((qmax-qmin)/2 + 1)``,
       ``sqmax = (qmax-qmin)/2``, ``m = max(|f32(min/sqmin)|, |f32(max/sqmax)|)`` (float32),
       ``min = f32(m*sqmin)``, ``max = f32(m*sqmax)``;
    2. ``min = min(min, 0)``, ``max = max(max, 0)``;
       ``s = f32((float64(max) - min) / (qmax - qmin))`` (float64, then rounded once);
       ``s = 0.1`` if ``s == 0`` or ``f32(1/s)`` is inf;
    3. (CPU only, ``small_scale_threshold=True``) if ``s < t = f32(6.1e-5)``: ``s = t`` and the
       range is stretched: ``max = f32(t*(qmax-qmin))`` if ``min == 0``, else
       ``min = -f32(t*(qmax-qmin))`` if ``max == 0``, else both times ``f32(t/s_old)``;
    4. in float64: ``z0 = qmin - min/s`` if ``|qmin| + |min/s| < |qmax| + |max/s|`` else
       ``qmax - max/s``; if ``preserve_sparsity`` and the *adjusted* ``min < 0 < max``:
       ``z0 = (qmin+qmax)/2``; ``z = qmin if z0 < qmin, qmax if z0 > qmax, else rne(z0)``, and
       INT32_MIN for a NaN ``z0`` (x86's conversion).

    FBGEMM checks nothing: ``min > max`` (a moving average a few ulps apart), +-inf and NaN go
    through the IEEE arithmetic above (``fbgemm_qparams(-1.0, inf, 0, 255)`` is ``(inf, INT32_MIN)``).

    Returns a float32 scale and an int32 zero point. ``small_scale_threshold=False`` gives the
    CUDA kernel's rule (source only, not tested here).

    >>> fbgemm_qparams(0.0, 0.0, 0, 255)
    (np.float32(0.1), np.int32(0))
    >>> fbgemm_qparams(-1e-6, 1e-6, 0, 255)
    (np.float32(6.1e-05), np.int32(128))
    """
    lo, hi = _strict_range(qmin, qmax)
    mn, mx, scalar = _range_arrays(min_val, max_val)  # FBGEMM checks neither order nor finiteness
    n = mn.size
    s_out = np.empty(n, np.float32)
    z_out = np.empty(n, np.int32)
    for i, (a, b) in enumerate(zip(mn.ravel().tolist(), mx.ravel().tolist(), strict=True)):
        s_out[i], z_out[i] = _fbgemm_one(np.float32(a), np.float32(b), lo, hi,
                                         bool(preserve_sparsity), bool(small_scale_threshold))
    return _out(s_out.reshape(mn.shape), z_out.reshape(mn.shape), scalar)


def _c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _fbgemm_one(mn, mx, qmin, qmax, sparse, small):
    with np.errstate(all="ignore"):  # float32 overflow to inf is part of the rule
        return _fbgemm_steps(mn, mx, qmin, qmax, sparse, small)


def _fbgemm_steps(mn, mx, qmin, qmax, sparse, small):
    f32 = np.float32
    sym = sparse and mn < 0 and mx > 0
    if sym:
        sqmin = -(_c_div(qmax - qmin, 2) + 1)
        sqmax = _c_div(qmax - qmin, 2)
        m = max(abs(f32(mn / f32(sqmin))), abs(f32(mx / f32(sqmax))))
        mn = f32(float(m) * sqmin)
        mx = f32(float(m) * sqmax)
    mn, mx = min(mn, f32(0)), max(mx, f32(0))
    s = f32((float(mx) - float(mn)) / (qmax - qmin))
    if s == 0 or np.isinf(f32(1) / s):
        s = f32(0.1)
    if small and s < FBGEMM_SMALL_SCALE:
        old, s = s, FBGEMM_SMALL_SCALE
        if mn == 0:
            mx = f32(FBGEMM_SMALL_SCALE * f32(qmax - qmin))
        elif mx == 0:
            mn = f32(-FBGEMM_SMALL_SCALE * f32(qmax - qmin))
        else:
            amp = f32(FBGEMM_SMALL_SCALE / old)
            mn, mx = f32(mn * amp), f32(mx * amp)
    sd = float(s)
    from_min = qmin - float(mn) / sd
    from_max = qmax - float(mx) / sd
    err_min = abs(qmin) + abs(float(mn) / sd)
    err_max = abs(qmax) + abs(float(mx) / sd)
    z0 = from_min if err_min < err_max else from_max
    if sparse and mn < 0 and mx > 0:  # asked again of the adjusted range (a subnormal one became 0)
        z0 = (qmin + qmax) / 2.0
    if z0 != z0:  # NaN (a NaN or 1-bit symmetric range): x86's conversion gives INT32_MIN
        return s, -(2**31)
    z = qmin if z0 < qmin else qmax if z0 > qmax else int(np.rint(z0))
    return s, z


# ----------------------------------------------------------------------------------------------
# torchao choose_qparams_affine

_TORCHAO_MAPPINGS = ("symmetric", "symmetric_no_clipping_err", "asymmetric")


def _narrow_dtype(name):
    return dtype_named(name, ("float32", "float16", "bfloat16"))


def torchao_qparams(min_val, max_val, qmin, qmax, *, symmetric=False, mapping=None, dtype=None,
                    eps=None, scale_dtype=None, zero_point_dtype=np.int32):
    """torchao ``choose_qparams_affine`` from a block's ``amin``/``amax`` (torchao 0.18).

    Computed in the input ``dtype`` (float32, float16 or bfloat16; default: ``min_val``'s dtype
    when it is one of those, else float32): each operation takes its operands in float32 (torch
    CPU's opmath; Python constants become float32) and rounds the result once to ``dtype``,
    which is the correctly rounded result in ``dtype``. ``e = eps`` (default
    ``finfo(dtype).smallest_normal``), ``mn_ = min(mn, 0)``, ``mx_ = max(mx, 0)``:

    * ``mapping="symmetric"``: ``s = max(-mn_, mx_) / ((qmax - qmin) / 2)``;
      ``z = int((qmax + qmin + 1) / 2)``; ``s = max(s, e)``
    * ``"symmetric_no_clipping_err"``: ``s = mn_/qmin if mn_/qmin > mx_/qmax else mx_/qmax``
      (each quotient rounded to ``dtype``), then as symmetric
    * ``"asymmetric"`` (default unless ``symmetric=True``): ``s = max((mx_ - mn_)/(qmax - qmin), e)``,
      ``z = clamp(qmin - rne(mn_ / s), qmin, qmax)`` (each op rounded to ``dtype``).

    ``min``/``max`` are torch.minimum/maximum: NaN propagates; on equal operands (``-0.0`` and
    ``0.0``) torch's CPU kernel returns the second operand in its unrolled vector loop (the first
    ``n - n % 16`` float32 or ``n - n % 32`` float16/bfloat16 elements of the contiguous per-block
    min/max torchao computes, the same with ATEN_CPU_CAPABILITY default, avx2 and avx512) and the
    first in its scalar tail, so the
    sign of a zero scale (kept by ``clamp(min=eps)`` when ``eps`` rounds to 0 in ``dtype``: eps is
    rounded to ``dtype`` before the comparison) depends on the block's position. Non-finite ranges
    go through IEEE arithmetic as in torchao; a NaN zero point becomes INT32_MIN (x86's
    conversion).

    ``scale`` is returned in ``scale_dtype`` (default ``dtype``), the zero point in
    ``zero_point_dtype`` (int32 as torchao's default; None keeps it in ``dtype`` as torchao's
    private ``_choose_qparams_affine`` does).

    >>> torchao_qparams(-1.0, 0.5, -128, 127, symmetric=True)
    (np.float32(0.007843138), np.int32(0))
    >>> s, z = torchao_qparams(-1.0, 0.5, 0, 255, dtype="float16")
    >>> float(s), int(z)
    (0.00588226318359375, 170)
    """
    lo, hi = _strict_range(qmin, qmax)
    if mapping is None:
        mapping = "symmetric" if symmetric else "asymmetric"
    if mapping not in _TORCHAO_MAPPINGS:
        raise ValueError(f"mapping must be one of {_TORCHAO_MAPPINGS}; got {mapping!r}")
    if dtype is None:
        src = np.asarray(min_val).dtype
        dtype = src if src.name in ("float32", "float16", "bfloat16") else np.float32
    dt = _narrow_dtype(dtype if isinstance(dtype, str) else np.dtype(dtype).name)
    if eps is None:
        eps = _smallest_normal(dt)
    mn, mx, scalar = _range_arrays(min_val, max_val, dt)
    _check_range(mn, mx, finite=False)  # torchao takes +-inf and NaN through IEEE arithmetic
    f32 = np.float32

    def op(v):  # a float32 result rounded to dt
        return np.asarray(v, f32).astype(dt)

    zero = np.zeros(mn.shape, dt)
    body = _vector_body(mn.shape, dt)
    mn_, mx_ = _torch_minimum(mn, zero, body), _torch_maximum(mx, zero, body)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if mapping == "asymmetric":
            s = op(mx_.astype(f32) - mn_.astype(f32)).astype(f32)
            s = op(s / f32(hi - lo))
            s = _clamp_min(s, eps, dt)
            r = np.rint(op(mn_.astype(f32) / s.astype(f32)).astype(f32))
            z = op(f32(lo) - r).astype(f32)
            z = np.clip(z, f32(lo), f32(hi))
            z = op(z)
        else:
            if mapping == "symmetric":
                amax = _torch_maximum(op(-mn_.astype(f32)), mx_, body)
                s = op(amax.astype(f32) / f32((hi - lo) / 2))
            else:
                smin = op(mn_.astype(f32) / f32(lo))
                smax = op(mx_.astype(f32) / f32(hi))
                s = np.where(smin > smax, smin, smax)
            z = np.full(s.shape, int((hi + lo + 1) / 2)).astype(dt)
            s = _clamp_min(s, eps, dt)
    if zero_point_dtype is not None:  # torchao's .to(zero_point_dtype); None keeps dtype
        zd = np.dtype(zero_point_dtype)
        z = _x86_int32(z.astype(np.float32)).astype(zd) if zd.kind in "iu" else z.astype(zd)
    if scale_dtype is not None:
        s = s.astype(f32).astype(_narrow_dtype(np.dtype(scale_dtype).name)
                                 if np.dtype(scale_dtype).itemsize < 8 else np.float64)
    return _out(s, z, scalar)


def _smallest_normal(dt) -> float:
    return {"float32": 2.0**-126, "bfloat16": 2.0**-126, "float16": 2.0**-14}[dt.name]


def _clamp_min(s, eps, dt):
    """torch.clamp(s, min=eps): ``eps`` is first rounded to ``dt`` (float16 turns 1e-10 into 0), then
    ``eps if eps > s else s``, so a ``-0.0`` scale survives a zero ``eps`` and NaN stays NaN."""
    e = np.asarray(np.float64(eps)).astype(dt)
    return np.where(e > s, e, s).astype(dt)


def _vector_body(shape, dt):
    """Where torch's unrolled vector loop of 64 bytes (not its scalar tail) meets each element."""
    n = int(np.prod(shape, dtype=np.int64))
    lanes = 64 // dt.itemsize
    return (np.arange(n) < n - n % lanes).reshape(shape)


def _torch_pick(a, b, take_a, body):
    """torch.minimum/maximum given ``take_a`` (``a < b`` or ``a > b``): NaN from either side; on
    ties the vector body returns ``b`` and the scalar tail ``a`` (see :func:`torchao_qparams`)."""
    tie = (a == b) & ~body
    r = np.where(take_a | tie, a, b)
    return np.where(np.isnan(a), a, np.where(np.isnan(b), b, r))


def _torch_minimum(a, b, body):
    return _torch_pick(a, b, a < b, body)


def _torch_maximum(a, b, body):
    return _torch_pick(a, b, a > b, body)


# ----------------------------------------------------------------------------------------------
# ONNX DynamicQuantizeLinear


def onnx_qparams(min_val, max_val):
    """ONNX ``DynamicQuantizeLinear`` (opset 11, uint8), as ``onnx.reference`` computes it.

    float32 throughout: ``mn = min(0, min_val)``, ``mx = max(0, max_val)``,
    ``s = f32((mx - mn if mx != mn else 1) / 255)``;
    ``z = rne(clamp(f32(0 - f32(mn / s)), 0, 255))`` -> scale float32, zero point uint8.
    (The reference gives ``1/255`` for an all-zero range where the spec's comment and ONNX
    Runtime give 1.0; refquant follows the installed reference.)

    >>> onnx_qparams(-1.0, 0.5)
    (np.float32(0.005882353), np.uint8(170))
    """
    mn, mx, scalar = _range_arrays(min_val, max_val)
    _check_range(mn, mx)
    f32 = np.float32
    mn = np.minimum(f32(0), mn)
    mx = np.maximum(f32(0), mx)
    with np.errstate(over="ignore", divide="ignore", under="ignore"):  # as onnx.reference
        s = np.where(mx == mn, f32(1.0), mx - mn).astype(f32) / f32(255)
        z0 = f32(0) - mn / s
    z = np.rint(np.clip(z0, f32(0), f32(255))).astype(np.uint8)
    return _out(s.astype(f32), z, scalar)


# ----------------------------------------------------------------------------------------------
# the four symmetric "amax" scales

# variant -> divisor as a function of (qmin, qmax)
_AMAX_DIVISORS = {
    "amax/127.5": lambda lo, hi: (hi - lo) / 2,
    "amax/127": lambda lo, hi: hi,
    "amax/127-narrow": lambda lo, hi: hi,
    "amax/128": lambda lo, hi: -lo,
}


def amax_qparams(min_val, max_val, qmin, qmax, *, variant="amax/127.5", eps=0.0):
    """Symmetric scales from ``amax = max(|min_val|, |max_val|)``.

    float32: ``s = max(f32(amax / d), f32(eps))`` and ``z = 0`` (int32), where for int8 the
    divisor ``d`` is

    * ``"amax/127.5"``: ``(qmax - qmin) / 2`` (torch.ao symmetric observers, torchao SYMMETRIC)
    * ``"amax/127"``: ``qmax`` on the full grid [-128, 127] (optimum-quanto ``absmax_scale``,
      ModelOpt max calibration)
    * ``"amax/127-narrow"``: ``qmax``, meant for the narrow grid ``qmin = -qmax`` (Brevitas)
    * ``"amax/128"``: ``-qmin`` (torchao SYMMETRIC_NO_CLIPPING_ERR and AIMET when amax is on the
      negative side).

    A signed range is required (``qmin < 0 < qmax``); ``"amax/127-narrow"`` also needs
    ``qmin == -qmax``. ``amax == 0`` gives ``s = f32(eps)`` (0.0 by default: callers choose).

    >>> [float(amax_qparams(-1.0, 0.5, -128, 127, variant=v)[0]) for v in ("amax/127.5", "amax/128")]
    [0.007843137718737125, 0.0078125]
    """
    lo, hi = integer_scalar(qmin, "qmin"), integer_scalar(qmax, "qmax")
    if variant not in _AMAX_DIVISORS:
        raise ValueError(f"variant must be one of {sorted(_AMAX_DIVISORS)}; got {variant!r}")
    if not lo < 0 < hi:
        raise ValueError(f"{variant} needs a signed range qmin < 0 < qmax; got [{lo}, {hi}]")
    if variant == "amax/127-narrow" and lo != -hi:
        raise ValueError(f"amax/127-narrow needs the narrow range qmin == -qmax; got [{lo}, {hi}]")
    mn, mx, scalar = _range_arrays(min_val, max_val)
    _check_range(mn, mx)
    amax = np.maximum(np.abs(mn), np.abs(mx))
    s = np.maximum(amax / np.float32(_AMAX_DIVISORS[variant](lo, hi)), _f32_eps(eps))
    return _out(s.astype(np.float32), np.zeros(s.shape, np.int32), scalar)
