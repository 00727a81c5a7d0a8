"""Golden tooling for the low-precision float formats: cases, files, check, identify and sweep.

A float setting is one reference call: ``rq.quantize`` (the uint8 codes) or ``rq.fake_quantize``
(values in x's dtype) of ``x / scale`` to a :class:`~refquant.FloatFormat` under one element
convention of :mod:`refquant.float_conventions` (``scale=1``: the element cast ``rq.encode``).
The saturate switch and the rounding mode are folded into the convention's knobs
(``saturate``, ``saturate_formats=()``, ``rounding``), so a setting is the format, the scale and
one FloatConvention. The diagnosis engine's family ``"float"`` lists the changes tried: each
other rounding mode, the other overflow rule (saturate vs IEEE), the inf rule when saturating,
the NaN rules (payload, the no-NaN formats' rules, NaN to +-max or to zero), the signed-zero
rules, the quotient (real, float32 division, float32 or float64 reciprocal), float32
dequantization, and subnormals flushed to zero on input or output. A cause is named only where
recomputing under the change reproduces the kernel's output.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .. import float_conventions as _fconv
from ..floatformats import NAMED_FLOAT_FORMATS, FloatFormat, float_format
from ._args import check_op, op_outputs
from ._diagnose import _CANNOT_RUN, ROUNDINGS, Change, Setting, diagnose, register_changes, same

__all__ = ["float_inputs", "float_cases", "float_identify", "float_sweep", "float_setting",
           "check_manifest", "resolve_format", "with_knobs", "make_setting", "no_code",
           "knob_differences", "FLOAT_CAUSES"]

FLOAT_CAUSES = ("subnormals", "e8m0 exponent field")  # causes of this family beyond CAUSES
_FMT_FIELDS = tuple(f.name for f in dataclasses.fields(FloatFormat))


def wants_float(fmt) -> bool:
    """Whether ``fmt`` selects the float tooling; a name that is neither an integer nor a float
    format is a ValueError listing both."""
    from ..floatquant import is_float_format
    from ..formats import NAMED_FORMATS

    if is_float_format(fmt):
        return True
    if isinstance(fmt, str) and fmt not in NAMED_FORMATS:
        raise ValueError(f"fmt must be an integer format ({', '.join(sorted(NAMED_FORMATS))}) or a "
                         f"float format ({', '.join(NAMED_FLOAT_FORMATS)}); got {fmt!r}")
    return False


def route(what, fmt, scale, zero_point, qmin, qmax, saturate, axis=None, block_size=None):
    """``(True, scale)`` when ``fmt`` is a float format (scale default 1; an integer-only
    argument is a ValueError), else ``(False, (qmin, qmax))`` resolved from ``fmt`` when given
    (``saturate`` or a missing scale is an error): the entry of ``what`` (cases, sweep,
    identify)."""
    from .._validation import resolve_range

    if wants_float(fmt):
        extra = {"qmin": qmin, "qmax": qmax, "axis": axis, "block_size": block_size}
        given = ", ".join(f"{k}={v!r}" for k, v in extra.items() if v is not None)
        if given:
            raise ValueError(f"{what} of a float format is per tensor with no qmin/qmax; got {given}")
        if not (isinstance(zero_point, (int, float)) and zero_point == 0):
            raise ValueError(f"float formats have no zero point: zero_point must be 0; got {zero_point!r}")
        return True, 1.0 if scale is None else scale
    if saturate is not None:
        raise ValueError(f"saturate applies to float formats only; got saturate={saturate!r}")
    if scale is None:
        raise TypeError(f"{what}() needs a scale (and qmin/qmax, or fmt)")
    return False, (resolve_range(qmin, qmax, fmt) if fmt is not None else (qmin, qmax))


def resolve_format(fmt) -> FloatFormat:
    """A FloatFormat from itself or a named format's name (else a ValueError listing them)."""
    if isinstance(fmt, str) and fmt not in NAMED_FLOAT_FORMATS:
        raise ValueError(f"fmt must be a FloatFormat or one of {', '.join(NAMED_FLOAT_FORMATS)}; "
                         f"got {fmt!r}")
    return float_format(fmt)


