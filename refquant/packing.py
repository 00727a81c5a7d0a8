"""Packing sub-byte codes (2-, 4- and 6-bit) into bytes, and unpacking them.

The codes, flattened in C order, form one bit stream:

* ``order="low_first"``: code ``i`` occupies stream bits ``[bits*i, bits*(i+1))`` with its least
  significant bit first, and stream bit ``j`` is bit ``j % 8`` (counted from the least
  significant) of byte ``j // 8``. For 4-bit codes, element 0 is the low nibble (torchao,
  ModelOpt, compressed-tensors, TransformerEngine).
* ``order="high_first"``: the mirror image: code ``i`` most significant bit first, stream bit
  ``j`` is bit ``7 - j % 8`` of byte ``j // 8``. For 4-bit codes, element 0 is the high nibble
  (bitsandbytes).

A last partial byte is padded with zero bits. Packing a C-ordered array whose last axis holds a
whole number of bytes is the same as packing each row.
"""

from __future__ import annotations

import numpy as np

from ._validation import integer_array, integer_scalar

__all__ = ["pack", "unpack"]

ORDERS = ("low_first", "high_first")
_BITS = (2, 4, 6)


def _check(bits, order) -> tuple[int, str]:
    b = integer_scalar(bits, "bits")
    if b not in _BITS:
        raise ValueError(f"bits must be one of {', '.join(map(str, _BITS))}; got {bits!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}; got {order!r}")
    return b, "little" if order == "low_first" else "big"


def pack(codes, bits, *, order="low_first"):
    """Pack ``codes`` (integers in ``[0, 2**bits)``) into a 1-D uint8 array of
    ``ceil(codes.size * bits / 8)`` bytes.

    >>> import numpy as np, refquant as rq
    >>> rq.pack(np.uint8([1, 2, 3]), 4).tolist()
    [33, 3]
    >>> rq.pack(np.uint8([1, 2, 3]), 4, order="high_first").tolist()
    [18, 48]
    """
    b, bitorder = _check(bits, order)
    q = integer_array(codes, "codes").reshape(-1)
    if q.size and (q.min() < 0 or q.max() >= 1 << b):
        bad = q.min() if q.min() < 0 else q.max()
        raise ValueError(f"codes must lie in [0, {(1 << b) - 1}] for bits={b}; got {int(bad)}")
    per_code = np.unpackbits(q.astype(np.uint8)[:, None], axis=1, bitorder=bitorder)
    per_code = per_code[:, :b] if bitorder == "little" else per_code[:, 8 - b:]
    return np.packbits(per_code.reshape(-1), bitorder=bitorder)


def unpack(packed, bits, n, *, order="low_first"):
    """The first ``n`` codes of the byte stream ``packed`` (inverse of :func:`pack`), as uint8.

    >>> import numpy as np, refquant as rq
    >>> rq.unpack(np.uint8([33, 3]), 4, 3).tolist()
    [1, 2, 3]
    """
    b, bitorder = _check(bits, order)
    p = integer_array(packed, "packed").reshape(-1)
    if p.size and (p.min() < 0 or p.max() > 255):
        bad = int(p.max() if p.max() > 255 else p.min())
        raise ValueError(f"packed must hold bytes in [0, 255]; got {bad}")
    count = integer_scalar(n, "n")
    if count < 0 or count * b > p.size * 8:
        raise ValueError(
            f"n must be in [0, {p.size * 8 // b}] for {p.size} bytes of {b}-bit codes; got {n!r}"
        )
    stream = np.unpackbits(p.astype(np.uint8), bitorder=bitorder)[: count * b].reshape(count, b)
    pad = np.zeros((count, 8 - b), np.uint8)
    full = np.concatenate([stream, pad] if bitorder == "little" else [pad, stream], axis=1)
    return np.packbits(full, axis=1, bitorder=bitorder).reshape(count)
