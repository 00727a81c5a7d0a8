"""Golden tooling for the float formats: planted faults classed by their true cause over whole
float16/bfloat16 sweeps, library casts identified as their rows, golden files, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

import refquant as rq

ml_dtypes = pytest.importorskip("ml_dtypes")
F16 = np.arange(2**16, dtype=np.uint16).view(np.float16)
BF16 = np.arange(2**16, dtype=np.uint16).view(ml_dtypes.bfloat16)
E4M3 = rq.float8_e4m3fn


def table_codes(x, ml_fmt, mode="half_even"):
    """Saturating codes of ``x`` in an 8-bit ml_dtypes format with NaN, from that format's own
    value table (not refquant): nearest value (ties to the even code, or away from zero) or
    truncation, overflow and +-inf to +-max, NaN to the NaN code with x's sign, -0 kept."""
    table = np.arange(128, dtype=np.uint8).view(ml_fmt).astype(np.float64)
    ok = np.flatnonzero(np.isfinite(table))
    mags, codes = table[ok], ok
    order = np.argsort(mags)
    mags, codes = mags[order], codes[order]
    with np.errstate(invalid="ignore"):
        x64 = np.asarray(x).astype(np.float64)
        mag = np.abs(x64)
        j = np.clip(np.searchsorted(mags, mag, side="right") - 1, 0, mags.size - 1)
        k = np.minimum(j + 1, mags.size - 1)
        d_lo, d_hi = mag - mags[j], mags[k] - mag
        if mode == "toward_zero":
            pick = j
        else:
            tie_up = (codes[k] % 2 == 0) if mode == "half_even" else np.ones(mag.shape, bool)
            pick = np.where((d_hi < d_lo) | ((d_hi == d_lo) & tie_up & (d_lo > 0)), k, j)
        pick = np.where(mag >= mags[-1], mags.size - 1, pick)
    out = codes[pick].astype(np.uint8) | np.where(np.signbit(x64), 0x80, 0).astype(np.uint8)
    nan_code = int(np.flatnonzero(np.isnan(table))[0])
    return np.where(np.isnan(x64), nan_code | np.where(np.signbit(x64), 0x80, 0), out).astype(np.uint8)


def test_table_oracle_is_the_exact_cast():
    assert np.array_equal(table_codes(F16, ml_dtypes.float8_e4m3fn), rq.encode(F16, E4M3))


def _ieee(x):
    return np.asarray(x).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)


def _nan_to_max(x):
    y = table_codes(x, ml_dtypes.float8_e4m3fn)
    return np.where(np.isnan(np.asarray(x, np.float32)), np.uint8(0x7E), y)


def _neg_zero_flushed(x):
    y = table_codes(x, ml_dtypes.float8_e4m3fn)
    return np.where(y == 0x80, np.uint8(0), y)


def _half_away(x):
    return table_codes(x, ml_dtypes.float8_e4m3fn, "half_away")


def _truncate(x):
    return table_codes(x, ml_dtypes.float8_e4m3fn, "toward_zero")


def _flush_subnormals(x):
    y = table_codes(x, ml_dtypes.float8_e4m3fn)
    sub = ((y & 0x78) == 0) & ((y & 0x07) != 0)
    return np.where(sub, y & 0x80, y).astype(np.uint8)


FAULTS = [
    (_ieee, "clamp/saturation", "saturate=False"),
    (_flush_subnormals, "subnormals", "subnormal results flushed"),
    (_nan_to_max, "nan/inf handling", "NaN -> max"),
    (_neg_zero_flushed, "signed zero", "signed_zero='drop'"),
    (_half_away, "tie rounding", "rounding='half_away'"),
    (_truncate, "rounding mode", "rounding='toward_zero'"),
]


