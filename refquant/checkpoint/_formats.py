"""Format adapters: which stored tensors form one quantized weight, and how to read them.

Each adapter recognises a group of stored tensors by their names, shapes and dtypes (and the
checkpoint's config files when present) and describes it as a :class:`QTensor`: the logical
weight shape ``(rows, cols)`` (rows = output channels), the code range, the scale granularity,
how the codes are packed, what the zero point means, and the refquant convention that
reproduces the format. :func:`load_block` then reads rows ``lo:hi`` of such a weight as codes,
scales and zero points, unpacked, in the logical layout.

Packed integer layouts (``bits`` per code, ``32 // bits`` codes per int32 word, code ``j`` of a
word in bits ``bits*j`` and up):

======================  ==========================  ===============================================
format                  codes                       zero point
======================  ==========================  ===============================================
GPTQ                    int32 [K/8, N], along K     int32 [K/G, N/8]; v1 stores z - 1 (read as
                                                    ``word + 0x11111111``), v2 stores z
AWQ (GEMM)              int32 [K, N/8], along N,    int32 [K/G, N/8], same interleave
                        interleave 0 2 4 6 1 3 5 7
compressed-tensors      int32 [N, K/8], along K,    none (symmetric) or packed along N
pack-quantized          stored code + 2**(b-1)
bitsandbytes NF4        uint8, two per byte,        --
                        element 0 in the high nibble
======================  ==========================  ===============================================
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["QTensor", "detect", "load_block", "FORMATS", "AWQ_ORDER"]

FORMATS = ("auto", "torchao", "compressed-tensors", "gptq", "gptq_v2", "awq", "modelopt",
           "bitsandbytes")
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # word nibble i holds logical column AWQ_ORDER[i] of its 8
# compressed-tensors quantizes with clamp(x / s + z) rounded half to even, each op in the weight's
# dtype: the division and the zero point before rounding of the "brevitas" row
CT_CONVENTION = "brevitas"


@dataclass(frozen=True)
class QTensor:
    """One quantized weight as stored: ``parts`` maps roles (``codes``, ``scale``, ``zero_point``,
    ``g_idx``, ``global_scale``, ...) to (file, stored tensor name).

    ``kind``: ``"int"`` (affine integer codes), ``"fp8"``, ``"nvfp4"``, ``"mx"``, ``"nf4"``.
    ``group``: elements sharing one scale along the columns (``cols`` per row; None per tensor).
    ``layout``: ``"plain"``, ``"gptq"``, ``"awq"``, ``"ct_pack"``, ``"bnb_nf4"``, ``"nibbles"``.
    ``zero``: ``"none"``, ``"stored"``, ``"gptq_v1"``, ``"gptq_v2"``.
    ``rtn``: None when the codes are round-to-nearest of the source under ``convention``, else why
    not (they are then checked by decode only). ``scale_rule``: how the scale follows from the
    source rows (None: not recomputed). ``problem``: why it cannot be checked at all.
    """

    name: str
    format: str
    kind: str
    parts: tuple
    shape: tuple
    qmin: int = 0
    qmax: int = 0
    group: int | None = None
    layout: str = "plain"
    zero: str = "none"
    bits: int = 8
    symmetric: bool | None = None
    rtn: str | None = None
    convention: str = "exact"
    scale_rule: str | None = None
    dtype: str = "float32"
    order: tuple = ()
    problem: str | None = None
    options: tuple = field(default=())

    def part(self, role):
        return dict(self.parts).get(role)

    def opt(self, key, default=None):
        return dict(self.options).get(key, default)


# ------------------------------------------------------------------------------------------------
# detection


def _configs(path) -> dict:
    """JSON config files next to the checkpoint (config.json, quantize_config.json,
    hf_quant_config.json), parsed; unreadable ones are ignored by name."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    out = {}
    for name in ("config.json", "quantize_config.json", "quant_config.json", "hf_quant_config.json"):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            try:
                with open(p, encoding="utf-8") as fh:
                    out[name] = json.load(fh)
            except (OSError, ValueError):
                out[name] = {}
    return out


