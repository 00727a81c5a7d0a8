"""The same checks through a dask.distributed LocalCluster of two worker processes: the same
report, also when one worker is killed mid-run (its tasks are retried, none counted twice)."""

import os
import signal

import numpy as np
import pytest

import refquant as rq
from refquant.checkpoint import save_file

from . import writers as W

distributed = pytest.importorskip("distributed")
pytest.importorskip("dask")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    # the worker processes import this checkout of refquant
    mp.setenv("PYTHONPATH", os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=50)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()
    mp.undo()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Four compressed-tensors int4 weights with planted faults in two, and their source."""
    d = tmp_path_factory.mktemp("dist")
    weights = {f"m.l{i}.weight": W.rng_weights((64, 128), 10 + i) for i in range(4)}
    save_file(d / "source.safetensors", weights)
    W.ct_int4(d, weights, scale_fault="m.l2.weight")
    from refquant.checkpoint import SafetensorsFile

    with SafetensorsFile(d / "model.safetensors") as f:
        tensors = {n: np.array(f.get(n)) for n in f.tensors}
    tensors["m.l1.weight_packed"][5, 3] ^= 0x70000  # flips one code
    save_file(d / "model.safetensors", tensors)
    return d


def _rows(report):
    return [vars(r) for r in report.rows]


def test_same_report_with_and_without_dask(client, checkpoint):
    local = rq.checkpoint.check(checkpoint, checkpoint / "source.safetensors", task_rows=8)
    assert [r.status for r in local.rows] == ["ok", "mismatch", "mismatch", "ok"]
    dask = rq.checkpoint.check(checkpoint, checkpoint / "source.safetensors", client=client, task_rows=8)
    assert _rows(dask) == _rows(local)
    assert dask.workers.startswith("dask")


def test_killing_a_worker_mid_run_gives_the_same_report(client, checkpoint):
    local = rq.checkpoint.check(checkpoint, checkpoint / "source.safetensors", task_rows=2)
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    calls = []

    def progress(done, total, tensors, n_tensors, seconds):
        calls.append(done)
        if len(calls) == 3:
            os.kill(victim, signal.SIGKILL)

    r = rq.checkpoint.check(checkpoint, checkpoint / "source.safetensors", client=client, task_rows=2,
                            progress=progress)
    assert _rows(r) == _rows(local)
    assert len(calls) == 128 and calls[-1] == r.bytes  # every task once
    assert victim not in client.run(os.getpid).values()


def test_sweep_with_client_equals_sweep(client):
    cand = lambda x: rq.fake_quantize(x, 0.1, 3, qmin=0, qmax=255, convention="onnx")  # noqa: E731
    one = rq.golden.sweep(cand, 0.1, 3, qmin=0, qmax=255, dtype="float16", chunk=2**12)
    calls = []
    many = rq.golden.sweep(cand, 0.1, 3, qmin=0, qmax=255, dtype="float16", chunk=2**12, client=client,
                           progress=lambda d, t, m: calls.append(d))
    assert one.mismatches > 0
    assert (many.total, many.mismatches, many.skipped, many.examples) == \
        (one.total, one.mismatches, one.skipped, one.examples)
    assert str(many.diagnosis) == str(one.diagnosis)
    assert len(calls) == 16 and max(calls) == 2**16


def test_sweep_quantize_nan_skipped_same(client):
    cand = lambda x: rq.quantize(np.nan_to_num(x), 0.25, 0, qmin=-8, qmax=7)  # noqa: E731
    one = rq.golden.sweep(cand, 0.25, 0, qmin=-8, qmax=7, dtype="float16", op="quantize", chunk=2**13)
    many = rq.golden.sweep(cand, 0.25, 0, qmin=-8, qmax=7, dtype="float16", op="quantize", chunk=2**13,
                           client=client)
    assert one.skipped > 0 and (many.mismatches, many.skipped) == (one.mismatches, one.skipped)


def test_cli_scheduler_address(client, checkpoint, capsys):
    import json

    from refquant.cli import main

    addr = client.scheduler.address
    rc = main(["checkpoint", str(checkpoint), "--source", str(checkpoint / "source.safetensors"),
               "--scheduler", addr, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["workers"].startswith("dask") and out["totals"]["mismatch"] == 2
    rc = main(["sweep", "--scale", "0.1", "--qmin", "0", "--qmax", "255", "--zero-point", "3",
               "--candidate", "onnx", "--scheduler", addr])
    assert rc == 1 and "patterns differ" in capsys.readouterr().out
