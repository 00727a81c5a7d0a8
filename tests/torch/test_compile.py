"""Every module under torch.compile(fullgraph=True) and torch.export: outputs and x-gradients
bit-equal to the same module run eagerly, state updates equal, toggles honoured after compile,
exported programs run after torch.export.save / load.

Tensors are small and the compile backend is ``aot_eager`` (dynamo and AOT autograd trace the
module exactly as for inductor; inductor itself only adds code generation), so that the file
stays cheap on a loaded CI machine."""

import copy
import io

import pytest

torch = pytest.importorskip("torch")
from torch.ao.quantization import MovingAveragePerChannelMinMaxObserver  # noqa: E402

import refquant_torch as rqt  # noqa: E402

from .test_functional import assert_same_bits  # noqa: E402

BACKEND = "aot_eager"


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles new module instances of the same classes: start from empty caches so
    that dynamo's per-code recompile limit counts one test's recompiles only."""
    torch._dynamo.reset()
    yield


def _ref_qparams(per_channel):
    if per_channel:
        return {"qscheme": torch.per_channel_affine, "dtype": torch.qint8, "axis": 0,
                "scale": torch.tensor([0.011, 0.02, 0.013, 0.0171]),
                "zero_point": torch.tensor([0, 1, -2, 3], dtype=torch.int32)}
    return {"qscheme": torch.per_tensor_affine, "dtype": torch.quint8, "scale": 0.0123,
            "zero_point": 3}


def _aimet(cls, shape):
    m = cls(shape, 8, False)
    m.set_range(-1.5, 2.0)
    return m


def _sized(fake_quant):
    fake_quant.size_channels(3)
    return fake_quant


torch.manual_seed(0)
_LINEAR, _CONV = torch.nn.Linear(3, 4), torch.nn.Conv2d(3, 4, 1)

MODULES = {
    "FakeQuantize": lambda: rqt.nn.FakeQuantize(quant_min=0, quant_max=255),
    "FakeQuantize-per-channel": lambda: rqt.nn.FakeQuantize(
        observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=1),
    "FakeQuantize-per-channel-sized": lambda: _sized(rqt.nn.FakeQuantize(
        observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=1)),
    "LearnableFakeQuantize-per-channel": lambda: rqt.nn.LearnableFakeQuantize(
        observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=1, channel_len=3),
    "QuantLinear": lambda: rqt.nn.QuantLinear(3, 4, output_quant=rqt.QATConfig().activation()),
    "QuantConv2d": lambda: rqt.nn.QuantConv2d(3, 4, 1, output_quant=rqt.QATConfig().activation()),
    "FakeQuantize-exact": lambda: rqt.nn.FakeQuantize(quant_min=0, quant_max=15, convention="exact"),
    "LearnableFakeQuantize-static": lambda: rqt.nn.LearnableFakeQuantize(quant_min=0, quant_max=255),
    "LearnableFakeQuantize-learning": lambda: rqt.nn.LearnableFakeQuantize(
        quant_min=0, quant_max=15, scale=0.2, zero_point=3.0, use_grad_scaling=True,
        lsq_convention="torch.learnable").enable_param_learning(),
    "PACT": lambda: rqt.nn.PACT(bits=4, alpha=1.5),
    "APoTFakeQuantize": lambda: rqt.nn.APoTFakeQuantize(bits=4, k=2, alpha=1.5),
    "MinMaxQuant": lambda: rqt.nn.MinMaxQuant(4),
    "PACTQuant": lambda: rqt.nn.PACTQuant(4, alpha=1.5),
    "Quantize": lambda: _aimet(rqt.Quantize, ()),
    "Quantize-per-channel": lambda: _aimet(rqt.Quantize, (3,)),
    "QuantizeDequantize": lambda: _aimet(rqt.QuantizeDequantize, ()),
    "QuantizeDequantize-per-channel": lambda: _aimet(rqt.QuantizeDequantize, (3,)),
    "reference.Linear": lambda: rqt.nn.reference.Linear.from_float(_LINEAR, _ref_qparams(True)),
    "reference.Linear-per-tensor": lambda: rqt.nn.reference.Linear.from_float(
        _LINEAR, _ref_qparams(False)),
    "reference.Conv2d": lambda: rqt.nn.reference.Conv2d.from_float(_CONV, _ref_qparams(True)),
}


def _input(name, seed):
    gen = torch.Generator().manual_seed(seed)
    shape = (2, 3, 2, 2) if "Conv2d" in name else (4, 3)
    return (torch.randn(shape, generator=gen) * 1.3).round(decimals=2)


def _plain(t):
    return t.as_subclass(torch.Tensor) if isinstance(t, torch.Tensor) else t


def _step(module, x, train):
    x = x.clone().requires_grad_(train)
    y = _plain(module(x))
    if train:
        y.sum().backward()
    return y.detach(), x.grad


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(MODULES))
def test_compile_fullgraph_equals_eager(name, train):
    eager = MODULES[name]().train(train)
    if name == "FakeQuantize-per-channel":
        eager(_input(name, 9))  # per-channel observers size their buffers on the first batch
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, fullgraph=True, backend=BACKEND)
    for seed in range(2):
        x = _input(name, seed)
        y_e, g_e = _step(eager, x, train)
        y_c, g_c = _step(compiled, x, train)
        assert_same_bits(y_c, y_e)
        if train:
            assert_same_bits(g_c, g_e)
    for (key, a), (_, b) in zip(eager.state_dict().items(), compiled_module.state_dict().items(),
                                strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(_plain(a), _plain(b)), key
        else:
            assert a == b, key


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(MODULES))
def test_export_runs_after_save_and_load(name, train):
    module = MODULES[name]().train(train)
    x = _input(name, 0)
    if name == "FakeQuantize-per-channel":
        module(x)  # per-channel observers size their buffers on the first batch
    reference = copy.deepcopy(module)
    program = torch.export.export(module, (x,))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    for seed in range(2):
        x = _input(name, seed)
        with torch.no_grad():
            assert_same_bits(loaded(x), _plain(reference(x)))


@pytest.mark.parametrize("observer", ["MovingAveragePerChannelMinMaxObserver",
                                      "PerChannelMinMaxObserver"])
def test_sized_per_channel_fake_quantize_equals_torch_ao_from_the_first_batch(observer):
    """size_channels() before any batch, then compiled: outputs, qparams and statistics equal
    torch.ao's FakeQuantize (which sizes its observer on the first batch) batch after batch."""
    kwargs = {"observer": getattr(torch.ao.quantization, observer), "quant_min": -128,
              "quant_max": 127, "dtype": torch.qint8, "qscheme": torch.per_channel_symmetric,
              "ch_axis": 1}
    theirs = torch.ao.quantization.FakeQuantize(**kwargs)
    ours = rqt.nn.FakeQuantize(**kwargs)
    ours.size_channels(3)
    compiled = torch.compile(ours, fullgraph=True, backend=BACKEND)
    for seed in range(3):
        x = _input("", seed) * (seed + 1)
        assert_same_bits(compiled(x), theirs(x))
        assert_same_bits(ours.scale, theirs.scale)
        assert torch.equal(ours.zero_point, theirs.zero_point)
        for name in ("min_val", "max_val"):
            assert_same_bits(getattr(ours.activation_post_process, name),
                             getattr(theirs.activation_post_process, name))


