"""Candidate kernels for ``sweep`` and ``refquant golden --candidate``: a convention name, a
Convention, ``module:function`` or ``path/to/file.py:function``, or any callable ``f(x) -> y``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

__all__ = ["CandidateError", "load_function", "as_kernel", "call"]


class CandidateError(RuntimeError):
    """The candidate kernel failed: it raised, or returned the wrong shape or dtype. The
    original exception, if any, is ``__cause__``."""


def load_function(spec: str):
    """The function named by ``"module:function"`` or ``"path/to/file.py:function"``.

    A module is looked up with the current directory first on the path (as ``python -m`` does);
    a ``.py`` path is loaded from that file without changing ``sys.path``. A missing module,
    file or function is a ValueError; an exception while the module runs is a CandidateError.
    """
    module, sep, name = spec.rpartition(":")
    if not sep or not module or not name:
        raise ValueError(f"candidate must be a convention name, MODULE:FUNCTION or FILE.py:FUNCTION; "
                         f"got {spec!r}")
    try:
        if module.endswith(".py"):
            path = Path(module)
            if not path.is_file():
                raise ValueError(f"candidate file {module!r} does not exist")
            mod_spec = importlib.util.spec_from_file_location(f"_refquant_candidate_{path.stem}", path)
            mod = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(mod)
        else:
            added = "" not in sys.path and "." not in sys.path
            if added:
                sys.path.insert(0, "")
            try:
                if importlib.util.find_spec(module.split(".")[0]) is None:
                    raise ValueError(f"candidate module {module!r} not found (from the current "
                                     "directory or the installed packages)")
                mod = importlib.import_module(module)
            finally:
                if added:
                    sys.path.remove("")
    except ValueError:
        raise
    except ImportError as exc:
        raise ValueError(f"cannot import candidate module {module!r}: {exc}") from None
    except Exception as exc:
        raise CandidateError(f"candidate module {module!r} failed to load: "
                             f"{type(exc).__name__}: {exc}") from exc
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise ValueError(f"candidate module {module!r} has no function {name!r}")
    return fn


def as_kernel(candidate, *, op, scale, zero_point, qmin, qmax, axis=None, block_size=None,
              rounding=None, dtype=None):
    """``(kernel, label)``: ``kernel(x) -> y`` for ``candidate`` given as a callable, a Convention
    or a registered convention name (run with these qparams), or a ``module:function`` string."""
    import refquant as rq

    from .. import conventions as _conventions

    if isinstance(candidate, str) and candidate not in _conventions.names():
        if ":" in candidate:
            fn = load_function(candidate)
            return fn, candidate
        _conventions.get(candidate)  # the ValueError listing the names
    if isinstance(candidate, (str, _conventions.Convention)):
        conv = _conventions.get(candidate)
        name = None if dtype is None else ("bfloat16" if "bfloat16" in str(dtype) else str(dtype))
        if name is not None and name not in conv.input_dtypes:
            raise ValueError(f"candidate convention {conv.name!r} accepts x of dtype "
                             f"{', '.join(conv.input_dtypes)}; got {name}")
        run = rq.quantize if op == "quantize" else rq.fake_quantize

        def kernel(x):
            return run(x, scale, zero_point, qmin=qmin, qmax=qmax, axis=axis, block_size=block_size,
                       rounding=rounding, convention=conv)
        return kernel, conv.name
    if not callable(candidate):
        raise TypeError(f"candidate must be callable, a convention or 'module:function'; got {candidate!r}")
    return candidate, getattr(candidate, "__name__", repr(candidate))


def call(kernel, x, label: str):
    """``kernel(x)`` as an array, its float RuntimeWarnings silenced; any exception it raises
    becomes a CandidateError."""
    import warnings

    import numpy as np

    try:  # every bit pattern includes inf and NaN: the kernel's float warnings are expected
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(kernel(x))
    except Exception as exc:
        raise CandidateError(f"candidate {label} raised {type(exc).__name__}: {exc}") from exc
