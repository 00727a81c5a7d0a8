"""Conventions: the arithmetic choices that make quantization backends disagree, as data.

A :class:`Convention` is a frozen set of orthogonal knobs. The named conventions are rows of one
table (:data:`TABLE`); the kernels read the knobs, never the names. Each row's docstring-like
``formula`` states its arithmetic, and ``evidence`` names the test that proves it bit for bit.

Knobs (``s`` scale, ``z`` zero point, ``f32(v)`` rounds to float32, ``rne`` half to even):

quotient
    ``"exact"`` the real number ``x / s``; ``"divide"`` ``x / s`` in the compute dtype;
    ``"reciprocal"`` ``x * inv`` in the compute dtype.
reciprocal
    how ``inv`` is formed: ``"float32"`` ``1.0f / f32(s)``; ``"float64"`` ``f32(1.0 / s)`` (a double
    reciprocal rounded to float32); ``"scale_dtype"`` ``1 / s`` in the scale's own dtype.
compute
    dtype of the quotient arithmetic: ``"exact"``; ``"float32"``; ``"float64"``; ``"input64"``
    (float64 for float64 input, else float32); ``"promote"`` (NumPy/torch promotion of the input
    and scale dtypes, every op rounded to it, bfloat16 and float16 included; a Python float scale
    takes the input's dtype); ``"float16"``, ``"bfloat16"`` (x and s rounded to it first, as
    ONNX's ``precision`` attribute does).
zero_point
    ``"after_round"`` ``rne(t) + z``; ``"before_round"`` ``rne(t + z)``; ``"none"`` ``rne(t)`` with
    ``z`` required to be 0 (the ``-0.0`` of ``rne(-0.3)`` then survives into fake_quantize).
fma
    with ``before_round`` and ``reciprocal``: ``rne(fma(x, inv, z))`` with one rounding. Rows whose
    backend fuses on some CPUs only (torch's AVX2/AVX512 kernels, FBGEMM's 8-bit quantize) are
    written with ``fma=True``, the variant those CPUs run; :func:`detect` measures the installed
    backend's.
zero_point_add
    for ``after_round``: ``"integer"`` (exact), ``"compute"`` (a float add in the compute dtype) or
    ``"promote"`` (a float add in the promotion of the compute dtype and a float zero point's dtype,
    the ``cast_last`` clamp bounds rounded to it too: torch adds a float32 zero-point tensor to
    bfloat16 codes in float32; integer zero points and Python floats leave the compute dtype) or
    ``"float32"`` (before or after rounding: the sum in the compute dtype, then rounded to
    float32: C's ``lrintf(z + x * inv)`` with double ``x``).
clamp
    ``"float"`` clamp the float value, then convert; ``"cast_first"`` convert to int64 first (x86:
    NaN, +-inf and ``|q| >= 2**63`` become INT64_MIN, hence qmin; ``-0.0`` becomes ``+0``), then
    clamp; ``"cast_last"``
    ``clamp(v, qmin, qmax)`` with the bounds rounded to the compute dtype (torch.clamp with integer
    bounds: bfloat16 makes 32767 into 32768), then x86's float-to-int32 conversion (NaN and
    ``|v| >= 2**31`` give INT32_MIN) truncated to the code dtype's width (32768 wraps to -32768 in
    int16; INT32_MIN becomes 0 in 8- and 16-bit codes). ``fake_quantize`` keeps the clamped float.
    ``"wrap32_first"`` convert to int64 (NaN, +-inf and ``|q| >= 2**63`` give INT64_MIN), keep the
    low 32 bits as a signed int32 (C's ``int q = lrintf(v)``: 3e9 becomes -1294967296), then
    clamp. ``"int32_first"`` (with an ``integer`` zero-point add) convert ``rne(t)`` to int32 as
    NumPy does (NaN, +-inf and ``|t| >= 2**31`` give INT32_MIN; ml_dtypes' conversion from bfloat16
    gives 0), add ``z`` in int32 arithmetic (wrapping), then clamp; NaN takes the same path.
nan
    the code of NaN in ``quantize``: ``"error"``, ``"qmin"``, ``"qmax"``, ``"zero"``, ``"cast"``
    (what the ``cast_last`` conversion makes of NaN: 0 for 8- and 16-bit codes, INT32_MIN for
    int32).
fake_nan
    NaN in ``fake_quantize``: ``"propagate"`` or ``"code"`` (NaN's code, dequantized).
dequant
    ``"exact"`` ``(q - z) * s`` rounded once to the output dtype; ``"float32"``
    ``f32(f32(q - z) * f32(s))``; ``"float64"`` ``(q - z) * s`` in float64 with the float64 scale,
    then float32; ``"mixed"`` ``f32(f32(q) - f32(z))`` times the float64 scale in float64, then
    float32 (torch's per-channel dequantize); ``"int32_float32"`` ``f32(f32(q - z) * f32(s))`` with
    ``q - z`` in int32 arithmetic, wrapping (torch's per-tensor dequantize of qint32);
    ``"promote"`` ``(q.to(out) - z.to(out)) * s`` in ``promote(out, scale)``, each op rounded
    (torch converts integers and float64 to float16/bfloat16 through float32, rounding twice, and
    so is a float64 scale that meets a half-precision output);
    ``"divide"`` ``f32(f32(q - z) / inv)``, a division by the reciprocal the quotient multiplied
    with (ModelOpt).
    ``"scalar"`` ``(q.to(out) - z) * s`` with Python scalars: ``z`` converted to ``out``, each op
    rounded to ``out``, except that ``s`` multiplies in ``out``'s opmath (float32 for float16 and
    bfloat16 outputs, so the product rounds to float32, then to ``out``): torch's arithmetic of a
    tensor with Python numbers.
    ``"tensor"`` torch's arithmetic of tensors: ``q - z`` in the promotion of the code and
    zero-point dtypes (int32 codes minus int32 zero points wrap; a float zero point: its dtype),
    times ``s`` in the promotion with the scale's dtype (float64 scales: float64), then ``out``
    (float64 reaches float16/bfloat16 through float32).
    ``"onnx_reference"`` ``"float32"`` for 8- and 16-bit codes; codes of 32 bits or more:
    ``(f64(f32(q)) - z) * s`` in float64, rounded once to ``out`` (onnx.reference).
tiny_amax
    amax-based rows: where ``amax = s * qmax <= tiny_amax`` the multiplier is 0
    (codes ``rne(x * 0)``) and the ``divide`` divisor 1 (ModelOpt zeroes such tensors: 2**-24).
zero_point_in_range, float_zero_point
    whether ``z`` must lie in ``[qmin, qmax]``, and whether a fractional ``z`` is allowed.
variants
    ``((condition, overrides), ...)``: knob changes that apply per-channel (``per_channel``), with a
    float-dtype zero point (``float_zero_point``) or with a range wider than 8 bits (``wide``).

The rows never depend on the machine that imports them. A Convention's fields are plain values
(strings, bools, a float, tuples), so ``Convention(**{f.name: getattr(c, f.name) for f in
dataclasses.fields(c)})`` rebuilds ``c`` (lists from JSON are turned back into tuples).

>>> import refquant as rq
>>> rq.conventions.get("torch.fake_quantize").reciprocal
'float32'
>>> "exact" in rq.conventions.names()
True
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import ClassVar

from . import _codes
from ._registry import Registry, Row

__all__ = ["Convention", "TABLE", "register", "unregister", "names", "get", "detect"]

_CHOICES = {knob: _codes.names(enum) for knob, enum in _codes.KNOBS.items()}
_CONDITIONS = ("per_channel", "float_zero_point", "wide")
ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True)
class Convention(Row):
    """One backend's arithmetic, as knobs (see the module docstring for their meaning).

    ``rq.conventions.get(name).replace(fma=False)`` gives a variant, e.g. torch on a CPU whose
    kernels do not contract multiply-add. A variant that sets the same knob still wins where its
    condition holds (e.g. torch.quantize never fuses per-channel, whatever ``fma`` says).

    >>> import refquant as rq
    >>> c = rq.conventions.get("torch.quantize").replace(fma=False)
    >>> c.fma, c.zero_point
    (False, 'before_round')
    """

    quotient: str = "exact"
    reciprocal: str = "float32"
    compute: str = "exact"
    zero_point: str = "after_round"
    fma: bool = False
    zero_point_add: str = "integer"
    rounding: str = "half_even"
    clamp: str = "float"
    nan: str = "error"
    fake_nan: str = "propagate"
    dequant: str = "exact"
    tiny_amax: float = 0.0
    zero_point_in_range: bool = True
    float_zero_point: bool = False
    input_dtypes: tuple[str, ...] = ALL_DTYPES
    variants: tuple = field(default=(), repr=False, hash=False)

    _choices: ClassVar[dict] = _CHOICES

    def __post_init__(self):
        object.__setattr__(self, "_resolved", {})  # resolve()'s memo, not a field
        super().__post_init__()
        for knob in ("fma", "zero_point_in_range", "float_zero_point"):
            if not isinstance(getattr(self, knob), bool):
                raise TypeError(f"{knob} must be True or False; got {getattr(self, knob)!r}")
        if isinstance(self.tiny_amax, bool) or not isinstance(self.tiny_amax, (int, float)):
            raise TypeError(f"tiny_amax must be a float; got {self.tiny_amax!r}")
        object.__setattr__(self, "tiny_amax", float(self.tiny_amax))
        object.__setattr__(self, "input_dtypes", tuple(self.input_dtypes))
        object.__setattr__(self, "variants", tuple((dict(c), dict(o)) for c, o in self.variants))
        for dt in self.input_dtypes:
            if dt not in ALL_DTYPES:
                raise ValueError(f"input_dtypes entries must be in {ALL_DTYPES}; got {dt!r}")
        knob_names = {f.name for f in fields(self)} - {"name", "formula", "variants"}
        for condition, overrides in self.variants:
            if not set(condition) <= set(_CONDITIONS):
                raise ValueError(f"variant conditions must be among {_CONDITIONS}; got {condition}")
            if not set(overrides) <= knob_names:
                raise ValueError(f"variant overrides must be knobs; got {sorted(overrides)}")
        if self.quotient == "exact" and self.compute != "exact":
            raise ValueError("quotient='exact' needs compute='exact'")

    def resolve(self, *, per_channel: bool, float_zero_point: bool, wide: bool) -> Convention:
        """The knobs in force for one call: the variants whose conditions all hold, applied in order."""
        key = (per_channel, float_zero_point, wide)
        resolved = self._resolved.get(key)
        if resolved is None:
            facts = dict(zip(("per_channel", "float_zero_point", "wide"), key))
            knobs = {}
            for condition, overrides in self.variants:
                if all(facts[k] == v for k, v in condition.items()):
                    knobs.update(overrides)
            resolved = self._resolved[key] = replace(self, variants=(), **knobs)
        return resolved


TABLE = (
    Convention(
        name="exact",
        formula="q = clamp(rne(x / s) + z, qmin, qmax), x / s the real quotient; "
        "fake = (q - z) * s rounded once to x's dtype; NaN: error in quantize, NaN in fake; "
        "+-inf saturate; a zero result is +0.0",
        backend="the real-number definition (no backend)",
        evidence="tests/core/test_affine_exact.py (Fraction oracle, every float16/bfloat16 pattern)",
    ),
    Convention(
        name="torch.fake_quantize",
        formula="inv = 1.0f / f32(s); q = clamp(f32(z) + rne(x * inv), qmin, qmax) with x * inv in "
        "float32 (float64 for float64 x); fake = f32((q - z) * f32(s)); NaN -> qmin, +inf -> qmax. "
        "Per-channel: cast to int64 before the clamp (NaN, +-inf, |q| >= 2**63 -> qmin), output "
        "(q - z) * s in float64 (float64 x: x * inv in float64 too). Float zero point "
        "(per-channel): q = rne(fma(x, inv, z)) in float32 (torch's AVX2/AVX512 kernels; fma=False: "
        "rne(f32(x * inv) + z), its DEFAULT kernels), an integer code (+0.0, never -0.0); float64 x: "
        "q = rne(f32(fma(x, inv, z))) with the fma in float64 (lrintf of a double sum)",
        backend="torch 2.13 CPU fake_quantize_per_tensor_affine, fake_quantize_per_channel_affine",
        evidence="tests/cross/test_affine_torch.py",
        quotient="reciprocal",
        reciprocal="float32",
        compute="input64",
        fma=True,
        zero_point_add="compute",
        nan="qmin",
        fake_nan="code",
        dequant="float32",
        variants=(
            ({"per_channel": True}, {"clamp": "cast_first", "dequant": "float64", "compute": "input64"}),
            (
                {"per_channel": True, "float_zero_point": True},
                {"zero_point": "before_round", "float_zero_point": True, "zero_point_in_range": False,
                 "compute": "input64", "zero_point_add": "float32"},
            ),
        ),
    ),
    Convention(
        name="torch.quantize",
        formula="inv = 1.0f / f32(s); 8-bit per-tensor: q = rne(fma(x, inv, f32(z))) (FBGEMM on a CPU "
        "with AVX2 and FMA; fma=False: rne(f32(f32(x * inv) + f32(z))); z before rounding; "
        "NaN -> qmax); wider or per-channel: "
        "q = rne(f32(f32(x * inv) + f32(z))) (NaN -> qmin wide, 0 for 8-bit per-channel); "
        "per-channel float zero points: the int64 code wraps to int32 before the clamp; "
        "dequantize per-tensor f32(f32(s) * f32(q - z)) with q - z in int32 (wraps), per-channel "
        "(f32(q) - f32(z)) * s in float64",
        backend="torch 2.13 x86 (FBGEMM) quantize_per_tensor / quantize_per_channel / dequantize",
        evidence="tests/cross/test_affine_torch.py",
        quotient="reciprocal",
        reciprocal="float32",
        compute="float32",
        zero_point="before_round",
        fma=True,
        nan="qmax",
        fake_nan="code",
        dequant="int32_float32",
        input_dtypes=("float32",),
        variants=(
            ({"wide": True}, {"fma": False, "nan": "qmin"}),
            ({"per_channel": True}, {"fma": False, "nan": "zero", "dequant": "mixed"}),
            ({"per_channel": True, "wide": True}, {"nan": "qmin"}),
            (
                {"per_channel": True, "float_zero_point": True},
                {"float_zero_point": True, "zero_point_in_range": False, "dequant": "float32",
                 "clamp": "wrap32_first"},
            ),
        ),
    ),
    Convention(
        name="torch.decomposed",
        formula="inv = f32(1.0 / s) (double reciprocal); q = clamp(rne(f32(x * inv)) + z, qmin, qmax) "
        "in float32, then .to(dtype) (x86 conversion: NaN and values >= 2**31 give INT32_MIN, "
        "truncated to the code width: 0 for 8/16-bit codes; ask for the code dtype with quantize's "
        "dtype=, e.g. int32 codes of a [-8, 7] range give NaN INT32_MIN); half/bfloat16 x upcast to "
        "float32; dequantize (q.to(out) - z.to(out)) * s, each op rounded to out (float32 by "
        "default) except that the Python float s multiplies in float32 for float16/bfloat16 out "
        "(two roundings); integers reach float16/bfloat16 through float32. Per-channel: 1 / s "
        "and x * inv in the scales' dtype (float64 scales: float64); dequantize "
        "(q - z) * s as torch tensors: q - z in the integer promotion (int32 codes and int32 zero "
        "points wrap), the product in the scales' dtype, then out",
        backend="torch 2.13 quantized_decomposed.quantize_per_tensor / _per_channel / dequantize",
        evidence="tests/cross/test_affine_torch.py, tests/cross/test_adversarial_affine.py",
        quotient="reciprocal",
        reciprocal="float64",
        compute="float32",
        zero_point_add="compute",
        clamp="cast_last",
        nan="cast",
        fake_nan="code",
        dequant="scalar",
        input_dtypes=("float16", "bfloat16", "float32"),
        variants=(({"per_channel": True}, {"reciprocal": "scale_dtype", "compute": "promote",
                                           "dequant": "tensor"}),),
    ),
    Convention(
        name="torchao",
        formula="inv = 1 / s in the scale's dtype; q = clamp(rne(x * inv) + z, qmin, qmax) with every "
        "op in promote(x, s) (bfloat16 rounds after each op, the clamp bounds too: 32767 -> 32768); "
        "a float zero-point array promotes the add and the clamp (bfloat16 x and s with a float32 "
        "zero point: float32); then .to(dtype) (x86: NaN and values >= 2**31 give INT32_MIN, "
        "truncated to the code width; quantize's dtype= names the code dtype); NaN in fake; "
        "dequantize (q.to(out) - z.to(out)) * s in promote(out, s), then out, with integers and "
        "float64 reaching float16/bfloat16 through float32 (two roundings)",
        backend="torchao 0.18 quantize_affine / dequantize_affine / _fake_quantize_affine",
        evidence="tests/cross/test_affine_torchao.py, tests/cross/test_adversarial_affine.py",
        quotient="reciprocal",
        reciprocal="scale_dtype",
        compute="promote",
        zero_point_add="promote",
        clamp="cast_last",
        nan="cast",
        fake_nan="propagate",
        dequant="promote",
        input_dtypes=("float16", "bfloat16", "float32"),
    ),
    Convention(
        name="onnx",
        formula="q = saturate(rne(x / s) + z) with x / s in promote(x, s) (float32 for float32 x); "
        "NaN -> qmin; +-inf saturate as the spec and onnxruntime do (onnx.reference 1.23 sends +inf "
        "and |x / s| >= 2**31 to qmin through an int32 cast); DequantizeLinear (f32(q) - z) * s "
        "in float32, then the output dtype; int32 codes (the spec wants z = 0) as onnxruntime with "
        "z = 0 (onnxruntime subtracts a nonzero z in int32, wrapping; this row does not)",
        backend="ONNX QuantizeLinear / DequantizeLinear (opset 21+; onnx.reference, onnxruntime)",
        evidence="tests/cross/test_affine_onnx.py, tests/cross/test_onnx_dequantize_int32.py",
        quotient="divide",
        compute="promote",
        nan="qmin",
        fake_nan="code",
        dequant="float32",
    ),
    Convention(
        name="onnx.reference",
        formula="onnx.reference's QuantizeLinear, where it departs from the spec (the onnx row): "
        "t = x / s in promote(x, s) (NumPy; the opset-23 precision attribute is "
        ".replace(compute='float32' / 'float16' / 'bfloat16')); rne(t).astype(int32) (NaN, +-inf "
        "and |t| >= 2**31 give INT32_MIN; from bfloat16, ml_dtypes gives 0); + z in int32, "
        "wrapping (NaN with z = -3 gives INT32_MAX - 2, hence qmax); clip to [qmin, qmax]. "
        "DequantizeLinear f32(f32(q) - z) * f32(s) in float32 (8- and 16-bit codes), then the "
        "output dtype; int32 codes: (f64(f32(q)) - z) * s in float64, then the output dtype (one "
        "rounding)",
        backend="onnx.reference 1.23 QuantizeLinear / DequantizeLinear (NumPy 2.4, ml_dtypes 0.7)",
        evidence="tests/cross/test_affine_onnx_reference.py, tests/cross/test_onnx_dequantize_int32.py",
        quotient="divide",
        compute="promote",
        clamp="int32_first",
        nan="cast",
        fake_nan="code",
        dequant="onnx_reference",
    ),
)

_REGISTRY = Registry("affine", TABLE, row_type=Convention)
register, unregister, names, get = _REGISTRY.register, _REGISTRY.unregister, _REGISTRY.names, _REGISTRY.get


def _torch_fake_quantize_knobs():
    from ._platform import torch_kernels_use_fma

    return {"fma": torch_kernels_use_fma()}


def _torch_quantize_knobs():
    from ._platform import fbgemm_quantize_uses_fma

    return {"fma": fbgemm_quantize_uses_fma()}


# row name -> a probe of the installed backend returning the machine-dependent knobs it runs with
_PROBES = {
    "torch.fake_quantize": _torch_fake_quantize_knobs,
    "torch.quantize": _torch_quantize_knobs,
}


def detect(name) -> Convention:
    """The variant of a convention that the installed backend runs on this machine.

    The backend is run on inputs whose results differ between the variants (computed by
    refquant) and the variant that reproduces them is returned, e.g. ``torch.fake_quantize`` with
    ``fma=False`` under ``ATEN_CPU_CAPABILITY=default``. Rows without a machine-dependent knob
    (``exact``, ``onnx``, ...) come back unchanged. The result is usable wherever a name is.
    An ImportError when the backend is not installed; a RuntimeError when it matches no variant.

    >>> import refquant as rq
    >>> rq.conventions.detect("exact") is rq.conventions.get("exact")
    True
    >>> rq.conventions.detect("torch.fake_quantize").fma in (True, False)  # doctest: +NEEDS_TORCH
    True
    """
    conv = get(name)
    probe = _PROBES.get(conv.name)
    if probe is None:
        return conv
    knobs = probe()
    if all(getattr(conv, knob) == value for knob, value in knobs.items()):
        return conv
    return conv.replace(**knobs)


from . import _peer_conventions  # noqa: E402,F401  (registers the peer rows: aimet, tflite, ...)