def test_per_channel_observer_asks_for_one_eager_batch():
    module = MODULES["FakeQuantize-per-channel"]()
    with pytest.raises(Exception, match="run one batch eagerly"):
        torch.compile(module, fullgraph=True, backend=BACKEND)(_input("", 0))


def test_fake_quantize_toggles_after_compile():
    eager = rqt.nn.FakeQuantize(quant_min=0, quant_max=255)
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, fullgraph=True, backend=BACKEND)
    x = _input("", 0)
    compiled(x)
    scale = compiled_module.scale.clone()
    compiled_module.disable_observer()
    compiled(x * 5)
    assert torch.equal(compiled_module.scale, scale)            # observer off: qparams kept
    torch.ao.quantization.enable_observer(compiled_module)
    compiled(x * 5)
    assert not torch.equal(compiled_module.scale, scale)        # on again: they move
    compiled_module.disable_fake_quant()
    assert torch.equal(compiled(x), x)                          # fake quant off: identity
    compiled_module.enable_fake_quant()
    assert not torch.equal(compiled(x), x)
    # toggles in a loaded state_dict reach the compiled module too
    eager.disable_fake_quant()
    compiled_module.load_state_dict(eager.state_dict())
    assert torch.equal(compiled(x), x)


def test_learnable_toggles_after_compile():
    module = rqt.nn.LearnableFakeQuantize(quant_min=0, quant_max=255)
    compiled = torch.compile(module, fullgraph=True, backend=BACKEND)
    x = _input("", 0)
    compiled(x)
    scale = module.scale.detach().clone()
    module.enable_param_learning()                              # observer off, learning on
    y = compiled(x * 5)
    assert torch.equal(module.scale.detach(), scale)
    y.sum().backward()
    assert module.scale.grad is not None
    module.enable_static_observation()                          # fake quant off
    assert torch.equal(compiled(x), x)


