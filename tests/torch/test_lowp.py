"""rqt.float_fake_quantize / mx / nvfp4 / nf4 fake quantize and their modules: forward bitwise equal
to the core, straight-through gradients (against torchao where it has the op, else the Fraction
rule), torch.compile(fullgraph=True) and torch.export (with save/load) bitwise equal to eager,
bad input."""

import io
import re
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import refquant as rq  # noqa: E402
import refquant_torch as rqt  # noqa: E402
from refquant_torch._bridge import from_numpy, to_numpy  # noqa: E402
from tests.references import clip_mask  # noqa: E402

from .test_functional import assert_same_bits  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
FORMATS = [rq.float8_e4m3fn, rq.float8_e4m3fnuz, rq.float8_e5m2, rq.float8_e5m2fnuz, rq.float8_e8m0fnu,
           rq.float6_e2m3fn, rq.float6_e3m2fn, rq.float4_e2m1fn]


def adversarial(fmt, scale, dtype, rng, n_random=64):
    """Format values and midpoints times ``scale`` with their neighbours in ``dtype``, overflow
    probes, +-0, +-inf, NaN, subnormals and random values, as a tensor of ``dtype``."""
    v = fmt.values()
    v = v[np.isfinite(v)]
    mids = (v[:-1] + v[1:]) / 2
    with np.errstate(over="ignore"):
        base = np.concatenate([v, mids, [fmt.max * 1.5, fmt.max * 2, 1e30, -1e30]]) * scale
        rand = rng.standard_normal(n_random) * fmt.max * scale / 3
    t = torch.tensor(base, dtype=torch.float64).to(dtype)
    inf = torch.tensor(float("inf"), dtype=dtype)
    specials = torch.tensor([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-45], dtype=torch.float64)
    return torch.cat([t, torch.nextafter(t, inf), torch.nextafter(t, -inf),
                      torch.tensor(rand, dtype=torch.float64).to(dtype), specials.to(dtype)])


def _core_or_error(fn):
    try:
        return fn(), None
    except (ValueError, TypeError, NotImplementedError) as e:
        return None, e


# ----------------------------------------------------------------------------- forward == core
@settings(deadline=None, max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(DTYPES), fmt=st.sampled_from(FORMATS),
       convention=st.sampled_from(["exact", "torch", "ml_dtypes", "onnx", "torchao", "gfloat"]),
       scale=st.sampled_from([1.0, 0.1, 2.0**-10, 3.0, 1e-30]),
       saturate=st.sampled_from([None, True, False]))
def test_float_fake_quantize_equals_core(seed, dtype, fmt, convention, scale, saturate):
    x = adversarial(fmt, scale, dtype, np.random.default_rng(seed))
    before = x.clone()
    core, err = _core_or_error(lambda: rq.fake_quantize(to_numpy(x), scale, fmt=fmt, saturate=saturate,
                                                        convention=convention))
    if err is not None:  # the same error, with the same message, from the adapter
        with pytest.raises(type(err), match=re.escape(str(err))):
            rqt.float_fake_quantize(x, scale, fmt=fmt, saturate=saturate, convention=convention)
        return
    y = rqt.float_fake_quantize(x, scale, fmt=fmt, saturate=saturate, convention=convention)
    assert_same_bits(y, from_numpy(core))
    assert_same_bits(x, before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_float_per_channel_block_rounding_modes_equal_core(dtype):
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.standard_normal((4, 8)) * 20, dtype=torch.float64).to(dtype)
    s = rng.uniform(0.01, 0.5, 4).astype(np.float32)
    for kwargs in ({"axis": 0}, {"axis": -2}):
        y = rqt.float_fake_quantize(x, torch.from_numpy(s), fmt=rq.float8_e4m3fn, **kwargs)
        core = rq.fake_quantize(to_numpy(x), s, fmt=rq.float8_e4m3fn, axis=0)
        assert_same_bits(y, from_numpy(core))
    sb = rng.uniform(0.01, 0.5, (2, 2))
    y = rqt.float_fake_quantize(x, sb, fmt=rq.float6_e3m2fn, block_size=(2, 4))
    assert_same_bits(y, from_numpy(rq.fake_quantize(to_numpy(x), sb, fmt=rq.float6_e3m2fn,
                                                    block_size=(2, 4))))
    for rounding in rq.ROUNDING_MODES:
        y = rqt.float_fake_quantize(x, 0.3, fmt=rq.float4_e2m1fn, rounding=rounding, rng=11)
        core = rq.fake_quantize(to_numpy(x), 0.3, fmt=rq.float4_e2m1fn, rounding=rounding, rng=11)
        assert_same_bits(y, from_numpy(core))


