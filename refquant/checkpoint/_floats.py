"""Float and block formats (fp8, NVFP4, NF4, MX): decode and re-quantize through refquant's
low-precision float formats (``rq.decode``/``rq.quantize(fmt=...)``, ``rq.nvfp4``, ``rq.nf4``).

fp8 (ModelOpt, torchao Float8Tensor, compressed-tensors float-quantized): codes are e4m3/e5m2
bit patterns, the scale per tensor or per row, ``s = fl32(amax / fmax)``, the codes re-quantized
under the float convention of :data:`FP8_CONVENTIONS`. NVFP4: e2m1 codes two
a byte (element 0 in the low nibble), e4m3 block scales per 16, a float32 global scale stored as
``amax / 2688`` (ModelOpt, torchao) or ``2688 / amax`` (compressed-tensors); each exporter's
recipe is a named convention of ``rq.nvfp4``. NF4
(bitsandbytes): codes two a byte, element 0 in the high nibble, absmax per block of 64 in float32
or double-quantized. A build of refquant without a kind's pieces raises NotImplementedError
naming them, and the report says so for that tensor only.
"""

from __future__ import annotations

import numpy as np

__all__ = ["run_float", "NEEDS", "row_multiple", "unswizzle", "fp8_convention", "nan_range"]

NEEDS = {
    "fp8": ("quantize", "decode", "float8_e4m3fn"),
    "nvfp4": ("nvfp4", "unpack"),
    "nf4": ("nf4", "unpack"),
    "mx": ("mx",),
}
NVFP4_GLOBAL = 448.0 * 6.0  # e4m3 max times e2m1 max


def _missing(kind):
    import refquant as rq

    need = NEEDS.get(kind)
    if need is None:
        return f"no checker for kind {kind!r}"
    lacking = [n for n in need if not hasattr(rq, n)]
    return ", ".join(f"rq.{n}" for n in lacking) if lacking else None


def row_multiple(q) -> int:
    """Rows per task must be a multiple of this (NF4 blocks run along the flattened weight)."""
    if q.kind != "nf4" or len(q.shape) != 2:
        return 1
    cols, block = q.shape[1], q.group or 64
    m = 1
    while (m * cols) % block:
        m += 1
    return m


def run_float(task, out):
    """Decode and re-quantize rows ``task.lo:task.hi`` of a float/block-format weight."""
    q = task.q
    lacking = _missing(q.kind)
    if lacking:
        raise NotImplementedError(f"{q.kind} weights need {lacking}, which this build of refquant lacks")
    check = _CHECKERS.get(q.kind)
    if check is None:
        raise NotImplementedError(f"{q.kind} weights ({q.format}): the {q.kind} checker is not wired yet")
    check(task, out)


def _count(d, cause, n):
    if n:
        d[cause] = d.get(cause, 0) + int(n)


def _files():
    from ._checks import open_file

    return open_file


def _part(q, role):
    path, name = q.part(role)
    return _files()(path), name


def _u8(a):
    a = np.asarray(a)
    return a.view(np.uint8) if a.dtype.itemsize == 1 else a


def _code_mismatch(out, stored, expected, x, lo_row, cols, scale_el, label="code"):
    """Count element code mismatches and keep a sample (index, x, stored, expected)."""
    differ = stored.astype(np.int64) != expected.astype(np.int64)
    n = int(differ.sum())
    out["codes"] += n
    if n:
        r, c = np.nonzero(differ.reshape(-1, cols))
        keep = slice(0, 4096)
        s = {"index": ((lo_row + r) * cols + c)[keep].astype(np.int64),
             "x": np.asarray(x).reshape(-1, cols)[r, c][keep],
             "code": stored.reshape(-1, cols)[r, c][keep].astype(np.int64),
             "expected": expected.reshape(-1, cols)[r, c][keep].astype(np.int64),
             "scale": np.asarray(scale_el).reshape(-1, cols)[r, c][keep] if scale_el is not None else None}
        out.setdefault("float_sample", []).append(s)


