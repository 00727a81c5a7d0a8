"""``refquant checkpoint``: exit codes 0 equal / 1 mismatch / 2 bad input / 3 cannot check,
JSON on stdout, progress on stderr."""

import json
from pathlib import Path

import numpy as np

from refquant.checkpoint import save_file
from refquant.cli import main

from . import writers as W


def _ckpt(tmp_path, **kw):
    weights = {"m.a.weight": W.rng_weights((16, 32), 7)}
    save_file(tmp_path / "source.safetensors", weights)
    W.ct_int4(tmp_path, weights, **kw)
    return str(tmp_path / "model.safetensors"), str(tmp_path / "source.safetensors")


def test_exit_0_json_and_progress(tmp_path, capsys):
    model, source = _ckpt(tmp_path)
    assert main(["checkpoint", model, "--source", source, "--json"]) == 0
    out, err = capsys.readouterr()
    d = json.loads(out)
    assert d["ok"] and d["totals"]["ok"] == 1
    assert "1/1 tensors" in err and "GB" in err and "left" in err


def test_exit_1_mismatch_table(tmp_path, capsys):
    model, source = _ckpt(tmp_path, nibbles_reversed=True)
    assert main(["checkpoint", model, "--source", source]) == 1
    out = capsys.readouterr().out
    assert "mismatch" in out and "wrong nibble order" in out


def test_exit_2_bad_input_and_usage(tmp_path, capsys):
    model, source = _ckpt(tmp_path)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(Path(model).read_bytes()[:-10])
    assert main(["checkpoint", str(cut)]) == 2
    assert "truncated" in capsys.readouterr().err
    assert main(["checkpoint", model, "--convention", "nope"]) == 2
    assert main(["checkpoint", model, "--workers", "0"]) == 2
    assert main(["checkpoint", model, "--format", "gguf"]) == 2
    assert main(["checkpoint", model, "--workers", "2", "--scheduler", "tcp://x:1"]) == 2


def test_exit_3_cannot_check(tmp_path, capsys):
    model, _ = _ckpt(tmp_path)
    other = tmp_path / "other.safetensors"
    save_file(other, {"m.a.weight": np.zeros((16, 8), np.float32)})
    assert main(["checkpoint", model, "--source", str(other)]) == 3
    assert "cannot check: source shape" in capsys.readouterr().out


def test_workers_processes_same_report(tmp_path, capsys):
    model, source = _ckpt(tmp_path, scale_fault="m.a.weight")
    assert main(["checkpoint", model, "--source", source, "--json"]) == 1
    one = json.loads(capsys.readouterr().out)
    assert main(["checkpoint", model, "--source", source, "--json", "--workers", "2"]) == 1
    two = json.loads(capsys.readouterr().out)
    assert one["rows"] == two["rows"] and two["workers"] == "2 processes"
