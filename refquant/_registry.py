"""Named conventions of a method (APoT, LSQ, PACT), reachable as ``rq.<method>.conventions`` the way
the affine table is reachable as ``rq.conventions``: ``names()``, ``get(name)``, each row with the
formula it computes and the test that proves it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MethodConvention", "Registry"]


@dataclass(frozen=True)
class MethodConvention:
    """One named arithmetic of a method: its ``formula``, the ``backend`` it reproduces (empty for a
    paper's definition) and the ``evidence`` (the test that proves it bit for bit).

    >>> import refquant as rq
    >>> rq.apot.conventions.get("paper").backend
    ''
    """

    name: str
    formula: str
    evidence: str
    backend: str = ""


class Registry:
    """The conventions of one method, in the order they were declared.

    >>> import refquant as rq
    >>> rq.lsq.conventions.names()
    ['lsq', 'torch.learnable']
    >>> "torch.experimental" in rq.apot.conventions
    True
    """

    def __init__(self, method: str, rows):
        self.method = method
        self._rows = {r.name: r for r in rows}

    def names(self) -> list[str]:
        """The convention names."""
        return list(self._rows)

    def get(self, name) -> MethodConvention:
        """The row named ``name``; a ValueError lists the known names otherwise."""
        return self._rows[self.check(name)]

    def check(self, name) -> str:
        """``name`` when it names a convention of this method, else a ValueError naming the
        argument and the choices."""
        if not isinstance(name, str) or name not in self._rows:
            raise ValueError(f"convention must be one of {self.names()} for {self.method}; "
                             f"got {name!r}")
        return name

    def __contains__(self, name) -> bool:
        return name in self._rows

    def __repr__(self) -> str:
        return f"Registry({self.method!r}, {self.names()})"
