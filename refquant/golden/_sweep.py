"""Exhaustive sweeps: a candidate kernel against the reference on every bit pattern of a format."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .._validation import float_dtype
from ._args import check_op
from ._candidates import CandidateError
from ._cases import edge_inputs

__all__ = ["sweep", "SweepResult", "CandidateError"]

_PATTERNS = {2: 2**16, 4: 2**32}
_KEEP = 65536  # differing float32 patterns kept for the diagnosis


@dataclass
class SweepResult:
    """What :func:`sweep` found: ``mismatches`` (a count over ``total`` patterns), ``examples``
    (the first few as (bit pattern, input, expected, actual)), ``skipped`` (NaN inputs a
    ``quantize`` reference has no code for), ``diagnosis`` (an :func:`identify` result over
    ``diagnosis_scope``, or None) and ``seconds``.

    >>> import numpy as np, refquant as rq
    >>> ref = lambda x: rq.fake_quantize(x, 0.1, 0, qmin=-8, qmax=7)
    >>> r = rq.golden.sweep(ref, 0.1, 0, qmin=-8, qmax=7, dtype="float16")
    >>> r.total, r.mismatches
    (65536, 0)
    """

    dtype: str
    convention: str
    total: int
    mismatches: int = 0
    skipped: int = 0
    examples: list = field(default_factory=list)
    diagnosis: object = None
    seconds: float = 0.0
    diagnosis_scope: str = ""

    def __str__(self):
        head = (f"sweep {self.dtype} vs {self.convention!r}: {self.mismatches} of {self.total} "
                f"patterns differ ({self.seconds:.2f} s)")
        lines = [head]
        if self.skipped:
            lines.append(f"{self.skipped} NaN patterns not compared (no reference code for NaN)")
        width = 2 * (2 if self.dtype in ("float16", "bfloat16") else 4)
        for b, xi, e, a in self.examples:
            lines.append(f"  0x{b:0{width}x}: x={xi!r} expected={e!r} actual={a!r}")
        if self.diagnosis is not None:
            lines.append(f"diagnosis over {self.diagnosis_scope}:")
            lines.append(str(self.diagnosis))
        return "\n".join(lines)


def _patterns(start: int, stop: int, dt: np.dtype, base: np.ndarray) -> np.ndarray:
    """The bit patterns start..stop-1 viewed as ``dt`` (``base`` is arange(chunk) as unsigned)."""
    n = stop - start
    return (base[:n] + base.dtype.type(start)).view(dt)


def _differing(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Flat indices where the bits differ (NaN equals NaN; integers by value; integer codes
    returned as floats compared as float64 values, a NaN code differing)."""
    if expected.dtype.kind in "iu":
        if actual.dtype.kind in "iu":
            return np.flatnonzero(actual.astype(np.int64) != expected.astype(np.int64))
        return np.flatnonzero(~(actual.astype(np.float64) == expected.astype(np.float64)))
    width = f"u{expected.dtype.itemsize}"
    idx = np.flatnonzero(actual.view(width) != expected.view(width))
    if idx.size:
        a, e = actual[idx], expected[idx]
        wide = np.float32 if expected.dtype.itemsize == 2 else expected.dtype
        both_nan = np.isnan(a.astype(wide)) & np.isnan(e.astype(wide))
        idx = idx[~both_nan]
    return idx


