"""rqt.prepare_qat / convert / QuantLinear / QuantConv2d: a small CNN and an MLP trained a few
steps, bit for bit equal to the same models built by hand with torch.ao's QAT modules."""

import copy
import warnings

import pytest

torch = pytest.importorskip("torch")
import torch.ao.nn.qat as nnqat  # noqa: E402
from torch.ao.quantization import (  # noqa: E402
    FakeQuantize,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    QConfig,
)
from torch.ao.quantization._learnable_fake_quantize import (  # noqa: E402
    _LearnableFakeQuantize as TorchLearnable,
)

import refquant_torch as rqt  # noqa: E402

from .test_functional import assert_same_bits  # noqa: E402


def _mlp():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _cnn():
    torch.manual_seed(2)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, stride=2),
        torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16, 5))


MODELS = {"mlp": (_mlp, (8, 6)), "cnn": (_cnn, (4, 2, 6, 6))}
MODELS_LAYERS = {"mlp": ("Linear", "Linear"), "cnn": ("Conv2d", "Conv2d", "Linear")}


def _x86_qconfig():
    """torch.ao's x86 QAT default with its FakeQuantize modules (``version=0``; ``version=1``
    swaps in the fused observer op, whose qparam arithmetic differs from FakeQuantize's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qconfig = torch.ao.quantization.get_default_qat_qconfig("x86", version=0)
    assert qconfig.activation.p.func is FakeQuantize and qconfig.weight.p.func is FakeQuantize
    return qconfig


def _by_hand(model, qconfig):
    """Each Linear / Conv2d -> Sequential(torch.ao.nn.qat module, qconfig.activation())."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, child in list(model.named_children()):
            qat_cls = {torch.nn.Linear: nnqat.Linear, torch.nn.Conv2d: nnqat.Conv2d}.get(type(child))
            if qat_cls is None:
                continue
            child.qconfig = qconfig
            qat = qat_cls.from_float(child)
            if qconfig.weight.p.func is TorchLearnable:  # torch needs the channel count
                qat.weight_fake_quant = qconfig.weight(channel_len=qat.weight.shape[0])
            setattr(model, name, torch.nn.Sequential(qat, qconfig.activation()))
    return model


