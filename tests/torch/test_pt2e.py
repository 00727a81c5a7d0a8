"""RefQuantizer end to end: prepare / calibrate / convert, and a refquant-computed reference."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")
from torchao.quantization.pt2e.quantize_pt2e import (  # noqa: E402
    convert_pt2e,
    prepare_pt2e,
    prepare_qat_pt2e,
)

import refquant as rq  # noqa: E402
import refquant_torch as rqt  # noqa: E402
from refquant_torch._bridge import from_numpy, to_numpy  # noqa: E402

qd = torch.ops.quantized_decomposed
_CONV = "torch.decomposed"


def _run_with_refquant(gm, x):
    """Interpret the converted graph, computing every quantize/dequantize node with refquant's
    ``torch.decomposed`` convention and every other node with torch."""
    env = {}

    def arg(a):
        return env[a.name] if isinstance(a, torch.fx.Node) else a

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node.name] = x
        elif node.op == "get_attr":
            obj = gm
            for part in node.target.split("."):
                obj = getattr(obj, part)
            env[node.name] = obj
        elif node.op == "output":
            return env[node.args[0][0].name]
        else:
            args = [arg(a) for a in node.args]
            t = node.target
            if t in (qd.quantize_per_tensor.default, qd.quantize_per_channel.default):
                per_ch = t is qd.quantize_per_channel.default
                v, s, z = args[0], args[1], args[2]
                axis = args[3] if per_ch else None
                lo, hi = args[4 if per_ch else 3], args[5 if per_ch else 4]
                s = to_numpy(s) if per_ch else s
                z = to_numpy(z) if per_ch else z
                codes = rq.quantize(to_numpy(v), s, z, qmin=lo, qmax=hi, axis=axis,
                                    convention=_CONV)
                env[node.name] = from_numpy(codes)
            elif t in (qd.dequantize_per_tensor.default, qd.dequantize_per_channel.default):
                per_ch = t is qd.dequantize_per_channel.default
                q, s, z = args[0], args[1], args[2]
                axis = args[3] if per_ch else None
                s = to_numpy(s) if per_ch else s
                z = to_numpy(z) if per_ch else z
                env[node.name] = from_numpy(rq.dequantize(to_numpy(q).astype(np.int64), s, z,
                                                          axis=axis, convention=_CONV))
            else:
                kwargs = {k: arg(v) for k, v in node.kwargs.items()}
                if node.op == "call_module":
                    t = gm.get_submodule(t)
                elif node.op == "call_method":
                    t = getattr(args.pop(0), t)
                env[node.name] = t(*args, **kwargs)
    raise AssertionError("no output node")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, 3)
        self.lin = torch.nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        return self.lin(torch.relu(self.conv(x)).flatten(1))


@pytest.mark.parametrize("qat", [False, True], ids=["ptq", "qat"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bits,symmetric", [(8, False), (4, True)])
def test_end_to_end_matches_refquant_reference(qat, per_channel, bits, symmetric):
    import refquant_torch.observers as ref_obs

    torch.manual_seed(0)
    model = Net().eval() if not qat else Net().train()
    x = torch.randn(3, 2, 6, 6)
    exported = torch.export.export(model, (x,)).module()
    quantizer = rqt.pt2e.RefQuantizer(bits=bits, symmetric=symmetric, per_channel=per_channel,
                                      is_qat=qat)
    prepared = (prepare_qat_pt2e if qat else prepare_pt2e)(exported, quantizer)
    observers = [m for m in prepared.modules() if isinstance(m, ref_obs._RefStatistics)]
    assert observers, "the refquant observers are in the prepared graph"
    if qat:
        fqs = [m for m in prepared.modules() if isinstance(m, rqt.nn.FakeQuantize)]
        assert fqs and all(f.convention == "torch.fake_quantize" for f in fqs)
        kinds = {type(m).__name__ for m in prepared.modules()}
        assert kinds & {"RefFakeQuantize", "RefPerChannelFakeQuantize"}
    for _ in range(3):
        prepared(torch.randn(3, 2, 6, 6))
    converted = convert_pt2e(prepared)
    targets = {n.target for n in converted.graph.nodes if n.op == "call_function"}
    assert qd.quantize_per_tensor.default in targets
    out = converted(x)
    ref = _run_with_refquant(converted, x)
    assert torch.equal(out.view(torch.int32), ref.view(torch.int32))
    if bits == 8:
        assert (out - model(x)).abs().max() < 0.3  # 8-bit, calibrated on other batches
