"""Requantization kernel of the float32 rows (fbgemm, onnxruntime, xnnpack): one pass, no temporaries."""

import numpy as np

from ._jit import kernel, parallel_kernel, prange

INT32_MIN = -(2**31)


@kernel
def _one(a, m, b, has_bias, zp, lo, hi, indefinite):
    v = np.float32(a)
    if has_bias:
        v = np.float32(v + b)
    v = np.float32(v * m)
    r = np.rint(v)
    if indefinite:
        q = np.int64(r) if abs(r) < 2147483648.0 else np.int64(INT32_MIN)
    else:
        q = np.int64(min(max(r, np.float32(-4.0e18)), np.float32(4.0e18))) if r == r else np.int64(0)
    q += zp
    return lo if q < lo else (hi if q > hi else q)


@parallel_kernel
def requantize_f32(acc, mult, bterm, has_bias, zp, lo, hi, indefinite, out):
    """``out[o, c, i] = clamp(rne(f32(f32(f32(acc) + bterm[c]) * mult[c])) + zp, lo, hi)``.

    ``acc`` is int64 of shape (outer, channels, inner); ``mult`` and ``bterm`` are float32 of
    length ``channels`` or 1; every operation is one float32 operation (no contraction), ``rne``
    is round half to even; with ``indefinite`` a product at or beyond 2**31 in magnitude (or NaN)
    becomes INT32_MIN, as x86's conversion, else it saturates.
    """
    n_outer, n_ch, n_inner = acc.shape
    per_m, per_b = mult.size > 1, bterm.size > 1
    if n_inner == 1:  # channels last: the channel loop is the inner one
        for o in prange(n_outer):
            for c in range(n_ch):
                out[o, c, 0] = _one(acc[o, c, 0], mult[c if per_m else 0], bterm[c if per_b else 0],
                                    has_bias, zp, lo, hi, indefinite)
    else:
        for oc in prange(n_outer * n_ch):
            o, c = oc // n_ch, oc % n_ch
            m = mult[c if per_m else 0]
            b = bterm[c if per_b else 0]
            for i in range(n_inner):
                out[o, c, i] = _one(acc[o, c, i], m, b, has_bias, zp, lo, hi, indefinite)


# --------------------------------------------------------------------------------------------
# u8 x s8 integer GEMM with exact int32 accumulation (x86 VNNI: vpdpbusd)

GEMM_ROWS = GEMM_COLS = 4  # a 4 x 4 block of outputs per call of the block kernel
GEMM_STEP = 64  # bytes of K per vpdpbusd (16 int32 lanes, four products each)
GEMM_MAX_STEPS = 1028  # 1028 * 64 = 65792 terms of |u * s| <= 255 * 128 = 32640: every sum < 2**31


def vnni_available() -> bool:
    """Whether Numba compiles for a CPU with AVX-512 VNNI (the features Numba itself targets)."""
    import numba

    if numba.config.DISABLE_JIT:
        return False
    from numba.core.codegen import get_host_cpu_features

    features = numba.config.CPU_FEATURES
    if features is None:
        features = get_host_cpu_features()
    have = set(str(features).split(","))
    return {"+avx512f", "+avx512bw", "+avx512vnni"} <= have


def _block_codegen(context, builder, signature, args):
    """LLVM IR: out[r, c] = sum over ``steps`` * 64 bytes of u[r, k] * s[c, k] (u8 x s8, int32 lanes).

    The 16 accumulators are <16 x i32> vectors; ``vpdpbusd`` adds four u8 x s8 products to each
    lane, without saturation; the lanes are added at the end. ``args``: addresses and byte strides
    of u's and s's first rows, the number of steps (>= 1), the address of out[0, 0] and its row
    and column strides in bytes."""
    from llvmlite import ir
    from numba.core import cgutils

    i32, i64 = ir.IntType(32), ir.IntType(64)
    vec = ir.VectorType(i32, 16)
    dot = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                                         "llvm.x86.avx512.vpdpbusd.512")
    hsum = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [vec]),
                                          "llvm.vector.reduce.add.v16i32")
    u0, u_stride, s0, s_stride, steps, o0, o_row, o_col = args
    entry = builder.block
    loop = builder.function.append_basic_block("vnni_block_loop")
    done = builder.function.append_basic_block("vnni_block_done")
    builder.branch(loop)
    builder.position_at_end(loop)
    k = builder.phi(i64)
    k.add_incoming(ir.Constant(i64, 0), entry)
    acc = []
    for _ in range(GEMM_ROWS * GEMM_COLS):
        p = builder.phi(vec)
        p.add_incoming(ir.Constant(vec, None), entry)
        acc.append(p)
    offset = builder.mul(k, ir.Constant(i64, GEMM_STEP))

    def load(base, stride, row):
        addr = builder.add(builder.add(base, builder.mul(stride, ir.Constant(i64, row))), offset)
        return builder.load(builder.inttoptr(addr, vec.as_pointer()), align=1)

    us = [load(u0, u_stride, r) for r in range(GEMM_ROWS)]
    ss = [load(s0, s_stride, c) for c in range(GEMM_COLS)]
    new = [builder.call(dot, [acc[r * GEMM_COLS + c], us[r], ss[c]])
           for r in range(GEMM_ROWS) for c in range(GEMM_COLS)]
    k_next = builder.add(k, ir.Constant(i64, 1))
    k.add_incoming(k_next, loop)
    for p, v in zip(acc, new):
        p.add_incoming(v, loop)
    builder.cbranch(builder.icmp_signed("<", k_next, steps), loop, done)
    builder.position_at_end(done)
    for r in range(GEMM_ROWS):
        for c in range(GEMM_COLS):
            addr = builder.add(o0, builder.add(builder.mul(o_row, ir.Constant(i64, r)),
                                               builder.mul(o_col, ir.Constant(i64, c))))
            total = builder.call(hsum, [new[r * GEMM_COLS + c]])
            builder.store(total, builder.inttoptr(addr, i32.as_pointer()))
    return context.get_dummy_value()


