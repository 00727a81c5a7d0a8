"""The diagnosis engine: right causes for planted faults over whole float16/bfloat16 sweeps, one
answer for identify / sweep / check / assert_quant_equal, and ambiguity said out loud."""

import math
from fractions import Fraction

import numpy as np
import pytest

import refquant as rq

ml_dtypes = pytest.importorskip("ml_dtypes")
DTYPES = [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]
S, Z, LO, HI = 0.09375, 3, -128, 127   # 3/32: exact in both formats, so exact ties exist


def quotient(x, s):
    """x / s as float64, with every quotient within 1e-9 of a half-integer decided by Fraction
    (moved 2**-40 off the tie when it is not one), so that rint of it is the exact rounding."""
    t = x.astype(np.float64) / s
    with np.errstate(invalid="ignore"):
        near = np.flatnonzero(np.abs(t - np.floor(t) - 0.5) < 1e-9)
    for i in near:
        r = Fraction(float(x[i])) / Fraction(s)
        half = Fraction(math.floor(r)) + Fraction(1, 2)
        t[i] = float(half) + (0.0 if r == half else math.copysign(2.0**-40, float(r - half)))
    return t


def codes(x, s, z, lo, hi, *, away=False, z_before=False, nan_code=None):
    """Independent reference codes: an exactly rounded quotient and plain NumPy."""
    t = quotient(x, s)
    with np.errstate(invalid="ignore"):
        if z_before:
            q = np.rint(t + z)
        elif away:
            q = np.sign(t) * np.floor(np.abs(t) + 0.5) + z
        else:
            q = np.rint(t) + z
        q = np.clip(q, lo, hi)
    if nan_code is not None:
        q = np.where(np.isnan(t), nan_code, q)
    return q


def exact_kernel(x, s=S, z=Z, lo=LO, hi=HI, **kw):
    return ((codes(x, s, z, lo, hi, **kw) - z) * s).astype(x.dtype)


FAULTS = {
    # name: (kernel, scale, zero point, the true cause)
    "float16 product": (lambda x: ((codes(x, 0.1, 0, LO, HI)).astype(x.dtype) * x.dtype.type(0.1)),
                        0.1, 0, "dequantization arithmetic"),
    "zero point before rounding": (lambda x: exact_kernel(x, z_before=True), S, Z,
                                   "zero point before/after rounding"),
    "half away": (lambda x: exact_kernel(x, away=True), S, Z, "tie rounding"),
    "clamp off by one": (lambda x: exact_kernel(x, hi=HI - 1), S, Z, "clamp/saturation"),
    "NaN to 0": (lambda x: exact_kernel(x, nan_code=0), S, Z, "nan/inf handling"),
    "-0.0 kept": (lambda x: (np.clip(np.rint(quotient(x, S)), LO, HI) * S).astype(x.dtype),
                  S, 0, "signed zero"),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_fault_free_kernel_matches_exact(dtype):
    for s, z in ((S, Z), (S, 0), (0.1, 0)):
        r = rq.golden.sweep(lambda x, s=s, z=z: exact_kernel(x, s, z), s, z, qmin=LO, qmax=HI, dtype=dtype)
        assert r.mismatches == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fault", list(FAULTS))
def test_planted_fault_is_classed_by_its_true_cause(fault, dtype):
    kernel, s, z, cause = FAULTS[fault]
    r = rq.golden.sweep(kernel, s, z, qmin=LO, qmax=HI, dtype=dtype)
    assert r.mismatches > 0
    d = r.diagnosis.diagnosis
    assert d.causes == {cause: r.mismatches}, (fault, d.causes)
    assert r.diagnosis.size == 65536  # over every pattern, not the differing ones


def test_sweep_summary_of_a_torch_formula_kernel_names_only_matching_rows():
    def torch_formula(x):  # torch.fake_quantize_per_tensor_affine, written out in NumPy
        inv = np.float32(1) / np.float32(0.1)
        z = np.float32(0)
        t = z + np.rint(x.astype(np.float32) * inv)       # the float add makes -0.0 into +0.0
        q = np.where(np.isnan(t), np.float32(LO), np.clip(t, LO, HI))
        return ((q - z) * np.float32(0.1)).astype(x.dtype)

    r = rq.golden.sweep(torch_formula, 0.1, 0, qmin=LO, qmax=HI, dtype=np.float16)
    assert r.diagnosis.matches == [("torch.fake_quantize", "half_even")]
    # on the differing inputs alone onnx would "match" too: the summary must not say so
    text = str(r)
    assert "onnx (half_even)" not in text.split("matches exactly:")[1].splitlines()[0]
    assert r.diagnosis.causes == {"nan/inf handling": 2046, "reciprocal vs division": 25}


def test_ambiguity_reported_for_a_tie_free_set_and_gone_with_ties():
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 3, 400).astype(np.float32)
    x = x[(x / np.float32(0.25)) % 1 != 0.5]       # no ties
    y = rq.fake_quantize(x, 0.25, 0, qmin=-16, qmax=15)
    r = rq.identify(x, y, 0.25, 0, qmin=-16, qmax=15, conventions=["exact"])
    assert ("exact", "half_away") in r.matches
    text = str(r)
    assert "ambiguous: these inputs do not separate half_even from half_away" in text
    (a, b, inputs), = [t for t in r.ambiguous if t[1] == ("exact", "half_away")]
    assert inputs and all(tie for _, tie in inputs)
    assert all((v / 0.25) % 1 == 0.5 for v, _ in inputs)      # the suggestions are ties
    x2 = np.concatenate([x, np.float32([v for v, _ in inputs])])
    r2 = rq.identify(x2, rq.fake_quantize(x2, 0.25, 0, qmin=-16, qmax=15), 0.25, 0, qmin=-16,
                     qmax=15, conventions=["exact"])
    assert r2.matches == [("exact", "half_even")] and "ambiguous" not in str(r2)


