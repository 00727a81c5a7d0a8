"""Checkpoint check speed and memory: a synthetic ~2 GB per-channel checkpoint with its bfloat16
source, written to a temporary folder and deleted after, one kind after the other:

* ``int8``: torchao's Int8Tensor layout (``_weight_qdata`` int8, ``_weight_scale`` float32
  [N, 1]), codes ``rne(x * fl32(1 / s))``;
* ``fp8``: e4m3 codes with a float32 scale per output channel as ModelOpt and compressed-tensors
  store them (``weight`` F8_E4M3 [N, K], ``weight_scale`` F32 [N, 1]), ``s = fl32(amax / 448)``
  per row and codes ``e4m3(fl32(x / s))`` (``(w / s).to(torch.float8_e4m3fn)``).

Prints: write time; the re-quantize check with a warm page cache in GB/s (bytes of checkpoint
plus source per second of wall time); peak resident memory of a fresh process running the check
(anonymous memory, and all of it with the file pages mapped, sampled: a child's ru_maxrss starts
at its parent's, which held the writer's arrays); the same check on
a 2-worker dask LocalCluster and its ratio to the single-machine time.

    python benchmarks/bench_checkpoint.py [--gb 2.0] [--kind int8 fp8] [--no-dask]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

import refquant as rq
from refquant.checkpoint import save_file

ROWS = COLS = 4096


def _bf16_bits(x32):
    """float32 -> bfloat16 bit patterns, round to nearest even."""
    u = x32.view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def write(folder, gb, kind="int8"):
    """Write the ``kind`` checkpoint and its source; return their paths."""
    return {"int8": write_int8, "fp8": write_fp8}[kind](folder, gb)


def _weights(i):
    import ml_dtypes

    r = np.random.default_rng(i)
    x = r.standard_normal((ROWS, COLS), dtype=np.float32) * np.float32(0.02)
    return _bf16_bits(x).view(np.dtype(ml_dtypes.bfloat16))


def _source(n):
    """The bfloat16 source tensors for ``save_file``, each made when it is written."""
    def one(i):
        yield _weights(i)

    return {f"l{i}.weight": (_weights(0).dtype, (ROWS, COLS), one(i)) for i in range(n)}


def _chunked(make, n, roles):
    """``{name: (dtype, shape, chunks)}`` for ``save_file``: tensor i's parts come from one call
    of ``make(i)`` (a tuple in the order of ``roles``), so the writer holds one weight at a time."""
    cache = {}

    def part(i, k):
        if k == 0:
            cache[i] = make(i)
        got = cache[i][k]
        if k == len(roles) - 1:
            del cache[i]
        yield got

    return {name.format(i=i): (dtype, shape, part(i, k))
            for i in range(n) for k, (name, dtype, shape) in enumerate(roles)}


def write_fp8(folder, gb):
    import ml_dtypes

    n = max(1, int(gb * 1e9 / (ROWS * COLS * 3)))
    src_path, q_path = os.path.join(folder, "source.safetensors"), os.path.join(folder, "model.safetensors")
    save_file(src_path, _source(n))

    def quantized(i):
        xf = _weights(i).astype(np.float32)
        s = (np.abs(xf).max(axis=1) / np.float32(448)).astype(np.float32)
        q = np.clip(xf / s[:, None], -448, 448).astype(ml_dtypes.float8_e4m3fn)  # float32 quotient
        return q, s.reshape(ROWS, 1)

    e4m3 = np.dtype(ml_dtypes.float8_e4m3fn)
    save_file(q_path, _chunked(quantized, n, [("l{i}.weight", e4m3, (ROWS, COLS)),
                                              ("l{i}.weight_scale", np.float32, (ROWS, 1))]))
    return q_path, src_path


def write_int8(folder, gb):
    n = max(1, int(gb * 1e9 / (ROWS * COLS * 3)))
    src_path, q_path = os.path.join(folder, "source.safetensors"), os.path.join(folder, "model.safetensors")
    meta = {"tensor_names": json.dumps([f"l{i}.weight" for i in range(n)])}
    for i in range(n):
        meta[f"l{i}.weight"] = json.dumps({"_type": "Int8Tensor", "_data": {
            "block_size": [1, COLS], "dtype": {"_type": "torch.dtype", "_data": "bfloat16"}}})

    def quantized(i):
        xf = _weights(i).astype(np.float32)
        s, _ = rq.choose_qparams(xf.min(axis=1), xf.max(axis=1), fmt=rq.int8, symmetric=True,
                                 method="torchao", dtype="bfloat16", scale_dtype=np.float32)
        inv = (np.float32(1) / s).astype(np.float32)[:, None]
        q = np.clip(np.rint(xf * inv), -128, 127).astype(np.int8)  # torchao: rne(x * fl32(1/s))
        return q, s.reshape(ROWS, 1)

    save_file(src_path, _source(n))
    save_file(q_path, _chunked(quantized, n, [("l{i}._weight_qdata", np.int8, (ROWS, COLS)),
                                              ("l{i}._weight_scale", np.float32, (ROWS, 1))]), meta)
    return q_path, src_path


def _child(q_path, src_path):
    """Run one check in a fresh process; print its seconds, peak anonymous and total RSS (MiB)."""
    code = f"""
