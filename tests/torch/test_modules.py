"""rqt.nn modules: torch.ao parity, state round trips, QAT loops, reference modules."""

import copy
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.ao.quantization import (  # noqa: E402
    FakeQuantize as TorchFakeQuantize,
)
from torch.ao.quantization import (  # noqa: E402
    MovingAveragePerChannelMinMaxObserver,
    QConfig,
)

import refquant_torch as rqt  # noqa: E402

_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def same_bits(a, b):
    return a.dtype == b.dtype and torch.equal(a.detach().view(_INT[a.element_size()]),
                                              b.detach().view(_INT[b.element_size()]))


PER_CHANNEL = dict(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
                   dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)


FLOAT_QPARAMS = dict(observer=torch.ao.quantization.PerChannelMinMaxObserver, quant_min=0,
                    quant_max=255, dtype=torch.quint8, ch_axis=0,
                    qscheme=torch.per_channel_affine_float_qparams)
FOUR_BIT_HISTOGRAM = dict(observer=torch.ao.quantization.HistogramObserver, quant_min=0,
                          quant_max=15, dtype=torch.quint8)


@pytest.mark.parametrize("kwargs", [{}, PER_CHANNEL, FLOAT_QPARAMS, FOUR_BIT_HISTOGRAM],
                         ids=["per_tensor", "per_channel", "float_qparams", "histogram_4bit"])
def test_fake_quantize_matches_torch_ao(kwargs):
    torch.manual_seed(0)
    ours, theirs = rqt.nn.FakeQuantize(**kwargs), TorchFakeQuantize(**kwargs)
    assert isinstance(ours, torch.ao.quantization.FakeQuantizeBase)
    for _ in range(4):
        x = torch.randn(16, 32) * 3
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), theirs(xb)
        assert same_bits(ya, yb)
        ya.sum().backward()
        yb.sum().backward()
        assert same_bits(xa.grad, xb.grad)
        assert torch.equal(ours.scale, theirs.scale)
        assert ours.zero_point.dtype == theirs.zero_point.dtype
        assert torch.equal(ours.zero_point, theirs.zero_point)
    ours.disable_fake_quant()
    assert torch.equal(ours(x), x)


def test_fake_quantize_in_qconfig_and_round_trips():
    torch.manual_seed(1)
    ctr = rqt.nn.FakeQuantize.with_args(quant_min=0, quant_max=255)
    qconfig = QConfig(activation=ctr, weight=rqt.nn.FakeQuantize.with_args(**PER_CHANNEL))
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    model.train()
    model.qconfig = qconfig
    prepared = torch.ao.quantization.prepare_qat(model)
    prepared(torch.randn(5, 4))
    fq = prepared[0].weight_fake_quant
    assert isinstance(fq, rqt.nn.FakeQuantize) and fq.scale.shape == (3,)
    fresh = rqt.nn.FakeQuantize(**PER_CHANNEL)
    fresh.load_state_dict(fq.state_dict())
    assert torch.equal(fresh.scale, fq.scale) and torch.equal(fresh.zero_point, fq.zero_point)
    # a module built by prepare_qat holds a local factory function (torch's), so pickle the
    # freshly built one
    for clone in (copy.deepcopy(fq), pickle.loads(pickle.dumps(fresh))):
        assert torch.equal(clone.scale, fq.scale)
        x = torch.randn(3, 4)
        clone.disable_observer()
        fq.disable_observer()
        assert same_bits(clone(x), fq(x))


def _modules():
    return {
        "FakeQuantize": lambda: rqt.nn.FakeQuantize(quant_min=-128, quant_max=127,
                                                    dtype=torch.qint8,
                                                    qscheme=torch.per_tensor_symmetric),
        "PACT": lambda: rqt.nn.PACT(bits=4, alpha=1.0, signed=True),
        "APoTFakeQuantize": lambda: rqt.nn.APoTFakeQuantize(bits=4, k=2, alpha=1.0),
        "MinMaxQuant": lambda: rqt.nn.MinMaxQuant(6),
        "PACTQuant": lambda: rqt.nn.PACTQuant(4, alpha=1.0, signed=True),
        "LearnableFakeQuantize": lambda: rqt.nn.LearnableFakeQuantize(
            quant_min=-8, quant_max=7, scale=0.3, dtype=torch.qint8,
            qscheme=torch.per_tensor_symmetric),
        "QuantizeDequantize": _qdq,
    }


