"""Float and block formats: torchao Float8Tensor (written by torchao), ModelOpt FP8 per tensor
(documented layout, float64 oracle), bitsandbytes NF4 (written by bitsandbytes' QuantState),
ModelOpt NVFP4 (documented layout): clean ones pass, planted faults are found and named."""

import json

import ml_dtypes
import numpy as np
import pytest

import refquant as rq
from refquant.checkpoint import SafetensorsFile, save_file

from . import writers as W


def _row(report, name):
    (row,) = [r for r in report.rows if r.name == name]
    return row


def _edit(path, fn):
    with SafetensorsFile(path) as f:
        tensors = {n: fn(n, np.array(f.get(n))) for n in f.tensors}
        meta = dict(f.metadata)
    save_file(path, tensors, meta)


@pytest.fixture(scope="module")
def torchao_fp8(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchao")
    st = pytest.importorskip("safetensors.torch")
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict
    from torchao.quantization import Float8WeightOnlyConfig, quantize_

    d = tmp_path_factory.mktemp("fp8")
    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Linear(64, 48, bias=False)).to(torch.bfloat16)
    st.save_file({k: v.detach().clone() for k, v in m.state_dict().items()}, str(d / "source.safetensors"))
    quantize_(m, Float8WeightOnlyConfig())
    tensors, meta = flatten_tensor_state_dict(m.state_dict())
    st.save_file(tensors, str(d / "model.safetensors"), metadata=meta)
    return d


def test_torchao_float8_clean_and_flipped(torchao_fp8, tmp_path):
    r = rq.checkpoint.check(torchao_fp8 / "model.safetensors", torchao_fp8 / "source.safetensors")
    row = _row(r, "0.weight")
    assert row.kind == "fp8" and row.checks == ["decode", "re-quantize"]
    assert r.ok, str(r)
    assert row.codes_compared == 64 * 48 and row.scales_compared == 48
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((torchao_fp8 / "model.safetensors").read_bytes())
    _edit(bad, lambda n, a: (a.view(np.uint8).__setitem__((2, 3), a.view(np.uint8)[2, 3] ^ 0x08), a)[1]
          if n == "0._weight_qdata" else a)
    r = rq.checkpoint.check(bad, torchao_fp8 / "source.safetensors")
    row = _row(r, "0.weight")
    assert row.status == "mismatch" and row.code_mismatches == 1
    assert row.examples[0]["index"] == 2 * 64 + 3
    assert "code differs under every fp8 convention (a corrupted code?)" in row.causes


