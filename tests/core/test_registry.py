"""Every method's conventions are reachable the same way: names(), get(), a ValueError naming the
choices, and each row states a formula and the test that proves it."""

import dataclasses
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import refquant as rq

ROOT = Path(__file__).resolve().parents[2]


REGISTRIES = [(rq.apot.conventions, "paper"), (rq.lsq.conventions, "lsq"), (rq.pact.conventions, "paper"),
              (rq.mx.conventions, "ocp"), (rq.nf4.conventions, "exact"), (rq.nvfp4.conventions, "exact"),
              (rq.conventions, "exact"), (rq.float_conventions, "exact"), (rq.ops.conventions, "exact")]


@pytest.mark.parametrize("reg,default", REGISTRIES)
def test_each_method_has_a_registry(reg, default):
    assert default in reg.names() and reg.names()[0] == default
    for name in reg.names():
        row = reg.get(name)
        assert row.name == name and row.formula
        if row.evidence:  # a row that is named but not implemented has none
            paths = re.findall(r"tests/[\w/]+\.py", row.evidence)
            assert paths and all((ROOT / p).is_file() for p in paths), row.evidence
        assert reg.get(row) is row  # a row passes through
    with pytest.raises(ValueError, match=r"convention must be one of \w.* for \w.*; got 'nope'"):
        reg.get("nope")


def test_functions_refuse_unknown_conventions_by_name():
    import numpy as np

    x = np.float32([0.5])
    with pytest.raises(ValueError, match="convention must be one of"):
        rq.apot.quantize(x, 1.0, bits=4, k=2, convention="nope")
    with pytest.raises(ValueError, match="convention must be one of"):
        rq.pact.fake_quantize(x, 1.0, bits=4, convention="nope")
    with pytest.raises(ValueError, match="convention must be one of"):
        rq.lsq.fake_quantize_grad(x, 0.1, 0, x, qmin=-8, qmax=7, convention="nope")


@pytest.mark.parametrize("reg,default", REGISTRIES)
def test_register_and_unregister(reg, default):
    row = reg.get(default)
    mine = dataclasses.replace(row, name="test.mine")
    assert reg.register(mine) is mine and reg.get("test.mine") is mine
    with pytest.raises(ValueError, match="already registered"):
        reg.register(mine)
    with pytest.raises(TypeError, match="convention must be a"):
        reg.register("test.other")
    assert reg.unregister("test.mine") is mine and "test.mine" not in reg.names()


@pytest.mark.parametrize("old,new", [
    (lambda: rq.nf4.CONVENTIONS, lambda: {n: rq.nf4.conventions.get(n) for n in rq.nf4.conventions}),
    (lambda: rq.nvfp4.CONVENTIONS, lambda: {n: rq.nvfp4.conventions.get(n) for n in rq.nvfp4.conventions}),
    (lambda: rq.ops.CONVENTIONS, lambda: {n: rq.ops.conventions.get(n) for n in rq.ops.conventions}),
    (lambda: rq.mx.names(), lambda: rq.mx.conventions.names()),
    (lambda: rq.mx.get("ocp"), lambda: rq.mx.conventions.get("ocp")),
])
def test_old_spellings_warn_and_still_work(old, new):
    with pytest.warns(DeprecationWarning, match="deprecated; use refquant"):
        value = old()
    assert value == new()


def test_contract_names_do_not_warn():
    """The registry functions of the affine and float tables are module functions of the
    public contract: no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rq.conventions.get("exact").name == rq.conventions.names()[0] == "exact"
        assert rq.float_conventions.get("exact").name == rq.float_conventions.names()[0]
        assert rq.mx.conventions.get("ocp").name == "ocp"
        rq.nf4.quantize(np.float32([0.5, -1.0]), block=2)
        rq.mx.quantize(np.float32([0.5, -1.0]), rq.float4_e2m1fn, block=2)
