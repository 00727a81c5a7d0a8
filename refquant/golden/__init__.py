"""Golden vectors and exhaustive sweeps: ``cases``, ``load``, ``sweep``, and ``identify``.

``cases`` builds edge-heavy inputs with their reference outputs and saves them as .npz, JSON or
hex text ($readmemh); ``load`` reads any of those back exactly and never unpickles; ``sweep`` runs a
candidate kernel on every bit pattern of a float format; ``identify`` names the convention a
kernel's output follows. Submodules load on first use.
"""

from __future__ import annotations

from ..lazy import module_attributes as _module_attributes
from .identify import identify

__all__ = ["cases", "load", "sweep", "identify", "GoldenCases", "SweepResult", "CandidateError"]

_LAZY = {
    "cases": ("refquant.golden._cases", "cases"),
    "GoldenCases": ("refquant.golden._cases", "GoldenCases"),
    "load": ("refquant.golden._files", "load"),
    "sweep": ("refquant.golden._sweep", "sweep"),
    "SweepResult": ("refquant.golden._sweep", "SweepResult"),
    "CandidateError": ("refquant.golden._candidates", "CandidateError"),
}

__getattr__, __dir__ = _module_attributes(globals(), lazy=_LAZY)
