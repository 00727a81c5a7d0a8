"""Rounding modes: how a real quotient ``t = x / s`` becomes an integer.

With ``f = floor(t)`` and ``d = t - f`` (so ``0 <= d < 1``):

============  ========================================================
half_even     nearest; a tie (``d == 0.5``) goes to the even integer
half_away     nearest; a tie goes away from zero (C ``round``, TFLite)
half_up       nearest; a tie goes toward +inf (``floor(t + 1/2)``)
half_down     nearest; a tie goes toward -inf (``ceil(t - 1/2)``)
floor         ``f``
ceil          ``f + (d > 0)``
toward_zero   ``trunc(t)``
stochastic    ``f + (u < d)`` with ``u ~ U[0, 1)``: unbiased, ``E[q] = t``
============  ========================================================
"""

from __future__ import annotations

from ._codes import Rounding, names

ROUNDING_MODES = names(Rounding)
ROUNDING_CODES = {name: code for code, name in enumerate(ROUNDING_MODES)}
STOCHASTIC = int(Rounding.STOCHASTIC)


def rounding_code(name: str) -> int:
    """The kernel code of a rounding mode name; a ValueError lists the known names.

    >>> rounding_code("half_even"), rounding_code("stochastic")
    (0, 7)
    """
    try:
        return ROUNDING_CODES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"rounding must be one of {', '.join(ROUNDING_MODES)}; got {name!r}"
        ) from None