def _train(model, shape, steps=4, lr=0.05):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(7)
    outs, grads = [], []
    for _ in range(steps):
        x = torch.randn(shape, generator=gen).requires_grad_()
        y = model(x)
        opt.zero_grad()
        (y * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
        opt.step()
        outs.append(y.detach())
        grads.append(x.grad)
    return outs, grads


@pytest.mark.parametrize("name", list(MODELS))
def test_default_config_equals_torch_ao_x86_qat(name):
    make, shape = MODELS[name]
    ours = rqt.prepare_qat(make())
    theirs = _by_hand(make(), _x86_qconfig())
    for (a, ga), (b, gb) in zip(zip(*_train(ours, shape)), zip(*_train(theirs, shape)), strict=True):
        assert_same_bits(a, b)
        assert_same_bits(ga, gb)
    ours_params = [p for n, p in ours.named_parameters()]
    theirs_params = [p for n, p in theirs.named_parameters()]
    for a, b in zip(ours_params, theirs_params, strict=True):
        assert_same_bits(a.detach(), b.detach())


def test_lsq_config_forward_and_x_gradient_equal_torch_learnable():
    """LSQ under torch.learnable: outputs and input gradients bitwise on the first step
    (the qparam gradients are summed in float64 by the core, in float32 by torch)."""
    make, shape = MODELS["cnn"]
    ours = rqt.prepare_qat(make(), rqt.QATConfig.lsq(lsq_convention="torch.learnable",
                                                     use_grad_scaling=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qconfig = QConfig(
            activation=TorchLearnable.with_args(observer=MovingAverageMinMaxObserver,
                                                quant_min=0, quant_max=255,
                                                use_grad_scaling=True),
            weight=TorchLearnable.with_args(observer=MovingAveragePerChannelMinMaxObserver,
                                            quant_min=-128, quant_max=127, dtype=torch.qint8,
                                            qscheme=torch.per_channel_symmetric, ch_axis=0,
                                            use_grad_scaling=True))
    theirs = _by_hand(make(), qconfig)
    (a,), (ga,) = _train(ours, shape, steps=1, lr=0.0)
    (b,), (gb,) = _train(theirs, shape, steps=1, lr=0.0)
    assert_same_bits(a, b)
    assert_same_bits(ga, gb)


@pytest.mark.parametrize("config", [
    rqt.QATConfig.affine(bits=4, convention="exact"),
    rqt.QATConfig.lsq(bits=4),
    rqt.QATConfig.pact(bits=4),
    rqt.QATConfig.apot(bits=4, k=2),
], ids=["affine-exact", "lsq", "pact", "apot"])
def test_every_method_trains_and_converts(config):
    make, shape = MODELS["cnn"]
    model = rqt.prepare_qat(make(), config)
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"QuantConv2d", "QuantLinear"} <= kinds and "Conv2d" not in kinds
    _train(model, shape, steps=2)
    x = torch.randn(shape)
    model.eval()
    converted = rqt.convert(copy.deepcopy(model))
    assert not any(isinstance(m, (rqt.nn.QuantLinear, rqt.nn.QuantConv2d))
                   for m in converted.modules())
    with torch.no_grad():
        y = converted(x)
    assert y.shape == model(x).shape and torch.isfinite(y).all()


@pytest.mark.parametrize("name", list(MODELS))
def test_convert_equals_torch_ao_reference_modules(name):
    """convert() of the default config: reference modules with the weight's qparams,
    bit-equal to torch.ao's reference modules built from the same fake quants."""
    make, shape = MODELS[name]
    model = rqt.prepare_qat(make())
    _train(model, shape, steps=2)
    qat_layers = [m for m in model.modules() if isinstance(m, (rqt.nn.QuantLinear,
                                                                rqt.nn.QuantConv2d))]
    converted = rqt.convert(model)
    refs = [m for m in converted.modules() if type(m).__module__ == "refquant_torch.nn.reference"]
    assert len(refs) == len(qat_layers)
    from torch.ao.nn.quantized import reference as R
    from torch.ao.quantization.utils import get_qparam_dict
    for qat, ref in zip(qat_layers, refs, strict=True):
        torch_ref = getattr(R, type(ref).__name__).from_float(ref, get_qparam_dict(qat.weight_quant))
        assert_same_bits(ref.get_weight(), torch_ref.get_weight())


class _Stubbed(torch.nn.Module):
    """torch.ao's eager layout: QuantStub, the model, DeQuantStub."""

    def __init__(self, body):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.body = body
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.body(self.quant(x)))


def _torch_ao_prepared(body, qconfig):
    model = _Stubbed(body)
    model.quant.qconfig = model.dequant.qconfig = qconfig
    for child in body.children():
        if type(child) in (torch.nn.Linear, torch.nn.Conv2d):
            child.qconfig = qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.prepare_qat(model.train())


@pytest.mark.parametrize("name", list(MODELS))
def test_convert_to_quantized_equals_torch_ao_convert(name):
    """convert(to="quantized") after QAT: the same torch.ao.nn.quantized modules (weight codes,
    per-channel scales, output qparams) as torch.ao's prepare_qat + convert of the same model
    with QuantStub / DeQuantStub, and bit-equal outputs on new data."""
    make, shape = MODELS[name]
    qconfig = _x86_qconfig()
    ours = rqt.prepare_qat(make())
    ours[0].input_quant = rqt.QATConfig().activation()  # what torch.ao's QuantStub observes
    theirs = _torch_ao_prepared(make(), qconfig)
    for (a, _), (b, _) in zip(zip(*_train(ours, shape)), zip(*_train(theirs, shape)), strict=True):
        assert_same_bits(a, b)
    ours = rqt.convert(ours, to="quantized")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = torch.ao.quantization.convert(theirs.eval())
    nnq = torch.ao.nn.quantized
    kinds = (nnq.Quantize, nnq.Linear, nnq.Conv2d)
    ours_q = [m for m in ours.modules() if isinstance(m, kinds)]
    theirs_q = [m for m in theirs.modules() if isinstance(m, kinds)]
    assert len(ours_q) == 1 + len(MODELS_LAYERS[name])
    assert [type(m) for m in ours_q] == [type(m) for m in theirs_q]
    for a, b in zip(ours_q, theirs_q, strict=True):
        if isinstance(a, torch.ao.nn.quantized.Quantize):
            assert (a.scale.item(), a.zero_point.item()) == (b.scale.item(), b.zero_point.item())
            continue
        wa, wb = a.weight(), b.weight()
        assert torch.equal(wa.int_repr(), wb.int_repr())
        assert torch.equal(wa.q_per_channel_scales(), wb.q_per_channel_scales())
        assert torch.equal(wa.q_per_channel_zero_points(), wb.q_per_channel_zero_points())
        assert_same_bits(a.bias(), b.bias())
        assert (a.scale, a.zero_point) == (b.scale, b.zero_point)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3)) * 2
    with torch.no_grad():
        assert_same_bits(ours(x).dequantize(), theirs(x))