def _modelopt_fp8(folder, w, scale_ulp=0):
    """ModelOpt FP8 export: weight F8_E4M3 = RNE_e4m3(x / s) in float64, s = fl32(amax / 448)."""
    amax = np.float32(np.abs(w.astype(np.float64)).max())
    s = np.float32(amax / np.float32(448))
    s = (s.view(np.uint32) + np.uint32(scale_ulp)).view(np.float32) if scale_ulp else s
    q = np.clip(w.astype(np.float64) / np.float64(s), -448, 448).astype(ml_dtypes.float8_e4m3fn)
    save_file(folder / "model.safetensors", {"l.weight": q, "l.weight_scale": np.float32(s).reshape(()),
                                             "l.input_scale": np.float32(1)})
    W.write_config(folder, {"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "FP8"}},
                   "hf_quant_config.json")


def test_modelopt_fp8_per_tensor(tmp_path):
    w = W.rng_weights((32, 48), 21)
    save_file(tmp_path / "src.safetensors", {"l.weight": w})
    good, ulp = tmp_path / "good", tmp_path / "ulp"
    good.mkdir()
    ulp.mkdir()
    _modelopt_fp8(good, w)
    r = rq.checkpoint.check(good, tmp_path / "src.safetensors", convention="exact")
    row = _row(r, "l.weight")
    assert row.format == "modelopt" and row.kind == "fp8"
    assert r.ok, str(r)
    assert r.not_quantized == []  # input_scale belongs to the layer
    _modelopt_fp8(ulp, w, scale_ulp=1)
    r = rq.checkpoint.check(ulp, tmp_path / "src.safetensors", convention="exact")
    row = _row(r, "l.weight")
    assert row.status == "mismatch" and row.causes.get("global scale +1 ulp from the amax/448 rule") == 1


@pytest.fixture(scope="module")
def bnb_nf4(tmp_path_factory):
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("bitsandbytes.functional")
    d = tmp_path_factory.mktemp("bnb")
    torch.manual_seed(2)
    src, tensors = {}, {}
    for name, cs in (("a.weight", False), ("b.weight", True)):
        w = torch.randn(32, 64)
        src[name] = w
        q, st = F.quantize_4bit(w, blocksize=64, compress_statistics=cs, quant_type="nf4")
        tensors[name] = q.numpy()
        for k, v in st.as_dict(packed=True).items():
            tensors[f"{name}.{k}"] = v.numpy()
    save_file(d / "model.safetensors", tensors)
    save_file(d / "source.safetensors", {k: v.numpy() for k, v in src.items()})
    return d


def test_bitsandbytes_nf4_clean_and_nibble_order(bnb_nf4, tmp_path):
    r = rq.checkpoint.check(bnb_nf4 / "model.safetensors", bnb_nf4 / "source.safetensors")
    assert [row.name for row in r.rows] == ["a.weight", "b.weight"]
    assert all(row.kind == "nf4" and row.format == "bitsandbytes" for row in r.rows)
    assert r.ok, str(r)
    assert _row(r, "a.weight").scales_compared == 32
    swapped = tmp_path / "swapped.safetensors"
    swapped.write_bytes((bnb_nf4 / "model.safetensors").read_bytes())
    _edit(swapped, lambda n, a: ((a >> 4) | (a << 4)).astype(np.uint8) if n == "a.weight" else a)
    r = rq.checkpoint.check(swapped, bnb_nf4 / "source.safetensors")
    a = _row(r, "a.weight")
    assert a.status == "mismatch"
    assert list(a.causes) == ["wrong nibble order (the codes match with the other packing order)"]
    assert _row(r, "b.weight").status == "ok"


def test_sub_chunks_do_not_change_the_float_reports(bnb_nf4, tmp_path, monkeypatch):
    """NF4, NVFP4 and MX rows read in sub-chunks of a few rows give the same report as in one."""
    from refquant.checkpoint import _checks

    swapped = tmp_path / "swapped.safetensors"
    swapped.write_bytes((bnb_nf4 / "model.safetensors").read_bytes())
    _edit(swapped, lambda n, a: ((a >> 4) | (a << 4)).astype(np.uint8) if n == "a.weight" else a)
    w = W.rng_weights((16, 64), 31).astype(np.float32)
    save_file(tmp_path / "src.safetensors", {"l.weight": w})
    codes, scodes, g = rq.nvfp4.quantize(w, convention="modelopt")
    codes = codes.copy()
    codes[9, 2] ^= 0x1
    (tmp_path / "nv").mkdir()
    save_file(tmp_path / "nv" / "model.safetensors", {
        "l.weight": rq.pack(codes, 4).reshape(16, 32), "l.weight_scale": scodes.view(ml_dtypes.float8_e4m3fn),
        "l.weight_scale_2": np.float32(g).reshape(())})
    cases = [(bnb_nf4 / "model.safetensors", bnb_nf4 / "source.safetensors"),
             (swapped, bnb_nf4 / "source.safetensors"), (tmp_path / "nv", tmp_path / "src.safetensors")]
    whole = [rq.checkpoint.check(m, s).to_dict()["rows"] for m, s in cases]
    monkeypatch.setattr(_checks, "SUB_CHUNK", 128)
    assert [rq.checkpoint.check(m, s).to_dict()["rows"] for m, s in cases] == whole
    assert whole[1][0]["status"] == "mismatch" and whole[2][0]["code_mismatches"] == 1


def test_bitsandbytes_state_json_is_read(bnb_nf4):
    with SafetensorsFile(bnb_nf4 / "model.safetensors") as f:
        state = json.loads(bytes(f.get("b.weight.quant_state.bitsandbytes__nf4")).decode())
    assert state["quant_type"] == "nf4" and state["blocksize"] == 64


def test_modelopt_nvfp4_flipped_code_and_block_scale(tmp_path):
    w = W.rng_weights((16, 64), 31).astype(np.float32)
    save_file(tmp_path / "src.safetensors", {"l.weight": w})
    codes, scodes, g = rq.nvfp4.quantize(w, convention="modelopt")
    codes = codes.copy()
    codes[1, 2] ^= 0x1
    scodes = scodes.copy()
    scodes[3, 1] += 1
    save_file(tmp_path / "model.safetensors", {
        "l.weight": rq.pack(codes, 4).reshape(16, 32), "l.weight_scale": scodes.view(ml_dtypes.float8_e4m3fn),
        "l.weight_scale_2": np.float32(g).reshape(()), "l.input_scale": np.float32(1)})
    r = rq.checkpoint.check(tmp_path / "model.safetensors", tmp_path / "src.safetensors")
    row = _row(r, "l.weight")
    assert row.kind == "nvfp4" and row.format == "modelopt"
    assert row.scale_mismatches == 1
    assert row.causes["block scale code +1 ulp from the rq.nvfp4 modelopt rule"] == 1
    assert row.code_mismatches >= 1 and row.examples[0]["index"] in range(16 * 64)


def test_unswizzle_inverts_torchaos_to_blocked():
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchao")
    from torchao.prototype.mx_formats.utils import to_blocked

    from refquant.checkpoint._floats import unswizzle

    g = torch.Generator().manual_seed(3)
    for rows, cols in ((6, 5), (128, 4), (300, 37), (256, 8)):
        m = torch.randint(0, 255, (rows, cols), dtype=torch.uint8, generator=g)
        flat = to_blocked(m).numpy()
        for lo, hi in ((0, rows), (rows // 3, rows - 1), (rows - 1, rows)):
            assert (unswizzle(flat, rows, cols, lo, hi) == m.numpy()[lo:hi]).all(), (rows, cols, lo, hi)


def test_torchao_nvfp4_swizzled_clean_and_faults(tmp_path):
    """torchao's NVFP4WeightOnlyConfig (swizzled block scales, a dynamic per-tensor scale):
    208 rows, so the scale tiles are padded."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchao")
    st = pytest.importorskip("safetensors.torch")
    from torchao.prototype.mx_formats import NVFP4WeightOnlyConfig
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict
    from torchao.quantization import quantize_

    torch.manual_seed(4)
    m = torch.nn.Sequential(torch.nn.Linear(256, 208, bias=False)).to(torch.bfloat16)
    source = {k: v.detach().clone() for k, v in m.state_dict().items()}
    st.save_file(source, str(tmp_path / "source.safetensors"))
    quantize_(m, NVFP4WeightOnlyConfig())
    tensors, meta = flatten_tensor_state_dict(m.state_dict())
    assert json.loads(meta["0.weight"])["_data"]["is_swizzled_scales"]
    st.save_file(tensors, str(tmp_path / "model.safetensors"), metadata=meta)
    r = rq.checkpoint.check(tmp_path / "model.safetensors", tmp_path / "source.safetensors")
    row = _row(r, "0.weight")
    assert r.ok and (row.kind, row.format) == ("nvfp4", "torchao"), str(r)
    assert row.codes_compared == 208 * 256 and row.scales_compared == 208 * 16 + 1
    from torchao.prototype.mx_formats.utils import to_blocked

    def edit(n, a):
        if n == "0._weight_qdata":
            a.view(np.uint8)[207, 7] ^= 0x10  # element 15 of row 207
        if n == "0._weight_scale":  # block scale (row 130, block 3), found through the layout
            where = to_blocked(torch.arange(208 * 16, dtype=torch.int32).reshape(208, 16)).numpy()
            a.view(np.uint8).reshape(-1)[np.flatnonzero(where == 130 * 16 + 3)[0]] += 1
        return a

    _edit(tmp_path / "model.safetensors", edit)
    r = rq.checkpoint.check(tmp_path / "model.safetensors", tmp_path / "source.safetensors")
    row = _row(r, "0.weight")
    assert row.code_mismatches == 1 and row.examples[0]["index"] == 207 * 256 + 15
    assert row.causes["block scale code +1 ulp from the rq.nvfp4 torchao rule"] == 1


def test_torchao_mx_fp8_clean_and_faults(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchao")
    st = pytest.importorskip("safetensors.torch")
    from torchao.prototype.mx_formats.mx_tensor import MXTensor
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    torch.manual_seed(3)
    w = torch.randn(8, 64, dtype=torch.bfloat16)
    st.save_file({"l.weight": w}, str(tmp_path / "source.safetensors"))
    tensors, meta = flatten_tensor_state_dict({"l.weight": MXTensor.to_mx(w, torch.float8_e4m3fn, 32)})
    st.save_file(tensors, str(tmp_path / "model.safetensors"), metadata=meta)
    r = rq.checkpoint.check(tmp_path / "model.safetensors", tmp_path / "source.safetensors")
    row = _row(r, "l.weight")
    assert row.kind == "mx" and row.convention == "torchao.floor"
    assert r.ok, str(r)

    def fault(n, a):
        if n == "l._weight_qdata":
            a.view(np.uint8)[1, 7] ^= 0x01
        if n == "l._weight_scale":
            a.view(np.uint8)[4, 1] += 1
        return a

    _edit(tmp_path / "model.safetensors", fault)
    r = rq.checkpoint.check(tmp_path / "model.safetensors", tmp_path / "source.safetensors")
    row = _row(r, "l.weight")
    assert row.status == "mismatch" and row.scale_mismatches == 1
    assert row.causes["block scale code +1 ulp from the rq.mx torchao.floor rule"] == 1
    assert row.code_mismatches >= 1 and row.examples[0]["index"] == 1 * 64 + 7