def sweep(candidate, scale=None, zero_point=0, *, qmin=None, qmax=None, dtype, op="fake_quantize",
          convention="exact", rounding=None, chunk=2**24, progress=False, n_examples=5, fmt=None,
          saturate=None, client=None) -> SweepResult:
    """Run ``candidate(x)`` on every bit pattern of ``dtype`` (float16, bfloat16: 2**16; float32:
    all 2**32, in chunks of ``chunk``) and compare bit for bit with ``rq.quantize`` /
    ``rq.fake_quantize`` under ``convention`` (and ``rounding``, None: the convention's own) with
    the same qparams.

    ``candidate`` is a callable taking a 1-D array of ``dtype`` and returning an array of the
    same length (floats of ``dtype`` for ``fake_quantize``, integer codes of any integer or float
    dtype for ``quantize``), a registered convention name or Convention (run with the same
    qparams), or ``"module:function"`` / ``"path/to/file.py:function"``. The reference is
    computed before the candidate runs, and the inputs reported are rebuilt from their bit
    patterns, so a candidate that writes into its input changes nothing. A candidate that raises
    or returns the wrong shape or dtype raises :class:`CandidateError`.

    ``progress=True`` keeps a progress line with the time left on stderr (one line per chunk
    when stderr is not a terminal); a callable is called as ``progress(done, total, mismatches)``
    after each chunk. On a mismatch, ``.diagnosis`` is :func:`identify` over every pattern
    (float16, bfloat16); for float32, over at most 65536 of the differing patterns (spread over
    the whole sweep) together with the edge inputs of these qparams, as ``.diagnosis_scope`` says.

    A float format as ``fmt`` sweeps casts to it instead (``scale`` default 1: the element cast;
    ``op="quantize"`` compares the uint8 codes): :func:`refquant.golden._float.float_sweep`.

    >>> import numpy as np, refquant as rq
    >>> r = rq.golden.sweep("onnx", 0.1, 3, qmin=0, qmax=255, dtype=np.float16)
    >>> r.total, r.mismatches > 0, r.diagnosis.matches[0]
    (65536, True, ('onnx', 'half_even'))
    """
    import refquant as rq

    from .. import conventions as _conventions
    from ._candidates import as_kernel
    from ._float import route

    is_float, got = route("sweep", fmt, scale, zero_point, qmin, qmax, saturate)
    if is_float:
        from ._float import float_sweep

        return float_sweep(candidate, fmt, got, dtype=dtype, op=op, convention=convention,
                           saturate=saturate, rounding=rounding, chunk=chunk, progress=progress,
                           n_examples=n_examples, client=client)
    qmin, qmax = got
    check_op(op)
    dt, total, chunk, report = sweep_setup(dtype, chunk, progress)
    conv = _conventions.get(convention)
    kernel, label = as_kernel(candidate, op=op, scale=scale, zero_point=zero_point, qmin=qmin,
                              qmax=qmax, rounding=rounding, dtype=dt.name)
    fn = rq.fake_quantize if op == "fake_quantize" else rq.quantize
    no_nan_code = op == "quantize" and conv.nan == "error"
    result = SweepResult(dtype=dt.name, convention=conv.name, total=total)

    def reference(x):
        missing = None
        if no_nan_code:
            missing = np.isnan(x.astype(np.float32) if dt.itemsize == 2 else x)
            x = np.where(missing, np.zeros((), dt), x)
        return fn(x, scale, zero_point, qmin=qmin, qmax=qmax, convention=conv, rounding=rounding), missing

    def edge():
        e = edge_inputs(scale, zero_point, qmin=qmin, qmax=qmax, dtype=dt, n_random=0)
        return e, "edge inputs (codes, ties, neighbours, specials)"

    xs, ys = run_patterns(result, dt, chunk, reference, kernel, label, op=op, report=report,
                          n_examples=n_examples, code_kinds="iuf", edge=edge, client=client)
    if xs is not None:
        result.diagnosis = rq.identify(xs, ys, scale, zero_point, qmin=qmin, qmax=qmax, op=op,
                                       reference=conv if rounding is None
                                       else conv.replace(rounding=rounding))
    return result


def sweep_setup(dtype, chunk, progress):
    """``(dt, total, chunk, report)`` of a sweep over every bit pattern of ``dtype`` (float16,
    bfloat16 or float32) in chunks of ``chunk``, with ``progress`` (a callable, True for the
    stderr line, or False) as the report function or None; a ValueError names a bad argument."""
    dt = float_dtype(dtype)
    if dt.itemsize not in _PATTERNS:
        raise ValueError(f"sweep covers float16, bfloat16 and float32; got {dt.name}")
    chunk = int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be a positive integer; got {chunk!r}")
    report = progress if callable(progress) else (_stderr_progress(dt.name) if progress else None)
    return dt, _PATTERNS[dt.itemsize], chunk, report


