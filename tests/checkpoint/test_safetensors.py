"""The streaming safetensors reader: bitwise equal to safetensors' own torch reader on every dtype
it writes, zero-copy, row slices, the writer, and headers that lie."""

import json
import os
import struct

import numpy as np
import pytest

from refquant.checkpoint import SafetensorsFile, save_file
from refquant.checkpoint._safetensors import DTYPES, numpy_dtype

torch = pytest.importorskip("torch")
st_torch = pytest.importorskip("safetensors.torch")

TORCH_DTYPES = ["float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
                "bool", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
                "float8_e8m0fnu", "uint16", "uint32", "uint64"]


def _bits_of(t):
    """A torch tensor's raw bytes as a uint8 array."""
    t = t.reshape(-1).contiguous()
    return t.view(torch.uint8).numpy() if t.dtype != torch.bool else t.numpy().view(np.uint8)


def _all_patterns(dtype, shape):
    """Tensors whose bytes cycle through every byte value (every bit pattern of 1-byte types)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    n = int(np.prod(shape)) * itemsize
    raw = (np.arange(n) * 7 % 256).astype(np.uint8)
    if dtype == torch.bool:
        raw = raw % 2
    if n == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.from_numpy(raw).view(dtype).reshape(shape)


@pytest.mark.parametrize("name", TORCH_DTYPES)
def test_bitwise_equal_to_safetensors_torch(tmp_path, name):
    dt = getattr(torch, name, None)
    if dt is None:
        pytest.skip(f"this torch has no {name}")
    p = tmp_path / "t.safetensors"
    tensors = {"a": _all_patterns(dt, (37, 16)), "b": _all_patterns(dt, (5,)), "c": _all_patterns(dt, ()),
               "e": _all_patterns(dt, (0, 3))}
    try:
        st_torch.save_file(tensors, str(p), metadata={"k": "v"})
    except (ValueError, KeyError, TypeError) as exc:
        pytest.skip(f"safetensors cannot write {name}: {exc}")
    back = st_torch.load_file(str(p))
    with SafetensorsFile(p) as f:
        assert f.metadata == {"k": "v"}
        for k, t in back.items():
            got = f.get(k)
            assert got.shape == tuple(t.shape)
            assert got.dtype.itemsize == t.element_size()
            np.testing.assert_array_equal(got.reshape(-1).view(np.uint8), _bits_of(t))
        for lo, hi in [(0, 1), (3, 17), (36, 37), (30, 99)]:
            rows = f.rows("a", lo, hi)
            np.testing.assert_array_equal(rows.view(np.uint8).ravel(), _bits_of(back["a"][lo:hi]))


def test_ml_dtypes_values_match_torch(tmp_path):
    p = tmp_path / "t.safetensors"
    x = torch.linspace(-500, 500, 1001)
    tensors = {n: x.to(getattr(torch, n)) for n in ["bfloat16", "float8_e4m3fn", "float8_e5m2"]}
    tensors["e8m0"] = torch.tensor([2.0**k for k in range(-127, 128)]).to(torch.float8_e8m0fnu)
    st_torch.save_file(tensors, str(p))
    with SafetensorsFile(p) as f:
        for k, t in tensors.items():
            np.testing.assert_array_equal(f.get(k).astype(np.float64), t.double().numpy())


def test_views_are_zero_copy_and_read_only(tmp_path):
    p = tmp_path / "t.safetensors"
    save_file(p, {"w": np.arange(64, dtype=np.float32).reshape(8, 8)})
    with SafetensorsFile(p) as f:
        v = f.rows("w", 2, 4)
        assert not v.flags.owndata and not v.flags.writeable
        base = v
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        assert not isinstance(base, np.ndarray)  # the memory map itself, no copy in between
        with pytest.raises(ValueError):
            v[0, 0] = 1


def test_save_file_read_by_safetensors(tmp_path):
    import ml_dtypes

    p = tmp_path / "t.safetensors"
    arrays = {"f": np.float32([[1.5, -2]]), "h": np.float16([3]),
              "b": np.float32([1, 2]).astype(ml_dtypes.bfloat16),
              "e": np.float32([448, -0.5]).astype(ml_dtypes.float8_e4m3fn), "i": np.int64([-(2**62)]),
              "be": np.array([1.25, 2], dtype=">f4")}
    save_file(p, arrays, {"m": "1"})
    back = st_torch.load_file(str(p))
    for k, a in arrays.items():
        assert back[k].double().numpy().tolist() == a.astype(np.float64).tolist()
    assert back["e"].dtype == torch.float8_e4m3fn and back["b"].dtype == torch.bfloat16


def test_every_named_dtype_has_a_size_and_a_reader():
    for name, (bits, _) in DTYPES.items():
        assert bits in (4, 6, 8, 16, 32, 64)
        assert numpy_dtype(name).itemsize in (1, 2, 4, 8)


def test_f4_unpacked_low_nibble_first(tmp_path):
    import ml_dtypes

    h = json.dumps({"x": {"dtype": "F4", "shape": [2, 4], "data_offsets": [0, 4]}}).encode()
    p = tmp_path / "f4.safetensors"
    p.write_bytes(struct.pack("<Q", len(h)) + h + bytes([0x21, 0x43, 0x65, 0x87]))
    with SafetensorsFile(p) as f:
        x = f.get("x")
        assert x.dtype == np.dtype(ml_dtypes.float4_e2m1fn)
        assert x.view(np.uint8).tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
        assert f.rows("x", 1, 2).view(np.uint8).tolist() == [[5, 6, 7, 8]]


# ------------------------------------------------------------------------------------------------
# bad input


def _write(p, header, data=b"", length=None):
    h = json.dumps(header).encode()
    p.write_bytes(struct.pack("<Q", len(h) if length is None else length) + h + data)
    return p


@pytest.mark.parametrize("header,data,length,message", [
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, None, "past the end"),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}, b"\0" * 16, None, "needs 16 bytes"),
    ({"w": {"dtype": "F16", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16, None, "needs 8 bytes"),
    ({"w": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 4]}}, b"\0" * 4, None, "unknown dtype"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, None, "overlap"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, None, "non-negative"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, b"\0" * 8, None, "begin <= end"),
    ({"w": {"dtype": "F32", "shape": [1]}}, b"\0" * 4, None, "data_offsets"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, 10**6, "header length"),
])
def test_lying_headers_are_clear_errors(tmp_path, header, data, length, message):
    p = _write(tmp_path / "bad.safetensors", header, data, length)
    with pytest.raises(ValueError, match=message) as err:
        SafetensorsFile(p)
    assert str(p) in str(err.value)


def test_truncated_and_garbage_files(tmp_path):
    p = tmp_path / "short.safetensors"
    p.write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="not a safetensors file"):
        SafetensorsFile(p)
    g = tmp_path / "garbage.safetensors"
    g.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(ValueError, match="not JSON"):
        SafetensorsFile(g)
    good = tmp_path / "good.safetensors"
    save_file(good, {"w": np.zeros((64, 64), np.float32)})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: os.path.getsize(good) - 100])
    with pytest.raises(ValueError, match="truncated"):
        SafetensorsFile(cut)
