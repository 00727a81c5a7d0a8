"""rqt.nn.reference.Linear / Conv2d against torch.ao.nn.quantized.reference, bit for bit."""

import warnings

import pytest

torch = pytest.importorskip("torch")
import refquant_torch as rqt  # noqa: E402

from .test_modules import same_bits  # noqa: E402

R = torch.ao.nn.quantized.reference


def _float_module(kind):
    torch.manual_seed(4)
    if kind == "Linear":
        m, x = torch.nn.Linear(32, 8), torch.randn(3, 32)
    else:
        m, x = torch.nn.Conv2d(3, 8, 3), torch.randn(2, 3, 6, 6)
    with torch.no_grad():  # tie-heavy weights: multiples of half a step
        m.weight.mul_(10).round_().mul_(0.00615)
    return m, x


def _qparams(qscheme, dtype, decomposed=False, quant_range=None):
    gen = torch.Generator().manual_seed(5)
    if qscheme == torch.per_tensor_affine:
        qp = dict(qscheme=qscheme, dtype=dtype, scale=0.0123,
                  zero_point=3 if dtype in (torch.quint8, torch.float16) else -1)
    else:
        scale = torch.rand(8, generator=gen) * 0.02 + 0.001
        if qscheme == torch.per_channel_affine:
            zp = torch.randint(0, 5, (8,), generator=gen, dtype=torch.int32)
        else:
            zp = torch.rand(8, generator=gen) * 5
        qp = dict(qscheme=qscheme, dtype=dtype, scale=scale, zero_point=zp, axis=0)
    if decomposed:
        qp["is_decomposed"] = True
    if quant_range:
        qp["quant_min"], qp["quant_max"] = quant_range
    return qp


CASES = [
    (torch.per_tensor_affine, torch.quint8, False, None),
    (torch.per_tensor_affine, torch.qint8, False, None),
    (torch.per_tensor_affine, torch.qint32, False, None),
    (torch.per_channel_affine, torch.qint8, False, None),
    (torch.per_channel_affine, torch.quint8, False, None),
    (torch.per_channel_affine, torch.qint32, False, None),
    (torch.per_channel_affine_float_qparams, torch.quint8, False, None),
    (torch.per_tensor_affine, torch.quint8, True, None),
    (torch.per_tensor_affine, torch.qint8, True, (-20, 20)),
    (torch.per_channel_affine, torch.qint8, True, None),
    (torch.per_channel_affine, torch.quint8, True, (0, 100)),
    (torch.per_tensor_affine, torch.float16, False, None),
]


def _quantized_equal(a, b):
    if b.is_quantized:
        return a.is_quantized and a.dtype == b.dtype and torch.equal(a.int_repr(), b.int_repr())
    if not b.dtype.is_floating_point:
        return a.dtype == b.dtype and torch.equal(a, b)
    return a.dtype == b.dtype and same_bits(a, b)


@pytest.mark.parametrize("qscheme,dtype,decomposed,quant_range", CASES)
@pytest.mark.parametrize("kind", ["Linear", "Conv2d"])
def test_matches_torch_reference_bitwise(kind, qscheme, dtype, decomposed, quant_range):
    float_mod, x = _float_module(kind)
    qp = _qparams(qscheme, dtype, decomposed, quant_range)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = getattr(R, kind).from_float(float_mod, qp)
        ours = getattr(rqt.nn.reference, kind).from_float(float_mod, qp)
        assert type(ours) is getattr(rqt.nn.reference, kind)
        assert isinstance(ours, getattr(R, kind))
        assert _quantized_equal(ours.get_quantized_weight(), theirs.get_quantized_weight())
        assert same_bits(ours.get_weight(), theirs.get_weight())
        assert same_bits(ours(x), theirs(x))
        # state_dict carries qscheme, dtype, scale, zero point, axis (not is_decomposed/ranges)
        fresh = getattr(rqt.nn.reference, kind).from_float(
            float_mod, _qparams(torch.per_tensor_affine, torch.quint8, decomposed, quant_range))
        fresh.load_state_dict(ours.state_dict())
        assert fresh.weight_qscheme == qscheme and fresh.weight_dtype == dtype
        assert same_bits(fresh.get_weight(), theirs.get_weight())


def test_quint4x2_per_channel_get_weight_matches_torch():
    float_mod, _ = _float_module("Linear")
    qp = _qparams(torch.per_channel_affine_float_qparams, torch.quint4x2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = R.Linear.from_float(float_mod, qp)
        ours = rqt.nn.reference.Linear.from_float(float_mod, qp)
        assert same_bits(ours.get_weight(), theirs.get_weight())
    with pytest.raises(NotImplementedError, match="quint4x2"):
        ours.get_quantized_weight()


def test_unsupported_dtype_raises_like_torch():
    float_mod, _ = _float_module("Linear")
    qp = _qparams(torch.per_tensor_affine, torch.quint4x2)
    ours = rqt.nn.reference.Linear.from_float(float_mod, qp)
    with pytest.raises(ValueError, match="Unsupported dtype and qscheme"):
        ours.get_weight()
