"""Convention rows for peer libraries (aimet, brevitas, tflite, modelopt), registered on import.

None of these packages installs on this CPU-only machine without a CUDA torch (see
shared/research/peers.md), so each row is tested against its formula as written there
(tests/golden/test_peers.py emulates it with NumPy float32 operations).

Known limits of the knobs, stated rather than approximated:

- Signed zeros follow the formulas: Brevitas' ``rne(x / s + z)`` is ``-0.0`` for a small negative
  ``x`` with ``z = 0`` and so is its fake-quantized output (reproduced); AIMET's ``rne(x / s) + z``
  adds ``+0`` and gives ``+0.0``.
- ModelOpt forms the multiplier as ``f32(qmax / amax)`` and dequantizes by dividing by it; no knob
  expresses either, so using the ``modelopt`` row raises NotImplementedError.

>>> import refquant as rq
>>> rq.conventions.get("tflite").rounding
'half_away'
>>> sorted(n for n in rq.conventions.names() if n in ("aimet", "brevitas", "tflite", "modelopt"))
['aimet', 'brevitas', 'modelopt', 'tflite']
"""

from __future__ import annotations

from dataclasses import dataclass

from .conventions import Convention, register


@dataclass(frozen=True)
class _Inexpressible(Convention):
    """A row whose arithmetic the knobs cannot express: listed and documented, but running it
    raises NotImplementedError naming what is missing."""

    missing: str = ""

    def resolve(self, **facts):
        raise NotImplementedError(f"convention {self.name!r} cannot be reproduced: {self.missing}")


register(Convention(
    name="aimet",
    formula="q = clamp(rne(x / s) + z, qmin, qmax) with x / s in promote(x, s) (float32 for float32); "
    "AIMET offset = -z; fake = f32(f32(q - z) * f32(s)); NaN stays NaN in fake (no integer code)",
    backend="aimet-torch 2.x aimet_torch.quantization.affine.quantize / quantize_dequantize with a "
    "learnable scale or block_size (the no-grad per-tensor QDQ dispatches to torch.fake_quantize)",
    evidence="tests/golden/test_peers.py (formula B of shared/research/peers.md section 3)",
    quotient="divide",
    compute="promote",
    dequant="float32",
))

register(Convention(
    name="brevitas",
    formula="q = clamp(rne(f32(x / s) + z), qmin, qmax): the zero point is added before rounding, "
    "each op in promote(x, s); fake = f32(f32(q - z) * f32(s)), -0.0 for a small negative x with "
    "z = 0; NaN stays NaN in fake",
    backend="brevitas 0.13 brevitas.core.quant.IntQuant (to_int and forward)",
    evidence="tests/golden/test_peers.py (formula C of shared/research/peers.md section 3)",
    quotient="divide",
    compute="promote",
    zero_point="before_round",
    dequant="float32",
))

register(Convention(
    name="tflite",
    formula="q = clamp(round_half_away(f32(x / f32(s))) + z, qmin, qmax) (TfLiteRound = std::round); "
    "real = f32(f32(q - z) * f32(s)); float32 input only; NaN has no defined code",
    backend="TFLite reference kernels (reference/quantize.h AffineQuantize, PerChannelQuantize); "
    "the optimized NEON path rounds ties to even and is not this row",
    evidence="tests/golden/test_peers.py (golden-specs.md section 6)",
    quotient="divide",
    compute="float32",
    rounding="half_away",
    dequant="float32",
    input_dtypes=("float32",),
))

register(_Inexpressible(
    name="modelopt",
    formula="m = f32(qmax / amax); q = clamp(rne(f32(x * m)), qmin, qmax); fake = f32(q / m) "
    "(dequantized by division), amax based, symmetric (z = 0)",
    backend="NVIDIA ModelOpt 0.47 tensor_quant.fake_tensor_quant (CPU path)",
    evidence="formula only (shared/research/peers.md section 3); not runnable",
    quotient="reciprocal",
    compute="float32",
    missing="ModelOpt's multiplier f32(qmax / amax) and its dequantization by division q / m "
    "are not expressible with the convention knobs",
))