def _qdq():
    q = rqt.QuantizeDequantize((), 4, False)
    q.set_range(-2.0, 2.5)
    return q


@pytest.mark.parametrize("name", list(_modules()))
def test_state_dict_deepcopy_pickle(name):
    torch.manual_seed(2)
    m = _modules()[name]()
    x = torch.randn(8, 4)
    m(x)
    m.eval()
    y = m(x)
    fresh = _modules()[name]()
    fresh.load_state_dict(m.state_dict())
    fresh.eval()
    for clone in (fresh, copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        clone.eval()
        if hasattr(clone, "disable_observer"):
            clone.disable_observer()
        assert same_bits(clone(x), y)


def _qat(quantizer, learned):
    """A small MLP learning a fixed linear teacher with ``quantizer`` on the hidden layer."""
    torch.manual_seed(3)
    x = torch.randn(256, 8)
    y = x @ torch.randn(8, 1)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), quantizer, torch.nn.Linear(16, 1))
    start = learned().detach().clone()
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, start, learned().detach()


@pytest.mark.parametrize("name", ["PACT", "APoTFakeQuantize", "PACTQuant", "FakeQuantize",
                                  "MinMaxQuant", "LearnableFakeQuantize", "QuantizeDequantize"])
def test_qat_loop_loss_falls_and_qparam_moves(name):
    if name == "LearnableFakeQuantize":
        if not _has_lsq():
            pytest.skip("rq.lsq.fake_quantize_grad has not landed")
        q = rqt.nn.LearnableFakeQuantize(quant_min=-8, quant_max=7, scale=0.3, zero_point=0.0,
                                         dtype=torch.qint8)
        q.enable_param_learning()
        learned = lambda: q.scale  # noqa: E731
    elif name == "QuantizeDequantize":
        q = _qdq()
        learned = lambda: q.max  # noqa: E731
    elif name in ("FakeQuantize", "MinMaxQuant"):
        q = _modules()[name]()
        learned = (lambda: q.scale) if name == "FakeQuantize" else (lambda: q.minmax)  # noqa: E731
    else:
        q = _modules()[name]()
        learned = lambda: q.alpha  # noqa: E731
    losses, start, end = _qat(q, learned)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert not torch.equal(start, end)


def _has_lsq():
    import refquant as rq

    try:
        return hasattr(rq.lsq, "fake_quantize_grad")
    except ImportError:
        return False


def test_approx_interface():
    m = rqt.nn.MinMaxQuant(8)
    x = torch.randn(100)
    q = m.quantize(x)
    assert m.bitwidth == 8 and torch.equal(q, q.round()) and q.abs().max() <= 127
    assert m.scale_factor == pytest.approx(127 / x.abs().max().item())
    p = rqt.nn.PACTQuant(4, alpha=2.0, signed=False)
    qp = p.quantize(x)
    assert torch.equal(qp, qp.round()) and qp.min() >= 0 and qp.max() <= 15
    assert torch.equal(qp, (torch.clamp(x, 0, 2) * 7.5).round())


