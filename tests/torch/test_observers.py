"""refquant_torch.observers against torchao's observers: statistics and qparams bit for bit."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")
from torchao.quantization import pt2e as ao  # noqa: E402

import refquant_torch.observers as obs  # noqa: E402

from .test_functional import assert_same_bits  # noqa: E402

CONFIGS = [
    ("MinMaxObserver", dict(dtype=torch.quint8)),
    ("MinMaxObserver", dict(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)),
    ("MinMaxObserver", dict(dtype=torch.quint8, qscheme=torch.per_tensor_symmetric)),
    ("MinMaxObserver", dict(dtype=torch.uint8, quant_min=0, quant_max=15)),
    ("MinMaxObserver", dict(dtype=torch.quint8, reduce_range=True)),
    ("MovingAverageMinMaxObserver", dict(dtype=torch.quint8, averaging_constant=0.3)),
    ("MovingAverageMinMaxObserver", dict(dtype=torch.int8, quant_min=-127, quant_max=127,
                                         qscheme=torch.per_tensor_symmetric)),
    ("PerChannelMinMaxObserver", dict(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                      ch_axis=0)),
    ("PerChannelMinMaxObserver", dict(dtype=torch.quint8, ch_axis=1)),
    ("PerChannelMinMaxObserver", dict(dtype=torch.quint8, ch_axis=0,
                                      qscheme=torch.per_channel_affine_float_qparams)),
    ("MovingAveragePerChannelMinMaxObserver", dict(dtype=torch.qint8, ch_axis=0,
                                                   qscheme=torch.per_channel_symmetric)),
]


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_matches_torchao_observer_bitwise(name, kwargs):
    ours, theirs = getattr(obs, name)(**kwargs), getattr(ao, name)(**kwargs)
    gen = torch.Generator().manual_seed(0)
    for i in range(5):
        x = torch.randn(6, 10, generator=gen) * 10 ** (i - 2)
        before = x.clone()
        assert ours(x) is x
        assert torch.equal(x, before)
        theirs(x)
        assert_same_bits(ours.min_val, theirs.min_val)
        assert_same_bits(ours.max_val, theirs.max_val)
        (sa, za), (sb, zb) = ours.calculate_qparams(), theirs.calculate_qparams()
        assert_same_bits(sa, sb)
        assert za.dtype == zb.dtype and torch.equal(za, zb)
    fresh = getattr(obs, name)(**kwargs)
    fresh.load_state_dict(ours.state_dict())
    assert torch.equal(fresh.calculate_qparams()[0], ours.calculate_qparams()[0])


def test_bfloat16_input_is_observed_exactly():
    x = (torch.randn(50) * 3).to(torch.bfloat16)
    ours, theirs = obs.MinMaxObserver(), ao.MinMaxObserver()
    ours(x)
    theirs(x)
    assert_same_bits(ours.min_val, theirs.min_val)
    assert_same_bits(ours.calculate_qparams()[0], theirs.calculate_qparams()[0])
