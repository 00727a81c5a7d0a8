"""The diagnosis engine shared by ``identify``, ``sweep``, ``refquant check`` and ``assert_quant_equal``.

Given inputs ``x``, a kernel's outputs ``y`` and the reference call that should have produced them
(a :class:`Setting`: op, qparams, range, granularity, convention), it answers *why* ``y`` differs,
over every input given (never a subset):

1. The reference output is recomputed; the differing elements are the ones to explain.
2. Each *change* of the family's list (one knob of the convention, the range, or one output rule)
   is applied and recomputed over all the inputs. A change explains an element when its output
   equals ``y`` there. A change that reproduces ``y`` on every input is a full explanation; when
   changes of different causes all do, the inputs do not separate them (reported as ambiguous).
3. Else pairs of the changes that explain the most are tried the same way; else the elements go,
   greedily, to the single change, then the pair, explaining the most of those left, among the
   changes that break no element that agreed; what none explains is ``"other"``, with examples.

A cause is therefore never a guess from the shape of the difference: it is named only where
recomputing under the changed knob removes the difference. Families of changes are pluggable:
``register_changes(family, fn)`` with ``fn(setting) -> [Change, ...]``; ``"affine"`` is built in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from .. import conventions as _conventions

__all__ = ["Setting", "Change", "Diagnosis", "diagnose", "register_changes", "same", "separating",
           "CAUSES", "ROUNDINGS"]

# what a run raises when a convention cannot take these inputs (a dtype it refuses, a zero point
# outside its rules, a scale whose float32 reciprocal is infinite)
_CANNOT_RUN = (ValueError, TypeError, NotImplementedError, ArithmeticError)

ROUNDINGS = ("half_even", "half_away", "half_up", "half_down", "floor", "ceil", "toward_zero")
CAUSES = (
    "nan/inf handling",
    "clamp/saturation",
    "tie rounding",
    "rounding mode",
    "reciprocal vs division",
    "zero point before/after rounding",
    "dequantization arithmetic",
    "signed zero",
    "other",
)


def same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise bitwise equality, NaN equal to NaN (floats), value equality for integers."""
    a, b = np.asarray(a), np.asarray(b)
    with np.errstate(invalid="ignore", over="ignore"):
        if a.dtype.kind in "iub" and b.dtype.kind in "iub":
            return a.astype(np.int64) == b.astype(np.int64)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
    both_nan = np.isnan(a64) & np.isnan(b64)
    return ((a64 == b64) & (np.signbit(a64) == np.signbit(b64))) | both_nan


@dataclass(frozen=True)
class Setting:
    """One reference call: ``rq.quantize`` or ``rq.fake_quantize`` with these arguments, an
    optional input rule ``pre(x, setting) -> x`` and output rule ``post(x, out, y_dtype) -> out``
    for faults that are not knobs. Another family of operations gives its own ``runner(setting,
    x) -> out`` (the affine ops when None)."""

    op: str
    scale: object
    zero_point: object
    qmin: int
    qmax: int
    convention: object
    axis: object = None
    block_size: object = None
    rounding: object = None
    post: object = None
    pre: object = None
    runner: object = None
    fmt: object = None  # a FloatFormat: the float family (convention: a FloatConvention)

    @property
    def conv(self):
        if self.fmt is not None:
            from .. import float_conventions

            return float_conventions.get(self.convention)
        return _conventions.get(self.convention)

    def run(self, x, y_dtype=None) -> np.ndarray:
        import refquant as rq

        fn = rq.quantize if self.op == "quantize" else rq.fake_quantize
        x = x if self.pre is None else self.pre(x, self)
        with np.errstate(all="ignore"):  # e.g. an unclamped fault model overflowing float16
            if self.runner is not None:
                out = self.runner(self, x)
            else:
                out = fn(x, self.scale, self.zero_point, qmin=self.qmin, qmax=self.qmax,
                         axis=self.axis, block_size=self.block_size, convention=self.conv,
                         rounding=self.rounding)
        return out if self.post is None else self.post(x, out, y_dtype)

    def no_code(self, x) -> np.ndarray:
        """NaN inputs under ``quantize`` where the convention makes NaN an error: no output to
        compare (such elements are run as 0 and left out of the diagnosis)."""
        if self.fmt is not None:
            from ._float import no_code

            return no_code(self, x)
        if self.op == "quantize" and self.conv.nan == "error":
            with np.errstate(invalid="ignore"):
                return np.isnan(np.asarray(x).astype(np.float64))
        return np.zeros(np.shape(x), bool)


