"""The straight-through mask of rqt.fake_quantize and the learnable module's x-gradient, bitwise
against torch: tiny and huge scales, +-inf, per-channel bound search with one huge scale, and a
learnable fake quant whose qparams do not learn."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import refquant_torch as rqt  # noqa: E402
from refquant_torch import functional  # noqa: E402

from .test_functional import assert_same_bits  # noqa: E402

INF = float("inf")


def _grad(x, *args, calls=2, **kwargs):
    """x's gradient on each of ``calls`` identical calls (memoized bounds start on the second)."""
    grads = []
    for _ in range(calls):
        xr = x.clone().requires_grad_()
        rqt.fake_quantize(xr, *args, **kwargs).sum().backward()
        grads.append(xr.grad)
    return grads


def _torch_grad(x, scale, zero_point, qmin, qmax, axis=None):
    xr = x.clone().requires_grad_()
    if axis is None:
        y = torch.fake_quantize_per_tensor_affine(xr.float(), scale, zero_point, qmin, qmax)
    else:
        y = torch.fake_quantize_per_channel_affine(xr.float(), scale, zero_point, axis, qmin, qmax)
    y.sum().backward()
    return xr.grad


@pytest.fixture(autouse=True)
def _fresh_memo():
    functional._BOUNDS.clear()
    functional._SEEN.clear()
    yield
    functional._BOUNDS.clear()
    functional._SEEN.clear()


@pytest.mark.parametrize("convention", ["torch.fake_quantize", "exact"])
def test_tiny_scale_mask_same_on_every_call(convention):
    x = torch.tensor([1.0, -1.0, 0.0, INF], dtype=torch.float16)
    expected = _torch_grad(x, 1e-38, 0, 0, 255)
    for g in _grad(x, 1e-38, 0, qmin=0, qmax=255, convention=convention, calls=3):
        assert_same_bits(g, expected)


@pytest.mark.parametrize("convention", ["torch.fake_quantize", "exact"])
def test_infinities_get_no_gradient_under_a_huge_scale(convention):
    x = torch.tensor([INF, -INF, 1.0])
    expected = _torch_grad(x, 3e38, 0, 0, 255)
    assert expected.tolist() == [0.0, 0.0, 1.0]
    for g in _grad(x, torch.tensor(3e38), torch.tensor(0), qmin=0, qmax=255,
                   convention=convention, calls=3):
        assert_same_bits(g, expected)


def test_per_channel_bound_search_with_one_huge_scale():
    x = torch.full((9000, 2), 1.0)          # above the direct-mask size: the bound search
    scale, zp = torch.tensor([0.1, 3e38]), torch.tensor([0, 0], dtype=torch.int32)
    expected = _torch_grad(x, scale, zp, 0, 255, axis=1)
    (g,) = _grad(x, scale, zp, qmin=0, qmax=255, axis=1, convention="torch.fake_quantize", calls=1)
    assert_same_bits(g, expected)


_SCALES = st.sampled_from([1e-38, 1e-30, 3e-8, 0.1, 7.0, 1e20, 3e38, 3.4e38])
_X = st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.04999, 25.55, 1e-40, 3e38, -3e38, INF, -INF, 6e4])


@given(st.lists(_X, min_size=1, max_size=6), _SCALES, st.integers(0, 255),
       st.sampled_from([torch.float16, torch.float32]), st.booleans())
def test_memoized_bounds_equal_torch_mask(xs, scale, zp, dtype, per_channel):
    """Every call (direct mask, then memoized or searched bounds) gives torch's mask."""
    x = torch.tensor(xs, dtype=dtype)
    if np.isinf(np.float32(scale)):
        return
    if per_channel:
        x2 = x.reshape(-1, 1)
        s, z = torch.tensor([scale]), torch.tensor([zp], dtype=torch.int32)
        expected = _torch_grad(x2, s, z, 0, 255, axis=1)
        grads = _grad(x2, s, z, qmin=0, qmax=255, axis=1, convention="torch.fake_quantize")
    else:
        expected = _torch_grad(x, scale, zp, 0, 255)
        grads = _grad(x, torch.tensor(scale), torch.tensor(zp), qmin=0, qmax=255,
                      convention="torch.fake_quantize", calls=3)
    for g in grads:
        assert_same_bits(g, expected.to(g.dtype))


@pytest.mark.parametrize("scale,zp,x", [(0.39215609431266785, -1.0, 2.9705791),
                                        (0.1, 2.5, 0.65), (0.25, -0.7, -1.9)])
def test_learnable_without_learning_keeps_torchs_learnable_backward(scale, zp, x):
    """With learning off, torch's module still runs the learnable op, whose x-gradient uses
    the zero point trunc(clamp(z + 0.5)) and rne(z + x * inv)."""
    fq = rqt.nn.LearnableFakeQuantize(quant_min=-8, quant_max=7, scale=scale, zero_point=zp,
                                      lsq_convention="torch.learnable")
    fq.toggle_observer_update(False).toggle_qparam_learning(False)
    xs = torch.tensor([x, x + 0.05, -x, 3.1, -3.3], requires_grad=True)
    fq(xs).sum().backward()
    xt = xs.detach().clone().requires_grad_()
    torch._fake_quantize_learnable_per_tensor_affine(
        xt, torch.tensor([scale]), torch.tensor([zp]), -8, 7, 1.0).sum().backward()
    assert_same_bits(xs.grad, xt.grad)


def test_learnable_per_channel_without_learning_keeps_torchs_learnable_backward():
    scale, zp = torch.tensor([0.39215609431266785, 0.1]), torch.tensor([-1.0, 2.5])
    fq = rqt.nn.LearnableFakeQuantize(
        observer=torch.ao.quantization.MovingAveragePerChannelMinMaxObserver, quant_min=-8,
        quant_max=7, dtype=torch.qint8, qscheme=torch.per_channel_affine, ch_axis=1,
        channel_len=2, lsq_convention="torch.learnable")
    with torch.no_grad():
        fq.scale.copy_(scale)
        fq.zero_point.copy_(zp)
    fq.toggle_observer_update(False).toggle_qparam_learning(False)
    xs = torch.tensor([[2.9705791, 0.65], [3.02, 0.5], [-3.3, -1.05]], requires_grad=True)
    fq(xs).sum().backward()
    xt = xs.detach().clone().requires_grad_()
    torch._fake_quantize_learnable_per_channel_affine(xt, scale, zp, 1, -8, 7, 1.0).sum().backward()
    assert_same_bits(xs.grad, xt.grad)
