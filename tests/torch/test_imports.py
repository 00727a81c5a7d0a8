"""Importing refquant_torch and its submodules is silent (-W error, nothing on stderr) and loads
torchao only for the modules that use its API."""

import subprocess
import sys

import pytest

pytest.importorskip("torch")

SUBMODULES = ["refquant_torch", "refquant_torch.nn", "refquant_torch.nn.reference",
              "refquant_torch.nn.layers", "refquant_torch.qat", "refquant_torch.functional",
              "refquant_torch.tensor", "refquant_torch.observers", "refquant_torch.pt2e"]


def _run(code):
    return subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                          text=True, timeout=300)


def test_imports_emit_nothing():
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in SUBMODULES)
    code += "import refquant_torch as rqt\nrqt.nn, rqt.pt2e, rqt.prepare_qat, rqt.QuantizeDequantize\n"
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout == ""


def test_nn_and_qat_do_not_load_torchao():
    done = _run("import sys, refquant_torch as rqt\n"
                "rqt.nn.FakeQuantize(); rqt.prepare_qat(rqt.nn.QuantLinear(2, 2))\n"
                "print(any(m.startswith('torchao') for m in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False" and done.stderr == ""


def test_fake_quantize_is_torchao_fake_quantize_base_once_torchao_is_loaded():
    done = _run("import refquant_torch as rqt\n"
                "from refquant_torch._torchao import quiet_import\n"
                "base = quiet_import('torchao.quantization.pt2e').FakeQuantizeBase\n"
                "print(isinstance(rqt.nn.FakeQuantize(), base),"
                " isinstance(rqt.nn.LearnableFakeQuantize(), base))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True True"
