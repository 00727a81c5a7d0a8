"""Generate the research notebooks (outputs stripped): ``python notebooks/_build.py``.

Each notebook is a list of cells: strings starting with ``#md`` are Markdown, the rest code.
Edit the cells here, not the .ipynb files.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

SETUP = """\
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import refquant as rq"""


def guard(*names: str) -> str:
    """A cell that stops the notebook with a clear message when a feature is missing."""
    checks = "\n".join(
        f"    if not _has({n!r}):\n"
        f"        raise ImportError('this notebook needs {n}, which is not importable yet')"
        for n in names
    )
    return f"""\
import importlib

def _has(path):
    mod, _, attr = path.partition(":")
    try:
        m = importlib.import_module(mod)
        return not attr or hasattr(m, attr)
    except ImportError:
        return False

if True:
{checks}"""


WHICH_INT8 = [
    """#md # Which int8 formula does your library use?

Every backend computes `q = clamp(round(x / s) + z, qmin, qmax)`, yet they disagree on a few
inputs: how `x / s` is formed (a true division, or a multiplication by a float32 reciprocal), where
the zero point is added, how ties round. This notebook runs every registered convention on inputs
that sit exactly on, or within an ulp of, a tie, and then asks `rq.identify` which formula torch's
output follows.""",
    SETUP,
    """#md ## Exact ties: scale 0.25

With `s = 0.25` the quotient `x / s` is computed exactly by every backend, so only the tie rule
and the place of the zero point matter.""",
    """s, z = 0.25, 3
x = np.float32([-0.625, -0.375, -0.125, 0.125, 0.375, 0.625, 0.875])
rows = {}
for name in rq.conventions.names():
    try:
        rows[name] = rq.quantize(x, s, z, qmin=-128, qmax=127, convention=name)
    except (NotImplementedError, ValueError) as e:
        print(f"{name:22s} skipped: {str(e)[:70]}")
print("x / s".ljust(22), (x / s).tolist())
for name, q in rows.items():
    print(name.ljust(22), q.tolist())""",
    """#md `tflite` rounds ties away from zero; `brevitas` and `torch.quantize` (FBGEMM) add the
zero point *before* rounding, so with an odd `z` the tie goes to a different even number.""",
    """#md ## Near ties: scale 0.1

`0.1` is not a float32; `x = (k + 1/2) * s` rounded to float32 lands just above or below the tie.
The exact quotient then rounds one way, while `x * f32(1/s)` in float32 can land on the tie, or
past it.""",
    """s = float(np.float32(0.1))  # the float32 nearest 0.1, so every backend sees the same scale
x = ((np.arange(-300, 300) + 0.5) * s).astype(np.float32)
exact = rq.fake_quantize(x, s, 0, qmin=-128, qmax=127)
diff = {}
for name in rq.conventions.names():
    try:
        y = rq.fake_quantize(x, s, 0, qmin=-128, qmax=127, convention=name)
    except (NotImplementedError, ValueError):
        continue
    diff[name] = int(np.sum(y.view(np.int32) != exact.view(np.int32)))
fig, ax = plt.subplots(figsize=(8, 3))
ax.barh(list(diff), list(diff.values()))
ax.set_xlabel(f"elements differing from exact (of {x.size} near-ties)")
ax.set_title("fake_quantize, int8, s = 0.1")
fig.tight_layout()
diff""",
    """#md ## Identify torch's formula

We run torch's own `fake_quantize_per_tensor_affine` and ask which conventions reproduce it bit
for bit, and what explains its differences from `exact`.""",
    """try:
    import torch
except ImportError:
    torch = None
    print("torch is not installed: skipping the identification")
if torch is not None:
    y_torch = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), s, 0, -128, 127).numpy()
    r = rq.identify(x, y_torch, s, 0, qmin=-128, qmax=127)
    print(r)""",
    """#md The main cause is *reciprocal vs division*: torch multiplies by
`1.0f / f32(s)` in float32. The `torch.fake_quantize` row of the
[conventions table](../docs/api/conventions.md) reproduces it exactly.""",
]

UNIFORM_APOT_PACT = [
    """#md # Uniform vs APoT vs PACT

