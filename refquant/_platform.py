"""Which variant of its arithmetic the installed backend runs on this machine, measured.

Some of torch's bits depend on the CPU it runs on: its AVX2/AVX512 kernels are compiled with
``-mfma`` (GCC contracts ``a*b + c`` into one fused multiply-add there, its DEFAULT kernels do
not; ``ATEN_CPU_CAPABILITY`` picks among them), FBGEMM's 8-bit quantize takes a fused path on
CPUs with AVX2 and FMA, and the order of torch's float32 sums follows the lane count of its
vectors. Nothing here reads CPU flags: each function runs the backend on inputs whose results
differ between the candidate variants (computed by refquant under each) and returns the one
variant that reproduces every result. torch is imported inside the probes only; the result is
cached for the process (torch fixes its kernel set when it first dispatches).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

_PROBE_SIZE = 4096


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError("probing torch's arithmetic needs torch (pip install torch)") from None
    return torch


def _separating(candidates: dict, make_inputs, run):
    """The key of ``candidates`` whose refquant result reproduces the backend's, on inputs where
    the candidates differ. ``make_inputs(seed)`` gives an input batch, ``run(candidate, batch)``
    the refquant result and ``run(None, batch)`` the backend's (bit patterns)."""
    for seed in range(8):
        batch = make_inputs(seed)
        ours = {key: run(value, batch) for key, value in candidates.items()}
        differ = np.zeros(np.shape(next(iter(ours.values()))), bool)
        first = next(iter(ours.values()))
        for other in ours.values():
            differ |= other != first
        if not differ.any():
            continue
        with warnings.catch_warnings():  # torch's deprecation notices are not ours to show
            warnings.simplefilter("ignore")
            theirs = run(None, batch)
        hits = [key for key, result in ours.items() if (result[differ] == theirs[differ]).all()]
        if len(hits) == 1 and all((ours[hits[0]] == theirs).ravel()):
            return hits[0]
        counts = {key: int((result != theirs).sum()) for key, result in ours.items()}
        raise RuntimeError(f"the backend matches no single candidate variant (differing elements per "
                           f"candidate: {counts})")
    raise RuntimeError("found no probe inputs that separate the variants")


def _near_ties(seed, scales, zps, lo, hi, shape):
    """float32 values at and a few ulps around ``(k + 1/2 - z) * s`` for random codes k, where
    a fused and an unfused ``x * inv + z`` round to different integers most often."""
    r = np.random.default_rng(seed)
    k = r.integers(lo, hi, shape)
    x = ((k + 0.5 - zps) * scales).astype(np.float32)
    steps = r.integers(-3, 4, shape).astype(np.int32)
    return (x.view(np.int32) + steps).view(np.float32)


def _bits(a) -> np.ndarray:
    a = np.asarray(a)
    return a.view(f"u{a.dtype.itemsize}") if a.dtype.kind == "f" else a.astype(np.int64)


@functools.cache
def torch_kernels_use_fma() -> bool:
    """True when torch's elementwise CPU kernels contract ``a*b + c`` into a fused multiply-add
    (its AVX2/AVX512 builds), False for its DEFAULT build: measured on
    ``torch.fake_quantize_per_channel_affine`` with float zero points, ``lrintf(z + x * inv)``."""
    torch = _torch()
    import refquant as rq

    conv = rq.conventions.get("torch.fake_quantize")
    scales = np.float32([0.0123, 0.37, 0.0021, 0.1])
    zps = np.float32([3.3, 100.7, 17.5, 0.25])

    def make(seed):
        return _near_ties(seed, scales, zps, 0, 255, (_PROBE_SIZE, 4))

    def run(fma, x):
        if fma is None:
            return _bits(torch.fake_quantize_per_channel_affine(
                torch.from_numpy(x.copy()), torch.from_numpy(scales), torch.from_numpy(zps), 1, 0,
                255).numpy())
        return _bits(rq.fake_quantize(x, scales, zps, qmin=0, qmax=255, axis=1,
                                      convention=conv.replace(fma=fma)))

    return _separating({True: True, False: False}, make, run)


@functools.cache
def fbgemm_quantize_uses_fma() -> bool:
    """True when torch's 8-bit ``quantize_per_tensor`` (FBGEMM) rounds ``fma(x, inv, z)`` once,
    False when it rounds ``f32(f32(x * inv) + z)``: measured on quint8 codes."""
    torch = _torch()
    import refquant as rq

    conv = rq.conventions.get("torch.quantize")
    s, z = 0.0123, 3

    def make(seed):
        return _near_ties(seed, np.float32(s), np.float32(z), 0, 255, _PROBE_SIZE)

    def run(fma, x):
        if fma is None:
            return _bits(torch.quantize_per_tensor(torch.from_numpy(x.copy()), s, z,
                                                   torch.quint8).int_repr().numpy())
        return _bits(rq.quantize(x, s, z, qmin=0, qmax=255, convention=conv.replace(fma=fma)))

    return _separating({True: True, False: False}, make, run)


SUM_LANES = (4, 8, 16)  # Vectorized<float>::size() of NEON, AVX2 / DEFAULT x86, AVX512 kernels


@functools.cache
def torch_sum_lanes() -> int:
    """The vector lane count whose cascade order reproduces torch's float32 ``torch.sum`` here
    (see :func:`refquant._kernels._histogram.torch_sum32`), measured among :data:`SUM_LANES`."""
    torch = _torch()
    from ._kernels._histogram import torch_sum32

    def make(seed):
        r = np.random.default_rng(seed)
        lengths = (37, 100, 1000, 2049, 4099, 10000)
        return [(r.standard_normal(n) * 10 ** r.uniform(-3, 6, n)).astype(np.float32) for n in lengths]

    def run(lanes, xs):
        if lanes is None:
            return _bits(np.float32([torch.sum(torch.from_numpy(x)).item() for x in xs]))
        return _bits(np.float32([torch_sum32(x, lanes) for x in xs]))

    return _separating({w: w for w in SUM_LANES}, make, run)


@functools.cache
def torch_linspace_uses_fma() -> bool:
    """True when torch's float32 CPU ``linspace`` computes ``fma(step, i, start)`` (AVX2/AVX512
    kernels), False for ``f32(f32(step * i) + start)`` (DEFAULT): measured."""
    torch = _torch()
    from ._kernels._histogram import linspace32

    def make(seed):
        r = np.random.default_rng(seed)
        return [tuple(np.sort(r.standard_normal(2) * 10 ** r.uniform(-5, 5)).astype(np.float32))
                for _ in range(4)]

    def run(fma, ends):
        if fma is None:
            return np.concatenate([_bits(torch.linspace(torch.tensor(a), torch.tensor(b), 2049).numpy())
                                   for a, b in ends])
        return np.concatenate([_bits(linspace32(a, b, 2049, fma)) for a, b in ends])

    return _separating({True: True, False: False}, make, run)
