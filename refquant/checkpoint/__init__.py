"""Checking quantized checkpoints: every weight of a safetensors checkpoint, decoded and (given the
float checkpoint it came from) re-quantized, on one machine or a Dask cluster.

``check(path, source=None, *, format="auto", convention=None, client=None)`` returns a
:class:`Report`; ``SafetensorsFile`` is the streaming reader underneath (a read-only memory map,
every dtype the format names); ``save_file`` writes the documented layout. Format adapters
recognise torchao, compressed-tensors, GPTQ (v1 and v2 zero points), AWQ, ModelOpt and
bitsandbytes tensor groups.
"""

from __future__ import annotations

from ._report import Report, TensorReport
from ._run import check
from ._safetensors import SafetensorsFile, TensorInfo, save_file

__all__ = ["check", "Report", "TensorReport", "SafetensorsFile", "TensorInfo", "save_file"]
