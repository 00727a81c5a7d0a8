"""Facts about the running machine that change a backend's bits, detected without importing torch.

torch's AVX2/AVX512 CPU kernels are compiled with ``-mfma``, so GCC contracts ``a*b + c`` into a
fused multiply-add there; its DEFAULT kernels are not. FBGEMM's 8-bit quantize calls
``_mm256_fmadd_ps`` whenever the CPU has AVX2 and FMA.
"""

from __future__ import annotations

import functools
import os
import platform


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (from /proc/cpuinfo; empty where it is missing)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_fma() -> bool:
    """True when the CPU has AVX2 and FMA (x86-64); the condition for FBGEMM's fused path."""
    flags = cpu_flags()
    return "avx2" in flags and "fma" in flags


def torch_kernels_use_fma() -> bool:
    """True when torch's CPU kernels run an AVX2/AVX512 build (contracted multiply-add).

    ``ATEN_CPU_CAPABILITY=default`` selects the DEFAULT build, which does not contract.
    """
    capability = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    if capability == "default":
        return False
    return cpu_has_fma()


def torch_float_width() -> int:
    """Lanes of torch's CPU ``Vectorized<float>`` here, which set the order of its float32 sums:
    16 when torch dispatches to its AVX512 kernels (the CPU has AVX512 VL/BW/DQ and FMA, and
    ``ATEN_CPU_CAPABILITY`` is unset or ``avx512``), 4 on aarch64 (NEON; source only), else 8."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return 4
    capability = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    avx512 = {"avx512vl", "avx512bw", "avx512dq", "fma"} <= cpu_flags()
    return 16 if avx512 and capability in ("", "avx512") else 8
