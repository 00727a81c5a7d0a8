"""Golden files and sweeps under attack: hostile files, manifests that restore their qparams
exactly, edge coverage of the golden cases, identify on NaN / wrap-around data, sweep robustness,
report wording."""

import json
import subprocess
import sys

import numpy as np
import pytest

import refquant as rq
from refquant.golden._files import qparams
from tests.references import assert_bitwise_equal, bits, exact_code, exact_fake


def _json_file(tmp_path, **kw):
    g = rq.golden.cases(0.5, 0, qmin=-4, qmax=3, n_random=3, **kw)
    return g, g.save(tmp_path / "g.json")


@pytest.mark.parametrize("word", ["-3f80000", "0x3f8000", "3f80_000", " 3f80000", "+3f80000"])
def test_hex_words_must_be_plain_hex_digits(tmp_path, word):
    _, path = _json_file(tmp_path)
    doc = json.loads(path.read_text())
    doc["inputs"][0] = word
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="not hexadecimal"):
        rq.golden.load(path)
    g = rq.golden.cases(0.5, 0, qmin=-4, qmax=3, n_random=3)
    hexpath = g.save(tmp_path / "g.hex")
    lines = hexpath.read_text().splitlines()
    lines[3] = word + lines[3][len(word):]  # same width, one bad word
    hexpath.write_text("\n".join(lines))
    with pytest.raises(ValueError, match="not hexadecimal|hex digits"):
        rq.golden.load(hexpath)


@pytest.mark.parametrize("key,value,message", [
    ("scale", "abc", "finite numbers"),
    ("scale", float("nan"), "finite numbers"),
    ("scale", -0.5, "> 0"),
    ("zero_point", [1, "x"], "finite numbers"),
    ("qmin", 10, "above qmax"),
    ("qmax", 2**70, "int64"),
    ("output_dtype", "int8", "does not fit op"),
    ("input_dtype", "int8", "input_dtype must be"),
    ("axis", "1", "axis"),
    ("convention", 3, "convention must be a string"),
    ("scale_dtype", "object", "scale_dtype"),
])
def test_bad_manifest_values(tmp_path, key, value, message):
    _, path = _json_file(tmp_path)
    doc = json.loads(path.read_text())
    doc["manifest"][key] = value
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=message):
        rq.golden.load(path)


def test_npz_needs_the_format_marker_and_uint8_manifest(tmp_path):
    good = rq.golden.load(rq.golden.cases(0.5, 0, qmin=-4, qmax=3, n_random=3).save(tmp_path / "g.npz"))
    text = json.dumps(good.manifest).encode()  # a bare manifest, no {"format": ...} wrapper
    bare = tmp_path / "bare.npz"
    np.savez(bare, inputs=bits(good.inputs).astype(np.uint32), outputs=bits(good.outputs).astype(np.uint32),
             manifest=np.frombuffer(text, np.uint8))
    with pytest.raises(ValueError, match="not a golden file: .*format"):
        rq.golden.load(bare)
    wide = tmp_path / "wide.npz"
    np.savez(wide, inputs=np.uint32([0]), outputs=np.uint32([0]), manifest=np.uint16([0x7b, 0x7d]))
    with pytest.raises(ValueError, match="uint8"):
        rq.golden.load(wide)


def test_load_with_explicit_format(tmp_path):
    g = rq.golden.cases(0.5, 0, qmin=-4, qmax=3, n_random=3)
    path = g.save(tmp_path / "vectors.dat", format="hex")
    h = rq.golden.load(path, format="hex")
    assert (bits(h.inputs) == bits(g.inputs)).all() and (bits(h.outputs) == bits(g.outputs)).all()


@pytest.mark.parametrize("scale,zp,conv,dtype", [
    (np.float16(0.1), 3, "torchao", "float16"),          # the scale's dtype drives promote()
    (np.float32(0.0123), np.int32(7), "onnx", "float16"),
    (0.0123, 7, "torchao", "bfloat16"),                    # a Python float scale is weak
    (np.float32([0.1, 0.02]), np.float32([0.0, 5.0]), "torch.fake_quantize", "float32"),
])
def test_manifest_restores_qparams_exactly(tmp_path, scale, zp, conv, dtype):
    pytest.importorskip("ml_dtypes")
    axis = 1 if np.ndim(scale) else None
    g = rq.golden.cases(scale, zp, qmin=0, qmax=255, dtype=dtype, convention=conv, axis=axis,
                        n_random=200)
    for fmt in ("npz", "json", "hex"):
        m = rq.golden.load(g.save(tmp_path / f"g.{fmt}")).manifest
        s2, z2 = qparams(m)
        assert type(s2) is type(scale) or np.asarray(s2).dtype == np.asarray(scale).dtype
        assert np.asarray(z2).dtype == np.asarray(zp).dtype or isinstance(z2, int)
        y = rq.fake_quantize(g.inputs, s2, z2, qmin=0, qmax=255, axis=m["axis"], convention=conv)
        assert_bitwise_equal(y, g.outputs, fmt)