Signal-to-quantization-noise ratio `SQNR = 10 log10(E[x^2] / E[(x - x_hat)^2])` against bit-width
for three weight distributions: Gaussian, Laplacian, and a heavy-tailed Student-t (3 degrees of
freedom), which is closer to trained weights with outliers.

* **uniform**: symmetric int grid, scale from max |x| (`rq.fake_quantize`);
* **PACT** (signed): uniform grid clipped at a level `alpha` (here the best of a small search);
* **APoT** (signed, k = 2): additive powers of two, clipped at the same kind of `alpha`.""",
    SETUP,
    guard("refquant.apot:fake_quantize", "refquant.pact:fake_quantize"),
    """rng = np.random.default_rng(0)
n = 20_000
dists = {
    "Gaussian": rng.standard_normal(n),
    "Laplacian": rng.laplace(size=n),
    "Student-t (3)": rng.standard_t(3, size=n),
}
dists = {k: (v / v.std()).astype(np.float32) for k, v in dists.items()}
BITS = range(2, 9)

def sqnr(x, y):
    x, y = x.astype(np.float64), y.astype(np.float64)
    return 10 * np.log10(np.mean(x**2) / np.mean((x - y) ** 2))

def uniform(x, b):
    qmax = 2 ** (b - 1) - 1
    return rq.fake_quantize(x, float(np.abs(x).max()) / qmax, 0, qmin=-qmax, qmax=qmax)

ALPHAS = np.linspace(0.5, 8.0, 16)

def best(f, x):
    return max(sqnr(x, f(x, a)) for a in ALPHAS)

def pact(x, b):
    return best(lambda x, a: rq.pact.fake_quantize(x, a, bits=b, signed=True), x)

def apot(x, b):
    k = min(2, b - 1)
    return best(lambda x, a: rq.apot.fake_quantize(x, a, bits=b, k=k, signed=True), x)

results = {
    d: {
        "uniform (max)": [sqnr(x, uniform(x, b)) for b in BITS],
        "PACT": [pact(x, b) for b in BITS],
        "APoT": [apot(x, b) for b in BITS],
    }
    for d, x in dists.items()
}
{d: {k: round(float(v[2]), 1) for k, v in c.items()} for d, c in results.items()}  # SQNR (dB), 4 bits""",
    """fig, axes = plt.subplots(1, 3, figsize=(13, 3.5), sharey=True)
for ax, (d, curves) in zip(axes, results.items()):
    for label, ys in curves.items():
        ax.plot(list(BITS), ys, marker="o", label=label)
    ax.set_title(d)
    ax.set_xlabel("bits")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("SQNR (dB)")
axes[0].legend()
fig.tight_layout()""",
    """#md ## Level sets

At 4 bits, APoT puts more levels near zero than the uniform grid, and fewer than plain powers of
two (k = b).""",
    """fig, ax = plt.subplots(figsize=(9, 2.5))
sets = {
    "uniform": np.arange(-7, 8) / 7,
    "APoT k=2": rq.apot.levels(4, 2, signed=True),
    "PoT k=3": rq.apot.levels(4, 3, signed=True),
}
for i, (label, lv) in enumerate(sets.items()):
    ax.plot(lv, np.full(len(lv), i), "|", markersize=18)
ax.set_yticks(range(len(sets)), list(sets))
ax.set_xlabel("level (alpha = 1)")
ax.set_title("4-bit signed level sets")
fig.tight_layout()
{k: len(v) for k, v in sets.items()}""",
    """#md Heavy tails hurt the max-scaled uniform grid most: one outlier stretches the step for every
other weight. Clipping (PACT, APoT) recovers most of it; APoT's denser levels near zero help most
at low bit-widths on peaked distributions.""",
]

