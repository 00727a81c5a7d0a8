"""Diagnosis: which convention and rounding mode reproduce a kernel's output, and why others do not.

``identify(x, y, scale, zero_point, qmin=..., qmax=...)`` runs every registered convention under
every deterministic rounding mode on ``x`` and compares the result with ``y`` bit for bit (NaN
equals NaN). The pairs with no differing element are ``.matches``. The differing elements against
a reference convention (``"exact"`` by default) are explained by a list of fault models, each a
one-knob change of the reference: tie rounding, reciprocal instead of division (or the reverse),
zero point added before rounding, missing saturation, NaN/inf handling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import affine as _affine
from .. import conventions as _conventions
from .._validation import positive_finite, resolve_range

__all__ = ["identify", "Identification", "CAUSES"]

ROUNDINGS = ("half_even", "half_away", "half_up", "half_down", "floor", "ceil", "toward_zero")
CAUSES = (
    "nan/inf handling",
    "clamp/saturation",
    "tie rounding",
    "reciprocal vs division",
    "zero point before/after rounding",
    "other",
)


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise bitwise equality, NaN equal to NaN (floats), plain equality for integers."""
    if a.dtype.kind in "iub" or b.dtype.kind in "iub":
        return a.astype(np.float64) == b.astype(np.float64)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    both_nan = np.isnan(a64) & np.isnan(b64)
    eq = (a64 == b64) & (np.signbit(a64) == np.signbit(b64))
    return eq | both_nan


@dataclass(frozen=True)
class _Case:
    """The inputs, the kernel's outputs and the static arguments that :func:`identify` explains."""

    x: np.ndarray
    y: np.ndarray
    scale: object
    zero_point: object
    qmin: int
    qmax: int
    op: str
    axis: int | None

    def run(self, convention, rounding=None, *, x=None, qmin=None, qmax=None, op=None):
        """The op (or ``op``) under ``convention`` on ``x`` (default: the case's inputs)."""
        lo, hi = (self.qmin, self.qmax) if qmin is None else (qmin, qmax)
        spec = _affine.Spec.of(qmin=lo, qmax=hi, axis=self.axis, rounding=rounding,
                               convention=convention)
        return _affine.apply(spec, self.x if x is None else x, self.scale, self.zero_point,
                             fake=(op or self.op) == "fake_quantize")

    def no_code(self, convention) -> np.ndarray:
        """Where ``convention`` has no output: NaN under ``quantize`` when its NaN is an error
        (such elements can never match, and are run as 0 so that the rest can be compared)."""
        if self.op == "quantize" and _conventions.get(convention).nan == "error":
            return np.isnan(self.x.astype(np.float64))
        return np.zeros(self.x.shape, bool)

    def count(self, convention, rounding) -> int:
        """Elements of ``y`` that ``convention`` under ``rounding`` does not reproduce."""
        missing = self.no_code(convention)
        xr = np.where(missing, np.zeros((), self.x.dtype), self.x) if missing.any() else None
        out = self.run(convention, rounding, x=xr)
        return int((~_same(out, self.y) | missing).sum())


