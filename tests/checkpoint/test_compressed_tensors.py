"""compressed-tensors checkpoints written by the library itself (skips where it is not installed):
pack-quantized int4 (its observer rule, quantize and packing), nvfp4-pack-quantized and
mxfp4-pack-quantized (its global-scale and qparams rules and its compressors). Clean ones pass;
a flipped code, a block scale one code off, the wrong nibble order and an inverted global scale
are found and named."""

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


# ------------------------------------------------------------------------------------------------
# nvfp4-pack-quantized and mxfp4-pack-quantized, written by the library's own observer rules
# (generate_gparam, calculate_qparams) and compressors


def _fp4_weights(dtype, seed):
    """[32, 128] weights: random rows, an all-zero block, -0.0 and tiny negatives, and rows whose
    blocks are 2**j * (6, e2m1 midpoints) so that x / s lands exactly on ties (the tensor's amax
    is 6 * 2**3, which makes the NVFP4 global scale exact)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(32, 128, generator=g) * torch.rand(32, 1, generator=g) * 3
    ties = torch.tensor([6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -0.75, -1.25, -1.75, -2.5, -3.5,
                         -5.0, 0.0] * 2)
    for r, j in enumerate((3, 0, -2, -5, -9)):
        w[r] = ties.repeat(4) * 2.0**j
    w[5, :16] = 0
    w[6, :16] = -0.0
    w[6, 16:20] = torch.tensor([-1e-7, 1e-7, -0.0, 3e-8])
    w[7, 40:48] = 1e-30  # subnormal block scales under the global scale
    return w.to(dtype)


def _write_fp4(folder, kind, dtype, seed=0):
    from compressed_tensors.compressors.mxfp4.base import MXFP4PackedCompressor
    from compressed_tensors.compressors.nvfp4.base import NVFP4PackedCompressor
    from compressed_tensors.quantization import QuantizationScheme
    from compressed_tensors.quantization.quant_scheme import MXFP4A16, NVFP4
    from compressed_tensors.quantization.utils.helpers import calculate_qparams, generate_gparam

    out, src = {}, {}
    for i, name in enumerate(("m.a", "m.b")):
        w = _fp4_weights(dtype, seed + i)
        src[name + ".weight"] = w
        preset, comp, group = (NVFP4, NVFP4PackedCompressor, 16) if kind == "nvfp4" else \
            (MXFP4A16, MXFP4PackedCompressor, 32)
        scheme = QuantizationScheme(targets=["Linear"], **preset)
        wg = w.reshape(w.shape[0], -1, group)
        sd = {"weight": w}
        if kind == "nvfp4":
            sd["weight_global_scale"] = generate_gparam(w.amin(), w.amax())
        sd["weight_scale"], _ = calculate_qparams(wg.amin(dim=2), wg.amax(dim=2), scheme.weights,
                                                  global_scale=sd.get("weight_global_scale"))
        out.update({f"{name}.{k}": v.contiguous() for k, v in comp.compress(sd, scheme).items()})
    folder.mkdir()
    st.save_file(out, str(folder / "model.safetensors"))
    st.save_file(src, str(folder.parent / "source.safetensors"))
    fmt = "nvfp4-pack-quantized" if kind == "nvfp4" else "mxfp4-pack-quantized"
    with open(folder / "config.json", "w") as fh:
        json.dump({"quantization_config": {"quant_method": "compressed-tensors", "format": fmt}}, fh)


def _planted(folder, name, fn):
    with SafetensorsFile(folder / "model.safetensors") as f:
        tensors = {n: np.array(f.get(n)) for n in f.tensors}
    tensors[name] = fn(tensors[name].copy())
    save_file(folder / "model.safetensors", tensors)
    return rq.checkpoint.check(folder, folder.parent / "source.safetensors")


def _flip(a):
    a.view(np.uint8)[3, 5] ^= 0x01
    return a


def _scale_ulp(a):
    a.view(np.uint8)[2, 1] += 1
    return a


def _nibbles(a):
    u = a.view(np.uint8)
    return ((u >> 4) | (u << 4)).astype(np.uint8)


@pytest.mark.parametrize("kind", ["nvfp4", "mxfp4"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_fp4_written_by_compressed_tensors(tmp_path, kind, dtype):
    _write_fp4(tmp_path / "m", kind, getattr(torch, dtype))
    r = rq.checkpoint.check(tmp_path / "m", tmp_path / "source.safetensors")
    if kind == "mxfp4" and dtype == "float16":  # rq.mx's compressed_tensors row: bfloat16, float32
        assert [row.status for row in r.rows] == ["cannot check"] * 2
        assert "got float16" in r.rows[0].note
        return
    assert r.ok and r.totals["ok"] == 2 and r.not_quantized == [], str(r)
    row = r.rows[0]
    assert row.kind == ("nvfp4" if kind == "nvfp4" else "mx") and row.checks == ["decode", "re-quantize"]
    assert row.codes_compared == 32 * 128
    assert row.scales_compared == 32 * 128 // (16 if kind == "nvfp4" else 32) + (kind == "nvfp4")


@pytest.mark.parametrize("kind", ["nvfp4", "mxfp4"])
def test_fp4_planted_faults_named(tmp_path, kind):
    _write_fp4(tmp_path / "m", kind, torch.bfloat16)
    clean = (tmp_path / "m" / "model.safetensors").read_bytes()

    def fault(name, fn):
        (tmp_path / "m" / "model.safetensors").write_bytes(clean)
        r = _planted(tmp_path / "m", name, fn)
        assert [row.status for row in r.rows] == ["mismatch", "ok"], str(r)
        return r.rows[0]

    row = fault("m.a.weight_packed", _flip)
    assert row.code_mismatches == 1 and row.scale_mismatches == 0
    assert row.examples[0]["index"] == 3 * 128 + 10  # byte 5 holds elements 10 (low nibble) and 11
    label = "code differs from compressed-tensors' NVFP4 recipe" if kind == "nvfp4" else \
        "code differs from rq.mx under 'compressed_tensors'"
    assert list(row.causes) == [label]

    row = fault("m.a.weight_scale", _scale_ulp)
    assert row.code_mismatches == 0 and row.scale_mismatches == 1
    rule = "e4m3(G * amax/6 in x's dtype)" if kind == "nvfp4" else "rq.mx compressed_tensors"
    assert row.causes == {f"block scale code +1 ulp from the {rule} rule": 1}

    row = fault("m.a.weight_packed", _nibbles)
    assert row.code_mismatches > 0
    assert list(row.causes) == ["wrong nibble order (the codes match with the other packing order)"]

    if kind == "nvfp4":
        row = fault("m.a.weight_global_scale", lambda g: np.float32(1) / g)
        inverted = [c for c in row.causes if c.startswith("global scale stored inverted")]
        assert inverted and row.causes[inverted[0]] == 1, row.causes


# ------------------------------------------------------------------------------------------------
# pack-quantized int4/int8 and int-quantized int8, symmetric and asymmetric, through the library's
# compressors


def _write_int(folder, compressor, bits, symmetric, strategy, group=None):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from compressed_tensors.quantization.utils.helpers import calculate_qparams

    torch.manual_seed(bits + 2 * symmetric)
    w = (torch.randn(32, 128) * torch.rand(32, 1) * 2 + (0 if symmetric else 0.3)).to(torch.bfloat16)
    args = QuantizationArgs(num_bits=bits, type="int", symmetric=symmetric, strategy=strategy,
                            group_size=group)
    if strategy == "group":
        mn, mx = w.reshape(32, -1, group).amin(2), w.reshape(32, -1, group).amax(2)
    elif strategy == "channel":
        mn, mx = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
    else:
        mn, mx = w.amin(), w.amax()
    s, z = calculate_qparams(mn, mx, args)
    sd = {"weight": w, "weight_scale": s}
    if not symmetric:
        sd["weight_zero_point"] = z
    out = compressor.compress(sd, QuantizationScheme(targets=["Linear"], weights=args))
    folder.mkdir()
    st.save_file({"l." + k: v.contiguous() for k, v in out.items()}, str(folder / "model.safetensors"))
    st.save_file({"l.weight": w}, str(folder.parent / "source.safetensors"))
    with open(folder / "config.json", "w") as fh:
        json.dump({"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {
            "g": {"weights": {"num_bits": bits, "symmetric": symmetric}}}}}, fh)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_pack_quantized_int4_int8(tmp_path, bits, symmetric):
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor

    _write_int(tmp_path / "m", PackedQuantizationCompressor, bits, symmetric, "group", 32)
    r = rq.checkpoint.check(tmp_path / "m", tmp_path / "source.safetensors")
    assert r.ok, str(r)
    assert r.rows[0].codes_compared == 32 * 128 and r.not_quantized == []
    assert r.rows[0].scales_compared == (32 * 4 if symmetric else 0)
    r = _planted(tmp_path / "m", "l.weight_packed", lambda a: (a.view(np.uint32).__setitem__(
        (1, 2), a.view(np.uint32)[1, 2] ^ np.uint32(1 << bits)), a)[1])
    assert r.rows[0].code_mismatches == 1, str(r)


@pytest.mark.parametrize("strategy", ["tensor", "channel", "group"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_int_quantized_int8(tmp_path, strategy, symmetric):
    from compressed_tensors.compressors.naive_quantized.base import NaiveQuantizationCompressor

    group = 32 if strategy == "group" else None
    _write_int(tmp_path / "m", NaiveQuantizationCompressor, 8, symmetric, strategy, group)
    r = rq.checkpoint.check(tmp_path / "m", tmp_path / "source.safetensors")
    assert r.ok and r.not_quantized == [], str(r)
    row = r.rows[0]
    assert (row.format, row.kind, row.codes_compared) == ("compressed-tensors", "int", 32 * 128)
    assert row.scales_compared == {"tensor": 0, "channel": 32, "group": 128}[strategy] * symmetric
    r = _planted(tmp_path / "m", "l.weight", lambda a: (a.__setitem__((4, 7), a[4, 7] ^ 4), a)[1])
    assert r.rows[0].code_mismatches == 1 and r.rows[0].status == "mismatch", str(r)