@pytest.mark.parametrize("kernel, cause, label", FAULTS, ids=[f[0].__name__ for f in FAULTS])
def test_planted_fault_classed_by_true_cause_over_float16_sweep(kernel, cause, label):
    truth = table_codes(F16, ml_dtypes.float8_e4m3fn)
    differ = int((kernel(F16) != truth).sum())
    assert differ > 0
    r = rq.golden.sweep(kernel, fmt=E4M3, dtype="float16", op="quantize")
    assert r.total == 2**16 and r.mismatches == differ
    d = r.diagnosis.diagnosis
    assert d.causes == {cause: differ}
    assert any(lbl.startswith(label) for lbl in d.explained_by), d.explained_by


def test_planted_fault_over_bfloat16_sweep():
    kernel = _half_away
    differ = int((kernel(BF16) != table_codes(BF16, ml_dtypes.float8_e4m3fn)).sum())
    r = rq.golden.sweep(kernel, fmt="float8_e4m3fn", dtype="bfloat16", op="quantize")
    assert r.mismatches == differ > 0
    assert r.diagnosis.causes == {"tie rounding": differ}
    assert ("exact", "half_away") in r.diagnosis.matches


def test_scaled_fake_quantize_fault_over_float16_sweep():
    """fake_quantize at scale 3/8: x * 8 / 3 in float64 lands on a midpoint only when x / s is
    one, and code value * 3/8 is exact in float64, so the kernel rounds once, like the reference."""
    s = 0.375
    table = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float64)

    def kernel(x):
        with np.errstate(over="ignore", invalid="ignore"):
            codes = _half_away(np.asarray(x).astype(np.float64) / s)
        return (table[codes] * s).astype(np.asarray(x).dtype)

    with np.errstate(over="ignore", invalid="ignore"):
        codes = table_codes(F16.astype(np.float64) / s, ml_dtypes.float8_e4m3fn)
    truth = (table[codes] * s).astype(np.float16)
    got = kernel(F16)
    differ = int((got.view(np.uint16) != truth.view(np.uint16)).sum())  # one NaN pattern each
    r = rq.golden.sweep(kernel, s, fmt=E4M3, dtype="float16", op="fake_quantize")
    assert r.mismatches == differ > 0
    assert r.diagnosis.causes == {"tie rounding": differ}


def test_float32_sweep_in_chunks(monkeypatch):
    """The float32 path (chunks, a spread of differing patterns and the edge inputs diagnosed),
    cut to the 2**23 positive subnormal patterns; scale 2**-140 maps them over the whole of
    e4m3fn (x / s exact), so ties, subnormals and overflow are all there."""
    from refquant.golden import _sweep

    monkeypatch.setitem(_sweep._PATTERNS, 4, 2**23)
    s = 2.0**-140

    def kernel(x):
        with np.errstate(over="ignore", invalid="ignore"):
            return _half_away(np.asarray(x).astype(np.float64) / s)

    x = np.arange(2**23, dtype=np.uint32).view(np.float32)
    differ = int((kernel(x) != table_codes(x.astype(np.float64) / s, ml_dtypes.float8_e4m3fn)).sum())
    r = rq.golden.sweep(kernel, s, fmt=E4M3, dtype="float32", op="quantize", chunk=2**21)
    assert r.total == 2**23 and r.mismatches == differ > 0
    assert "edge inputs of float8_e4m3fn" in r.diagnosis_scope
    assert list(r.diagnosis.causes) == ["tie rounding"]


def test_reciprocal_kernel_classed_as_reciprocal():
    s = 0.1
    x = rq.golden.cases(s, fmt=E4M3, dtype="float32", n_random=2000).inputs
    with np.errstate(over="ignore", invalid="ignore"):
        t = (x * (np.float32(1) / np.float32(s))).astype(np.float32)
    y = table_codes(t, ml_dtypes.float8_e4m3fn)
    r = rq.identify(x, y, s, fmt=E4M3, op="quantize", conventions=["exact"])
    assert r.cause == "reciprocal vs division"
    assert r.diagnosis.causes == {"reciprocal vs division": r.diagnosis.differing} and r.diagnosis.differing