def test_custom_format_and_convention():
    mine = rq.FloatFormat(3, 4, 3, name="e3m4")
    conv = rq.float_conventions.get("exact").replace(name="mine", signed_zero="drop")
    x = torch.tensor([0.1, -0.0, 29.0, 31.0, -1e-6, 1e9])
    y = rqt.float_fake_quantize(x, 1.0, fmt=mine, convention=conv)
    assert_same_bits(y, from_numpy(rq.fake_quantize(to_numpy(x), 1.0, fmt=mine, convention=conv)))
    assert y[1].item() == 0 and not torch.signbit(y[1])


MX_CASES = [(rq.float8_e4m3fn, "ocp"), (rq.float8_e5m2, "torchao.rceil"), (rq.float6_e2m3fn, "ocp"),
            (rq.float6_e3m2fn, "torchao.even"), (rq.float4_e2m1fn, "torchao.floor"),
            (rq.int8, "ocp"), (rq.float4_e2m1fn, "microxcaling")]


def _mx_input(nonfinite=True):
    """Blocks of random magnitudes, an all-zero block, amax just below a power of two, NaN and
    -inf blocks (axis -1, block 32)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 64)) * np.exp2(rng.integers(-20, 20, (3, 1)))
    x[0, :32] = 0.0
    x[2, :8] = np.exp2(7) * (1 - 2.0**-24)
    if nonfinite:
        x[1, 5] = np.nan
        x[2, 40] = -np.inf
        return x
    return np.clip(x, -60000.0, 60000.0)  # finite in float16 too


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt,convention", MX_CASES)
def test_mx_equals_core(dtype, fmt, convention):
    x = _mx_input(nonfinite=True)
    xt = torch.tensor(x, dtype=torch.float64).to(dtype)
    for axis, block in ((-1, 32), (1, 16), (0, 3)):
        kw = {"axis": axis, "block": block, "convention": convention}
        core, err = _core_or_error(lambda kw=kw: rq.mx.fake_quantize(to_numpy(xt), fmt, **kw))
        if err is not None:
            with pytest.raises(type(err)):
                rqt.mx_fake_quantize(xt, fmt, axis=axis, block=block, convention=convention)
            continue
        y = rqt.mx_fake_quantize(xt, fmt, axis=axis, block=block, convention=convention)
        assert_same_bits(y, from_numpy(core))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("convention", rq.nvfp4.conventions.names())
def test_nvfp4_equals_core(dtype, convention):
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.standard_normal((2, 32)) * 3, dtype=torch.float64).to(dtype)
    x[0, 3] = float("nan")
    x[1, :16] = 0.0
    for g in (None, 0.01):
        core, err = _core_or_error(lambda g=g: rq.nvfp4.fake_quantize(to_numpy(x), global_scale=g,
                                                                      convention=convention))
        if err is not None:
            with pytest.raises(type(err)):
                rqt.nvfp4_fake_quantize(x, global_scale=g, convention=convention)
            continue
        assert_same_bits(rqt.nvfp4_fake_quantize(x, global_scale=g, convention=convention), from_numpy(core))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("convention", ["bitsandbytes", "torchao", "exact"])
@pytest.mark.parametrize("double_quant,codebook", [(False, "nf4"), (True, "nf4"), (False, "fp4")])
def test_nf4_equals_core(dtype, convention, double_quant, codebook):
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.standard_normal(512), dtype=torch.float64).to(dtype)
    kw = dict(block=64, double_quant=double_quant, convention=convention, codebook=codebook,
              nested_block=4)
    core, err = _core_or_error(lambda: rq.nf4.fake_quantize(to_numpy(x), **kw))
    if err is not None:
        with pytest.raises(type(err)):
            rqt.nf4_fake_quantize(x, **kw)
        return
    assert_same_bits(rqt.nf4_fake_quantize(x, **kw), from_numpy(np.asarray(core)))


# ----------------------------------------------------------------------------- gradients
@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(DTYPES + [torch.float64]),
       fmt=st.sampled_from(FORMATS),
       scale=st.sampled_from([1.0, 0.1, 1 / 3, 2.0**-20, 7.123456789e-5, 1e-300, 1e300, 5e-324]))
def test_clipped_gradient_is_the_fraction_mask(seed, dtype, fmt, scale):
    x = adversarial(fmt, scale, dtype, np.random.default_rng(seed)).requires_grad_()
    conv = "exact" if fmt.has_nan else "gfloat"  # a convention that takes NaN into fp4/fp6
    g = torch.linspace(-3, 3, x.numel(), dtype=torch.float64).to(dtype)
    y = rqt.float_fake_quantize(x, scale, fmt=fmt, convention=conv)
    y.backward(g)
    want = torch.tensor([clip_mask(v, scale, fmt.max, fmt.signed) for v in x.detach().double().tolist()])
    assert_same_bits(x.grad, torch.where(want, g, torch.zeros_like(g)))


def test_clipped_gradient_per_channel_and_float32_quotient():
    x = torch.tensor([[447.9, 448.0, 448.1, -449.0, 0.0], [44.8, 44.80001, -44.8, 1e9, float("nan")]],
                     requires_grad=True)
    s = torch.tensor([1.0, 0.1])
    rqt.float_fake_quantize(x, s, fmt=rq.float8_e4m3fn, axis=0).sum().backward()
    want = [[clip_mask(v, float(si), 448.0) for v in row] for row, si in zip(x.tolist(), s.tolist())]
    assert x.grad.bool().tolist() == want
    x.grad = None
    # onnx divides in float32: fl32(44.8f / 0.1f) = 448 exactly, inside
    rqt.float_fake_quantize(x, s, fmt=rq.float8_e4m3fn, axis=0, convention="onnx").sum().backward()
    t = (x.detach() / s[:, None]).float()
    assert_same_bits(x.grad, ((t >= -448) & (t <= 448)).float())


def test_identity_gradient_and_block_formats_pass_grad_everywhere():
    x = torch.tensor([1e9, -1e9, float("nan"), float("inf"), 0.3] + [0.0] * 27, requires_grad=True)
    g = torch.arange(32, dtype=torch.float32)
    rqt.float_fake_quantize(x, 0.5, fmt=rq.float8_e5m2, ste="identity").backward(g)
    assert_same_bits(x.grad, g)
    for f in (lambda t: rqt.mx_fake_quantize(t, rq.float4_e2m1fn),
              lambda t: rqt.nvfp4_fake_quantize(t, convention="torchao"),
              lambda t: rqt.nf4_fake_quantize(t, block=32)):
        x.grad = None
        f(x).backward(g)
        assert_same_bits(x.grad, g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("granularity", ["tensor", "row"])
def test_clipped_gradient_equals_torchao_float8(dtype, granularity):
    """torchao's float8 fake quant (``clamp(x / s, -448, 448)``, STE cast, ``* s``): the same mask.
    With a power-of-two scale and gradients whose ``g * s`` is an e4m3 value, its gradient values
    are exact too, so the two agree bit for bit."""
    qp = pytest.importorskip("torchao.quantization.quant_primitives")
    rng = np.random.default_rng(4)
    v = rq.float8_e4m3fn.values()
    s = torch.tensor([[2.0**-3], [2.0**5]]) if granularity == "row" else torch.tensor(2.0**-3)
    base = np.concatenate([v[np.isfinite(v)], [1e9, -1e9, np.inf, -np.inf, np.nan]])
    rows = [base * float(si) for si in (s.reshape(-1).tolist() * 2)[:2]]
    x32 = torch.tensor(np.stack(rows), dtype=torch.float32)
    x32 = torch.cat([x32, torch.nextafter(x32, torch.full_like(x32, np.inf)),
                     torch.nextafter(x32, torch.full_like(x32, -np.inf))], dim=1)
    x = x32.to(dtype).requires_grad_()
    gv = rng.choice(v[np.isfinite(v) & (np.abs(v) < 8)], x.shape)
    s_rows = s.reshape(-1, 1) if granularity == "row" else s
    g = (torch.tensor(gv, dtype=torch.float32) / s_rows).to(dtype)  # g * s is an e4m3 value
    ta = x.detach().clone().requires_grad_()
    y_ao = qp._dequantize_affine_float8(qp._quantize_affine_float8(ta, s, torch.float8_e4m3fn), s, dtype)
    y_ao.backward(g)
    kw = {"axis": 0} if granularity == "row" else {}
    y = rqt.float_fake_quantize(x, s.reshape(-1) if granularity == "row" else s, fmt=rq.float8_e4m3fn,
                                **kw)
    y.backward(g)
    assert_same_bits(x.grad, ta.grad)


def test_torchao_float8_rounds_its_gradient_refquant_does_not():
    """The documented difference: torchao's float8 backward casts ``grad * s`` to float8_e4m3fn."""
    qp = pytest.importorskip("torchao.quantization.quant_primitives")
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    g = torch.tensor([0.3, 1e-9])
    s = torch.tensor(1.0)
    qp._dequantize_affine_float8(qp._quantize_affine_float8(x, s, torch.float8_e4m3fn), s).backward(g)
    assert x.grad.tolist() == [0.3125, 0.0]
    x2 = x.detach().clone().requires_grad_()
    rqt.float_fake_quantize(x2, 1.0, fmt=rq.float8_e4m3fn).backward(g)
    assert_same_bits(x2.grad, g)


