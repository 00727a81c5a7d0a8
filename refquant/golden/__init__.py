"""Golden vectors and exhaustive sweeps: ``cases``, ``load``, ``sweep``, and ``identify``.

``cases`` builds edge-heavy inputs with their reference outputs and saves them as .npz, JSON or
hex text ($readmemh); ``load`` reads any of those back exactly and never unpickles; ``sweep`` runs a
candidate kernel on every bit pattern of a float format; ``identify`` names the convention a
kernel's output follows. Submodules load on first use.
"""

from __future__ import annotations

import importlib

from .identify import identify

__all__ = ["cases", "load", "sweep", "identify", "GoldenCases", "SweepResult", "CandidateError"]

_LAZY = {
    "cases": "refquant.golden._cases",
    "GoldenCases": "refquant.golden._cases",
    "load": "refquant.golden._files",
    "sweep": "refquant.golden._sweep",
    "SweepResult": "refquant.golden._sweep",
    "CandidateError": "refquant.golden._candidates",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'refquant.golden' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