def _quant_config(configs) -> dict:
    qc = dict(configs.get("quantize_config.json") or configs.get("quant_config.json") or {})
    qc.update((configs.get("config.json") or {}).get("quantization_config") or {})
    hf = configs.get("hf_quant_config.json") or {}
    qc.update(hf.get("quantization") or hf)
    return qc


def detect(index: dict, path, format="auto", metadata=None) -> tuple[list, list]:
    """``(qtensors, others)``: the quantized weights found in ``index`` (stored name ->
    (file, :class:`~refquant.checkpoint._safetensors.TensorInfo`)) and the stored names that belong
    to none (plain tensors: biases, norms, unquantized layers)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format!r}")
    qc = _quant_config(_configs(path))
    metadata = metadata or {}
    found, used = [], set()
    for adapter in _ADAPTERS:
        for q in adapter(index, qc, metadata, format):
            if any(p[1] in used for _, p in q.parts):
                continue
            found.append(q)
            used.update(p[1] for _, p in q.parts)
    others = [n for n in index if n not in used and not n.endswith(".input_scale")]
    found.sort(key=lambda q: q.name)
    return found, others


def _want(format, *names):
    return format == "auto" or format in names


def _modules_with(index, suffix):
    """``(module, tensor name)`` for each tensor of ``index`` named ``module + suffix``."""
    return [(n[: -len(suffix)], n) for n in index if n.endswith(suffix)]


def _shape(index, name):
    return index[name][1].shape


def _dtype(index, name):
    return index[name][1].dtype


def _part(index, name):
    return index[name][0], name


_FLOAT_DT = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}


def _torchao(index, qc, metadata, format):
    if not _want(format, "torchao") or "tensor_names" not in metadata:
        return
    try:
        names = json.loads(metadata["tensor_names"])
    except ValueError:
        return
    for tname in names:
        try:
            meta = json.loads(metadata.get(tname, "{}"))
        except ValueError:
            meta = {}
        kind = meta.get("_type")
        if kind in (None, "Tensor"):
            continue
        mod, _, attr = tname.rpartition(".")
        prefix = f"{mod}._{attr}_"
        parts = {n[len(prefix):]: n for n in index if n.startswith(prefix)}
        data = meta.get("_data") or {}
        dtype = (data.get("dtype") or {}).get("_data", "float32")
        base = dict(name=tname, format="torchao", parts=(), shape=(), dtype=dtype)
        if "qdata" not in parts or "scale" not in parts:
            yield QTensor(**base, kind="?", problem=f"torchao {kind}: stored parts {sorted(parts)} lack "
                          f"qdata or scale", parts=tuple((k, _part(index, v)) for k, v in parts.items()))
            continue
        shape = _shape(index, parts["qdata"])
        roles = {"codes": parts["qdata"], "scale": parts["scale"]}
        if "zero_point" in parts:
            roles["zero_point"] = parts["zero_point"]
        if "per_tensor_scale" in parts:
            roles["global_scale"] = parts["per_tensor_scale"]
        base["parts"] = tuple((k, _part(index, v)) for k, v in roles.items())
        block = data.get("block_size") or [1, shape[-1] if shape else 1]
        if kind in ("Int8Tensor", "IntxUnpackedToInt8Tensor"):
            target = (data.get("target_dtype") or {}).get("_data", "int8")
            bits = int("".join(c for c in target if c.isdigit()) or 8)
            signed = not target.startswith("u")
            lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
            if len(shape) != 2 or len(block) != 2 or block[0] != 1:
                yield QTensor(**{**base, "shape": tuple(shape)}, kind="int",
                              problem=f"torchao {kind} with block_size {block} (only [1, G] is read)")
                continue
            sym = "zero_point" not in parts or kind == "Int8Tensor"
            yield QTensor(**{**base, "shape": tuple(shape)}, kind="int", qmin=lo, qmax=hi,
                          group=int(block[1]), bits=bits, symmetric=sym,
                          zero="stored" if "zero_point" in parts else "none", convention="torchao",
                          scale_rule="torchao_symmetric" if sym else None)
        elif kind == "Float8Tensor":
            yield QTensor(**{**base, "shape": tuple(shape)}, kind="fp8", group=int(block[-1]),
                          convention="torchao", scale_rule="amax/fmax in x's dtype",
                          options=(("fmt", _FP8_OF.get(_dtype(index, parts["qdata"]), "?")),))
        elif kind == "NVFP4Tensor":
            swizzled = bool(data.get("is_swizzled_scales"))
            rows, cols = (shape[0], shape[1] * 2) if len(shape) == 2 else (0, 0)
            want = (-(-rows // 128) * 128 * -(-(cols // 16) // 4) * 4) if swizzled else rows * (cols // 16)
            got = int(np.prod(_shape(index, parts["scale"])))
            bad = None if got == want and rows else \
                f"torchao NVFP4 scale holds {got} codes; a {list(shape)} qdata needs {want}"
            if "per_tensor_scale" not in parts:
                bad = bad or "torchao NVFP4 without per_tensor_scale is not modelled"
            yield QTensor(**{**base, "shape": (rows, cols)}, kind="nvfp4", group=16, layout="nibbles",
                          convention="torchao", problem=bad,
                          options=(("global", "decode"), ("swizzled", swizzled)))
        elif kind == "MXTensor":
            elem = (data.get("elem_dtype") or {}).get("_data", "?")
            packed = elem.startswith("float4")
            bad = "swizzled MX scales are not read" if data.get("is_swizzled_scales") else None
            mode = str((data.get("scaling_mode") or {}).get("_data", "floor")).lower()
            yield QTensor(**{**base, "shape": (shape[0], shape[1] * (2 if packed else 1))}, kind="mx",
                          group=int(data.get("block_size") or 32), layout="nibbles" if packed else "plain",
                          convention=f"torchao.{mode}", problem=bad,
                          options=(("fmt", "float4_e2m1fn" if packed else elem),))
        else:
            yield QTensor(**{**base, "shape": tuple(shape)}, kind="?",
                          problem=f"torchao tensor type {kind!r} has no adapter")


_FP8_OF = {"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E4M3FNUZ": "float8_e4m3fnuz",
           "F8_E5M2FNUZ": "float8_e5m2fnuz"}


def _gptq_awq(index, qc, metadata, format):
    if not _want(format, "gptq", "gptq_v2", "awq"):
        return
    bits = int(qc.get("bits", qc.get("w_bit", 4)))
    for mod, qw in _modules_with(index, ".qweight"):
        sc, qz, gi = mod + ".scales", mod + ".qzeros", mod + ".g_idx"
        name = mod + ".weight"
        if sc not in index or qz not in index:
            yield QTensor(name=name, format="gptq", kind="int", parts=(("codes", _part(index, qw)),),
                          shape=(), problem="qweight without scales and qzeros: unknown layout")
            continue
        wq, ws = _shape(index, qw), _shape(index, sc)
        per = 32 // bits
        if len(wq) != 2 or len(ws) != 2:
            yield QTensor(name=name, format="gptq", kind="int", parts=(("codes", _part(index, qw)),),
                          shape=(), problem=f"qweight {wq} and scales {ws} are not 2-D")
            continue
        method = str(qc.get("quant_method", "")).lower()
        awq = format == "awq" or (format == "auto" and (method == "awq" or wq[1] * per == ws[1] != wq[1]))
        parts = [("codes", _part(index, qw)), ("scale", _part(index, sc)), ("zero_point", _part(index, qz))]
        common = dict(name=name, kind="int", qmin=0, qmax=2**bits - 1, bits=bits,
                      dtype=_FLOAT_DT.get(_dtype(index, sc), "float16"), convention="exact")
        if awq:
            k, n = wq[0], wq[1] * per
            g = k // ws[0] if ws[0] else 0
            bad = None if ws == (k // max(g, 1), n) and g and k % g == 0 else \
                f"AWQ qweight {wq} and scales {ws} do not fit one group size"
            yield QTensor(format="awq", parts=tuple(parts), shape=(n, k), group=g, layout="awq",
                          zero="stored", symmetric=False, order=AWQ_ORDER, problem=bad,
                          rtn="AWQ quantizes activation-scaled weights the source does not hold",
                          **common)
        else:
            k, n = wq[0] * per, wq[1]
            g = k // ws[0] if ws[0] else 0
            if gi in index:
                parts.append(("g_idx", _part(index, gi)))
            v2 = format == "gptq_v2" or (format == "auto" and str(qc.get("checkpoint_format", "gptq"))
                                         .lower() == "gptq_v2")
            bad = None if ws[1] == n and g and k % g == 0 else \
                f"GPTQ qweight {wq} and scales {ws} do not fit one group size"
            sym = qc.get("sym")
            yield QTensor(format="gptq_v2" if v2 else "gptq", parts=tuple(parts), shape=(n, k), group=g,
                          layout="gptq", zero="gptq_v2" if v2 else "gptq_v1",
                          symmetric=None if sym is None else bool(sym), problem=bad,
                          rtn="GPTQ codes come from error-compensated rounding, not round-to-nearest",
                          **common)


def _compressed_tensors(index, qc, metadata, format):
    if not _want(format, "compressed-tensors"):
        return
    for mod, wp in _modules_with(index, ".weight_packed"):
        name = mod + ".weight"
        sc, zp, ws = mod + ".weight_scale", mod + ".weight_zero_point", mod + ".weight_shape"
        gs = mod + ".weight_global_scale"
        if sc not in index:
            yield QTensor(name=name, format="compressed-tensors", kind="int", shape=(),
                          parts=(("codes", _part(index, wp)),), problem="weight_packed without weight_scale")
            continue
        parts = [("codes", _part(index, wp)), ("scale", _part(index, sc))]
        if _dtype(index, wp) == "U8" and gs in index:  # nvfp4-pack-quantized
            parts.append(("global_scale", _part(index, gs)))
            rows, half = _shape(index, wp)
            yield QTensor(name=name, format="compressed-tensors", kind="nvfp4", parts=tuple(parts),
                          shape=(rows, 2 * half), group=16, layout="nibbles", convention="compressed_tensors",
                          scale_rule="e4m3(G * amax/6 in x's dtype)", options=(("global", "encode"),))
            continue
        if _dtype(index, wp) == "U8":  # mxfp4-pack-quantized: e8m0 scale codes as uint8
            rows, half = _shape(index, wp)
            yield QTensor(name=name, format="compressed-tensors", kind="mx", parts=tuple(parts),
                          shape=(rows, 2 * half), group=32, layout="nibbles", convention="compressed_tensors",
                          options=(("fmt", "float4_e2m1fn"),))
            continue
        if ws in index:
            parts.append(("shape", _part(index, ws)))
        packed = _shape(index, wp)
        scale_shape = _shape(index, sc)
        bits = _ct_bits(qc, name)
        if bits is None:  # infer from weight_shape when the config does not say
            shape_t = _read_small(index, ws)
            bits = 32 // (int(shape_t[1]) // packed[1]) if shape_t is not None and packed[1] else 4
        per = 32 // bits
        cols = packed[1] * per
        if ws in index:
            shape_t = _read_small(index, ws)
            if shape_t is not None:
                cols = int(shape_t[1])
        g = cols // scale_shape[1] if len(scale_shape) == 2 and scale_shape[1] else None
        sym = zp not in index
        if not sym:
            parts.append(("zero_point", _part(index, zp)))
        bad = None
        if len(scale_shape) != 2 or scale_shape[0] != packed[0] or not g or cols % g:
            bad = f"weight_scale {scale_shape} does not fit weight_packed {packed} ({cols} columns)"
        yield QTensor(name=name, format="compressed-tensors", kind="int", parts=tuple(parts),
                      shape=(packed[0], cols), qmin=-(2 ** (bits - 1)), qmax=2 ** (bits - 1) - 1,
                      group=g, layout="ct_pack", bits=bits, symmetric=sym,
                      zero="none" if sym else "stored", convention=CT_CONVENTION,
                      scale_rule="ct_symmetric" if sym else None,
                      dtype=_FLOAT_DT.get(_dtype(index, sc), "bfloat16"), problem=bad)


def _ct_bits(qc, name):
    groups = qc.get("config_groups") or {}
    for grp in groups.values():
        w = (grp or {}).get("weights") or {}
        if "num_bits" in w:
            return int(w["num_bits"])
    return None


def _read_small(index, name):
    """A small tensor's values (weight_shape, bnb's JSON state), read through its file."""
    if name not in index:
        return None
    from ._safetensors import SafetensorsFile

    with SafetensorsFile(index[name][0]) as f:
        return np.array(f.get(name))


def _modelopt_fp8_and_nvfp4(index, qc, metadata, format):
    """ModelOpt (and compressed-tensors float-quantized) weights: ``weight`` F8_E4M3 or U8 packed fp4
    next to ``weight_scale`` (and ``weight_scale_2`` for NVFP4); compressed-tensors int-quantized
    ``weight`` int8 next to ``weight_scale``."""
    if not _want(format, "modelopt", "compressed-tensors"):
        return
    for mod, sc in _modules_with(index, ".weight_scale"):
        w = mod + ".weight"
        if w not in index or (mod + ".weight_packed") in index:
            continue
        fmt_name = "compressed-tensors" if format == "compressed-tensors" else "modelopt"
        parts = [("codes", _part(index, w)), ("scale", _part(index, sc))]
        if _dtype(index, w) in _FP8_OF:
            shape, sshape = _shape(index, w), _shape(index, sc)
            group = None if len(sshape) == 0 or int(np.prod(sshape)) == 1 else shape[1]
            yield QTensor(name=w, format=fmt_name, kind="fp8", parts=tuple(parts), shape=tuple(shape),
                          group=group, convention="modelopt", scale_rule="amax/fmax in float32",
                          options=(("fmt", _FP8_OF[_dtype(index, w)]),))
        elif _dtype(index, w) in ("I8", "U8") and (mod + ".weight_scale_2") not in index:
            yield _ct_int_quantized(index, w, sc, mod)
        elif _dtype(index, w) == "U8" and (mod + ".weight_scale_2") in index:
            parts.append(("global_scale", _part(index, mod + ".weight_scale_2")))
            if len(_shape(index, w)) != 2:
                yield QTensor(name=w, format="modelopt", kind="nvfp4", parts=tuple(parts), shape=(),
                              problem=f"NVFP4 weight of shape {_shape(index, w)} is not 2-D")
                continue
            rows, half = _shape(index, w)
            yield QTensor(name=w, format="modelopt", kind="nvfp4", parts=tuple(parts),
                          shape=(rows, 2 * half), group=int(qc.get("group_size", 16)), layout="nibbles",
                          convention="modelopt", options=(("global", "decode"),))


def _ct_int_quantized(index, w, sc, mod):
    """compressed-tensors int-quantized (naive): ``weight`` int8 (uint8) codes as stored, a
    ``weight_scale`` per tensor, row or group, ``weight_zero_point`` when asymmetric."""
    shape, sshape = _shape(index, w), _shape(index, sc)
    signed = _dtype(index, w) == "I8"
    parts = [("codes", _part(index, w)), ("scale", _part(index, sc))]
    zp = mod + ".weight_zero_point"
    if zp in index:
        parts.append(("zero_point", _part(index, zp)))
    base = dict(name=w, format="compressed-tensors", kind="int", parts=tuple(parts), shape=tuple(shape))
    if len(shape) != 2 or len(sshape) not in (0, 1, 2) or (len(sshape) == 2 and (
            sshape[0] != shape[0] or not sshape[1] or shape[1] % sshape[1])):
        return QTensor(**base, problem=f"int-quantized weight {shape} and weight_scale {sshape} do not fit")
    group = None if len(sshape) < 2 or int(np.prod(sshape)) == 1 else shape[1] // sshape[1]
    sym = zp not in index
    return QTensor(**base, qmin=-128 if signed else 0, qmax=127 if signed else 255, group=group,
                   symmetric=sym, zero="none" if sym else "stored", convention=CT_CONVENTION,
                   scale_rule="ct_symmetric" if sym and group else None,
                   dtype=_FLOAT_DT.get(_dtype(index, sc), "bfloat16"))


def _bitsandbytes(index, qc, metadata, format):
    if not _want(format, "bitsandbytes"):
        return
    for st in [n for n in index if ".quant_state.bitsandbytes__" in n]:
        w, _, kind = st.partition(".quant_state.bitsandbytes__")
        parts = [("codes", _part(index, w))] if w in index else []
        for role, suffix in (("scale", ".absmax"), ("quant_map", ".quant_map"),
                             ("nested_absmax", ".nested_absmax"), ("nested_quant_map", ".nested_quant_map")):
            if w + suffix in index:
                parts.append((role, _part(index, w + suffix)))
        parts.append(("state", _part(index, st)))
        try:
            state = json.loads(bytes(_read_small(index, st).astype(np.uint8)).decode("utf-8"))
        except (ValueError, UnicodeDecodeError, AttributeError) as exc:
            yield QTensor(name=w, format="bitsandbytes", kind="nf4", parts=tuple(parts), shape=(),
                          problem=f"quant_state is not JSON ({exc})")
            continue
        shape = tuple(state.get("shape", ()))
        bad = None if w in index and len(shape) == 2 else "bitsandbytes state without codes or a 2-D shape"
        if kind != "nf4":
            bad = bad or f"bitsandbytes {kind} has no adapter (nf4 only)"
        opts = (("blocksize", int(state.get("blocksize", 64))), ("nested_offset", state.get("nested_offset")),
                ("nested_blocksize", state.get("nested_blocksize")))
        yield QTensor(name=w, format="bitsandbytes", kind="nf4", parts=tuple(parts), shape=shape,
                      group=int(state.get("blocksize", 64)), layout="bnb_nf4", convention="bitsandbytes",
                      dtype=str(state.get("dtype", "float32")), problem=bad, options=opts)


_ADAPTERS = (_torchao, _bitsandbytes, _gptq_awq, _compressed_tensors, _modelopt_fp8_and_nvfp4)


# ------------------------------------------------------------------------------------------------
# reading rows of a quantized weight


def _unpack_words(words, bits, axis, order=None):
    """Codes from int32 ``words`` packed along ``axis``: code j of a word in bits ``bits*j``;
    ``order`` (logical position of each of the word's codes) undoes an interleave."""
    per = 32 // bits
    u = np.ascontiguousarray(words).view(np.uint32)
    shifts = (np.arange(per, dtype=np.uint32) * bits)
    mask = np.uint32(2**bits - 1)
    if axis == 1:
        c = (u[:, :, None] >> shifts) & mask  # [r, m, per]
        if order:
            c = c[:, :, np.argsort(order)]
        return c.reshape(u.shape[0], -1)
    c = (u[:, None, :] >> shifts[:, None]) & mask  # [m, per, n]
    if order:
        c = c[:, np.argsort(order), :]
    return c.reshape(-1, u.shape[1])


def _gptq_v1_words(words, bits):
    """GPTQ v1 zero words as v2: the loaders' ``word + 0b0001...0001`` (every stored z - 1 plus 1,
    with carries between fields, as they do)."""
    ones = sum(1 << (bits * j) for j in range(32 // bits))
    return (np.ascontiguousarray(words).view(np.uint32).astype(np.uint64) + ones).astype(np.uint32)


def load_block(q: QTensor, files, lo, hi, *, order=None):
    """Rows ``lo:hi`` of the logical weight ``q``: ``(codes [r, cols], scale, zero_point)`` with
    scale ``[r, cols // group]`` (0-d per tensor) and zero_point the same shape or None.
    ``order`` overrides the nibble order (a packing hypothesis to test). ``files`` maps a path
    to an open :class:`SafetensorsFile`."""
    order = order or q.order or None
    def rows(role, a, b):
        path, name = q.part(role)
        return files(path).rows(name, a, b)

    def whole(role):
        path, name = q.part(role)
        return files(path).get(name)

    scale = zp = None
    if q.layout == "plain":
        codes = rows("codes", lo, hi)
        scale = _rows_or_scalar(whole, rows, "scale", lo, hi, q.shape[0])
        if q.part("zero_point"):
            zp = _rows_or_scalar(whole, rows, "zero_point", lo, hi, q.shape[0])
    elif q.layout == "ct_pack":
        words = rows("codes", lo, hi)
        u = _unpack_words(words, q.bits, 1, order)[:, : q.shape[1]]
        codes = u.astype(np.int16) - 2 ** (q.bits - 1)
        scale = rows("scale", lo, hi)
        if q.part("zero_point"):
            zw = whole("zero_point")
            zall = _unpack_words(zw.T, q.bits, 1, order).T if zw.dtype == np.int32 else zw
            zp = zall[lo:hi].astype(np.int16) - 2 ** (q.bits - 1)
    elif q.layout == "gptq":
        words = whole("codes")[:, lo:hi]
        codes = _unpack_words(words, q.bits, 0, order).T
        s = whole("scale")[:, lo:hi].T
        zw = whole("zero_point")
        if q.zero == "gptq_v1":
            zw = _gptq_v1_words(zw, q.bits)
        zall = _unpack_words(zw, q.bits, 1, order)
        z = zall[:, lo:hi].T
        gi = q.part("g_idx")
        g_idx = whole("g_idx").astype(np.int64) if gi else None
        if g_idx is not None and not np.array_equal(g_idx, np.arange(q.shape[1]) // q.group):
            if g_idx.shape != (q.shape[1],) or g_idx.min() < 0 or g_idx.max() >= s.shape[1]:
                raise ValueError(f"g_idx of {q.name!r} has shape {g_idx.shape} or entries outside "
                                 f"[0, {s.shape[1]})")
            return codes, s[:, g_idx], z[:, g_idx]  # act-order: one scale per element
        scale, zp = s, z
    elif q.layout == "awq":
        if lo % 8 or (hi % 8 and hi != q.shape[0]):
            raise ValueError("AWQ rows are read in multiples of 8")
        w0, w1 = lo // 8, -(-hi // 8)
        words = whole("codes")[:, w0:w1]
        codes = _unpack_words(words, q.bits, 1, order).T
        scale = whole("scale")[:, lo:hi].T
        zall = _unpack_words(whole("zero_point")[:, w0:w1], q.bits, 1, order)
        zp = zall.T
    else:
        raise NotImplementedError(f"no integer reader for layout {q.layout!r}")
    if codes.ndim != 2:
        codes = codes.reshape(hi - lo, -1)
    return codes, scale, zp


def _rows_or_scalar(whole, rows, role, lo, hi, nrows):
    """Per-row (or per-row-and-group) parameters sliced to rows lo:hi; a per-tensor one as 0-d."""
    v = whole(role)
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    if v.shape[0] != nrows:
        raise ValueError(f"{role} has shape {v.shape}; expected {nrows} rows")
    return rows(role, lo, hi).reshape(hi - lo, -1)


def swapped(q: QTensor):
    """The other nibble-order hypothesis for ``q``'s packing (None when it has none)."""
    if q.layout == "awq":
        return replace(q, order=tuple(range(8)))
    if q.layout in ("ct_pack", "gptq"):
        per = 32 // q.bits
        return replace(q, order=tuple(range(per - 1, -1, -1)))
    return None
