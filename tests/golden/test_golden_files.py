"""Golden vectors: contents, exact round trips of every format, clear errors on bad files."""

import json

import numpy as np
import pytest

import refquant as rq
from tests.references import assert_bitwise_equal, bits, exact_fake

FORMATS = ["npz", "json", "hex"]


def test_cases_contents_against_fraction_oracle():
    s, z, lo, hi = 0.1, 3, 0, 15
    g = rq.golden.cases(s, z, qmin=lo, qmax=hi, n_random=50)
    x = g.inputs
    assert np.isnan(x).any() and np.isposinf(x).any() and np.isneginf(x).any()
    assert (np.signbit(x) & (x == 0)).any() and ((x == 0) & ~np.signbit(x)).any()
    tiny = np.finfo(np.float32).smallest_normal
    assert ((np.abs(x) < tiny) & (x != 0)).any()  # subnormals
    tie = np.float32((5 - z + 0.5) * s)
    assert {np.nextafter(tie, np.float32(-1)), tie, np.nextafter(tie, np.float32(1))} <= set(x.tolist())
    expected = np.array([exact_fake(float(v), s, z, lo, hi, "float32") for v in x], np.float32)
    assert_bitwise_equal(g.outputs, expected)
    m = g.manifest
    assert (m["op"], m["convention"], m["qmin"], m["qmax"], m["input_dtype"]) == (
        "fake_quantize", "exact", lo, hi, "float32")
    assert m["refquant_version"] == rq.__version__


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype,op,conv", [
    ("float32", "fake_quantize", "exact"),
    ("float16", "fake_quantize", "onnx"),
    ("bfloat16", "fake_quantize", "torchao"),
    ("float32", "quantize", "torch.fake_quantize"),
    ("float64", "quantize", "onnx"),
])
def test_round_trip(tmp_path, fmt, dtype, op, conv):
    pytest.importorskip("ml_dtypes")
    g = rq.golden.cases(0.0123, 7, qmin=-128, qmax=127, dtype=dtype, op=op, convention=conv,
                        n_random=100)
    path = g.save(tmp_path / f"g.{fmt}")
    h = rq.golden.load(path)
    assert h.inputs.dtype == g.inputs.dtype and h.outputs.dtype == g.outputs.dtype
    assert (bits(h.inputs) == bits(g.inputs)).all()
    assert (h.inputs.view(f"u{g.inputs.itemsize}") == g.inputs.view(f"u{g.inputs.itemsize}")).all()
    assert (h.outputs.view(f"u{g.outputs.itemsize}") == g.outputs.view(f"u{g.outputs.itemsize}")).all()
    assert h.manifest == json.loads(json.dumps(g.manifest))


def test_per_channel_round_trip(tmp_path):
    g = rq.golden.cases(np.float32([0.1, 0.02]), np.int32([0, 5]), qmin=-8, qmax=7, axis=1,
                        convention="torch.fake_quantize", n_random=10)
    assert g.inputs.ndim == 2 and g.inputs.shape[1] == 2
    h = rq.golden.load(g.save(tmp_path / "pc.npz"))
    assert h.inputs.shape == g.inputs.shape
    assert_bitwise_equal(h.outputs, g.outputs)


def test_hex_layout(tmp_path):
    g = rq.golden.cases(0.5, 0, qmin=-4, qmax=3, op="quantize", convention="onnx", n_random=0)
    text = g.save(tmp_path / "g.hex").read_text().splitlines()
    words = [w for w in text if not w.startswith("//")]
    assert len(words) == g.inputs.size and all(len(w) == 10 for w in words)
    i = int(np.flatnonzero(g.inputs == np.float32(1.0))[0])
    assert words[i] == "3f800000" + "02"  # 1.0 / 0.5 = code 2