def with_knobs(convention, fmt: FloatFormat, saturate=None, rounding=None):
    """The FloatConvention with the saturate switch and rounding folded in as knobs."""
    conv = _fconv.get(convention)
    if saturate is not None:
        if not isinstance(saturate, (bool, np.bool_)):
            raise TypeError(f"saturate must be True, False or None; got {saturate!r}")
        if conv.fixed_saturate and bool(saturate) != conv.saturates(fmt):
            raise ValueError(f"convention {conv.name!r} has no saturate switch; got saturate={saturate!r}")
        conv = conv.replace(saturate=bool(saturate), saturate_formats=())
    if rounding is not None:
        conv = conv.replace(rounding=rounding)
    return conv


def _scalar_scale(scale) -> float:
    s = np.asarray(scale)
    if s.ndim != 0 and s.size != 1:
        raise ValueError(f"float golden tooling is per tensor: scale must be a scalar; got shape {s.shape}")
    if s.dtype.kind not in "fiu":
        raise TypeError(f"scale must be a number; got {scale!r}")
    v = float(s.reshape(()))
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"scale must be finite and > 0; got {v!r}")
    return v


def make_setting(op, fmt, scale, convention) -> Setting:
    """The engine's Setting for one float reference call (``fmt`` set, the runner below)."""
    return Setting(op, scale, 0, None, None, convention, runner=_run, fmt=fmt)


def _reciprocal_pre(width):
    """A marker rule: the quotient is ``x * fl(1 / s)`` in ``width`` (the runner reads it)."""
    def pre(x, s):
        return x
    pre.reciprocal = width
    pre.__name__ = f"reciprocal_{width}"
    return pre


def _run(s: Setting, x) -> np.ndarray:
    import refquant as rq

    conv = s.conv
    width = getattr(s.pre, "reciprocal", None)
    fn = rq.quantize if s.op == "quantize" else rq.fake_quantize
    if width is None:
        return fn(x, s.scale, fmt=s.fmt, convention=conv)
    x = np.asarray(x)
    w = np.float32 if width == "float32" else np.float64
    t = x.astype(w) * (w(1.0) / w(s.scale))
    conv = conv.replace(quotient="exact")
    if s.op == "quantize":
        return rq.quantize(t, 1.0, fmt=s.fmt, convention=conv)
    v = rq.fake_quantize(t.astype(np.float64), 1.0, fmt=s.fmt, convention=conv)
    from ..floatquant import _times_scale

    return _times_scale(v, np.broadcast_to(np.float64(s.scale), v.shape), x.dtype)


def no_code(s: Setting, x) -> np.ndarray:
    """Inputs that have no output under the setting (NaN, or inf, where the convention gives the
    format no code for it and raises): the engine runs them as 0 and leaves them out."""
    shape = np.shape(x)
    conv = s.conv
    if s.op != "quantize" and (conv.arithmetic != "exact" or conv.nan_no_nan == "nan"):
        return np.zeros(shape, bool)  # fake_quantize: NaN (or inf) gives the value NaN
    from ..floatquant import _Cast

    try:
        cast = _Cast(s.fmt, s.conv, None, None)
    except _CANNOT_RUN:
        return np.zeros(shape, bool)
    from .._kernels import _float as k

    with np.errstate(invalid="ignore", over="ignore"):
        x64 = np.asarray(x).astype(np.float64)
        out = np.zeros(shape, bool)
        if cast.sp[k.SP_NAN_POS] == cast.NO_CODE:
            out |= np.isnan(x64)
        nan_inf = s.conv.arithmetic == "brevitas"  # its +-inf is inf / inf = NaN
        if cast.sp[k.SP_INF_POS] == cast.NO_CODE or nan_inf and cast.sp[k.SP_NAN_POS] == cast.NO_CODE:
            out |= np.isinf(x64)
    return out


# ------------------------------------------------------------------------------------ changes


def _value_of(code: int, s: Setting, dtype) -> np.ndarray:
    """What the setting's op outputs for ``code``: the code, or its value times the scale."""
    import refquant as rq

    if s.op == "quantize":
        return np.asarray(code)
    return rq.dequantize(np.uint8([code]), s.scale, fmt=s.fmt, dtype=dtype)[0]


