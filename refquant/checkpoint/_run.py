"""Planning and running a checkpoint check: one process by default, a process pool with
``workers``, or a Dask cluster with ``client``; the same tasks and the same merge in every case."""

from __future__ import annotations

import glob
import os
import time
import uuid

from ._checks import Task, open_file, run_task
from ._floats import row_multiple
from ._formats import detect
from ._report import Report, merge

__all__ = ["check", "index_of"]

TASK_ELEMENTS = 2**24  # elements of one weight per task (a task reads them in sub-chunks)
_FLOAT_SOURCE = ("F16", "BF16", "F32", "F64")


def _files(path, what):
    p = os.fspath(path)
    if os.path.isdir(p):
        files = sorted(glob.glob(os.path.join(p, "*.safetensors")))
        if not files:
            raise ValueError(f"{what} {p!r} is a folder without .safetensors files")
        return files
    if not os.path.exists(p):
        raise ValueError(f"{what} {p!r} does not exist")
    return [p]


def index_of(path, what="path", unreadable=None):
    """``(index, metadata)`` of a .safetensors file or a folder of shards: stored name ->
    (file, TensorInfo), and the shards' ``__metadata__`` merged (a name in two shards is an error).
    A single file that cannot be read is a ValueError; in a folder, given a dict ``unreadable``,
    such a shard is recorded there (file -> why) and the other shards are indexed."""
    index, metadata = {}, {}
    files = _files(path, what)
    for f in files:
        try:
            st = open_file(f)
        except (ValueError, OSError) as exc:
            if unreadable is None or len(files) == 1:
                raise
            unreadable[f] = str(exc)
            continue
        for name, info in st.tensors.items():
            if name in index:
                raise ValueError(f"{what}: tensor {name!r} is stored in both {index[name][0]} and {f}")
            index[name] = (f, info)
        metadata.update(st.metadata)
    return index, metadata


