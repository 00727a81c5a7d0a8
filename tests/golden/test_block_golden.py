"""Golden tooling for the block formats (MX, NVFP4, NF4): cases, files, check and identify with
named causes."""

from __future__ import annotations

import json

import numpy as np
import pytest

import refquant as rq
from refquant.cli import main
from refquant.golden import _block

FORMATS = ["mxfp8_e4m3", "mxfp4", "mxint8", "nvfp4", "nf4"]
_INPUTS = {}


def _inputs(fmt):
    if fmt not in _INPUTS:
        family = _block.BLOCK_FORMATS[fmt][0]
        _INPUTS[fmt] = _block.block_inputs(fmt, n_random=16, nonfinite=family != "nvfp4")
    return _INPUTS[fmt]


def _same(a, b):
    return bool(((a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))).all())


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_row_identifies_itself(fmt):
    family = _block.BLOCK_FORMATS[fmt][0]
    x = _inputs(fmt)
    for name, row in _block._table(family).items():
        try:
            y = _block._run(fmt, row, x)
        except (ValueError, TypeError):  # the row lacks this element format
            continue
        r = rq.identify(x, y, fmt=fmt)
        assert name in [m[0] for m in r.matches], (name, r.matches)
        others = [m for m in r.mismatches if m[0] != name and r.mismatches[m] == 0]
        assert set(others) == {m for m in r.matches if m[0] != name}


def _single_knob_cases():
    for fmt in FORMATS:
        family = _block.BLOCK_FORMATS[fmt][0]
        ref = _block._row(family, _block._REFERENCE[family])
        for cause, label, row in _block._knob_changes(family, ref):
            yield pytest.param(fmt, cause, label, row, id=f"{fmt}-{label}")


@pytest.mark.parametrize("fmt,cause,label,row", list(_single_knob_cases()))
def test_single_knob_candidate_is_named_by_its_cause(fmt, cause, label, row):
    """A candidate built from the reference with one knob of another row is explained by that
    knob's cause (and the change reproduces it everywhere)."""
    x = _inputs(fmt)
    family = _block.BLOCK_FORMATS[fmt][0]
    try:
        y = _block._run(fmt, row, x)
    except (ValueError, TypeError, NotImplementedError):
        pytest.skip("the changed row does not run this format")
    ref = _block._run(fmt, _block._row(family, _block._REFERENCE[family]), x)
    if _same(y, ref):
        pytest.skip("this knob changes nothing on these inputs")
    r = rq.identify(x, y, fmt=fmt)
    assert label in r.diagnosis.explained_by
    assert r.cause == cause, r.causes
    assert sum(r.causes.values()) == r.diagnosis.differing


@pytest.mark.parametrize("fmt,row,cause", [
    ("mxfp8_e4m3", "gfloat.float32", "scale from float32 log2"),
    ("mxfp4", "torchao.ceil", "scale rule"),
    ("mxfp4", "torchao.even", "scale rule"),
    ("mxfp8_e4m3", "torchao.rceil", "reciprocal vs division"),
    ("mxfp8_e4m3", "torchao.floor", "min scale (2**-127 divides as 2**-126)"),
    ("nf4", "bitsandbytes", "fp32 thresholds"),
    ("nvfp4", "torchao", "block scale rounding"),
])
def test_library_rows_carry_their_named_cause(fmt, row, cause):
    x = _inputs(fmt)
    family = _block.BLOCK_FORMATS[fmt][0]
    y = _block._run(fmt, _block._row(family, row), x)
    r = rq.identify(x, y, fmt=fmt)
    assert r.causes.get(cause, 0) > 0, r.causes


def test_global_scale_decode_vs_encode():
    """NVFP4: storing 2688 / amax (encode) instead of amax / 2688 (decode) moves the global scale
    by an ulp in some tensors, and the candidate is named by it."""
    rng = np.random.default_rng(5)
    for _ in range(40):
        x = (rng.standard_normal((8, 64)) * np.exp(rng.uniform(-5, 5))).astype(np.float32)
        enc = rq.nvfp4.conventions.get("exact").replace(global_storage="encode")
        y = rq.nvfp4.fake_quantize(x, convention=enc)
        if not _same(y, rq.nvfp4.fake_quantize(x)):
            break
    r = rq.identify(x, y, fmt="nvfp4")
    assert r.cause == "global scale decode vs encode", r.causes


@pytest.mark.parametrize("ext", ["npz", "json", "hex"])
def test_cases_round_trip_and_check(tmp_path, ext, capsys):
    g = rq.golden.cases(fmt="mxfp4", convention="torchao.rceil", n_random=4)
    p = g.save(tmp_path / f"g.{ext}")
    h = rq.golden.load(p)
    assert h.manifest == json.loads(json.dumps(g.manifest))
    assert _same(h.inputs, g.inputs) and _same(h.outputs, g.outputs)
    assert main(["check", str(p)]) == 0
    other = rq.mx.fake_quantize(g.inputs, rq.float4_e2m1fn)  # ocp outputs as the candidate's
    q = g.with_outputs(other).save(tmp_path / f"c.{ext}")
    capsys.readouterr()
    assert main(["check", str(q), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["differing"] > 0 and "scale rule" in doc["causes"]
    assert main(["identify", str(q), "--json"]) == 0
    assert ["ocp", "floor"] in json.loads(capsys.readouterr().out)["matches"]


@pytest.mark.parametrize("fmt", ["nvfp4", "nf4"])
def test_cases_of_nvfp4_and_nf4(fmt):
    g = rq.golden.cases(fmt=fmt, convention="torchao", n_random=4)
    assert g.inputs.shape[1] == _block.BLOCK_FORMATS[fmt][2]
    r = rq.identify(g.inputs, g.outputs, fmt=fmt)
    assert ("torchao", "-") in r.matches


def test_bad_input():
    with pytest.raises(ValueError, match="fake_quantize"):
        rq.golden.cases(fmt="mxfp4", op="quantize")
    with pytest.raises(ValueError, match="ocp"):
        rq.golden.cases(fmt="mxfp4", convention="nope")
    with pytest.raises(ValueError, match="global scale"):
        rq.golden.cases(0.5, fmt="nf4")
    x = _inputs("mxfp4")
    with pytest.raises(ValueError, match="same shape"):
        rq.identify(x, x[:1], fmt="mxfp4")
    bad = dict(rq.golden.cases(fmt="nf4", n_random=2).manifest, shape=[3, 32])
    with pytest.raises(ValueError, match="shape"):
        _block.check_manifest(bad)