def test_approx_defaults_and_quantize_gradients_are_torchapprox():
    p = rqt.nn.PACTQuant()
    assert p.bitwidth == 8 and p.int_max == 127 and p.signed and p.alpha.item() == pytest.approx(2.2)
    m = rqt.nn.MinMaxQuant()
    assert m.bitwidth == 8 and m.int_max == 127
    x = (torch.randn(50) * 3).requires_grad_()
    for quant in (m, p):
        x.grad = None
        codes = quant.quantize(x)
        codes.backward(torch.ones(50))  # TorchApprox's Quant node: grad * scale_factor
        assert torch.equal(x.grad, torch.full((50,), quant.scale_factor, dtype=torch.float64)
                           .to(torch.float32))
        assert torch.equal(codes, codes.round()) and codes.abs().max() <= quant.int_max
    assert p.alpha.grad is None
    # MinMaxQuant.quantize is stateless: the range is this x's max |x|
    m.quantize(torch.tensor([0.5, -4.0]))
    assert m.minmax.item() == 4.0 and m.scale_factor == 127 / 4.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_pact_quant_codes_match_a_fraction_oracle(dtype):
    """codes = round_half_even(clip(x, -alpha, alpha) * n / alpha) in exact arithmetic."""
    from fractions import Fraction

    torch.manual_seed(8)
    x = torch.cat([torch.randn(300) * 3, (torch.arange(-127, 128) + 0.5) * (2.2 / 127)]).to(dtype)
    p = rqt.nn.PACTQuant(8, alpha=2.2)
    codes = p.quantize(x)
    alpha = Fraction(float(p.alpha.detach().double()))
    expected = [round(max(-alpha, min(alpha, Fraction(v))) * 127 / alpha)
                for v in x.double().tolist()]
    assert codes.dtype == dtype
    assert codes.double().tolist() == [float(e) for e in expected]




QPARAMS = [
    (torch.per_tensor_affine, torch.quint8),
    (torch.per_tensor_affine, torch.qint8),
    (torch.per_channel_affine, torch.qint8),
    (torch.per_channel_affine, torch.quint8),
    (torch.per_channel_affine_float_qparams, torch.quint8),
]


def _weight_qparams(qscheme, dtype, channels, gen):
    if qscheme == torch.per_tensor_affine:
        return dict(qscheme=qscheme, dtype=dtype, scale=0.0123,
                    zero_point=3 if dtype == torch.quint8 else -1)
    scale = torch.rand(channels, generator=gen) * 0.02 + 0.001
    if qscheme == torch.per_channel_affine:
        lo = 0 if dtype == torch.quint8 else -3
        zp = torch.randint(lo, lo + 7, (channels,), generator=gen)
    else:
        zp = torch.rand(channels, generator=gen) * 5
    return dict(qscheme=qscheme, dtype=dtype, scale=scale, zero_point=zp, axis=0)


@pytest.mark.parametrize("qscheme,dtype", QPARAMS)
@pytest.mark.parametrize("kind", ["Linear", "Conv2d"])
def test_reference_modules_match_torch_bitwise(qscheme, dtype, kind):
    gen = torch.Generator().manual_seed(4)
    if kind == "Linear":
        float_mod = torch.nn.Linear(64, 16)
        x = torch.randn(3, 64)
    else:
        float_mod = torch.nn.Conv2d(3, 16, 3)
        x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():  # tie-heavy weights: multiples of half a step
        float_mod.weight.mul_(10).round_().mul_(0.00615)
    qp = _weight_qparams(qscheme, dtype, 16, gen)
    theirs = getattr(torch.ao.nn.quantized.reference, kind).from_float(float_mod, qp)
    ours = getattr(rqt.nn.reference, kind).from_float(float_mod, qp)
    assert type(ours) is getattr(rqt.nn.reference, kind)
    qa, qb = ours.get_quantized_weight(), theirs.get_quantized_weight()
    assert qa.dtype == qb.dtype and torch.equal(qa.int_repr(), qb.int_repr())
    assert same_bits(ours.get_weight(), theirs.get_weight())
    assert same_bits(ours(x), theirs(x))
    fresh = getattr(rqt.nn.reference, kind).from_float(float_mod, _weight_qparams(
        torch.per_tensor_affine, torch.quint8, 16, gen))
    fresh.load_state_dict(ours.state_dict())
    assert same_bits(fresh.get_weight(), theirs.get_weight())