def _nan_post(s: Setting, target: str):
    """Outputs at NaN inputs replaced: ``"max"`` +max, ``"signed_max"`` max with the NaN's
    sign, ``"zero"`` +0 (a kernel whose NaN test is missing or clamps NaN)."""
    fmt = s.fmt

    def post(x, out, y_dtype):
        with np.errstate(invalid="ignore"):
            x64 = np.asarray(x).astype(np.float64)
        nan = np.isnan(x64)
        if not nan.any():
            return out
        out = np.array(out, copy=True)
        dt = out.dtype
        if target == "zero":
            out[nan] = _value_of(0, s, dt)
            return out
        neg = nan & np.signbit(x64) & (target == "signed_max") & fmt.signed
        out[nan & ~neg] = _value_of(fmt.max_code, s, dt)
        if neg.any():
            out[neg] = _value_of(fmt.max_code | fmt.sign_bit, s, dt)
        return out
    post.__name__ = f"nan_to_{target}"
    return post


def _flush_post(s: Setting):
    """Subnormal results flushed to zero, sign kept (a kernel without gradual underflow)."""
    fmt = s.fmt
    lowest = np.float64(fmt.min_normal)

    def post(x, out, y_dtype):
        out = np.array(out, copy=True)
        if s.op == "quantize":
            mag = out.astype(np.int64) & (fmt.sign_bit - 1 if fmt.signed else 0xFF)
            sub = (mag >> fmt.mantissa_bits == 0) & (mag != 0)
            out[sub] = out[sub] & (fmt.sign_bit if fmt.signed else 0)
            return out
        with np.errstate(all="ignore"):
            v = out.astype(np.float64) / s.scale
            sub = (np.abs(v) < lowest) & (v != 0)
        out[sub] = np.copysign(np.zeros((), out.dtype), out[sub])
        return out
    post.__name__ = "flush_subnormal_results"
    return post


def _daz_pre(s: Setting):
    """Inputs whose quotient is below the smallest normal of the format flushed to zero (sign
    kept) before rounding: the format's subnormals are never produced."""
    lowest = np.float64(s.fmt.min_normal)

    def pre(x, st):
        x = np.asarray(x)
        with np.errstate(invalid="ignore"):
            t = x.astype(np.float64) / float(st.scale)
            sub = (np.abs(t) < lowest / 2) & (t != 0)
        if not sub.any():
            return x
        return np.where(sub, np.copysign(np.zeros((), x.dtype), x), x)
    pre.__name__ = "flush_tiny_inputs"
    return pre


def _dequant32_post(s: Setting):
    """fake_quantize outputs as ``fl32(fl32(v) * fl32(s))`` rounded to x's dtype (float32
    dequantization instead of the one exact rounding)."""
    import refquant as rq

    def post(x, out, y_dtype):
        with np.errstate(all="ignore"):
            try:
                codes = rq.quantize(np.asarray(x), s.scale, fmt=s.fmt, convention=s.conv)
            except _CANNOT_RUN:
                return out
            v = rq.decode(codes, s.fmt, dtype=np.float32)
            return (v * np.float32(s.scale)).astype(out.dtype)
    post.__name__ = "dequantize_in_float32"
    return post


def _knob(cause, label=None, **knobs) -> Change:
    return Change(cause, label or ", ".join(f"{k}={v!r}" for k, v in knobs.items()), tuple(knobs.items()))