QAT = [
    """#md # QAT with refquant_torch

A two-layer MLP on a small regression task, trained three ways:

* **PACT** on the hidden activations (learned clipping level `alpha`),
* **LSQ** on the hidden activations (`LearnableFakeQuantize`, learned scale and zero point),
* **APoT** on the first layer's weights (learned `alpha`).

All quantizers are 4-bit and run refquant's exact arithmetic through `refquant_torch`.""",
    SETUP,
    guard("torch", "refquant_torch.nn:PACT", "refquant_torch.nn:LearnableFakeQuantize",
          "refquant_torch.nn:APoTFakeQuantize"),
    """import torch
import refquant_torch as rqt

torch.manual_seed(0)
X = torch.randn(512, 8)
Y = (X @ torch.randn(8, 1)).tanh() + 0.05 * torch.randn(512, 1)

class Net(torch.nn.Module):
    def __init__(self, act_q, weight_q):
        super().__init__()
        self.l1, self.l2 = torch.nn.Linear(8, 32), torch.nn.Linear(32, 1)
        self.act_q, self.weight_q = act_q, weight_q

    def forward(self, x):
        h = torch.nn.functional.linear(x, self.weight_q(self.l1.weight), self.l1.bias)
        return self.l2(self.act_q(torch.relu(h)))

def make(kind):
    ident = torch.nn.Identity()
    if kind == "PACT":
        return Net(rqt.nn.PACT(bits=4, alpha=1.0), ident), "act_q.alpha"
    if kind == "LSQ":
        q = rqt.nn.LearnableFakeQuantize(quant_min=0, quant_max=15, scale=0.2, zero_point=0.0,
                                         use_grad_scaling=True)
        q.enable_param_learning()  # learn scale and zero point (not torch's static estimate)
        return Net(q, ident), "act_q.scale"
    return Net(ident, rqt.nn.APoTFakeQuantize(bits=4, k=2, alpha=1.0, signed=True)), "weight_q.alpha"

history = {}
for kind in ["PACT", "LSQ", "APoT"]:
    torch.manual_seed(0)
    model, pname = make(kind)
    param = dict(model.named_parameters())[pname]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses, values = [], []
    for step in range(120):
        opt.zero_grad()
        loss = torch.mean((model(X) - Y) ** 2)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        values.append(param.detach().flatten()[0].item())
    history[kind] = (pname, losses, values)
    print(f"{kind:5s} final loss {losses[-1]:.4f}  {pname} = {values[-1]:.4f}")""",
    """fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
for kind, (pname, losses, values) in history.items():
    a.plot(losses, label=kind)
    b.plot(values, label=f"{kind}: {pname}")
a.set_yscale("log"); a.set_xlabel("step"); a.set_ylabel("MSE loss"); a.legend()
b.set_xlabel("step"); b.set_ylabel("learned value"); b.legend()
fig.tight_layout()""",
    """#md PACT's alpha moves only while activations are clipped (its gradient is 1 above alpha and
0 below); LSQ's scale and APoT's alpha also learn from the rounding error of every element inside
the range (see the derivations on the method pages of the docs).""",
]

