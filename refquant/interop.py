"""What an adapter built on refquant needs from the core (``refquant_torch`` uses only these and
the public API): the bfloat16 dtype, the argument checks with refquant's own error messages,
and the probes that measure an installed backend's machine-dependent arithmetic.

Nothing here imports torch at module level; the probes import it when called (an ImportError
when it is absent).

>>> import refquant.interop as interop
>>> interop.resolve_range(None, None, "int8"), interop.check_axis(-1, 3)
((-128, 127), 2)
"""

from __future__ import annotations

from ._dtypes import bfloat16
from ._validation import check_axis, resolve_range

__all__ = ["bfloat16", "check_axis", "parallel_min_size", "resolve_range", "torch_histogram_arithmetic"]


def parallel_min_size() -> int:
    """The element count from which refquant's kernels run on Numba's thread pool; smaller calls
    run serially on the calling thread (an adapter sizing thread pools needs it). Numba is not
    imported until then.

    >>> import refquant.interop as interop
    >>> interop.parallel_min_size() > 1
    True
    """
    from ._kernels._jit import PARALLEL_MIN_SIZE

    return PARALLEL_MIN_SIZE


def torch_histogram_arithmetic() -> dict:
    """The ``rq.observers.Histogram`` arguments that reproduce the installed torch's
    ``HistogramObserver`` on this machine, measured by running torch (never read from CPU
    flags): ``sum_lanes``, the vector width whose cascade order ``torch.sum`` of float32 follows,
    and ``linspace_fma``, whether ``torch.linspace`` fuses its multiply-add (AVX2/AVX512 kernels)
    or not (``ATEN_CPU_CAPABILITY=default``).

    >>> import refquant.interop as interop
    >>> kw = interop.torch_histogram_arithmetic()            # doctest: +SKIP
    >>> sorted(kw), kw["sum_lanes"] in (4, 8, 16)            # doctest: +SKIP
    (['linspace_fma', 'sum_lanes'], True)
    """
    from ._platform import torch_linspace_uses_fma, torch_sum_lanes

    return {"sum_lanes": torch_sum_lanes(), "linspace_fma": torch_linspace_uses_fma()}
