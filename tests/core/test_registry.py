"""Every method's conventions are reachable the same way: names(), get(), a ValueError naming the
choices, and each row states a formula and the test that proves it."""

from pathlib import Path

import pytest

import refquant as rq

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("method,default", [(rq.apot, "paper"), (rq.lsq, "lsq"), (rq.pact, "paper")])
def test_each_method_has_a_registry(method, default):
    reg = method.conventions
    assert default in reg and reg.names()[0] == default
    for name in reg.names():
        row = reg.get(name)
        assert row.name == name and row.formula
        assert (ROOT / row.evidence.split(" ")[0]).is_file(), row.evidence
    with pytest.raises(ValueError, match=r"convention must be one of \[.*\] for"):
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
