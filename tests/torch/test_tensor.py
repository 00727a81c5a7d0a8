"""QuantizedTensor / DequantizedTensor and the AIMET-style quantizers."""

import copy
import pickle
import re

import pytest

torch = pytest.importorskip("torch")
import refquant_torch as rqt  # noqa: E402


def norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).replace("[ ", "[").strip()


def test_seed_quantize_dequantize_example():
    x = torch.tensor([[2.57, -2.312], [0.153, 0.205]])
    quantizer = rqt.Quantize(shape=(), bitwidth=8, symmetric=True)
    quantizer.set_range(-128 * 0.1, 127 * 0.1)
    x_q = quantizer(x)
    assert norm(repr(x_q)) == norm(
        "QuantizedTensor([[ 26., -23.], [ 2., 2.]], grad_fn=<AliasBackward0>)")
    x_dq = x_q.dequantize()
    assert norm(repr(x_dq)) == norm(
        "DequantizedTensor([[ 2.6000, -2.3000], [ 0.2000, 0.2000]], grad_fn=<AliasBackward0>)")
    assert torch.equal(x_dq.encoding.scale, x_q.encoding.scale)


def test_seed_asymmetric_example():
    x = torch.tensor([[0.39, 51.0], [3.521, 9.41]])
    qd = rqt.QuantizeDequantize(shape=(), bitwidth=8, symmetric=False)
    qd.set_range(-10, 41)
    x_qdq = qd(x)
    assert norm(repr(x_qdq)) == norm(
        "DequantizedTensor([[ 0.4000, 41.0000], [ 3.6000, 9.4000]], grad_fn=<AliasBackward0>)")
    assert norm(repr(x_qdq.quantize())) == norm(
        "QuantizedTensor([[ 52., 255.], [ 68., 97.]], grad_fn=<AliasBackward0>)")
    r = x_qdq.quantized_repr()
    assert r.dtype == torch.uint8 and r.tolist() == [[52, 255], [68, 97]]


def test_seed_compute_encodings_per_channel():
    torch.manual_seed(0)
    quantizer = rqt.Quantize(shape=(2, 1), bitwidth=8, symmetric=True)
    x = torch.randn((2, 4), requires_grad=True)
    with quantizer.compute_encodings():
        x_q = quantizer(x)
    r = x_q.quantized_repr()
    assert r.dtype == torch.int8
    # AIMET's symmetric rule: the row's extreme lands on -128 or 127
    for row, xr in zip(r, x.detach(), strict=True):
        assert (row.min() == -128) or (row.max() == 127)
        assert torch.equal(torch.sign(row.to(torch.float)), torch.sign(torch.where(
            row == 0, torch.zeros(()), xr)))
    assert quantizer.is_initialized() and quantizer.min.shape == (2, 1)


def test_round_trips_lossless_and_gradients_flow():
    torch.manual_seed(1)
    qd = rqt.QuantizeDequantize(shape=(3, 1), bitwidth=4, symmetric=False)
    x = torch.randn(3, 5, requires_grad=True)
    with qd.compute_encodings():
        dq = qd(x)
    q = dq.quantize()
    assert torch.equal(q.dequantize(), dq)
    assert torch.equal(q.dequantize().quantize(), q)
    assert torch.equal(q.quantized_repr(), dq.quantized_repr())
    q.dequantize().sum().backward()
    assert x.grad is not None
    # inside compute_encodings the range is the input's own (AIMET): the parameters learn outside
    qd(x).quantize().dequantize().sum().backward()
    assert qd.max.grad is not None and qd.min.grad is not None
    for clone in (copy.deepcopy(dq), pickle.loads(pickle.dumps(dq))):
        assert type(clone) is rqt.DequantizedTensor and torch.equal(clone, dq)
        assert torch.equal(clone.encoding.scale, dq.encoding.scale)
    assert type(dq + 1) is torch.Tensor


def test_uninitialized_quantizer_raises():
    with pytest.raises(RuntimeError, match="set_range"):
        rqt.Quantize((), 8, True)(torch.ones(2))