def _nibble_codes(out, stored, expected, x, lo_row, cols, packed, other_order):
    """Compare the 4-bit codes ``stored`` unpacked from the bytes ``packed`` (:func:`_code_mismatch`);
    where any differ, also count the mismatches of the codes ``packed`` holds in ``other_order``
    (``alt_order``: far fewer of them names a wrong nibble order)."""
    out["compared"] += stored.size
    before = out["codes"]
    _code_mismatch(out, stored, expected, x, lo_row, cols, None)
    if out["codes"] > before:
        import refquant as rq

        alt = rq.unpack(packed, 4, stored.size, order=other_order).reshape(expected.shape)
        out["alt_order"] = (out["alt_order"] or 0) + int((alt != expected).sum())


def _scale_codes(out, stored, expected):
    """Count block scale codes that differ, by signed code distance (one code = one ulp)."""
    diff = stored != expected
    out["scale_count"] += int(stored.size)
    out["scales"] += int(diff.sum())
    if diff.any():
        d = stored.astype(np.int64)[diff] - expected.astype(np.int64)[diff]
        for v, n in zip(*np.unique(np.clip(d, -1000, 1000), return_counts=True)):
            key = f"{int(v):+d}"
            out["scale_ulps"][key] = out["scale_ulps"].get(key, 0) + int(n)


def _wide_abs_max(x):
    from ._checks import _wide

    w = _wide(x)
    with np.errstate(invalid="ignore"):
        return float(np.nanmax(np.abs(w))) if w.size else 0.0


# ------------------------------------------------------------------------------------------------
# fp8


# the float convention of each format's fp8 weights (a name given to check() is used as it is)
FP8_CONVENTIONS = {"torchao": "torchao.float8", "modelopt": "modelopt.float8"}


def fp8_convention(q) -> str:
    """The ``rq.float_conventions`` row that re-quantizes the fp8 weight ``q``."""
    return FP8_CONVENTIONS.get(q.convention, q.convention)


def _fp8(task, out):
    import refquant as rq

    from ._checks import _sub_ranges, compare_scales, source_rows

    q = task.q
    fmt = getattr(rq, q.opt("fmt"), None)
    if fmt is None:
        raise NotImplementedError(f"fp8 format {q.opt('fmt')!r} is not a refquant FloatFormat")
    conv = fp8_convention(q)
    f, cname = _part(q, "codes")
    sf, sname = _part(q, "scale")
    rows, cols = q.shape
    s_all = np.asarray(sf.get(sname))
    per_tensor = s_all.size == 1
    dec = out["decode"]
    fast = _FastFp8.plan(fmt, conv)
    for a, b in _sub_ranges(task.lo, task.hi, cols):
        codes = _u8(f.rows(cname, a, b)).reshape(b - a, cols)
        s = s_all.reshape(()) if per_tensor else s_all.reshape(rows, -1)[a:b]
        out["elements"] += codes.size
        with np.errstate(invalid="ignore"):
            sf64 = np.asarray(s, np.float64)
            bad = ~(np.isfinite(sf64) & (sf64 > 0))
        _count(dec, "scale not finite or not positive", bad.sum())
        if np.max(np.where(bad, 0, sf64), initial=0.0) * fmt.max >= np.finfo(np.float32).max / 2:
            _count(dec, "scale * format max overflows float32", 1)
        x = None if task.source is None else source_rows(task, a, b, q.shape)
        if x is None or bad.any() or fast is None or not fast.takes(x):
            _count(dec, "NaN code", np.isnan(rq.decode(codes, fmt)).sum())
            if x is None:
                continue
            amax = None
            if not bad.any():
                kw = {} if per_tensor else {"axis": 0}
                expected = rq.quantize(x, s if per_tensor else s.reshape(-1), fmt=fmt, convention=conv, **kw)
                _code_mismatch(out, codes, expected, x, a, cols, np.broadcast_to(
                    sf64.reshape(-1, 1) if not per_tensor else sf64, codes.shape))
        else:  # one fused pass; the few elements it does not decide go through rq.quantize
            cand, amax, nans = fast.candidates(x, sf64, codes)
            _count(dec, "NaN code", nans)
            if cand.size:
                rr, cc = np.divmod(cand, cols)
                xs = np.asarray(x)[rr, cc]
                s_el = sf64.reshape(-1)[rr] if not per_tensor else np.broadcast_to(sf64, xs.shape)
                expected = rq.quantize(xs, s_el if not per_tensor else s, fmt=fmt, convention=conv,
                                       **({} if per_tensor else {"axis": 0}))
                differ = expected != codes[rr, cc]
                _record(out, rr[differ], cc[differ], a, cols, xs[differ], codes[rr, cc][differ],
                        expected[differ], s_el[differ])
        if per_tensor:
            out["global"] = {"amax": max(out.get("global", {}).get("amax", 0.0), _wide_abs_max(x)),
                             "stored": float(s_all.reshape(())), "rule": f"amax/{fmt.max:g}",
                             "divisor": float(fmt.max), "dtype": str(s_all.dtype)}
        if bad.any():
            continue
        out["compared"] += codes.size
        if not per_tensor:  # s = amax / fmax per row, rounded once to the rule's dtype
            if amax is None:
                amax = np.max(np.abs(_wide_rows(x)), axis=1)
            dt = np.asarray(x).dtype if q.scale_rule.endswith("x's dtype") else np.dtype(np.float32)
            new = (amax / float(fmt.max)).astype(dt).astype(s_all.dtype)
            compare_scales(np.ascontiguousarray(s.reshape(-1)), new, out)