def _float_changes(s: Setting) -> list:
    c, fmt = s.conv, s.fmt
    changes = []
    exact_arith = c.arithmetic == "exact"
    for m in ROUNDINGS if exact_arith else ("half_away", "half_even"):
        if m != c.rounding:
            changes.append(_knob("tie rounding" if m.startswith("half") else "rounding mode", rounding=m))
    sat = c.saturates(fmt)
    if fmt.has_inf or fmt.has_nan:
        how = "saturate=False (IEEE overflow: inf or NaN)" if sat else "saturate=True (overflow to +-max)"
        changes.append(_knob("clamp/saturation", how, saturate=not sat, saturate_formats=()))
        if sat and exact_arith:
            other = "nan" if c.inf_saturating == "max" else "max"
            changes.append(_knob("nan/inf handling", inf_saturating=other))
    if fmt.has_nan:
        if fmt.nan == "ieee":
            changes.append(_knob("nan/inf handling", nan_payload="all_ones" if c.nan_payload == "quiet"
                                 else "quiet"))
        for target in ("max", "signed_max", "zero"):
            changes.append(Change("nan/inf handling", f"NaN -> {target.replace('_', ' ')}",
                                  post=_nan_post(s, target)))
    else:
        for how in ("error", "zero_flip", "zero", "max", "nan_bits", "nan"):
            if how != c.nan_no_nan:
                changes.append(_knob("nan/inf handling", nan_no_nan=how))
    if fmt.has_negative_zero:
        for how in ("keep", "drop", "drop_zero_input_no_nan"):
            if how != c.signed_zero:
                changes.append(_knob("signed zero", signed_zero=how))
    if float(s.scale) != 1.0:
        changes.append(_knob("reciprocal vs division",
                             quotient="exact" if c.quotient == "float32" else "float32"))
        for width in ("float32", "float64"):
            changes.append(Change("reciprocal vs division", f"x * fl(1/s) in {width}",
                                  pre=_reciprocal_pre(width)))
    if s.op == "fake_quantize":
        changes.append(Change("dequantization arithmetic", "dequantize in float32", post=_dequant32_post(s)))
    if fmt.name == "float8_e8m0fnu":  # torch and ONNX Cast read the float32 exponent field
        changes.append(_knob("e8m0 exponent field", e8m0="value" if c.e8m0 == "exponent_field"
                             else "exponent_field"))
    if exact_arith and fmt.mantissa_bits and fmt.subnormals:
        changes.append(Change("subnormals", "subnormal results flushed to zero", post=_flush_post(s)))
        changes.append(Change("subnormals", "tiny inputs flushed to zero", pre=_daz_pre(s)))
    return changes


register_changes("float", _float_changes)


# ------------------------------------------------------------------------------------- inputs


def float_inputs(fmt, scale=1.0, *, dtype=np.float32, n_random=1000, seed=0) -> np.ndarray:
    """Edge-heavy inputs in ``dtype`` for casting ``x / scale`` to ``fmt``: ``scale`` times every
    finite value of the format, every midpoint between neighbouring values, the overflow probes
    (``max`` plus half and one top-binade ulp, ``2 max``, ``4 max``) and the underflow probes
    (half and a quarter of the smallest subnormal), each rounded to ``dtype`` with its two
    neighbours one ulp below and above (both sides of every rounding threshold); then the largest
    finite and smallest subnormal and normal values of ``dtype``, +-0, +-inf, +NaN and -NaN; then
    ``n_random`` values (seeded): half uniform over +-1.1 max, half log-uniform in magnitude over
    the format's range, times ``scale``.

    >>> import numpy as np, refquant as rq
    >>> x = rq.golden._float.float_inputs(rq.float4_e2m1fn, n_random=0)
    >>> bool(np.isin(np.float32(5.0), x)), bool(np.isin(np.float32(6.0), x)), x.dtype
    (True, True, dtype('float32'))
    """
    from ._cases import _finfo, dtype_and_count, inputs_of

    fmt = resolve_format(fmt)
    s = _scalar_scale(scale)
    dt, n_random = dtype_and_count(dtype, n_random)
    v = fmt.values()
    mids = (v[:-1] + v[1:]) / 2
    top = v[-1] - v[-2] if v.size > 1 else v[-1]
    fm = float(fmt.max)
    probes = np.array([fm + top / 2, fm + top, 2 * fm, 4 * fm, fmt.min_subnormal / 2,
                       fmt.min_subnormal / 4])
    real = np.concatenate([v, mids, probes, -probes]) * s
    info = _finfo(dt)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, float(info.max), -float(info.max),
                        float(info.smallest_normal), -float(info.smallest_normal),
                        float(info.smallest_subnormal), -float(info.smallest_subnormal)])
    rng = np.random.default_rng(seed)
    half = n_random // 2
    lo = math.log2(fmt.min_subnormal if fmt.has_zero else fmt.values()[0])
    mags = 2.0 ** rng.uniform(lo - 1, math.log2(fm) + 1, n_random - half)
    rand = np.concatenate([rng.uniform(-1.1 * fm, 1.1 * fm, half),
                           mags * rng.choice([-1.0, 1.0], mags.size)]) * s
    return inputs_of(real, special, rand, dt)