def test_ml_dtypes_identified_as_its_row():
    y = F16.astype(ml_dtypes.float4_e2m1fn).view(np.uint8)
    r = rq.identify(F16, y, fmt=rq.float4_e2m1fn, op="quantize")
    # ONNX Cast to float4e2m1 is the same cast (its reference implementation calls ml_dtypes)
    assert r.matches == [("ml_dtypes", "half_even"), ("onnx.cast", "half_even")]
    assert "equivalent here" in str(r)
    y = BF16.astype(ml_dtypes.float8_e5m2).view(np.uint8)
    r = rq.identify(BF16, y, fmt=rq.float8_e5m2, op="quantize")
    assert ("ml_dtypes", "half_even") in r.matches and ("exact", "half_even") not in r.matches
    assert r.cause == "clamp/saturation"


def test_torch_identified_as_its_row():
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(F16.view(np.int16).copy()).view(torch.float16)
    for fmt, tdt in ((rq.float8_e5m2, torch.float8_e5m2), (E4M3, torch.float8_e4m3fn)):
        y = x.to(tdt).view(torch.uint8).numpy()
        r = rq.identify(F16, y, fmt=fmt, op="quantize")
        assert ("torch", "half_even") in r.matches, str(r)
        assert ("ml_dtypes", "half_even") not in r.matches
    # e5m2: overflow to inf and the all-ones NaN payload, each named
    assert r.causes == {} and rq.identify(F16, x.to(torch.float8_e5m2).view(torch.uint8).numpy(),
                                          fmt=rq.float8_e5m2, op="quantize").causes.keys() == {
        "clamp/saturation", "nan/inf handling"}


def test_cases_cover_every_value_midpoint_and_special():
    g = rq.golden.cases(fmt=rq.float6_e3m2fn, dtype="float32", op="fake_quantize", n_random=0,
                        convention="ml_dtypes")
    x = g.inputs.astype(np.float64)
    v = rq.float6_e3m2fn.values()
    assert np.isin(v, x).all() and np.isin((v[:-1] + v[1:]) / 2, x).all()
    assert np.isnan(x).any() and np.isinf(x).any() and (np.signbit(x) & (x == 0)).any()
    probe = np.float32(v[-1] + (v[-1] - v[-2]) / 2)  # the overflow threshold and its neighbours
    assert np.isin([np.nextafter(probe, np.float32(0)), probe, np.nextafter(probe, np.float32(99))],
                   g.inputs).all()


@pytest.mark.parametrize("fmt", ["npz", "json", "hex"])
def test_golden_file_round_trip_and_check(tmp_path, fmt):
    conv = rq.float_conventions.get("exact").replace(nan_payload="all_ones")
    g = rq.golden.cases(0.375, fmt=rq.float8_e5m2, dtype="bfloat16", op="quantize", convention=conv,
                        saturate=False, n_random=50)
    p = g.save(tmp_path / f"g.{fmt}")
    h = rq.golden.load(p)
    assert h.manifest == json.loads(json.dumps(g.manifest))
    assert np.array_equal(h.inputs.view(np.uint16), g.inputs.view(np.uint16))
    assert np.array_equal(h.outputs, g.outputs) and h.outputs.dtype == np.uint8
    assert h.manifest["fmt"]["name"] == "float8_e5m2" and h.manifest["saturate"] is False
    assert _cli("check", str(p)).returncode == 0


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "refquant.cli", *args], capture_output=True, text=True)


