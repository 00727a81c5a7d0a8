"""The refquant command end to end in subprocesses: output and exit codes."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

import refquant as rq


def run(*args, module=False):
    cmd = [sys.executable, "-m", "refquant", *args] if module else [sys.executable, "-c",
           "import sys; from refquant.cli import main; sys.exit(main())", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_report_numpy_only_json():
    p = run("report", "--only", "refquant", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["all_matched"] is True
    assert {r["op"] for r in doc["rows"]} == {"fake_quantize float32", "fake_quantize float16"}
    assert all(r["mismatches"] == 0 and r["elements"] > 1000 for r in doc["rows"])


def test_report_backends_table():
    pytest.importorskip("torch")
    p = run("report", module=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "torch.fake_quantize" in p.stdout and "all backends match" in p.stdout
    assert "onnx" in p.stdout and "ml_dtypes" in p.stdout


def test_usage_errors_exit_2(tmp_path):
    assert run().returncode == 2
    assert run("frobnicate").returncode == 2
    p = run("report", "--only", "tensorflow")
    assert p.returncode == 2 and "unknown backend" in p.stderr
    assert run("golden", "--scale", "0.1").returncode == 2
    p = run("check", str(tmp_path / "missing.npz"))
    assert p.returncode == 2 and "no such golden file" in p.stderr
    p = run("golden", "--scale", "-1", "--qmin", "0", "--qmax", "7", "-o", str(tmp_path / "a.npz"))
    assert p.returncode == 2 and "scale" in p.stderr


def test_golden_check_identify(tmp_path):
    f = tmp_path / "g.hex"
    p = run("golden", "--scale", "0.0123", "--zero-point", "3", "--qmin", "0", "--qmax", "255",
            "--convention", "torch.fake_quantize", "-o", str(f))
    assert p.returncode == 0, p.stderr
    assert run("check", str(f)).returncode == 0
    p = run("check", str(f), "--convention", "exact")
    assert p.returncode == 1 and "elements differ" in p.stdout
    p = run("identify", str(f), "--json")
    assert p.returncode == 0
    assert ["torch.fake_quantize", "half_even"] in json.loads(p.stdout)["matches"]


def test_check_detects_a_changed_output(tmp_path):
    g = rq.golden.cases(0.1, 0, qmin=-8, qmax=7, n_random=10)
    g.outputs[5] = np.float32(123.0)
    f = g.save(tmp_path / "bad.json")
    p = run("check", str(f))
    assert p.returncode == 1 and "1 of" in p.stdout
    (tmp_path / "junk.json").write_text("{")
    p = run("identify", str(tmp_path / "junk.json"))
    assert p.returncode == 2 and "JSON" in p.stderr


def test_sweep_command():
    args = ["sweep", "--scale", "0.1", "--zero-point", "3", "--qmin", "0", "--qmax", "255"]
    p = run(*args, "--candidate", "torch.fake_quantize", "--convention", "torch.fake_quantize")
    assert p.returncode == 0 and "0 of 65536" in p.stdout
    if importlib.util.find_spec("ml_dtypes") is not None:  # bfloat16 inputs need ml_dtypes
        p = run(*args, "--candidate", "onnx", "--dtype", "bfloat16")
        assert p.returncode == 1 and "patterns differ" in p.stdout
    assert run(*args, "--candidate", "no_such_module:f").returncode == 2