# ------------------------------------------------------------------------------------- cases


def format_fields(fmt: FloatFormat) -> dict:
    """Every field of a FloatFormat as JSON data."""
    return {f: getattr(fmt, f) for f in _FMT_FIELDS}


def float_cases(fmt, scale=1.0, *, dtype=np.float32, op="fake_quantize", convention="exact",
                saturate=None, rounding=None, n_random=1000, seed=0):
    """Golden vectors for a float format: :func:`float_inputs` and their reference outputs.

    ``outputs = rq.fake_quantize(inputs, scale, fmt=fmt, convention=conv)`` (x's dtype) or
    ``rq.quantize`` (``op="quantize"``: uint8 codes), where ``conv`` is the convention with
    ``saturate`` and ``rounding`` folded in as knobs. Under ``quantize``, inputs with no code
    under the convention (NaN into fp4 under ``exact``) are left out. The manifest records the
    format (every field: ``fmt``), the float convention's name and every knob
    (``convention_knobs``), ``saturate``, ``rounding``, the scale and its dtype, the dtypes and
    the shape; ``refquant check`` rebuilds all of them.

    >>> import numpy as np, refquant as rq
    >>> g = rq.golden.cases(fmt=rq.float8_e4m3fn, dtype="float16", op="quantize", n_random=0)
    >>> g.outputs.dtype, g.manifest["fmt"]["name"], g.manifest["convention"]
    (dtype('uint8'), 'float8_e4m3fn', 'exact')
    """
    import refquant as rq

    from .._validation import float_dtype
    from ._cases import _dtype_name, reference_cases
    from ._files import knobs_of

    check_op(op)
    f = resolve_format(fmt)
    s = _scalar_scale(scale)
    conv = with_knobs(convention, f, saturate, rounding)
    dt = float_dtype(dtype)
    x = float_inputs(f, s, dtype=dt, n_random=n_random, seed=seed)
    setting = make_setting(op, f, scale, conv)
    x = x[~no_code(setting, x)]
    with np.errstate(all="ignore"):
        y = setting.run(x)
    manifest = {
        "refquant_version": rq.__version__,
        "op": op,
        "fmt": format_fields(f),
        "convention": conv.name,
        "convention_knobs": knobs_of(conv),
        "saturate": None if saturate is None else bool(saturate),
        "rounding": rounding,
        "scale": s,
        "scale_dtype": _dtype_name(scale),
        "zero_point": 0,
        "qmin": None,
        "qmax": None,
        "axis": None,
        "block_size": None,
    }
    return reference_cases(x, y, manifest)


# ---------------------------------------------------------------------------------- files


def check_manifest(manifest: dict) -> dict:
    """Validate a float golden manifest (the ``fmt`` key marks one); ValueError naming the field."""
    from ._files import check_common, check_shape_and_op

    need = ("op", "fmt", "convention", "scale", "input_dtype", "output_dtype", "shape")
    check_shape_and_op(manifest, need)
    fields = manifest["fmt"]
    if not isinstance(fields, dict) or set(fields) != set(_FMT_FIELDS):
        raise ValueError(f"manifest fmt must be an object with the fields {list(_FMT_FIELDS)}; "
                         f"got {fields!r:.80}")
    try:
        FloatFormat(**fields)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"manifest fmt is invalid: {exc}") from None
    if isinstance(manifest["scale"], list):
        raise ValueError("manifest scale of a float golden file must be one number")
    if manifest.get("saturate") not in (None, True, False):
        raise ValueError(f"manifest saturate must be null, true or false; got {manifest['saturate']!r:.40}")
    wanted = (manifest["input_dtype"],) if manifest["op"] == "fake_quantize" else ("uint8",)
    return check_common(manifest, wanted)


