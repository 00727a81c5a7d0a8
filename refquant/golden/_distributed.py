"""Exhaustive sweeps over a Dask cluster: the bit patterns split into ranges, one task per range,
results merged in pattern order, so that the result equals the single-machine sweep's."""

from __future__ import annotations

import time
import uuid

import numpy as np

from ._sweep import SweepResult, _differing, _patterns

__all__ = ["sweep_on"]

DIAGNOSIS_LIMIT = 65536


def _sweep_range(candidate, scale, zero_point, qmin, qmax, dt, op, conv, start, stop, n_examples):
    """One range of patterns: (mismatches, skipped, examples, differing inputs, their outputs)."""
    import refquant as rq

    base = np.arange(stop - start, dtype=f"u{dt.itemsize}")
    x = _patterns(start, stop, dt, base)
    fn = rq.fake_quantize if op == "fake_quantize" else rq.quantize
    skipped, xr = 0, x
    no_nan_code = op == "quantize" and conv.nan == "error"
    if no_nan_code:
        nan = np.isnan(x.astype(np.float32) if dt.itemsize == 2 else x)
        skipped = int(nan.sum())
        xr = np.where(nan, np.zeros((), dt), x)
    expected = fn(xr, scale, zero_point, qmin=qmin, qmax=qmax, convention=conv)
    actual = np.asarray(candidate(x))
    if actual.shape != x.shape:
        raise ValueError(f"candidate returned shape {actual.shape} for input shape {x.shape}")
    if op == "fake_quantize" and actual.dtype != expected.dtype:
        raise TypeError(f"candidate returned {actual.dtype}; fake_quantize of {dt.name} must return "
                        f"{dt.name}")
    idx = _differing(actual, expected)
    if no_nan_code and idx.size:
        idx = idx[~nan[idx]]
    inputs = _patterns(start, stop, dt, base)[idx]  # rebuilt: the candidate may write into x
    examples = [(start + int(i), inputs[j].item(), expected[i].item(), actual[i].item())
                for j, i in enumerate(idx[:n_examples])]
    return int(idx.size), skipped, examples, inputs[:DIAGNOSIS_LIMIT], actual[idx[:DIAGNOSIS_LIMIT]]


def sweep_on(client, candidate, scale, zero_point, *, qmin, qmax, dt, op, conv, total, chunk,
             progress, n_examples) -> SweepResult:
    """:func:`refquant.golden.sweep`'s work (arguments already checked by it) with one task per
    ``chunk`` patterns on a ``dask.distributed.Client``: the result (counts, examples, diagnosis)
    is the single-machine one; a task lost with its worker is run again, and counted once."""
    from distributed import as_completed

    import refquant as rq

    t0 = time.perf_counter()
    token = uuid.uuid4().hex[:12]
    starts = list(range(0, total, chunk))
    futures = {client.submit(_sweep_range, candidate, scale, zero_point, qmin, qmax, dt, op, conv, s,
                             min(s + chunk, total), n_examples, key=f"refquant-sweep-{token}-{i}",
                             pure=False, retries=3): i for i, s in enumerate(starts)}
    parts, done, found = {}, 0, 0
    for f in as_completed(list(futures)):
        i = futures[f]
        if i in parts:
            continue
        parts[i] = f.result()
        done += min(starts[i] + chunk, total) - starts[i]
        found += parts[i][0]
        if callable(progress):
            progress(done, total, found)
    result = SweepResult(dtype=dt.name, convention=conv.name, total=total)
    bad_x, bad_y, room = [], [], DIAGNOSIS_LIMIT
    for i in range(len(starts)):
        n, skipped, examples, xs, ys = parts[i]
        result.mismatches += n
        result.skipped += skipped
        result.examples += examples[: max(0, n_examples - len(result.examples))]
        if room > 0 and len(xs):
            bad_x.append(xs[:room])
            bad_y.append(ys[:room])
            room -= len(bad_x[-1])
    result.seconds = time.perf_counter() - t0
    if bad_x:
        result.diagnosis = rq.identify(np.concatenate(bad_x), np.concatenate(bad_y), scale, zero_point,
                                       qmin=qmin, qmax=qmax, op=op, reference=conv)
    return result
