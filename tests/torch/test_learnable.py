"""LearnableFakeQuantize against torch's _LearnableFakeQuantize; round_zero_point."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.ao.quantization import (  # noqa: E402
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
)
from torch.ao.quantization._learnable_fake_quantize import (  # noqa: E402
    _LearnableFakeQuantize as TorchLearnable,
)

import refquant as rq  # noqa: E402
import refquant_torch as rqt  # noqa: E402
from refquant_torch._bridge import from_numpy, to_numpy  # noqa: E402

from .test_functional import assert_same_bits  # noqa: E402
from .test_functional_paths import _as_subclass  # noqa: E402

CASES = [
    (torch.per_tensor_affine, -1, 3.4),
    (torch.per_tensor_affine, -1, 2.5),   # a tie: forward rounds to even, torch's backward up
    (torch.per_tensor_symmetric, -1, 0.0),
    (torch.per_channel_affine, 4, 2.6),
]


def _data():
    torch.manual_seed(0)
    ties = (torch.arange(-20, 300) + 0.5) * 0.05
    return torch.cat([torch.randn(1000) * 4, ties])[:1320].reshape(330, 4)


@pytest.mark.parametrize("qscheme,channels,zp", CASES)
def test_matches_torch_learnable_fake_quantize(qscheme, channels, zp):
    per_channel = channels != -1
    obs = MovingAveragePerChannelMinMaxObserver if per_channel else MovingAverageMinMaxObserver
    kw = dict(quant_min=0, quant_max=255, scale=0.05, zero_point=zp, dtype=torch.quint8,
              qscheme=qscheme, channel_len=channels)
    if per_channel:
        kw["ch_axis"] = 1
    ours = rqt.nn.LearnableFakeQuantize(obs, lsq_convention="torch.learnable", **kw)
    theirs = TorchLearnable(obs, **kw)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    ours.enable_param_learning()
    theirs.enable_param_learning()
    x = _data()
    g = torch.randn_like(x)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), theirs(xb)
    assert_same_bits(ya, yb)
    ya.backward(g)
    yb.backward(g)
    assert_same_bits(xa.grad, xb.grad)
    # qparam grads: the core's (float64 sums) bit for bit; torch sums in float32
    axis = 1 if per_channel else None
    s, z = to_numpy(ours.scale.detach()), to_numpy(ours.zero_point.detach())
    if not per_channel:
        s, z = s.reshape(()), z.reshape(())
    _, gs, gz = rq.lsq.fake_quantize_grad(to_numpy(x), s, z, to_numpy(g), qmin=0, qmax=255,
                                          axis=axis, convention="torch.learnable")
    assert_same_bits(ours.scale.grad, torch.tensor(np.array(gs, ndmin=1)).to(torch.float32))
    assert_same_bits(ours.zero_point.grad, torch.tensor(np.array(gz, ndmin=1)).to(torch.float32))
    assert torch.allclose(ours.scale.grad, theirs.scale.grad, rtol=1e-5)
    assert torch.allclose(ours.zero_point.grad, theirs.zero_point.grad, rtol=1e-5, atol=1e-6)


def test_static_estimate_by_default_as_torch():
    ours, theirs = rqt.nn.LearnableFakeQuantize(), TorchLearnable(MovingAverageMinMaxObserver)
    x = _data()
    assert_same_bits(ours(x), theirs(x))
    assert torch.equal(ours.scale, theirs.scale) and torch.equal(ours.zero_point, theirs.zero_point)
    assert ours.bitwidth == theirs.bitwidth == 8


@pytest.mark.parametrize("lsq", ["lsq", "torch.learnable"])
def test_round_zero_point_forward_uses_the_rounded_integer(lsq):
    x0 = _data()[:, 0].contiguous()
    outs = []
    for wrap in (lambda t: t, _as_subclass):
        x = wrap(x0.clone()).requires_grad_()
        z = torch.tensor(2.5, requires_grad=True)
        y = rqt.fake_quantize(x, 0.05, z, qmin=0, qmax=255, convention="torch.fake_quantize",
                              lsq_convention=lsq, round_zero_point=True)
        y.sum().backward()
        outs.append((y.as_subclass(torch.Tensor).detach(), x.grad.as_subclass(torch.Tensor),
                     z.grad))
    core = rq.fake_quantize(to_numpy(x0), 0.05, 2, qmin=0, qmax=255,
                            convention="torch.fake_quantize")
    z_grad = 2.0 if lsq == "lsq" else 2.5
    _, _, gz = rq.lsq.fake_quantize_grad(to_numpy(x0), 0.05, z_grad, np.ones(x0.numel(), np.float32),
                                         qmin=0, qmax=255, convention=lsq)
    for y, _gx, gzt in outs:
        assert_same_bits(y, from_numpy(core))
        assert gzt.item() == np.float32(gz)
    assert_same_bits(outs[0][1], outs[1][1])
