"""``refquant report``: every installed backend against its convention, on edge-heavy data.

Each check runs a backend's op on :func:`edge_inputs` for a few qparam sets and counts the
elements whose bits differ from refquant under the matching convention. Backends import lazily;
a missing one is reported as skipped. With NumPy alone, refquant's ``exact`` convention is
checked against a ``fractions.Fraction`` oracle.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import warnings
from dataclasses import fields
from fractions import Fraction

import numpy as np

from ._cases import edge_inputs
from .identify import _same

CONFIGS = [(0.0123, 3, 0, 255), (0.1, 0, -128, 127), (1 / 3, 7, 0, 15), (0.00214854861, 1, 0, 255)]


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _row(backend, op, convention, n_diff, n, note=""):
    return {"backend": backend, "op": op, "convention": _label(convention),
            "mismatches": int(n_diff), "elements": int(n), "note": note}


def _label(convention) -> str:
    """A convention's name, with the knobs where it differs from the registered row of that name
    (``torch.fake_quantize[fma=False]``)."""
    import refquant as rq

    if isinstance(convention, str):
        return convention
    row = rq.conventions.get(convention.name) if convention.name in rq.conventions.names() else None
    if row is None or row == convention:
        return convention.name
    changed = [f"{f.name}={getattr(convention, f.name)}" for f in fields(convention)
               if f.name not in _TEXT and getattr(convention, f.name) != getattr(row, f.name)]
    return f"{convention.name}[{', '.join(changed)}]"


_TEXT = ("name", "formula", "backend", "evidence")  # a Convention's fields that are not knobs


def _detected_rows():
    """One row per machine-dependent variant of torch's arithmetic, as measured here."""
    import refquant as rq
    from refquant import _platform

    rows = []
    for name, what in (("torch.fake_quantize", "float-zero-point fake quant kernels"),
                       ("torch.quantize", "8-bit quantize_per_tensor (FBGEMM)")):
        conv = rq.conventions.detect(name)
        rows.append(_row("torch", f"detect: {what}", conv, 0, 0, f"fma={conv.fma} (measured)"))
    rows.append(_row("torch", "detect: torch.sum float32 order", "-", 0, 0,
                     f"sum_lanes={_platform.torch_sum_lanes()} (measured)"))
    rows.append(_row("torch", "detect: torch.linspace float32", "-", 0, 0,
                     f"linspace_fma={_platform.torch_linspace_uses_fma()} (measured)"))
    return rows


def _compare(backend, label, convention, run_backend, *, fake, dtype=np.float32, axis=None,
             configs=CONFIGS, exclude=None, why=""):
    """Sum of differing elements over ``configs`` between ``run_backend(x, s, z, lo, hi)`` and
    refquant under ``convention``; when some differ, the note names the nearest convention."""
    import refquant as rq

    op = "fake_quantize" if fake else "quantize"
    fn = rq.fake_quantize if fake else rq.quantize
    total = n = excluded = 0
    note = ""
    for s, z, lo, hi in configs:
        x, scale, zp = _inputs(s, z, lo, hi, dtype, axis)
        if exclude is not None:
            drop = exclude(x, scale)
            excluded += int(drop.sum())
            x = x[~drop]
        y = np.asarray(run_backend(x, scale, zp, lo, hi))
        ours = fn(x, scale, zp, qmin=lo, qmax=hi, axis=axis, convention=convention)
        diff = int(x.size - _same(ours, y).sum())
        total += diff
        n += x.size
        if diff and not note:
            found = rq.identify(x, y.astype(ours.dtype), scale, zp, qmin=lo, qmax=hi, op=op,
                                axis=axis, reference=convention)
            nearest = found.matches[0] if found.matches else found.nearest
            note = f"nearest {nearest[0]} ({nearest[1]}); causes {found.causes}"
    if excluded:
        note = f"{excluded} inputs left out: {why}" + (f"; {note}" if note else "")
    return _row(backend, label, convention, total, n, note)


