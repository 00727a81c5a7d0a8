"""Kernels of the integer operators: the float32 rows' requantization (fbgemm, onnxruntime, xnnpack)
in one pass, and the exact u8 x s8 GEMM and convolution on AVX-512 VNNI, optionally with that
requantization fused into their blocks."""

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

GEMM_ROWS = 4  # rows of u per block
GEMM_COLS = 64  # rows of s per block (four 16-lane vectors)
_I64_MAX = 2**63 - 1
GEMM_MAX_STEPS = 16448  # steps of 4 terms: 65792 terms of |u * s| <= 255 * 128 = 32640, every sum < 2**31


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
    """LLVM IR: ``out[r, c] = sum_{k < 4*steps} u[r, k] * s[c, k]`` for 4 rows of u (uint8) and 64 of s
    (int8), in int32 lanes.

    ``s`` comes packed: step ``t`` holds, for each of the 64 rows ``c``, the four bytes
    ``s[c, 4t:4t+4]`` (256 bytes). Each step broadcasts ``u[r, 4t:4t+4]`` to the 16 lanes and
    ``vpdpbusd`` adds the four u8 x s8 products of each lane to its int32 accumulator, without
    saturation. ``args``: the address of u[0, 0] and u's row stride, the address of the packed s,
    the number of steps (>= 1), and the address of out (4 x 64 int32, row-major)."""
    from llvmlite import ir
    from numba.core import cgutils

    i32, i64 = ir.IntType(32), ir.IntType(64)
    vec = ir.VectorType(i32, 16)
    nvec = GEMM_COLS // 16
    dot = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                                         "llvm.x86.avx512.vpdpbusd.512")
    u0, u_stride, s0, steps, o0 = args
    entry = builder.block
    loop = builder.function.append_basic_block("vnni_block_loop")
    done = builder.function.append_basic_block("vnni_block_done")
    builder.branch(loop)
    builder.position_at_end(loop)
    k = builder.phi(i64)
    k.add_incoming(ir.Constant(i64, 0), entry)
    acc = []
    for _ in range(GEMM_ROWS * nvec):
        p = builder.phi(vec)
        p.add_incoming(ir.Constant(vec, None), entry)
        acc.append(p)

    def at(base, offset, ty):
        return builder.inttoptr(builder.add(base, offset), ty.as_pointer())

    s_step = builder.add(s0, builder.mul(k, ir.Constant(i64, 4 * GEMM_COLS)))
    ss = [builder.load(at(s_step, ir.Constant(i64, 64 * c), vec), align=1) for c in range(nvec)]
    u_step = builder.add(u0, builder.mul(k, ir.Constant(i64, 4)))
    splat = ir.Constant(vec, [0] * 16)
    new = []
    for r in range(GEMM_ROWS):
        word = builder.load(at(u_step, builder.mul(u_stride, ir.Constant(i64, r)), i32), align=1)
        lanes = builder.insert_element(ir.Constant(vec, ir.Undefined), word, ir.Constant(i32, 0))
        broadcast = builder.shuffle_vector(lanes, ir.Constant(vec, ir.Undefined), splat)
        new.extend(builder.call(dot, [acc[r * nvec + c], broadcast, ss[c]]) for c in range(nvec))
    k_next = builder.add(k, ir.Constant(i64, 1))
    k.add_incoming(k_next, loop)
    for p, v in zip(acc, new):
        p.add_incoming(v, loop)
    builder.cbranch(builder.icmp_signed("<", k_next, steps), loop, done)
    builder.position_at_end(done)
    for q, v in enumerate(new):
        builder.store(v, at(o0, ir.Constant(i64, 64 * q), vec), align=4)
    return context.get_dummy_value()


def _make_block():
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def vnni_block(typingctx, u0, u_stride, s0, steps, out):
        return types.void(*([types.intp] * 5)), _block_codegen

    return vnni_block


_vnni_block = _make_block()