def run_patterns(result, dt, chunk, reference, kernel, label, *, op, report, n_examples, code_kinds,
                 edge, client=None):
    """The chunk loop of the sweeps: every bit pattern of ``dt`` through ``reference(x) ->
    (expected, missing)`` (``missing``: a mask of inputs with no reference output, or None) and
    the candidate ``kernel``; fills ``result`` (mismatches, skipped, examples, seconds,
    diagnosis_scope) and returns the (inputs, outputs) to diagnose, (None, None) when nothing
    differs: every pattern for half formats, else up to 65536 differing patterns spread over the
    sweep and ``edge() -> (inputs, description)``. ``client`` (a ``dask.distributed.Client``)
    runs one task per chunk on its workers, with the same result."""
    from ._candidates import call

    total = result.total
    task = _Chunk(dt, reference, kernel, label, op, code_kinds, n_examples, total)
    starts = range(0, total, chunk)
    t0 = time.perf_counter()
    if client is not None:
        from ._distributed import map_ranges

        parts = map_ranges(client, task, starts, chunk, total, report)
    else:
        parts, found = [], 0
        for start in starts:
            parts.append(task(start, min(start + chunk, total)))
            found += parts[-1].mismatches
            if report is not None:
                report(min(start + chunk, total), total, found)
    for part in parts:
        result.mismatches += part.mismatches
        result.skipped += part.skipped
        result.examples += part.examples[: max(0, n_examples - len(result.examples))]
    result.seconds = time.perf_counter() - t0
    if not result.mismatches:
        return None, None
    if dt.itemsize == 2:
        result.diagnosis_scope = f"all {total} patterns"
        return (_patterns(0, total, dt, np.arange(total, dtype=f"u{dt.itemsize}")),
                np.concatenate([p.outputs for p in parts]))
    bad = [p for p in parts if len(p.kept_x)]
    inputs, what = edge()
    ye = call(kernel, inputs.copy(), label)
    result.diagnosis_scope = (f"{sum(len(p.kept_x) for p in bad)} differing patterns (spread over all "
                              f"of them) and {inputs.size} {what}")
    return (np.concatenate([inputs, *(p.kept_x for p in bad)]),
            np.concatenate([ye.astype(bad[0].kept_y.dtype), *(p.kept_y for p in bad)]))


@dataclass
class _Part:
    """One range of patterns: counts, the first examples, the differing inputs kept for the
    diagnosis and their outputs (wider formats), or every output (16-bit formats)."""

    mismatches: int
    skipped: int
    examples: list
    kept_x: np.ndarray
    kept_y: np.ndarray
    outputs: np.ndarray


@dataclass
class _Chunk:
    """The sweep of one range of patterns, the same on this machine or on a Dask worker."""

    dt: np.dtype
    reference: object
    kernel: object
    label: str
    op: str
    code_kinds: str
    n_examples: int
    total: int

    def __call__(self, start: int, stop: int) -> _Part:
        from ._candidates import CandidateError, call

        dt, op, label = self.dt, self.op, self.label
        base = np.arange(stop - start, dtype=f"u{dt.itemsize}")
        x = _patterns(start, stop, dt, base)
        expected, missing = self.reference(x)
        actual = call(self.kernel, x, label)
        if actual.shape != x.shape:
            raise CandidateError(f"candidate {label} returned shape {actual.shape} for input "
                                 f"shape {x.shape}")
        if op == "fake_quantize" and actual.dtype != expected.dtype:
            raise CandidateError(f"candidate {label} returned {actual.dtype}; fake_quantize of "
                                 f"{dt.name} must return {dt.name}")
        if op == "quantize" and actual.dtype.kind not in self.code_kinds:
            raise CandidateError(f"candidate {label} returned {actual.dtype}; quantize must "
                                 "return integer codes")
        idx = _differing(actual, expected)
        if missing is not None and idx.size:
            idx = idx[~missing[idx]]
        inputs = _patterns(start, stop, dt, base)[idx]  # rebuilt: the candidate may write into x
        examples = [(start + int(i), inputs[j].item(), expected[i].item(), actual[i].item())
                    for j, i in enumerate(idx[: self.n_examples])]
        pick = np.empty(0, np.int64)
        if dt.itemsize > 2 and idx.size:  # keep a spread of them, every chunk its share
            share = max(1, _KEEP * (stop - start) // self.total)
            pick = np.unique(np.linspace(0, idx.size - 1, min(share, idx.size)).astype(np.int64))
        return _Part(int(idx.size), 0 if missing is None else int(missing.sum()), examples,
                     inputs[pick], actual[idx[pick]], actual if dt.itemsize == 2 else actual[:0])


class _stderr_progress:
    """Progress on stderr with the time left: one rewritten line on a terminal, else a plain
    line per chunk (at most one every 5 seconds)."""

    def __init__(self, name: str):
        self.name = name
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.last = -1e9

    def __call__(self, done: int, total: int, mismatches: int) -> None:
        now = time.perf_counter()
        elapsed = now - self.t0
        left = elapsed / done * (total - done) if done else 0.0
        line = (f"sweep {self.name}: {100 * done / total:5.1f}% ({done}/{total}), {mismatches} "
                f"mismatches, {elapsed:.0f} s elapsed, about {left:.0f} s left")
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if done >= total else ""))
        elif done >= total or now - self.last >= 5:
            sys.stderr.write(line + "\n")
            self.last = now
        sys.stderr.flush()