@pytest.mark.parametrize("elem,fmt", [("float8_e4m3fn", rq.float8_e4m3fn),
                                      ("float4_e2m1fn_x2", rq.float4_e2m1fn)])
@pytest.mark.parametrize("mode,convention", [("RCEIL", "torchao.rceil"), ("FLOOR", "torchao.floor")])
def test_mx_linear_forward_and_gradients_equal_torchao_qat(elem, fmt, mode, convention):
    """torchao's MXFakeQuantizedLinear: forward on MX operands, backward ``grad @ dequant``. A
    Linear on rqt.mx_fake_quantize'd operands gives the same output and gradients bit for bit."""
    mxqat = pytest.importorskip("torchao.prototype.qat.mx")
    from torchao.prototype.mx_formats.config import ScaleCalculationMode

    cfg = mxqat.MXFakeQuantizeConfig(dtype=getattr(torch, elem), block_size=32,
                                     scaling_mode=getattr(ScaleCalculationMode, mode))
    torch.manual_seed(0)
    lin = mxqat.MXFakeQuantizedLinear(64, 8, bias=False, activation_config=cfg, weight_config=cfg)
    x = (torch.randn(4, 64) * torch.exp2(torch.randint(-8, 8, (4, 1)).float())).requires_grad_()
    y = lin(x)
    g = torch.randn_like(y)
    y.backward(g)
    x2, w2 = x.detach().clone().requires_grad_(), lin.weight.detach().clone().requires_grad_()
    y2 = torch.nn.functional.linear(rqt.mx_fake_quantize(x2, fmt, convention=convention),
                                    rqt.mx_fake_quantize(w2, fmt, convention=convention))
    y2.backward(g)
    assert_same_bits(y2, y.detach())
    assert_same_bits(x2.grad, x.grad)
    assert_same_bits(w2.grad, lin.weight.grad)


