"""The work of one task: rows ``lo:hi`` of one quantized weight, decoded and (given the source)
re-quantized, in sub-chunks of about 2**21 elements so that memory stays bounded.

A task returns plain data (counts, a capped sample of the differing elements, partial maxima),
so that tasks can run in any process and their results be merged in task order; the merge
(:mod:`._report`) names the causes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ._formats import QTensor, load_block, swapped
from ._safetensors import SafetensorsFile, finfo_eps, finfo_max

__all__ = ["Task", "run_task", "SUB_CHUNK", "SAMPLE"]

SUB_CHUNK = 2**21  # elements per sub-chunk inside a task
SAMPLE = 4096  # differing elements kept per task for identify

_OPEN: dict = {}  # per process: path -> (stat key, SafetensorsFile), each process its own map


def open_file(path) -> SafetensorsFile:
    """The process's own read-only map of ``path`` (reopened when the file changed)."""
    st = os.stat(path)
    key = (st.st_size, st.st_mtime_ns, st.st_ino)
    hit = _OPEN.get(path)
    if hit is None or hit[0] != key:
        hit = (key, SafetensorsFile(path))
        _OPEN[path] = hit
    return hit[1]


@dataclass(frozen=True)
class Task:
    """Rows ``lo:hi`` of quantized weight number ``tensor`` (``q``); ``source`` is the
    (path, name) of its float weight or None; ``convention`` the re-quantize convention."""

    index: int
    tensor: int
    q: QTensor
    lo: int
    hi: int
    source: tuple | None
    convention: str
    nbytes: int


def run_task(task: Task) -> dict:
    """Run one task; every error becomes ``result["error"]`` (the tensor then "cannot check")."""
    out = {"task": task.index, "tensor": task.tensor, "lo": task.lo, "hi": task.hi, "elements": 0,
           "decode": {}, "codes": 0, "compared": 0, "alt_order": None, "scales": 0, "scale_count": 0,
           "scale_ulps": {}, "offset": [0.0, 0], "sample": None, "error": None}
    try:
        if task.q.kind != "int":
            from ._floats import run_float

            run_float(task, out)
        else:
            _run_int(task, out)
    except (ValueError, TypeError, KeyError, IndexError, NotImplementedError, OSError) as exc:
        out["error"] = str(exc) or type(exc).__name__
    except Exception as exc:  # a bug: still reported for this tensor, never lost
        out["error"] = f"failure: {type(exc).__name__}: {exc}"
    for _, f in _OPEN.values():
        f.drop_pages()
    return out


