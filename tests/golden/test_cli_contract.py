"""The refquant command's contract: one meaning per exit code, foreign files refused cleanly,
candidate kernels from files, manifests that carry their convention's knobs, no warnings."""

import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import refquant as rq

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QP = ["--scale", "0.25", "--qmin", "-8", "--qmax", "7"]


def run(*args, cwd=None, warn_error=True):
    env = dict(os.environ, PYTHONPATH=ROOT)   # refquant itself; the candidate needs no path
    cmd = [sys.executable, *(["-W", "error"] if warn_error else []), "-m", "refquant", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def cli(*args):
    """The command in this process (fast): (exit code, stdout, stderr)."""
    import contextlib
    import io

    from refquant.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


KERNEL = '''
import numpy as np
import refquant as rq

def away(x):
    return rq.fake_quantize(x, 0.25, 0, qmin=-8, qmax=7, rounding="half_away")

def boom(x):
    raise ZeroDivisionError("kernel bug")

def short(x):
    return x[:3]
'''


@pytest.fixture()
def kern(tmp_path):
    (tmp_path / "mykern.py").write_text(KERNEL)
    return tmp_path


def test_exit_codes_0_1_2_3(kern, monkeypatch):
    p = run("sweep", *QP, "--candidate", "mykern:away", cwd=kern)       # module from the cwd
    assert p.returncode == 1 and "tie rounding" in p.stdout, p.stderr
    p = run("sweep", *QP, "--candidate", "mykern.py:boom", cwd=kern)    # a file path
    assert p.returncode == 3 and p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
    assert "ZeroDivisionError: kernel bug" in p.stderr
    monkeypatch.chdir(kern)
    assert cli("sweep", *QP, "--candidate", "exact")[0] == 0
    assert cli("sweep", *QP, "--candidate", str(kern / "mykern.py") + ":away")[0] == 1
    assert cli("sweep", *QP, "--candidate", "nope:f")[0] == 2
    assert cli("sweep", *QP, "--candidate", "mykern.py:missing")[0] == 2
    assert cli("sweep", *QP, "--candidate", "nofile.py:f")[0] == 2
    assert cli("sweep", *QP, "--dtype", "float64", "--candidate", "exact")[0] == 2
    code, _, err = cli("sweep", *QP, "--candidate", "mykern.py:short")
    assert code == 3 and "shape" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("sweep", *QP, "--candidate", "mykern.py:boom", "--debug")
    assert code == 3 and "Traceback" in err and "kernel bug" in err


def test_golden_candidate_file_then_identify_and_check(kern, monkeypatch):
    monkeypatch.chdir(kern)
    for fmt in ("npz", "json", "hex"):
        out = kern / f"mine.{fmt}"
        code, _, err = cli("golden", *QP, "--candidate", "mykern.py:away", "-o", str(out))
        assert code == 0, err
        g = rq.golden.load(out)
        assert g.manifest["outputs"] == "candidate" and g.reference is not None
        t = g.inputs.astype(np.float64) / 0.25       # exact: a power-of-two scale
        with np.errstate(invalid="ignore"):
            moved = int((np.isfinite(t) & (t - np.floor(t) == 0.5) & (np.abs(t) < 7.5)
                         & (np.floor(np.abs(t)) % 2 == 0)).sum())
        assert moved > 0
        code, out_text, err = cli("identify", str(out), "--json")
        assert code == 0, err
        doc = json.loads(out_text)
        assert ["exact", "half_away"] in doc["matches"] and doc["causes"] == {"tie rounding": moved}
        code, out_text, _ = cli("check", str(out))
        assert code == 1 and f"tie rounding: {moved}" in out_text
    p = run("identify", str(kern / "mine.hex"))   # a fresh process reads it the same
    assert p.returncode == 0 and "exact (half_away)" in p.stdout


@pytest.mark.parametrize("fmt", ["npz", "json", "hex"])
def test_foreign_and_damaged_files_exit_2_cleanly(tmp_path, fmt):
    good = rq.golden.cases(0.25, 0, qmin=-8, qmax=7, n_random=20).save(tmp_path / f"good.{fmt}")
    data = good.read_bytes()
    bad = {"random": np.random.default_rng(0).bytes(500), "empty": b"",
           "truncated": data[: len(data) // 2]}
    for name, content in bad.items():
        f = tmp_path / f"{name}.{fmt}"
        f.write_bytes(content)
        for cmd in ("check", "identify"):
            code, out, err = cli(cmd, str(f), "--debug")   # --debug: tracebacks, warnings shown
            assert code == 2, (name, out, err)
            first = err.splitlines()[0]
            assert "pickle" not in err and "warning" not in err.lower()
            if name != "truncated" or fmt != "hex":
                assert "not a golden file" in first, (name, err)
    p = run("check", str(tmp_path / f"random.{fmt}"))   # and in a fresh process, -W error
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "Traceback" not in p.stderr


def test_another_zip_and_json_of_another_shape(tmp_path):
    z = tmp_path / "other.npz"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("readme.txt", "hello")
    np.save(tmp_path / "arr.npy", np.arange(3))
    for path, shape in ((z, None), (tmp_path / "a.json", [1, 2]), (tmp_path / "b.json", {"x": 1})):
        if shape is not None:
            path.write_text(json.dumps(shape))
        p = run("check", str(path))
        assert p.returncode == 2 and p.stderr.startswith("refquant check: error: not a golden file:")
        assert "expected" in p.stderr


def test_non_default_variant_travels_and_edited_knobs_fail(tmp_path):
    variant = rq.conventions.get("torch.quantize").replace(fma=not rq.conventions.get("torch.quantize").fma)
    g = rq.golden.cases(np.float32(0.0123), 3, qmin=0, qmax=255, convention=variant, n_random=3000)
    named = rq.fake_quantize(g.inputs, np.float32(0.0123), 3, qmin=0, qmax=255, convention="torch.quantize")
    assert not np.array_equal(named.view(np.uint32), g.outputs.view(np.uint32))  # fma matters here
    f = g.save(tmp_path / "variant.json")
    p = run("check", str(f))          # a fresh process rebuilds the variant from the file
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"fma={variant.fma}" in p.stdout
    doc = json.loads(f.read_text())
    doc["manifest"]["convention_knobs"]["fma"] = not variant.fma
    f.write_text(json.dumps(doc))
    p = run("check", str(f))
    assert p.returncode == 1 and "differ from torch.quantize" in p.stdout
    assert "zero point before/after rounding" in p.stdout
    doc["manifest"]["convention_knobs"]["quotient"] = "bogus"
    f.write_text(json.dumps(doc))
    p = run("check", str(f))
    assert p.returncode == 2 and "convention_knobs are invalid" in p.stderr
    doc["manifest"]["convention_knobs"]["no_such_knob"] = 1
    f.write_text(json.dumps(doc))
    assert run("check", str(f)).returncode == 2


def test_no_warning_escapes_any_command(tmp_path, kern):
    f = tmp_path / "g.npz"
    bf = tmp_path / "bf.json"
    commands = [
        ["golden", *QP, "--dtype", "bfloat16", "--convention", "onnx", "-o", str(bf)],
        ["golden", "--scale", "0.1", "0.2", "--axis", "0", "--qmin", "-8", "--qmax", "7", "-o", str(f)],
        ["golden", "--scale", "0.1", "0.2", "--block-size", "8", "16", "--qmin", "-8", "--qmax", "7",
         "--dtype", "float16", "-o", str(tmp_path / "b.hex")],
        ["check", str(f)], ["identify", str(f)], ["check", str(bf), "--rounding", "half_away"],
        ["identify", str(bf), "--json"], ["check", str(tmp_path / "b.hex"), "--json"],
        ["sweep", "--scale", "0.1", "--zero-point", "3", "--qmin", "0", "--qmax", "255", "--dtype",
         "bfloat16", "--candidate", "onnx"],
        ["sweep", "--scale", "0.1", "--qmin", "-128", "--qmax", "127", "--dtype", "float16",
         "--candidate", "torch.fake_quantize", "--json"],
        ["sweep", *QP, "--op", "quantize", "--candidate", "tflite", "--dtype", "float16"],
        ["sweep", *QP, "--op", "quantize", "--candidate", "onnx", "--dtype", "bfloat16", "--json"],
        ["report", "--only", "refquant", "--json"],
        ["golden", "--scale", "0", "--qmin", "0", "--qmax", "7", "-o", str(tmp_path / "z.npz")],
    ]
    if importlib.util.find_spec("ml_dtypes") is None:  # bfloat16 inputs need ml_dtypes
        commands = [c for c in commands if "bfloat16" not in c and str(bf) not in c]
    for args in commands:   # --debug prints every warning recorded while the command ran
        code, out, err = cli(*args, "--debug")
        assert "warning" not in err.lower(), (args, err)
        assert code in (0, 1, 2), (args, code, err)
    for args in (["check", str(f)], ["identify", str(f)]):  # a fresh process, warnings as errors
        p = run(*args)
        assert p.returncode == 0 and not p.stderr, (args, p.stderr)
    p = run("sweep", *QP, "--op", "quantize", "--candidate", "tflite", "--dtype", "float16")
    assert p.returncode == 2 and "accepts x of dtype float32" in p.stderr
    p = run("golden", "--scale", "0", "--qmin", "0", "--qmax", "7", "-o", str(tmp_path / "z.npz"))
    assert p.returncode == 2 and "got 0.0" in p.stderr and "np.float64" not in p.stderr


def test_help_lists_choices_defaults_and_only_supported_dtypes():
    p = run("sweep", "--help")
    assert p.returncode == 0
    text = " ".join(p.stdout.split())
    assert "float64" not in text and "Default: float16" in text
    for word in ("half_away: nearest, ties away from zero", "quantize: outputs the integer codes",
                 "torch.fake_quantize:", "--json", "--debug"):
        assert word in text
    g = " ".join(run("golden", "--help").stdout.split())
    for word in ("--axis", "--block-size", "--rounding", "--candidate", "float64"):
        assert word in g


def test_report_json_lists_versions_and_variants():
    p = run("report", "--only", "refquant", "--json")
    assert p.returncode == 0
    doc = json.loads(p.stdout)
    assert doc["versions"]["numpy"] == np.__version__ and doc["versions"]["refquant"]
    assert isinstance(doc["variants"], dict)
    assert "[1/1] refquant" in p.stderr
