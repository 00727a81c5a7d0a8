"""Edge-heavy golden inputs and their reference outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._dtypes import is_bfloat16
from .._validation import check_axis, float_dtype, integer_scalar, positive_finite, resolve_range
from ._args import check_op

__all__ = ["cases", "edge_inputs", "GoldenCases"]


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


def _finfo(dt: np.dtype):
    """Finite limits of ``dt`` (ml_dtypes' finfo for bfloat16, whose max and smallest subnormal
    are not float32's)."""
    if is_bfloat16(dt):
        import ml_dtypes

        return ml_dtypes.finfo(dt)
    return np.finfo(dt)


def edge_inputs(scale, zero_point, *, qmin, qmax, dtype=np.float32, n_random=1000, seed=0,
                max_codes=2**16 + 8):
    """Edge-heavy inputs in ``dtype`` for one (scale, zero point) pair (scalar or per-channel
    first entry): the value of every code ``(q - z) * s`` and every tie ``(q - z + 1/2) * s``,
    each with its two float neighbours (one ulp below and above: both sides of every rounding
    threshold), for ``q`` from ``qmin - 2`` to ``qmax + 2`` (ranges of more than ``max_codes``
    codes, i.e. wider than 16 bits: both ends, the codes around ``z`` and ``max_codes`` codes
    spread over the range); the range ends and beyond; the largest finite values; subnormals;
    +-0; NaN; +-inf; then ``n_random`` uniform values over the range widened by 10 % (seeded,
    deterministic).

    >>> import numpy as np
    >>> x = edge_inputs(0.5, 0, qmin=-2, qmax=1, n_random=0)
    >>> bool(np.isnan(x).any()), bool(np.isin(np.float32(0.25), x)), x.dtype
    (True, True, dtype('float32'))
    """
    dt, n_random = dtype_and_count(dtype, n_random)
    qmin, qmax = resolve_range(qmin, qmax, None)
    s = float(positive_finite(scale, "scale").ravel()[0])
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
    info = _finfo(dt)
    tiny = float(info.smallest_normal)
    special = np.array([0.0, -0.0, tiny, -tiny, tiny / 2, -tiny / 2, float(info.smallest_subnormal),
                        -float(info.smallest_subnormal), float(info.max), -float(info.max),
                        (qmax - z) * s * 2, (qmin - z) * s * 2, np.inf, -np.inf, np.nan],
                       dtype=np.float64)
    rng = np.random.default_rng(seed)
    lo, hi = (qmin - z) * s, (qmax - z) * s
    pad = 0.1 * (hi - lo)
    return inputs_of(values, special, rng.uniform(lo - pad, hi + pad, n_random), dt)


def dtype_and_count(dtype, n_random) -> tuple[np.dtype, int]:
    """The float ``dtype`` of generated inputs and their ``n_random`` count, checked."""
    n_random = integer_scalar(n_random, "n_random")
    if n_random < 0:
        raise ValueError(f"n_random must be >= 0; got {n_random}")
    return float_dtype(dtype), n_random


def inputs_of(grid, special, rand, dt) -> np.ndarray:
    """Generated inputs in ``dt``: each real of ``grid`` rounded to ``dt`` with its two neighbours,
    then ``special`` and ``rand`` rounded to ``dt`` (through float32 for a 2-byte ``dt``)."""
    wide = np.float32 if dt.itemsize == 2 else dt
    with np.errstate(over="ignore", invalid="ignore"):
        near = _neighbours(grid, dt)
        rest = np.concatenate([special, rand]).astype(wide).astype(dt)
    return np.concatenate([near, rest]).astype(dt)


@dataclass
class GoldenCases:
    """Golden vectors: ``inputs``, reference ``outputs`` and the ``manifest`` describing them.

    >>> import numpy as np, refquant as rq
    >>> g = rq.golden.cases(0.1, 3, qmin=0, qmax=15, n_random=8)
    >>> g.inputs.dtype, g.outputs.shape == g.inputs.shape, g.manifest["convention"]
    (dtype('float32'), True, 'exact')
    """

    inputs: np.ndarray
    outputs: np.ndarray
    manifest: dict
    reference: np.ndarray | None = None

    def with_outputs(self, y) -> GoldenCases:
        """A golden set holding ``y`` (a candidate kernel's outputs for ``self.inputs``) as its
        outputs, with the reference's outputs kept as ``.reference``; saved files carry both and
        the manifest says ``"outputs": "candidate"``, so ``refquant identify FILE`` names the
        convention ``y`` follows and ``refquant check FILE`` reports how it differs.

        ``y`` must have the inputs' shape; for ``fake_quantize`` the inputs' dtype, for
        ``quantize`` an integer dtype (codes).

        >>> import numpy as np, refquant as rq
        >>> g = rq.golden.cases(0.25, 0, qmin=-8, qmax=7, n_random=0)
        >>> mine = g.with_outputs(rq.fake_quantize(g.inputs, 0.25, 0, qmin=-8, qmax=7,
        ...                                        rounding="half_away"))
        >>> mine.manifest["outputs"], rq.identify(mine.inputs, mine.outputs, 0.25, 0, qmin=-8,
        ...                                       qmax=7).cause
        ('candidate', 'tie rounding')
        """
        y = np.asarray(y)
        ref = self.outputs if self.reference is None else self.reference
        if y.shape != self.inputs.shape:
            raise ValueError(f"y must have the inputs' shape {self.inputs.shape}; got {y.shape}")
        if self.manifest["op"] == "fake_quantize" and y.dtype != self.inputs.dtype:
            raise TypeError(f"y of a fake_quantize set must have the inputs' dtype "
                            f"{self.inputs.dtype}; got {y.dtype}")
        from ._files import _INTS

        if self.manifest["op"] == "quantize" and y.dtype.name not in _INTS:
            raise TypeError(f"y of a quantize set must hold integer codes; got dtype {y.dtype}")
        manifest = dict(self.manifest, outputs="candidate", output_dtype=y.dtype.name,
                        reference_dtype=ref.dtype.name)
        return GoldenCases(inputs=self.inputs, outputs=y, manifest=manifest, reference=ref)

    def save(self, path, format=None):
        """Write to ``path`` as ``"npz"``, ``"json"`` or ``"hex"`` (default: from the suffix)."""
        from ._files import save

        return save(self, path, format=format)


def reference_cases(x: np.ndarray, y: np.ndarray, manifest: dict) -> GoldenCases:
    """The golden set of inputs ``x`` and reference outputs ``y``, with ``manifest`` completed by
    the dtypes, the shape and ``"outputs": "reference"`` (the keys every manifest ends with)."""
    manifest.update(input_dtype=x.dtype.name, output_dtype=y.dtype.name, shape=list(x.shape),
                    outputs="reference")
    return GoldenCases(inputs=x, outputs=y, manifest=manifest)


def _dtype_name(v) -> str:
    """How a qparam was given: a NumPy dtype name, or "python" (float, int or list)."""
    return np.asarray(v).dtype.name if isinstance(v, (np.ndarray, np.generic)) else "python"


def _as_json(v):
    """A qparam as JSON numbers (exact: float64 holds every float16/bfloat16/float32 value)."""
    a = np.asarray(v)
    return a.tolist() if a.dtype.kind in "iu" else a.astype(np.float64).tolist()


def _fill(values: np.ndarray, n: int) -> np.ndarray:
    """``n`` of ``values``: spread evenly over them when there are more, repeated when fewer."""
    if values.size >= n:
        return values[np.linspace(0, values.size - 1, n).round().astype(np.int64)]
    return np.resize(values, n)


def cases(scale=None, zero_point=0, *, qmin=None, qmax=None, dtype=np.float32, op="fake_quantize",
          convention="exact", axis=None, block_size=None, rounding=None, n_random=1000,
          seed=0, fmt=None, saturate=None) -> GoldenCases:
    """Golden vectors: :func:`edge_inputs` and ``rq.quantize`` / ``rq.fake_quantize`` of them.

    ``outputs = rq.fake_quantize(inputs, scale, zero_point, qmin=qmin, qmax=qmax, axis=axis,
    block_size=block_size, rounding=rounding, convention=convention)`` (or ``rq.quantize`` for
    ``op="quantize"``: integer codes in the smallest integer dtype holding the range);
    ``convention`` is a name or a Convention. Per-channel (``axis`` given, 1-D ``scale``): the
    inputs are 2-D with the channels along ``axis`` (0 or 1, negative allowed), each channel's
    inputs built from its own qparams. Per-block (``block_size=(b0, b1)``, ``scale`` of shape
    ``(s0, s1)``): the inputs have shape ``(s0 * b0, s1 * b1)`` and each block holds ``b0 * b1``
    of its own edge inputs (spread over them; use blocks of at least a few thousand elements to
    hold them all). NaN inputs are left out of ``op="quantize"`` cases when the convention has
    no code for NaN (per-block: made 0).

    The manifest records the refquant version, op, the convention's name and every knob of it
    (``convention_knobs``: a variant made with ``.replace(...)`` is rebuilt exactly by
    ``refquant check``), rounding, scale and zero point with the dtypes they were given in
    (``scale_dtype``, ``zero_point_dtype``: a NumPy dtype name or ``"python"``), qmin, qmax,
    axis, block_size, the input and output dtypes and the shape.

    >>> import numpy as np, refquant as rq
    >>> g = rq.golden.cases(0.25, 0, qmin=-8, qmax=7, n_random=10)
    >>> g.manifest["op"], g.inputs.dtype == g.outputs.dtype, g.outputs.shape == g.inputs.shape
    ('fake_quantize', True, True)
    >>> bool(np.isin(np.float32(0.375), g.inputs)), g.outputs[g.inputs == np.float32(0.375)]
    (True, array([0.5], dtype=float32))
    >>> g = rq.golden.cases(np.float32([[0.1, 0.2]]), 0, qmin=-8, qmax=7, block_size=(64, 32))
    >>> g.inputs.shape, g.manifest["block_size"]
    ((64, 64), [64, 32])

    A float format as ``fmt`` (``rq.float8_e4m3fn``, ``"float4_e2m1fn"``, ...) builds float cases
    instead (``scale`` default 1: the element cast; ``saturate`` and the float ``convention``
    recorded): see :func:`refquant.golden._float.float_cases`. A block format's name as ``fmt``
    (``"mxfp4"``, ``"nvfp4"``, ``"nf4"``, ...) builds block cases: see
    :func:`refquant.golden._block.block_cases`.
    """
    import refquant as rq

    from .. import conventions as _conventions
    from ._block import is_block_format
    from ._files import knobs_of
    from ._float import route

    if is_block_format(fmt):
        from ._block import block_cases

        return block_cases(fmt, scale, dtype=dtype, op=op, n_random=n_random, seed=seed,
                           convention=None if convention == "exact" else convention)

    is_float, got = route("cases", fmt, scale, zero_point, qmin, qmax, saturate, axis, block_size)
    if is_float:
        from ._float import float_cases

        return float_cases(fmt, got, dtype=dtype, op=op, convention=convention, saturate=saturate,
                           rounding=rounding, n_random=n_random, seed=seed)
    qmin, qmax = got
    check_op(op)
    conv = _conventions.get(convention)
    dt = float_dtype(dtype)
    qmin, qmax = resolve_range(qmin, qmax, None)
    positive_finite(scale, "scale")
    s = np.asarray(scale)
    zp = np.asarray(zero_point)
    no_nan = op == "quantize" and conv.nan == "error"
    if axis is not None and block_size is not None:
        raise ValueError("give axis or block_size, not both")
    if block_size is not None:
        block = tuple(int(b) for b in np.atleast_1d(block_size))
        if s.ndim != 2 or len(block) != 2 or min(block) < 1:
            raise ValueError(f"per-block cases need a 2-D scale and block_size=(b0, b1) with "
                             f"positive entries; got scale shape {s.shape}, block_size {block_size!r}")
        zs = np.broadcast_to(zp, s.shape)
        x = np.empty((s.shape[0] * block[0], s.shape[1] * block[1]), dt)
        for i, j in np.ndindex(s.shape):
            e = edge_inputs(s[i, j], zs[i, j], qmin=qmin, qmax=qmax, dtype=dt, n_random=n_random,
                            seed=seed + i * s.shape[1] + j)
            if no_nan:
                e = e[~np.isnan(e.astype(np.float64))]
            x[i * block[0]:(i + 1) * block[0], j * block[1]:(j + 1) * block[1]] = \
                _fill(e, block[0] * block[1]).reshape(block)
        block_size = block
    elif axis is None:
        x = edge_inputs(s, zp, qmin=qmin, qmax=qmax, dtype=dt, n_random=n_random, seed=seed)
    else:
        ax = check_axis(axis, 2)
        if s.ndim != 1:
            raise ValueError(f"per-channel scale must be 1-D; got shape {s.shape}")
        zs = np.broadcast_to(zp, s.shape)
        cols = [edge_inputs(si, zi, qmin=qmin, qmax=qmax, dtype=dt, n_random=n_random, seed=seed + i)
                for i, (si, zi) in enumerate(zip(s, zs))]
        n = min(len(c) for c in cols)
        x = np.stack([c[:n] for c in cols], axis=ax)
    if no_nan and block_size is None:
        nan = np.isnan(x.astype(np.float64))
        if x.ndim > 1:  # drop whole rows (or columns) across the channels
            other = 1 - ax
            keep = ~nan.any(axis=ax)
            x = np.compress(keep, x, axis=other)
        else:
            x = x[~nan]
    fn = rq.quantize if op == "quantize" else rq.fake_quantize
    y = fn(x, scale, zero_point, qmin=qmin, qmax=qmax, axis=axis, block_size=block_size,
           rounding=rounding, convention=conv)
    manifest = {
        "refquant_version": rq.__version__,
        "op": op,
        "convention": conv.name,
        "convention_knobs": knobs_of(conv),
        "rounding": rounding,
        "scale": _as_json(s),
        "scale_dtype": _dtype_name(scale),
        "zero_point": _as_json(zp),
        "zero_point_dtype": _dtype_name(zero_point),
        "qmin": qmin,
        "qmax": qmax,
        "axis": None if axis is None else int(axis),
        "block_size": None if block_size is None else list(block_size),
    }
    return reference_cases(x, y, manifest)
