"""torchao, imported only by the modules that use its API, without its load-time log records.

Importing torchao logs a warning per CUDA extension it cannot load on the machine and torch logs
one about an Enum that torchao registers with its pytree; neither concerns refquant's users.
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings

_LOGGERS = ("torchao", "torch.utils._pytree")


def quiet_import(name: str):
    """``importlib.import_module(name)`` for a torchao module, with the loggers of torchao and
    torch's pytree raised to ERROR (and warnings ignored) while it first loads.

    >>> from refquant_torch._torchao import quiet_import
    >>> quiet_import("torchao.quantization.pt2e").__name__
    'torchao.quantization.pt2e'
    """
    if name in sys.modules:
        return sys.modules[name]
    loggers = [logging.getLogger(n) for n in _LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def register_fake_quantize(cls) -> None:
    """Make ``cls`` an instance of torchao's PT2E ``FakeQuantizeBase`` (an ABC) for torchao's
    isinstance checks, when torchao is already loaded (so that refquant never loads it)."""
    module = sys.modules.get("torchao.quantization.pt2e")
    if module is not None and not issubclass(cls, module.FakeQuantizeBase):
        module.FakeQuantizeBase.register(cls)