@kernel
def _block_sums(pu, su, ps, steps, scratch, total):
    """``total[r, c] = sum_k u[r, k] * s[c, k]`` (int64) for the block of 4 rows of u at address ``pu``
    (row stride ``su``) and 64 packed rows of s at ``ps``: int32 sums over chunks of at most
    GEMM_MAX_STEPS steps, each exact (see gemm_u8s8), added in int64. ``scratch``: (4, 64) int32."""
    total[:] = 0
    for first in range(0, steps, GEMM_MAX_STEPS):
        _vnni_block(pu + 4 * first, su, ps + 4 * GEMM_COLS * first, min(GEMM_MAX_STEPS, steps - first),
                    scratch.ctypes.data)
        total += scratch


@kernel
def _store_block(total, ru, cs, zu, zs, k, epilogue, out, bounds):
    """``a[r, c] = total[r, c] - zs[c]*ru[r] - zu[r]*cs[c] + k*zu[r]*zs[c] + bias[c]`` (the
    zero-point identity, exact in int64) for the rows and columns ``out`` has, stored as is, or,
    when ``epilogue`` says codes, requantized by ``_one`` (the float32 rows) with ``bounds``
    keeping the least and largest ``a``. ``epilogue``: (codes?, int64 bias, float32 multiplier,
    float32 bias term, has a float bias, zero point, qmin, qmax, int32-indefinite?)."""
    codes, ibias, mult, bterm, has_bias, zp, lo, hi, indefinite = epilogue
    rows, cols = min(GEMM_ROWS, out.shape[0]), min(GEMM_COLS, out.shape[1])
    least, largest = bounds[0], bounds[1]
    for r in range(rows):
        row, ur, zr = total[r], ru[r], zu[r]
        if codes:
            for c in range(cols):
                a = row[c] - zs[c] * ur - zr * cs[c] + k * zr * zs[c] + ibias[c]
                least, largest = min(least, a), max(largest, a)
                out[r, c] = _one(a, mult[c], bterm[c], has_bias, zp, lo, hi, indefinite)
        else:
            for c in range(cols):
                out[r, c] = row[c] - zs[c] * ur - zr * cs[c] + k * zr * zs[c] + ibias[c]
    bounds[0], bounds[1] = least, largest


@kernel
def _from(epilogue, j):
    """The epilogue's per-channel arrays from channel ``j`` on."""
    codes, ibias, mult, bterm, has_bias, zp, lo, hi, indefinite = epilogue
    return codes, ibias[j:], mult[j:], bterm[j:], has_bias, zp, lo, hi, indefinite


@parallel_kernel
def pack_s8(q, offset, out, sums):
    """``out[b, t, c, :] = q[64*b + c, 4t:4t+4] - offset`` as int8 (zero outside q), the layout the
    block kernel reads; ``sums[j] = sum_k (q[j, k] - offset)`` in int64."""
    n, k = q.shape
    for b in prange(out.shape[0]):
        for c in range(GEMM_COLS):
            j = b * GEMM_COLS + c
            total = 0
            for t in range(out.shape[1]):
                for e in range(4):
                    v = np.int64(q[j, 4 * t + e]) - offset if j < n and 4 * t + e < k else 0
                    out[b, t, c, e] = v
                    total += v
            if j < n:
                sums[j] = total


