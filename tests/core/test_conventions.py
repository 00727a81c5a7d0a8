"""Conventions are fixed data: the table, its knob codes, and the round trip through plain values."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import refquant as rq
from refquant import _codes

FIELDS = [f.name for f in dataclasses.fields(rq.Convention)]


def knobs_of(conv):
    return {name: getattr(conv, name) for name in FIELDS}


@pytest.mark.parametrize("name", rq.conventions.names())
def test_every_row_rebuilds_from_its_fields_and_from_json(name):
    conv = rq.conventions.get(name)
    assert rq.Convention(**knobs_of(conv)) == conv
    through_json = json.loads(json.dumps(knobs_of(conv)))  # tuples become lists
    rebuilt = rq.Convention(**through_json)
    assert rebuilt == conv and knobs_of(rebuilt) == knobs_of(conv)
    x = np.float32([-1.37, 0.05, 0.15, 2.5, 300.0])
    a = rq.fake_quantize(x, 0.1, 0, qmin=-128, qmax=127, convention=conv)
    b = rq.fake_quantize(x, 0.1, 0, qmin=-128, qmax=127, convention=rebuilt)
    assert (a.view(np.uint32) == b.view(np.uint32)).all()


def test_variant_round_trip_keeps_the_changed_knob():
    conv = rq.conventions.get("torch.quantize").replace(fma=False)
    rebuilt = rq.Convention(**json.loads(json.dumps(knobs_of(conv))))
    assert rebuilt.fma is False and rebuilt == conv
    assert rq.conventions.get(rebuilt.name).replace(**{"fma": rebuilt.fma}) == conv


def test_knob_values_are_the_code_table():
    for knob, enum in _codes.KNOBS.items():
        for value in _codes.names(enum):
            conv = rq.conventions.get("exact").replace(**{knob: value}) if knob not in (
                "quotient", "compute") else None
            if conv is not None:
                assert getattr(conv, knob) == value
            assert _codes.code(knob, value) == int(enum[value.upper()])
    assert rq.ROUNDING_MODES == _codes.names(_codes.Rounding)
    _codes.check()


def test_bad_knobs_are_named():
    with pytest.raises(ValueError, match="quotient must be one of"):
        rq.conventions.get("exact").replace(quotient="fused")
    with pytest.raises(TypeError, match="fma must be True or False; got 'yes'"):
        rq.conventions.get("exact").replace(fma="yes")
    with pytest.raises(TypeError, match="tiny_amax must be a float"):
        rq.conventions.get("exact").replace(tiny_amax="0")


ROWS_SCRIPT = """
import dataclasses, json, refquant as rq
print(json.dumps({n: {f.name: getattr(rq.conventions.get(n), f.name)
                     for f in dataclasses.fields(rq.Convention)} for n in rq.conventions.names()}))
"""


def test_rows_do_not_depend_on_the_environment():
    """The table imported with torch's DEFAULT kernels selected is the table imported without."""
    outs = []
    for capability in (None, "default"):
        env = dict(os.environ)
        env.pop("ATEN_CPU_CAPABILITY", None)
        if capability:
            env["ATEN_CPU_CAPABILITY"] = capability
        outs.append(subprocess.run([sys.executable, "-c", ROWS_SCRIPT], env=env, capture_output=True,
                                   text=True, check=True).stdout)
    assert outs[0] == outs[1]
    rows = json.loads(outs[0])
    assert rows["torch.fake_quantize"]["fma"] is True and rows["torch.quantize"]["fma"] is True


def test_detect_passes_rows_without_machine_knobs_through():
    for name in ("exact", "onnx", "torchao", "tflite"):
        assert rq.conventions.detect(name) is rq.conventions.get(name)
    with pytest.raises(ValueError, match="convention must be one of"):
        rq.conventions.detect("no.such")


def test_histogram_arithmetic_arguments():
    x = np.linspace(-1, 3, 1001, dtype=np.float32)
    a = rq.observers.Histogram(fmt=rq.uint8).update(x)
    b = rq.observers.Histogram(fmt=rq.uint8, sum_lanes=8, linspace_fma=True).update(x)
    assert a.qparams() == b.qparams()
    state = rq.observers.Histogram(fmt=rq.uint8, sum_lanes=16, linspace_fma=False).update(x)
    again = rq.observers.Histogram.from_state_dict(state.state_dict())
    assert (again.sum_lanes, again.linspace_fma) == (16, False)
    with pytest.raises(ValueError, match="sum_lanes must be a power of two"):
        rq.observers.Histogram(sum_lanes=3)
    with pytest.raises(TypeError, match="linspace_fma must be True or False"):
        rq.observers.Histogram(linspace_fma=1)
