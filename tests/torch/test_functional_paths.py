"""The eager fast paths equal the custom ops bit for bit; NumPy qparams reach the core as they are;
LSQ and PACT gradients per dtype; per-channel PACT; export of every op."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import refquant as rq  # noqa: E402
import refquant_torch as rqt  # noqa: E402
from refquant_torch._bridge import from_numpy, to_numpy  # noqa: E402

from .test_functional import DTYPES, assert_same_bits, tie_heavy  # noqa: E402


def _as_subclass(t):
    """The same values as a tensor subclass: fake_quantize then takes the custom op."""
    class Sub(torch.Tensor):
        pass

    return t.as_subclass(Sub)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("convention", ["aimet", "torchao", "exact", "torch.fake_quantize"])
def test_numpy_scalar_scale_is_not_weak(dtype, convention):
    """A NumPy float32 scale is a float32 qparam in the core (not a Python number)."""
    x = tie_heavy(np.random.default_rng(3), 300, 0.0123, dtype)
    x = x[torch.isfinite(x)] if convention == "aimet" else x
    if str(dtype).split(".")[-1] not in rq.conventions.get(convention).input_dtypes:
        pytest.skip(f"{convention} does not take {dtype}")
    s = np.float32(0.0123)
    y = rqt.fake_quantize(x, s, 0, qmin=-128, qmax=127, convention=convention)
    core = rq.fake_quantize(to_numpy(x), s, 0, qmin=-128, qmax=127, convention=convention)
    assert_same_bits(y, from_numpy(core))
    y_op = rqt.fake_quantize(_as_subclass(x), s, 0, qmin=-128, qmax=127, convention=convention)
    assert_same_bits(y_op.as_subclass(torch.Tensor), y)


@settings(deadline=None, max_examples=20)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(DTYPES),
       learn=st.sampled_from(["none", "scale", "both"]),
       lsq=st.sampled_from(["lsq", "torch.learnable"]), per_channel=st.booleans())
def test_eager_path_equals_custom_op_and_core(seed, dtype, learn, lsq, per_channel):
    rng = np.random.default_rng(seed)
    x0 = tie_heavy(rng, 40, 0.1, dtype).reshape(-1, 5)
    x0 = x0[:, :4] if per_channel else x0
    x0 = torch.where(torch.isfinite(x0), x0, torch.zeros_like(x0))
    g = torch.tensor(rng.standard_normal(tuple(x0.shape)), dtype=dtype)
    kw = {"qmin": -8, "qmax": 7, "lsq_convention": lsq, "convention": "torch.fake_quantize"}
    if per_channel:
        s0, z0, kw["axis"] = torch.tensor([0.1, 0.2, 0.05, 0.3]), torch.tensor([1., -2., 0., 3.]), 1
    else:
        s0, z0 = torch.tensor(0.1), torch.tensor(2.0)
    results = []
    for wrap in (lambda t: t, _as_subclass):
        x = wrap(x0.clone()).requires_grad_()
        s = s0.clone().requires_grad_(learn != "none")
        z = z0.clone().requires_grad_(learn == "both")
        y = rqt.fake_quantize(x, s, z, **kw)
        y.backward(g)
        results.append((y.as_subclass(torch.Tensor).detach(),
                        x.grad.as_subclass(torch.Tensor), s.grad, z.grad))
    (ya, gxa, gsa, gza), (yb, gxb, gsb, gzb) = results
    assert_same_bits(ya, yb)
    assert_same_bits(gxa, gxb)
    core_y = rq.fake_quantize(to_numpy(x0), to_numpy(s0), to_numpy(z0), qmin=-8, qmax=7,
                              axis=kw.get("axis"), convention="torch.fake_quantize")
    assert_same_bits(ya, from_numpy(core_y))
    if learn == "none":
        assert gsa is None and gsb is None
        return
    cgx, cgs, cgz = rq.lsq.fake_quantize_grad(to_numpy(x0), to_numpy(s0), to_numpy(z0),
                                              to_numpy(g), qmin=-8, qmax=7, axis=kw.get("axis"),
                                              convention=lsq)
    assert_same_bits(gxa, from_numpy(np.asarray(cgx)).reshape(x0.shape))
    expected_s = torch.from_numpy(np.array(cgs, dtype=np.float64, ndmin=1)).to(torch.float32)
    assert_same_bits(gsa, expected_s.reshape(s0.shape))
    assert_same_bits(gsb, gsa)
    if learn == "both":
        expected_z = torch.from_numpy(np.array(cgz, dtype=np.float64, ndmin=1)).to(torch.float32)
        assert_same_bits(gza, expected_z.reshape(z0.shape))
        assert_same_bits(gzb, gza)


def test_no_grad_forward_has_no_graph_and_grad_forward_has_one():
    x = torch.randn(10)
    assert rqt.fake_quantize(x, 0.1, 0, fmt=rq.int8).grad_fn is None
    xr = x.clone().requires_grad_()
    assert rqt.fake_quantize(xr, 0.1, 0, fmt=rq.int8).grad_fn is not None
    with torch.no_grad():
        assert rqt.fake_quantize(xr, 0.1, 0, fmt=rq.int8).grad_fn is None
    assert rqt.pact(x, 1.0, bits=4).grad_fn is None


def test_in_place_change_of_a_saved_scale_raises():
    x = torch.randn(10, requires_grad=True)
    s = torch.tensor(0.1, requires_grad=True)
    y = rqt.fake_quantize(x, s, 0, fmt=rq.int8)
    with torch.no_grad():
        s.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


@pytest.mark.parametrize("dtype", DTYPES)
def test_pact_per_channel_equals_core_with_grads(dtype):
    rng = np.random.default_rng(11)
    x0 = torch.tensor(rng.standard_normal((5, 3)) * 2, dtype=dtype)
    g = torch.tensor(rng.standard_normal((5, 3)), dtype=dtype)
    alpha0 = torch.tensor([0.5, 1.0, 2.0])
    outs = []
    for wrap in (lambda t: t, _as_subclass):
        x = wrap(x0.clone()).requires_grad_()
        alpha = alpha0.clone().requires_grad_()
        y = rqt.pact(x, alpha, bits=3, signed=True, axis=1)
        y.backward(g)
        outs.append((y.as_subclass(torch.Tensor).detach(), x.grad.as_subclass(torch.Tensor),
                     alpha.grad))
    core = rq.pact.fake_quantize(to_numpy(x0), to_numpy(alpha0).astype(np.float64), bits=3,
                                 signed=True, axis=1)
    gx, ga = rq.pact.fake_quantize_grad(to_numpy(x0), to_numpy(alpha0).astype(np.float64),
                                        to_numpy(g), bits=3, signed=True, axis=1)
    for y, gxt, gat in outs:
        assert_same_bits(y, from_numpy(core))
        assert_same_bits(gxt, from_numpy(np.asarray(gx)))
        assert_same_bits(gat, torch.from_numpy(np.asarray(ga, dtype=np.float64)).to(torch.float32))


def test_pact_stochastic_rounding_seeded():
    x = torch.linspace(0, 1, 50)
    a = rqt.pact(x, 1.0, bits=2, rounding="stochastic", rng=5)
    b = rqt.pact(x, 1.0, bits=2, rounding="stochastic", rng=5)
    core = rq.pact.fake_quantize(to_numpy(x), 1.0, bits=2, rounding="stochastic", rng=5)
    assert_same_bits(a, b)
    assert_same_bits(a, from_numpy(core))


def test_export_has_every_op_and_matches_eager():
    class M(torch.nn.Module):
        def forward(self, t):
            a = rqt.pact(t.abs(), 1.0, bits=4)
            b = rqt.apot_fake_quantize(t, 1.0, bits=4, k=2, signed=True)
            return rqt.fake_quantize(a + b, 0.05, 2, qmin=0, qmax=255)

    x = torch.randn(6, 3)
    ep = torch.export.export(M(), (x,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert {"refquant.pact.default", "refquant.apot_fake_quantize.default",
            "refquant.fake_quantize.default"} <= targets
    assert_same_bits(ep.module()(x), M()(x))


def test_compile_fullgraph_learnable_scale_grads_equal_eager():
    x0 = torch.randn(7, 4)

    def f(t, s, z):
        return rqt.fake_quantize(t, s, z, qmin=0, qmax=15, lsq_convention="lsq").sum()

    grads = []
    for fn in (f, torch.compile(f, fullgraph=True, backend="aot_eager")):
        x = x0.clone().requires_grad_()
        s = torch.tensor(0.2, requires_grad=True)
        z = torch.tensor(3.0, requires_grad=True)
        fn(x, s, z).backward()
        grads.append((x.grad, s.grad, z.grad))
    for a, b in zip(*grads):
        assert_same_bits(a, b)


@pytest.mark.parametrize("bad,exc", [(True, TypeError), ("0.1", TypeError), (object(), TypeError)])
def test_bad_qparams_name_the_argument(bad, exc):
    with pytest.raises(exc, match="scale"):
        rqt.fake_quantize(torch.ones(2), bad, 0, fmt=rq.int8)
    with pytest.raises(exc, match="zero_point"):
        rqt.fake_quantize(torch.ones(2), 0.1, bad, fmt=rq.int8)
    with pytest.raises(exc, match="alpha"):
        rqt.pact(torch.ones(2), bad, bits=4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("convention", ["exact", "torch.fake_quantize", "onnx", "aimet"])
@pytest.mark.parametrize("scale", [0.1, np.float32(0.37), 1 / 3])
def test_memoized_bounds_mask_equals_direct_mask(dtype, convention, scale):
    """From the second call with the same per-tensor qparams the mask comes from memoized
    bounds; it equals the one-core-call mask on tie-heavy data, NaN and inf included."""
    from refquant_torch import functional

    if str(dtype).split(".")[-1] not in rq.conventions.get(convention).input_dtypes:
        pytest.skip(f"{convention} does not take {dtype}")
    x = tie_heavy(np.random.default_rng(2), 300, float(scale), dtype)
    if convention == "aimet":
        x = x[~torch.isnan(x)]
    kwargs = {"qmin": -8, "qmax": 7, "convention": convention}
    direct = functional._direct_mask(x, scale, 2, -8, 7, None, None, None, convention)
    functional._BOUNDS.clear()
    functional._SEEN.clear()
    first = functional.ste_mask(x, scale, 2, **kwargs)
    assert not functional._BOUNDS
    second = functional.ste_mask(x, scale, 2, **kwargs)
    assert len(functional._BOUNDS) == 1
    third = functional.ste_mask(x, scale, 2, **kwargs)
    for mask in (first, second, third):
        assert torch.equal(mask, direct)
    assert 0 < int(direct.sum()) < direct.numel()


def test_zero_dim_input_keeps_its_shape():
    x = torch.tensor(0.26, requires_grad=True)
    y = rqt.fake_quantize(x, 0.1, 0, fmt=rq.int8)
    assert y.shape == () and y.item() == pytest.approx(0.3)
    y.backward()
    assert x.grad.shape == () and x.grad.item() == 1.0
    assert rqt.fake_quantize(x.detach(), 0.1, 0, fmt=rq.int8).shape == ()
    assert rqt.pact(x.detach(), 1.0, bits=4).shape == ()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_gives_the_cpu_bits_for_every_op_and_gradient(dtype):
    """A CUDA tensor is copied to the CPU bit for bit, the core runs there, the result goes back:
    values and gradients equal the CPU's, and results stay on the input's device."""
    x0 = tie_heavy(np.random.default_rng(9), 200, 0.1, dtype)
    x0 = torch.where(torch.isfinite(x0), x0, torch.zeros_like(x0))
    g = torch.randn(x0.shape).to(dtype)
    outs = {}
    for device in ("cpu", "cuda"):
        x = x0.to(device).requires_grad_()
        s = torch.tensor(0.1, device=device, requires_grad=True)
        a = torch.tensor([1.5], device=device, requires_grad=True)
        y = (rqt.fake_quantize(x, s, 2, qmin=-8, qmax=7)
             + rqt.pact(x, a, bits=4, signed=True)
             + rqt.apot_fake_quantize(x, a, bits=4, k=2, signed=True))
        y.backward(g.to(device))
        assert y.device.type == device and x.grad.device.type == device
        outs[device] = [t.detach().cpu() for t in (y, x.grad, s.grad, a.grad)]
    for cpu, gpu in zip(outs["cpu"], outs["cuda"], strict=True):
        assert_same_bits(cpu, gpu)


@pytest.mark.parametrize("n", [64, 40000], ids=["mask-taken-in-forward", "mask-in-backward"])
def test_grad_of_inf_nan_and_negative_grads_equals_torch(n):
    """Both eager backward routes (a small x saves its mask in the forward; a large x saves x and
    masks in the backward) give torch's ``grad * mask``: inf * 0 is NaN, -g * 0 is -0.0."""
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.standard_normal(n) * 20, dtype=torch.float32)
    x[:8] = torch.tensor([1e3, -1e3, 1e3, -1e3, 0.5, 1e3, -1e3, 0.25])
    g = torch.tensor(rng.standard_normal(n), dtype=torch.float32)
    g[:8] = torch.tensor([float("inf"), float("-inf"), float("nan"), -0.0, float("inf"), -2.0,
                          -3.0, -0.0])
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    rqt.fake_quantize(ours, 0.1, 3, qmin=0, qmax=255, convention="torch.fake_quantize").backward(g)
    torch.fake_quantize_per_tensor_affine(theirs, 0.1, 3, 0, 255).backward(g)
    assert_same_bits(ours.grad, theirs.grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_straight_through_route_on_a_transposed_x(dtype):
    """The small-x route (torch's product node carrying the mask, values from the core) on a
    non-contiguous x: the core's values, torch's gradient, x untouched."""
    rng = np.random.default_rng(8)
    base = tie_heavy(rng, 59, 0.1, torch.float32)[:64].reshape(8, 8).to(dtype)
    x = base.t().requires_grad_()
    before = x.detach().clone()
    y = rqt.fake_quantize(x, 0.1, 3, qmin=0, qmax=255, convention="torch.fake_quantize")
    core = rq.fake_quantize(to_numpy(x.detach().contiguous()), 0.1, 3, qmin=0, qmax=255,
                            convention="torch.fake_quantize")
    assert_same_bits(y.contiguous(), from_numpy(core))
    g = torch.tensor(rng.standard_normal((8, 8)), dtype=dtype)
    y.backward(g)
    xt = before.clone().requires_grad_()
    torch.fake_quantize_per_tensor_affine(xt, 0.1, 3, 0, 255).backward(g)
    assert_same_bits(x.grad, xt.grad)
    assert_same_bits(x.detach(), before)


def test_a_small_x_with_new_qparams_takes_its_mask_from_one_core_call(monkeypatch):
    """Qparams that move every step (an observer's) never start the bounds search on a small x,
    and the gradient is torch's."""
    import refquant_torch.functional as F

    searched = []
    search = F.ste_bounds
    monkeypatch.setattr(F, "ste_bounds", lambda *a, **k: searched.append(a) or search(*a, **k))
    rng = np.random.default_rng(5)
    for step in range(3):
        x = torch.from_numpy(rng.standard_normal(40).astype(np.float32)).requires_grad_()
        scale = torch.tensor([0.011 + 0.001 * step])
        zp = torch.tensor([3], dtype=torch.int32)
        g = torch.from_numpy(rng.standard_normal(40).astype(np.float32))
        rqt.fake_quantize(x, scale, zp, qmin=0, qmax=127, convention="torch.fake_quantize").backward(g)
        x_t = x.detach().clone().requires_grad_()
        torch.fake_quantize_per_tensor_affine(x_t, scale, zp, 0, 127).backward(g)
        assert_same_bits(x.grad, x_t.grad)
    assert searched == []


def test_results_do_not_depend_on_numbas_thread_count():
    """A call large enough for the core's thread pool gives the same forward and backward bits on
    one Numba thread and on all of them (the core's kernels run on Numba's own pool inside torch)."""
    numba = pytest.importorskip("numba")
    from refquant._kernels._jit import PARALLEL_MIN_SIZE

    before = numba.get_num_threads()
    if before < 2:
        pytest.skip("Numba runs on one thread here")
    x = torch.randn(PARALLEL_MIN_SIZE * 2, generator=torch.Generator().manual_seed(1))
    x[:3] = torch.tensor([float("nan"), float("inf"), -0.0])
    g = torch.randn_like(x)
    grads, outs = [], []
    for threads in (1, before):
        numba.set_num_threads(threads)
        try:
            for conv in ("torch.fake_quantize", "exact"):
                xr = x.clone().requires_grad_()
                y = rqt.fake_quantize(xr, 0.0123, 3, qmin=0, qmax=255, convention=conv)
                y.backward(g)
                outs.append(y.detach())
                grads.append(xr.grad)
        finally:
            numba.set_num_threads(before)
    for a, b in zip(outs[:2] + grads[:2], outs[2:] + grads[2:], strict=True):
        assert_same_bits(a, b)