@dataclass(frozen=True)
class Change:
    """One candidate change of a setting: convention knobs, the range, and/or an output rule."""

    cause: str
    label: str
    knobs: tuple = ()          # ((knob, value), ...)
    qrange: tuple | None = None
    post: Callable | None = None
    pre: Callable | None = None
    parts: tuple = ()          # the single changes a pair is made of
    soft: tuple = ()           # knobs set only to make the change runnable: another change's win

    def apply(self, s: Setting) -> Setting:
        conv = s.conv.replace(**dict(self.knobs)) if self.knobs else s.conv
        lo, hi = self.qrange if self.qrange is not None else (s.qmin, s.qmax)
        return replace(s, convention=conv, qmin=lo, qmax=hi, post=self.post or s.post,
                       pre=self.pre or s.pre)

    def __add__(self, other: Change) -> Change | None:
        """Both changes at once (None when they set the same knob, range or rule differently)."""
        mine, theirs = dict(self.knobs), dict(other.knobs)
        for k in set(mine) & set(theirs):
            if mine[k] != theirs[k]:
                if k in self.soft and k not in other.soft:
                    mine[k] = theirs[k]
                elif k not in other.soft:
                    return None
                theirs[k] = mine[k]
        if (self.qrange is not None and other.qrange is not None or self.post and other.post
                or self.pre and other.pre):
            return None
        causes = " + ".join(sorted({self.cause, other.cause}))
        return Change(causes, f"{self.label} + {other.label}", tuple({**mine, **theirs}.items()),
                      self.qrange or other.qrange, self.post or other.post, self.pre or other.pre,
                      (self, other))


_FAMILIES: dict[str, Callable] = {}


def register_changes(family: str, fn: Callable) -> None:
    """Make ``fn(setting) -> [Change, ...]`` the candidate changes of ``family``."""
    _FAMILIES[family] = fn


def _knob(cause, **knobs) -> Change:
    label = ", ".join(f"{k}={v!r}" for k, v in knobs.items())
    return Change(cause, label, tuple(knobs.items()))


def _zeros_keep_sign(x, out, y_dtype):
    """A zero output takes the sign of x (a kernel that skips ``+ z`` keeps rne(-0.3) = -0.0)."""
    xs = np.asarray(x)
    with np.errstate(invalid="ignore"):
        neg = np.signbit(xs.astype(np.float64)) & (out.astype(np.float64) == 0)
    if not neg.any():
        return out
    out = out.copy()
    out[neg] = -out[neg]
    return out


def _nan_to(code: str):
    """Inputs with each NaN replaced by an input whose code is ``code``: -inf for qmin, +inf
    for qmax, ``(0 - z) * s`` for zero (a kernel that gives NaN that code)."""
    def pre(x, s: Setting):
        with np.errstate(invalid="ignore"):
            nan = np.isnan(np.asarray(x, np.float64))
        if not nan.any():
            return x
        if code == "zero":
            z = np.asarray(s.zero_point, np.float64)
            sc = np.asarray(s.scale, np.float64)
            if s.block_size is not None or (s.axis is None and (sc.size > 1 or z.size > 1)):
                return x
            if s.axis is not None:
                view = [1] * np.ndim(x)
                view[s.axis] = -1
                sc, z = sc.reshape(view), (z.reshape(view) if z.ndim == 1 else z)
            fill = np.broadcast_to(-z * sc, np.shape(x)).astype(np.asarray(x).dtype)
        else:
            fill = np.full(np.shape(x), -np.inf if code == "qmin" else np.inf, np.asarray(x).dtype)
        return np.where(nan, fill, x)
    pre.__name__ = f"nan_to_{code}"
    return pre


