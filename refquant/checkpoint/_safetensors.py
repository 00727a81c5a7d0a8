"""A streaming reader of the safetensors format, NumPy only (ml_dtypes for the non-NumPy dtypes).

The format: 8 bytes, a little-endian u64 ``n``; ``n`` bytes of UTF-8 JSON mapping each tensor name
to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets from the end of the header), plus
an optional ``"__metadata__"`` map of strings; then the raw little-endian, C-ordered data.

Every header field is checked against the file before any data is touched: the dtype is one the
format names, ``end - begin`` equals the element count times the element size, the ranges lie
inside the file and do not overlap. Tensors are NumPy views of one read-only memory map
(zero-copy) where the element type has a NumPy or ml_dtypes dtype.
"""

from __future__ import annotations

import importlib.util
import json
import mmap
import os
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np

__all__ = ["SafetensorsFile", "TensorInfo", "DTYPES", "numpy_dtype", "dtype_name", "save_file"]

HEADER_LIMIT = 100 * 2**20  # the reference implementation refuses headers above 100 MB

# format name -> (bits per element, NumPy dtype name or ml_dtypes attribute)
DTYPES = {
    "BOOL": (8, "bool"), "U8": (8, "uint8"), "I8": (8, "int8"), "U16": (16, "<u2"), "I16": (16, "<i2"),
    "U32": (32, "<u4"), "I32": (32, "<i4"), "U64": (64, "<u8"), "I64": (64, "<i8"),
    "F16": (16, "<f2"), "F32": (32, "<f4"), "F64": (64, "<f8"), "C64": (64, "<c8"),
    "BF16": (16, "ml_dtypes.bfloat16"),
    "F8_E4M3": (8, "ml_dtypes.float8_e4m3fn"), "F8_E4M3FNUZ": (8, "ml_dtypes.float8_e4m3fnuz"),
    "F8_E5M2": (8, "ml_dtypes.float8_e5m2"), "F8_E5M2FNUZ": (8, "ml_dtypes.float8_e5m2fnuz"),
    "F8_E8M0": (8, "ml_dtypes.float8_e8m0fnu"),
    "F4": (4, "ml_dtypes.float4_e2m1fn"),  # two elements a byte, element 0 in the low nibble
    "F6_E2M3": (6, "ml_dtypes.float6_e2m3fn"), "F6_E3M2": (6, "ml_dtypes.float6_e3m2fn"),
}


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of one element of the safetensors dtype ``name`` (ml_dtypes for BF16 and
    the float8/6/4 types; a TypeError when ml_dtypes is not installed).

    >>> numpy_dtype("F32"), numpy_dtype("BF16").name  # doctest: +NEEDS_ML_DTYPES
    (dtype('float32'), 'bfloat16')
    """
    if name not in DTYPES:
        raise TypeError(f"unknown safetensors dtype {name!r}; known: {sorted(DTYPES)}")
    spec = DTYPES[name][1]
    if not spec.startswith("ml_dtypes."):
        return np.dtype(spec)
    if importlib.util.find_spec("ml_dtypes") is None:
        raise TypeError(f"reading {name} tensors needs ml_dtypes (pip install ml_dtypes)")
    import ml_dtypes

    attr = spec.split(".", 1)[1]
    if not hasattr(ml_dtypes, attr):
        raise TypeError(f"reading {name} tensors needs an ml_dtypes with {attr}")
    return np.dtype(getattr(ml_dtypes, attr))


@dataclass(frozen=True)
class TensorInfo:
    """One header entry: ``name``, ``dtype`` (the format's name, e.g. ``"BF16"``), ``shape`` and
    the absolute byte range ``[start, stop)`` of its data in the file."""

    name: str
    dtype: str
    shape: tuple
    start: int
    stop: int

    @property
    def nbytes(self) -> int:
        return self.stop - self.start

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class SafetensorsFile(AbstractContextManager):
    """A safetensors file opened read-only: ``.tensors`` (name -> :class:`TensorInfo`, file order),
    ``.metadata`` (the ``__metadata__`` strings), ``get(name)`` (a zero-copy view),
    ``rows(name, lo, hi)`` (rows ``lo:hi`` along the first axis) and ``chunks(name, rows)``.

    The header is validated in full when the file is opened; a ValueError names the file, the
    tensor and the field that is wrong. Views stay valid while the object is alive; ``close()``
    (or ``with``) releases the map once no view is left.

    >>> import numpy as np, os, tempfile, json, struct
    >>> h = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    >>> p = os.path.join(tempfile.mkdtemp(), "a.safetensors")
    >>> with open(p, "wb") as fh:
    ...     _ = fh.write(struct.pack("<Q", len(h)) + h + np.float32([1, 2, 3, 4]).tobytes())
    >>> with SafetensorsFile(p) as f:
    ...     f.get("w").tolist(), f.rows("w", 1, 2).tolist()
    ([[1.0, 2.0], [3.0, 4.0]], [[3.0, 4.0]])
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        with open(self.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 8:
                raise ValueError(f"{self.path}: not a safetensors file ({size} bytes, the header "
                                 f"length alone takes 8)")
            n = int.from_bytes(fh.read(8), "little")
            if n > HEADER_LIMIT or 8 + n > size:
                raise ValueError(f"{self.path}: header length {n} does not fit the file of {size} bytes "
                                 f"(truncated, or not a safetensors file)")
            raw = fh.read(n)
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else None
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{self.path}: header is not JSON ({exc})") from None
        if not isinstance(header, dict):
            raise ValueError(f"{self.path}: header must be a JSON object; got {type(header).__name__}")
        self.size = size
        self.data_start = 8 + n
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError(f"{self.path}: __metadata__ must map names to strings")
        self.metadata = dict(meta)
        infos = [self._entry(name, entry) for name, entry in header.items()]
        infos.sort(key=lambda t: (t.start, t.stop))
        for a, b in zip(infos, infos[1:]):
            if b.start < a.stop:
                raise ValueError(f"{self.path}: tensors {a.name!r} and {b.name!r} overlap "
                                 f"(bytes {a.start}..{a.stop} and {b.start}..{b.stop})")
        self.tensors = {t.name: t for t in infos}
        self._dtypes = {}

    def _entry(self, name, entry) -> TensorInfo:
        where = f"{self.path}: tensor {name!r}"
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise ValueError(f"{where}: entry must hold dtype, shape and data_offsets; got {entry!r}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPES:
            raise ValueError(f"{where}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise ValueError(f"{where}: shape must be a list of non-negative integers; got {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int and o >= 0 for o in offsets) or offsets[0] > offsets[1]):
            raise ValueError(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end; "
                             f"got {offsets!r}")
        bits = int(np.prod(shape, dtype=object)) * DTYPES[dtype][0]
        if bits % 8 or offsets[1] - offsets[0] != bits // 8:
            raise ValueError(f"{where}: {dtype} {tuple(shape)} needs {bits / 8:g} bytes but data_offsets "
                             f"{offsets} hold {offsets[1] - offsets[0]}")
        start, stop = self.data_start + offsets[0], self.data_start + offsets[1]
        if stop > self.size:
            raise ValueError(f"{where}: data ends at byte {stop} past the end of the file ({self.size} "
                             f"bytes; truncated?)")
        return TensorInfo(name, dtype, tuple(shape), start, stop)

    # -- access ------------------------------------------------------------------------------

    def info(self, name) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor {name!r}") from None

    def dtype(self, name) -> np.dtype:
        """The NumPy dtype of one element of tensor ``name``."""
        t = self.info(name)
        if t.dtype not in self._dtypes:
            self._dtypes[t.dtype] = numpy_dtype(t.dtype)
        return self._dtypes[t.dtype]

    def _bytes(self, start, stop) -> np.ndarray:
        if self._map is None:
            raise ValueError(f"{self.path}: file is closed")
        return np.frombuffer(self._map, np.uint8, stop - start, start)

    def rows(self, name, lo, hi) -> np.ndarray:
        """Rows ``lo:hi`` of tensor ``name`` along its first axis: a read-only view of the map
        (a copy only for F4, whose elements are unpacked from nibbles, low nibble first)."""
        t = self.info(name)
        if t.dtype in ("F6_E2M3", "F6_E3M2"):
            raise NotImplementedError(f"{self.path}: tensor {name!r}: {t.dtype} bit packing is not "
                                      f"specified by the format; read its bytes with raw()")
        shape = t.shape or (1,)
        lo, hi = max(0, int(lo)), min(shape[0], int(hi))
        hi = max(lo, hi)
        per_row = int(np.prod(shape[1:], dtype=np.int64))
        dt = self.dtype(name)
        bits = DTYPES[t.dtype][0]
        if bits == 4:
            if per_row % 2 and hi - lo < shape[0]:
                raise ValueError(f"{self.path}: tensor {name!r}: F4 rows of odd length share bytes; "
                                 f"read it whole")
            b = self._bytes(t.start + lo * per_row // 2, t.start + (hi * per_row + 1) // 2)
            codes = np.empty(b.size * 2, np.uint8)
            codes[0::2], codes[1::2] = b & 0xF, b >> 4
            out = codes[: (hi - lo) * per_row].view(dt)
        else:
            size = dt.itemsize
            out = self._bytes(t.start + lo * per_row * size, t.start + hi * per_row * size).view(dt)
        out = out.reshape((hi - lo, *shape[1:]))
        return out if t.shape else out.reshape(())

    def get(self, name) -> np.ndarray:
        """Tensor ``name`` whole (a read-only view where its dtype allows)."""
        t = self.info(name)
        return self.rows(name, 0, t.shape[0] if t.shape else 1)

    def raw(self, name) -> np.ndarray:
        """The bytes of tensor ``name`` as a read-only uint8 view."""
        t = self.info(name)
        return self._bytes(t.start, t.stop)

    def chunks(self, name, rows):
        """Yield ``(lo, hi, view)`` over tensor ``name`` in blocks of ``rows`` rows."""
        t = self.info(name)
        n = t.shape[0] if t.shape else 1
        for lo in range(0, n, max(1, int(rows))):
            yield lo, min(n, lo + rows), self.rows(name, lo, lo + rows)

    def drop_pages(self):
        """Unmap the pages read so far (the page cache keeps them): the process's resident memory
        stays bounded however much of the file was read. Views stay valid (pages fault back in)."""
        if self._map is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)

    def close(self):
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # views still alive: the map is freed with the last of them
                pass
            self._map = None

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"SafetensorsFile({self.path!r}, {len(self.tensors)} tensors)"


_NAME_OF = {np.dtype(v[1]).str if not v[1].startswith("ml_dtypes.") else v[1].split(".", 1)[1]: k
            for k, v in DTYPES.items() if v[0] % 8 == 0 and k not in ("F8_E4M3FNUZ", "F8_E5M2FNUZ")}
_NAME_OF.update({"float8_e4m3fnuz": "F8_E4M3FNUZ", "float8_e5m2fnuz": "F8_E5M2FNUZ", "|b1": "BOOL",
                 "|u1": "U8", "|i1": "I8"})


def dtype_name(dtype) -> str:
    """The safetensors name of a NumPy (or ml_dtypes) dtype.

    >>> dtype_name(np.float32), dtype_name(np.int8)
    ('F32', 'I8')
    """
    dt = np.dtype(dtype)
    key = dt.name if dt.kind == "V" else dt.newbyteorder("<").str
    if key not in _NAME_OF:
        raise TypeError(f"no safetensors dtype for {dt}")
    return _NAME_OF[key]


def save_file(path, tensors: dict, metadata: dict | None = None) -> None:
    """Write ``tensors`` (name -> array, or name -> ``(dtype, shape, chunks)`` where ``chunks``
    yields arrays whose bytes, in order, make the tensor) in the documented layout: header
    padded with spaces to a multiple of 8 bytes, data in the order given, little-endian.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "t.safetensors")
    >>> save_file(p, {"a": np.arange(3, dtype=np.int8)}, {"note": "x"})
    >>> f = SafetensorsFile(p); f.get("a").tolist(), f.metadata
    ([0, 1, 2], {'note': 'x'})
    """
    header, entries, offset = {}, [], 0
    for name, value in tensors.items():
        if isinstance(value, tuple):
            dt, shape, chunks = np.dtype(value[0]), tuple(value[1]), value[2]
        else:
            arr = np.asarray(value)
            dt, shape, chunks = arr.dtype, arr.shape, (arr,)
        n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        header[name] = {"dtype": dtype_name(dt), "shape": list(shape), "data_offsets": [offset, offset + n]}
        entries.append((name, dt, n, chunks))
        offset += n
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little"))
        fh.write(raw)
        for name, _, n, chunks in entries:
            written = 0
            for c in chunks:
                c = np.ascontiguousarray(c)
                if c.dtype.byteorder == ">":
                    c = c.astype(c.dtype.newbyteorder("<"))
                fh.write(c.tobytes())
                written += c.nbytes
            if written != n:
                raise ValueError(f"tensor {name!r}: chunks gave {written} bytes; its shape needs {n}")


def finfo_max(dtype_name: str) -> float:
    """The largest finite value of a float dtype given by name (bfloat16 through ml_dtypes)."""
    if dtype_name == "bfloat16":
        return float.fromhex("0x1.fep127")
    return float(np.finfo(np.dtype(dtype_name)).max)


def finfo_eps(dtype) -> float:
    """The machine epsilon of a float dtype (bfloat16: 2**-7)."""
    dt = np.dtype(dtype)
    return 2.0**-7 if dt.name == "bfloat16" else float(np.finfo(dt).eps)
