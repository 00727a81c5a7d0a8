"""rqt.nn.quantized.Linear / Conv2d against torch.ao.nn.quantized modules on FBGEMM, bitwise."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import refquant_torch as rqt  # noqa: E402

warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
nnq = torch.ao.nn.quantized
nniq = torch.ao.nn.intrinsic.quantized


@pytest.fixture(autouse=True)
def fbgemm_engine():
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("torch was built without FBGEMM")
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    yield
    torch.backends.quantized.engine = before


def weight(shape, per_channel, gen):
    w = torch.randn(shape, generator=gen) * 0.3
    if per_channel:
        scales = torch.rand(shape[0], generator=gen, dtype=torch.float64) * 0.01 + 0.002
        return torch.quantize_per_channel(w, scales, torch.zeros(shape[0], dtype=torch.int64), 0, torch.qint8)
    return torch.quantize_per_tensor(w, 0.007, 0, torch.qint8)


def same(a, b):
    assert a.dtype == b.dtype == torch.quint8 and a.q_scale() == b.q_scale()
    assert a.q_zero_point() == b.q_zero_point()
    return torch.equal(a.int_repr(), b.int_repr())


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_linear_matches_torch(per_channel, with_bias, relu):
    gen = torch.Generator().manual_seed(int(per_channel) * 4 + int(with_bias) * 2 + int(relu))
    for n_in, n_out in [(1, 1), (17, 9), (256, 64)]:
        cls = nniq.LinearReLU if relu else nnq.Linear
        ref = cls(n_in, n_out, bias_=with_bias) if not relu else cls(n_in, n_out, bias=with_bias)
        ref.set_weight_bias(weight((n_out, n_in), per_channel, gen),
                            torch.randn(n_out, generator=gen) if with_bias else None)
        ref.scale, ref.zero_point = 0.05, 117
        ours = rqt.nn.quantized.Linear.from_torch(ref)
        x = torch.quantize_per_tensor(torch.randn(8, n_in, generator=gen) * 3, 0.03, 121, torch.quint8)
        assert same(ours(x), ref(x))


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_conv2d_matches_torch(per_channel, with_bias, relu):
    gen = torch.Generator().manual_seed(10 + int(per_channel) * 4 + int(with_bias) * 2 + int(relu))
    for c, o, k, stride, padding, dilation, groups in [(3, 8, 3, 1, 1, 1, 1), (8, 4, 3, 2, 2, 2, 2),
                                                       (4, 6, 1, 1, 0, 1, 1), (16, 16, 3, 1, 1, 1, 16)]:
        cls = nniq.ConvReLU2d if relu else nnq.Conv2d
        ref = cls(c, o, k, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=with_bias)
        ref.set_weight_bias(weight((o, c // groups, k, k), per_channel, gen),
                            torch.randn(o, generator=gen) if with_bias else None)
        ref.scale, ref.zero_point = 0.1, 100
        ours = rqt.nn.quantized.Conv2d.from_torch(ref)
        x = torch.quantize_per_tensor(torch.randn(2, c, 9, 9, generator=gen) * 3, 0.01, 121, torch.quint8)
        assert same(ours(x), ref(x))


def test_bad_input():
    w = torch.quantize_per_tensor(torch.ones(2, 3), 0.1, 0, torch.qint8)
    layer = rqt.nn.quantized.Linear(w, scale=0.1, zero_point=0)
    with pytest.raises(TypeError, match="x must be a per-tensor quint8"):
        layer(torch.ones(1, 3))
    with pytest.raises(TypeError, match="weight must be a qint8"):
        rqt.nn.quantized.Linear(torch.ones(2, 3))
    x = torch.quantize_per_tensor(torch.ones(1, 4), 0.1, 0, torch.quint8)
    with pytest.raises(ValueError, match="do not match"):
        layer(x)
    assert np.asarray(layer.weight_codes).shape == (2, 3)


def test_x86_engine_where_torch_runs_fbgemm():
    """torch's default x86 engine runs FBGEMM for linear layers and for convolutions whose weights
    have a nonzero zero point; those match under the same ``fbgemm`` row."""
    if "x86" not in torch.backends.quantized.supported_engines:
        pytest.skip("no x86 engine in this torch build")
    torch.backends.quantized.engine = "x86"
    gen = torch.Generator().manual_seed(99)
    lin = nnq.Linear(64, 32)
    lin.set_weight_bias(weight((32, 64), True, gen), torch.randn(32, generator=gen))
    lin.scale, lin.zero_point = 0.05, 117
    x = torch.quantize_per_tensor(torch.randn(16, 64, generator=gen) * 3, 0.03, 121, torch.quint8)
    assert same(rqt.nn.quantized.Linear.from_torch(lin)(x), lin(x))
    conv = nnq.Conv2d(8, 8, 3, padding=1)
    w = torch.quantize_per_tensor(torch.randn(8, 8, 3, 3, generator=gen) * 0.3, 0.007, 3, torch.qint8)
    conv.set_weight_bias(w, torch.randn(8, generator=gen))
    conv.scale, conv.zero_point = 0.1, 100
    x = torch.quantize_per_tensor(torch.randn(1, 8, 9, 9, generator=gen) * 3, 0.01, 121, torch.quint8)
    assert same(rqt.nn.quantized.Conv2d.from_torch(conv)(x), conv(x))
