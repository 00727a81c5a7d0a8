"""compressed-tensors pack-quantized int4, written with the library's own observer rule,
quantize and packing functions (skips where compressed-tensors is not installed)."""

import json

import numpy as np
import pytest

import refquant as rq
from refquant.checkpoint import SafetensorsFile, save_file

torch = pytest.importorskip("torch")
st = pytest.importorskip("safetensors.torch")
pytest.importorskip("compressed_tensors")


def _write(folder):
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import quantize
    from compressed_tensors.quantization.utils.helpers import calculate_qparams

    torch.manual_seed(0)
    out, src = {}, {}
    for name, (n, k, g) in {"m.a": (24, 64, 16), "m.b": (16, 128, 32), "m.c": (8, 64, 64)}.items():
        w = (torch.randn(n, k) * torch.rand(n, 1) * 2).to(torch.bfloat16)
        w[0] = 0  # an all-zero row: compressed-tensors' scale is eps there
        src[name + ".weight"] = w
        args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=g)
        wg = w.reshape(n, k // g, g)
        s, z = calculate_qparams(wg.amin(dim=2), wg.amax(dim=2), args)
        out[name + ".weight_packed"] = pack_to_int32(quantize(w, s, z, args, dtype=torch.int8), 4)
        out[name + ".weight_scale"] = s
        out[name + ".weight_shape"] = torch.tensor([n, k])
    (folder / "model").mkdir()
    st.save_file(out, str(folder / "model" / "model.safetensors"))
    st.save_file(src, str(folder / "source.safetensors"))
    with open(folder / "model" / "config.json", "w") as fh:
        json.dump({"quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized",
                   "config_groups": {"g": {"weights": {"num_bits": 4, "symmetric": True}}}}}, fh)


def test_written_by_compressed_tensors(tmp_path):
    _write(tmp_path)
    r = rq.checkpoint.check(tmp_path / "model", tmp_path / "source.safetensors")
    assert r.ok and r.totals["ok"] == 3 and r.not_quantized == [], str(r)
    with SafetensorsFile(tmp_path / "model" / "model.safetensors") as f:
        tensors = {n: np.array(f.get(n)) for n in f.tensors}
    tensors["m.b.weight_packed"][3, 2] ^= 0x00F00000
    save_file(tmp_path / "model" / "model.safetensors", tensors)
    r = rq.checkpoint.check(tmp_path / "model", tmp_path / "source.safetensors")
    assert [row.status for row in r.rows] == ["ok", "mismatch", "ok"]
