"""torch.learnable against torch's own learnable fake-quant backward, bit for bit per element."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import refquant as rq  # noqa: E402
from tests.references import assert_bitwise_equal  # noqa: E402


def _tie_heavy(s, z, qmin, qmax, n, seed):
    rng = np.random.default_rng(seed)
    s32 = np.float32(s)
    k = rng.integers(qmin - z - 3, qmax - z + 3, n).astype(np.float32)
    ties = (k + np.float32(0.5)) * s32
    near = np.nextafter(ties, np.where(rng.random(n) < 0.5, np.inf, -np.inf).astype(np.float32))
    rand = rng.uniform((qmin - z - 2) * s, (qmax - z + 2) * s, n).astype(np.float32)
    return np.concatenate([ties, near, rand, k * s32])


CONFIGS = [(0.1, 0.0, -8, 7), (0.0123, 3.0, 0, 255), (1 / 3, 7.0, 0, 15), (0.7, -2.0, -8, 7),
           (0.05, 2.5, 0, 15), (0.02, 3.5, 0, 255)]


@pytest.mark.parametrize("s,z,qmin,qmax", CONFIGS)
def test_per_channel_backward_bitwise(s, z, qmin, qmax):
    """One element per channel makes torch's per-channel sums the per-element values."""
    x = _tie_heavy(s, int(np.rint(z)), qmin, qmax, 1500, seed=1)
    dy = np.random.default_rng(2).normal(size=x.size).astype(np.float32)
    scale = np.full(x.size, s, np.float32)
    zp = np.full(x.size, z, np.float32)
    x = x.reshape(-1, 1)  # torch's per-channel backward needs a dimension to reduce
    dy = dy.reshape(-1, 1)
    tx = torch.tensor(x, requires_grad=True)
    ts = torch.tensor(scale, requires_grad=True)
    tz = torch.tensor(zp, requires_grad=True)
    out = torch._fake_quantize_learnable_per_channel_affine(tx, ts, tz, 0, qmin, qmax, 0.37)
    out.backward(torch.tensor(dy))
    gx, gs, gz = rq.lsq.fake_quantize_grad(x, scale, zp, dy, qmin=qmin, qmax=qmax, axis=0,
                                           grad_factor=0.37, convention="torch.learnable")
    assert_bitwise_equal(gx, tx.grad.numpy(), "grad_x")
    assert_bitwise_equal(gs, ts.grad.numpy(), "grad_scale")
    assert_bitwise_equal(gz, tz.grad.numpy(), "grad_zero_point")


@pytest.mark.parametrize("s,z,qmin,qmax", CONFIGS)
def test_per_tensor_backward_bitwise(s, z, qmin, qmax):
    """Single-element calls: torch's per-tensor sum of one element is that element's value."""
    x = _tie_heavy(s, int(np.rint(z)), qmin, qmax, 60, seed=3)
    dy = np.random.default_rng(4).normal(size=x.size).astype(np.float32)
    gx, gs, gz = rq.lsq.fake_quantize_grad(x, np.float32([s]), np.float32([z]), dy, qmin=qmin,
                                           qmax=qmax, grad_factor=0.5, reduce=False,
                                           convention="torch.learnable")
    want = np.zeros((3, x.size), np.float32)
    for i in range(x.size):
        tx = torch.tensor(x[i:i + 1], requires_grad=True)
        ts = torch.tensor([s], dtype=torch.float32, requires_grad=True)
        tz = torch.tensor([z], dtype=torch.float32, requires_grad=True)
        out = torch._fake_quantize_learnable_per_tensor_affine(tx, ts, tz, qmin, qmax, 0.5)
        out.backward(torch.tensor(dy[i:i + 1]))
        want[:, i] = [tx.grad.item(), ts.grad.item(), tz.grad.item()]
    assert_bitwise_equal(gx, want[0], "grad_x")
    zero = np.float32(0.0)  # torch's one-element sum turns -0.0 into +0.0
    assert_bitwise_equal(gs + zero, want[1], "grad_scale")
    assert_bitwise_equal(gz + zero, want[2], "grad_zero_point")


def test_per_tensor_sum_close_to_torch():
    x = _tie_heavy(0.0123, 3, 0, 255, 3000, seed=5)
    dy = np.random.default_rng(6).normal(size=x.size).astype(np.float32)
    tx, ts = torch.tensor(x, requires_grad=True), torch.tensor([0.0123], requires_grad=True)
    tz = torch.tensor([3.0], requires_grad=True)
    torch._fake_quantize_learnable_per_tensor_affine(tx, ts, tz, 0, 255, 1.0).backward(
        torch.tensor(dy))
    gx, gs, gz = rq.lsq.fake_quantize_grad(x, np.float32([0.0123]), np.float32([3.0]), dy,
                                           qmin=0, qmax=255, convention="torch.learnable")
    assert gs.shape == (1,)
    assert_bitwise_equal(gx, tx.grad.numpy())
    assert np.allclose(gs, ts.grad.numpy(), rtol=1e-4, atol=1e-4)
    assert np.allclose(gz, tz.grad.numpy(), rtol=1e-4, atol=1e-4)
