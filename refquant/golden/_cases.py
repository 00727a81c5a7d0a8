"""Edge-heavy golden inputs and their reference outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._dtypes import bfloat16, is_bfloat16
from .._validation import positive_finite

__all__ = ["cases", "edge_inputs", "GoldenCases"]


def _dtype(dtype) -> np.dtype:
    if isinstance(dtype, str) and dtype == "bfloat16":
        bf = bfloat16()
        if bf is None:
            raise TypeError("dtype 'bfloat16' needs ml_dtypes (pip install ml_dtypes)")
        return bf
    dt = np.dtype(dtype)
    if not (dt.kind == "f" and dt.itemsize in (2, 4, 8) or is_bfloat16(dt)):
        raise TypeError(f"dtype must be float16, bfloat16, float32 or float64; got {dt}")
    return dt


def _neighbours(v: np.ndarray, dtype) -> np.ndarray:
    """v rounded to ``dtype`` and its two float neighbours (one ulp toward -inf and toward +inf),
    found on the bit patterns so that bfloat16 needs no arithmetic."""
    vd = v.astype(dtype)
    if not is_bfloat16(vd.dtype):
        inf = np.array(np.inf, vd.dtype)
        return np.concatenate([vd, np.nextafter(vd, inf), np.nextafter(vd, -inf)])
    nbits = 8 * vd.dtype.itemsize
    u = vd.view(f"u{vd.dtype.itemsize}").astype(np.int64)
    sign_bit = 1 << (nbits - 1)
    mag = u & (sign_bit - 1)
    neg = (u & sign_bit) != 0
    away = np.where(neg, u + 1, u + 1)
    toward = np.where(mag == 0, sign_bit | 1, u - 1)
    up = np.where(neg, toward, away)
    down = np.where(neg, away, toward)
    up = np.where(u == sign_bit, 1, up)  # -0.0: next up is the smallest subnormal
    patterns = np.concatenate([u, up, down]).astype(f"u{vd.dtype.itemsize}")
    return patterns.view(vd.dtype)


def edge_inputs(scale, zero_point, *, qmin, qmax, dtype=np.float32, n_random=1000, seed=0,
                max_codes=4096):
    """Edge-heavy inputs in ``dtype`` for one (scale, zero point) pair (scalar or per-channel
    first entry): the value of every code ``(q - z) * s`` and every tie ``(q - z + 1/2) * s``
    (at most ``max_codes`` codes, spread over the range), each with its two float neighbours;
    the range ends and beyond; subnormals; +-0; NaN; +-inf; then ``n_random`` uniform values
    over the range widened by 10 % (seeded, deterministic).

    >>> import numpy as np
    >>> x = edge_inputs(0.5, 0, qmin=-2, qmax=1, n_random=0)
    >>> bool(np.isnan(x).any()), bool(np.isin(np.float32(0.25), x)), x.dtype
    (True, True, dtype('float32'))
    """
    dt = _dtype(dtype)
    s = float(np.asarray(scale, np.float64).ravel()[0])
    z = float(np.asarray(zero_point, np.float64).ravel()[0])
    n_codes = qmax - qmin + 1
    if n_codes <= max_codes:
        k = np.arange(qmin - 2, qmax + 3, dtype=np.float64)
    else:
        k = np.unique(np.concatenate([
            np.arange(qmin - 2, qmin + 64), np.arange(qmax - 63, qmax + 3),
            np.round(np.linspace(qmin, qmax, max_codes - 128)), np.arange(z - 32, z + 33),
        ]).astype(np.float64))
    values = np.concatenate([(k - z) * s, (k - z + 0.5) * s])
    wide = np.float32 if dt.itemsize == 2 else dt
    info = np.finfo(np.float16) if dt == np.float16 else (
        np.finfo(np.float32) if dt.itemsize == 2 else np.finfo(dt))
    tiny = float(info.smallest_normal)
    special = np.array([0.0, -0.0, tiny, -tiny, tiny / 2, -tiny / 2, float(info.smallest_subnormal),
                        -float(info.smallest_subnormal), float(info.max), -float(info.max),
                        (qmax - z) * s * 2, (qmin - z) * s * 2, np.inf, -np.inf, np.nan],
                       dtype=np.float64)
    rng = np.random.default_rng(seed)
    lo, hi = (qmin - z) * s, (qmax - z) * s
    pad = 0.1 * (hi - lo)
    rand = rng.uniform(lo - pad, hi + pad, int(n_random))
    with np.errstate(over="ignore", invalid="ignore"):
        grid = _neighbours(values, dt)
        rest = np.concatenate([special, rand]).astype(wide).astype(dt)
    return np.concatenate([grid, rest]).astype(dt)


@dataclass
class GoldenCases:
    """Golden vectors: ``inputs``, reference ``outputs`` and the ``manifest`` describing them."""

    inputs: np.ndarray
    outputs: np.ndarray
    manifest: dict

    def save(self, path, format=None):
        """Write to ``path`` as ``"npz"``, ``"json"`` or ``"hex"`` (default: from the suffix)."""
        from ._files import save

        return save(self, path, format=format)


def cases(scale, zero_point=0, *, qmin, qmax, dtype=np.float32, op="fake_quantize",
          convention="exact", axis=None, n_random=1000, seed=0) -> GoldenCases:
    """Golden vectors: :func:`edge_inputs` and ``rq.quantize`` / ``rq.fake_quantize`` of them.

    Per-channel (``axis`` given, 1-D ``scale``): the inputs have shape ``(n, channels)`` with
    ``axis=1`` (each column built from its channel's qparams). NaN inputs are left out of
    ``op="quantize"`` cases when the convention has no code for NaN.

    >>> import numpy as np, refquant as rq
    >>> g = rq.golden.cases(0.25, 0, qmin=-8, qmax=7, n_random=10)
    >>> g.manifest["op"], g.inputs.dtype == g.outputs.dtype, g.outputs.shape == g.inputs.shape
    ('fake_quantize', True, True)
    """
    import refquant as rq

    from .. import conventions as _conventions

    if op not in ("quantize", "fake_quantize"):
        raise ValueError(f"op must be 'quantize' or 'fake_quantize'; got {op!r}")
    conv = _conventions.get(convention)
    dt = _dtype(dtype)
    positive_finite(scale, "scale")
    s = np.asarray(scale)
    zp = np.asarray(zero_point)
    if axis is None:
        x = edge_inputs(s, zp, qmin=qmin, qmax=qmax, dtype=dt, n_random=n_random, seed=seed)
    else:
        if s.ndim != 1:
            raise ValueError(f"per-channel scale must be 1-D; got shape {s.shape}")
        zs = np.broadcast_to(zp, s.shape)
        cols = [edge_inputs(si, zi, qmin=qmin, qmax=qmax, dtype=dt, n_random=n_random, seed=seed + i)
                for i, (si, zi) in enumerate(zip(s, zs))]
        n = min(len(c) for c in cols)
        x = np.stack([c[:n] for c in cols], axis=1)
        if axis != 1:
            raise ValueError(f"golden per-channel cases use axis=1 (columns); got axis={axis!r}")
    if op == "quantize" and conv.nan == "error":
        keep = ~np.isnan(x.astype(np.float64)).any(axis=tuple(range(1, x.ndim)) or None)
        x = x[keep] if x.ndim > 1 else x[~np.isnan(x.astype(np.float64))]
    fn = rq.quantize if op == "quantize" else rq.fake_quantize
    y = fn(x, scale, zero_point, qmin=qmin, qmax=qmax, axis=axis, convention=conv)
    manifest = {
        "refquant_version": rq.__version__,
        "op": op,
        "convention": conv.name,
        "scale": s.tolist(),
        "scale_dtype": s.dtype.name if isinstance(scale, (np.ndarray, np.generic)) else "python",
        "zero_point": zp.tolist(),
        "qmin": int(qmin),
        "qmax": int(qmax),
        "axis": axis,
        "input_dtype": x.dtype.name,
        "output_dtype": y.dtype.name,
        "shape": list(x.shape),
    }
    return GoldenCases(inputs=x, outputs=y, manifest=manifest)