def float_setting(manifest: dict, *, convention=None, rounding=None) -> Setting:
    """The Setting a float manifest was made with (the convention rebuilt from every knob),
    optionally under another convention (name) or rounding mode."""
    from ._files import _qparam, row_of_knobs

    fmt = FloatFormat(**manifest["fmt"])
    if fmt.name in NAMED_FLOAT_FORMATS and NAMED_FLOAT_FORMATS[fmt.name] == fmt:
        fmt = NAMED_FLOAT_FORMATS[fmt.name]
    if convention is not None:
        conv = with_knobs(convention, fmt, manifest.get("saturate"))
    elif manifest.get("convention_knobs") is not None:
        conv = row_of_knobs(_fconv.FloatConvention, manifest["convention_knobs"])
    else:
        conv = with_knobs(manifest["convention"], fmt, manifest.get("saturate"))
    rounding = rounding or manifest.get("rounding")
    if rounding is not None:
        conv = conv.replace(rounding=rounding)
    scale = _qparam(manifest["scale"], manifest.get("scale_dtype", "python"))
    return make_setting(manifest["op"], fmt, scale, conv)


def knob_differences(conv) -> list:
    """``"knob=value (named row: value)"`` where ``conv`` differs from the float row of its name."""
    from ._files import knob_differences

    return knob_differences(conv, _fconv)


# ----------------------------------------------------------------------------------- identify


def _variants(conv, fmt):
    """(label, convention) for the saturate rules and rounding modes a convention can run."""
    sats = [None]
    if not conv.fixed_saturate and (fmt.has_inf or fmt.has_nan):
        sats.append(not conv.saturates(fmt))
    modes = ROUNDINGS if conv.arithmetic == "exact" else ("half_away", "half_even")
    for sat in sats:
        base = conv if sat is None else conv.replace(saturate=sat, saturate_formats=())
        label = conv.name if sat is None else f"{conv.name}, saturate={sat}"
        for m in modes:
            yield label, m, base.replace(rounding=m)


def _separating(dtype, a: Setting, b: Setting, limit=4) -> list:
    x = float_inputs(a.fmt, float(a.scale), dtype=dtype, n_random=0)
    keep = ~(no_code(a, x) | no_code(b, x))
    x = x[keep]
    try:
        with np.errstate(all="ignore"):
            ya, yb = a.run(x), b.run(x)
    except _CANNOT_RUN:
        return []
    found = x[~same(ya, yb)]
    order = np.argsort(np.abs(found.astype(np.float64)), kind="stable")
    return [(v.item(), False) for v in found[order][:limit]]


def float_identify(x, y, fmt, scale=1.0, *, op="fake_quantize", reference="exact", saturate=None,
                   conventions=None, n_examples=3):
    """Which element conventions (with saturate rule and rounding mode) reproduce ``y``, and why
    the reference does not (see :func:`refquant.identify`, which calls this for ``fmt=``).

    Every registered float convention implementing ``fmt`` (or those given) is run under each
    rounding mode it has, and, where it has a saturate switch, under both overflow rules (the
    non-default one labelled ``"name, saturate=..."``); matches are (label, rounding) pairs.

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([1.0, 300.0, 500.0, np.inf])
    >>> y = rq.encode(x, rq.float8_e4m3fn, saturate=False)
    >>> r = rq.identify(x, y, fmt=rq.float8_e4m3fn, op="quantize")
    >>> ("ml_dtypes", "half_even") in r.matches, r.cause
    (True, 'clamp/saturation')
    """
    from .identify import Identification, _count

    check_op(op)
    f = resolve_format(fmt)
    _scalar_scale(scale)
    x, y = op_outputs(x, y, op, holding="the uint8 codes")
    if x.dtype.kind != "f" and "bfloat16" not in x.dtype.name:
        raise TypeError(f"x must be a float array; got dtype {x.dtype}")
    names = _fconv.names() if conventions is None else list(conventions)
    convs = [_fconv.get(n) for n in names]
    ref = None if reference is None else with_knobs(reference, f, saturate)
    result = Identification(op=op, size=int(x.size), reference=None if ref is None else ref.name,
                            dtype=x.dtype.name, edge=f"edge input of {f.name} at this scale (every "
                            "value, midpoint and neighbour, overflow probe and special)")
    tried = {}
    for conv in convs:
        if conv.missing or (conv.formats and f.name not in conv.formats):
            result.skipped[conv.name] = conv.missing or f"implements {', '.join(conv.formats)} only"
            continue
        for label, mode, variant in _variants(conv, f):
            st = make_setting(op, f, scale, variant)
            try:
                with np.errstate(all="ignore"):
                    n = _count(x, y, st)
            except _CANNOT_RUN as exc:
                result.skipped[label] = str(exc) or type(exc).__name__
                continue
            result.mismatches[(label, mode)] = n
            tried[(label, mode)] = st
            if n == 0:
                result.matches.append((label, mode))
    for other in result.matches[1:]:
        first = result.matches[0]
        result.ambiguous.append((first, other, _separating(x.dtype, tried[first], tried[other])))
    if ref is not None:
        result.diagnosis = diagnose(x, y, make_setting(op, f, scale, ref), family="float",
                                    n_examples=n_examples)
    return result


