"""Exhaustive sweeps: a candidate kernel against the reference on every bit pattern of a format."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ._cases import _dtype

__all__ = ["sweep", "SweepResult"]

_PATTERNS = {2: 2**16, 4: 2**32}


@dataclass
class SweepResult:
    """What :func:`sweep` found: ``mismatches`` (a count over ``total`` patterns), ``examples``
    (the first few as (bit pattern, input, expected, actual)), ``skipped`` (NaN inputs a
    ``quantize`` reference has no code for), ``diagnosis`` (an :func:`identify` result on the
    differing inputs, or None) and ``seconds``.

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


def sweep(candidate, scale, zero_point=0, *, qmin, qmax, dtype, op="fake_quantize",
          convention="exact", chunk=2**24, progress=False, n_examples=5, client=None) -> SweepResult:
    """Run ``candidate(x)`` on every bit pattern of ``dtype`` (float16, bfloat16: 2**16; float32:
    all 2**32, in chunks of ``chunk``) and compare bit for bit with ``rq.quantize`` /
    ``rq.fake_quantize`` under ``convention`` with the same qparams.

    ``candidate`` takes a 1-D array of ``dtype`` and returns an array of the same length: floats
    of ``dtype`` for ``fake_quantize``, integer codes (any integer or float dtype) for
    ``quantize``. The reference is computed before the candidate runs, and the inputs reported
    are rebuilt from their bit patterns, so a candidate that writes into its input changes
    nothing. ``progress=True`` keeps a progress line on stderr; a callable is called as
    ``progress(done, total, mismatches)`` after each chunk. The differing inputs (at most
    65536) are passed to :func:`identify`. ``client`` (a ``dask.distributed.Client``) runs one
    task per chunk on its workers; the result is the same.

    >>> import numpy as np, refquant as rq
    >>> cand = lambda x: rq.fake_quantize(x, 0.1, 3, qmin=0, qmax=255, convention="onnx")
    >>> r = rq.golden.sweep(cand, 0.1, 3, qmin=0, qmax=255, dtype=np.float16)
    >>> r.total, r.mismatches > 0
    (65536, True)
    """
    import refquant as rq

    from .. import conventions as _conventions

    if op not in ("quantize", "fake_quantize"):
        raise ValueError(f"op must be 'quantize' or 'fake_quantize'; got {op!r}")
    if not callable(candidate):
        raise TypeError(f"candidate must be callable; got {candidate!r}")
    dt = _dtype(dtype)
    if dt.itemsize not in _PATTERNS:
        raise ValueError(f"sweep covers float16, bfloat16 and float32; got {dt.name}")
    conv = _conventions.get(convention)
    total = _PATTERNS[dt.itemsize]
    chunk = int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be a positive integer; got {chunk!r}")
    report = progress if callable(progress) else (_stderr_progress(dt.name) if progress else None)
    if client is not None:
        from ._distributed import sweep_on

        return sweep_on(client, candidate, scale, zero_point, qmin=qmin, qmax=qmax, dt=dt, op=op, conv=conv,
                        total=total, chunk=chunk, progress=report, n_examples=n_examples)
    fn = rq.fake_quantize if op == "fake_quantize" else rq.quantize
    no_nan_code = op == "quantize" and conv.nan == "error"
    result = SweepResult(dtype=dt.name, convention=conv.name, total=total)
    bad_x, bad_y = [], []
    t0 = time.perf_counter()
    base = np.arange(min(chunk, total), dtype=f"u{dt.itemsize}")
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        x = _patterns(start, stop, dt, base)
        xr = x
        if no_nan_code:
            nan = np.isnan(x.astype(np.float32) if dt.itemsize == 2 else x)
            result.skipped += int(nan.sum())
            xr = np.where(nan, np.zeros((), dt), x)
        expected = fn(xr, scale, zero_point, qmin=qmin, qmax=qmax, convention=conv)
        actual = np.asarray(candidate(x))
        if actual.shape != x.shape:
            raise ValueError(f"candidate returned shape {actual.shape} for input shape {x.shape}")
        if op == "fake_quantize" and actual.dtype != expected.dtype:
            raise TypeError(f"candidate returned {actual.dtype}; fake_quantize of {dt.name} "
                            f"must return {dt.name}")
        idx = _differing(actual, expected)
        if no_nan_code and idx.size:
            idx = idx[~nan[idx]]
        if idx.size:
            result.mismatches += int(idx.size)
            inputs = _patterns(start, stop, dt, base)[idx]  # rebuilt: the candidate may write into x
            for j, i in enumerate(idx[: max(0, n_examples - len(result.examples))]):
                result.examples.append((start + int(i), inputs[j].item(), expected[i].item(),
                                        actual[i].item()))
            room = 65536 - sum(map(len, bad_x))
            if room > 0:
                bad_x.append(inputs[:room])
                bad_y.append(actual[idx[:room]])
        if report is not None:
            report(stop, total, result.mismatches)
    if progress is True:
        sys.stderr.write("\n")
    result.seconds = time.perf_counter() - t0
    if bad_x:
        xs, ys = np.concatenate(bad_x), np.concatenate(bad_y)
        result.diagnosis = rq.identify(xs, ys, scale, zero_point, qmin=qmin, qmax=qmax, op=op,
                                       reference=conv)
    return result


def _stderr_progress(name: str):
    def report(done: int, total: int, mismatches: int) -> None:
        sys.stderr.write(f"\rsweep {name}: {100 * done / total:5.1f}% ({done}/{total}), "
                         f"{mismatches} mismatches")
        sys.stderr.flush()
    return report
