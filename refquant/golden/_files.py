"""Golden-vector files: .npz, JSON and hex text ($readmemh). Loading never unpickles.

Every format stores the bit patterns of the inputs and outputs (so NaN payloads, -0.0 and
bfloat16 survive), the array shape, and the manifest (refquant version, op, convention, qparams,
dtypes).

- ``npz``: arrays ``inputs`` and ``outputs`` as unsigned integers of the element width and
  ``manifest`` as UTF-8 JSON bytes (a uint8 array) holding ``{"format": "refquant-golden",
  "version": 1, "manifest": {...}}``; read with ``allow_pickle=False``.
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

from .._dtypes import bfloat16

__all__ = ["save", "load", "qparams", "FORMATS"]

FORMATS = ("npz", "json", "hex")
MAGIC = "refquant-golden"
VERSION = 1
_FLOATS = ("float16", "bfloat16", "float32", "float64")
_INTS = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64")
_MANIFEST_KEYS = ("op", "convention", "scale", "zero_point", "qmin", "qmax", "input_dtype",
                  "output_dtype", "shape")
_QPARAM_DTYPES = ("python",) + _FLOATS + _INTS  # how scale / zero_point were given
_HEX_DIGITS = re.compile(r"[0-9a-fA-F]+")


def _format_of(path: Path, format) -> str:
    if format is None:
        format = path.suffix.lstrip(".").lower()
        if format in ("mem", "txt"):
            format = "hex"
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format!r} (from {str(path)!r})")
    return format


def _dtype(name) -> np.dtype:
    if name == "bfloat16":
        bf = bfloat16()
        if bf is None:
            raise ValueError("the file holds bfloat16 data; install ml_dtypes to read it")
        return bf
    if name not in _FLOATS + _INTS:
        raise ValueError(f"unsupported dtype {name!r} in the manifest")
    return np.dtype(name)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(f"u{a.dtype.itemsize}")


def save(golden, path, format=None) -> Path:
    """Write ``golden`` (a GoldenCases) to ``path`` in ``format`` (default: from the suffix)."""
    path = Path(path)
    fmt = _format_of(path, format)
    manifest = dict(golden.manifest)
    x, y = np.asarray(golden.inputs), np.asarray(golden.outputs)
    manifest.update(input_dtype=x.dtype.name, output_dtype=y.dtype.name, shape=list(x.shape))
    xb, yb = _bits(x), _bits(y)
    if fmt == "npz":
        doc = {"format": MAGIC, "version": VERSION, "manifest": manifest}
        text = np.frombuffer(json.dumps(doc).encode(), np.uint8)
        with open(path, "wb") as f:
            np.savez(f, inputs=xb, outputs=yb, manifest=text)
    elif fmt == "json":
        doc = {"format": MAGIC, "version": VERSION, "manifest": manifest,
               "inputs": [f"{v:0{2 * x.dtype.itemsize}x}" for v in xb.tolist()],
               "outputs": [f"{v:0{2 * y.dtype.itemsize}x}" for v in yb.tolist()]}
        path.write_text(json.dumps(doc))
    else:
        wx, wy = 2 * x.dtype.itemsize, 2 * y.dtype.itemsize
        lines = [f"// {MAGIC} {VERSION}", "// manifest: " + json.dumps(manifest),
                 f"// each word: input bits ({4 * wx}) then output bits ({4 * wy})"]
        lines += [f"{a:0{wx}x}{b:0{wy}x}" for a, b in zip(xb.tolist(), yb.tolist())]
        path.write_text("\n".join(lines) + "\n")
    return path


def load(path, format=None):
    """Read a golden file written by ``GoldenCases.save`` back exactly (any of the three formats;
    ``format`` as in ``save``, default from the suffix).

    Never unpickles. A truncated, corrupted or hostile file raises ValueError saying what is
    wrong (bad header, bad manifest, wrong element count, a hex word of the wrong width or with
    a non-hex character, ...).

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
    fmt = _format_of(path, format)
    try:
        if fmt == "npz":
            manifest, xb, yb = _read_npz(path)
        elif fmt == "json":
            manifest, xb, yb = _read_json(path)
        else:
            manifest, xb, yb = _read_hex(path)
    except ValueError as exc:
        raise ValueError(f"{path.name}: {exc}") from None
    x_dt, y_dt = _dtype(manifest["input_dtype"]), _dtype(manifest["output_dtype"])
    shape = tuple(manifest["shape"])
    n = math.prod(shape)
    for name, arr, dt in (("inputs", xb, x_dt), ("outputs", yb, y_dt)):
        if arr.size != n:
            raise ValueError(f"{path.name}: {name} has {arr.size} elements; the manifest shape "
                             f"{list(shape)} needs {n}")
        if arr.dtype.itemsize != dt.itemsize:
            raise ValueError(f"{path.name}: {name} has {arr.dtype.itemsize}-byte elements; "
                             f"{dt.name} needs {dt.itemsize}")
    x = xb.astype(f"u{x_dt.itemsize}").view(x_dt).reshape(shape)
    y = yb.astype(f"u{y_dt.itemsize}").view(y_dt).reshape(shape)
    return GoldenCases(inputs=x, outputs=y, manifest=manifest)


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
    missing = [k for k in _MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"manifest lacks {missing}")
    shape = manifest["shape"]
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool)
                                            and 0 <= d < 2**40 for d in shape) and len(shape) <= 8):
        raise ValueError(f"manifest shape must be a list of non-negative integers; got {shape!r:.60}")
    for key in ("qmin", "qmax"):
        v = manifest[key]
        if not isinstance(v, int) or isinstance(v, bool) or not -(2**63) <= v < 2**63:
            raise ValueError(f"manifest {key} must be an int64 integer; got {v!r:.40}")
    if manifest["qmin"] > manifest["qmax"]:
        raise ValueError(f"manifest qmin {manifest['qmin']} is above qmax {manifest['qmax']}")
    if manifest["op"] not in ("quantize", "fake_quantize"):
        raise ValueError(f"manifest op must be 'quantize' or 'fake_quantize'; got {manifest['op']!r:.40}")
    if not isinstance(manifest["convention"], str):
        raise ValueError(f"manifest convention must be a string; got {manifest['convention']!r:.40}")
    for key in ("input_dtype", "output_dtype"):
        if manifest[key] not in _FLOATS + _INTS:
            raise ValueError(f"manifest {key} {manifest[key]!r:.40} is not a supported dtype")
    if manifest["input_dtype"] not in _FLOATS:
        raise ValueError(f"manifest input_dtype must be one of {_FLOATS}; got {manifest['input_dtype']!r}")
    wanted = (manifest["input_dtype"],) if manifest["op"] == "fake_quantize" else _INTS
    if manifest["output_dtype"] not in wanted:
        raise ValueError(f"manifest output_dtype {manifest['output_dtype']!r} does not fit op "
                         f"{manifest['op']!r} (expected one of {wanted})")
    _numbers(manifest["scale"], "scale", positive=True)
    _numbers(manifest["zero_point"], "zero_point")
    for key in ("scale_dtype", "zero_point_dtype"):
        if manifest.get(key, "python") not in _QPARAM_DTYPES:
            raise ValueError(f"manifest {key} {manifest[key]!r:.40} is not one of {_QPARAM_DTYPES}")
    axis = manifest.get("axis")
    if axis is not None and (not isinstance(axis, int) or isinstance(axis, bool)):
        raise ValueError(f"manifest axis must be null or an integer; got {axis!r:.40}")
    return manifest


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
    try:
        with np.load(path, allow_pickle=False) as data:
            names = set(data.files)
            if names != {"inputs", "outputs", "manifest"}:
                raise ValueError(f"npz must hold exactly inputs, outputs, manifest; got {sorted(names)}")
            arrays = {k: data[k] for k in ("inputs", "outputs", "manifest")}
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise ValueError(f"not a readable npz archive ({exc})") from None
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ValueError("the npz holds object (pickled) arrays; refusing to unpickle") from None
        raise
    for k in ("inputs", "outputs", "manifest"):
        if arrays[k].dtype.kind != "u" or arrays[k].ndim != 1:
            raise ValueError(f"npz array {k!r} must be 1-D unsigned integers; got {arrays[k].dtype} "
                             f"with shape {arrays[k].shape}")
    if arrays["manifest"].dtype != np.uint8:
        raise ValueError(f"npz manifest must be uint8 (UTF-8 bytes); got {arrays['manifest'].dtype}")
    try:
        text = arrays["manifest"].tobytes().decode()
    except UnicodeDecodeError:
        raise ValueError("npz manifest is not UTF-8 text") from None
    doc = _parse_json(text, "npz manifest")
    if not isinstance(doc, dict) or doc.get("format") != MAGIC:
        raise ValueError(f"not a refquant golden npz (its manifest has no \"format\": \"{MAGIC}\")")
    if doc.get("version") != VERSION:
        raise ValueError(f"unsupported golden file version {doc.get('version')!r:.40}; expected {VERSION}")
    return _check_manifest(doc.get("manifest")), arrays["inputs"], arrays["outputs"]


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
    doc = _parse_json(path.read_text(errors="replace"), "the file")
    if not isinstance(doc, dict) or doc.get("format") != MAGIC:
        raise ValueError(f"not a refquant golden JSON file (no \"format\": \"{MAGIC}\")")
    if doc.get("version") != VERSION:
        raise ValueError(f"unsupported golden file version {doc.get('version')!r:.40}; expected {VERSION}")
    manifest = _check_manifest(doc.get("manifest"))
    xd = 2 * _dtype(manifest["input_dtype"]).itemsize
    yd = 2 * _dtype(manifest["output_dtype"]).itemsize
    xs = _hex_array(doc.get("inputs"), xd, "inputs")
    return manifest, xs, _hex_array(doc.get("outputs"), yd, "outputs")


def _read_hex(path):
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise ValueError("not a text file") from None
    if not lines or lines[0].strip() != f"// {MAGIC} {VERSION}":
        raise ValueError(f"first line must be '// {MAGIC} {VERSION}'")
    if len(lines) < 2 or not lines[1].startswith("// manifest: "):
        raise ValueError("second line must be '// manifest: {...}'")
    manifest = _check_manifest(_parse_json(lines[1][len("// manifest: "):], "the manifest line"))
    xd = 2 * _dtype(manifest["input_dtype"]).itemsize
    yd = 2 * _dtype(manifest["output_dtype"]).itemsize
    words = [ln.strip() for ln in lines[2:] if ln.strip() and not ln.lstrip().startswith("//")]
    xs, ys = [], []
    for i, w in enumerate(words):
        if len(w) != xd + yd:
            raise ValueError(f"data word {i} has {len(w)} hex digits; expected {xd + yd}: {w!r:.40}")
        xs.append(w[:xd])
        ys.append(w[xd:])
    return manifest, _hex_array(xs, xd, "input word"), _hex_array(ys, yd, "output word")
