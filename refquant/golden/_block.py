"""Golden tooling for the block formats: MX (OCP Microscaling), NVFP4 and NF4.

A block format is named by a string (:data:`BLOCK_FORMATS`: ``"mxfp8_e4m3"``, ``"mxfp4"``,
``"mxint8"``, ``"nvfp4"``, ``"nf4"``, ...) given as ``fmt=`` to ``rq.golden.cases`` and
``rq.identify``. Its golden vectors are ``fake_quantize`` values (they carry both the element
codes and the block scales): ``rq.mx.fake_quantize`` (block 32 along the last axis),
``rq.nvfp4.fake_quantize`` (block 16; ``scale`` is the global scale, None: from amax) and
``rq.nf4.fake_quantize`` (block 64). A setting is the format and one convention row of the
family (any knob changed with ``dataclasses.replace``).

Diagnosis names a cause only where recomputing under one changed knob of the reference row
reproduces the kernel's output at that element; the changes tried are every value that knob
takes in some row of the family's table (so each library's choice is tried), and the cause is
the knob's: :data:`KNOB_CAUSES`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ._args import op_outputs
from ._diagnose import Diagnosis, same

__all__ = ["BLOCK_FORMATS", "KNOB_CAUSES", "is_block_format", "block_inputs", "block_cases",
           "block_identify", "block_setting", "check_manifest", "check_outputs"]

# name -> (family, element format, block)
BLOCK_FORMATS = {
    "mxfp8_e4m3": ("mx", "float8_e4m3fn", 32), "mxfp8_e5m2": ("mx", "float8_e5m2", 32),
    "mxfp6_e3m2": ("mx", "float6_e3m2fn", 32), "mxfp6_e2m3": ("mx", "float6_e2m3fn", 32),
    "mxfp4": ("mx", "float4_e2m1fn", 32), "mxint8": ("mx", "int8", 32),
    "nvfp4": ("nvfp4", "float4_e2m1fn", 16), "nf4": ("nf4", None, 64),
}
_REFERENCE = {"mx": "ocp", "nvfp4": "exact", "nf4": "exact"}

KNOB_CAUSES = {
    "mx": {"shared_exponent": "scale from float32 log2", "scale_rule": "scale rule",
           "even_mantissa_bits": "scale rule",
           "scaling": {"float32_divide": "min scale (2**-127 divides as 2**-126)",
                       "float32_reciprocal": "reciprocal vs division",
                       "microxcaling": "element arithmetic (float32)",
                       "brevitas": "brevitas scale pipeline"},
           "element": "element cast", "nonfinite": "nan/inf handling",
           "exponent_overflow": "nan/inf handling", "mxint8_min": "clamp/saturation",
           "microxcaling_round": "tie rounding", "scale_min": "scale floor"},
    "nvfp4": {"global_storage": "global scale decode vs encode", "block_scale": "block scale rounding",
              "scale_min": "scale floor", "zero_scale_to_one": "scale floor",
              "element": "reciprocal vs division", "nan": "nan/inf handling",
              "nan_code": "nan/inf handling", "nan_multiplier_lanes": "nan/inf handling",
              "drop_negative_zero": "signed zero", "dequant_negative_zero": "signed zero",
              "dequant": "dequantization arithmetic"},
    "nf4": {"select": "fp32 thresholds", "normalize": "reciprocal vs division",
            "normalize_tail": "reciprocal vs division", "levels": "codebook",
            "compute": "element arithmetic", "dequant": "dequantization arithmetic",
            "nan_absmax": "nan/inf handling", "bf16_flush": "dequantization arithmetic"},
}
_NOT_KNOBS = ("name", "formula", "backend", "evidence", "missing", "input_dtypes", "formats")


def is_block_format(fmt) -> bool:
    """Whether ``fmt`` names a block format (:data:`BLOCK_FORMATS`)."""
    return isinstance(fmt, str) and fmt in BLOCK_FORMATS


def _table(family):
    import refquant as rq

    registry = {"mx": rq.mx, "nvfp4": rq.nvfp4, "nf4": rq.nf4}[family].conventions
    return {n: registry.get(n) for n in registry.names()}


def _row(family, convention):
    table = _table(family)
    if family == "mx" and convention == "exact":
        convention = "ocp"  # the specification, exact
    if isinstance(convention, str):
        if convention not in table:
            raise ValueError(f"convention must be one of {', '.join(table)} for a {family} block format; "
                             f"got {convention!r}")
        return table[convention]
    if type(convention) is not type(next(iter(table.values()))):
        raise TypeError(f"convention must be a {family} convention name or row; got {convention!r}")
    return convention


def _element(elem):
    import refquant as rq

    return rq.int8 if elem == "int8" else getattr(rq, elem)


def _run(fmt, conv, x, scale=None):
    """fake_quantize of ``x`` under the block format ``fmt`` and convention row ``conv``."""
    import refquant as rq

    family, elem, block = BLOCK_FORMATS[fmt]
    with np.errstate(all="ignore"):
        if family == "mx":
            return rq.mx.fake_quantize(x, _element(elem), block=block, convention=conv)
        if family == "nvfp4":
            return rq.nvfp4.fake_quantize(x, global_scale=scale, convention=conv)
        return rq.nf4.fake_quantize(x, block=block, convention=conv)


def _grid(fmt):
    """(largest element magnitude, the midpoints between neighbouring element values)."""
    import refquant as rq

    family, elem, _ = BLOCK_FORMATS[fmt]
    if family == "nf4":
        v = np.unique(rq.nf4.codebook().astype(np.float64))
    elif elem == "int8":
        v = np.arange(-127, 128) / 64.0
    else:
        v = _element(elem).values()
    return float(np.max(np.abs(v))), (v[:-1] + v[1:]) / 2


def block_inputs(fmt, *, dtype=np.float32, n_random=64, seed=0, nonfinite=True) -> np.ndarray:
    """Edge-heavy blocks (rows of the format's block size) in ``dtype``: ``n_random`` random rows
    (magnitudes ``2**[-20, 20]``) and as many rounded to bfloat16; rows of element-grid midpoints
    times ``2**e`` with the block maximum at the grid's top (exact ties); rows whose amax is
    ``2**k``, ``2**k (1 - 2**-24)`` (just below) and ``2**k`` times a mantissa in ``[1.75, 2)``;
    zero, ``-0.0`` and mixed-zero rows; tiny and huge amax (``1e-40``, ``2**-127``, ``2**-36``,
    ``3.4e38``, ``1.5 * 2**127``, ...; not for nvfp4, whose global scale spans the tensor); a row
    of float32 subnormals; and, with ``nonfinite``, rows holding NaN, +inf and -inf.

    >>> import refquant as rq
    >>> x = rq.golden._block.block_inputs("mxfp4", n_random=4)
    >>> x.shape[1], x.dtype
    (32, dtype('float32'))
    """
    from .._validation import float_dtype

    family, _, b = BLOCK_FORMATS[fmt]
    dt = float_dtype(dtype)
    rng = np.random.default_rng(seed)
    top, mids = _grid(fmt)
    rows = [rng.choice([-1, 1], (n_random, b)) * np.exp2(rng.uniform(-20, 20, (n_random, b)))]
    bf = rows[0].astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
    rows.append(bf.view(np.float32).astype(np.float64))
    for _ in range(24):
        e = int(rng.integers(-20, 20))
        row = rng.choice(mids, b) * 2.0**e
        row[0] = top * 2.0**e
        rows.append(row[None])
    for k in range(-12, 12, 2):
        for m in (1.0, 1 - 2.0**-24, float(rng.uniform(1.75, 2.0))):
            row = rng.uniform(-1, 1, b) * 2.0**k
            row[3] = 2.0**k * m
            rows.append(row[None])
    rows += [np.zeros((1, b)), np.full((1, b), -0.0), np.array([[0.0, -0.0] * (b // 2)])]
    special = [1e-40, 2.0**-127, 2.0**-126, 2.0**-120, 2.0**-36, 1e-10, 3.4e38, 2.0**127, 1.5 * 2.0**127]
    for amax in special if family != "nvfp4" else [2.0**-36, 1e-10]:
        row = rng.uniform(-1, 1, b) * amax
        row[5] = amax
        rows.append(row[None])
    rows.append((rng.uniform(-1, 1, b) * 1e-39)[None])
    if nonfinite:
        for v in (np.nan, np.inf, -np.inf):
            row = np.ones((1, b))
            row[0, 1] = v
            rows.append(row)
    x = np.concatenate(rows).astype(np.float32)
    with np.errstate(over="ignore"):
        return x.astype(dt)


def _manifest_dtype_name(dt):
    return dt.name if dt.kind != "V" else "bfloat16"


def block_cases(fmt, scale=None, *, dtype=np.float32, op="fake_quantize", convention=None, n_random=64,
                seed=0):
    """Golden vectors for a block format: :func:`block_inputs` and their ``fake_quantize`` values
    under ``convention`` (a row name or row of the family; default the reference: ``ocp``,
    ``exact``). ``scale`` is NVFP4's global scale (None: from amax; then no NaN/inf rows). The
    manifest records ``block_format``, the convention's name and every knob, ``global_scale``,
    the dtypes and the shape; ``refquant check`` rebuilds them.

    >>> import refquant as rq
    >>> g = rq.golden.cases(fmt="mxfp4", convention="torchao.rceil", n_random=4)
    >>> g.manifest["block_format"], g.manifest["convention"], g.outputs.shape == g.inputs.shape
    ('mxfp4', 'torchao.rceil', True)
    """
    import refquant as rq

    from ._cases import reference_cases
    from ._files import knobs_of

    if op != "fake_quantize":
        raise ValueError(f"block formats' golden vectors are fake_quantize values (they carry the element "
                         f"codes and the block scales); got op={op!r}")
    family = BLOCK_FORMATS[fmt][0]
    conv = _row(family, _REFERENCE[family] if convention is None else convention)
    g = None if scale is None else float(np.float32(scale))
    if g is not None and family != "nvfp4":
        raise ValueError(f"scale applies to nvfp4 (its global scale) only; got scale={scale!r} for {fmt}")
    x = block_inputs(fmt, dtype=dtype, n_random=n_random, seed=seed,
                     nonfinite=family != "nvfp4" or g is not None)
    y = _run(fmt, conv, x, g)
    return reference_cases(x, y, {
        "refquant_version": rq.__version__, "op": op, "block_format": fmt, "convention": conv.name,
        "convention_knobs": knobs_of(conv),
        "global_scale": g})


def check_manifest(manifest: dict) -> dict:
    """Validate a block-format golden manifest; ValueError naming the field."""
    from ._files import _FLOATS, check_shape_and_op

    need = ("op", "block_format", "convention", "input_dtype", "output_dtype", "shape")
    check_shape_and_op(manifest, need)
    fmt = manifest["block_format"]
    if not is_block_format(fmt):
        raise ValueError(f"manifest block_format must be one of {', '.join(BLOCK_FORMATS)}; got {fmt!r:.40}")
    if manifest["op"] != "fake_quantize":
        raise ValueError(f"manifest op of a block format must be 'fake_quantize'; got {manifest['op']!r:.40}")
    for key in ("input_dtype", "output_dtype"):
        if manifest[key] not in _FLOATS:
            raise ValueError(f"manifest {key} must be one of {_FLOATS}; got {manifest[key]!r:.40}")
    shape = manifest["shape"]
    if len(shape) != 2 or shape[1] != BLOCK_FORMATS[fmt][2]:
        raise ValueError(f"manifest shape must be [blocks, {BLOCK_FORMATS[fmt][2]}] for {fmt}; "
                         f"got {shape!r:.40}")
    g = manifest.get("global_scale")
    bad = g is not None and (isinstance(g, bool) or not isinstance(g, (int, float)) or not np.isfinite(g))
    if bad or (g is not None and g <= 0):
        raise ValueError(f"manifest global_scale must be null or a finite number > 0; got {g!r:.40}")
    if not isinstance(manifest["convention"], str):
        raise ValueError(f"manifest convention must be a string; got {manifest['convention']!r:.40}")
    return manifest


def block_setting(manifest: dict, *, convention=None):
    """(fmt, convention row, global scale) a block manifest was made with (the row rebuilt from
    every knob), or under another convention (name)."""
    from ._files import row_of_knobs

    fmt = manifest["block_format"]
    family = BLOCK_FORMATS[fmt][0]
    if convention is not None:
        conv = _row(family, convention)
    elif manifest.get("convention_knobs") is not None:
        row = type(next(iter(_table(family).values())))
        conv = row_of_knobs(row, manifest["convention_knobs"])
    else:
        conv = _row(family, manifest["convention"])
    return fmt, conv, manifest.get("global_scale")


def _knob_changes(family, ref):
    """(cause, label, row): each knob of ``ref`` set to each other value some row of the table has."""
    out, seen = [], set()
    for row in _table(family).values():
        for f in dataclasses.fields(row):
            k = f.name
            if k in _NOT_KNOBS or k not in KNOB_CAUSES[family]:
                continue
            v = getattr(row, k)
            if v == getattr(ref, k) or (k, repr(v)) in seen:
                continue
            seen.add((k, repr(v)))
            cause = KNOB_CAUSES[family][k]
            cause = cause.get(v, k) if isinstance(cause, dict) else cause
            out.append((cause, f"{k}={v!r}", dataclasses.replace(ref, **{k: v})))
    return out


def _diagnose(fmt, x, y, ref, scale, n_examples=3) -> Diagnosis:
    family = BLOCK_FORMATS[fmt][0]
    expected = _run(fmt, ref, x, scale)
    differ = ~same(expected, y)
    d = Diagnosis(size=int(x.size), differing=int(differ.sum()))
    if not d.differing:
        return d
    hits = []
    for cause, label, row in _knob_changes(family, ref):
        try:
            hit = same(_run(fmt, row, x, scale), y)
        except (ValueError, TypeError, NotImplementedError):
            continue
        if hit.all():
            d.explained_by.append(label)
        hits.append((cause, label, hit))
    # greedy: of the changes reproducing some remaining differing elements, the one agreeing with
    # y on the most elements overall takes them; what no single change reproduces is "other"
    left = differ.copy()
    cause_of = np.full(x.shape, "other", dtype=object)
    while hits:
        useful = [h for h in hits if (h[2] & left).any()]
        if not useful:
            break
        best = max(useful, key=lambda h: (int(h[2].sum()), int((h[2] & left).sum())))
        take = best[2] & left
        cause_of[take] = best[0]
        d.labels.setdefault(best[0], best[1])
        left &= ~take
        hits.remove(best)
    causes, counts = np.unique(cause_of[differ].astype(str), return_counts=True)
    d.causes = {str(c): int(n) for c, n in zip(causes, counts)}
    flat = np.flatnonzero(differ.reshape(-1))
    for cause in d.causes:
        picks = [i for i in flat if cause_of.reshape(-1)[i] == cause][:n_examples]
        d.examples += [(int(i), x.reshape(-1)[i].item(), expected.reshape(-1)[i].item(),
                        y.reshape(-1)[i].item(), cause) for i in picks]
    return d


def _candidates(family, conventions):
    """(label, row) for every row (or the named ones): label ``(name, scale rule)`` for an MX row
    taking the rule as an argument (run under each), ``(name, "-")`` otherwise."""
    import refquant as rq

    table = _table(family)
    for name in (table if conventions is None else conventions):
        row = _row(family, name)
        if family == "mx" and row.scale_rule is None and row.shared_exponent == "bits":
            for rule in rq.mx.SCALE_RULES:
                yield (row.name, rule), dataclasses.replace(row, scale_rule=rule)
        else:
            yield (row.name, "-"), row


def block_identify(x, y, fmt, scale=None, *, reference=None, conventions=None, n_examples=3):
    """Which rows of the block format's family reproduce the ``fake_quantize`` values ``y`` of
    ``x`` (last axis in blocks), and why the reference row does not: each differing element is
    given the cause of the first single-knob change of the reference that reproduces it
    (:func:`refquant.identify` calls this for a block ``fmt``). ``scale``: NVFP4's global scale
    (None: each row computes its own from amax).

    >>> import numpy as np, refquant as rq
    >>> x = rq.golden._block.block_inputs("mxfp8_e4m3", n_random=8)
    >>> y = rq.mx.fake_quantize(x, rq.float8_e4m3fn, convention="gfloat.float32")
    >>> r = rq.identify(x, y, fmt="mxfp8_e4m3")
    >>> ("gfloat.float32", "-") in r.matches, r.cause
    (True, 'scale from float32 log2')
    """
    from .identify import Identification

    family = BLOCK_FORMATS[fmt][0]
    x, y = op_outputs(x, y, "fake_quantize")
    g = None if scale is None else float(np.float32(scale))
    ref = _row(family, _REFERENCE[family] if reference is None else reference)
    result = Identification(op="fake_quantize", size=int(x.size), reference=ref.name,
                            dtype=_manifest_dtype_name(x.dtype),
                            edge=f"block of these inputs ({fmt})")
    for label, row in _candidates(family, conventions):
        if getattr(row, "missing", ""):
            result.skipped[label[0]] = row.missing
            continue
        try:
            out = _run(fmt, row, x, g)
        except (ValueError, TypeError, NotImplementedError) as exc:
            result.skipped[" ".join(label)] = str(exc)
            continue
        n = int((~same(out, y)).sum())
        result.mismatches[label] = n
        if n == 0:
            result.matches.append(label)
    for other in result.matches[1:]:
        result.ambiguous.append((result.matches[0], other, []))
    result.diagnosis = _diagnose(fmt, x, y, ref, g, n_examples)
    return result


def check_outputs(g, *, convention=None) -> dict:
    """``refquant check`` of a block-format golden file: its outputs against the recomputation
    under the manifest's row (or ``convention``), with the diagnosis."""
    fmt, conv, scale = block_setting(g.manifest, convention=convention)
    notes = []
    if g.reference is not None and not same(_run(fmt, conv, g.inputs, scale), g.reference).all():
        notes.append("the file's stored reference outputs differ from this recomputation")
    d = _diagnose(fmt, g.inputs, g.outputs, conv, scale)
    return {"fmt": fmt, "convention": conv.name, "equal": d.differing == 0, "elements": d.size,
            "differing": d.differing, "causes": d.causes, "explained_by": d.explained_by,
            "examples": d.examples, "notes": notes, "lines": d.lines(conv.name)}
