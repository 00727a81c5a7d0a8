"""The one table of knob codes: every enumerated knob's values, as strings and as kernel integers.

A :class:`~refquant.conventions.Convention` holds its knobs as the lower-case names below
(``quotient="reciprocal"``); the kernels compare integers (``Quotient.RECIPROCAL == 2``). Both
sides read these enums, and :func:`check` (run on import) proves that each enum numbers its
members ``0, 1, 2, ...`` in order, so that a name and its code can never drift apart.
"""

from __future__ import annotations

from enum import IntEnum


class Quotient(IntEnum):
    """How x meets the scale: the real ``x / s``, ``x / s`` in the compute dtype, ``x * inv``."""

    EXACT = 0
    DIVIDE = 1
    RECIPROCAL = 2


class Reciprocal(IntEnum):
    """How ``inv`` is formed: ``1.0f / f32(s)``, ``f32(1.0 / s)``, ``1 / s`` in the scale dtype."""

    FLOAT32 = 0
    FLOAT64 = 1
    SCALE_DTYPE = 2


class Compute(IntEnum):
    """The dtype of the quotient arithmetic."""

    EXACT = 0
    FLOAT32 = 1
    FLOAT64 = 2
    INPUT64 = 3
    PROMOTE = 4
    FLOAT16 = 5
    BFLOAT16 = 6


class ZeroPoint(IntEnum):
    """Where the zero point is added: after rounding, before rounding, not at all."""

    AFTER_ROUND = 0
    BEFORE_ROUND = 1
    NONE = 2


class ZeroPointAdd(IntEnum):
    """The add of an after-rounding zero point: exact integer, a float add in the compute dtype, or
    a float add in the promotion of the compute dtype and the zero point's dtype; or (before or
    after rounding) a float add in the compute dtype whose sum is rounded to float32 again."""

    INTEGER = 0
    COMPUTE = 1
    PROMOTE = 2
    FLOAT32 = 3


class Rounding(IntEnum):
    """Rounding modes (see :mod:`refquant.rounding`)."""

    HALF_EVEN = 0
    HALF_AWAY = 1
    HALF_UP = 2
    HALF_DOWN = 3
    FLOOR = 4
    CEIL = 5
    TOWARD_ZERO = 6
    STOCHASTIC = 7


class Clamp(IntEnum):
    """Clamp the float; convert to int64 first; clamp with rounded bounds, then convert; convert
    to int64 and wrap to int32 first; convert the rounded quotient to int32 and add the zero point
    in int32 first."""

    FLOAT = 0
    CAST_FIRST = 1
    CAST_LAST = 2
    WRAP32_FIRST = 3
    INT32_FIRST = 4


class Nan(IntEnum):
    """The code of NaN in ``quantize``."""

    ERROR = 0
    QMIN = 1
    QMAX = 2
    ZERO = 3
    CAST = 4


class FakeNan(IntEnum):
    """NaN in ``fake_quantize``: propagated, or its code dequantized."""

    PROPAGATE = 0
    CODE = 1


class Dequant(IntEnum):
    """How ``(q - z) * s`` is computed."""

    EXACT = 0
    FLOAT32 = 1
    FLOAT64 = 2
    MIXED = 3
    PROMOTE = 4
    DIVIDE = 5
    INT32_FLOAT32 = 6
    SCALAR = 7
    TENSOR = 8
    ONNX_REFERENCE = 9


class Format(IntEnum):
    """Float formats of inputs, outputs and intermediate results."""

    FLOAT64 = 0
    FLOAT32 = 1
    FLOAT16 = 2
    BFLOAT16 = 3


# Convention field -> the enum of its values
KNOBS = {
    "quotient": Quotient,
    "reciprocal": Reciprocal,
    "compute": Compute,
    "zero_point": ZeroPoint,
    "zero_point_add": ZeroPointAdd,
    "rounding": Rounding,
    "clamp": Clamp,
    "nan": Nan,
    "fake_nan": FakeNan,
    "dequant": Dequant,
}


def names(enum) -> tuple[str, ...]:
    """The knob values of ``enum`` in code order, as a Convention spells them.

    >>> names(Quotient)
    ('exact', 'divide', 'reciprocal')
    """
    return tuple(member.name.lower() for member in enum)


def code(knob: str, value: str) -> int:
    """The kernel code of a knob's value.

    >>> code("zero_point", "before_round")
    1
    """
    return int(KNOBS[knob][value.upper()])


def check() -> None:
    """Every enum numbers its members 0, 1, 2, ... in declaration order (a RuntimeError if not)."""
    for enum in (*KNOBS.values(), Format):
        if [int(m) for m in enum] != list(range(len(enum))):
            raise RuntimeError(f"knob codes of {enum.__name__} must be 0..{len(enum) - 1} in order")


check()