def _wrap(x, out, y_dtype):
    """Unclamped integer codes wrapped into ``y_dtype`` (a kernel that casts without a clamp)."""
    if y_dtype is None or np.dtype(y_dtype).kind not in "iu":
        return out
    info = np.iinfo(y_dtype)
    v = out.astype(np.int64)
    span = int(info.max) - int(info.min) + 1
    return ((v - int(info.min)) % span + int(info.min)).astype(y_dtype)


def _affine_changes(s: Setting) -> list:
    c = s.conv
    changes = []
    rounding = s.rounding or c.rounding
    for m in ROUNDINGS:
        if m != rounding:
            cause = "tie rounding" if m.startswith("half") else "rounding mode"
            changes.append(_knob(cause, rounding=m))
    quotients = [dict(quotient="exact", compute="exact")]
    for compute in ("float32", "float64", "input64", "promote"):
        quotients.append(dict(quotient="divide", compute=compute))
        for recip in ("float32", "float64", "scale_dtype"):
            quotients.append(dict(quotient="reciprocal", compute=compute, reciprocal=recip))
    current = dict(quotient=c.quotient, compute=c.compute, reciprocal=c.reciprocal)
    for q in quotients:
        if any(current[k] != v for k, v in q.items()):
            changes.append(_knob("reciprocal vs division", **q))
    flipped = "before_round" if c.zero_point == "after_round" else "after_round"
    if c.quotient == "exact" and flipped == "before_round":
        # the exact quotient path adds z after rounding whatever the knob says: rne(t + z) is
        # run with t = x / s in float64 (the same codes except within 2**-53 of a tie)
        changes.append(replace(_knob("zero point before/after rounding", zero_point=flipped, fma=False,
                                     quotient="divide", compute="float64"),
                               label="zero_point='before_round', fma=False", soft=("quotient", "compute")))
    else:
        changes.append(_knob("zero point before/after rounding", zero_point=flipped, fma=False))
    if c.quotient == "reciprocal":
        changes.append(_knob("zero point before/after rounding", zero_point="before_round",
                             fma=not c.fma))
    other_add = "compute" if c.zero_point_add == "integer" else "integer"
    changes.append(_knob("zero point before/after rounding", zero_point_add=other_add))
    for lo, hi in ((s.qmin, s.qmax - 1), (s.qmin, s.qmax + 1), (s.qmin + 1, s.qmax),
                   (s.qmin - 1, s.qmax), (s.qmin + 1, s.qmax - 1)):
        if lo <= hi:
            changes.append(Change("clamp/saturation", f"qmin={lo}, qmax={hi}", qrange=(lo, hi)))
    wide = (-(2**53), 2**53)  # the widest range quantize accepts (codes are float64)
    changes.append(Change("clamp/saturation", "no clamp", qrange=wide))
    if s.op == "quantize":
        changes.append(Change("clamp/saturation", "no clamp, codes wrap around", qrange=wide,
                              post=_wrap))
    changes += [_knob("clamp/saturation", clamp=m) for m in ("float", "cast_first", "cast_last")
                if m != c.clamp]
    for m in ("qmin", "qmax", "zero"):
        if s.op == "fake_quantize" and c.fake_nan != "code" or m != c.nan:
            changes.append(Change("nan/inf handling", f"NaN -> {m}", pre=_nan_to(m)))
    if s.op == "quantize" and c.nan != "cast":
        changes.append(_knob("nan/inf handling", nan="cast"))
    if s.op == "fake_quantize":
        if c.nan != "cast" or c.fake_nan != "code":
            changes.append(_knob("nan/inf handling", fake_nan="code", nan="cast"))
        if c.fake_nan != "propagate":
            changes.append(_knob("nan/inf handling", fake_nan="propagate"))
        changes += [_knob("dequantization arithmetic", dequant=m)
                    for m in ("exact", "float32", "float64", "mixed", "promote", "divide")
                    if m != c.dequant]
        changes.append(Change("signed zero", "zeros keep the sign of x", post=_zeros_keep_sign))
    return changes


register_changes("affine", _affine_changes)


