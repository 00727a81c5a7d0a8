"""rqt.fake_quantize / pact / apot_fake_quantize: bitwise equal to the core, gradients, compile."""

from fractions import Fraction

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import refquant as rq  # noqa: E402
import refquant_torch as rqt  # noqa: E402
from refquant_torch._bridge import from_numpy, to_numpy  # noqa: E402

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits(t: torch.Tensor) -> torch.Tensor:
    """Bit patterns, with every NaN made the same."""
    t = t.detach()
    t = torch.where(torch.isnan(t), torch.full_like(t, float("nan")), t)
    return t.view(_INT[t.element_size()])


def assert_same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(bits(a), bits(b)), (a, b)


def tie_heavy(rng, n, scale, dtype):
    k = rng.integers(-300, 300, n)
    vals = np.concatenate([(k + 0.5) * scale, rng.standard_normal(n) * scale * 100,
                           [0.0, -0.0, np.inf, -np.inf, np.nan]])
    t = torch.tensor(vals, dtype=torch.float64).to(dtype)
    return t


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(DTYPES),
       convention=st.sampled_from(["exact", "torch.fake_quantize"]),
       scale=st.sampled_from([0.1, 0.0123, 1 / 3, 0.25]), zp=st.integers(-5, 5))
def test_fake_quantize_equals_core_bitwise(seed, dtype, convention, scale, zp):
    rng = np.random.default_rng(seed)
    x = tie_heavy(rng, 64, scale, dtype)
    before = x.clone()
    y = rqt.fake_quantize(x, scale, zp, qmin=-128, qmax=127, convention=convention)
    core = rq.fake_quantize(to_numpy(x), scale, zp, qmin=-128, qmax=127, convention=convention)
    assert_same_bits(y, from_numpy(core))
    assert_same_bits(x, before)


@settings(deadline=None, max_examples=15)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(DTYPES))
def test_per_channel_and_block_equal_core(seed, dtype):
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.standard_normal((4, 6)) * 3, dtype=torch.float64).to(dtype)
    s = rng.uniform(0.01, 0.5, 4).astype(np.float32)
    z = rng.integers(-3, 4, 4).astype(np.int32)
    y = rqt.fake_quantize(x, torch.from_numpy(s), torch.from_numpy(z), fmt=rq.int8, axis=0)
    core = rq.fake_quantize(to_numpy(x), s, z, fmt=rq.int8, axis=0)
    assert_same_bits(y, from_numpy(core))
    sb = s[:4].reshape(2, 2)
    yb = rqt.fake_quantize(x, torch.from_numpy(sb), 0, fmt=rq.int8, block_size=(2, 3))
    coreb = rq.fake_quantize(to_numpy(x), sb, 0, fmt=rq.int8, block_size=(2, 3))
    assert_same_bits(yb, from_numpy(coreb))


def _fraction_mask(x, s, z, qmin, qmax):
    out = []
    for v in x.tolist():
        if not np.isfinite(v):
            out.append(False)
            continue
        q = round(Fraction(v) / Fraction(s)) + z  # round() of a Fraction is half to even
        out.append(qmin <= q <= qmax)
    return torch.tensor(out)


