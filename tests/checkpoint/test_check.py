"""rq.checkpoint.check on small synthetic checkpoints: clean ones pass, planted faults are found
and named, bad inputs give a clear error or a per-tensor "cannot check" and the rest is checked."""

import json
import os

import numpy as np
import pytest

import refquant as rq
from refquant.checkpoint import SafetensorsFile, save_file

from . import writers as W


def _row(report, name):
    (row,) = [r for r in report.rows if r.name == name]
    return row


# ------------------------------------------------------------------------------------------------
# torchao Int8Tensor, written by torchao itself


@pytest.fixture(scope="module")
def torchao_int8(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchao")
    st = pytest.importorskip("safetensors.torch")
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    d = tmp_path_factory.mktemp("torchao")
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(96, 40, bias=True), torch.nn.Linear(40, 24, bias=False))
    m = m.to(torch.bfloat16)
    src = {k: v.detach().clone() for k, v in m.state_dict().items()}
    st.save_file(src, str(d / "source.safetensors"))
    quantize_(m, Int8WeightOnlyConfig(version=2))
    tensors, meta = flatten_tensor_state_dict(m.state_dict())
    st.save_file(tensors, str(d / "model.safetensors"), metadata=meta)
    return d


def _rewrite(src, dst, edit):
    """Copy a checkpoint, letting ``edit(name, array) -> array`` change some tensors."""
    with SafetensorsFile(src) as f:
        tensors = {n: edit(n, np.array(f.get(n))) for n in f.tensors}
        meta = dict(f.metadata)
    save_file(dst, tensors, meta)


def test_torchao_int8_clean(torchao_int8):
    r = rq.checkpoint.check(torchao_int8 / "model.safetensors", torchao_int8 / "source.safetensors")
    assert [row.name for row in r.rows] == ["0.weight", "1.weight"]
    assert r.ok, str(r)
    for row in r.rows:
        assert row.checks == ["decode", "re-quantize"] and row.code_mismatches == 0
        assert row.codes_compared == row.elements > 0 and row.scales_compared == row.shape[0]
    assert r.not_quantized == ["0.bias"]
    assert r.totals["ok"] == 2


