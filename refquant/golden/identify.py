"""Diagnosis: which convention and rounding mode reproduce a kernel's output, and why others do not.

``identify(x, y, scale, zero_point, qmin=..., qmax=...)`` runs every registered convention under
every deterministic rounding mode on ``x`` and compares the result with ``y`` bit for bit (NaN
equals NaN), over all the inputs. The pairs with no differing element are ``.matches``; when the
inputs cannot tell some of them apart, ``.ambiguous`` says so and suggests inputs that would
(rounding ties, found by running both on edge inputs). The elements that differ from a reference
convention (``"exact"`` by default) are explained by the diagnosis engine
(:mod:`refquant.golden._diagnose`): a cause is named only where recomputing under that one change
of the reference (a knob, the range, an output rule) reproduces ``y``; the rest is ``"other"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import conventions as _conventions
from .._validation import positive_finite, resolve_range
from ._args import check_op, op_outputs
from ._diagnose import _CANNOT_RUN, CAUSES, ROUNDINGS, Diagnosis, Setting, diagnose, same, separating

__all__ = ["identify", "Identification", "CAUSES"]

_same = same  # the name other modules import


def _count(x, y, setting: Setting) -> int:
    """Elements of ``y`` that ``setting`` does not reproduce (NaN without a code counts)."""
    missing = setting.no_code(x)
    xr = np.where(missing, np.zeros((), x.dtype), x) if missing.any() else x
    out = setting.run(xr, y.dtype)
    return int((~same(out, y) | missing).sum())


@dataclass
class Identification:
    """What :func:`identify` found, over all the inputs.

    ``matches``: (convention, rounding) pairs reproducing ``y`` exactly. ``mismatches``: every pair
    tried -> its count of differing elements (a NaN input counts as differing under ``quantize``
    for a convention without a code for NaN). ``skipped``: convention -> why it could not run
    these inputs (an input dtype it does not accept, a zero point outside its rules).
    ``ambiguous``: (a, b, inputs) triples: matches these inputs do not separate, with inputs of
    x's dtype that would (empty when none exists near these qparams). ``nearest``: the pair with
    the fewest. ``diagnosis``: the engine's answer against ``reference``; ``causes`` and
    ``examples`` are its counts and (index, input, reference, actual, cause) tuples. ``edge``:
    which inputs the separating search covered (said when none separates two matches).

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([0.125, 0.375, 0.625, -0.125])   # exact ties at scale 0.25
    >>> y = rq.quantize(x, 0.25, 0, qmin=-8, qmax=7, rounding="half_away")
    >>> r = rq.identify(x, y, 0.25, 0, qmin=-8, qmax=7, op="quantize")
    >>> ("exact", "half_away") in r.matches, ("exact", "half_even") in r.matches
    (True, False)
    """

    op: str
    size: int
    matches: list = field(default_factory=list)
    mismatches: dict = field(default_factory=dict)
    reference: str = "exact"
    skipped: dict = field(default_factory=dict)
    ambiguous: list = field(default_factory=list)
    diagnosis: Diagnosis | None = None
    dtype: str = ""
    edge: str = ("input near these qparams (every code, tie and neighbour), so no input can separate "
                 "them at this scale")

    @property
    def causes(self) -> dict:
        return {} if self.diagnosis is None else dict(self.diagnosis.causes)

    @property
    def examples(self) -> list:
        return [] if self.diagnosis is None else list(self.diagnosis.examples)

    @property
    def nearest(self):
        return min(self.mismatches, key=self.mismatches.get) if self.mismatches else None

    @property
    def cause(self):
        """The cause explaining the most elements that differ from the reference (None if none)."""
        return None if self.diagnosis is None else self.diagnosis.cause

    def ambiguity_lines(self, limit=6) -> list:
        def name(a, b):
            return f"{b[1]}" if a[0] == b[0] else f"{b[0]} ({b[1]})"

        lines, silent = [], []
        for a, b, inputs in self.ambiguous:
            if not inputs:
                silent.append(b)
                continue
            first = a[1] if a[0] == b[0] else f"{a[0]} ({a[1]})"
            ties = " (rounding ties: x / s + z = k + 1/2)" if all(t for _, t in inputs) else ""
            vals = ", ".join(repr(v) for v, _ in inputs)
            lines.append(f"ambiguous: these inputs do not separate {first} from {name(a, b)}"
                         f"{' under ' + a[0] if a[0] == b[0] else ''}; inputs that would: "
                         f"x = {vals}{ties}")
        if len(lines) > limit:
            lines = lines[:limit] + [f"ambiguous: {len(lines) - limit} more pairs"]
        if silent:
            a = self.ambiguous[0][0]
            others = ", ".join(f"{c} ({r})" for c, r in silent[:limit])
            more = f" and {len(silent) - limit} more" if len(silent) > limit else ""
            lines.append(f"equivalent here: {a[0]} ({a[1]}) and {others}{more} agree on every "
                         f"{self.dtype} {self.edge}")
        return lines

    def to_dict(self) -> dict:
        """A JSON-ready summary (the CLI's ``identify --json``)."""
        d = self.diagnosis
        return {
            "op": self.op, "size": self.size, "matches": [list(m) for m in self.matches],
            "nearest": None if self.nearest is None else list(self.nearest),
            "reference": self.reference, "causes": self.causes,
            "explained_by": [] if d is None else d.explained_by,
            "ambiguous": [{"a": list(a), "b": list(b), "separating_inputs": [v for v, _ in i]}
                          for a, b, i in self.ambiguous],
            "mismatches": {f"{c} {k}": n for (c, k), n in self.mismatches.items()},
            "skipped": self.skipped,
            "examples": [list(e) for e in self.examples],
        }

    def __str__(self):
        lines = [f"identify: {self.op} on {self.size} elements"]
        if self.matches:
            lines.append("matches exactly: " + ", ".join(f"{c} ({r})" for c, r in self.matches))
            lines += self.ambiguity_lines()
        else:
            c, r = self.nearest or ("-", "-")
            n = self.mismatches.get(self.nearest, 0)
            lines.append(f"no convention matches; nearest: {c} ({r}) with {n} differing elements")
            ranked = sorted(self.mismatches.items(), key=lambda t: t[1])[1:5]
            if ranked:
                lines.append("  next: " + ", ".join(f"{c} ({r}) {n}" for (c, r), n in ranked))
        if self.skipped:
            lines.append("not run: " + "; ".join(f"{c} ({why})" for c, why in self.skipped.items()))
        if self.diagnosis is not None:
            lines += self.diagnosis.lines(self.reference)
        return "\n".join(lines)


def identify(x, y, scale=None, zero_point=0, *, qmin=None, qmax=None, op="fake_quantize", axis=None,
             block_size=None, reference="exact", conventions=None, n_examples=3, fmt=None,
             saturate=None) -> Identification:
    """Find the (convention, rounding) pairs that reproduce ``y`` from ``x``, and explain the rest.

    Each candidate is ``rq.quantize`` (``op="quantize"``; ``y`` holds integer codes) or
    ``rq.fake_quantize`` (``y`` in x's dtype) under one registered convention (or the
    conventions given, names or Convention objects) and one deterministic rounding mode, over
    every input; equality is bitwise with NaN equal to NaN (integers compared as float64, exact
    for codes below 2**53). Matches the inputs cannot separate are listed in ``.ambiguous``
    with inputs that would separate them. The elements where ``y`` differs from ``reference``
    are explained by :func:`refquant.golden._diagnose.diagnose` (see :data:`CAUSES`).

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([0.125, 0.375, -0.125, 1.0])
    >>> y = np.float32([0.25, 0.5, -0.25, 1.0])          # ties rounded away from zero
    >>> r = rq.identify(x, y, 0.25, 0, qmin=-128, qmax=127)
    >>> ("exact", "half_away") in r.matches, r.cause
    (True, 'tie rounding')

    A float format as ``fmt`` names the element convention instead (``scale`` default 1; the
    float conventions, each under its rounding modes and overflow rules; ``saturate`` sets the
    reference's): :func:`refquant.golden._float.float_identify`. A block format's name as
    ``fmt`` (``"mxfp4"``, ``"nvfp4"``, ``"nf4"``, ...; ``y`` the fake-quantized values, ``scale``
    NVFP4's global scale) names the block convention: :func:`refquant.golden._block.block_identify`.
    """
    from ._block import is_block_format
    from ._float import route

    if is_block_format(fmt):
        from ._block import block_identify

        return block_identify(x, y, fmt, scale, reference=None if reference == "exact" else reference,
                              conventions=conventions, n_examples=n_examples)
    is_float, got = route("identify", fmt, scale, zero_point, qmin, qmax, saturate, axis, block_size)
    if is_float:
        from ._float import float_identify

        return float_identify(x, y, fmt, got, op=op, reference=reference, saturate=saturate,
                              conventions=conventions, n_examples=n_examples)
    qmin, qmax = got
    check_op(op)
    x, y = op_outputs(x, y, op, codes="iuf")
    qmin, qmax = resolve_range(qmin, qmax, None)
    positive_finite(scale, "scale")
    names = _conventions.names() if conventions is None else list(conventions)
    convs = [_conventions.get(n) for n in names]  # an unknown name is a ValueError, not a skip
    ref = None if reference is None else _conventions.get(reference)
    result = Identification(op=op, size=int(x.size), reference=None if ref is None else ref.name,
                            dtype=x.dtype.name)

    def setting(conv, rounding=None):
        return Setting(op, scale, zero_point, qmin, qmax, conv, axis, block_size, rounding)

    for conv in convs:
        for rounding in ROUNDINGS:
            try:
                n = _count(x, y, setting(conv, rounding))
            except _CANNOT_RUN as exc:
                result.skipped[conv.name] = str(exc) or type(exc).__name__
                break  # this convention cannot run these inputs (dtype, zero point, ...)
            result.mismatches[(conv.name, rounding)] = n
            if n == 0:
                result.matches.append((conv.name, rounding))
    if len(result.matches) > 1:
        by_name = {c.name: c for c in convs}
        first = result.matches[0]
        for other in result.matches[1:]:
            inputs = separating(x.dtype, setting(by_name[first[0]], first[1]),
                                 setting(by_name[other[0]], other[1]))
            result.ambiguous.append((first, other, inputs))
    if ref is not None:
        result.diagnosis = diagnose(x, y, setting(ref), n_examples=n_examples)
    return result
