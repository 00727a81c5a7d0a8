"""Exhaustive sweeps over a Dask cluster: the bit patterns split into ranges, one task per range,
the parts merged in pattern order by :func:`refquant.golden.sweep`, so that the result equals the
single-machine sweep's."""

from __future__ import annotations

import uuid

__all__ = ["map_ranges"]


def map_ranges(client, task, starts, chunk, total, progress):
    """``[task(start, min(start + chunk, total)) for start in starts]``, one Dask task each on
    ``client``: a task lost with its worker is run again (``retries``) and counted once;
    ``progress(done, total, mismatches)`` as parts arrive."""
    from distributed import as_completed

    token = uuid.uuid4().hex[:12]
    starts = list(starts)
    futures = {client.submit(task, s, min(s + chunk, total), key=f"refquant-sweep-{token}-{i}",
                             pure=False, retries=3): i for i, s in enumerate(starts)}
    parts, done, found = {}, 0, 0
    for f in as_completed(list(futures)):
        i = futures[f]
        if i in parts:
            continue
        parts[i] = f.result()
        done += min(starts[i] + chunk, total) - starts[i]
        found += parts[i].mismatches
        if callable(progress):
            progress(done, total, found)
    return [parts[i] for i in range(len(starts))]
