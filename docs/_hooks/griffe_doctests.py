"""Griffe extension: render refquant's docstrings as Markdown.

The docstrings are written for doctest and Sphinx: ``>>>`` examples inline in the text and
``:func:`name``` roles. This fences every doctest block as ``pycon`` (so its output is code, not
Markdown) and turns roles into inline code.
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:func|mod|class|data|attr|meth|obj|exc):`~?([^`]+)`")


def fence_doctests(text: str) -> str:
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if not stripped.startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(stripped)]
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            value = _ROLE.sub(r"``\1``", obj.docstring.value)
            obj.docstring.value = fence_doctests(value)