@parallel_kernel
def gemm_u8s8(u, s, ru, cs, zu, zs, k, epilogue, out, bounds):
    """``out[i, j] = sum_k (u[i, k] - zu[i]) * (s[j, k] - zs[j])`` in int64, from raw u8 x s8 sums.

    ``u`` (Mp, Kp) uint8 has unit column stride, Mp a multiple of 4 and Kp of 4 (padding holds
    zeros); ``s`` is packed by pack_s8 (Np/64, Kp/4, 64, 4); ``ru``, ``cs`` are the int64 row sums
    of u and s, ``zu``, ``zs`` the zero points (int64, one per output row / column), ``k`` the
    unpadded length; ``out`` is an (M, N) view with any strides: the int64 sums, or the codes of
    the fused requantization (``epilogue``, see _store_block; ``bounds[t]`` gets each task's least
    and largest sum). The raw sums are taken in int32 over chunks of at most
    4 * GEMM_MAX_STEPS = 65792 terms of magnitude <= 255 * 128, so every int32 partial sum, in any
    order, stays below 2**31 (exact); the chunks are added in int64 and the zero points enter as
    ``raw - zs*ru - zu*cs + k*zu*zs``, exact in int64.
    """
    m, n = out.shape
    steps = s.shape[1]
    tasks_i = (m + 63) // 64
    groups = (s.shape[0] + 3) // 4  # four blocks of s (256 rows) per task
    for t in prange(tasks_i * groups):
        ti, tg = t // groups, t % groups
        scratch = np.empty((GEMM_ROWS, GEMM_COLS), np.int32)
        total = np.empty((GEMM_ROWS, GEMM_COLS), np.int64)
        bounds[t, 0], bounds[t, 1] = _I64_MAX, -_I64_MAX - 1
        for b in range(4 * tg, min(s.shape[0], 4 * tg + 4)):
            j = b * GEMM_COLS
            for i in range(64 * ti, min(m, 64 * ti + 64), GEMM_ROWS):
                _block_sums(u.ctypes.data + i * u.strides[0], u.strides[0], s.ctypes.data + b * s.strides[0],
                            steps, scratch, total)
                _store_block(total, ru[i:], cs[j:], zu[i:], zs[j:], k, _from(epilogue, j),
                             out[i:i + GEMM_ROWS, j:j + GEMM_COLS], bounds[t])


@parallel_kernel
def conv_u8s8(xp, kh, kw, sh, sw, dh, dw, ow, s, cs, zu, zs, k, epilogue, out, bounds):
    """One image and group of a 2-D convolution: ``out[p, j] = sum_k (col[p, k] - zu) * (s[j, k] - zs[j])``.

    ``col[p, (a*kw + b)*C + c] = xp[p // ow * sh + a*dh, p % ow * sw + b*dw, c]`` is gathered 64
    pixels at a time (``xp``: the padded input, (H, W, C) uint8), then summed as in gemm_u8s8
    against the weights packed by pack_s8 (row sums ``cs``); ``out`` is a (pixels, M) view of the
    int64 sums or of the codes (``epilogue``, ``bounds``: as in gemm_u8s8).
    """
    npix, m = out.shape
    c = xp.shape[2]
    steps = s.shape[1]
    for t in prange((npix + 63) // 64):
        cols = np.zeros((64, 4 * steps), np.uint8)
        ru = np.zeros(64, np.int64)
        zrows = np.full(64, zu, np.int64)
        scratch = np.empty((GEMM_ROWS, GEMM_COLS), np.int32)
        total = np.empty((GEMM_ROWS, GEMM_COLS), np.int64)
        bounds[t, 0], bounds[t, 1] = _I64_MAX, -_I64_MAX - 1
        rows = min(64, npix - t * 64)
        for r in range(rows):
            p = t * 64 + r
            y, x = p // ow * sh, p % ow * sw
            for a in range(kh):
                for b in range(kw):
                    cols[r, (a * kw + b) * c:(a * kw + b + 1) * c] = xp[y + a * dh, x + b * dw]
            line = cols[r]
            total_r = 0
            for q in range(line.size):
                total_r += np.int64(line[q])
            ru[r] = total_r
        for b in range(s.shape[0]):
            j = b * GEMM_COLS
            for i in range(0, rows, GEMM_ROWS):
                _block_sums(cols.ctypes.data + i * cols.strides[0], cols.strides[0],
                            s.ctypes.data + b * s.strides[0], steps, scratch, total)
                _store_block(total, ru[i:], cs[j:], zrows[i:], zs[j:], k, _from(epilogue, j),
                             out[t * 64 + i:t * 64 + i + GEMM_ROWS, j:j + GEMM_COLS], bounds[t])


@kernel
def row_sums(a, out):
    """``out[i] = sum_k a[i, k]`` in int64."""
    for i in range(a.shape[0]):
        t = 0
        for j in range(a.shape[1]):
            t += np.int64(a[i, j])
        out[i] = t
