"""AIMET semantics of Quantize / QuantizeDequantize: compute_encodings, -0.0 codes, dtypes, grads."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import refquant_torch as rqt  # noqa: E402

from .. import references  # noqa: E402
from .test_functional import assert_same_bits  # noqa: E402


def aimet_range(x_min, x_max, bits, symmetric):
    lo, hi = references.aimet_range(x_min, x_max, 2**bits - 1, symmetric)
    return np.float32(lo), np.float32(hi)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("cls", [rqt.Quantize, rqt.QuantizeDequantize])
def test_compute_encodings_sets_aimet_range_from_the_union(cls, symmetric):
    q = cls((), 8, symmetric)
    batches = [torch.tensor([-1.0, 0.5]), torch.tensor([0.25, 3.0]), torch.tensor([0.1, 0.2])]
    with q.compute_encodings():
        outs = [q(b) for b in batches]
    lo, hi = aimet_range(-1.0, 3.0, 8, symmetric)
    assert_same_bits(q.min.detach(), torch.tensor(lo))
    assert_same_bits(q.max.detach(), torch.tensor(hi))
    # each call inside used its own batch's range
    for b, out in zip(batches, outs, strict=True):
        blo, bhi = aimet_range(b.min().item(), b.max().item(), 8, symmetric)
        expected_scale = torch.tensor((np.float32(bhi) - np.float32(blo)) / np.float32(255))
        assert_same_bits(out.encoding.scale.detach(), expected_scale)


def test_compute_encodings_on_zeros_gives_a_usable_range():
    q = rqt.QuantizeDequantize((), 8, False)
    with q.compute_encodings():
        y = q(torch.zeros(4))
    assert q.get_scale().item() > 0 and torch.equal(y, torch.zeros(4))
    lo, hi = aimet_range(0.0, 0.0, 8, False)
    assert_same_bits(q.min.detach(), torch.tensor(lo))
    assert_same_bits(q.max.detach(), torch.tensor(hi))


def test_compute_encodings_without_a_call_keeps_the_range():
    q = rqt.Quantize((), 8, True)
    q.set_range(-1.0, 1.0)
    with q.compute_encodings():
        pass
    assert q.min.item() == -1.0 and q.max.item() == 1.0


def test_negative_values_rounding_to_code_zero_store_minus_zero():
    q = rqt.Quantize((), 8, True)
    q.set_range(-128 * 0.1, 127 * 0.1)
    x_q = q(torch.tensor([-0.01, 0.01, -0.0, -0.2]))
    assert torch.signbit(x_q).tolist() == [True, False, True, True]
    assert "-0." in repr(x_q)
    assert x_q.quantized_repr().tolist() == [0, 0, 0, -2]
    assert torch.signbit(x_q.dequantize()).tolist() == [False, False, False, True]
    qa = rqt.Quantize((), 8, False)
    qa.set_range(-10, 41)
    assert not torch.signbit(qa(torch.tensor([-10.01]))).any()  # code 0 = qmin: clamped


@pytest.mark.parametrize("bits,symmetric,dtype", [
    (4, True, torch.int8), (4, False, torch.uint8), (8, True, torch.int8),
    (8, False, torch.uint8), (16, True, torch.int16), (16, False, torch.uint16),
    (32, True, torch.int32), (32, False, torch.uint32)])
def test_quantized_repr_smallest_dtype(bits, symmetric, dtype):
    q = rqt.Quantize((), bits, symmetric)
    q.set_range(-1.0, 1.0)
    x = torch.tensor([-1.0, -0.3, 0.0, 0.7, 1.0])
    x_q = q(x)
    r = x_q.quantized_repr()
    assert r.dtype == dtype
    stored = x_q.detach().as_subclass(torch.Tensor).to(torch.float64)
    assert torch.equal(r.to(torch.float64), stored.clamp(q.qmin, q.qmax))
    if bits <= 16:  # exact in float32 storage
        assert torch.equal(r.to(torch.float64), stored)


def test_quantize_and_dequantize_grads_follow_aimet_formulas():
    torch.manual_seed(4)
    q = rqt.Quantize((2, 1), 8, False)
    q.set_range(torch.tensor([[-1.0], [-2.0]]), torch.tensor([[1.5], [2.5]]))
    x = (torch.randn(2, 6) * 2).requires_grad_()
    g = torch.randn(2, 6)
    q(x).dequantize().backward(g)
    ours = (x.grad.clone(), q.min.grad.clone(), q.max.grad.clone())
    # AIMET in torch ops: quantize with round-STE and clamp, dequantize (q + offset) * scale
    mn, mx = q.min.detach().clone().requires_grad_(), q.max.detach().clone().requires_grad_()
    xr = x.detach().clone().requires_grad_()
    scale = (mx - mn) / 255
    raw = mn / scale
    offset = raw + (raw.round() - raw).detach()
    t = xr / scale
    codes = torch.clamp(t + (t.round() - t).detach() - offset, 0, 255)
    ((codes + offset) * scale).backward(g)
    assert torch.equal(ours[0] != 0, xr.grad != 0)
    for a, b in zip(ours, (xr.grad, mn.grad, mx.grad), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (a, b)


def test_encoding_min_max_properties():
    q = rqt.QuantizeDequantize((), 8, False)
    q.set_range(-10, 41)
    enc = q(torch.zeros(1)).encoding
    assert torch.allclose(enc.min, torch.tensor(-10.0)) and torch.allclose(enc.max, torch.tensor(41.0))


def test_gradcheck_dequantize_scale_float64():
    """dequantize() is linear in the scale: gradcheck in float64 (the codes and the offset are
    integers the core checks, so they are not perturbed)."""
    from refquant_torch.tensor import AffineEncoding, _Dequantize

    codes = torch.tensor([[3.0, -7.0, 0.0], [5.0, 1.0, -2.0]], dtype=torch.float64)
    scale = torch.tensor([[0.25], [0.5]], dtype=torch.float64, requires_grad=True)
    offset = torch.tensor([[1.0], [-2.0]], dtype=torch.float64)

    def f(s):
        return _Dequantize.apply(codes, s, offset, AffineEncoding(s, offset, -8, 7, False))

    assert torch.autograd.gradcheck(f, (scale,))
