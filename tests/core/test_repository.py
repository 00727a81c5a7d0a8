"""Rules of the source tree that keep the numerics honest: one module holds the Numba flags, and
nothing compiles with fast-math (it would let LLVM reassociate and contract ``a*b + c``)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [ROOT / "refquant", ROOT / "refquant_torch"]
JIT_MODULE = ROOT / "refquant" / "_kernels" / "_jit.py"
NUMBA_FLAGS = re.compile(r"\b(njit|numba\.jit|numba\.vectorize|numba\.guvectorize|numba\.cfunc|"
                         r"from numba import[^\n]*\b(jit|njit|vectorize|guvectorize|cfunc)\b)")
FASTMATH = re.compile(r"fastmath\s*[=:]\s*(True|\{|[a-z])|['\"]fastmath['\"]\s*:\s*(True|\{)")


def _sources():
    for pkg in PACKAGES:
        yield from sorted(pkg.rglob("*.py"))


def test_only_the_jit_module_sets_numba_flags():
    offenders = [str(p.relative_to(ROOT)) for p in _sources()
                 if p != JIT_MODULE and NUMBA_FLAGS.search(p.read_text())]
    assert offenders == [], f"compile through refquant._kernels._jit, not directly: {offenders}"


def test_nothing_uses_fastmath():
    offenders = [str(p.relative_to(ROOT)) for p in _sources() if FASTMATH.search(p.read_text())]
    assert offenders == []


def test_the_jit_flags_are_exact():
    from refquant._kernels._jit import JIT_FLAGS

    assert JIT_FLAGS.get("fastmath", False) is False
    assert JIT_FLAGS.get("cache") is True


def test_no_text_points_outside_the_repository():
    pattern = re.compile(r"seeds/[0-9]|research/[a-z-]+\.md|DESIGN\.md|shared/research")
    roots = PACKAGES + [ROOT / "docs", ROOT / "notebooks", ROOT / "tests", ROOT / "benchmarks"]
    hits = []
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.suffix in (".py", ".md", ".ipynb") and p != Path(__file__).resolve():
                hits += [f"{p.relative_to(ROOT)}:{i + 1}"
                         for i, line in enumerate(p.read_text().splitlines()) if pattern.search(line)]
    assert hits == []


def test_the_adapter_uses_only_public_core_names():
    """refquant_torch reaches the core through its public modules (``refquant.interop`` holds what
    an adapter needs beyond the API), never a private ``refquant._*`` module."""
    private = re.compile(r"\brefquant\._[a-z]")
    offenders = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "refquant_torch").rglob("*.py"))
                 if private.search(p.read_text())]
    assert offenders == []