def _inputs(s, z, lo, hi, dtype, axis):
    if axis is None:
        x = edge_inputs(s, z, qmin=lo, qmax=hi, dtype=dtype, n_random=2000)
        scale, zp = s, z
    else:
        scale = np.float32([s, s * 1.37, s * 0.61])
        zp = np.int32([z, (lo + hi) // 2, lo])
        cols = [edge_inputs(si, zi, qmin=lo, qmax=hi, dtype=dtype, n_random=500, seed=i)
                for i, (si, zi) in enumerate(zip(scale, zp))]
        n = min(map(len, cols))
        x = np.stack([c[:n] for c in cols], axis=1)
    return x, scale, zp


# --- numpy only: refquant against a Fraction oracle ------------------------------------------

def _oracle_fake(x: float, s: float, z: int, lo: int, hi: int, dtype) -> float:
    if math.isnan(x):
        return math.nan
    if math.isinf(x):
        q = hi if x > 0 else lo
    else:
        q = min(max(_rne(Fraction(x) / Fraction(s)) + z, lo), hi)
    return _round_fraction((q - z) * Fraction(s), _PRECISION[np.dtype(dtype).name])


_PRECISION = {"float32": (24, -126), "float16": (11, -14)}  # significand bits, min normal exponent


def _rne(r: Fraction) -> int:
    f = math.floor(r)
    d = r - f
    return f + 1 if d > Fraction(1, 2) or (d == Fraction(1, 2) and f % 2) else f


def _round_fraction(v: Fraction, fmt) -> float:
    """v rounded half to even to a format with ``p`` significand bits (overflow not needed here:
    the codes are small)."""
    p, emin = fmt
    if v == 0:
        return 0.0
    a = abs(v)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    ulp = Fraction(2) ** (max(e, emin) - (p - 1))
    r = float(_rne(a / ulp) * ulp)
    return r if v > 0 else -r


def _self_check():
    import refquant as rq

    rows = []
    for dtype in (np.float32, np.float16):
        total = n = 0
        for s, z, lo, hi in CONFIGS:
            s = float(np.float32(s))
            x = edge_inputs(s, z, qmin=lo, qmax=hi, dtype=dtype, n_random=500)
            ours = rq.fake_quantize(x, s, z, qmin=lo, qmax=hi)
            ref = np.array([_oracle_fake(float(v), s, z, lo, hi, dtype) for v in x], dtype=dtype)
            total += int(x.size - _same(ours, ref).sum())
            n += x.size
        rows.append(_row("refquant", f"fake_quantize {np.dtype(dtype).name}", "exact", total, n,
                         "against a fractions.Fraction oracle"))
    return rows


# --- backends ---------------------------------------------------------------------------------

def _torch_checks():
    import torch

    def t(x):
        return torch.from_numpy(np.ascontiguousarray(x))

    def fq_tensor(x, s, z, lo, hi):
        return torch.fake_quantize_per_tensor_affine(t(x), s, z, lo, hi).numpy()

    def fq_channel(x, s, z, lo, hi):
        return torch.fake_quantize_per_channel_affine(t(x), t(s), t(z), 1, lo, hi).numpy()

    def q_tensor(x, s, z, lo, hi):
        dt = torch.quint8 if lo == 0 and hi == 255 else torch.qint8
        return torch.quantize_per_tensor(t(x), s, z, dt).int_repr().numpy()

    def decomposed(x, s, z, lo, hi):
        from torch.ao.quantization.fx import _decomposed  # noqa: F401  (registers the ops)

        dt = torch.uint8 if lo >= 0 else torch.int8
        return torch.ops.quantized_decomposed.quantize_per_tensor(t(x), s, z, lo, hi, dt).numpy()

    import refquant as rq

    eight_bit = [c for c in CONFIGS if (c[2], c[3]) in ((0, 255), (-128, 127))]
    fq, q = rq.conventions.detect("torch.fake_quantize"), rq.conventions.detect("torch.quantize")
    return [
        *_detected_rows(),
        _compare("torch", "fake_quantize_per_tensor_affine", fq, fq_tensor, fake=True),
        _compare("torch", "fake_quantize_per_channel_affine", fq, fq_channel, fake=True, axis=1),
        _compare("torch", "quantize_per_tensor", q, q_tensor, fake=False, configs=eight_bit),
        _compare("torch", "quantized_decomposed.quantize_per_tensor", "torch.decomposed",
                 decomposed, fake=False),
    ]


def _torchao_checks():
    import torch
    from torchao.quantization.quant_primitives import _fake_quantize_affine, quantize_affine

    def run(fn):
        def call(x, s, z, lo, hi):
            ts = torch.from_numpy(np.asarray(s, np.float32).reshape(1))
            tz = torch.tensor([z], dtype=torch.int32)
            tdt = torch.uint8 if lo >= 0 else torch.int8
            return fn(torch.from_numpy(x), x.shape, ts, tz, tdt, lo, hi).numpy()
        return call

    configs = [(np.float32(s), z, lo, hi) for s, z, lo, hi in CONFIGS]
    return [
        _compare("torchao", "quantize_affine", "torchao", run(quantize_affine), fake=False,
                 configs=configs),
        _compare("torchao", "_fake_quantize_affine", "torchao", run(_fake_quantize_affine),
                 fake=True, configs=configs),
    ]


def _onnx_checks():
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    def qdq(x, s, z, lo, hi, fake):
        ztype, zdt = (TensorProto.UINT8, np.uint8) if lo == 0 and hi == 255 else (TensorProto.INT8, np.int8)
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])]
        outs = [helper.make_tensor_value_info("q", ztype, None)]
        if fake:
            nodes.append(helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]))
            outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
        graph = helper.make_graph(
            nodes, "qdq",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
             helper.make_tensor_value_info("s", TensorProto.FLOAT, None),
             helper.make_tensor_value_info("z", ztype, None)], outs)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        feeds = {"x": x, "s": np.array(s, np.float32), "z": np.array(z, zdt)}
        return ReferenceEvaluator(model).run(None, feeds)[0]

    eight_bit = [(float(np.float32(s)), z, lo, hi) for s, z, lo, hi in CONFIGS
                 if (lo, hi) in ((0, 255), (-128, 127))]
    why = ("+inf and x with x / s beyond float32 (onnx.reference casts the infinite quotient to "
           "int32, giving INT32_MIN, then clamps it to qmin; the ONNX spec saturates)")

    def overflow(x, s):
        with np.errstate(over="ignore"):
            return ~np.isfinite(x / np.float32(s)) & ~np.isnan(x)

    return [
        _compare("onnx.reference", "QuantizeLinear", "onnx", lambda *a: qdq(*a, fake=False),
                 fake=False, configs=eight_bit, exclude=overflow, why=why),
        _compare("onnx.reference", "QuantizeLinear+DequantizeLinear", "onnx",
                 lambda *a: qdq(*a, fake=True), fake=True, configs=eight_bit,
                 exclude=overflow, why=why),
    ]