def _record(out, r, c, lo_row, cols, x, stored, expected, scale_el):
    """Count differing codes (rows ``r``, columns ``c`` of the sub-chunk, in row-major order) and
    keep a sample, as :func:`_code_mismatch` does."""
    n = int(r.size)
    out["codes"] += n
    if n:
        keep = slice(0, 4096)
        out.setdefault("float_sample", []).append({
            "index": ((lo_row + r) * cols + c)[keep].astype(np.int64), "x": x[keep],
            "code": stored[keep].astype(np.int64), "expected": expected[keep].astype(np.int64),
            "scale": np.asarray(scale_el, np.float64)[keep]})


def nan_range(fmt):
    """``(mask, lo, span)`` as int32 with code ``c`` a NaN code exactly when ``(c & mask) - lo``
    (unsigned) is at most ``span``, checked on all 256 codes; None when no such triple fits.

    >>> import refquant as rq
    >>> [int(v) for v in nan_range(rq.float8_e4m3fn)], [int(v) for v in nan_range(rq.float8_e5m2)]
    ([127, 127, 0], [127, 125, 2])
    """
    nan = np.isnan(fmt.decode_table())
    codes = np.arange(nan.size, dtype=np.uint32)
    for mask in (0x7F, 0xFF):
        hits = np.unique(codes[nan] & mask)
        lo, span = (int(hits[0]), int(hits[-1] - hits[0])) if hits.size else (0xFFFF, 0)
        if (((codes & mask) - np.uint32(lo)).astype(np.uint32) <= span).tolist() == nan.tolist():
            return np.int32(mask), np.int32(lo), np.int32(span)
    return None