def test_check_command_on_float16_scale_file(tmp_path):
    path = rq.golden.cases(np.float16(0.1), 3, qmin=0, qmax=255, dtype="float16",
                           convention="torchao", n_random=200).save(tmp_path / "f16.npz")
    p = subprocess.run([sys.executable, "-m", "refquant", "check", str(path)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_bfloat16_cases_hold_its_own_extremes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    info = ml_dtypes.finfo(ml_dtypes.bfloat16)
    g = rq.golden.cases(0.1, 0, qmin=-8, qmax=7, dtype="bfloat16", n_random=0)
    x = g.inputs.astype(np.float64)
    for v in (float(info.max), -float(info.max), float(info.smallest_subnormal),
              -float(info.smallest_subnormal), float(info.smallest_normal)):
        assert v in x, v


def test_every_tie_of_a_16_bit_range_with_both_neighbours():
    s, z, lo, hi = float(np.float32(0.001)), 0, -32768, 32767
    x = rq.golden.cases(s, z, qmin=lo, qmax=hi, n_random=0).inputs
    have = set(x.view(np.uint32).tolist())
    k = np.arange(lo, hi + 1, dtype=np.float64)
    ties = ((k - z + 0.5) * s).astype(np.float32)
    for t in (ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf))):
        assert set(t.view(np.uint32).tolist()) <= have


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_per_channel_cases_along_any_axis(axis):
    s, z = np.float32([0.1, 0.37]), np.int32([0, 5])
    g = rq.golden.cases(s, z, qmin=0, qmax=15, axis=axis, n_random=20)
    assert g.inputs.shape[axis] == 2 and g.manifest["axis"] == axis
    x = np.moveaxis(g.inputs, axis, 0)
    y = np.moveaxis(g.outputs, axis, 0)
    for c in range(2):
        ref = np.array([exact_fake(float(v), float(s[c]), int(z[c]), 0, 15, "float32") for v in x[c]],
                       np.float32)
        assert_bitwise_equal(y[c], ref, f"channel {c}")


def test_quantize_cases_drop_nan_rows_per_channel():
    g = rq.golden.cases(np.float32([0.1, 0.2]), 0, qmin=-8, qmax=7, axis=0, op="quantize", n_random=5)
    assert not np.isnan(g.inputs).any() and g.inputs.shape[0] == 2
    scales = np.float32([0.1, 0.2])
    ref = [[exact_code(float(v), float(sc), 0, -8, 7) for v in row] for row, sc in zip(g.inputs, scales)]
    assert g.outputs.tolist() == ref


def test_cases_bad_arguments():
    with pytest.raises(ValueError, match="qmin must be <= qmax"):
        rq.golden.cases(0.1, 0, qmin=7, qmax=0)
    with pytest.raises(ValueError, match="n_random"):
        rq.golden.cases(0.1, 0, qmin=0, qmax=7, n_random=-1)
    with pytest.raises(ValueError, match="axis"):
        rq.golden.cases(np.float32([0.1, 0.2]), 0, qmin=0, qmax=7, axis=2)


# --- identify --------------------------------------------------------------------------------

def test_identify_quantize_with_nan_still_tries_conventions_without_a_nan_code():
    s, z = np.float32(0.1), 3
    x = np.float32([np.nan, 0.05, 0.15, 1.0, -2.0])
    # torch.fake_quantize: NaN -> qmin; the rest by its reciprocal formula, emulated in float32
    q = np.clip(np.rint(x * (np.float32(1) / s)) + z, 0, 255)
    q[0] = 0
    r = rq.identify(x, q.astype(np.uint8), s, z, qmin=0, qmax=255, op="quantize")
    assert ("torch.fake_quantize", "half_even") in r.matches
    assert r.mismatches[("exact", "half_even")] >= 1          # tried, and NaN counts as differing
    assert ("aimet", "half_even") in r.mismatches


def test_identify_wrap_around_is_a_saturation_fault():
    s, z, lo, hi = np.float32(0.05), 0, -128, 127
    x = np.linspace(-12, 12, 2001).astype(np.float32)
    q = np.rint(x.astype(np.float64) / np.float64(s)) + z    # exact for float32 x and s
    wrapped = ((q - lo) % 256 + lo).astype(np.int8)          # an int8 cast without a clamp
    r = rq.identify(x, wrapped, s, z, qmin=lo, qmax=hi, op="quantize")
    assert r.matches == []
    n_out = int(((q < lo) | (q > hi)).sum())
    assert n_out > 0 and r.causes == {"clamp/saturation": n_out}


