"""The checkpoint report: task results merged in task order into one row per quantized weight,
with the differing codes and scales put under named causes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["Report", "TensorReport", "merge"]

IDENTIFY_LIMIT = 65536
OTHER = "other (no one-knob change of the convention reproduces it)"
NIBBLES = "wrong nibble order (the codes match with the other packing order)"
FAR = "code is not a nearest code of x / s + z under any arithmetic (a corrupted code?)"


@dataclass
class TensorReport:
    """One quantized weight: ``status`` is ``"ok"``, ``"mismatch"`` or ``"cannot check"``;
    ``causes`` maps each named cause to the count of codes, scales or zero points it explains;
    ``checks`` says which checks ran and ``note`` why one did not.

    >>> row = TensorReport(name="l.weight", format="torchao", kind="int", convention="torchao",
    ...                    shape=(4, 16), status="mismatch", checks=["decode", "re-quantize"],
    ...                    elements=64, codes_compared=64, code_mismatches=1,
    ...                    causes={"tie rounding": 1})
    >>> print(row.line())
    mismatch     l.weight [torchao int]: 64 elements, decode+re-quantize, 1/64 codes differ
        1 x tie rounding
    """

    name: str
    format: str
    kind: str
    convention: str
    shape: tuple
    status: str = "ok"
    checks: list = field(default_factory=list)
    elements: int = 0
    codes_compared: int = 0
    code_mismatches: int = 0
    scales_compared: int = 0
    scale_mismatches: int = 0
    decode: dict = field(default_factory=dict)
    causes: dict = field(default_factory=dict)
    reproduced_by: list = field(default_factory=list)
    examples: list = field(default_factory=list)
    note: str = ""

    def line(self) -> str:
        head = f"{self.status:<12} {self.name} [{self.format} {self.kind}]"
        if self.status == "cannot check":
            return f"{head}: cannot check: {self.note}"
        parts = [f"{self.elements} elements", "+".join(self.checks)]
        if self.codes_compared:
            parts.append(f"{self.code_mismatches}/{self.codes_compared} codes differ")
        if self.scales_compared:
            parts.append(f"{self.scale_mismatches}/{self.scales_compared} scales differ")
        text = f"{head}: " + ", ".join(parts)
        for cause, n in self.causes.items():
            text += f"\n    {n} x {cause}"
        if self.reproduced_by:
            text += "\n    the differing codes are reproduced by " + ", ".join(self.reproduced_by)
        if self.note:
            text += f"\n    note: {self.note}"
        return text


@dataclass
class Report:
    """What :func:`refquant.checkpoint.check` found: ``rows`` (one :class:`TensorReport` per
    quantized weight), ``not_quantized`` (stored tensors outside every quantized group),
    ``unreadable`` (shards of a folder that could not be read: file -> why), ``totals``, ``ok``
    and ``to_json()``.

    >>> r = Report(path="m.safetensors", source=None, rows=[])
    >>> r.ok, r.totals["tensors"]
    (True, 0)
    """

    path: str
    source: str | None
    rows: list
    not_quantized: list = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0
    workers: str = "local"
    unreadable: dict = field(default_factory=dict)

    @property
    def totals(self) -> dict:
        by = {s: sum(r.status == s for r in self.rows) for s in ("ok", "mismatch", "cannot check")}
        return {"tensors": len(self.rows), **by,
                "elements": sum(r.elements for r in self.rows),
                "code_mismatches": sum(r.code_mismatches for r in self.rows),
                "scale_mismatches": sum(r.scale_mismatches for r in self.rows),
                "not_quantized": len(self.not_quantized), "unreadable_files": len(self.unreadable)}

    @property
    def ok(self) -> bool:
        """True when every file was read, every quantized weight checked and nothing differs."""
        return not self.unreadable and all(r.status == "ok" for r in self.rows)

    def to_dict(self) -> dict:
        return {"path": self.path, "source": self.source, "ok": self.ok, "totals": self.totals,
                "rows": [asdict(r) for r in self.rows], "not_quantized": list(self.not_quantized),
                "bytes": self.bytes, "seconds": self.seconds, "workers": self.workers,
                "unreadable": dict(self.unreadable)}

    def to_json(self, indent=2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=_plain)

    def __str__(self):
        t = self.totals
        lines = [f"checkpoint {self.path}" + (f" against {self.source}" if self.source else " (decode only)")]
        lines += [f"unreadable   {f}: {why}" for f, why in self.unreadable.items()]
        lines += [r.line() for r in self.rows]
        lines.append(f"{t['tensors']} quantized tensors: {t['ok']} ok, {t['mismatch']} mismatch, "
                     f"{t['cannot check']} cannot check; {t['code_mismatches']} codes and "
                     f"{t['scale_mismatches']} scales differ; {t['not_quantized']} other tensors; "
                     f"{self.bytes / 1e9:.3f} GB in {self.seconds:.2f} s ({self.workers})")
        return "\n".join(lines)


def _plain(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON: {type(o).__name__}")


def merge(qtensors, results, problems, has_source) -> list:
    """One :class:`TensorReport` per entry of ``qtensors`` from the task ``results`` (any order;
    merged by task number, each task once); ``problems`` maps a tensor number to why it cannot be
    checked at all."""
    by_tensor = {}
    for res in sorted(results, key=lambda r: r["task"]):
        by_tensor.setdefault(res["tensor"], []).append(res)
    rows = []
    for i, q in enumerate(qtensors):
        row = TensorReport(name=q.name, format=q.format, kind=q.kind, convention=q.convention,
                           shape=tuple(q.shape))
        parts = by_tensor.get(i, [])
        errors = [p["error"] for p in parts if p["error"]]
        if i in problems or errors:
            row.status = "cannot check"
            row.note = problems.get(i) or errors[0]
            rows.append(row)
            continue
        _fill(row, q, parts, has_source)
        rows.append(row)
    return rows


def _fill(row, q, parts, has_source):
    row.checks = ["decode"]
    for p in parts:
        row.elements += p["elements"]
        row.codes_compared += p["compared"]
        row.code_mismatches += p["codes"]
        row.scales_compared += p["scale_count"]
        row.scale_mismatches += p["scales"]
        for k, n in p["decode"].items():
            row.decode[k] = row.decode.get(k, 0) + n
    for k, n in row.decode.items():
        row.causes[k] = n
    if not has_source:
        row.note = "no source given: decode check only"
    elif q.rtn is not None:
        row.note = f"codes checked by decode only: {q.rtn}"
        total = sum(p["offset"][1] for p in parts)
        if total:
            mean = sum(p["offset"][0] for p in parts) / total
            if abs(mean) > 0.5:
                row.causes[f"dequantized weights sit {mean:+.2f} scales from the source on average: "
                           f"zero point off by one (GPTQ v1/v2 zero convention)"] = row.elements
    else:
        row.checks.append("re-quantize")
    if row.scale_mismatches:
        ulps = {}
        for p in parts:
            for k, n in p["scale_ulps"].items():
                ulps[k] = ulps.get(k, 0) + n
        for k in sorted(ulps, key=int):
            what = "block scale code" if q.kind in ("nvfp4", "mx") else "scale"
            rule = q.scale_rule or f"rq.{q.kind} {q.convention}"
            row.causes[f"{what} {k} ulp from the {rule} rule"] = ulps[k]
    _global_scale(row, q, parts)
    if row.code_mismatches:
        alts = [p["alt_order"] for p in parts if p["codes"]]
        if alts and all(a == 0 for a in alts):
            row.causes[NIBBLES] = row.code_mismatches
        elif q.kind == "int":
            _identify(row, q, parts)
        else:
            _float_causes(row, q, parts)
    if row.causes:
        row.status = "mismatch"


def _identify(row, q, parts):
    import refquant as rq

    samples = [p["sample"] for p in parts if p["sample"] is not None]
    s = {k: np.concatenate([x[k] for x in samples])[:IDENTIFY_LIMIT] for k in samples[0]}
    row.examples = [{"index": int(i), "x": float(np.float64(x)), "stored": int(c), "expected": int(e)}
                    for i, x, c, e in zip(s["index"][:5], s["x"][:5], s["code"][:5], s["expected"][:5])]
    far = _far(s, q.qmin, q.qmax)
    if far.any():
        row.causes[FAR] = int(far.sum())
        s = {k: v[~far] for k, v in s.items()}
        if not s["x"].size:
            return
    try:
        r = rq.identify(s["x"], s["code"], s["scale"], s["zero_point"], qmin=q.qmin, qmax=q.qmax,
                        op="quantize", axis=0, reference=q.convention)
    except (ValueError, TypeError) as exc:
        row.causes[f"code differs ({exc})"] = row.code_mismatches
        return
    named = {}
    for cause, n in r.causes.items():
        named[OTHER if cause == "other" else cause] = n
    sampled = sum(named.values()) + row.causes.get(FAR, 0)
    if sampled < row.code_mismatches:  # causes were named on a capped sample: say so
        named = {f"{k} (in a sample of {sampled})": n for k, n in named.items()}
    row.causes.update(named)
    row.reproduced_by = [f"{c} ({m})" for c, m in r.matches]


def _far(s, qmin, qmax) -> np.ndarray:
    """Stored codes farther from the real ``x / s + z`` (clamped to the range) than any
    round-to-nearest arithmetic can put them: more than 1/2 plus two units in the last place of
    the quotient in x's precision (conventions that compute in bfloat16 round the quotient to 8
    bits; float32 quotients and reciprocals err by far less)."""
    x = s["x"]
    bits = {2: 8 if x.dtype.kind != "f" else 11, 4: 24}.get(x.dtype.itemsize, 53)
    with np.errstate(all="ignore"):
        xf = x.astype(np.float32).astype(np.float64) if x.dtype.itemsize == 2 else x.astype(np.float64)
        t = xf / s["scale"].astype(np.float64) + s["zero_point"]
        d = np.abs(np.clip(t, qmin, qmax) - s["code"])
        return np.isfinite(t) & (d > 0.5 + 2.0 ** (1 - bits) * np.maximum(1.0, np.abs(t)))


def _global_scale(row, q, parts):
    """A scale over the whole tensor (fp8 per tensor, NVFP4's global) against its rule from the
    tensor's amax: ``fl32(amax / d)`` stored as a decode scale, ``fl32(d / amax)`` as encode (an
    encode scale computed in x's 16-bit dtype, as compressed-tensors does, also passes); one
    that matches the other storage's rule is named as stored inverted."""
    gs = [p["global"] for p in parts if p.get("global")]
    if not gs:
        return
    amax = np.float32(max(g["amax"] for g in gs))
    g0 = gs[0]
    d = np.float32(g0["divisor"])
    encode = g0["rule"] == "encode"
    with np.errstate(divide="ignore", over="ignore"):
        enc, dec = np.float32(d / amax), np.float32(amax / d)
    want = enc if encode else dec
    accepted = {want.view(np.uint32)}
    if encode and g0.get("dtype", "float32") != "float32":
        accepted.add(_in_dtype(enc, g0["dtype"]).view(np.uint32))
    stored = np.float32(g0["stored"])
    row.scales_compared += 1
    if stored.view(np.uint32) in accepted:
        return
    row.scale_mismatches += 1
    name = f"{d:g}/amax" if encode else f"amax/{d:g}"
    other = dec if encode else enc
    if other > 0 and np.isfinite(other) and abs(float(stored) / float(other) - 1) < 2.0**-7:
        row.causes[f"global scale stored inverted ({stored:g} is the "
                   f"{'amax/' + f'{d:g}' if encode else f'{d:g}/amax'} rule; this format stores {name})"] = 1
        return
    ulps = int(stored.view(np.int32)) - int(want.view(np.int32))
    row.causes[f"global scale {ulps:+d} ulp from the {name} rule"] = 1


def _in_dtype(v, dtype):
    """A float32 value rounded once to the 16-bit float ``dtype`` (bfloat16 through ml_dtypes)."""
    from ._safetensors import numpy_dtype

    return np.float32(np.asarray(v, np.float32).astype(numpy_dtype({"bfloat16": "BF16"}.get(dtype, "F16"))))


def _float_causes(row, q, parts):
    """Differing float codes: which element conventions reproduce the sampled ones."""
    import refquant as rq

    samples = [s for p in parts for s in p.get("float_sample") or []]
    s = {k: (np.concatenate([x[k] for x in samples])[:IDENTIFY_LIMIT] if samples[0][k] is not None else None)
         for k in samples[0]}
    row.examples = [{"index": int(i), "x": float(np.float64(x)), "stored": int(c), "expected": int(e)}
                    for i, x, c, e in zip(s["index"][:5], s["x"][:5], s["code"][:5], s["expected"][:5])]
    label = f"code differs from rq.{q.kind} under {q.convention!r}"
    if q.kind == "nvfp4" and q.convention == "compressed_tensors":
        label = "code differs from compressed-tensors' NVFP4 recipe"
    if q.kind == "fp8" and s["scale"] is not None:
        fmt = getattr(rq, q.opt("fmt"))
        for name in rq.float_conventions.names():
            try:
                y = rq.quantize(s["x"], s["scale"], fmt=fmt, axis=0, convention=name)
            except (ValueError, TypeError, NotImplementedError):
                continue
            if (y.astype(np.int64) == s["code"]).all():
                row.reproduced_by.append(name)
        if not row.reproduced_by:
            label = "code differs under every fp8 convention (a corrupted code?)"
    row.causes[label] = row.code_mismatches