def _plan(path, source, format, convention, task_rows):
    from ._formats import FORMATS

    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format!r}")
    if task_rows is not None and (type(task_rows) is not int or task_rows < 1):
        raise ValueError(f"task_rows must be a positive integer; got {task_rows!r}")
    if convention is not None:
        import refquant as rq

        convention = rq.conventions.get(convention).name
    unreadable, src_unreadable = {}, {}
    index, metadata = index_of(path, unreadable=unreadable)
    qtensors, others = detect(index, path, format, metadata)
    src_index = index_of(source, "source", src_unreadable)[0] if source is not None else None
    unreadable.update({f: f"source shard: {why}" for f, why in src_unreadable.items()})
    problems, tasks = {}, []
    for i, q in enumerate(qtensors):
        if q.problem:
            problems[i] = q.problem
            continue
        if convention is not None:
            from dataclasses import replace

            q = qtensors[i] = replace(q, convention=convention)
        src = None
        if src_index is not None:
            hit = src_index.get(q.name)
            if hit is None:
                problems[i] = f"the source has no tensor {q.name!r}" + (
                    f" (unreadable source shards: {', '.join(map(os.path.basename, src_unreadable))})"
                    if src_unreadable else "")
                continue
            if tuple(hit[1].shape) != tuple(q.shape):
                problems[i] = (f"source shape {tuple(hit[1].shape)} differs from the quantized "
                               f"weight's {q.shape}")
                continue
            if hit[1].dtype not in _FLOAT_SOURCE:
                problems[i] = f"source tensor {q.name!r} has dtype {hit[1].dtype}, not a float"
                continue
            src = (hit[0], q.name)
        rows = q.shape[0]
        cols = max(1, q.shape[1] if len(q.shape) > 1 else 1)
        multiple = 8 if q.layout == "awq" else row_multiple(q)
        step = task_rows or max(1, TASK_ELEMENTS // cols)
        step = max(multiple, step // multiple * multiple)
        stored = sum(index[name][1].nbytes for _, (_, name) in q.parts)
        src_bytes = src_index[q.name][1].nbytes if src else 0
        for lo in range(0, rows, step):
            hi = min(rows, lo + step)
            nbytes = (stored + src_bytes) * (hi - lo) // max(rows, 1)
            tasks.append(Task(len(tasks), i, q, lo, hi, src, q.convention, nbytes))
    return qtensors, others, problems, tasks, unreadable


def check(path, source=None, *, format="auto", convention=None, client=None, workers=None,
          progress=None, task_rows=None) -> Report:
    """Check every quantized weight of a safetensors checkpoint (a file or a folder of shards).

    Decode check (always): unpack the codes, check codes, scales and zero points are in range
    and self-consistent, and dequantize (``(q - z) * s`` rounded once to the weight's dtype)
    to finite values. Re-quantize check (``source`` given: the float checkpoint it was made
    from): recompute each round-to-nearest weight's codes from the source with the stored scales
    under the format's convention (or ``convention``), and its scales under the format's rule;
    differing codes are explained by :func:`refquant.identify`, differing scales by their ulp
    distance. Weights that are not round-to-nearest (GPTQ, AWQ) get the decode check only, and
    the report says so.

    A shard of a folder that cannot be read (truncated, a header that lies) is listed in
    ``Report.unreadable`` with why, and the other shards are still checked (a single file that
    cannot be read is a ValueError).

    Runs in this process (Numba kernels on every core) by default; ``workers=N`` uses N processes;
    ``client`` (a ``dask.distributed.Client``) spreads (file, tensor, row range) tasks over its
    workers, each opening its own memory map. The report is the same in every case.
    ``progress(done_bytes, total_bytes, done_tensors, total_tensors, seconds)`` is called after
    each task.

    >>> import numpy as np, os, tempfile, refquant as rq
    >>> from refquant.checkpoint import save_file
    >>> d = tempfile.mkdtemp()
    >>> w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(4, 16)
    >>> s, _ = rq.choose_qparams(w.min(axis=1), w.max(axis=1), fmt=rq.int8, symmetric=True, method="torchao")
    >>> q = rq.quantize(w, s, 0, fmt=rq.int8, axis=0, convention="torchao")
    >>> s = s.reshape(4, 1)
    >>> meta = {"tensor_names": '["l.weight"]', "l.weight": '{"_type": "Int8Tensor", "_data": '
    ...         '{"block_size": [1, 16], "dtype": {"_data": "float32"}}}'}
    >>> save_file(os.path.join(d, "q.safetensors"), {"l._weight_qdata": q, "l._weight_scale": s}, meta)
    >>> save_file(os.path.join(d, "src.safetensors"), {"l.weight": w})
    >>> r = rq.checkpoint.check(os.path.join(d, "q.safetensors"), os.path.join(d, "src.safetensors"))
    >>> r.rows[0].status, r.rows[0].code_mismatches, r.rows[0].checks
    ('ok', 0, ['decode', 're-quantize'])
    """
    t0 = time.perf_counter()
    qtensors, others, problems, tasks, unreadable = _plan(path, source, format, convention, task_rows)
    total = sum(t.nbytes for t in tasks)
    remaining = {}
    for t in tasks:
        remaining[t.tensor] = remaining.get(t.tensor, 0) + 1
    state = {"bytes": 0, "tensors": len(qtensors) - len(remaining)}

    def done(task):
        state["bytes"] += task.nbytes
        remaining[task.tensor] -= 1
        state["tensors"] += remaining[task.tensor] == 0
        if progress is not None:
            progress(state["bytes"], total, state["tensors"], len(qtensors), time.perf_counter() - t0)

    if client is not None:
        n = len(client.scheduler_info()["workers"])
        results, where = _dask(client, tasks, done), f"dask ({n} workers)"
    elif workers is not None and int(workers) > 1:
        results, where = _pool(int(workers), tasks, done), f"{int(workers)} processes"
    else:
        results, where = _local(tasks, done)
    rows = merge(qtensors, results, problems, source is not None)
    return Report(path=os.fspath(path), source=None if source is None else os.fspath(source), rows=rows,
                  not_quantized=others, bytes=total, seconds=time.perf_counter() - t0, workers=where,
                  unreadable=unreadable)


def _threadsafe_kernels() -> bool:
    """Whether Numba's threading layer takes parallel kernels from several threads at once
    (``omp`` and ``tbb`` do, ``workqueue`` does not)."""
    import numba
    import numpy as np

    import refquant as rq

    rq.quantize(np.zeros(1 << 17, np.float32), 1.0, 0, qmin=-8, qmax=7)  # starts the layer
    try:
        return numba.threading_layer() in ("omp", "tbb")
    except ValueError:
        return False


def _local(tasks, done):
    """Tasks in this process: one thread per core where the kernels allow it, else in turn."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    n = min(os.cpu_count() or 1, len(tasks))
    if n < 2 or not _threadsafe_kernels():
        results = []
        for t in tasks:
            results.append(run_task(t))
            done(t)
        return results, "one process"
    with ThreadPoolExecutor(n) as ex:
        return _collect(ex, tasks, done, as_completed), f"one process, {n} threads"


def _pool(n, tasks, done):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn")) as ex:
        return _collect(ex, tasks, done, as_completed)


def _collect(executor, tasks, done, as_completed):
    """Every task run on ``executor``; ``done(task)`` as each finishes; the results in the order
    they finished (``as_completed``: the executor's)."""
    futs = {executor.submit(run_task, t): t for t in tasks}
    results = {}
    for f in as_completed(futs):
        t = futs[f]
        results[t.index] = f.result()
        done(t)
    return list(results.values())


def _dask(client, tasks, done):
    from distributed import as_completed

    token = uuid.uuid4().hex[:12]
    futs = {client.submit(run_task, t, key=f"refquant-checkpoint-{token}-{t.index}", pure=False,
                          retries=3): t for t in tasks}
    results = {}
    for f in as_completed(list(futs)):
        t = futs[f]
        if t.index not in results:  # one result per task, whatever was retried
            results[t.index] = f.result()
            done(t)
    return list(results.values())