GOLDEN_F16 = [
    """#md # A golden check: torch's fake quant over every float16 input

We run `torch.fake_quantize_per_tensor_affine` on all 65,536 float16 bit patterns and compare
each output, bit for bit, with refquant's `exact` definition and with the `torch.fake_quantize`
convention.""",
    SETUP,
    """try:
    import torch
except ImportError:
    torch = None
    print("torch is not installed: using the torch.fake_quantize convention as the candidate")

s, z, qmin, qmax = 0.1, 0, -128, 127
x = np.arange(2**16, dtype=np.uint16).view(np.float16)
if torch is not None:
    y = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), s, z, qmin, qmax).numpy()
else:
    y = rq.fake_quantize(x, s, z, qmin=qmin, qmax=qmax, convention="torch.fake_quantize")
exact = rq.fake_quantize(x, s, z, qmin=qmin, qmax=qmax)
model = rq.fake_quantize(x, s, z, qmin=qmin, qmax=qmax, convention="torch.fake_quantize")
nan = np.isnan(x)
bits = lambda a: a.view(np.uint16)
differs = (bits(y) != bits(exact)) & ~nan
print("inputs:", x.size, "NaN inputs:", int(nan.sum()))
print("differ from exact (non-NaN):", int(differs.sum()))
print("differ from the torch.fake_quantize convention:", int(np.sum(bits(y) != bits(model))))
print("NaN maps to", np.unique(y[nan]), "(exact keeps NaN)")""",
    """#md ## Where it differs

Each differing input is plotted at its value, against the fractional part of the exact quotient
`x / s`. They all sit next to a half-integer: torch's float32 product `x * f32(1/s)` rounds onto
(or across) the tie that the exact quotient misses.""",
    """from fractions import Fraction

xd = x[differs].astype(np.float64)
q_exact = np.round(xd / s)
frac = np.array([float(Fraction(float(v)) / Fraction(s) % 1) for v in xd])
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
a.scatter(xd, frac, s=8)
a.axhline(0.5, color="grey", lw=0.5)
a.set_xlabel("x (float16)"); a.set_ylabel("frac(x / s), exact"); a.set_title("differing inputs")
a.set_ylim(0, 1)
step = (y[differs].astype(np.float64) - exact[differs].astype(np.float64)) / s
b.hist(np.round(step), bins=np.arange(-2.5, 3))
b.set_xlabel("torch - exact (in steps)"); b.set_title("size of the difference")
fig.tight_layout()""",
    """#md ## Why, in one call

`rq.identify` runs every convention over all the inputs and names the rows that reproduce `y`;
the differences from `exact` are explained only by changes that, recomputed, reproduce them (here
NaN's code and the float32 reciprocal). `rq.golden.sweep` does the whole comparison (it is what
the `refquant sweep` command runs) and its summary is the same `identify` over every pattern, so
the two cells below give the same answer.""",
    """r = rq.identify(x, y, s, z, qmin=qmin, qmax=qmax)
print(r)""",
    """def candidate(v):
    if torch is None:
        return rq.fake_quantize(v, s, z, qmin=qmin, qmax=qmax, convention="torch.fake_quantize")
    return torch.fake_quantize_per_tensor_affine(torch.from_numpy(v), s, z, qmin, qmax).numpy()

res = rq.golden.sweep(candidate, s, z, qmin=qmin, qmax=qmax, dtype="float16")
print(res.mismatches, "of", res.total, "patterns differ from exact")
print(res.diagnosis)""",
]

