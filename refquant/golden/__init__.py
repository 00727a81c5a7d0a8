"""Golden vectors and exhaustive sweeps: ``cases``, ``load``, ``sweep``, and ``identify``.

``cases`` builds edge-heavy inputs with their reference outputs and saves them as .npz, JSON or
hex text ($readmemh); ``load`` reads any of those back exactly and never unpickles; ``sweep`` runs a
candidate kernel on every bit pattern of a float format; ``identify`` names the convention a
kernel's output follows. Submodules load on first use.
"""

from __future__ import annotations

from ..lazy import lazy_table as _lazy_table
from ..lazy import module_attributes as _module_attributes
from .identify import identify

__all__ = ["cases", "load", "sweep", "identify", "GoldenCases", "SweepResult", "CandidateError"]

_LAZY = _lazy_table("refquant.golden", {"_cases": ("cases", "GoldenCases"), "_files": ("load",),
                                        "_sweep": ("sweep", "SweepResult"),
                                        "_candidates": ("CandidateError",)})

__getattr__, __dir__ = _module_attributes(globals(), lazy=_LAZY)