# -------------------------------------------------------------------------------------- sweep


def as_float_kernel(candidate, *, op, fmt, scale):
    """``(kernel, label)`` for a callable, ``module:function`` or a float convention name."""
    from ._candidates import load_function

    if isinstance(candidate, str) and candidate not in _fconv.names():
        if ":" in candidate:
            return load_function(candidate), candidate
        _fconv.get(candidate)  # the ValueError listing the names
    if isinstance(candidate, (str, _fconv.FloatConvention)):
        st = make_setting(op, fmt, scale, with_knobs(candidate, fmt, None, None))
        return (lambda x: st.run(x)), st.conv.name
    if not callable(candidate):
        raise TypeError(f"candidate must be callable, a float convention or 'module:function'; "
                        f"got {candidate!r}")
    return candidate, getattr(candidate, "__name__", repr(candidate))


def float_sweep(candidate, fmt, scale=1.0, *, dtype, op="quantize", convention="exact", saturate=None,
                rounding=None, chunk=2**24, progress=False, n_examples=5, client=None):
    """Every bit pattern of ``dtype`` (float16, bfloat16: 2**16; float32: 2**32 in chunks of
    ``chunk``) cast by ``candidate`` to ``fmt`` and compared bit for bit with the reference
    convention (``rq.quantize``: uint8 codes, ``rq.fake_quantize``: values in ``dtype``, of
    ``x / scale``). Called by :func:`refquant.golden.sweep` when ``fmt=`` is given; the
    diagnosis is :func:`float_identify` over every pattern (half formats) or over up to 65536
    differing patterns and the edge inputs (float32).

    >>> import numpy as np, refquant as rq
    >>> r = rq.golden.sweep("torch", fmt=rq.float8_e5m2, dtype="bfloat16",  # doctest: +NEEDS_TORCH
    ...                     op="quantize")
    >>> r.total, r.mismatches, r.diagnosis.matches, r.diagnosis.causes
    (65536, 28960, [('torch', 'half_even')], {'clamp/saturation': 28706, 'nan/inf handling': 254})
    """
    from ._sweep import SweepResult, run_patterns, sweep_setup

    check_op(op)
    f = resolve_format(fmt)
    _scalar_scale(scale)
    dt, total, chunk, report = sweep_setup(dtype, chunk, progress)
    conv = with_knobs(convention, f, saturate, rounding)
    ref = make_setting(op, f, scale, conv)
    kernel, label = as_float_kernel(candidate, op=op, fmt=f, scale=scale)
    result = SweepResult(dtype=dt.name, convention=f"{conv.name} to {f.name}", total=total)

    def reference(x):
        missing = no_code(ref, x)
        with np.errstate(all="ignore"):
            return ref.run(np.where(missing, np.zeros((), dt), x) if missing.any() else x), missing

    def edge():
        return float_inputs(f, scale, dtype=dt, n_random=0), f"edge inputs of {f.name}"

    xs, ys = run_patterns(result, dt, chunk, reference, kernel, label, op=op, report=report,
                          n_examples=n_examples, code_kinds="iu", edge=edge, client=client)
    if xs is not None:
        result.diagnosis = float_identify(xs, ys, f, scale, op=op, reference=conv)
    return result

