"""Golden-vector files: .npz, JSON and hex text ($readmemh). Loading never unpickles.

Every format stores the bit patterns of the inputs and outputs (so NaN payloads, -0.0 and
bfloat16 survive), the array shape, and the manifest (refquant version, op, convention name and
every knob of it, qparams, range, granularity, dtypes). A file made from a candidate kernel
(``GoldenCases.with_outputs``) holds the kernel's outputs as ``outputs`` and the reference's as
``reference``; its manifest says ``"outputs": "candidate"``.

- ``npz``: arrays ``inputs`` and ``outputs`` as unsigned integers of the element width and
  ``manifest`` as UTF-8 JSON bytes (a uint8 array) holding ``{"format": "refquant-golden",
  "version": 1, "manifest": {...}}`` (and ``reference`` in candidate files); read with
  ``allow_pickle=False`` after checking that the file is a zip archive.
- ``json``: ``{"format": "refquant-golden", "version": 1, "manifest": {...}, "inputs": [hex...],
  "outputs": [hex...]}``, one hex string per element.
- ``hex``: ``//`` comment lines (the first ``// refquant-golden 1``, the second ``// manifest:``
  and the JSON), then one word per element: the input bits followed by the output bits, e.g. a
  float32 input and an int8 code give 10 hex digits, ``{x[31:0], q[7:0]}``. Verilog reads it with
  ``reg [39:0] mem [0:N-1]; $readmemh("file.hex", mem);``.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path

import numpy as np

from .._validation import dtype_named

__all__ = ["save", "load", "qparams", "convention_of", "knobs_of", "knob_differences", "FORMATS",
           "NotGoldenError"]

FORMATS = ("npz", "json", "hex")
MAGIC = "refquant-golden"
VERSION = 1
_FLOATS = ("float16", "bfloat16", "float32", "float64")
_INTS = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64")
_MANIFEST_KEYS = ("op", "convention", "scale", "zero_point", "qmin", "qmax", "input_dtype",
                  "output_dtype", "shape")
_QPARAM_DTYPES = ("python",) + _FLOATS + _INTS  # how scale / zero_point were given
_HEX_DIGITS = re.compile(r"[0-9a-fA-F]+")


class NotGoldenError(ValueError):
    """The file is not a refquant golden file at all (random bytes, empty, another archive or
    JSON document); the message starts with ``not a golden file:``."""


_EXPECTED = {
    "npz": "a .npz zip archive with arrays inputs, outputs and a refquant-golden manifest",
    "json": f'a JSON object with "format": "{MAGIC}"',
    "hex": f"text whose first line is '// {MAGIC} {VERSION}'",
}


def _sniff(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    if head.startswith(b"PK"):
        return "npz"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    if head.startswith(b"//"):
        return "hex"
    return None


def _format_of(path: Path, format, *, reading=False) -> str:
    if format is None:
        format = path.suffix.lstrip(".").lower()
        if format in ("mem", "txt"):
            format = "hex"
        if reading and format not in FORMATS:
            format = _sniff(path) or format
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format!r} (from {str(path)!r})")
    return format


def _dtype(name) -> np.dtype:
    return dtype_named(name, _FLOATS + _INTS, "the manifest's dtype")


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(f"u{a.dtype.itemsize}")


def save(golden, path, format=None) -> Path:
    """Write ``golden`` (a GoldenCases) to ``path`` in ``format`` (default: from the suffix)."""
    path = Path(path)
    fmt = _format_of(path, format)
    manifest = dict(golden.manifest)
    x, y = np.asarray(golden.inputs), np.asarray(golden.outputs)
    ref = getattr(golden, "reference", None)
    manifest.update(input_dtype=x.dtype.name, output_dtype=y.dtype.name, shape=list(x.shape))
    arrays = {"inputs": x, "outputs": y}
    if ref is not None:
        ref = np.asarray(ref)
        arrays["reference"] = ref
        manifest.update(outputs="candidate", reference_dtype=ref.dtype.name)
    else:
        manifest.pop("reference_dtype", None)
        manifest["outputs"] = manifest.get("outputs", "reference")
    bits = {k: _bits(v) for k, v in arrays.items()}
    if fmt == "npz":
        doc = {"format": MAGIC, "version": VERSION, "manifest": manifest}
        text = np.frombuffer(json.dumps(doc).encode(), np.uint8)
        with open(path, "wb") as f:
            np.savez(f, manifest=text, **bits)
    elif fmt == "json":
        doc = {"format": MAGIC, "version": VERSION, "manifest": manifest}
        for k, b in bits.items():
            doc[k] = [f"{v:0{2 * arrays[k].dtype.itemsize}x}" for v in b.tolist()]
        path.write_text(json.dumps(doc))
    else:
        widths = [2 * a.dtype.itemsize for a in arrays.values()]
        parts = " then ".join(f"{k} bits ({4 * w})" for k, w in zip(arrays, widths))
        lines = [f"// {MAGIC} {VERSION}", "// manifest: " + json.dumps(manifest),
                 f"// each word: {parts}"]
        columns = [b.tolist() for b in bits.values()]
        lines += ["".join(f"{v:0{w}x}" for v, w in zip(row, widths)) for row in zip(*columns)]
        path.write_text("\n".join(lines) + "\n")
    return path


def load(path, format=None):
    """Read a golden file written by ``GoldenCases.save`` back exactly (any of the three formats;
    ``format`` as in ``save``, default from the suffix, else from the first bytes).

    Never unpickles. A file that is not a golden file at all (random bytes, an empty file,
    another zip archive or JSON document) raises :class:`NotGoldenError` (a ValueError) whose
    message starts ``not a golden file:`` and names what was expected; a damaged golden file
    (bad manifest, wrong element count, a hex word of the wrong width or with a non-hex
    character, ...) raises ValueError saying what is wrong.

    >>> import tempfile, os, numpy as np, refquant as rq
    >>> g = rq.golden.cases(0.5, 0, qmin=-4, qmax=3, n_random=4)
    >>> p = os.path.join(tempfile.mkdtemp(), "g.json")
    >>> _ = g.save(p)
    >>> h = rq.golden.load(p)
    >>> bool((h.inputs.view(np.uint32) == g.inputs.view(np.uint32)).all()), h.manifest["op"]
    (True, 'fake_quantize')
    """
    from ._cases import GoldenCases

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such golden file: {str(path)!r}")
    fmt = _format_of(path, format, reading=True)
    try:
        if path.stat().st_size == 0:
            raise NotGoldenError("the file is empty")
        reader = {"npz": _read_npz, "json": _read_json, "hex": _read_hex}[fmt]
        manifest, raw = reader(path)
    except NotGoldenError as exc:
        raise NotGoldenError(f"not a golden file: {path.name}: {exc}; expected {_EXPECTED[fmt]}") from None
    except ValueError as exc:
        raise ValueError(f"{path.name}: {exc}") from None
    shape = tuple(manifest["shape"])
    n = math.prod(shape)
    dtypes = {"inputs": manifest["input_dtype"], "outputs": manifest["output_dtype"],
              "reference": manifest.get("reference_dtype")}
    arrays = {}
    for name, arr in raw.items():
        dt = _dtype(dtypes[name])
        if arr.size != n:
            raise ValueError(f"{path.name}: {name} has {arr.size} elements; the manifest shape "
                             f"{list(shape)} needs {n}")
        if arr.dtype.itemsize != dt.itemsize:
            raise ValueError(f"{path.name}: {name} has {arr.dtype.itemsize}-byte elements; "
                             f"{dt.name} needs {dt.itemsize}")
        arrays[name] = arr.astype(f"u{dt.itemsize}").view(dt).reshape(shape)
    return GoldenCases(inputs=arrays["inputs"], outputs=arrays["outputs"], manifest=manifest,
                       reference=arrays.get("reference"))


def _numbers(v, what: str, *, positive: bool = False, depth: int = 0):
    """Check that ``v`` is a finite number or a (nested, at most 8 deep) list of them."""
    if isinstance(v, list):
        if depth >= 8:
            raise ValueError(f"manifest {what} is nested too deeply")
        for item in v:
            _numbers(item, what, positive=positive, depth=depth + 1)
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"manifest {what} must hold finite numbers; got {v!r:.40}")
    if positive and not v > 0:
        raise ValueError(f"manifest {what} must be > 0; got {v!r}")


def _check_manifest(manifest) -> dict:
    if not isinstance(manifest, dict):
        raise ValueError(f"manifest must be a JSON object; got {type(manifest).__name__}")
    if "block_format" in manifest:  # an MX, NVFP4 or NF4 golden file
        from ._block import check_manifest as check_block

        return check_block(manifest)
    if "fmt" in manifest:  # a float format's golden file
        from ._float import check_manifest

        return check_manifest(manifest)
    check_shape_and_op(manifest, _MANIFEST_KEYS)
    for key in ("qmin", "qmax"):
        v = manifest[key]
        if not isinstance(v, int) or isinstance(v, bool) or not -(2**63) <= v < 2**63:
            raise ValueError(f"manifest {key} must be an int64 integer; got {v!r:.40}")
    if manifest["qmin"] > manifest["qmax"]:
        raise ValueError(f"manifest qmin {manifest['qmin']} is above qmax {manifest['qmax']}")
    for key in ("input_dtype", "output_dtype"):
        if manifest[key] not in _FLOATS + _INTS:
            raise ValueError(f"manifest {key} {manifest[key]!r:.40} is not a supported dtype")
    _numbers(manifest["zero_point"], "zero_point")
    _check_qparam_dtype(manifest, "zero_point_dtype")
    axis = manifest.get("axis")
    if axis is not None and (not isinstance(axis, int) or isinstance(axis, bool)):
        raise ValueError(f"manifest axis must be null or an integer; got {axis!r:.40}")
    block = manifest.get("block_size")
    if block is not None and not (isinstance(block, list) and len(block) <= 8 and all(
            isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
        raise ValueError(f"manifest block_size must be null or a list of positive integers; "
                         f"got {block!r:.40}")
    return check_common(manifest, (manifest["input_dtype"],) if manifest["op"] == "fake_quantize" else _INTS)


def check_shape_and_op(manifest, need) -> None:
    """Every key of ``need`` present, then the ``shape`` and ``op`` entries of a manifest
    (integer, float or block)."""
    missing = [k for k in need if k not in manifest]
    if missing:
        raise ValueError(f"manifest lacks {missing}")
    shape = manifest["shape"]
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool)
                                            and 0 <= d < 2**40 for d in shape) and len(shape) <= 8):
        raise ValueError(f"manifest shape must be a list of non-negative integers; got {shape!r:.60}")
    if manifest["op"] not in ("quantize", "fake_quantize"):
        raise ValueError(f"manifest op must be 'quantize' or 'fake_quantize'; got {manifest['op']!r:.40}")


def _check_qparam_dtype(manifest, key) -> None:
    """How a qparam was given (``key``: ``scale_dtype`` or ``zero_point_dtype``; absent: python)."""
    if manifest.get(key, "python") not in _QPARAM_DTYPES:
        raise ValueError(f"manifest {key} {manifest[key]!r:.40} is not one of {_QPARAM_DTYPES}")


def check_common(manifest, wanted) -> dict:
    """The entries every manifest shares: convention, input and output dtypes (``wanted``: the
    output dtypes the op allows), scale, rounding, outputs and the convention knobs."""
    if not isinstance(manifest["convention"], str):
        raise ValueError(f"manifest convention must be a string; got {manifest['convention']!r:.40}")
    if manifest["input_dtype"] not in _FLOATS:
        raise ValueError(f"manifest input_dtype must be one of {_FLOATS}; got {manifest['input_dtype']!r}")
    if manifest["output_dtype"] not in wanted:
        raise ValueError(f"manifest output_dtype {manifest['output_dtype']!r} does not fit op "
                         f"{manifest['op']!r} (expected one of {wanted})")
    _numbers(manifest["scale"], "scale", positive=True)
    _check_qparam_dtype(manifest, "scale_dtype")
    rounding = manifest.get("rounding")
    if rounding is not None and not isinstance(rounding, str):
        raise ValueError(f"manifest rounding must be null or a string; got {rounding!r:.40}")
    if manifest.get("outputs", "reference") not in ("reference", "candidate"):
        raise ValueError(f"manifest outputs must be 'reference' or 'candidate'; got "
                         f"{manifest.get('outputs')!r:.40}")
    if manifest.get("outputs") == "candidate":
        ref_dt = manifest.get("reference_dtype")
        if ref_dt not in wanted:
            raise ValueError(f"manifest reference_dtype must be one of {wanted}; got {ref_dt!r:.40}")
    knobs = manifest.get("convention_knobs")
    if knobs is not None and not isinstance(knobs, dict):
        raise ValueError(f"manifest convention_knobs must be a JSON object; got {knobs!r:.40}")
    return manifest


def _jsonable(v):
    if isinstance(v, (tuple, list)):
        return [_jsonable(i) for i in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(i) for k, i in v.items()}
    return v


def _tuples(v):
    if isinstance(v, list):
        return tuple(_tuples(i) for i in v)
    if isinstance(v, dict):
        return {k: _tuples(i) for k, i in v.items()}
    return v


def knobs_of(convention) -> dict:
    """Every field of a Convention as JSON data (tuples as lists), name and variants included."""
    import dataclasses

    return {f.name: _jsonable(getattr(convention, f.name))
            for f in dataclasses.fields(convention) if f.init}


def convention_of(manifest):
    """The Convention a manifest was made with: rebuilt from ``convention_knobs`` (every knob, so
    a variant such as ``get("torch.quantize").replace(fma=False)`` comes back as it was), else
    the registered row named ``convention`` (files written before knobs were recorded)."""
    from .. import conventions as _conventions

    knobs = manifest.get("convention_knobs")
    if knobs is None:
        return _conventions.get(manifest["convention"])
    return row_of_knobs(_conventions.Convention, knobs)


def row_of_knobs(row_type, knobs: dict):
    """The convention row of ``row_type`` rebuilt from a manifest's ``convention_knobs`` (JSON
    lists turned back into tuples), else a ValueError saying why."""
    try:
        return row_type(**{k: _tuples(v) for k, v in knobs.items()})
    except TypeError as exc:
        raise ValueError(f"manifest convention_knobs do not fit this refquant's {row_type.__name__} "
                         f"({exc})") from None
    except ValueError as exc:
        raise ValueError(f"manifest convention_knobs are invalid: {exc}") from None


def knob_differences(convention, registry=None) -> list:
    """``"knob=value (named row: value)"`` for each knob where ``convention`` differs from the
    row of the same name in ``registry`` (default: the affine conventions; empty if it has no
    registered name)."""
    if registry is None:
        from .. import conventions as registry

    if convention.name not in registry.names():
        return []
    row = knobs_of(registry.get(convention.name))
    mine = knobs_of(convention)
    return [f"{k}={mine[k]!r} (named row: {row.get(k)!r})" for k in mine
            if k not in ("formula", "backend", "evidence") and mine[k] != row.get(k)]


def _qparam(value, dtype_name):
    if dtype_name == "python":
        if isinstance(value, list):
            return value
        return int(value) if isinstance(value, int) else float(value)
    return np.asarray(value, np.float64).astype(_dtype(dtype_name))


def qparams(manifest) -> tuple:
    """``(scale, zero_point)`` as the manifest's ``cases`` call gave them: a Python float or list,
    or a NumPy array/scalar of the recorded dtype (``scale_dtype``, ``zero_point_dtype``), so that
    recomputing under the manifest's convention sees the same dtypes (which ``promote`` and
    float-zero-point conventions depend on)."""
    scale = _qparam(manifest["scale"], manifest.get("scale_dtype", "python"))
    zp = manifest["zero_point"]
    zp_dtype = manifest.get("zero_point_dtype")
    if zp_dtype is None:  # files without the field: integral values were integers
        zp_dtype = "python"
        if not isinstance(zp, list) and float(zp).is_integer():
            zp = int(zp)
    return scale, _qparam(zp, zp_dtype)


def _parse_json(text: str, what: str):
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{what} is not valid JSON ({exc})") from None


def _read_npz(path):
    with open(path, "rb") as f:
        head = f.read(4)
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise NotGoldenError("it is not a zip archive")
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
            names = set(data.files)
            if not {"inputs", "outputs", "manifest"} <= names:
                raise NotGoldenError(f"the archive holds {sorted(names)[:8]}")
            if names - {"inputs", "outputs", "manifest", "reference"}:
                raise ValueError(f"npz holds unexpected arrays {sorted(names)[:8]}")
            arrays = {k: data[k] for k in sorted(names)}
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise NotGoldenError(f"not a readable zip archive, truncated or damaged ({exc})") from None
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ValueError("the npz holds object (pickled) arrays; refusing to unpickle") from None
        raise
    for k, a in arrays.items():
        if a.dtype.kind != "u" or a.ndim != 1:
            raise ValueError(f"npz array {k!r} must be 1-D unsigned integers; got {a.dtype} "
                             f"with shape {a.shape}")
    if arrays["manifest"].dtype != np.uint8:
        raise ValueError(f"npz manifest must be uint8 (UTF-8 bytes); got {arrays['manifest'].dtype}")
    try:
        text = arrays.pop("manifest").tobytes().decode()
        doc = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise NotGoldenError("its manifest array is not JSON text") from None
    if not isinstance(doc, dict) or doc.get("format") != MAGIC:
        raise NotGoldenError(f"its manifest has no \"format\": \"{MAGIC}\"")
    manifest = _check_version_and_manifest(doc)
    _check_reference(manifest, arrays)
    return manifest, arrays


def _check_version_and_manifest(doc):
    if doc.get("version") != VERSION:
        raise ValueError(f"unsupported golden file version {doc.get('version')!r:.40}; expected {VERSION}")
    return _check_manifest(doc.get("manifest"))


def _check_reference(manifest, arrays):
    has = "reference" in arrays
    if has != (manifest.get("outputs") == "candidate"):
        raise ValueError("a reference array goes with (only) a manifest saying outputs: 'candidate'")


def _hex_array(words, digits: int, what: str) -> np.ndarray:
    if not isinstance(words, list):
        raise ValueError(f"{what} must be a list of hex strings")
    out = np.empty(len(words), np.uint64)
    for i, w in enumerate(words):
        if not isinstance(w, str) or len(w) != digits:
            raise ValueError(f"{what}[{i}] must be a {digits}-digit hex string; got {w!r:.40}")
        if not _HEX_DIGITS.fullmatch(w):  # int(w, 16) alone would take "-1", "0x", "1_0", " 1"
            raise ValueError(f"{what}[{i}] is not hexadecimal: {w!r:.40}")
        out[i] = int(w, 16)
    return out.astype(f"u{digits // 2}")


def _read_json(path):
    try:
        doc = json.loads(path.read_bytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise NotGoldenError("it is not JSON text") from None
    if not isinstance(doc, dict) or doc.get("format") != MAGIC:
        kind = type(doc).__name__ if not isinstance(doc, dict) else "object without that marker"
        raise NotGoldenError(f"it is a JSON {kind}")
    manifest = _check_version_and_manifest(doc)
    keys = ["inputs", "outputs"] + (["reference"] if "reference" in doc else [])
    dtypes = {"inputs": manifest["input_dtype"], "outputs": manifest["output_dtype"],
              "reference": manifest.get("reference_dtype")}
    arrays = {}
    for k in keys:
        if k == "reference" and dtypes[k] is None:
            raise ValueError("a reference array goes with (only) a manifest saying outputs: 'candidate'")
        arrays[k] = _hex_array(doc.get(k), 2 * _dtype(dtypes[k]).itemsize, k)
    _check_reference(manifest, arrays)
    return manifest, arrays


def _read_hex(path):
    try:
        lines = path.read_bytes().decode().splitlines()
    except UnicodeDecodeError:
        raise NotGoldenError("it is not a text file") from None
    if not lines or lines[0].strip() != f"// {MAGIC} {VERSION}":
        raise NotGoldenError(f"its first line is {lines[0][:40]!r}" if lines else "it has no lines")
    if len(lines) < 2 or not lines[1].startswith("// manifest: "):
        raise ValueError("second line must be '// manifest: {...}'")
    manifest = _check_manifest(_parse_json(lines[1][len("// manifest: "):], "the manifest line"))
    names = ["inputs", "outputs"] + (["reference"] if manifest.get("outputs") == "candidate" else [])
    dts = [manifest["input_dtype"], manifest["output_dtype"], manifest.get("reference_dtype")]
    digits = [2 * _dtype(d).itemsize for d in dts[:len(names)]]
    words = [ln.strip() for ln in lines[2:] if ln.strip() and not ln.lstrip().startswith("//")]
    cols = [[] for _ in names]
    for i, w in enumerate(words):
        if len(w) != sum(digits):
            raise ValueError(f"data word {i} has {len(w)} hex digits; expected {sum(digits)}: {w!r:.40}")
        at = 0
        for col, d in zip(cols, digits):
            col.append(w[at:at + d])
            at += d
    return manifest, {k: _hex_array(c, d, f"{k} word") for k, c, d in zip(names, cols, digits)}
