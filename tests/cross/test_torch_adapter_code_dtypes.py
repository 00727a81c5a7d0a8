"""refquant_torch's reference modules with decomposed weight qparams against torch's, bit for bit,
where torch's quantize op names a code dtype wider than the range: torch quantizes into the
integer representation of the weight dtype (int32 for qint32, whatever quant_min / quant_max), so
a NaN weight, or 0 * inf with a subnormal scale, becomes INT32_MIN in the codes and in
``get_weight``."""

import warnings

import pytest

torch = pytest.importorskip("torch")
import refquant_torch as rqt  # noqa: E402

R = torch.ao.nn.quantized.reference
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

NAN, INF = float("nan"), float("inf")
WEIGHT = [[NAN, 0.0, 1e30, -0.5, -0.0], [0.25, INF, -INF, 3.0, 1e-45]]


def _decomposed_ops():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization.fx import _decomposed  # noqa: F401  (registers the ops)


def _bits(t):
    return t.view(torch.int32) if t.dtype == torch.float32 else t


@pytest.mark.parametrize("dtype, quant_range", [
    (torch.qint32, (-8, 7)), (torch.qint32, (-(2**15), 2**15 - 1)), (torch.qint32, (0, 255)),
    (torch.qint8, (-8, 7)), (torch.quint8, (0, 15)),
])
@pytest.mark.parametrize("qscheme, scale, zero_point", [
    (torch.per_tensor_affine, 1e-40, 0),
    (torch.per_tensor_affine, 0.5, 2),
    (torch.per_channel_affine, [1e-40, 0.5], [0, 2]),
])
def test_decomposed_weight_codes_in_the_weight_dtype(dtype, quant_range, qscheme, scale, zero_point):
    _decomposed_ops()
    lin = torch.nn.Linear(5, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(WEIGHT))
    qp = dict(qscheme=qscheme, dtype=dtype, is_decomposed=True, quant_min=quant_range[0],
              quant_max=quant_range[1], scale=scale, zero_point=zero_point)
    if qscheme == torch.per_channel_affine:
        qp.update(scale=torch.tensor(scale), zero_point=torch.tensor(zero_point, dtype=torch.int32),
                  axis=0)
    theirs, ours = R.Linear.from_float(lin, qp), rqt.nn.reference.Linear.from_float(lin, qp)
    tq, oq = theirs.get_quantized_weight(), ours.get_quantized_weight()
    assert oq.dtype == tq.dtype and torch.equal(oq, tq), (oq.tolist(), tq.tolist())
    tw, ow = theirs.get_weight(), ours.get_weight()
    assert ow.dtype == tw.dtype and torch.equal(_bits(ow), _bits(tw)), (ow.tolist(), tw.tolist())


def test_the_reproduction():
    _decomposed_ops()
    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[NAN, 0.0]]))
    qp = dict(qscheme=torch.per_tensor_affine, dtype=torch.qint32, is_decomposed=True,
              quant_min=-8, quant_max=7, scale=1e-40, zero_point=0)
    assert rqt.nn.reference.Linear.from_float(lin, qp).get_quantized_weight().tolist() == \
        [[-(2**31), -(2**31)]]


def test_per_channel_get_weight_wraps_in_int32():
    _decomposed_ops()
    lin = torch.nn.Linear(1, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[NAN]]))
    qp = dict(qscheme=torch.per_channel_affine, dtype=torch.qint32, is_decomposed=True,
              quant_min=-8, quant_max=7, scale=torch.tensor([1.0]),
              zero_point=torch.tensor([1], dtype=torch.int32), axis=0)
    theirs = R.Linear.from_float(lin, qp).get_weight()
    assert theirs.tolist() == [[2.0**31]]  # INT32_MIN - 1 wraps to INT32_MAX
    assert rqt.nn.reference.Linear.from_float(lin, qp).get_weight().tolist() == [[2.0**31]]