def test_bfloat16_scale_without_ties_says_no_input_separates():
    x = np.float32(np.random.default_rng(0).uniform(-10, 10, 300)).astype(ml_dtypes.bfloat16)
    y = rq.fake_quantize(x, 0.1, 0, qmin=LO, qmax=HI)
    r = rq.identify(x, y, 0.1, 0, qmin=LO, qmax=HI, conventions=["exact"])
    assert len(r.matches) == 4 and "no input can separate them" in str(r)


def test_one_answer_for_identify_check_and_assert_quant_equal(tmp_path):
    from refquant.cli import main

    g = rq.golden.cases(0.0123, 3, qmin=0, qmax=255, n_random=500)
    y = rq.fake_quantize(g.inputs, 0.0123, 3, qmin=0, qmax=255, convention="torch.fake_quantize")
    mine = g.with_outputs(y)
    r = rq.identify(mine.inputs, mine.outputs, 0.0123, 3, qmin=0, qmax=255)
    assert ("torch.fake_quantize", "half_even") in r.matches
    causes = r.causes
    assert "other" not in causes and "dequantization arithmetic" in causes
    with pytest.raises(AssertionError) as err:
        rq.testing.assert_quant_equal(y, g.outputs, x=g.inputs, scale=0.0123, zero_point=3, qmin=0,
                                      qmax=255)
    for cause, n in causes.items():
        assert f"diagnosis:   {cause}: {n} " in str(err.value)
    f = mine.save(tmp_path / "mine.json")
    import contextlib
    import io
    import json
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["check", str(f), "--json"]) == 1
    assert json.loads(out.getvalue())["causes"] == causes


def test_api_takes_convention_names_and_reports_a_failing_candidate():
    r = rq.golden.sweep("torch.fake_quantize", 0.1, 0, qmin=LO, qmax=HI, dtype="float16")
    assert r.mismatches == 2071 and r.diagnosis.matches == [("torch.fake_quantize", "half_even")]

    def broken(x):
        raise ZeroDivisionError("boom")

    with pytest.raises(rq.golden.CandidateError, match="ZeroDivisionError: boom"):
        rq.golden.sweep(broken, 0.1, 0, qmin=LO, qmax=HI, dtype="float16")
    with pytest.raises(rq.golden.CandidateError, match="shape"):
        rq.golden.sweep(lambda x: x[:3], 0.1, 0, qmin=LO, qmax=HI, dtype="float16")


def test_with_outputs_checks_its_argument():
    g = rq.golden.cases(0.25, 0, qmin=-8, qmax=7, n_random=0)
    with pytest.raises(ValueError, match="shape"):
        g.with_outputs(g.outputs[:3])
    with pytest.raises(TypeError, match="dtype"):
        g.with_outputs(g.outputs.astype(np.float64))
    q = rq.golden.cases(0.25, 0, qmin=-8, qmax=7, n_random=0, op="quantize")
    with pytest.raises(TypeError, match="integer codes"):
        q.with_outputs(q.outputs.astype(np.float32))