@dataclass
class Diagnosis:
    """Why ``y`` differs from a setting's output. ``differing``: elements that differ;
    ``causes``: cause -> count (summing to ``differing``); ``explained_by``: the changes (labels)
    reproducing ``y`` on every input; ``ambiguous``: (a, b, inputs) for such changes with
    different causes (the inputs do not separate them; ``inputs``: (value, is_tie) pairs that
    would); ``examples``: (index, x, expected, actual, cause) tuples, a few per cause;
    ``skipped``: inputs with no reference output (NaN under quantize); ``note``: why no
    diagnosis could be made, if so."""

    size: int
    differing: int = 0
    causes: dict = field(default_factory=dict)
    explained_by: list = field(default_factory=list)
    labels: dict = field(default_factory=dict)
    ambiguous: list = field(default_factory=list)
    examples: list = field(default_factory=list)
    skipped: int = 0
    note: str = ""

    @property
    def cause(self):
        """The cause of the most differing elements (None if nothing differs)."""
        return max(self.causes, key=self.causes.get) if self.causes else None

    def lines(self, reference: str) -> list:
        if self.note:
            return [self.note]
        if not self.differing:
            if self.skipped:
                return [f"no differences from {reference!r} on the {self.size - self.skipped} inputs "
                        f"it has an output for ({self.skipped} NaN/inf inputs have none)"]
            return [f"no differences from {reference!r}"]
        out = [f"{self.differing} of {self.size} elements differ from {reference!r}; by cause "
               "(recomputing under the change removes the difference):"]
        for cause, n in sorted(self.causes.items(), key=lambda t: -t[1]):
            how = self.labels.get(cause)
            out.append(f"  {cause}: {n}" + (f" ({how})" if how else ""))
        for a, b, inputs in self.ambiguous:
            would = ("; inputs that would: x = " + ", ".join(repr(v) for v, _ in inputs)
                     if inputs else "")
            out.append(f"  ambiguous: these inputs do not separate {a} from {b}{would}")
        for i, xi, e, a, cause in self.examples:
            out.append(f"  [{i}] x={xi!r} expected={e!r} actual={a!r} ({cause})")
        return out


def _safe_run(setting: Setting, x, y_dtype):
    try:
        return setting.run(x, y_dtype)
    except _CANNOT_RUN:
        return None


