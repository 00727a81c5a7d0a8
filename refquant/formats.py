"""Integer formats: the closed range ``[qmin, qmax]`` of a b-bit code.

``IntFormat(bits, signed=True, narrow=False)``:

* signed:   ``qmin = -2**(bits-1)``, ``qmax = 2**(bits-1) - 1``
* unsigned: ``qmin = 0``,            ``qmax = 2**bits - 1``
* ``narrow=True`` drops the lowest code (``qmin + 1``), which makes a signed range symmetric
  (int8 narrow is ``[-127, 127]``, TFLite's weight range) and an unsigned one ``[1, 2**bits - 1]``
  (TensorFlow's ``narrow_range``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUPPORTED_BITS = (*range(1, 17), 32)

_SIGNED = (np.int8, np.int16, np.int32, np.int64)
_UNSIGNED = (np.uint8, np.uint16, np.uint32, np.uint64)


def integer_dtype_for(qmin: int, qmax: int) -> np.dtype:
    """The smallest NumPy integer dtype that holds every integer in ``[qmin, qmax]``.

    A range with ``qmin >= 0`` gets an unsigned dtype, any other a signed one: ``[-8, 7]`` gives
    int8, ``[0, 15]`` uint8 and ``[-1, 255]`` int16.

    >>> integer_dtype_for(-8, 7), integer_dtype_for(0, 15), integer_dtype_for(-1, 255)
    (dtype('int8'), dtype('uint8'), dtype('int16'))
    """
    candidates = _UNSIGNED if qmin >= 0 else _SIGNED
    for dt in candidates:
        info = np.iinfo(dt)
        if info.min <= qmin and qmax <= info.max:
            return np.dtype(dt)
    raise ValueError(f"no integer dtype holds the range [{qmin}, {qmax}]")


@dataclass(frozen=True)
class IntFormat:
    """A b-bit integer code range.

    ``qmin = -2**(bits-1) + narrow`` and ``qmax = 2**(bits-1) - 1`` when signed;
    ``qmin = 0 + narrow`` and ``qmax = 2**bits - 1`` when unsigned.

    >>> import refquant as rq
    >>> rq.IntFormat(8).qmin, rq.IntFormat(8).qmax
    (-128, 127)
    >>> rq.IntFormat(8, narrow=True).qmin, rq.uint4.qmax, rq.uint4.dtype
    (-127, 15, dtype('uint8'))
    """

    bits: int
    signed: bool = True
    narrow: bool = False

    def __post_init__(self):
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)):
            raise TypeError(f"bits must be an int, got {self.bits!r}")
        if int(self.bits) not in SUPPORTED_BITS:
            raise ValueError(f"bits must be in 1..16 or 32, got {self.bits!r}")
        object.__setattr__(self, "bits", int(self.bits))
        object.__setattr__(self, "signed", bool(self.signed))
        object.__setattr__(self, "narrow", bool(self.narrow))

    @property
    def qmin(self) -> int:
        base = -(2 ** (self.bits - 1)) if self.signed else 0
        return base + int(self.narrow)

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def dtype(self) -> np.dtype:
        """The smallest NumPy integer dtype that holds ``[qmin, qmax]``."""
        return integer_dtype_for(self.qmin, self.qmax)

    @property
    def name(self) -> str:
        return f"{'' if self.signed else 'u'}int{self.bits}{'_narrow' if self.narrow else ''}"

    def __str__(self) -> str:
        return f"{self.name}[{self.qmin}, {self.qmax}]"


int2, int4, int8, int16, int32 = (IntFormat(b) for b in (2, 4, 8, 16, 32))
uint2, uint4, uint8, uint16 = (IntFormat(b, signed=False) for b in (2, 4, 8, 16))

NAMED_FORMATS = {f.name: f for f in (int2, int4, int8, int16, int32, uint2, uint4, uint8, uint16)}


def _check_table() -> None:
    for name, f in NAMED_FORMATS.items():
        assert f.qmax - f.qmin + 1 == 2**f.bits, name
        assert np.iinfo(f.dtype).bits <= max(8, f.bits), name


_check_table()
