"""Convention rows for peer libraries (aimet, brevitas, tflite, modelopt), registered on import.

None of these packages installs on a CPU-only machine without a CUDA torch, so each row is
tested against its formula as read from the library's source (tests/golden/test_peers.py
emulates it with NumPy float32 operations).

Notes on the rows:

- Signed zeros follow the formulas: Brevitas' ``rne(x / s + z)`` is ``-0.0`` for a small negative
  ``x`` with ``z = 0`` and so is its fake-quantized output (reproduced); AIMET's ``rne(x / s) + z``
  adds ``+0`` and gives ``+0.0``.
- ModelOpt (``modelopt.torch.quantization.tensor_quant._tensor_quant`` and the CPU "legacy" fake
  path) is amax based: ``m = f32(qmax / amax)``, ``q = clamp(rne(f32(x * m)), qmin, qmax)`` with
  no zero point, and the fake-quantized value is ``f32(q / m)``, a division. refquant's
  ``scale`` is ``s = amax / qmax`` (float64, from a float32 amax); then ``m = f32(1 / s)``
  exactly (tests/golden/test_peers.py proves it on 10^5 amax values), which is the knobs'
  ``reciprocal="float64"``; ``zero_point="none"`` keeps the ``-0.0`` of ``rne(-0.3)`` and
  ``dequant="divide"`` divides by ``m``.

>>> import refquant as rq
>>> rq.conventions.get("tflite").rounding
'half_away'
>>> sorted(n for n in rq.conventions.names() if n in ("aimet", "brevitas", "tflite", "modelopt"))
['aimet', 'brevitas', 'modelopt', 'tflite']
"""

from __future__ import annotations

from .conventions import Convention, register

register(Convention(
    name="aimet",
    formula="q = clamp(rne(x / s) + z, qmin, qmax) with x / s in promote(x, s) (float32 for float32); "
    "AIMET offset = -z; fake = f32(f32(q - z) * f32(s)); NaN stays NaN in fake (no integer code)",
    backend="aimet-torch 2.x aimet_torch.quantization.affine.quantize / quantize_dequantize with a "
    "learnable scale or block_size (the no-grad per-tensor QDQ dispatches to torch.fake_quantize)",
    evidence="tests/golden/test_peers.py (formula B there)",
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
    evidence="tests/golden/test_peers.py (formula C there)",
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

register(Convention(
    name="modelopt",
    formula="m = f32(qmax / amax) = f32(1 / s) for s = amax / qmax; q = clamp(rne(f32(x * m)), "
    "qmin, qmax), no zero point (z = 0), the sign of a zero code kept; fake = f32(q / m) "
    "(dequantized by division); NaN stays NaN, +-inf saturate; amax <= 2**-24 gives m = 0 and "
    "a zero output (divisor 1); float32 input",
    backend="NVIDIA ModelOpt 0.47 tensor_quant.fake_tensor_quant / _tensor_quant (CPU legacy path)",
    evidence="tests/golden/test_peers.py (its float32 ops emulated; the multiplier equals "
    "f32(1 / s); the division is not a multiplication by s)",
    quotient="reciprocal",
    reciprocal="float64",
    compute="float32",
    zero_point="none",
    dequant="divide",
    tiny_amax=2.0**-24,
    input_dtypes=("float32",),
))
