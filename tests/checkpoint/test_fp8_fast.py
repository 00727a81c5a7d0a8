"""The fused fp8 code check (one pass over x and the stored codes, the undecided elements through
``rq.quantize``) reports exactly the elements and codes a full ``rq.quantize`` comparison does:
tie-heavy rows (every quotient on or next to a rounding boundary), the double rounding of a
float32 quotient, zeros of both signs, NaN, inf, overflow, subnormal quotients and planted code
flips, for every fp8 format, several conventions, bfloat16, float16 and float32 x."""

import ml_dtypes
import numpy as np
import pytest

import refquant as rq
from refquant.checkpoint import save_file
from refquant.checkpoint._floats import _FastFp8, nan_range

FP8 = ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"]
CONVENTIONS = ["exact", "torch", "onnx", "ml_dtypes", "torchao.float8", "modelopt.float8", "half_away"]


def _convention(name):
    """A named row, or ``exact`` rounding ties away (its exact ties must not be decided by the
    float64 quotient's round-to-nearest-even)."""
    if name == "half_away":
        return rq.float_conventions.get("exact").replace(name="test.half_away", rounding="half_away")
    return name
DTYPES = [np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16), np.dtype(np.float32)]


def _rows(fmt, dtype, seed):
    """x [rows, 64] in ``dtype`` with float32 row scales: random weights with s = amax / max
    (structural ties of a float32 quotient), quotients on the format's midpoints and values and
    one x-ulp either side, specials, overflow and quotients far below the smallest subnormal."""
    rng = np.random.default_rng(seed)
    fmax = float(fmt.max)
    vals = fmt.decode_table()
    vals = np.unique(np.abs(vals[np.isfinite(vals)]))
    mids = (vals[:-1] + vals[1:]) / 2
    rows, scales = [], []
    for _ in range(12):
        w = (rng.standard_normal(64) * 0.02).astype(dtype)
        s = np.float32(np.abs(w.astype(np.float64)).max() / fmax)
        rows.append(w)
        scales.append(s)
    for r in range(12):  # half of them with a power-of-two scale: exact ties
        s = np.float32((1.0 if r % 2 else rng.uniform(0.5, 2.0)) * 2.0 ** rng.integers(-12, 4))
        t = rng.choice(np.concatenate([mids, vals]), 64) * rng.choice([-1.0, 1.0], 64)
        with np.errstate(over="ignore"):  # float16 overflows to inf: one more special
            w = (t * np.float64(s)).astype(dtype)
        nudge = rng.integers(-1, 2, 64)
        w = np.where(nudge == 0, w, np.nextafter(w, np.where(nudge > 0, np.inf, -np.inf).astype(dtype)))
        rows.append(w.astype(dtype))
        scales.append(s)
    special = np.zeros(64, np.float64)
    special[:10] = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e4, -1e4, 1e-30, -1e-30]
    special[10:] = rng.standard_normal(54)
    rows.append(special.astype(dtype))
    scales.append(np.float32(2.0 ** -3))
    return np.stack(rows), np.float32(scales)


def _fused(fast, x, s, codes, fmt, conv, per_tensor):
    """The differing (flat index, expected code) pairs as the checkpoint check finds them."""
    sf = np.float64(s) if per_tensor else np.asarray(s, np.float64)
    cand, amax, nans = fast.candidates(x, sf, codes)
    rr, cc = np.divmod(cand, x.shape[1])
    xs = x[rr, cc]
    if per_tensor:
        exp = rq.quantize(xs, s, fmt=fmt, convention=conv)
    else:
        exp = rq.quantize(xs, np.asarray(s)[rr], fmt=fmt, convention=conv, axis=0)
    differ = exp != codes[rr, cc]
    return cand[differ], exp[differ], amax, nans


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("conv", CONVENTIONS)
@pytest.mark.parametrize("name", FP8)
def test_fused_check_equals_full_quantize(name, conv, dtype):
    seed = FP8.index(name) * 10 + CONVENTIONS.index(conv)
    conv = _convention(conv)
    fmt = getattr(rq, name)
    fast = _FastFp8.plan(fmt, conv)
    try:
        rq.quantize(np.ones(2, np.float32), 1.0, fmt=fmt, convention=conv)
    except ValueError:  # the convention does not implement this format: nothing to check
        assert fast is None
        return
    x, s = _rows(fmt, dtype, seed=seed)
    assert fast is not None  # every pair here takes the fused path
    for per_tensor in (False, True):
        sc = s[7] if per_tensor else s
        kw = {} if per_tensor else {"axis": 0}
        with np.errstate(all="ignore"):
            good = rq.quantize(x, sc, fmt=fmt, convention=conv, **kw)
        codes = good.copy()
        flip = np.random.default_rng(1).choice(codes.size, 40, replace=False)
        codes.reshape(-1)[flip] ^= np.uint8(0x01)
        idx, exp, amax, nans = _fused(fast, x, sc, codes, fmt, conv, per_tensor)
        want = np.flatnonzero(good != codes)
        np.testing.assert_array_equal(idx, want)
        np.testing.assert_array_equal(exp, good.reshape(-1)[want])
        assert nans == int(np.isnan(rq.decode(codes, fmt)).sum())
        wide = np.abs(x.astype(np.float32).astype(np.float64))
        np.testing.assert_array_equal(amax, np.max(wide, axis=1))