def test_identify_bad_arguments_are_errors_not_silence():
    x = np.float32([1.0])
    with pytest.raises(ValueError, match="qmin must be <= qmax"):
        rq.identify(x, x, 0.1, 0, qmin=5, qmax=0)
    with pytest.raises(ValueError, match="scale"):
        rq.identify(x, x, -0.1, 0, qmin=0, qmax=5)
    with pytest.raises(ValueError, match="convention must be one of"):
        rq.identify(x, x, 0.1, 0, qmin=0, qmax=5, conventions=["nope"])


def test_identify_lists_skipped_conventions():
    x = np.float16([0.125, 0.375])
    y = rq.fake_quantize(x, 0.25, 0, qmin=-8, qmax=7)
    r = rq.identify(x, y, 0.25, 0, qmin=-8, qmax=7)
    assert "tflite" in r.skipped and "float32" in r.skipped["tflite"]
    assert "not run: " in str(r)


# --- sweep -----------------------------------------------------------------------------------

def test_sweep_candidate_that_writes_into_its_input():
    def vandal(x):
        y = rq.fake_quantize(x, 0.1, 3, qmin=0, qmax=255)
        y[::7] = np.float16(1.0)
        x[:] = np.float16(0.0)   # scribbles over its input
        return y

    calls = []
    r = rq.golden.sweep(vandal, 0.1, 3, qmin=0, qmax=255, dtype=np.float16, chunk=4096,
                        progress=lambda done, total, n: calls.append((done, total, n)))
    pattern, xi, expected, actual = r.examples[0]
    assert np.uint16(pattern).view(np.float16).item() == xi     # the input as it was, not 0.0
    assert calls[-1][:2] == (65536, 65536) and len(calls) == 16 and calls[-1][2] == r.mismatches
    x = np.arange(2**16, dtype=np.uint16).view(np.float16)
    ref = rq.fake_quantize(x, 0.1, 3, qmin=0, qmax=255)
    wrong = (np.arange(2**16) % 4096) % 7 == 0
    independent = int((wrong & (bits(ref) != bits(np.full(1, np.float16(1.0))))).sum())
    assert r.mismatches == independent


def test_sweep_quantize_candidate_may_return_float_codes():
    def float_codes(x):
        return rq.quantize(x, 0.25, 0, qmin=-8, qmax=7, convention="onnx").astype(np.float32)

    r = rq.golden.sweep(float_codes, 0.25, 0, qmin=-8, qmax=7, dtype=np.float16, op="quantize",
                        convention="onnx")
    assert r.mismatches == 0


# --- assert_quant_equal ----------------------------------------------------------------------

def test_report_sub_step_and_signed_zero_differences():
    expected = np.float32([0.1, 0.0, 0.3])
    actual = np.float32([np.nextafter(np.float32(0.1), np.float32(1)), -0.0, 0.3])
    with pytest.raises(AssertionError) as info:
        rq.testing.assert_quant_equal(actual, expected, scale=0.1)
    text = str(info.value)
    assert "2 of 3 elements differ" in text
    assert "1 differ by a fraction of a step" in text
    assert "1 differ only in the sign of zero" in text
    assert "+0:" not in text


def test_report_ties_use_the_zero_point():
    x = np.float32([0.125])              # x / 0.25 = 0.5; + z 0.5 -> 1.0, not a tie
    with pytest.raises(AssertionError, match="0 of 1 differing elements sit on a rounding tie"):
        rq.testing.assert_quant_equal(np.float32([1.0]), np.float32([0.75]), x=x, scale=0.25,
                                      zero_point=0.5)


def test_report_x_shape_must_match():
    with pytest.raises(ValueError, match="shape"):
        rq.testing.assert_quant_equal(np.float32([1.0, 2.0]), np.float32([1.0, 3.0]),
                                      x=np.float32([1.0]), scale=1.0)


# --- CLI -------------------------------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "refquant", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_unwritable_output_is_exit_2(tmp_path):
    p = _cli("golden", "--scale", "0.1", "--qmin", "0", "--qmax", "7", "-o",
             str(tmp_path / "no" / "such" / "dir.npz"))
    assert p.returncode == 2 and "error" in p.stderr and "Traceback" not in p.stderr


def test_cli_help_and_identify_without_match(tmp_path):
    assert _cli("--help").returncode == 0
    g = rq.golden.cases(0.1, 0, qmin=-8, qmax=7, n_random=20)
    g.outputs[:] = -g.outputs            # no convention produces this
    p = _cli("identify", str(g.save(tmp_path / "neg.json")))
    assert p.returncode == 1 and "no convention matches" in p.stdout