def _ml_dtypes_checks():
    """ml_dtypes' float32 -> bfloat16 cast against round-half-even done on the bit patterns."""
    import ml_dtypes

    rng = np.random.default_rng(0)
    bits = np.concatenate([rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32),
                           (np.arange(-4096, 4096, dtype=np.int64) % 2**32).astype(np.uint32) << 15 | 0x8000])
    x = bits.view(np.float32)
    got = x.astype(ml_dtypes.bfloat16).view(np.uint16)
    b = bits.astype(np.uint64)
    rne = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    got_nan = np.isnan(got.view(ml_dtypes.bfloat16).astype(np.float32))
    diff = int(((got != rne) & ~nan).sum() + (nan & ~got_nan).sum())
    return [_row("ml_dtypes", "cast float32->bfloat16", "half_even", diff, x.size,
                 "against integer round-half-even on the bits")]


BACKENDS = [
    ("torch", ("torch",), _torch_checks),
    ("torchao", ("torch", "torchao"), _torchao_checks),
    ("onnx", ("onnx",), _onnx_checks),
    ("ml_dtypes", ("ml_dtypes",), _ml_dtypes_checks),
]


def report(only=None, progress=None) -> list[dict]:
    """Rows of the ``refquant report`` table (``only``: backend names to run; ``progress``: called
    as ``progress(i, n, name)`` before each backend's checks)."""
    names = [n for n in ["refquant", *(b[0] for b in BACKENDS)] if only is None or n in only]

    def step(name):
        if progress is not None:
            progress(names.index(name) + 1, len(names), name)

    rows = []
    if "refquant" in names:
        step("refquant")
        rows += _self_check()
    for name, modules, check in BACKENDS:
        if name not in names:
            continue
        step(name)
        missing = [m for m in modules if not _has(m)]
        if missing:
            rows.append(_row(name, "-", "-", 0, 0, f"skipped: {', '.join(missing)} not installed"))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)  # backends log import-time noise (torchao's kernels)
            try:
                rows.extend(check())
            except Exception as exc:  # a backend that breaks must not hide the others
                rows.append(_row(name, "-", "-", -1, 0, f"error: {type(exc).__name__}: {exc}"))
            finally:
                logging.disable(logging.NOTSET)
    return rows


def format_table(rows) -> str:
    heads = ("backend", "op", "convention", "mismatches", "elements", "note")
    cells = [[str(r[h]) for h in heads] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    line = "  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip()
    out = [line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(cell, widths)).rstrip() for cell in cells]
    return "\n".join(out)


_VERSIONED = ("refquant", "numpy", "numba", "ml_dtypes", "torch", "torchao", "onnx", "onnxruntime")


def environment() -> dict:
    """``versions`` (each installed package that refquant checks or runs on; None if absent) and
    ``variants``: for each named convention, the variant the installed backend runs on this
    machine as ``rq.conventions.detect`` finds it (knobs that differ from the named row), where
    this refquant can detect it."""
    from importlib import metadata

    from .. import conventions as _conventions
    from ._files import knob_differences

    versions = {}
    for pkg in _VERSIONED:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    variants = {}
    detect = getattr(_conventions, "detect", None)
    if detect is not None:
        for name in _conventions.names():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    found = detect(name)
                except (ValueError, NotImplementedError, ImportError) as exc:
                    variants[name] = {"detected": False, "why": str(exc)}
                    continue
                except Exception as exc:  # a backend probe that breaks must not hide the rest
                    variants[name] = {"detected": False, "why": f"{type(exc).__name__}: {exc}"}
                    continue
            variants[name] = {"detected": True,
                              "differs_from_named_row": knob_differences(found)}
    return {"versions": versions, "variants": variants}
