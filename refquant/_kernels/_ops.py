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


@kernel
def _block_sums(pu, su, ps, ss, steps, scratch, total):
    """``total[4*r + c] = sum_k u[r, k] * s[c, k]`` (int64) for the 4 x 4 block at addresses ``pu``,
    ``ps`` (row strides ``su``, ``ss``): int32 sums over chunks of at most GEMM_MAX_STEPS steps,
    each exact (see gemm_u8s8), added in int64. ``scratch``: 16 int32 of the caller's."""
    total[:] = 0
    for first in range(0, steps, GEMM_MAX_STEPS):
        offset = first * GEMM_STEP
        _vnni_block(pu + offset, su, ps + offset, ss, min(GEMM_MAX_STEPS, steps - first), scratch.ctypes.data,
                    4 * GEMM_COLS, 4)
        for q in range(GEMM_ROWS * GEMM_COLS):
            total[q] += scratch[q]


@kernel
def _store_block(total, ru, cs, zu, zs, k, out):
    """``out[r, c] = total[4*r + c] - zs[c]*ru[r] - zu[r]*cs[c] + k*zu[r]*zs[c]`` for the rows and
    columns ``out`` has (at most 4 each): the zero-point identity, exact in int64."""
    for r in range(min(GEMM_ROWS, out.shape[0])):
        for c in range(min(GEMM_COLS, out.shape[1])):
            out[r, c] = total[r * GEMM_COLS + c] - zs[c] * ru[r] - zu[r] * cs[c] + k * zu[r] * zs[c]


@parallel_kernel
def gemm_u8s8(u, s, steps, ru, cs, zu, zs, k, out):
    """``out[i, j] = sum_k (u[i, k] - zu[i]) * (s[j, k] - zs[j])`` in int64, from raw u8 x s8 sums.

    ``u`` (Mp, 64*steps) uint8 and ``s`` (Np, 64*steps) int8 have unit column strides and row counts
    that are multiples of 4 (padding rows and columns hold zeros); ``ru``, ``cs`` are the int64 row
    sums of u and s, ``zu``, ``zs`` the zero points (int64, one per output row / column), ``k`` the
    unpadded length; ``out`` is an int64 (M, N) view with any strides. The raw sums are taken in
    int32 over chunks of at most GEMM_MAX_STEPS * 64 = 65792 terms of magnitude <= 255 * 128, so
    every int32 partial sum, in any order, stays below 2**31 (exact); the chunks are added in int64
    and the zero points enter as ``raw - zs*ru - zu*cs + k*zu*zs``, exact in int64.
    """
    m, n = out.shape
    tasks_j = (n + _PANEL - 1) // _PANEL
    tasks_i = (m + 63) // 64
    for t in prange(tasks_j * tasks_i):
        tj, ti = t // tasks_i, t % tasks_i
        scratch = np.empty(GEMM_ROWS * GEMM_COLS, np.int32)
        total = np.empty(GEMM_ROWS * GEMM_COLS, np.int64)
        for i in range(ti * 64, min(m, ti * 64 + 64), GEMM_ROWS):
            for j in range(tj * _PANEL, min(n, tj * _PANEL + _PANEL), GEMM_COLS):
                _block_sums(u.ctypes.data + i * u.strides[0], u.strides[0], s.ctypes.data + j * s.strides[0],
                            s.strides[0], steps, scratch, total)
                _store_block(total, ru[i:], cs[j:], zu[i:], zs[j:], k, out[i:i + GEMM_ROWS, j:j + GEMM_COLS])


@parallel_kernel
def conv_u8s8(xp, kh, kw, sh, sw, dh, dw, ow, s, steps, cs, zu, zs, k, out):
    """One image and group of a 2-D convolution: ``out[p, j] = sum_k (col[p, k] - zu) * (s[j, k] - zs[j])``.

    ``col[p, (a*kw + b)*C + c] = xp[p // ow * sh + a*dh, p % ow * sw + b*dw, c]`` is built 64 pixels
    at a time (``xp``: the padded input, (H, W, C) uint8), then summed as in gemm_u8s8 against the
    packed weights ``s`` (row sums ``cs``); ``out`` is an int64 (pixels, M) view.
    """
    npix, m = out.shape
    c = xp.shape[2]
    for t in prange((npix + 63) // 64):
        cols = np.zeros((64, steps * GEMM_STEP), np.uint8)
        ru = np.zeros(64, np.int64)
        zrows = np.full(64, zu, np.int64)
        scratch = np.empty(GEMM_ROWS * GEMM_COLS, np.int32)
        total = np.empty(GEMM_ROWS * GEMM_COLS, np.int64)
        rows = min(64, npix - t * 64)
        for r in range(rows):
            p = t * 64 + r
            y, x = p // ow * sh, p % ow * sw
            for a in range(kh):
                for b in range(kw):
                    base = (a * kw + b) * c
                    for q in range(c):
                        v = xp[y + a * dh, x + b * dw, q]
                        cols[r, base + q] = v
                        ru[r] += v
        for i in range(0, rows, GEMM_ROWS):
            for j in range(0, m, GEMM_COLS):
                _block_sums(cols.ctypes.data + i * cols.strides[0], cols.strides[0],
                            s.ctypes.data + j * s.strides[0], s.strides[0], steps, scratch, total)
                _store_block(total, ru[i:], cs[j:], zrows[i:], zs[j:], k,
                             out[t * 64 + i:t * 64 + i + GEMM_ROWS, j:j + GEMM_COLS])


@kernel
def row_sums(a, out):
    """``out[i] = sum_k a[i, k]`` in int64."""
    for i in range(a.shape[0]):
        t = 0
        for j in range(a.shape[1]):
            t += np.int64(a[i, j])
        out[i] = t