def test_cli_candidate_file_check_and_identify(tmp_path):
    out = tmp_path / "cand.json"
    p = _cli("golden", "--fmt", "float8_e4m3fn", "--dtype", "float16", "--op", "quantize",
             "--candidate", "ml_dtypes", "--n-random", "0", "-o", str(out))
    assert p.returncode == 0, p.stderr
    x = rq.golden.load(out).inputs
    overflow = int((_ieee(x) != table_codes(x, ml_dtypes.float8_e4m3fn)).sum())
    c = _cli("check", str(out), "--json")
    assert c.returncode == 1 and json.loads(c.stdout)["causes"] == {"clamp/saturation": overflow}
    i = _cli("identify", str(out), "--json")
    assert i.returncode == 0 and ["ml_dtypes", "half_even"] in json.loads(i.stdout)["matches"]
    s = _cli("sweep", "--fmt", "float4_e2m1fn", "--dtype", "float16", "--op", "quantize",
             "--candidate", "ml_dtypes", "--convention", "ml_dtypes")
    assert s.returncode == 0, s.stdout + s.stderr


def test_edited_knob_fails_check(tmp_path):
    g = rq.golden.cases(fmt=E4M3, dtype="float16", op="quantize", n_random=0)
    p = g.save(tmp_path / "g.json")
    doc = json.loads(p.read_text())
    doc["manifest"]["convention_knobs"]["saturate"] = False
    p.write_text(json.dumps(doc))
    c = _cli("check", str(p), "--json")
    assert c.returncode == 1 and list(json.loads(c.stdout)["causes"]) == ["clamp/saturation"]


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        rq.golden.cases(fmt="float9_e9m9")
    with pytest.raises(ValueError, match="qmin"):
        rq.golden.cases(fmt=E4M3, qmin=0, qmax=7)
    with pytest.raises(ValueError, match="scalar"):
        rq.golden.cases([0.1, 0.2], fmt=E4M3)
    with pytest.raises(ValueError, match="scale must be finite and > 0; got 0.0"):
        rq.golden.sweep("exact", 0.0, fmt=E4M3, dtype="float16")
    with pytest.raises(ValueError, match="no saturate switch"):
        rq.golden.cases(fmt=E4M3, convention="torch", saturate=False)
    with pytest.raises(TypeError, match="x's dtype"):
        rq.identify(F16, F16.astype(np.float32), fmt=E4M3)
    with pytest.raises(ValueError, match="saturate applies"):
        rq.golden.cases(0.1, 0, qmin=-8, qmax=7, saturate=True)
    with pytest.raises(rq.golden.CandidateError):
        rq.golden.sweep(lambda x: x[:3].view(np.uint8), fmt=E4M3, dtype="float16", op="quantize")
    g = rq.golden.cases(fmt=E4M3, dtype="float16", op="quantize", n_random=0)
    p = g.save(tmp_path / "g.json")
    doc = json.loads(p.read_text())
    doc["manifest"]["fmt"]["mantissa_bits"] = 9
    p.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="manifest fmt is invalid"):
        rq.golden.load(p)
    assert _cli("check", str(p)).returncode == 2
    out = str(tmp_path / "x.npz")
    assert _cli("golden", "--fmt", "float8_e4m3fn", "--qmin", "0", "-o", out).returncode == 2
    bad = _cli("golden", "--fmt", "nope", "-o", str(tmp_path / "x.npz"))
    assert bad.returncode == 2 and "float4_e2m1fn" in bad.stderr and "Traceback" not in bad.stderr
    assert _cli("golden", "--scale", "0.1", "--qmin", "0", "--qmax", "7", "--convention", "ml_dtypes",
                "-o", str(tmp_path / "x.npz")).returncode == 2


def test_e8m0_exponent_field_is_named():
    """torch's e8m0 cast (the float32 exponent field, sign ignored, zero to code 0) against the
    exact value rounding: identify names the row and the cause."""
    x = np.float32([1.0, 3.0, -4.0, 0.0, 1e-39, 5.0, 0.75])
    y = rq.encode(x, "float8_e8m0fnu", convention="torch")
    r = rq.identify(x, y, fmt="float8_e8m0fnu", op="quantize")
    assert ("torch", "half_even") in r.matches
    assert r.causes == {"e8m0 exponent field": int((y != rq.encode(x, "float8_e8m0fnu")).sum())}