class _FastFp8:
    """The fused check of :func:`refquant._kernels._float.scaled_code_check` for a format and
    convention whose scaled cast it reproduces (round to nearest on a format with subnormals,
    exact element arithmetic, no boundary bands or NaN-bit codes); ``plan`` gives None otherwise."""

    def __init__(self, cast):
        from .._kernels import _float as k

        self.cast = cast
        self.f32 = cast.conv.quotient == "float32"
        self.sym = bool(k.symmetric_specials(cast.sp, cast.fmt.sign_bit))
        self.c32 = k.rne32_consts(*cast.fp, cast.sp)
        self.c64 = k.rne64_consts(*cast.fp, cast.sp)
        self.nan = nan_range(cast.fmt)
        self.buf = {}

    @classmethod
    def plan(cls, fmt, convention):
        from .._kernels import _float as k
        from ..floatquant import _Cast

        try:
            cast = _Cast(fmt, convention, None, None)
        except (ValueError, TypeError, NotImplementedError):
            return None  # rq.quantize raises the same for every element: the slow path reports it
        conv, sp, fmt = cast.conv, cast.sp, cast.fmt
        nearest = cast.mode == k.HALF_EVEN if conv.quotient == "float32" else cast.mode <= k.HALF_DOWN
        ok = (nearest and fmt.bits == 8 and fmt.subnormals and sp[k.SP_NEG] < 0
              and (sp[:k.SP_OVF_POS] >= 0).all() and conv.arithmetic == "exact"
              and not (conv.band and not cast.saturate)
              and (conv.nan_no_nan != "nan_bits" or fmt.has_nan)
              and not (fmt.name == "float8_e8m0fnu" and conv.e8m0 == "exponent_field")
              and nan_range(fmt) is not None)
        return cls(cast) if ok else None

    @staticmethod
    def takes(x):
        return np.asarray(x).dtype.name in ("bfloat16", "float16", "float32")

    def candidates(self, x, scale, codes):
        """``(flat indices to decide with rq.quantize, row amax as float64, NaN code count)``."""
        from .._kernels import _float as k

        x = np.asarray(x)
        if x.dtype.name == "bfloat16":
            xb, shift = x.view(np.uint16), 16
        else:
            xb, shift = np.asarray(x, np.float32).view(np.int32), 0
        r, c = codes.shape
        idx = self.buf.get(("idx", codes.size))
        if idx is None:
            idx = self.buf[("idx", codes.size)] = np.empty(codes.size, np.int64)
        sc = np.ascontiguousarray(np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (r,)))
        amax_bits = np.empty(r, np.int32)
        fmt, sp = self.cast.fmt, self.cast.sp
        zero_p, zero_n = np.int32(sp[k.SP_ZERO_POS]), np.int32(sp[k.SP_ZERO_NEG])
        m, nans = k.scaled_code_check(xb, shift, sc, np.ascontiguousarray(codes), self.f32, self.sym,
                                      self.c32, self.c64, fmt.mantissa_bits, fmt.emin, zero_p, zero_n,
                                      *self.nan, idx, amax_bits)
        return idx[:m].copy(), amax_bits.view(np.float32).astype(np.float64), int(nans)


def _wide_rows(x):
    from ._checks import _wide

    return _wide(x)


# ------------------------------------------------------------------------------------------------
# NVFP4