def _sub_ranges(lo, hi, cols, multiple=1):
    step = max(multiple, (SUB_CHUNK // max(cols, 1)) // multiple * multiple)
    for a in range(lo, hi, step):
        yield a, min(hi, a + step)


def _count(d, cause, n):
    if n:
        d[cause] = d.get(cause, 0) + int(n)


def block_kw(codes, scale):
    """``block_size`` (or nothing, per tensor) for a ``[r, c]`` block and its scale array."""
    s = np.asarray(scale)
    if s.ndim == 0:
        return {}
    if s.ndim != 2 or s.shape[0] != codes.shape[0] or codes.shape[1] % s.shape[1]:
        raise ValueError(f"scale of shape {s.shape} does not tile codes of shape {codes.shape}")
    return {"block_size": (1, codes.shape[1] // s.shape[1])}


def _bad_scales(s) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        sf = np.asarray(s).astype(np.float64)
        return ~(np.isfinite(sf) & (sf > 0))


def _element_mask(mask_groups, shape):
    if mask_groups.ndim == 0:
        return np.broadcast_to(mask_groups, shape)
    return np.repeat(mask_groups, shape[1] // mask_groups.shape[1], axis=1)


def source_rows(task, lo, hi, shape):
    path, name = task.source
    x = open_file(path).rows(name, lo, hi)
    return x.reshape(hi - lo, *shape[1:])


def _run_int(task, out):
    q = task.q
    rows, cols = q.shape
    multiple = 8 if q.layout == "awq" else 1
    alt = swapped(q)
    samples, alt_total = [], 0
    buf = {}
    for a, b in _sub_ranges(task.lo, task.hi, cols, multiple):
        codes, scale, zp = load_block(q, open_file, a, b)
        codes = np.asarray(codes)
        if codes.shape != (b - a, cols):
            raise ValueError(f"codes of {q.name!r} unpack to {codes.shape}; expected {(b - a, cols)}")
        out["elements"] += codes.size
        scale, zpa, bad = _decode_int(q, codes, scale, zp, out["decode"])
        if task.source is None:
            continue
        x = source_rows(task, a, b, q.shape)
        if q.rtn is not None:
            if q.layout == "gptq":
                _offset(q, codes, scale, zpa, x, out)
            continue
        out["compared"] += codes.size - int(np.count_nonzero(bad)) * (codes.size // max(bad.size, 1))
        r, c, expected, minmax = requantize(q, task.convention, x, codes, scale, zpa, bad, buf)
        out["codes"] += r.size
        if r.size:
            if alt is not None:
                alt_codes = load_block(alt, open_file, a, b)[0]
                alt_total += requantize(q, task.convention, x, alt_codes, scale, zpa, bad, buf)[0].size
            room = SAMPLE - sum(len(s["index"]) for s in samples)
            if room > 0:
                samples.append(_sample(r[:room], c[:room], a, cols, x, codes, scale, zpa, expected[:room]))
        if q.scale_rule is not None:
            _scale_check(q, x, scale, out, minmax)
    if alt is not None and out["codes"]:
        out["alt_order"] = alt_total
    if samples:
        out["sample"] = {k: np.concatenate([s[k] for s in samples]) for k in samples[0]}


def _decode_int(q, codes, scale, zp, dec):
    """The decode check of one block: codes, scales and zero points in range, and the dequantized
    ``(q - z) * s`` finite in the weight's dtype (certified by the bound ``max |q - z| * s``
    where it lies below half the dtype's largest value, computed by ``rq.dequantize`` elsewhere).
    Returns (scale with bad entries set to 1, zero points clipped to the range as int64 or 0,
    mask of bad scales)."""
    import refquant as rq

    info = np.iinfo(codes.dtype)
    if info.min < q.qmin or info.max > q.qmax:
        _count(dec, f"code outside [{q.qmin}, {q.qmax}]", ((codes < q.qmin) | (codes > q.qmax)).sum())
    scale = np.asarray(scale)
    bad = _bad_scales(scale)
    _count(dec, "scale not finite or not positive", bad.sum())
    if bad.any():
        scale = np.where(bad, np.ones((), scale.dtype), scale)
    zpa = 0
    if zp is not None:
        zpa = np.asarray(zp).astype(np.int64)
        _count(dec, f"zero point outside [{q.qmin}, {q.qmax}]", ((zpa < q.qmin) | (zpa > q.qmax)).sum())
        _zero_convention(q, zpa, dec)
        zpa = np.clip(zpa, q.qmin, q.qmax)
    z64 = np.asarray(zpa, np.float64)
    reach = np.maximum(np.abs(q.qmin - z64), np.abs(q.qmax - z64))
    fmax = finfo_max(q.dtype)
    if np.max(reach * scale.astype(np.float64), initial=0.0) >= fmax / 2:
        deq = rq.dequantize(codes, scale, zpa, convention="exact", dtype=q.dtype, **block_kw(codes, scale))
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(deq.astype(np.float32))
        _count(dec, "dequantized value not finite", (~finite & ~_element_mask(bad, codes.shape)).sum())
    return scale, zpa, bad


def _offset(q, codes, scale, zp, x, out):
    """Sum and count of ``(dequantized - source) / s``: the mean code offset from the source."""
    import refquant as rq

    deq = rq.dequantize(codes, scale, zp, convention="exact", dtype=q.dtype, **block_kw(codes, scale))
    with np.errstate(all="ignore"):
        off = (deq.astype(np.float64) - _wide(x)) / _per_element(scale, codes.shape)
    ok = np.isfinite(off)
    out["offset"][0] += float(off[ok].sum())
    out["offset"][1] += int(ok.sum())


def requantize(q, convention, x, codes, scale, zp, bad, buf):
    """``(rows, cols, expected, minmax)``: the elements of the block whose stored code differs
    from the convention's, with the convention's code, and the per-group (min, max) of x (None
    when not computed). Certified elements are decided by the kernel of
    :mod:`._certify`; the undecided ones run through ``rq.quantize`` (per-tensor scales as a
    scalar, group scales per element along axis 0, the same per-channel arithmetic)."""
    import refquant as rq

    from ._certify import certify, margin

    r_, c_ = codes.shape
    s = np.asarray(scale)
    s2 = np.broadcast_to(s.astype(np.float64), (r_, 1)) if s.ndim == 0 else s.astype(np.float64)
    z2 = np.broadcast_to(np.asarray(zp, np.int64), s2.shape)
    rel = margin(convention, x.dtype, s.dtype, q.qmin, q.qmax)
    if rel is None:
        idx = np.arange(codes.size)
        minmax = _minmax(x, c_ // s.shape[1]) if s.ndim else None
    else:
        idx, amax = certify(x, np.ascontiguousarray(s2), np.ascontiguousarray(z2), codes, q.qmin, q.qmax,
                            rel, buf)
        minmax = (-amax, amax) if s.ndim else None  # the symmetric rules use max |x| only
    if idx.size and bad.any():
        idx = idx[~_element_mask(bad, codes.shape).reshape(-1)[idx]]
    empty = np.zeros(0, np.int64)
    if not idx.size:
        return empty, empty, empty, minmax
    rr, cc = np.divmod(idx, c_)
    xs = np.asarray(x)[rr, cc]
    conv = rq.conventions.get(convention)
    if conv.nan == "error":  # no reference code for NaN: those elements are not compared
        keep = ~np.isnan(xs.astype(np.float32))
        rr, cc, xs = rr[keep], cc[keep], xs[keep]
    if s.ndim == 0:
        expected = rq.quantize(xs, s, int(np.asarray(zp).reshape(-1)[0]) if np.ndim(zp) else zp,
                               qmin=q.qmin, qmax=q.qmax, convention=convention)
    else:
        g = c_ // s.shape[1]
        zz = np.asarray(z2)[rr, cc // g]
        expected = rq.quantize(xs, s[rr, cc // g], zz, qmin=q.qmin, qmax=q.qmax, axis=0,
                               convention=convention)
    differ = expected.astype(np.int64) != codes[rr, cc]
    return rr[differ], cc[differ], expected[differ].astype(np.int64), minmax


def _zero_convention(q, zp, dec):
    """GPTQ's zero point convention: a symmetric checkpoint stores 2**(b-1) in v2 (after the v1
    loaders' +1); 2**(b-1) - 1 everywhere means v1 zeros read as v2, 2**(b-1) + 1 the reverse."""
    if q.layout != "gptq" or not q.symmetric or zp.size == 0:
        return
    mid = 2 ** (q.bits - 1)
    if (zp == mid - 1).all():
        _count(dec, "zero points read as v2 hold v1 values (2**(b-1) - 1 in a symmetric checkpoint)", zp.size)
    elif (zp == mid + 1).all():
        _count(dec, "zero points read as v1 hold v2 values (2**(b-1) + 1 in a symmetric checkpoint)", zp.size)
    else:
        _count(dec, "zero point of a symmetric checkpoint is not 2**(b-1)", (zp != mid).sum())


def _wide(x):
    """``x`` as float64, exactly (16-bit floats through float32)."""
    x = np.asarray(x)
    return (x.astype(np.float32) if x.dtype.itemsize == 2 else x).astype(np.float64)


def _per_element(s, shape):
    """Scales ``[r, groups]`` (or 0-d) repeated to one per element of ``shape``, float64."""
    s = np.asarray(s, np.float64)
    return np.repeat(s, shape[1] // s.shape[1], axis=1) if s.ndim == 2 else np.broadcast_to(s, shape)


def _sample(r, c, row0, cols, x, codes, scale, zp, expected):
    s = np.asarray(scale)
    z = np.asarray(zp)
    s_el = s[r, c // (cols // s.shape[1])] if s.ndim else np.full(r.size, s, s.dtype)
    z_el = z[r, c // (cols // z.shape[1])] if z.ndim else np.full(r.size, int(z), np.int64)
    return {"index": (row0 + r).astype(np.int64) * cols + c, "x": np.asarray(x)[r, c],
            "code": codes[r, c].astype(np.int64), "expected": expected,
            "scale": s_el, "zero_point": z_el.astype(np.int64)}


def _minmax(x, g):
    """Per (row, group of ``g`` columns) min and max of ``x``, exact (16-bit floats widened)."""
    w = np.asarray(x)
    if w.dtype.itemsize == 2 and w.dtype.kind != "f":  # bfloat16: the high half of a float32
        w = (w.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    r, c = w.shape
    w = w.reshape(r, c // g, g)
    return w.min(axis=2), w.max(axis=2)


def _scale_check(q, x, stored, out, minmax=None):
    """Recompute the stored scale of these rows from the source under ``q.scale_rule`` and count
    the scales whose bits differ (with the signed ulp distance stored - recomputed)."""
    from ..qparams import torchao_qparams

    stored = np.asarray(stored)
    if stored.ndim == 0:
        return
    g = q.shape[1] // stored.shape[1]
    mn, mx = minmax if minmax is not None else _minmax(x, g)
    src = np.asarray(x).dtype.name
    ct = q.scale_rule == "ct_symmetric"  # compressed-tensors: no floor, a zero scale becomes eps
    new, _ = torchao_qparams(mn, mx, q.qmin, q.qmax, symmetric=True, dtype=src, eps=0.0 if ct else None,
                             scale_dtype=stored.dtype)
    new = np.asarray(new).reshape(stored.shape)
    if ct:
        new = np.where(new == 0, np.asarray(finfo_eps(stored.dtype), stored.dtype), new)
    compare_scales(stored, new, out)


def compare_scales(stored, new, out):
    """Count the scales whose bits differ, by signed ulp distance (both positive and finite)."""
    width = f"u{stored.dtype.itemsize}"
    sb = stored.view(width).astype(np.int64)
    nb = np.ascontiguousarray(new.astype(stored.dtype)).view(width).astype(np.int64)
    out["scale_count"] += int(stored.size)
    d = (sb - nb)[sb != nb]
    out["scales"] += int(d.size)
    if d.size:
        vals, counts = np.unique(np.clip(d, -1000, 1000), return_counts=True)
        for v, n in zip(vals.tolist(), counts.tolist()):
            key = f"{v:+d}"
            out["scale_ulps"][key] = out["scale_ulps"].get(key, 0) + n
