"""Conventions as strings inside op schemas: a registered name as itself, any other row (a
``replace``-d variant, a user's own) under a generated key that maps back to it in this process.
Equal rows share one key, so the table grows with the distinct rows used, not with the calls."""

from __future__ import annotations

_ROWS: dict[str, object] = {}  # generated key -> row
_KEYS: dict[object, str] = {}  # row -> generated key


def convention_key(convention, registry, kind: str) -> str:
    """``convention`` (a name or a row of ``registry``, e.g. ``rq.conventions`` or
    ``rq.mx.conventions``) as a string for an op schema; a ValueError from ``registry.get``
    lists the known names.

    >>> import refquant as rq
    >>> from refquant_torch._conventions import convention_key, convention_of
    >>> convention_key("onnx", rq.conventions, "affine")
    'onnx'
    >>> mine = rq.conventions.get("onnx").replace(rounding="half_away")
    >>> key = convention_key(mine, rq.conventions, "affine")
    >>> key.startswith("<custom affine onnx #"), convention_of(key) == mine
    (True, True)
    >>> convention_key(mine.replace(), rq.conventions, "affine") == key
    True
    """
    row = registry.get(convention)
    if isinstance(convention, str):
        return convention
    if row.name in registry.names() and registry.get(row.name) == row:
        return row.name
    key = _KEYS.get(row)
    if key is None:
        key = f"<custom {kind} {row.name} #{len(_ROWS)}>"
        _ROWS[key], _KEYS[row] = row, key
    return key


def convention_of(key: str):
    """The row a generated key stands for, else the key itself (a registered name)."""
    return _ROWS.get(key, key)
