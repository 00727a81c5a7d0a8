"""NF4 and NVFP4 quantize on 2**24 float32: refquant against the installed libraries, in one run.

Prints the best of ``--repeat`` wall times for each and refquant's speed-up over the fastest peer
computing the same thing (codes and scales, unpacked codes for refquant). Peers that are not
installed are skipped. Run: ``python benchmarks/bench_nf4_nvfp4.py [--size N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import logging
import warnings

import numpy as np
from _common import best

import refquant as rq


def peers_nf4(x):
    out = {}
    try:
        import torch

        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        import bitsandbytes.functional as bnbf

        logging.disable(logging.NOTSET)
        t = torch.from_numpy(x)
        out["bitsandbytes quantize_4bit(nf4)"] = lambda: bnbf.quantize_4bit(t, blocksize=64, quant_type="nf4")
    except ImportError:
        pass
    try:
        import torch
        from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import NF4Tensor

        t2 = torch.from_numpy(x).reshape(-1, 64)
        n_blocks = t2.numel() // 64

        out["torchao NF4 codes (no double quant)"] = lambda: NF4Tensor.convert_to_norm_float_weight(
            t2, n_blocks, 64, torch.tensor([round(float(v), 4) for v in rq.nf4.codebook("nf4")]))
    except ImportError:
        pass
    return out


def peers_nvfp4(x):
    out = {}
    try:
        import torch
        from torchao.prototype.mx_formats.nvfp4_tensor import nvfp4_quantize, per_tensor_amax_to_scale

        t = torch.from_numpy(x).reshape(-1, 16 * 64)
        g = per_tensor_amax_to_scale(t.abs().max())
        out["torchao nvfp4_quantize"] = lambda: nvfp4_quantize(t, block_size=16, per_tensor_scale=g)
    except ImportError:
        pass
    return out


def report(title, ours, peers, repeat):
    print(title)
    t_ours = best(ours, repeat)
    print(f"  refquant: {t_ours * 1e3:9.1f} ms")
    fastest = None
    for name, fn in peers.items():
        t = best(fn, repeat)
        print(f"  {name}: {t * 1e3:9.1f} ms  (refquant {t / t_ours:5.2f}x faster)")
        fastest = t if fastest is None else min(fastest, t)
    if fastest is not None:
        print(f"  speed-up over the fastest peer: {fastest / t_ours:.2f}x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2**24)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["nf4", "nvfp4"], default=None)
    args = ap.parse_args()
    x = np.random.default_rng(0).standard_normal(args.size).astype(np.float32)
    if args.only in (None, "nf4"):
        report("NF4 quantize, block 64, float32", lambda: rq.nf4.quantize(x), peers_nf4(x), args.repeat)
        report("NF4 quantize, torchao convention", lambda: rq.nf4.quantize(x, convention="torchao"), {},
               args.repeat)
    if args.only in (None, "nvfp4") and hasattr(rq, "nvfp4"):
        report("NVFP4 quantize, torchao convention", lambda: rq.nvfp4.quantize(x, convention="torchao"),
               peers_nvfp4(x), args.repeat)


if __name__ == "__main__":
    main()