def corrupt(path, fmt):
    if fmt == "json":
        doc = json.loads(path.read_text())
        doc["inputs"][3] = "zz"
        path.write_text(json.dumps(doc))
    elif fmt == "hex":
        lines = path.read_text().splitlines()
        lines[5] = lines[5][:-1]
        path.write_text("\n".join(lines))
    else:
        path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupted_file_is_a_clear_error(tmp_path, fmt):
    path = rq.golden.cases(0.1, 0, qmin=-8, qmax=7, n_random=5).save(tmp_path / f"g.{fmt}")
    corrupt(path, fmt)
    with pytest.raises(ValueError, match="g\\." + fmt):
        rq.golden.load(path)


def test_hostile_npz_never_unpickles(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, inputs=np.array([object()], dtype=object), outputs=np.uint8([1]),
             manifest=np.uint8([1]))
    with pytest.raises(ValueError, match="unpickle|unsigned"):
        rq.golden.load(path)


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.update(format="other"), "not a golden file"),
    (lambda d: d.update(version=99), "version"),
    (lambda d: d["manifest"].update(shape=[10**6]), "elements"),
    (lambda d: d["manifest"].update(input_dtype="object"), "not a supported dtype"),
    (lambda d: d["manifest"].pop("qmin"), "lacks"),
    (lambda d: d["manifest"].update(shape="x" * 10), "shape"),
])
def test_bad_json_fields(tmp_path, mutate, message):
    path = rq.golden.cases(0.1, 0, qmin=-8, qmax=7, n_random=5).save(tmp_path / "g.json")
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=message):
        rq.golden.load(path)


def test_not_json_and_unknown_suffix(tmp_path):
    (tmp_path / "a.json").write_text("[" * 100000)
    with pytest.raises(ValueError, match="JSON"):
        rq.golden.load(tmp_path / "a.json")
    (tmp_path / "a.bin").write_bytes(b"\x00")
    with pytest.raises(ValueError, match="format must be"):
        rq.golden.load(tmp_path / "a.bin")
    with pytest.raises(ValueError, match="format must be"):
        rq.golden.cases(0.1, 0, qmin=-8, qmax=7, n_random=0).save(tmp_path / "a.bin")


def test_sweep_half_formats_and_diagnosis():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    for dt in (np.float16, ml_dtypes.bfloat16):
        ok = rq.golden.sweep(lambda x: rq.fake_quantize(x, 0.1, 3, qmin=0, qmax=255), 0.1, 3,
                             qmin=0, qmax=255, dtype=dt)
        assert ok.total == 65536 and ok.mismatches == 0 and ok.diagnosis is None
    flipped = rq.golden.sweep(lambda x: -rq.fake_quantize(x, 0.1, 3, qmin=0, qmax=255), 0.1, 3,
                              qmin=0, qmax=255, dtype=np.float16)
    assert flipped.mismatches > 0 and flipped.examples and "differ" in str(flipped)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_sweep_quantize_skips_nan_and_counts_independently():
    def halfaway(x):
        t = x.astype(np.float64) / 0.25
        with np.errstate(invalid="ignore"):
            q = np.clip(np.sign(t) * np.floor(np.abs(t) + 0.5), -8, 7)
        return np.nan_to_num(q).astype(np.int8)

    r = rq.golden.sweep(halfaway, 0.25, 0, qmin=-8, qmax=7, dtype=np.float16, op="quantize")
    # independent count: finite float16 x with x / 0.25 an odd half-integer k + 1/2, |k+1/2| < 7.5
    x = np.arange(2**16, dtype=np.uint16).view(np.float16).astype(np.float64)
    t = x / 0.25
    expected = int((np.isfinite(t) & (np.abs(t) < 7.5) & (t - np.floor(t) == 0.5)
                    & (np.floor(np.abs(t)) % 2 == 0)).sum())
    assert r.mismatches == expected and r.skipped == 2046
    assert r.diagnosis.cause == "tie rounding"


def test_sweep_bad_args():
    with pytest.raises(TypeError, match="callable"):
        rq.golden.sweep(3, 0.1, 0, qmin=0, qmax=7, dtype=np.float16)
    with pytest.raises(ValueError, match="sweep covers"):
        rq.golden.sweep(lambda x: x, 0.1, 0, qmin=0, qmax=7, dtype=np.float64)