def _make_block():
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def vnni_block(typingctx, u0, u_stride, s0, s_stride, steps, o0, o_row, o_col):
        return types.void(*([types.intp] * 8)), _block_codegen

    return vnni_block


_vnni_block = _make_block()

_PANEL = 128  # rows of s per task: 128 rows of up to 4 KiB stay in the L2 cache


@parallel_kernel
def gemm_u8s8(u, s, k0, steps, out):
    """``out[i, j] = sum_{k0 <= k < k0 + 64*steps} u[i, k] * s[j, k]`` in int32 (u uint8, s int8).

    ``u`` (M, Kp) and ``s`` (N, Kp) have unit column strides, M and N multiples of 4,
    1 <= steps <= GEMM_MAX_STEPS; ``out`` is an int32 (M, N) view with any strides. Each sum has
    at most 65792 terms of magnitude <= 255 * 128, so every partial sum, in any order, is below
    2**31: the int32 lanes never wrap and the result is exact.
    """
    m, n = u.shape[0], s.shape[0]
    tasks_j = (n + _PANEL - 1) // _PANEL
    tasks_i = (m + 63) // 64
    pu, ps, po = u.ctypes.data, s.ctypes.data, out.ctypes.data
    su, ss = u.strides[0], s.strides[0]
    o_row, o_col = out.strides[0], out.strides[1]
    for t in prange(tasks_j * tasks_i):
        tj, ti = t // tasks_i, t % tasks_i
        for i in range(ti * 64, min(m, ti * 64 + 64), GEMM_ROWS):
            for j in range(tj * _PANEL, min(n, tj * _PANEL + _PANEL), GEMM_COLS):
                _vnni_block(pu + i * su + k0, su, ps + j * ss + k0, ss, steps,
                            po + i * o_row + j * o_col, o_row, o_col)


@parallel_kernel
def row_sums(a, out):
    """``out[i] = sum_k a[i, k]`` in int64."""
    for i in prange(a.shape[0]):
        t = 0
        for k in range(a.shape[1]):
            t += np.int64(a[i, k])
        out[i] = t


@parallel_kernel
def corrected(raw, ru, cs, zu, zs, k, out):
    """``out[i, j] = raw[i, j] - zs[j]*ru[i] - zu[i]*cs[j] + k*zu[i]*zs[j]`` in int64: the sum of
    ``(u - zu[i]) * (s - zs[j])`` from the sum of ``u * s`` and the row sums ``ru`` of u, ``cs`` of s."""
    for i in prange(raw.shape[0]):
        for j in range(raw.shape[1]):
            out[i, j] = (np.int64(raw[i, j]) - zs[j] * ru[i] - zu[i] * cs[j] + k * zu[i] * zs[j])


@parallel_kernel
def im2col_u8(xp, kh, kw, sh, sw, dh, dw, oh, ow, cols):
    """``cols[p, (a*kw + b)*C + c] = xp[p // ow * sh + a*dh, p % ow * sw + b*dw, c]`` (xp: H, W, C)."""
    c = xp.shape[2]
    for p in prange(oh * ow):
        y, x = p // ow * sh, p % ow * sw
        for a in range(kh):
            for b in range(kw):
                base = (a * kw + b) * c
                for t in range(c):
                    cols[p, base + t] = xp[y + a * dh, x + b * dw, t]
