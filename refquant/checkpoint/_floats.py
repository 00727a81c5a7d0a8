"""Float and block formats (fp8, NVFP4, MX, NF4): decode and re-quantize through refquant's
low-precision float formats. Each kind needs its core pieces; a build without them raises
NotImplementedError naming what is missing, and the report says so for that tensor only."""

from __future__ import annotations

__all__ = ["run_float", "NEEDS"]

NEEDS = {
    "fp8": ("encode", "decode", "float8_e4m3fn"),
    "nvfp4": ("nvfp4", "decode", "float4_e2m1fn"),
    "mx": ("mx", "decode", "float8_e8m0fnu"),
    "nf4": ("nf4",),
}


def _missing(kind):
    import refquant as rq

    need = NEEDS.get(kind)
    if need is None:
        return f"no checker for kind {kind!r}"
    lacking = [n for n in need if not hasattr(rq, n)]
    return ", ".join(f"rq.{n}" for n in lacking) if lacking else None


def run_float(task, out):
    """Decode and re-quantize rows of a float/block-format weight (see the module docstring)."""
    q = task.q
    lacking = _missing(q.kind)
    if lacking:
        raise NotImplementedError(f"{q.kind} weights need {lacking}, which this build of refquant lacks")
    raise NotImplementedError(f"{q.kind} weights: checker not wired yet")