@pytest.mark.parametrize("per_tensor_scale", [True, False])
def test_nvfp4_gradients_equal_torchao_qat_backward(per_tensor_scale):
    """torchao's NVFP4 QAT backward (its forward needs a GPU matmul, so the backward is called on
    the NVFP4 tensors its forward saves) against a Linear on rqt.nvfp4_fake_quantize'd operands."""
    nvqat = pytest.importorskip("torchao.prototype.qat.nvfp4")
    from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, per_tensor_amax_to_scale

    torch.manual_seed(1)
    x, w, g = torch.randn(4, 64), torch.randn(8, 64), torch.randn(4, 8)

    def to_nvfp4(t):
        pts = per_tensor_amax_to_scale(t.abs().max()) if per_tensor_scale else None
        return NVFP4Tensor.to_nvfp4(t, per_tensor_scale=pts)

    ctx = types.SimpleNamespace(saved_tensors=(to_nvfp4(x), to_nvfp4(w)), _fwd_used_autocast=False,
                                _dtype=torch.float32)
    gx, gw, *_ = nvqat._NVFP4QuantizedForwardFakeQuantizedBackward.backward(ctx, g)
    x2, w2 = x.clone().requires_grad_(), w.clone().requires_grad_()
    gs = None if per_tensor_scale else 1.0
    torch.nn.functional.linear(rqt.nvfp4_fake_quantize(x2, global_scale=gs, convention="torchao"),
                               rqt.nvfp4_fake_quantize(w2, global_scale=gs, convention="torchao")).backward(g)
    assert_same_bits(x2.grad, gx)
    assert_same_bits(w2.grad, gw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nf4_linear_equals_torchao_linear_nf4(dtype):
    """torchao's QLoRA linear on an NF4 weight (double quantized, blocks 64/256): output and input
    gradient equal a Linear on rqt.nf4_fake_quantize's weight; torchao freezes the weight, refquant
    passes its gradient straight through."""
    nf4 = pytest.importorskip("torchao.quantization.quantize_.workflows.nf4.nf4_tensor")
    torch.manual_seed(2)
    w = torch.randn(128, 128, dtype=dtype)
    x = torch.randn(4, 128, dtype=dtype, requires_grad=True)
    y = nf4.linear_nf4(x, nf4.to_nf4(w, 64, 256))
    g = torch.randn_like(y)
    y.backward(g)
    x2 = x.detach().clone().requires_grad_()
    w_fq = rqt.nf4_fake_quantize(w, block=64, double_quant=True, convention="torchao")
    y2 = torch.nn.functional.linear(x2, w_fq)
    y2.backward(g)
    assert_same_bits(y2, y.detach())
    assert_same_bits(x2.grad, x.grad)


# ----------------------------------------------------------------------------- compile and export
def _modules():
    return {
        "float_tensor": rqt.nn.FloatFakeQuantize(rq.float8_e4m3fn, scale=0.05),
        "float_channel": rqt.nn.FloatFakeQuantize(rq.float6_e2m3fn, scale=torch.tensor([0.1, 0.2, 0.3, 0.4]),
                                                  axis=0, convention="torchao"),
        "float_custom": rqt.nn.FloatFakeQuantize(rq.FloatFormat(3, 4, 3, name="e3m4"), scale=0.25,
                                                 ste="identity"),
        "mx": rqt.nn.MXFakeQuantize(rq.float4_e2m1fn, block=16),
        "mxint8": rqt.nn.MXFakeQuantize(rq.int8, block=4, axis=0, convention="ocp"),
        "nvfp4": rqt.nn.NVFP4FakeQuantize(global_scale=0.002, convention="torchao"),
        "nf4": rqt.nn.NF4FakeQuantize(block=16, convention="torchao", double_quant=True, nested_block=4),
    }


def _input(dtype=torch.float32):
    return (torch.randn(4, 32, generator=torch.Generator().manual_seed(0)) * 2).to(dtype)


@pytest.mark.parametrize("name", list(_modules()))
def test_compile_fullgraph_equals_eager(name):
    torch._dynamo.reset()
    m = _modules()[name]
    x = _input().requires_grad_()
    eager = m(x)
    eager.backward(torch.ones_like(eager))
    gx = x.grad.clone()
    x.grad = None
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
    assert_same_bits(compiled, eager)
    compiled.backward(torch.ones_like(compiled))
    assert_same_bits(x.grad, gx)


def test_compile_inductor_bfloat16():
    torch._dynamo.reset()
    m = rqt.nn.FloatFakeQuantize(rq.float8_e5m2, scale=0.01)

    def f(t):
        return m(t * 2) + 1

    x = _input(torch.bfloat16).requires_grad_()
    eager = f(x)
    eager.sum().backward()
    gx = x.grad.clone()
    x.grad = None
    compiled = torch.compile(f, fullgraph=True)(x)
    assert_same_bits(compiled, eager)
    compiled.sum().backward()
    assert_same_bits(x.grad, gx)


@pytest.mark.parametrize("name", list(_modules()))
def test_export_save_load_equals_eager(name, tmp_path):
    m = _modules()[name]
    x = _input()
    ep = torch.export.export(m, (x,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert any(t.startswith("refquant.") for t in targets), targets
    assert_same_bits(ep.module()(x), m(x))
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    buf.seek(0)
    loaded = torch.export.load(buf)
    assert_same_bits(loaded.module()(x), m(x))


def test_module_state_dict_round_trip():
    m = rqt.nn.FloatFakeQuantize(rq.float8_e4m3fn, scale=torch.tensor([0.1, 0.2, 0.3, 0.4]), axis=0)
    m2 = rqt.nn.FloatFakeQuantize(rq.float8_e4m3fn, scale=torch.ones(4), axis=0)
    m2.load_state_dict(m.state_dict())
    x = _input()
    assert_same_bits(m2(x), m(x))
    n = rqt.nn.NVFP4FakeQuantize(global_scale=0.002)
    assert set(n.state_dict()) == {"global_scale"}
    assert "float8_e4m3fn" in repr(m)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call,exc,match", [
    (lambda: rqt.float_fake_quantize([1.0], fmt=rq.float8_e4m3fn), TypeError, "x must be a torch.Tensor"),
    (lambda: rqt.float_fake_quantize(torch.ones(2, dtype=torch.int32), fmt=rq.float8_e4m3fn), TypeError,
     "x must be a float16"),
    (lambda: rqt.float_fake_quantize(torch.ones(2), fmt="float8_e4m3"), ValueError, "float8_e4m3fn"),
    (lambda: rqt.float_fake_quantize(torch.ones(2), fmt=rq.int8), TypeError, "fmt must be a FloatFormat"),
    (lambda: rqt.float_fake_quantize(torch.ones(2), fmt=rq.float8_e4m3fn, convention="nope"), ValueError,
     "convention must be one of"),
    (lambda: rqt.float_fake_quantize(torch.ones(2), fmt=rq.float8_e4m3fn, ste="lsq"), ValueError, "ste"),
    (lambda: rqt.float_fake_quantize(torch.ones(2), fmt=rq.float8_e4m3fn, rounding="up"), ValueError,
     "rounding"),
    (lambda: rqt.float_fake_quantize(torch.ones(2), 0.0, fmt=rq.float8_e4m3fn), ValueError, "scale"),
    (lambda: rqt.float_fake_quantize(torch.ones(2), True, fmt=rq.float8_e4m3fn), TypeError, "scale"),
    (lambda: rqt.float_fake_quantize(torch.ones(2), fmt=rq.float8_e4m3fn, saturate="yes"), TypeError,
     "saturate"),
    (lambda: rqt.float_fake_quantize(torch.ones(2), fmt=rq.float4_e2m1fn, saturate=False), ValueError,
     "saturate=False"),
    (lambda: rqt.float_fake_quantize(torch.tensor([float("nan")]), fmt=rq.float4_e2m1fn), ValueError, "NaN"),
    (lambda: rqt.float_fake_quantize(torch.ones(2, 3), torch.ones(3), fmt=rq.float8_e4m3fn, axis=2),
     ValueError, "axis"),
    (lambda: rqt.float_fake_quantize(torch.ones(2), torch.ones(1, requires_grad=True), fmt=rq.float8_e4m3fn),
     NotImplementedError, "scale"),
    (lambda: rqt.float_fake_quantize(torch.ones(4, 6), torch.ones(2, 2), fmt=rq.float8_e4m3fn,
                                     block_size=(2, 4)), ValueError, "block_size"),
    (lambda: rqt.mx_fake_quantize(torch.ones(4, 30), rq.float4_e2m1fn), ValueError, "block=32"),
    (lambda: rqt.mx_fake_quantize(torch.ones(()), rq.float4_e2m1fn), ValueError, "0-d"),
    (lambda: rqt.mx_fake_quantize(torch.ones(32), rq.int4), ValueError, "int8"),
    (lambda: rqt.mx_fake_quantize(torch.ones(32), rq.float4_e2m1fn, convention="x"), ValueError, "ocp"),
    (lambda: rqt.mx_fake_quantize(torch.ones(32), rq.float4_e2m1fn, scale_rule="round"), ValueError,
     "scale_rule"),
    (lambda: rqt.mx_fake_quantize(torch.ones(32), rq.float4_e2m1fn, block=2.0), TypeError, "block"),
    (lambda: rqt.nvfp4_fake_quantize(torch.ones(4, 10)), ValueError, "multiple of 16"),
    (lambda: rqt.nvfp4_fake_quantize(torch.ones(16), convention="te"), ValueError, "transformer_engine"),
    (lambda: rqt.nvfp4_fake_quantize(torch.ones(16), global_scale="1"), TypeError, "global_scale"),
    (lambda: rqt.nvfp4_fake_quantize(torch.ones(16), global_scale=torch.ones(2)), ValueError, "global_scale"),
    (lambda: rqt.nf4_fake_quantize(torch.ones(100), block=64, convention="torchao"), ValueError, "block"),
    (lambda: rqt.nf4_fake_quantize(torch.ones(64), codebook="nf3"), ValueError, "codebook"),
    (lambda: rqt.nf4_fake_quantize(torch.ones(64), convention="bnb"), ValueError, "bitsandbytes"),
    (lambda: rqt.nf4_fake_quantize(torch.ones(64), double_quant=1), TypeError, "double_quant"),
    (lambda: rqt.nn.FloatFakeQuantize("fp8"), ValueError, "float8_e4m3fn"),
    (lambda: rqt.nn.MXFakeQuantize(rq.uint8), ValueError, "int8"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
