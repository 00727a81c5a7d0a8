"""Tensor <-> ndarray conversion with the same bits, for every float dtype and device.

* float16, float32, float64 tensors on the CPU share memory with the array (no copy).
* bfloat16 tensors are viewed as int16 and the bits re-read as ml_dtypes' bfloat16.
* A tensor on another device (CUDA) is copied to the CPU; the result is copied back to the
  input's device. A copy between devices moves bits, never values, so a CUDA tensor gives the
  same bits as the same tensor on the CPU.

Nothing here writes into its input: the arrays handed to the core are views the core only reads.
"""

from __future__ import annotations

import numpy as np
import torch

from refquant.interop import bfloat16

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_float_tensor(x, name: str = "x") -> torch.Tensor:
    """``x`` if it is a float16/bfloat16/float32/float64 tensor, else a TypeError naming it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.dtype not in _FLOATS:
        raise TypeError(
            f"{name} must be a float16, bfloat16, float32 or float64 tensor; got {x.dtype}"
        )
    return x


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """The values of ``t`` as a CPU ndarray with the same bits (a view where possible)."""
    if t.requires_grad:
        t = t.detach()
    if not t.is_cpu:
        t = t.cpu()
    if t.dtype == torch.bfloat16:
        bf16 = bfloat16()
        if bf16 is None:
            raise TypeError("bfloat16 tensors need ml_dtypes (pip install ml_dtypes)")
        return t.view(torch.int16).numpy().view(bf16)
    return t.numpy()


_NATIVE = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64, np.bool_, np.int8,
                                           np.uint8, np.int16, np.int32, np.int64))


def from_numpy(a: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """``a`` as a tensor on ``device`` with the same bits (shares memory on the CPU)."""
    if type(a) is not np.ndarray:
        a = np.asarray(a)
    if a.dtype not in _NATIVE and a.dtype.name == "bfloat16":
        t = torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)
    else:
        t = torch.from_numpy(a if a.flags.c_contiguous else np.ascontiguousarray(a))
    if device == "cpu" or (isinstance(device, torch.device) and device.type == "cpu"):
        return t
    return t.to(device)


def scalar_or_array(t: torch.Tensor, weak: bool):
    """A qparam tensor for the core: a Python number when ``weak`` (a scalar the user gave as a
    Python number, which takes the input's dtype in promoting conventions), else an ndarray."""
    a = to_numpy(t)
    if weak:
        return a.item()
    return a


def make_quantized(codes: torch.Tensor, scale, zero_point, axis: int | None = None) -> torch.Tensor:
    """A torch quantized tensor from integer ``codes`` of its dtype and its qparams (per tensor:
    numbers; per channel along ``axis``: float64 scales and int64 zero points), without
    torch's deprecation warning about building quantized tensors."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated", category=UserWarning)
        if axis is None:
            return torch._make_per_tensor_quantized_tensor(codes, scale, zero_point)
        return torch._make_per_channel_quantized_tensor(codes, scale, zero_point, axis)