EAGER_QAT = [
    """#md # Eager QAT in one call: `rqt.prepare_qat`

A small CNN on a synthetic 4-class image task. `rqt.prepare_qat(model, config)` swaps every
`Linear` and `Conv2d` for `rqt.nn.QuantLinear` / `QuantConv2d` (same Parameters, quantizers built
in); we train it with four configs, compare with the float model, check that the default config is
torch.ao's x86 QAT bit for bit, then `rqt.convert` it to reference modules and compile it.""",
    SETUP,
    guard("torch", "refquant_torch:prepare_qat", "refquant_torch:convert",
          "refquant_torch:QATConfig"),
    """import copy, warnings
import torch
import refquant_torch as rqt

torch.manual_seed(0)
N = 96
Y = torch.randint(0, 4, (N,))
grid = torch.linspace(-1, 1, 8)
pattern = torch.stack([grid.view(1, -1).expand(8, 8), grid.view(-1, 1).expand(8, 8),
                       -grid.view(1, -1).expand(8, 8), -grid.view(-1, 1).expand(8, 8)])
X = pattern[Y].unsqueeze(1) + 0.8 * torch.randn(N, 1, 8, 8)

def float_model():
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, stride=2), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 3, 4))

def train(model, steps=30):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    accuracy = []
    for step in range(steps):
        opt.zero_grad()
        logits = model(X)
        torch.nn.functional.cross_entropy(logits, Y).backward()
        opt.step()
        accuracy.append((logits.argmax(1) == Y).float().mean().item())
    return accuracy""",
    """#md ## Four configs

* the default: int8 per-channel symmetric weights, int8 per-tensor affine outputs, torch's fake
  quant arithmetic (torch.ao's x86 QAT qconfig);
* `QATConfig.affine(bits=4, convention="exact")`: 4 bits, exact arithmetic;
* `QATConfig.lsq(bits=4)`: learned scales and zero points (LSQ; the first batch sets them);
* `QATConfig.pact(bits=4)`: PACT on the outputs (learned clipping level), 4-bit weights;
* `QATConfig.apot(bits=4, k=2)`: additive powers-of-two levels on weights and outputs.""",
    """configs = {
    "float": None,
    "default (int8)": rqt.QATConfig(),
    "affine 4-bit exact": rqt.QATConfig.affine(bits=4, convention="exact"),
    "LSQ 4-bit": rqt.QATConfig.lsq(bits=4),
    "PACT 4-bit": rqt.QATConfig.pact(bits=4),
    "APoT 4-bit": rqt.QATConfig.apot(bits=4, k=2),
}
curves, models = {}, {}
for name, config in configs.items():
    model = float_model()
    if config is not None:
        model = rqt.prepare_qat(model, config)
        if name.startswith("LSQ"):
            model(X)  # the observers set the first scales, then learning takes over
            for m in model.modules():
                if isinstance(m, rqt.nn.LearnableFakeQuantize):
                    m.enable_param_learning()
    curves[name] = train(model)
    models[name] = model
    print(f"{name:20s} final training accuracy {curves[name][-1]:.3f}")""",
    """fig, ax = plt.subplots(figsize=(7, 3.5))
for name, acc in curves.items():
    ax.plot(acc, label=name)
ax.set_xlabel("step"); ax.set_ylabel("training accuracy"); ax.legend(fontsize=8)
fig.tight_layout()""",
    """#md ## The default config is torch.ao's x86 QAT, bit for bit

The same float model, prepared by hand with torch.ao's QAT modules and the x86 qconfig (its
`FakeQuantize` form), trained the same way: every output and every weight equal.""",
    """import torch.ao.nn.qat as nnqat

def torch_ao(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qconfig = torch.ao.quantization.get_default_qat_qconfig("x86", version=0)
        for name, child in list(model.named_children()):
            cls = {torch.nn.Linear: nnqat.Linear, torch.nn.Conv2d: nnqat.Conv2d}.get(type(child))
            if cls is not None:
                child.qconfig = qconfig
                setattr(model, name, torch.nn.Sequential(cls.from_float(child), qconfig.activation()))
    return model

ours, theirs = rqt.prepare_qat(float_model()), torch_ao(float_model())
train(ours, 10), train(theirs, 10)
same = all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
print("weights after 10 steps equal:", same, "| outputs equal:", torch.equal(ours(X), theirs(X)))""",
    """#md ## Convert, compile, export

`rqt.convert` turns each layer into a reference module (`rqt.nn.reference.Linear` / `Conv2d`,
the weight's learned qparams) between its frozen activation quantizers. Every module compiles
with `fullgraph=True` and exports.""",
    """model = models["default (int8)"].eval()
converted = rqt.convert(copy.deepcopy(model))
print(converted[0])
with torch.no_grad():
    agree = (converted(X).argmax(1) == model(X).argmax(1)).float().mean().item()
print("converted model agrees with the QAT model on", agree)
compiled = torch.compile(converted, fullgraph=True, backend="aot_eager")
with torch.no_grad():
    print("compiled == eager:", torch.equal(compiled(X), converted(X)))
program = torch.export.export(converted, (X[:2],))
print("exported graph nodes:", len(program.graph.nodes))""",
]

NOTEBOOKS = {
    "which_int8_formula.ipynb": WHICH_INT8,
    "uniform_vs_apot_vs_pact.ipynb": UNIFORM_APOT_PACT,
    "qat_with_refquant_torch.ipynb": QAT,
    "golden_check_float16.ipynb": GOLDEN_F16,
    "eager_qat.ipynb": EAGER_QAT,
}


def build(cells: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for c in cells:
        if c.startswith("#md"):
            nb.cells.append(nbformat.v4.new_markdown_cell(c[3:].strip()))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(c))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
    return nb


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(cells), HERE / name)


if __name__ == "__main__":
    main()