def test_nan_range_reproduces_the_decode_table():
    for name in FP8 + ["float8_e8m0fnu"]:
        fmt = getattr(rq, name)
        mask, lo, span = (int(v) for v in nan_range(fmt))
        codes = np.arange(256)
        got = (((codes & mask) - lo) % 2**32) <= span
        np.testing.assert_array_equal(got, np.isnan(fmt.decode_table()))


def _checkpoint(folder, x, s, codes):
    save_file(folder / "model.safetensors", {"l.weight": codes.view(ml_dtypes.float8_e4m3fn),
                                             "l.weight_scale": s.reshape(-1, 1)})
    save_file(folder / "source.safetensors", {"l.weight": x})


def test_modelopt_fp8_per_channel_report_with_and_without_the_fused_check(tmp_path, monkeypatch):
    """ModelOpt/compressed-tensors FP8 per channel, written as ``(w / s).to(float8_e4m3fn)``
    (float32 quotient): clean under the default convention; a flipped code and a scale off by
    one ulp are found; the report is the same with the fused check turned off; the exact
    quotient (``convention="exact"``) differs on the double-rounded elements."""
    x, s = _rows(rq.float8_e4m3fn, np.dtype(ml_dtypes.bfloat16), seed=5)
    x, s = x[:12], s[:12]  # the weight rows: s = fl32(amax / 448)
    t = np.clip(x.astype(np.float32) / s[:, None], -448, 448)  # (w / s) in float32, then the cast
    codes = t.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
    _checkpoint(tmp_path, x, s, codes)
    r = rq.checkpoint.check(tmp_path / "model.safetensors", tmp_path / "source.safetensors")
    (row,) = r.rows
    assert (row.format, row.kind, row.status) == ("modelopt", "fp8", "ok"), str(r)
    assert row.codes_compared == x.size and row.scales_compared == 12
    bad = codes.copy()
    bad[3, 5] ^= 0x08
    s_bad = s.copy()
    s_bad[4] = np.nextafter(s[4], np.float32(1))
    _checkpoint(tmp_path, x, s_bad, bad)
    reports = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(_FastFp8, "plan", classmethod(lambda cls, fmt, conv: None))
        r = rq.checkpoint.check(tmp_path / "model.safetensors", tmp_path / "source.safetensors")
        d = r.to_dict()
        d.pop("seconds")
        reports.append(d)
        (row,) = r.rows
        assert row.status == "mismatch" and row.scale_mismatches == 1
        assert any(e["index"] == 3 * 64 + 5 for e in row.examples)
    assert reports[0] == reports[1]
    monkeypatch.undo()
    _checkpoint(tmp_path, x, s, codes)
    exact = rq.checkpoint.check(tmp_path / "model.safetensors", tmp_path / "source.safetensors",
                                convention="exact")
    assert exact.rows[0].code_mismatches > 0  # a float32 quotient rounds twice


def test_sub_chunks_do_not_change_the_fp8_report(tmp_path, monkeypatch):
    """Per-row scales, NaN-code counts and the sample read in sub-chunks of a few rows give the
    report read in one."""
    from refquant.checkpoint import _checks

    x, s = _rows(rq.float8_e4m3fn, np.dtype(ml_dtypes.bfloat16), seed=7)
    t = np.clip(x.astype(np.float32) / s[:, None], -448, 448)
    codes = t.astype(ml_dtypes.float8_e4m3fn).view(np.uint8).copy()
    codes[2, 7] ^= 0x01
    codes[19, 0] = 0x7F  # a NaN code
    _checkpoint(tmp_path, x, s, codes)
    reports = []
    for sub in (_checks.SUB_CHUNK, 3 * 64):
        monkeypatch.setattr(_checks, "SUB_CHUNK", sub)
        d = rq.checkpoint.check(tmp_path / "model.safetensors", tmp_path / "source.safetensors").to_dict()
        d.pop("seconds")
        reports.append(d)
    assert reports[0] == reports[1]
    (row,) = reports[0]["rows"]
    nans = int(np.isnan(rq.decode(codes, rq.float8_e4m3fn)).sum())  # the planted one and NaN x's
    assert row["code_mismatches"] >= 2 and row["decode"].get("NaN code") == nans >= 1, row