@pytest.mark.parametrize("bits,group,asymmetric", [(4, 32, False), (8, None, False), (4, 32, True)])
def test_torchao_intx_unpacked_clean_and_flipped(tmp_path, bits, group, asymmetric):
    """IntxUnpackedToInt8Tensor (IntxWeightOnlyConfig): codes unpacked in int8, a zero point
    stored also when symmetric; the codes are re-quantized (the scales are not recomputed)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchao")
    st = pytest.importorskip("safetensors.torch")
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_primitives import MappingType

    torch.manual_seed(bits)
    m = torch.nn.Sequential(torch.nn.Linear(128, 48, bias=False)).to(torch.bfloat16)
    st.save_file({"0.weight": m[0].weight.detach().clone()}, str(tmp_path / "source.safetensors"))
    quantize_(m, IntxWeightOnlyConfig(
        weight_dtype=getattr(torch, f"int{bits}"), granularity=PerGroup(group) if group else PerAxis(0),
        mapping_type=MappingType.ASYMMETRIC if asymmetric else MappingType.SYMMETRIC))
    tensors, meta = flatten_tensor_state_dict(m.state_dict())
    assert json.loads(meta["0.weight"])["_type"] == "IntxUnpackedToInt8Tensor"
    st.save_file(tensors, str(tmp_path / "model.safetensors"), metadata=meta)
    r = rq.checkpoint.check(tmp_path / "model.safetensors", tmp_path / "source.safetensors")
    (row,) = r.rows
    assert r.ok and row.codes_compared == 48 * 128 and row.checks == ["decode", "re-quantize"], str(r)
    _rewrite(tmp_path / "model.safetensors", tmp_path / "bad.safetensors",
             lambda n, a: (a.__setitem__((7, 9), a[7, 9] ^ 1), a)[1] if n == "0._weight_qdata" else a)
    r = rq.checkpoint.check(tmp_path / "bad.safetensors", tmp_path / "source.safetensors")
    assert r.rows[0].code_mismatches == 1 and r.rows[0].examples[0]["index"] == 7 * 128 + 9


def test_torchao_int8_flipped_code_and_scale_ulp(torchao_int8, tmp_path):
    def edit(name, a):
        if name == "0._weight_qdata":
            a[3, 5] = a[3, 5] + 1 if a[3, 5] < 127 else a[3, 5] - 1
        if name == "1._weight_scale":
            a.view(np.uint32)[7, 0] += 1
        return a

    _rewrite(torchao_int8 / "model.safetensors", tmp_path / "bad.safetensors", edit)
    r = rq.checkpoint.check(tmp_path / "bad.safetensors", torchao_int8 / "source.safetensors")
    a, b = _row(r, "0.weight"), _row(r, "1.weight")
    assert a.status == "mismatch" and a.code_mismatches == 1 and a.scale_mismatches == 0
    assert a.examples[0]["index"] == 3 * 96 + 5
    assert any("corrupted code" in c for c in a.causes)
    assert b.status == "mismatch" and b.scale_mismatches == 1
    assert b.causes.get("scale +1 ulp from the torchao_symmetric rule") == 1
    assert r.totals == {**r.totals, "mismatch": 2, "ok": 0}
    # without a source only decode runs: both decode cleanly
    d = rq.checkpoint.check(tmp_path / "bad.safetensors")
    assert d.ok and all(row.checks == ["decode"] for row in d.rows)


def test_torchao_convention_override_names_the_difference(torchao_int8):
    r = rq.checkpoint.check(torchao_int8 / "model.safetensors", torchao_int8 / "source.safetensors",
                            convention="exact")
    assert all(row.convention == "exact" for row in r.rows)
    assert all(row.status in ("ok", "mismatch") for row in r.rows)


# ------------------------------------------------------------------------------------------------
# compressed-tensors pack-quantized int4 (documented layout; oracle in float64)


@pytest.fixture(scope="module")
def ct_source(tmp_path_factory):
    d = tmp_path_factory.mktemp("ct_src")
    weights = {"m.a.weight": W.rng_weights((24, 64), 1), "m.b.weight": W.rng_weights((16, 32), 2)}
    save_file(d / "source.safetensors", weights)
    return d, weights


def test_ct_int4_clean_and_faults(ct_source, tmp_path):
    src, weights = ct_source
    clean = tmp_path / "clean"
    clean.mkdir()
    W.ct_int4(clean, weights)
    r = rq.checkpoint.check(clean, src / "source.safetensors")
    assert r.ok, str(r)
    assert {row.format for row in r.rows} == {"compressed-tensors"}
    assert r.not_quantized == []

    swapped = tmp_path / "swapped"
    swapped.mkdir()
    W.ct_int4(swapped, weights, nibbles_reversed=True)
    r = rq.checkpoint.check(swapped, src / "source.safetensors")
    for row in r.rows:
        assert row.status == "mismatch"
        assert list(row.causes) == ["wrong nibble order (the codes match with the other packing order)"]

    ulp = tmp_path / "ulp"
    ulp.mkdir()
    W.ct_int4(ulp, weights, scale_fault="m.b.weight")
    r = rq.checkpoint.check(ulp, src / "source.safetensors")
    assert _row(r, "m.a.weight").status == "ok"
    b = _row(r, "m.b.weight")
    assert b.scale_mismatches == 1 and b.causes["scale +1 ulp from the ct_symmetric rule"] == 1


def test_ct_decode_matches_oracle(ct_source, tmp_path):
    """The unpacked codes are the oracle's: dequantize through the reader's blocks."""
    from refquant.checkpoint._checks import open_file
    from refquant.checkpoint._formats import load_block
    from refquant.checkpoint._run import _plan

    src, weights = ct_source
    W.ct_int4(tmp_path, weights)
    qts = _plan(tmp_path, None, "auto", None, None)[0]
    for q in qts:
        codes, scale, zp = load_block(q, open_file, 0, q.shape[0])
        w = weights[q.name].astype(np.float64)
        s = np.repeat(np.asarray(scale, np.float64), 16, axis=1)
        expected = np.clip(np.rint(W.rne_bf16(w / s).astype(np.float64)), -8, 7)
        np.testing.assert_array_equal(codes, expected)
        assert zp is None


# ------------------------------------------------------------------------------------------------
# GPTQ (v1 / v2) and AWQ: decode only, zero point conventions


@pytest.mark.parametrize("stored,declared", [("v2", "v2"), ("v1", "v1"), ("v1", "v2"), ("v2", "v1")])
def test_gptq_zero_point_conventions(tmp_path, stored, declared):
    weights = {"l.weight": W.rng_weights((16, 64), 3, np.float16)}
    W.gptq(tmp_path, weights, stored=stored, declared=declared)
    r = rq.checkpoint.check(tmp_path)
    row = _row(r, "l.weight")
    assert row.format == ("gptq_v2" if declared == "v2" else "gptq")
    if stored == declared:
        assert row.status == "ok" and row.checks == ["decode"], row.line()
    else:
        assert row.status == "mismatch"
        want = "read as v2 hold v1" if stored == "v1" else "read as v1 hold v2"
        assert any(want in c for c in row.causes), row.causes


def test_gptq_with_source_is_decode_only_and_names_an_offset(tmp_path):
    weights = {"l.weight": W.rng_weights((16, 64), 4, np.float16)}
    save_file(tmp_path / "src.safetensors", weights)
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    W.gptq(good, weights, stored="v2", declared="v2", sym=False)
    W.gptq(bad, weights, stored="v1", declared="v2", sym=False)
    r = rq.checkpoint.check(good, tmp_path / "src.safetensors")
    row = _row(r, "l.weight")
    assert row.status == "ok" and row.checks == ["decode"] and "not round-to-nearest" in row.note
    r = rq.checkpoint.check(bad, tmp_path / "src.safetensors")
    row = _row(r, "l.weight")
    assert row.status == "mismatch"
    assert any("zero point off by one" in c for c in row.causes), row.causes


def test_gptq_and_awq_unpack_to_the_oracle(tmp_path):
    from refquant.checkpoint._checks import open_file
    from refquant.checkpoint._formats import load_block
    from refquant.checkpoint._run import _plan

    w = W.rng_weights((16, 64), 5, np.float16)
    q, s, z = W._int4_rtn(w, 32)
    for kind in ("gptq", "awq"):
        d = tmp_path / kind
        d.mkdir()
        if kind == "gptq":
            W.gptq(d, {"l.weight": w}, sym=False)
        else:
            W.awq(d, {"l.weight": w})
        (qt,) = _plan(d, None, "auto", None, None)[0]
        assert qt.format.startswith(kind) and qt.shape == (16, 64)
        for lo, hi in [(0, 16), (8, 16)]:
            codes, scale, zp = load_block(qt, open_file, lo, hi)
            np.testing.assert_array_equal(codes, q[lo:hi])
            np.testing.assert_array_equal(zp, z[lo:hi])
            assert scale.tobytes() == np.ascontiguousarray(s[lo:hi]).tobytes()
        r = rq.checkpoint.check(d)
        assert r.ok, str(r)


# ------------------------------------------------------------------------------------------------
# bad input: per-tensor "cannot check", the rest still checked


def test_source_shape_mismatch_and_missing_tensor(ct_source, tmp_path):
    src, weights = ct_source
    W.ct_int4(tmp_path, weights)
    other = tmp_path / "other.safetensors"
    save_file(other, {"m.a.weight": W.rng_weights((24, 32), 1)})
    r = rq.checkpoint.check(tmp_path / "model.safetensors", other)
    a, b = _row(r, "m.a.weight"), _row(r, "m.b.weight")
    assert a.status == "cannot check" and "source shape (24, 32) differs" in a.note
    assert b.status == "cannot check" and "source has no tensor 'm.b.weight'" in b.note
    assert "cannot check: source shape" in str(r)


def test_unknown_layout_rest_still_checked(ct_source, tmp_path):
    src, weights = ct_source
    W.ct_int4(tmp_path, weights)
    with SafetensorsFile(tmp_path / "model.safetensors") as f:
        tensors = {n: np.array(f.get(n)) for n in f.tensors}
    tensors["x.qweight"] = np.zeros((4, 8), np.int32)  # GPTQ codes without scales
    tensors["y.weight_packed"] = np.zeros((4, 8), np.int32)  # compressed-tensors without a scale
    save_file(tmp_path / "model.safetensors", tensors)
    r = rq.checkpoint.check(tmp_path, src / "source.safetensors")
    assert _row(r, "x.weight").status == "cannot check"
    assert "unknown layout" in _row(r, "x.weight").note
    assert _row(r, "y.weight").status == "cannot check"
    assert _row(r, "m.a.weight").status == "ok" and _row(r, "m.b.weight").status == "ok"


def _split_into_shards(folder):
    """model.safetensors -> one shard per quantized weight (model-0000k-of-0000n.safetensors)."""
    with SafetensorsFile(folder / "model.safetensors") as f:
        tensors = {n: np.array(f.get(n)) for n in f.tensors}
    os.remove(folder / "model.safetensors")
    mods = sorted({n.rsplit(".", 1)[0] for n in tensors})
    paths = []
    for k, mod in enumerate(mods, 1):
        paths.append(folder / f"model-{k:05d}-of-{len(mods):05d}.safetensors")
        save_file(paths[-1], {n: a for n, a in tensors.items() if n.rsplit(".", 1)[0] == mod})
    return paths


@pytest.mark.parametrize("damage", ["truncated", "lying header"])
def test_unreadable_shard_is_reported_and_the_rest_checked(ct_source, tmp_path, damage, capsys):
    from refquant.cli import main

    src, weights = ct_source
    W.ct_int4(tmp_path, weights)
    a, b = _split_into_shards(tmp_path)
    data = b.read_bytes()
    if damage == "truncated":
        b.write_bytes(data[:-7])
    else:  # the header length says more than the file holds
        b.write_bytes((len(data) * 2).to_bytes(8, "little") + data[8:])
    r = rq.checkpoint.check(tmp_path, src / "source.safetensors")
    assert [row.name for row in r.rows] == ["m.a.weight"] and r.rows[0].status == "ok"
    assert list(r.unreadable) == [str(b)] and not r.ok and r.totals["unreadable_files"] == 1
    assert f"unreadable   {b}" in str(r) and json.loads(r.to_json())["unreadable"] == r.unreadable
    assert main(["checkpoint", str(tmp_path), "--source", str(src / "source.safetensors")]) == 3
    assert "unreadable" in capsys.readouterr().out
    with pytest.raises(ValueError, match=str(b)):  # a single file that cannot be read: an error
        rq.checkpoint.check(b)


def test_unreadable_source_shard_names_itself(ct_source, tmp_path):
    src, weights = ct_source
    W.ct_int4(tmp_path, weights)
    sdir = tmp_path / "src"
    sdir.mkdir()
    for name, w in weights.items():
        save_file(sdir / f"{name}.safetensors", {name: w})
    bad = sdir / "m.b.weight.safetensors"
    bad.write_bytes(bad.read_bytes()[:-3])
    r = rq.checkpoint.check(tmp_path / "model.safetensors", sdir)
    assert _row(r, "m.a.weight").status == "ok"
    row = _row(r, "m.b.weight")
    assert row.status == "cannot check" and "unreadable source shards: m.b.weight.safetensors" in row.note
    assert r.unreadable[str(bad)].startswith("source shard: ")


def test_zero_and_nan_scales_are_decode_faults(ct_source, tmp_path):
    src, weights = ct_source
    W.ct_int4(tmp_path, weights)
    with SafetensorsFile(tmp_path / "model.safetensors") as f:
        tensors = {n: np.array(f.get(n)) for n in f.tensors}
    s = tensors["m.a.weight_scale"]
    s[0, 0], s[1, 1] = 0, np.nan
    save_file(tmp_path / "model.safetensors", tensors)
    r = rq.checkpoint.check(tmp_path, src / "source.safetensors")
    a = _row(r, "m.a.weight")
    assert a.status == "mismatch" and a.causes["scale not finite or not positive"] == 2
    assert a.code_mismatches == 0 and a.codes_compared == a.elements - 32
    assert _row(r, "m.b.weight").status == "ok"


def test_unreadable_checkpoint_is_an_error(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(b"\x10\0\0\0\0\0\0\0{}")
    with pytest.raises(ValueError, match="does not fit"):
        rq.checkpoint.check(p)
    with pytest.raises(ValueError, match="does not exist"):
        rq.checkpoint.check(tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match="format must be one of"):
        rq.checkpoint.check(p, format="gguf")


def test_task_split_does_not_change_the_report(ct_source, tmp_path):
    src, weights = ct_source
    W.ct_int4(tmp_path, weights, nibbles_reversed=True)
    whole = rq.checkpoint.check(tmp_path, src / "source.safetensors")
    split = rq.checkpoint.check(tmp_path, src / "source.safetensors", task_rows=3)
    assert [vars(r) for r in whole.rows] == [vars(r) for r in split.rows]


def test_report_json_round_trip(torchao_int8):
    r = rq.checkpoint.check(torchao_int8 / "model.safetensors", torchao_int8 / "source.safetensors")
    d = json.loads(r.to_json())
    assert d["ok"] is True and d["totals"]["tensors"] == 2 and len(d["rows"]) == 2
    assert d["rows"][0]["checks"] == ["decode", "re-quantize"]
    assert os.path.basename(d["path"]) == "model.safetensors"


def test_gptq_act_order_g_idx(tmp_path):
    """desc_act checkpoints: g_idx sends each input column to its group (one scale per element)."""
    from refquant.checkpoint._checks import open_file
    from refquant.checkpoint._formats import load_block
    from refquant.checkpoint._run import _plan

    w = W.rng_weights((16, 64), 8, np.float16)
    W.gptq(tmp_path, {"l.weight": w}, sym=False)
    perm = np.random.default_rng(0).permutation(64)
    with SafetensorsFile(tmp_path / "model.safetensors") as f:
        tensors = {n: np.array(f.get(n)) for n in f.tensors}
    tensors["l.g_idx"] = tensors["l.g_idx"][perm]
    save_file(tmp_path / "model.safetensors", tensors)
    (qt,) = _plan(tmp_path, None, "auto", None, None)[0]
    codes, scale, zp = load_block(qt, open_file, 0, 16)
    s = np.ascontiguousarray(tensors["l.scales"].T)  # [N, K/G]
    g_idx = tensors["l.g_idx"]
    assert scale.shape == (16, 64) and (scale == s[:, g_idx]).all()
    assert rq.checkpoint.check(tmp_path).ok