@settings(deadline=None, max_examples=20)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(DTYPES), zp=st.integers(-3, 3))
def test_ste_mask_exact_matches_fraction_oracle(seed, dtype, zp):
    rng = np.random.default_rng(seed)
    s = 0.1
    # values around both clamp thresholds (qmin - z - 1/2) * s and (qmax - z + 1/2) * s
    edges = np.array([(-8 - zp - 0.5) * s, (7 - zp + 0.5) * s])
    x = torch.tensor(np.concatenate([edges, rng.uniform(-1.5, 1.5, 40)]), dtype=dtype)
    x = torch.cat([x, torch.nextafter(x, torch.full_like(x, 10)),
                   torch.nextafter(x, torch.full_like(x, -10))]).requires_grad_()
    y = rqt.fake_quantize(x, s, zp, qmin=-8, qmax=7)
    y.backward(torch.ones_like(y))
    expected = _fraction_mask(x.detach().to(torch.float64), s, zp, -8, 7).to(dtype)
    assert_same_bits(x.grad, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_matches_torch_fake_quantize(dtype):
    """Real backend oracle: torch's own STE mask on tie-heavy data."""
    rng = np.random.default_rng(0)
    x = tie_heavy(rng, 2000, 0.1, torch.float32)
    x = x[torch.isfinite(x)].to(dtype).requires_grad_()
    xt = x.detach().clone().requires_grad_()
    g = torch.tensor(rng.standard_normal(x.numel()), dtype=dtype)
    y = rqt.fake_quantize(x, 0.1, 3, qmin=0, qmax=255, convention="torch.fake_quantize")
    y.backward(g)
    yt = torch.fake_quantize_per_tensor_affine(xt, 0.1, 3, 0, 255)
    yt.backward(g)
    assert_same_bits(y, yt)
    assert_same_bits(x.grad, xt.grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pact_and_apot_equal_core_with_grads(dtype):
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.standard_normal(200) * 2, dtype=dtype).requires_grad_()
    g = torch.tensor(rng.standard_normal(200), dtype=dtype)
    for fn, core, core_grad, kw in [
        (rqt.pact, rq.pact.fake_quantize, rq.pact.fake_quantize_grad, {"bits": 4}),
        (rqt.apot_fake_quantize, rq.apot.fake_quantize, rq.apot.fake_quantize_grad,
         {"bits": 4, "k": 2, "signed": True}),
    ]:
        x.grad = None
        alpha = torch.tensor([1.5], requires_grad=True)
        y = fn(x, alpha, **kw)
        y.backward(g)
        assert_same_bits(y, from_numpy(core(to_numpy(x), 1.5, **kw)))
        gx, ga = core_grad(to_numpy(x), 1.5, to_numpy(g), **kw)
        assert_same_bits(x.grad, from_numpy(np.asarray(gx)))
        assert alpha.grad.dtype == torch.float32
        assert alpha.grad.item() == np.float32(ga)


def test_gradcheck_float64_where_differentiable():
    # saturated region: fake_quantize is constant in x (STE grad 0 there)
    x = torch.tensor([50.0, -60.0, 70.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: rqt.fake_quantize(t, 0.1, 0, fmt=rq.int8), (x,))
    # PACT above alpha: out = alpha, d/dalpha = 1, d/dx = 0
    alpha = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    xs = torch.tensor([2.0, 3.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, a: rqt.pact(t, a, bits=4), (xs, alpha))


def test_compile_fullgraph_and_export():
    x = torch.randn(8, 5, requires_grad=True)
    alpha = torch.tensor([1.0], requires_grad=True)

    def f(t, a):
        y = rqt.fake_quantize(t, 0.05, 2, qmin=0, qmax=255)
        return rqt.pact(y.abs(), a, bits=4) + rqt.apot_fake_quantize(t, a, bits=4, k=2)

    eager = f(x, alpha)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(x, alpha)
    assert_same_bits(eager, compiled)
    compiled.sum().backward()
    assert x.grad is not None and alpha.grad is not None

    class M(torch.nn.Module):
        def forward(self, t):
            return rqt.fake_quantize(t, 0.05, 2, qmin=0, qmax=255)

    ep = torch.export.export(M(), (x.detach(),))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert "refquant.fake_quantize.default" in targets
    assert_same_bits(ep.module()(x.detach()), M()(x.detach()))


def test_stochastic_seed_reproducible_and_inputs_untouched():
    x = torch.linspace(-1, 1, 101)
    before = x.clone()
    a = rqt.fake_quantize(x, 0.1, 0, fmt=rq.int8, rounding="stochastic", rng=7)
    b = rqt.fake_quantize(x, 0.1, 0, fmt=rq.int8, rounding="stochastic", rng=7)
    assert_same_bits(a, b)
    assert_same_bits(x, before)


def test_errors_name_the_argument():
    with pytest.raises(TypeError, match="x must be"):
        rqt.fake_quantize(np.float32([1.0]), 0.1, 0, fmt=rq.int8)
    with pytest.raises(TypeError, match="x must be"):
        rqt.fake_quantize(torch.tensor([1, 2]), 0.1, 0, fmt=rq.int8)
    with pytest.raises(ValueError, match="convention"):
        rqt.fake_quantize(torch.ones(2), 0.1, 0, fmt=rq.int8, convention="nope")
    with pytest.raises(ValueError, match="scale"):
        rqt.fake_quantize(torch.ones(2), -0.1, 0, fmt=rq.int8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_bits():
    x = torch.randn(1000) * 3
    for dtype in DTYPES:
        xc = x.to(dtype)
        cpu = rqt.fake_quantize(xc, 0.1, 3, qmin=0, qmax=255)
        gpu = rqt.fake_quantize(xc.cuda(), 0.1, 3, qmin=0, qmax=255)
        assert gpu.device.type == "cuda"
        assert_same_bits(cpu, gpu.cpu())


def test_lsq_grads_equal_core_bitwise():
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.standard_normal(300) * 2, dtype=torch.float32, requires_grad=True)
    g = torch.tensor(rng.standard_normal(300), dtype=torch.float32)
    scale = torch.tensor(0.1, requires_grad=True)
    zp = torch.tensor(2.0, requires_grad=True)
    y = rqt.fake_quantize(x, scale, zp, qmin=-8, qmax=7)
    y.backward(g)
    gx, gs, gz = rq.lsq.fake_quantize_grad(to_numpy(x), to_numpy(scale), to_numpy(zp),
                                           to_numpy(g), qmin=-8, qmax=7)
    assert_same_bits(x.grad, from_numpy(np.asarray(gx)))
    assert scale.grad.item() == np.float32(gs) and zp.grad.item() == np.float32(gz)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("convention", ["exact", "torch.fake_quantize", "onnx"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_bound_search_mask_equals_direct_mask(dtype, convention, per_channel, monkeypatch):
    """Large tensors take the bound search of refquant.ste, small ones one core call on x: both agree."""
    from refquant_torch import functional

    rng = np.random.default_rng(7)
    x = torch.stack([tie_heavy(rng, 200, 0.1, dtype), tie_heavy(rng, 200, 0.37, dtype)], dim=1)
    kwargs = {"qmin": -8, "qmax": 7, "convention": convention}
    if per_channel:
        scale, zp, kwargs["axis"] = np.float32([0.1, 0.37]), np.int32([2, -3]), 1
    else:
        scale, zp = 0.1, 2
    direct = functional.ste_mask(x, scale, zp, **kwargs)
    monkeypatch.setattr(functional, "_DIRECT_MASK_MAX", -1)
    searched = functional.ste_mask(x, scale, zp, **kwargs)
    assert torch.equal(direct, searched)
    assert 0 < int(direct.sum()) < direct.numel()