import threading, time, json, refquant as rq
peak = [0]
stop = []
peak_rss = [0]
def watch():
    while not stop:
        for line in open('/proc/self/status'):
            if line.startswith('RssAnon:'):
                peak[0] = max(peak[0], int(line.split()[1]))
            if line.startswith('VmRSS:'):
                peak_rss[0] = max(peak_rss[0], int(line.split()[1]))
        time.sleep(0.01)
t = threading.Thread(target=watch, daemon=True); t.start()
rq.checkpoint.check({q_path!r}, {src_path!r}, task_rows=64)  # compile and warm
t0 = time.perf_counter()
r = rq.checkpoint.check({q_path!r}, {src_path!r})
sec = time.perf_counter() - t0
stop.append(1); t.join()
print(json.dumps({{"seconds": sec, "anon_mib": peak[0] / 1024, "rss_mib": peak_rss[0] / 1024, "ok": r.ok,
      "bytes": r.bytes,
      "mismatches": r.totals["code_mismatches"] + r.totals["scale_mismatches"]}}))
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([_root(), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--kind", nargs="+", choices=("int8", "fp8"), default=["int8", "fp8"])
    ap.add_argument("--no-dask", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores")
    for kind in args.kind:
        folder = tempfile.mkdtemp(prefix="refquant-bench-", dir="/tmp")
        try:
            run(kind, folder, args)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def run(kind, folder, args):
    t0 = time.perf_counter()
    q_path, src_path = write(folder, args.gb, kind)
    total = os.path.getsize(q_path) + os.path.getsize(src_path)
    print(f"[{kind}] wrote {total / 1e9:.3f} GB (checkpoint {os.path.getsize(q_path) / 1e9:.3f} GB + bf16 "
          f"source) in {time.perf_counter() - t0:.1f} s")
    for f in (q_path, src_path):  # warm the page cache
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    r = rq.checkpoint.check(q_path, src_path)  # compile + warm
    print(f"[{kind}] report: ok={r.ok}, {r.totals['tensors']} tensors ({r.rows[0].format} "
          f"{r.rows[0].kind}, convention {r.rows[0].convention!r}), {r.totals['code_mismatches']} code and "
          f"{r.totals['scale_mismatches']} scale mismatches")
    times, cpu = [], []
    for _ in range(args.runs):
        t0, c0 = time.perf_counter(), time.process_time()
        rq.checkpoint.check(q_path, src_path)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    best, med = min(times), sorted(times)[len(times) // 2]
    print(f"[{kind}] one machine, warm cache: best {best:.2f} s = {r.bytes / best / 1e9:.2f} GB/s, "
          f"median {med:.2f} s = {r.bytes / med / 1e9:.2f} GB/s (target >= 1 GB/s); "
          f"load {os.getloadavg()[0]:.2f}")
    # CPU seconds of all threads: on a shared machine the wall time measures the others too
    print(f"[{kind}] CPU time: best {min(cpu):.2f} s = {r.bytes / min(cpu) / 1e9:.2f} GB per CPU-second "
          f"({r.workers})")
    c = _child(q_path, src_path)
    print(f"[{kind}] fresh process: {c['seconds']:.2f} s, peak anonymous memory {c['anon_mib']:.0f} MiB, "
          f"peak RSS incl. mapped file pages {c['rss_mib']:.0f} MiB, sampled every 10 ms "
          f"(target < 512 MiB)")
    if not args.no_dask:
        _dask(q_path, src_path, r.bytes, best, kind)


def _dask(q_path, src_path, nbytes, local, kind):
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print("dask.distributed not installed: no Dask figure")
        return
    os.environ["PYTHONPATH"] = os.pathsep.join([_root(), os.environ.get("PYTHONPATH", "")])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=50) as cluster, Client(cluster) as client:
        rq.checkpoint.check(q_path, src_path, client=client)  # workers compile and warm
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            rq.checkpoint.check(q_path, src_path, client=client)
            times.append(time.perf_counter() - t0)
    best = min(times)
    print(f"[{kind}] dask LocalCluster(2 workers): best {best:.2f} s = {nbytes / best / 1e9:.2f} GB/s; "
          f"ratio to one machine {best / local:.2f} (target <= 1.3)")


if __name__ == "__main__":
    main()
