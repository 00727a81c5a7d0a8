"""The one place that holds the Numba flags, and the scalar intrinsics every kernel shares.

Kernels are plain scalar loops compiled with ``cache=True`` and never ``fastmath``: fast-math lets
LLVM reassociate and contract ``a*b + c`` into a fused multiply-add, which would change bits.
Where a convention *does* specify a fused multiply-add, the kernels call :func:`fma32` /
:func:`fma64` explicitly (``llvm.fma``: one rounding, hardware or a correctly rounded libm call).
"""

import types as types_module

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

# error_model="numpy": a float division by zero gives IEEE's inf or NaN, as NumPy and every backend
# do, instead of Numba's default ZeroDivisionError
JIT_FLAGS = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}


def kernel(fn):
    """Compile ``fn`` with the project's Numba flags (serial)."""
    return numba.njit(**JIT_FLAGS)(fn)


def inline_kernel(fn):
    """Compile ``fn`` with the project's Numba flags, inlined into its callers at the Numba IR
    level (a caller's constant arguments then reach its branches before LLVM optimizes)."""
    return numba.njit(inline="always", **JIT_FLAGS)(fn)


def parallel_kernel(fn):
    """Compile ``fn`` with the project's Numba flags and ``parallel=True`` (use ``numba.prange``)."""
    return numba.njit(parallel=True, **JIT_FLAGS)(fn)


prange = numba.prange

PARALLEL_MIN_SIZE = 1 << 16  # below this, waking the thread pool costs more than it saves


class Sized:
    """A kernel compiled twice: serial for small arrays, parallel (prange) for large ones.

    Call it with the element count first: ``k(n, *args)``.
    """

    def __init__(self, fn):
        twin = types_module.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                         fn.__defaults__, fn.__closure__)
        twin.__qualname__ = fn.__qualname__ + "_serial"  # its own Numba cache file
        self.serial = kernel(twin)
        self.parallel = parallel_kernel(fn)
        self.__doc__ = fn.__doc__

    def __call__(self, n, *args):
        return (self.parallel if n >= PARALLEL_MIN_SIZE else self.serial)(*args)


def sized_kernel(fn):
    """Decorator: compile ``fn`` as a :class:`Sized` pair."""
    return Sized(fn)


def _llvm_fma(width):
    flt = ir.FloatType() if width == 32 else ir.DoubleType()
    nb = types.float32 if width == 32 else types.float64

    def typer(typingctx, a, b, c):
        def codegen(context, builder, signature, args):
            fn = builder.module.declare_intrinsic("llvm.fma", [flt], ir.FunctionType(flt, [flt] * 3))
            return builder.call(fn, args)

        return nb(nb, nb, nb), codegen

    return intrinsic(typer)


def _exact_fma(a, b, c):
    """The real ``a*b + c`` of floats as a Fraction, or the IEEE result where one is not finite."""
    from fractions import Fraction

    a, b, c = float(a), float(b), float(c)
    if not (np.isfinite(a) and np.isfinite(b)):
        return a * b + c
    if not np.isfinite(c):  # the exact product is finite, whatever float64 makes of it
        return c
    v = Fraction(a) * Fraction(b) + Fraction(c)
    if v == 0:  # IEEE's sign of an exact zero: -0.0 only for (+-0 * x) + (-0.0) of equal signs
        return a * b + c if a == 0 or b == 0 else 0.0
    return v


def _to_float(v):
    """A Fraction rounded once to float64 (int / int division rounds correctly), +-inf beyond."""
    try:
        return float(v)
    except OverflowError:
        return float("inf") if v > 0 else float("-inf")


def _py_fma64(a, b, c):
    v = _exact_fma(a, b, c)
    return v if isinstance(v, float) else _to_float(v)


def _py_fma32(a, b, c):
    v = _exact_fma(np.float32(a), np.float32(b), np.float32(c))
    with np.errstate(over="ignore"):
        if isinstance(v, float):
            return np.float32(v)
        r = _to_float(v)  # rounded to odd in float64, then once to float32: no double rounding
        if r != v and np.isfinite(r) and np.float64(r).view(np.int64) % 2 == 0:
            r = float(np.nextafter(r, np.inf if v > r else -np.inf))
        return np.float32(r)


if numba.config.DISABLE_JIT:  # kernels run as Python: the intrinsics get exact Python twins
    fma32, fma64 = _py_fma32, _py_fma64
else:
    fma32 = _llvm_fma(32)
    fma64 = _llvm_fma(64)
fma32.__doc__ = "fma32(a, b, c) = float32(a*b + c) with one rounding (all float32 arguments)."
fma64.__doc__ = "fma64(a, b, c) = float64(a*b + c) with one rounding (all float64 arguments)."


def _bitcast(src, dst, src_ll, dst_ll):
    def typer(typingctx, a):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], dst_ll)

        return dst(src), codegen

    return intrinsic(typer)


if numba.config.DISABLE_JIT:
    def _view(src, dst):
        return lambda a: src(a).view(dst)

    f32_to_bits, bits_to_f32 = _view(np.float32, np.int32), _view(np.int32, np.float32)
    f64_to_bits, bits_to_f64 = _view(np.float64, np.int64), _view(np.int64, np.float64)
else:
    f32_to_bits = _bitcast(types.float32, types.int32, ir.FloatType(), ir.IntType(32))
    bits_to_f32 = _bitcast(types.int32, types.float32, ir.IntType(32), ir.FloatType())
    f64_to_bits = _bitcast(types.float64, types.int64, ir.DoubleType(), ir.IntType(64))
    bits_to_f64 = _bitcast(types.int64, types.float64, ir.IntType(64), ir.DoubleType())


def _target_has_f16c() -> bool:
    """Whether the CPU Numba compiles for converts between float32 and float16 in hardware (x86's
    F16C, which LLVM uses for ``fptrunc`` / ``fpext`` to and from ``half``). Without it LLVM would
    call a runtime helper the JIT may lack, so the kernels then convert by integer arithmetic;
    the bits are the same either way (IEEE round to nearest even)."""
    if numba.config.DISABLE_JIT:
        return False
    from numba.core.codegen import get_host_cpu_features

    features = numba.config.CPU_FEATURES
    if features is None:
        features = get_host_cpu_features()
    return "+f16c" in str(features).split(",")


HAS_F16C = _target_has_f16c()


def _f32_to_f16_typer(typingctx, v):
    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(types.float32), codegen


def _f16_to_f32_typer(typingctx, b):
    if not isinstance(b, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = args[0]
        if v.type.width > 16:
            v = builder.trunc(v, ir.IntType(16))
        elif v.type.width < 16:
            v = builder.zext(v, ir.IntType(16))
        return builder.fpext(builder.bitcast(v, ir.HalfType()), ir.FloatType())

    return types.float32(b), codegen


f32_to_f16_hw = intrinsic(_f32_to_f16_typer)
f32_to_f16_hw.__doc__ = ("f32_to_f16_hw(v): the float16 bits (uint16) of the float32 v rounded half to "
                         "even by the CPU's conversion (only where HAS_F16C).")
f16_to_f32_hw = intrinsic(_f16_to_f32_typer)
f16_to_f32_hw.__doc__ = ("f16_to_f32_hw(b): the float32 that the float16 bits b (the low 16 bits of an "
                         "integer) encode, by the CPU's conversion (only where HAS_F16C).")