def test_minmax_quant_train_eval_after_compile():
    module = rqt.nn.MinMaxQuant(4)
    compiled = torch.compile(module, fullgraph=True, backend=BACKEND)
    x = _input("", 0)
    compiled(x)
    assert module.minmax.item() == x.abs().max().item()
    module.eval()
    compiled(x * 3)                                             # eval: the range is kept
    assert module.minmax.item() == x.abs().max().item()


def test_inductor_fake_quantize_step():
    """One module through the default backend (inductor), forward and backward."""
    eager = rqt.nn.FakeQuantize(quant_min=0, quant_max=255)
    compiled = torch.compile(copy.deepcopy(eager), fullgraph=True)
    x = _input("", 3)
    y_e, g_e = _step(eager, x, True)
    y_c, g_c = _step(compiled, x, True)
    assert_same_bits(y_c, y_e)
    assert_same_bits(g_c, g_e)


def test_exported_program_with_observers_off_runs_in_a_new_process(tmp_path):
    """A prepared model after calibration (observers off) exports to a file that another
    process loads and runs once refquant_torch (which registers the ops) is imported."""
    import subprocess
    import sys

    torch.manual_seed(0)
    model = rqt.prepare_qat(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(),
                                                torch.nn.Linear(4, 2)))
    x = _input("", 0)
    model(x)
    model.apply(torch.ao.quantization.disable_observer)
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(model.eval(), (x,)), path)
    expected = model(x).detach().view(torch.int32).tolist()
    code = ("import torch, refquant_torch\n"
            f"p = torch.export.load({str(path)!r}).module()\n"
            f"x = torch.tensor({x.tolist()!r})\n"
            "print(p(x).view(torch.int32).tolist())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == repr(expected)


@pytest.mark.parametrize("cls", ["Quantize", "QuantizeDequantize"])
def test_aimet_compute_encodings_after_compile(cls):
    """AIMET's compute_encodings() (each call its own range, the union on exit) through a
    compiled module: outputs and the resulting range equal eager's."""
    module = getattr(rqt, cls)((), 8, False)
    eager = copy.deepcopy(module)
    compiled = torch.compile(module, fullgraph=True, backend=BACKEND)
    x = _input("", 0)
    with module.compute_encodings():
        ys = [compiled(x), compiled(x * 2)]
    with eager.compute_encodings():
        ys_e = [eager(x), eager(x * 2)]
    for y, y_e in zip(ys, ys_e, strict=True):
        assert_same_bits(y, _plain(y_e))
    assert torch.equal(module.min, eager.min) and torch.equal(module.max, eager.max)
    assert_same_bits(compiled(x), _plain(eager(x)))


def test_eager_reads_toggle_buffers_written_directly():
    """Eager forward honours a write into the buffers themselves, as torch's modules do."""
    fq = rqt.nn.FakeQuantize(quant_min=0, quant_max=255)
    x = _input("", 0)
    fq(x)
    fq.fake_quant_enabled[0] = 0
    assert torch.equal(fq(x), x)
    fq.fake_quant_enabled[0] = 1
    assert not torch.equal(fq(x), x)
    fq.observer_enabled[0] = 0
    scale = fq.scale.clone()
    fq(x * 3)
    assert torch.equal(fq.scale, scale)