def diagnose(x, y, setting: Setting, *, family="affine", n_examples=3, per_cause_pairs=2,
             expected=None) -> Diagnosis:
    """Explain where ``y`` differs from ``setting.run(x)`` (see the module docstring).

    ``expected`` (optional) is the reference output when the caller already has it.

    >>> import numpy as np, refquant as rq
    >>> from refquant.golden._diagnose import Setting, diagnose
    >>> x = np.float32([0.125, 0.375, -0.125, 1.0])
    >>> y = rq.fake_quantize(x, 0.25, 0, qmin=-8, qmax=7, rounding="half_away")
    >>> d = diagnose(x, y, Setting("fake_quantize", 0.25, 0, -8, 7, "exact"))
    >>> d.causes, d.explained_by
    ({'tie rounding': 2}, ["rounding='half_away'"])
    """
    x, y = np.asarray(x), np.asarray(y)
    result = Diagnosis(size=int(x.size))
    missing = setting.no_code(x)
    result.skipped = int(missing.sum())
    xr = np.where(missing, np.zeros((), x.dtype), x) if result.skipped else x
    if expected is None:
        try:
            expected = setting.run(xr, y.dtype)
        except _CANNOT_RUN as exc:
            result.note = f"the reference cannot run these inputs: {exc}"
            return result
    expected = np.asarray(expected)
    agree = same(expected, y) | missing
    differ = ~agree
    result.differing = int(differ.sum())
    if not result.differing:
        return result
    def attempt(change):
        try:
            alt = _safe_run(change.apply(setting), xr, y.dtype)
        except ValueError:  # a knob combination the convention refuses
            return None
        if alt is None or alt.shape != y.shape:
            return None
        hit = same(alt, y) & ~missing
        return change, hit & differ, int((~hit & agree & ~missing).sum())

    singles = [t for t in map(attempt, _FAMILIES[family](setting)) if t is not None]
    labels = np.full(x.shape, None, dtype=object)
    pending = differ.copy()
    full = [c for c, h, broken in singles if broken == 0 and int(h.sum()) == result.differing]
    pairs = []
    if not full:  # two changes of different causes at once, among those explaining the most
        top, per_cause = [], {}
        for t in sorted(singles, key=lambda t: (-int(t[1].sum()), t[2])):
            if per_cause.get(t[0].cause, 0) < per_cause_pairs:
                per_cause[t[0].cause] = per_cause.get(t[0].cause, 0) + 1
                top.append(t[0])
        combos = [a + b for i, a in enumerate(top) for b in top[i + 1:] if a.cause != b.cause]
        pairs = [t for t in map(attempt, filter(None, combos)) if t is not None]
        full = [c for c, h, broken in pairs if broken == 0 and int(h.sum()) == result.differing]
    if full:
        first = full[0]
        result.explained_by = [c.label for c in full]
        seen = {first.cause}
        for c in full[1:]:
            if c.cause not in seen:
                seen.add(c.cause)
                try:
                    inputs = separating(x.dtype, first.apply(setting), c.apply(setting))
                except ValueError:
                    inputs = []
                result.ambiguous.append((first.label, c.label, inputs))
        # a pair's elements that one of its parts explains alone are that part's
        parts = [t for t in singles if t[0] in first.parts] if first.parts else []
        for c, h, _ in parts:
            take = h & pending
            if take.any():
                labels[take] = c.cause
                result.labels.setdefault(c.cause, c.label)
                pending &= ~take
        if pending.any():
            labels[pending] = first.cause
            result.labels[first.cause] = first.label
        pending[:] = False
    for group in (singles, pairs):  # greedy, only changes that break no agreeing element
        clean = [(c, h) for c, h, broken in group if broken == 0]
        while pending.any():
            best = max(clean, key=lambda t: int((t[1] & pending).sum()), default=None)
            if best is None or not (best[1] & pending).any():
                break
            take = best[1] & pending
            labels[take] = best[0].cause
            result.labels.setdefault(best[0].cause, best[0].label)
            pending &= ~take
    labels[pending] = "other"
    flat = labels.ravel()
    names = [c for c in dict.fromkeys(flat[differ.ravel()].tolist())]
    result.causes = {c: int((flat == c).sum()) for c in names}
    xs, es, ys = x.ravel(), expected.ravel(), y.ravel()
    for cause in sorted(result.causes, key=lambda c: -result.causes[c]):
        for i in np.flatnonzero(flat == cause)[:n_examples]:
            result.examples.append((int(i), xs[i].item(), es[i].item(), ys[i].item(), cause))
    return result


def separating(dtype, a: Setting, b: Setting, limit=4) -> list:
    """Up to ``limit`` inputs of ``dtype`` on which ``a`` and ``b`` differ, taken from the edge
    inputs of the first channel's qparams (every code, tie and their float neighbours), each
    with whether it is an exact rounding tie: [(value, is_tie), ...]."""
    from ._cases import edge_inputs

    if a.fmt is not None:
        from ._float import _separating

        return _separating(dtype, a, b, limit)

    s = np.asarray(a.scale).ravel()[0]
    z = np.asarray(a.zero_point).ravel()[0]
    s = s if isinstance(a.scale, (np.ndarray, np.generic)) else float(s)
    z = z if isinstance(a.zero_point, (np.ndarray, np.generic)) else z.item()
    x = edge_inputs(s, z, qmin=a.qmin, qmax=a.qmax, dtype=dtype, n_random=0)
    with np.errstate(invalid="ignore"):
        x = x[np.isfinite(x.astype(np.float64))]
    one = [Setting(t.op, s, z, t.qmin, t.qmax, t.convention, None, None, t.rounding) for t in (a, b)]
    try:
        ya, yb = one[0].run(x), one[1].run(x)
    except _CANNOT_RUN:
        return []
    found = np.unique(x[~same(ya, yb)])
    found = found[np.argsort(np.abs(found.astype(np.float64)), kind="stable")][:limit]
    out = []
    for v in found:
        r = Fraction(float(v)) / Fraction(float(s)) + Fraction(float(z))
        out.append((v.item(), r.denominator == 2))
    return out