@dataclass
class Identification:
    """What :func:`identify` found.

    ``matches``: (convention, rounding) pairs reproducing ``y`` exactly. ``mismatches``: every pair
    tried -> its count of differing elements (a NaN input counts as differing under ``quantize``
    for a convention without a code for NaN). ``skipped``: convention -> why it could not run
    these inputs (an input dtype it does not accept, a zero point outside its rules).
    ``nearest``: the pair with the fewest. ``causes``: cause -> count of elements differing from
    ``reference``. ``examples``: a few (index, input, reference, actual, cause) tuples.

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
    causes: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)

    @property
    def nearest(self):
        return min(self.mismatches, key=self.mismatches.get) if self.mismatches else None

    @property
    def cause(self):
        """The cause explaining the most elements that differ from the reference (None if none)."""
        return max(self.causes, key=self.causes.get) if self.causes else None

    def __str__(self):
        lines = [f"identify: {self.op} on {self.size} elements"]
        if self.matches:
            lines.append("matches exactly: " + ", ".join(f"{c} ({r})" for c, r in self.matches))
        else:
            c, r = self.nearest or ("-", "-")
            n = self.mismatches.get(self.nearest, 0)
            lines.append(f"no convention matches; nearest: {c} ({r}) with {n} differing elements")
            ranked = sorted(self.mismatches.items(), key=lambda t: t[1])[1:5]
            if ranked:
                lines.append("  next: " + ", ".join(f"{c} ({r}) {n}" for (c, r), n in ranked))
        if self.skipped:
            lines.append("not run: " + "; ".join(f"{c} ({why})" for c, why in self.skipped.items()))
        if self.causes:
            lines.append(f"differences from {self.reference!r}, by cause:")
            lines += [f"  {cause}: {n}" for cause, n in sorted(self.causes.items(), key=lambda t: -t[1])]
            for i, xi, ref, act, cause in self.examples:
                lines.append(f"  [{i}] x={xi!r} {self.reference}={ref!r} actual={act!r} ({cause})")
        elif self.reference:
            lines.append(f"no differences from {self.reference!r}")
        return "\n".join(lines)


def identify(x, y, scale, zero_point=0, *, qmin, qmax, op="fake_quantize", axis=None,
             reference="exact", conventions=None, n_examples=5) -> Identification:
    """Find the (convention, rounding) pairs that reproduce ``y`` from ``x``, and explain the rest.

    Each candidate is ``rq.quantize`` (``op="quantize"``; ``y`` holds integer codes) or
    ``rq.fake_quantize`` (``y`` in x's dtype) under one registered convention and one deterministic
    rounding mode; equality is bitwise with NaN equal to NaN (integers compared as float64, exact
    for codes below 2**53). Elements where ``y`` differs from ``reference`` are put under the first
    fault model (a one-knob change of the reference, see :data:`CAUSES`) that reproduces them.

    >>> import numpy as np, refquant as rq
    >>> x = np.float32([0.125, 0.375, -0.125, 1.0])
    >>> y = np.float32([0.25, 0.5, -0.25, 1.0])          # ties rounded away from zero
    >>> r = rq.identify(x, y, 0.25, 0, qmin=-128, qmax=127)
    >>> ("exact", "half_away") in r.matches, r.cause
    (True, 'tie rounding')
    """
    if op not in ("quantize", "fake_quantize"):
        raise ValueError(f"op must be 'quantize' or 'fake_quantize'; got {op!r}")
    x = np.asarray(x)
    y = np.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape; got {x.shape} and {y.shape}")
    if op == "fake_quantize" and y.dtype != x.dtype:
        raise TypeError(f"fake_quantize output y must have x's dtype {x.dtype}; got {y.dtype}")
    if op == "quantize" and y.dtype.kind not in "iuf":
        raise TypeError(f"quantize output y must hold integer codes; got dtype {y.dtype}")
    resolve_range(qmin, qmax, None)
    positive_finite(scale, "scale")
    names = _conventions.names() if conventions is None else list(conventions)
    for name in names + ([] if reference is None else [reference]):
        _conventions.get(name)  # an unknown name is a ValueError here, not a silent skip
    ref_name = None if reference is None else _conventions.get(reference).name
    result = Identification(op=op, size=int(x.size), reference=ref_name)
    case = _Case(x, y, scale, zero_point, qmin, qmax, op, axis)
    for name in names:
        for rounding in ROUNDINGS:
            try:
                n = case.count(name, rounding)
            except (ValueError, TypeError, NotImplementedError) as exc:
                result.skipped[_conventions.get(name).name] = str(exc)
                break  # this convention cannot run these inputs (dtype, zero point, ...)
            result.mismatches[(_conventions.get(name).name, rounding)] = n
            if n == 0:
                result.matches.append((_conventions.get(name).name, rounding))
    if reference is not None:
        _explain(result, case, reference, n_examples)
    return result


def _fault_models(ref):
    """(cause, convention) pairs: one-knob changes of the reference convention ``ref``."""
    models = [("tie rounding", ref.replace(rounding=m)) for m in ROUNDINGS if m != ref.rounding]
    quotients = []
    for compute in ("float32", "input64", "promote"):
        quotients.append(ref.replace(quotient="divide", compute=compute))
        for recip in ("float32", "float64"):
            quotients.append(ref.replace(quotient="reciprocal", compute=compute, reciprocal=recip))
    models += [("reciprocal vs division", c) for c in quotients if c != ref]
    flipped = "before_round" if ref.zero_point == "after_round" else "after_round"
    for c in [ref, *quotients]:
        models.append(("zero point before/after rounding", c.replace(zero_point=flipped, fma=False)))
        if c.quotient == "reciprocal":
            models.append(("zero point before/after rounding",
                           c.replace(zero_point="before_round", fma=True)))
    return models


def _explain(result, case, reference, n_examples):
    ref = _conventions.get(reference)
    x, y, qmin, qmax = case.x, case.y, case.qmin, case.qmax
    unanswerable = case.no_code(ref)  # the reference has no code for NaN
    if unanswerable.any():
        x = np.where(unanswerable, np.zeros((), x.dtype), x)
    try:
        expected = case.run(ref, x=x)
    except (ValueError, TypeError) as exc:
        result.causes = {f"reference {ref.name!r} cannot run: {exc}": int(x.size)}
        return
    differ = ~_same(expected, y) & ~unanswerable
    if not differ.any():
        return
    labels = np.full(x.shape, "", dtype=object)
    with np.errstate(invalid="ignore"):
        xf = x.astype(np.float64)
    labels[differ & ~np.isfinite(xf)] = "nan/inf handling"
    code = _codes(case)
    outside = (code < qmin - 0.5) | (code > qmax + 0.5)
    outside |= _saturated(case, x, ref)
    labels[differ & (labels == "") & outside] = "clamp/saturation"
    pending = differ & (labels == "")
    explained = []
    for cause, conv in _fault_models(ref):
        try:
            alt = case.run(conv, x=x)
        except (ValueError, TypeError, NotImplementedError):
            continue
        explained.append((cause, pending & _same(alt, y)))
    while pending.any() and explained:  # greedy: the single model explaining the most goes first
        cause, hit = max(explained, key=lambda t: int((t[1] & pending).sum()))
        hit = hit & pending
        if not hit.any():
            break
        labels[hit] = cause
        pending &= ~hit
    labels[pending] = "other"
    flat = labels.ravel()
    result.causes = {c: int((flat == c).sum()) for c in CAUSES if (flat == c).any()}
    idx = np.flatnonzero(differ.ravel())[:n_examples]
    xs, es, ys = x.ravel(), np.asarray(expected).ravel(), y.ravel()
    result.examples = [(int(i), xs[i].item(), es[i].item(), ys[i].item(), flat[i]) for i in idx]


def _saturated(case, x, ref) -> np.ndarray:
    """Finite inputs whose reference code before the clamp, ``round(x / s) + z`` under ``ref``'s
    arithmetic, lies outside [qmin, qmax]: a difference there is a clamp/saturation fault (a
    kernel that wraps around, saturates to another range, or does not saturate)."""
    finite = np.isfinite(x.astype(np.float64))
    xr = np.where(finite, x, np.zeros((), x.dtype))
    wide = 2**62
    try:
        q = case.run(ref, x=xr, qmin=-wide, qmax=wide, op="quantize")
    except (ValueError, TypeError, NotImplementedError):
        return np.zeros(x.shape, bool)
    return finite & ((q < case.qmin) | (q > case.qmax))


def _codes(case):
    """The (real) code each element of ``y`` stands for: y itself for quantize, y / s + z else."""
    yf = case.y.astype(np.float64)
    if case.op == "quantize":
        return yf
    s = np.asarray(case.scale, np.float64)
    z = np.asarray(case.zero_point, np.float64)
    axis = case.axis
    if axis is not None and s.ndim == 1:
        view = [1] * case.x.ndim
        view[axis] = -1
        s = s.reshape(view)
        z = z.reshape(view) if z.ndim == 1 else z
    with np.errstate(invalid="ignore", over="ignore"):
        return yf / s + z