def _nvfp4(task, out):
    import refquant as rq

    from ._checks import _sub_ranges, source_rows

    q = task.q
    f, cname = _part(q, "codes")
    sf, sname = _part(q, "scale")
    gf, gname = _part(q, "global_scale")
    rows, cols = q.shape
    g = np.float32(np.asarray(gf.get(gname)).reshape(-1)[0])
    dec = out["decode"]
    if not (np.isfinite(g) and g > 0):
        _count(dec, "global scale not finite or not positive", 1)
        return
    for a, b in _sub_ranges(task.lo, task.hi, cols):
        packed = _u8(f.rows(cname, a, b))
        codes = rq.unpack(packed, 4, (b - a) * cols, order="low_first").reshape(b - a, cols)
        if q.opt("swizzled"):
            scodes = unswizzle(_u8(sf.get(sname)).reshape(-1), rows, cols // 16, a, b)
        else:
            scodes = _u8(sf.rows(sname, a, b)).reshape(b - a, cols // 16)
        out["elements"] += codes.size
        vals = rq.decode(scodes, rq.float8_e4m3fn)
        _count(dec, "block scale NaN", np.isnan(vals).sum())
        if task.source is None:
            continue
        x = source_rows(task, a, b, q.shape)
        out["global"] = {"amax": max(out.get("global", {}).get("amax", 0.0), _wide_abs_max(x)),
                         "stored": float(g), "rule": q.opt("global"), "divisor": NVFP4_GLOBAL,
                         "dtype": np.asarray(x).dtype.name if q.convention == "compressed_tensors"
                         else "float32"}
        eq, es, _ = rq.nvfp4.quantize(np.asarray(x), global_scale=g, convention=q.convention)
        _nibble_codes(out, codes, eq, x, a, cols, packed, "high_first")
        _scale_codes(out, scodes, es)


def unswizzle(flat, rows, cols, lo, hi):
    """Rows ``lo:hi`` of a ``[rows, cols]`` block-scale matrix stored in the cuBLAS block-scaling
    layout (torchao's ``is_swizzled_scales``): the matrix zero-padded to multiples of 128 rows and
    4 columns, cut into 128 x 4 tiles stored tile after tile along the row band, each tile's
    element ``(32 i + j, c)`` at ``16 j + 4 i + c``. Reads only the row bands it needs.

    >>> m = np.arange(6 * 5, dtype=np.uint8).reshape(6, 5)
    >>> tiles = np.zeros((128, 8), np.uint8); tiles[:6, :5] = m
    >>> flat = tiles.reshape(128, 2, 4).transpose(1, 0, 2).reshape(2, 4, 32, 4).transpose(0, 2, 1, 3)
    >>> bool((unswizzle(flat.reshape(-1), 6, 5, 2, 5) == m[2:5]).all())
    True
    """
    ncb = -(-cols // 4)
    band = ncb * 512
    out = []
    for rb in range(lo // 128, -(-hi // 128)):
        tile = np.asarray(flat[rb * band:(rb + 1) * band]).reshape(ncb, 32, 4, 4)  # [cb, j, i, c]
        m = tile.transpose(2, 1, 0, 3).reshape(128, ncb * 4)  # row 32 i + j
        r0 = rb * 128
        out.append(m[max(lo, r0) - r0:min(hi, r0 + 128) - r0, :cols])
    return np.concatenate(out) if len(out) > 1 else out[0]


# ------------------------------------------------------------------------------------------------
# NF4 (bitsandbytes)


def _nf4(task, out):
    import refquant as rq

    from ._checks import _sub_ranges, compare_scales, source_rows

    q = task.q
    rows, cols = q.shape
    block = q.group or 64
    f, cname = _part(q, "codes")
    flat = _u8(f.get(cname)).reshape(-1)
    order = "low_first" if q.order == ("low_first",) else "high_first"
    other = "low_first" if order == "high_first" else "high_first"
    absmax_all = _nf4_absmax(q, out["decode"])
    dec = out["decode"]
    for a, b in _sub_ranges(task.lo, task.hi, cols, row_multiple(q)):  # whole blocks: memory bounded
        lo_el, hi_el = a * cols, b * cols
        packed = flat[lo_el // 2: (hi_el + 1) // 2]
        codes = rq.unpack(packed, 4, hi_el - lo_el, order=order)
        absmax = absmax_all[lo_el // block: -(-hi_el // block)]
        out["elements"] += codes.size
        with np.errstate(invalid="ignore"):
            _count(dec, "absmax not finite or negative", (~(np.isfinite(absmax) & (absmax >= 0))).sum())
        if task.source is None:
            continue
        x = np.asarray(source_rows(task, a, b, q.shape)).reshape(-1)
        ec, st = rq.nf4.quantize(x, block=block, convention=q.convention)
        _nibble_codes(out, codes, ec, x, a, cols, packed, other)
        if q.part("nested_absmax") is None:  # absmax stored in float32: compare bits
            compare_scales(np.ascontiguousarray(absmax.astype(np.float32)),
                           np.asarray(st.absmax, np.float32), out)


def _nf4_absmax(q, dec):
    """The float32 absmax per block as bitsandbytes dequantizes it (double quantization:
    ``nested_quant_map[code] * nested_absmax[block // 256] + offset``); the stored code books are
    checked against bitsandbytes' NF4 and dynamic maps."""
    import refquant as rq

    f, name = _part(q, "scale")
    stored = np.asarray(f.get(name))
    if q.part("quant_map") is not None:
        qf, qn = _part(q, "quant_map")
        qm = np.asarray(qf.get(qn), np.float32)
        ref = np.asarray(rq.nf4.codebook("nf4", convention="bitsandbytes"), np.float32)
        if qm.shape != ref.shape or (qm.view(np.uint32) != ref.view(np.uint32)).any():
            _count(dec, "quant_map differs from bitsandbytes' NF4 code book", 1)
    if q.part("nested_absmax") is None:
        return stored.astype(np.float32).reshape(-1)
    nf, nn = _part(q, "nested_absmax")
    nested = np.asarray(nf.get(nn), np.float32).reshape(-1)
    offset = np.float32(q.opt("nested_offset") or 0.0)
    nblk = int(q.opt("nested_blocksize") or 256)
    if q.part("nested_quant_map") is not None:
        mf, mn = _part(q, "nested_quant_map")
        m = np.asarray(mf.get(mn), np.float32)
        ref = rq.nf4.dynamic_map().astype(np.float32)
        if m.shape != ref.shape or (m.view(np.uint32) != ref.view(np.uint32)).any():
            _count(dec, "nested_quant_map differs from bitsandbytes' dynamic map", 1)
    from ..nf4 import _dq_bitsandbytes_absmax

    return _dq_bitsandbytes_absmax(stored.astype(np.uint8).reshape(-1), nested, offset, nblk)


# ------------------------------------------------------------------------------------------------
# MX (OCP microscaling: e8m0 scale per block of 32)


def _mx(task, out):
    import refquant as rq

    from ._checks import _sub_ranges, source_rows

    q = task.q
    fmt = getattr(rq, q.opt("fmt") or "", None)
    if fmt is None:
        raise NotImplementedError(f"MX element format {q.opt('fmt')!r} is not a refquant FloatFormat")
    f, cname = _part(q, "codes")
    sf, sname = _part(q, "scale")
    rows, cols = q.shape
    block = q.group or 32
    dec = out["decode"]
    for a, b in _sub_ranges(task.lo, task.hi, cols):
        raw = _u8(f.rows(cname, a, b))
        if q.layout == "nibbles":
            codes = rq.unpack(raw, 4, (b - a) * cols, order="low_first").reshape(b - a, cols)
        else:
            codes = raw.reshape(b - a, cols)
        scodes = _u8(sf.rows(sname, a, b)).reshape(b - a, cols // block)
        out["elements"] += codes.size
        _count(dec, "scale NaN code (0xff)", (scodes == 0xFF).sum())
        _count(dec, "NaN code", np.isnan(rq.decode(codes, fmt)).sum())
        if task.source is None:
            continue
        x = source_rows(task, a, b, q.shape)
        ec, es = rq.mx.quantize(np.asarray(x), fmt, axis=-1, block=block, convention=q.convention)
        out["compared"] += codes.size
        before = out["codes"]
        _code_mismatch(out, codes, ec, x, a, cols, None)
        if out["codes"] > before and q.layout == "nibbles":
            alt = rq.unpack(raw, 4, (b - a) * cols, order="high_first").reshape(ec.shape)
            out["alt_order"] = (out["alt_order"] or 0) + int((alt != ec).sum())
        _scale_codes(out, scodes, es)


# the checker of each kind of NEEDS
_CHECKERS = {"fp8": _fp8, "nvfp4": _nvfp4, "nf4": _nf4, "mx": _mx}
