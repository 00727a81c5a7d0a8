"""The registry of named conventions every method shares: ``rq.conventions`` (affine),
``rq.float_conventions`` (element casts), ``rq.mx.conventions``, ``rq.nf4.conventions``,
``rq.nvfp4.conventions``, ``rq.apot.conventions``, ``rq.lsq.conventions`` and
``rq.pact.conventions`` and ``rq.ops.conventions`` (requantization) are each a :class:`Registry`:
``names()``, ``get(name)``, ``register(row)``, each row with the formula it computes and the test that
proves it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

__all__ = ["MethodConvention", "Registry", "Row"]


@dataclass(frozen=True)
class Row:
    """The fields every row of a knob table starts with: ``name``, the ``formula`` it computes,
    the ``backend`` it reproduces and the ``evidence`` (the test that proves it). A subclass adds
    its knobs as fields and lists the allowed values of the string ones in ``_choices``.

    >>> import refquant as rq
    >>> row = rq.float_conventions.get("exact").replace(name="mine", saturate=False)
    >>> row.name, row.saturate, row.evidence == rq.float_conventions.get("exact").evidence
    ('mine', False, True)
    """

    name: str
    formula: str
    backend: str = ""
    evidence: str = ""

    _choices: ClassVar[dict] = {}

    def __post_init__(self):
        for knob, allowed in self._choices.items():
            value = getattr(self, knob)
            if value not in allowed:
                raise ValueError(f"{knob} must be one of {allowed}; got {value!r}")

    def replace(self, **knobs):
        """A copy with some knobs changed."""
        return replace(self, **knobs)


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
    """The conventions of one method, in the order they were registered. ``get`` passes a row of
    the registry's type through unchanged, so a modified row (``row.replace(...)``) is usable
    wherever a name is.

    >>> import refquant as rq
    >>> rq.lsq.conventions.names()
    ['lsq', 'torch.learnable']
    >>> "torch.experimental" in rq.apot.conventions
    True
    >>> rq.mx.conventions.get("torchao.rceil").scaling
    'float32_reciprocal'
    """

    def __init__(self, method: str, rows=(), *, row_type=MethodConvention, check=None):
        self.method = method
        self.row_type = row_type
        self._check_row = check
        self._rows: dict = {}
        for row in rows:
            self.register(row)

    def names(self) -> list[str]:
        """The convention names, in registration order.

        >>> import refquant as rq
        >>> rq.conventions.names()[:3]
        ['exact', 'torch.fake_quantize', 'torch.quantize']
        """
        return list(self._rows)

    def get(self, name):
        """The row named ``name`` (a row of this registry's type passes through); a ValueError
        lists the known names otherwise.

        >>> import refquant as rq
        >>> c = rq.conventions.get("onnx")
        >>> c.quotient, c.rounding, c.nan
        ('divide', 'half_even', 'qmin')
        >>> rq.conventions.get(c) is c
        True
        """
        if isinstance(name, self.row_type):
            return name
        return self._rows[self.check(name)]

    def check(self, name) -> str:
        """``name`` when it names a convention of this method, else a ValueError naming the
        argument and the choices.

        >>> import refquant as rq
        >>> rq.pact.conventions.check("paper")
        'paper'
        """
        if not isinstance(name, str) or name not in self._rows:
            raise ValueError(f"convention must be one of {', '.join(self._rows)} for {self.method}; "
                             f"got {name!r}")
        return name

    def register(self, row):
        """Add a row (its name must be new; a registry built with ``check`` checks it first) and
        return it.

        >>> import refquant as rq
        >>> mine = rq.conventions.get("torch.fake_quantize").replace(name="my.kernel", fma=False)
        >>> rq.conventions.register(mine).name in rq.conventions.names()
        True
        >>> rq.conventions.unregister("my.kernel") is mine    # keep the doctest side-effect free
        True
        """
        if not isinstance(row, self.row_type):
            raise TypeError(f"convention must be a {self.row_type.__name__}; got {row!r}")
        if row.name in self._rows:
            raise ValueError(f"a {self.method} convention named {row.name!r} is already registered")
        if self._check_row is not None:
            self._check_row(row)
        self._rows[row.name] = row
        return row

    def unregister(self, name):
        """Remove the row called ``name`` and return it (a ValueError for an unknown name).

        >>> import refquant as rq
        >>> row = rq.float_conventions.register(rq.float_conventions.get("exact").replace(name="x"))
        >>> rq.float_conventions.unregister("x") is row
        True
        """
        return self._rows.pop(self.check(name))

    def __contains__(self, name) -> bool:
        return name in self._rows

    def __iter__(self):
        return iter(list(self._rows))

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"Registry({self.method!r}, {self.names()})"


def table_getattr(namespace: dict, registry: Registry, *, lazy=None):
    """A module ``__getattr__`` keeping the old ``CONVENTIONS`` dict (name -> row) of a method for
    one release, with a DeprecationWarning pointing at ``conventions`` (``lazy``: as in
    :func:`refquant.lazy.module_attributes`)."""
    from .lazy import module_attributes

    rows = ("conventions", lambda: {name: registry.get(name) for name in registry})
    return module_attributes(namespace, lazy=lazy, deprecated={"CONVENTIONS": rows})[0]
