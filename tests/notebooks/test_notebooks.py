"""Every notebook in notebooks/ runs top to bottom (nbclient, CPU, under a minute each).

A notebook whose refquant feature is not importable yet is skipped with the reason; so is the
whole module when nbclient, nbformat, ipykernel or matplotlib is missing.
"""

import importlib
from pathlib import Path

import pytest

for _mod in ("nbclient", "nbformat", "ipykernel", "matplotlib"):
    pytest.importorskip(_mod, reason=f"{_mod} is not installed (pip install -e '.[notebooks]')")

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

# feature each notebook needs: "module" or "module:attribute"
NEEDS = {
    "which_int8_formula.ipynb": ["refquant.affine:fake_quantize", "refquant.golden:identify"],
    "uniform_vs_apot_vs_pact.ipynb": ["refquant.apot:fake_quantize", "refquant.pact:fake_quantize"],
    "qat_with_refquant_torch.ipynb": ["torch", "refquant_torch.nn:PACT",
                                      "refquant_torch.nn:LearnableFakeQuantize",
                                      "refquant_torch.nn:APoTFakeQuantize"],
    "golden_check_float16.ipynb": ["refquant.affine:fake_quantize", "refquant.golden:sweep"],
    "eager_qat.ipynb": ["torch", "refquant_torch:prepare_qat", "refquant_torch:convert"],
}


def _missing(features):
    for feature in features:
        mod, _, attr = feature.partition(":")
        try:
            m = importlib.import_module(mod)
        except ImportError:
            return feature
        if attr and not hasattr(m, attr):
            return feature
    return None


def test_every_notebook_is_listed():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NEEDS)


def test_notebooks_are_stripped():
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_notebook_runs(name, tmp_path):
    missing = _missing(NEEDS[name])
    if missing:
        pytest.skip(f"{name} needs {missing}, which is not importable")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if "image/png" in o.get("data", {})]
    assert figures, f"{name} produced no figure"
