"""Repository-wide collection rules: the torch adapter's doctests need torch, and a core doctest
example marked ``# doctest: +NEEDS_TORCH`` (or ``+NEEDS_ML_DTYPES``) skips, with that reason,
where the package is not installed (a bare ``pip install -e .``)."""

import doctest
import importlib.util

import pytest

collect_ignore_glob = [] if importlib.util.find_spec("torch") else ["refquant_torch/*"]

_NEEDS = {doctest.register_optionflag(f"NEEDS_{name.upper()}"): name for name in ("torch", "ml_dtypes")}


def pytest_collection_modifyitems(config, items):
    missing = {flag: name for flag, name in _NEEDS.items() if importlib.util.find_spec(name) is None}
    if not missing:
        return
    for item in items:
        examples = getattr(getattr(item, "dtest", None), "examples", ())
        for flag, name in missing.items():
            if any(ex.options.get(flag) for ex in examples):
                item.add_marker(pytest.mark.skip(reason=f"the example needs {name}"))
                break
