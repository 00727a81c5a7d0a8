"""The one place that holds the Numba flags, and the scalar intrinsics every kernel shares.

Kernels are plain scalar loops compiled with ``cache=True`` and never ``fastmath``: fast-math lets
LLVM reassociate and contract ``a*b + c`` into a fused multiply-add, which would change bits.
Where a convention *does* specify a fused multiply-add, the kernels call :func:`fma32` /
:func:`fma64` explicitly (``llvm.fma``: one rounding, hardware or a correctly rounded libm call).
"""

import types as types_module

import numba
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

JIT_FLAGS = {"cache": True, "nogil": True, "fastmath": False}


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


fma32 = _llvm_fma(32)
fma32.__doc__ = "fma32(a, b, c) = float32(a*b + c) with one rounding (all float32 arguments)."
fma64 = _llvm_fma(64)
fma64.__doc__ = "fma64(a, b, c) = float64(a*b + c) with one rounding (all float64 arguments)."


def _bitcast(src, dst, src_ll, dst_ll):
    def typer(typingctx, a):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], dst_ll)

        return dst(src), codegen

    return intrinsic(typer)


f32_to_bits = _bitcast(types.float32, types.int32, ir.FloatType(), ir.IntType(32))
bits_to_f32 = _bitcast(types.int32, types.float32, ir.IntType(32), ir.FloatType())
f64_to_bits = _bitcast(types.float64, types.int64, ir.DoubleType(), ir.IntType(64))
bits_to_f64 = _bitcast(types.int64, types.float64, ir.IntType(64), ir.DoubleType())
