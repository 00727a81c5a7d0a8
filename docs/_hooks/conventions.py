"""mkdocs hook: one page per registered convention, generated from ``refquant.conventions``.

The pages are built from the registry's rows at build time, so the site cannot drift from the
code: a new row gets a page, a changed knob changes its page.
"""

from __future__ import annotations

import dataclasses

from mkdocs.structure.files import File

SECTION = "Conventions"
INDEX = "conventions/index.md"
_SKIP = {"name", "formula", "backend", "evidence", "missing", "variants"}


def _rows():
    import refquant as rq

    return [rq.conventions.get(name) for name in rq.conventions.names()]


def _slug(name: str) -> str:
    return name.replace(".", "-")


def _page(row) -> str:
    knobs = [f for f in dataclasses.fields(row) if f.name not in _SKIP]
    lines = [
        f"# `{row.name}`",
        "",
        f"**Backend:** {row.backend}",
        "",
        f"**Evidence:** {row.evidence}",
        "",
        "## Formula",
        "",
        row.formula,
        "",
    ]
    missing = getattr(row, "missing", None)
    if missing:
        lines += ["!!! warning \"Not runnable\"", f"    {missing}", ""]
    lines += ["## Knobs", "", "| knob | value |", "|---|---|"]
    lines += [f"| `{f.name}` | `{getattr(row, f.name)!r}` |" for f in knobs]
    variants = getattr(row, "variants", ())
    if variants:
        lines += ["", "## Variants", "", "| condition | overrides |", "|---|---|"]
        lines += [f"| `{cond}` | `{dict(over)!r}` |" for cond, over in variants]
    lines += [
        "",
        "## Use it",
        "",
        "```python",
        "import refquant as rq",
        f'rq.fake_quantize(x, scale, zero_point, qmin=-128, qmax=127, convention="{row.name}")',
        "```",
        "",
        "The knobs are documented on [the conventions page](index.md) and in",
        "[`refquant.conventions`](../api/conventions.md).",
        "",
    ]
    return "\n".join(lines)


def _index(rows) -> str:
    lines = [
        "# Conventions",
        "",
        "A convention is a row of knobs (`refquant.conventions.TABLE`) that pins down every",
        "arithmetic choice a backend makes: how the quotient `x / s` is formed, in which dtype, where",
        "the zero point enters, how ties round, where NaN goes. `convention=\"exact\"` is the",
        "real-number definition; every other row reproduces one backend bit for bit, and names the",
        "test that proves it. These pages are generated from the registry at build time.",
        "",
        "| convention | backend | evidence |",
        "|---|---|---|",
    ]
    lines += [f"| [`{r.name}`]({_slug(r.name)}.md) | {r.backend} | {r.evidence} |" for r in rows]
    lines += ["", "## The knobs", "", "The `refquant.conventions` module docstring defines them:", ""]
    lines += ["::: refquant.conventions", "    options:", "      members: false",
              "      show_root_heading: false", ""]
    return "\n".join(lines)


def on_config(config):
    pages = [{"Overview": INDEX}]
    pages += [{f"{r.name}": f"conventions/{_slug(r.name)}.md"} for r in _rows()]
    nav = config["nav"]
    for i, entry in enumerate(nav):
        if isinstance(entry, dict) and entry.get(SECTION) == INDEX:
            nav[i] = {SECTION: pages}
    return config


def on_files(files, config):
    rows = _rows()
    files.append(File.generated(config, INDEX, content=_index(rows)))
    for r in rows:
        files.append(File.generated(config, f"conventions/{_slug(r.name)}.md", content=_page(r)))
    return files