def test_convert_to_quantized_per_tensor_weights_and_refusals():
    """Per-tensor affine weights under torch.ao's FakeQuantize defaults; a PACT weight or an
    unknown target is refused with the layer named."""
    weight = rqt.nn.FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=-128,
                                           quant_max=127, dtype=torch.qint8,
                                           qscheme=torch.per_tensor_symmetric)
    config = rqt.QATConfig(weight=weight, activation=rqt.QATConfig().activation)
    model = rqt.prepare_qat(_mlp(), config)
    _train(model, (8, 6), steps=2)
    layer = model[0]
    converted = rqt.convert(copy.deepcopy(model), to="quantized")
    with torch.no_grad():
        layer.weight_quant(layer.weight)  # torch.ao's convert lets the observer see it once more
    s, z = layer.weight_quant.calculate_qparams()
    expected = torch.quantize_per_tensor(layer.weight.detach(), float(s), int(z), torch.qint8)
    assert torch.equal(converted[0].weight().int_repr(), expected.int_repr())
    assert converted[0].weight().q_scale() == expected.q_scale()
    with pytest.raises(ValueError, match="to must be"):
        rqt.convert(copy.deepcopy(model), to="fbgemm")
    pact = rqt.prepare_qat(_mlp(), rqt.QATConfig.pact(bits=4))
    with pytest.raises(ValueError, match="output quantizer of QuantLinear; got PACT"):
        rqt.convert(pact, to="quantized")


def test_filter_fn_and_model_that_is_a_layer():
    model = rqt.prepare_qat(_mlp(), filter_fn=lambda m, name: name != "2")
    assert [type(m).__name__ for m in model] == ["QuantLinear", "ReLU", "Linear"]
    assert type(rqt.prepare_qat(torch.nn.Linear(2, 2))).__name__ == "QuantLinear"
    with pytest.raises(TypeError, match="config"):
        rqt.prepare_qat(_mlp(), {"weight": None})


def test_prepared_model_compiles_and_shares_parameters():
    torch._dynamo.reset()
    make, shape = MODELS["cnn"]
    float_model = make()
    params = list(float_model.parameters())
    model = rqt.prepare_qat(float_model)
    assert all(any(p is q for q in model.parameters()) for p in params)
    x = torch.randn(shape)
    eager = copy.deepcopy(model)
    eager(x), model(x)  # per-channel observers size their buffers on the first batch
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    assert_same_bits(compiled(x * 2), eager(x * 2))