def test_float16_kernel_with_float16_scale_is_not_called_clamp_or_zero_point():
    f16 = np.float16

    def kernel(x):  # every op in float16; the zero point is 0
        return (np.clip(np.round(x / f16(0.1)), LO, HI) * f16(0.1)).astype(f16)

    r = rq.golden.sweep(kernel, 0.1, 0, qmin=LO, qmax=HI, dtype=np.float16)
    causes = r.diagnosis.causes
    assert sum(causes.values()) == r.mismatches
    assert not {"clamp/saturation", "zero point before/after rounding", "other"} & set(causes)
    assert {"dequantization arithmetic", "signed zero"} <= set(causes)
    # 12.7 / 0.1 rounds to 127 on both sides (then clamps to 127): only the product differs
    x = np.float16([12.7])
    assert np.round(x / f16(0.1))[0] == 127 and rq.quantize(x, 0.1, 0, qmin=LO, qmax=HI)[0] == 127
    one = rq.identify(x, kernel(x), 0.1, 0, qmin=LO, qmax=HI)
    assert one.causes == {"dequantization arithmetic": 1}


def test_exact_candidate_against_torchao_in_bfloat16_is_not_a_clamp():
    r = rq.golden.sweep("exact", 0.1, 0, qmin=LO, qmax=HI, dtype=ml_dtypes.bfloat16, convention="torchao")
    assert r.mismatches > 0
    assert "clamp/saturation" not in r.diagnosis.causes and "other" not in r.diagnosis.causes


def test_float32_dequantization_is_named_not_other():
    x = rq.golden.cases(0.0123, 3, qmin=0, qmax=255, n_random=2000).inputs
    x = x[~np.isnan(x)]
    q = rq.quantize(x, 0.0123, 3, qmin=0, qmax=255)                # exact codes
    y = (q.astype(np.float32) - np.float32(3)) * np.float32(0.0123)  # torch's float32 product
    n = int((y.view(np.uint32) != rq.fake_quantize(x, 0.0123, 3, qmin=0, qmax=255).view(np.uint32)).sum())
    assert n > 0
    r = rq.identify(x, y, 0.0123, 3, qmin=0, qmax=255)
    assert r.causes == {"dequantization arithmetic": n}


def test_sweep_progress_has_time_left(capsys):
    rq.golden.sweep("exact", 0.1, 0, qmin=LO, qmax=HI, dtype="float16", chunk=8192, progress=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "100.0%" in err[-1] and "s left" in err[-1] and "\r" not in err[-1]


def test_float32_diagnosis_keeps_a_spread_of_the_differing_patterns(monkeypatch):
    from refquant.golden import _sweep

    monkeypatch.setitem(_sweep._PATTERNS, 4, 2**20)   # the first 2**20 float32 patterns only
    monkeypatch.setattr(_sweep, "_KEEP", 1000)

    def negated(x):  # every output of these tiny inputs is 0.0: negated, every pattern differs
        return -rq.fake_quantize(x, 0.1, 0, qmin=LO, qmax=HI)

    r = rq.golden.sweep(negated, 0.1, 0, qmin=LO, qmax=HI, dtype="float32", chunk=2**16)
    assert r.mismatches == 2**20
    edge = rq.golden._cases.edge_inputs(0.1, 0, qmin=LO, qmax=HI, dtype=np.float32, n_random=0)
    kept = int(r.diagnosis_scope.split()[0])
    assert 900 <= kept <= 1000 and r.diagnosis.size == kept + edge.size   # each chunk its share
    assert sum(r.diagnosis.causes.values()) == r.diagnosis.diagnosis.differing


def test_a_new_family_plugs_in_its_own_changes_and_runner():
    from refquant.golden import _diagnose as dg

    def run_pow2(setting, x):   # a toy operation: round x to a multiple of 2**-k, k = qmax
        return (np.round(x.astype(np.float64) * 2.0**setting.qmax) / 2.0**setting.qmax).astype(x.dtype)

    def changes(setting):
        return [dg.Change("step size", f"k={k}", qrange=(setting.qmin, k)) for k in (1, 2, 3)]

    dg.register_changes("toy", changes)
    try:
        x = np.float32([0.1, 0.3, 0.6, 0.9])
        s = dg.Setting("fake_quantize", 1.0, 0, 0, 2, "exact", runner=run_pow2)
        y = run_pow2(dg.Setting("fake_quantize", 1.0, 0, 0, 3, "exact"), x)
        d = dg.diagnose(x, y, s, family="toy")
        assert d.causes == {"step size": d.differing} and d.explained_by == ["k=3"]
    finally:
        dg._FAMILIES.pop("toy")


def test_a_convention_that_cannot_take_the_scale_is_skipped_not_a_crash():
    x = np.float16([0.0, 1.0, -1.0, 65504.0])
    y = rq.fake_quantize(x, 1e-300, 0, qmin=LO, qmax=HI)
    r = rq.identify(x, y, 1e-300, 0, qmin=LO, qmax=HI)   # some rows divide by a float32 zero
    assert ("exact", "half_even") in r.matches and r.causes == {}
