"""Low-precision float formats: fp8, fp6, fp4 and the e8m0 scale format, as data.

A :class:`FloatFormat` is a bit layout ``[sign] exponent mantissa`` (``exponent_bits`` E,
``mantissa_bits`` M, ``bias``) plus which special values exist. A code with exponent field ``e``
and mantissa field ``m`` is worth

* ``(-1)**sign * 2**(1 - bias) * m / 2**M`` when ``e == 0`` and the format has subnormals,
* ``(-1)**sign * 2**(e - bias) * (1 + m / 2**M)`` otherwise,

except for the special codes, which ``nan`` and ``has_inf`` name:

==============  ==========================================================================
``"ieee"``      exponent all ones: mantissa 0 is +-inf, any other mantissa NaN (e5m2)
``"all_ones"``  exponent and mantissa all ones is NaN, both signs (e4m3fn, e8m0fnu); no inf
``"neg_zero"``  the code ``1 << (bits - 1)`` (the "negative zero") is the single NaN (fnuz)
``"none"``      no NaN and no inf (fp6, fp4)
==============  ==========================================================================

A format has ``-0.0`` when it is signed and its NaN is not ``"neg_zero"``. ``subnormals=False``
(only with M = 0, e8m0) makes the exponent field 0 an ordinary binade: e8m0 has no zero.

>>> import refquant as rq
>>> f = rq.float8_e4m3fn
>>> f.max, f.min_normal, f.min_subnormal, f.bits
(448.0, 0.015625, 0.001953125, 8)
>>> rq.float4_e2m1fn.values().tolist()
[-6.0, -4.0, -3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass

import numpy as np

NAN_KINDS = ("ieee", "all_ones", "neg_zero", "none")


@dataclass(frozen=True)
class FloatFormat:
    """A low-precision binary float format (at most 8 bits), see the module docstring.

    Args:
        exponent_bits: E >= 1.
        mantissa_bits: M >= 0.
        bias: the exponent bias.
        has_inf: whether an exponent of all ones with mantissa 0 is +-inf (needs ``nan="ieee"``).
        nan: ``"ieee"``, ``"all_ones"``, ``"neg_zero"`` or ``"none"``.
        signed: whether a sign bit leads the code.
        subnormals: whether the exponent field 0 holds subnormals (else it is a normal binade).
        name: a label (the named formats carry ml_dtypes' names).

    >>> import refquant as rq
    >>> mine = rq.FloatFormat(3, 4, 3, name="e3m4")
    >>> mine.max, mine.min_subnormal, mine.has_negative_zero
    (30.0, 0.015625, True)
    """

    exponent_bits: int
    mantissa_bits: int
    bias: int
    has_inf: bool = False
    nan: str = "all_ones"
    signed: bool = True
    subnormals: bool = True
    name: str = ""

    def __post_init__(self):
        for arg in ("exponent_bits", "mantissa_bits", "bias"):
            v = getattr(self, arg)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{arg} must be an int; got {v!r}")
            object.__setattr__(self, arg, int(v))
        if self.exponent_bits < 1 or self.mantissa_bits < 0:
            raise ValueError(
                f"exponent_bits must be >= 1 and mantissa_bits >= 0; got "
                f"{self.exponent_bits} and {self.mantissa_bits}"
            )
        if self.nan not in NAN_KINDS:
            raise ValueError(f"nan must be one of {', '.join(NAN_KINDS)}; got {self.nan!r}")
        for arg in ("has_inf", "signed", "subnormals"):
            object.__setattr__(self, arg, bool(getattr(self, arg)))
        if self.bits > 8:
            raise ValueError(f"a FloatFormat has at most 8 bits; got {self.bits}")
        if self.has_inf != (self.nan == "ieee"):
            raise ValueError("has_inf=True goes with nan='ieee' and only with it")
        if self.nan == "neg_zero" and not self.signed:
            raise ValueError("nan='neg_zero' needs a signed format")
        if not self.subnormals and self.mantissa_bits:
            raise ValueError("subnormals=False is supported for mantissa_bits=0 only")
        if not self.name:
            object.__setattr__(self, "name", f"e{self.exponent_bits}m{self.mantissa_bits}b{self.bias}")
        if not np.isfinite(self._table).any() or np.nanmax(self._table) <= 0:
            raise ValueError(f"{self.name} has no positive finite value")

    @property
    def bits(self) -> int:
        """Width of a code: ``signed + exponent_bits + mantissa_bits``."""
        return int(self.signed) + self.exponent_bits + self.mantissa_bits

    @property
    def has_nan(self) -> bool:
        return self.nan != "none"

    @property
    def has_negative_zero(self) -> bool:
        return self.signed and self.nan != "neg_zero"

    @property
    def has_zero(self) -> bool:
        return self.subnormals

    @property
    def sign_bit(self) -> int:
        """The code bit that holds the sign (0 for an unsigned format)."""
        return 1 << (self.exponent_bits + self.mantissa_bits) if self.signed else 0

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal binade."""
        return (1 if self.subnormals else 0) - self.bias

    @property
    def max(self) -> float:
        """The largest finite value."""
        return float(np.nanmax(np.where(np.isinf(self._table), np.nan, self._table)))

    @property
    def min_normal(self) -> float:
        """The smallest positive normal value, ``2**emin``."""
        return 2.0**self.emin

    @property
    def min_subnormal(self) -> float:
        """The smallest positive value (``min_normal`` when there are no subnormals)."""
        return 2.0 ** (self.emin - (self.mantissa_bits if self.subnormals else 0))

    @property
    def max_code(self) -> int:
        """The code of ``+max``."""
        return int(self._codes_of(self.max)[0])

    @property
    def nan_code(self) -> int | None:
        """The canonical NaN code (None without NaN): ``1 << (bits - 1)`` for ``"neg_zero"``, else
        the positive quiet NaN: exponent all ones with the top mantissa bit (``"ieee"``) or every
        mantissa bit (``"all_ones"``) set."""
        if self.nan == "none":
            return None
        if self.nan == "neg_zero":
            return self.sign_bit
        ones = ((1 << self.exponent_bits) - 1) << self.mantissa_bits
        if self.nan == "ieee":
            return ones | (1 << (self.mantissa_bits - 1))
        return ones | ((1 << self.mantissa_bits) - 1)

    @property
    def inf_code(self) -> int | None:
        """The code of +inf, or None without inf."""
        return int(self._codes_of(np.inf)[0]) if self.has_inf else None

    def values(self) -> np.ndarray:
        """Every finite value once, ascending, as float64 (one zero, +0.0).

        >>> import refquant as rq
        >>> rq.float6_e3m2fn.values()[-3:].tolist()
        [20.0, 24.0, 28.0]
        """
        v = self._table[np.isfinite(self._table)]
        return np.unique(v) + 0.0

    def decode_table(self) -> np.ndarray:
        """The float64 value of every code ``0 .. 2**bits - 1`` (NaN codes NaN; a copy)."""
        return self._table.copy()

    def _codes_of(self, value: float) -> np.ndarray:
        return np.flatnonzero(self._table == value)

    @functools.cached_property
    def _table(self) -> np.ndarray:
        E, M = self.exponent_bits, self.mantissa_bits
        codes = np.arange(1 << self.bits)
        sign = np.where(codes & self.sign_bit, -1.0, 1.0) if self.signed else np.ones(codes.size)
        e = (codes >> M) & ((1 << E) - 1)
        m = codes & ((1 << M) - 1)
        top = (1 << E) - 1
        sub = (e == 0) & self.subnormals
        mag = np.where(
            sub,
            np.ldexp(m.astype(np.float64), 1 - self.bias - M),
            np.ldexp((m + (1 << M)).astype(np.float64), e - self.bias - M),
        )
        table = sign * mag
        nan = np.zeros(codes.size, bool)
        if self.nan == "ieee":
            table[(e == top) & (m == 0)] = sign[(e == top) & (m == 0)] * np.inf
            nan = (e == top) & (m != 0)
        elif self.nan == "all_ones":
            nan = (e == top) & (m == (1 << M) - 1)
        elif self.nan == "neg_zero":
            nan = codes == self.sign_bit
        table[nan] = np.copysign(np.nan, sign[nan])  # a NaN code's sign bit is its NaN's sign
        table.setflags(write=False)
        return table

    def __hash__(self):
        return hash((self.exponent_bits, self.mantissa_bits, self.bias, self.has_inf, self.nan,
                     self.signed, self.subnormals, self.name))

    def __str__(self) -> str:
        return self.name

    def __reduce__(self):
        return (FloatFormat, (self.exponent_bits, self.mantissa_bits, self.bias, self.has_inf,
                              self.nan, self.signed, self.subnormals, self.name))


float8_e4m3fn = FloatFormat(4, 3, 7, nan="all_ones", name="float8_e4m3fn")
float8_e4m3fnuz = FloatFormat(4, 3, 8, nan="neg_zero", name="float8_e4m3fnuz")
float8_e5m2 = FloatFormat(5, 2, 15, has_inf=True, nan="ieee", name="float8_e5m2")
float8_e5m2fnuz = FloatFormat(5, 2, 16, nan="neg_zero", name="float8_e5m2fnuz")
float8_e8m0fnu = FloatFormat(8, 0, 127, nan="all_ones", signed=False, subnormals=False,
                             name="float8_e8m0fnu")
float6_e2m3fn = FloatFormat(2, 3, 1, nan="none", name="float6_e2m3fn")
float6_e3m2fn = FloatFormat(3, 2, 3, nan="none", name="float6_e3m2fn")
float4_e2m1fn = FloatFormat(2, 1, 1, nan="none", name="float4_e2m1fn")

NAMED_FLOAT_FORMATS = {
    f.name: f
    for f in (float8_e4m3fn, float8_e4m3fnuz, float8_e5m2, float8_e5m2fnuz, float8_e8m0fnu,
              float6_e2m3fn, float6_e3m2fn, float4_e2m1fn)
}

__all__ = ["FloatFormat", "NAMED_FLOAT_FORMATS", "float_format", *NAMED_FLOAT_FORMATS]


def float_format(fmt, name: str = "fmt") -> FloatFormat:
    """``fmt`` as a :class:`FloatFormat` (a name of a named format is accepted).

    >>> float_format("float4_e2m1fn").max
    6.0
    """
    if isinstance(fmt, FloatFormat):
        return fmt
    if isinstance(fmt, str):
        try:
            return NAMED_FLOAT_FORMATS[fmt]
        except KeyError:
            raise ValueError(
                f"{name} must be a FloatFormat or one of {', '.join(NAMED_FLOAT_FORMATS)}; got {fmt!r}"
            ) from None
    raise TypeError(f"{name} must be a FloatFormat; got {fmt!r}")


def _check_table() -> None:
    """Internal consistency of the named formats (runs at import)."""
    for name, f in NAMED_FLOAT_FORMATS.items():
        assert f.name == name
        finite = f.values()
        assert finite[-1] == f.max and finite[finite > 0][0] == f.min_subnormal, name
        assert f._table[f.max_code] == f.max, name
        if f.signed:
            assert (f.values() == -f.values()[::-1]).all(), name


_check_table()


@functools.cache
def check_against_ml_dtypes() -> bool:
    """Compare every named format with ml_dtypes' finfo and casts when ml_dtypes is installed.

    Imports ml_dtypes on first call only (it is optional); returns False when it is absent and
    raises AssertionError on a disagreement. Called by the first encode or decode.
    """
    if importlib.util.find_spec("ml_dtypes") is None:
        return False
    import ml_dtypes

    for name, f in NAMED_FLOAT_FORMATS.items():
        dt = getattr(ml_dtypes, name, None)
        if dt is None:
            continue
        fi = ml_dtypes.finfo(dt)
        assert float(fi.max) == f.max, name
        assert float(fi.smallest_normal) == f.min_normal, name
        assert float(fi.smallest_subnormal) == f.min_subnormal, name
        assert fi.bits in (f.bits, 8), name
        ref = np.arange(1 << f.bits, dtype=np.uint8).view(dt).astype(np.float64)
        same = (ref == f._table) | (np.isnan(ref) & np.isnan(f._table))
        assert same.all(), name
    return True
