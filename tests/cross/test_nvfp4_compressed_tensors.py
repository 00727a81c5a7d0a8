"""compressed-tensors' NVFP4 and fp4 arithmetic against the library itself (skips where it is not
installed): its global scale, block scales (calculate_qparams) and codes (NVFP4PackedCompressor)
are ``rq.nvfp4``'s ``compressed_tensors`` row, its dequantize the row's ``float32_encode``, and
its fp4 cast the float convention ``compressed_tensors``."""

import numpy as np
import pytest

import refquant as rq
from tests.float_oracles import probes32

torch = pytest.importorskip("torch")
pytest.importorskip("compressed_tensors")
pytest.importorskip("ml_dtypes")

DTYPES = ["bfloat16", "float16", "float32"]


def _to_numpy(t):
    from refquant_torch._bridge import to_numpy

    return to_numpy(t)


def _weights(dtype, seed=0):
    """[24, 64]: random rows over many magnitudes, rows of exact ties (6 and the e2m1 midpoints
    times powers of two), an all-zero block, -0.0 and tiny values of both signs, subnormal
    block scales."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(24, 64, generator=g) * 10.0 ** torch.randint(-6, 3, (24, 1), generator=g).float()
    ties = torch.tensor([6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -0.75, -1.25, -1.75, -2.5, -3.5,
                         -5.0, 0.0])
    for r, j in enumerate((3, 0, -2, -5, -9)):
        w[r] = ties.repeat(4) * 2.0**j
    w[5, :16] = 0
    w[6, :16] = -0.0
    w[6, 16:24] = torch.tensor([-1e-7, 1e-7, -0.0, 3e-8, -3e-8, 1e-30, -1e-30, 0.0])
    w[7, 40:48] = 1e-30
    if seed == 2 and dtype != "float16":  # a tiny global scale: negative quotients underflow to -0.0
        w[8, :16] = torch.tensor([3e38, -1e-30, 1e-30, -1e-36, -0.0, 0.0] + [-1e-38] * 10)
    return w.to(getattr(torch, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nvfp4_quantize_and_dequantize(dtype):
    from compressed_tensors.compressors.nvfp4.base import NVFP4PackedCompressor
    from compressed_tensors.quantization import QuantizationScheme
    from compressed_tensors.quantization.lifecycle.forward_helpers import _dequantize
    from compressed_tensors.quantization.quant_scheme import NVFP4
    from compressed_tensors.quantization.utils.helpers import calculate_qparams, generate_gparam

    for seed in range(3):
        w = _weights(dtype, seed)
        scheme = QuantizationScheme(targets=["Linear"], **NVFP4)
        gs = generate_gparam(w.amin(), w.amax())
        wg = w.reshape(w.shape[0], -1, 16)
        scale, _ = calculate_qparams(wg.amin(dim=2), wg.amax(dim=2), scheme.weights, global_scale=gs)
        sd = {"weight": w, "weight_global_scale": gs, "weight_scale": scale}
        packed = NVFP4PackedCompressor().compress(sd, scheme)
        x = _to_numpy(w)
        g = _to_numpy(gs.float()).reshape(())
        codes, scodes, stored = rq.nvfp4.quantize(x, global_scale=g, convention="compressed_tensors")
        np.testing.assert_array_equal(rq.pack(codes.reshape(-1), 4).reshape(24, 32),
                                      packed["weight_packed"].numpy())
        np.testing.assert_array_equal(scodes, packed["weight_scale"].view(torch.uint8).numpy())
        assert np.float32(stored) == np.float32(g)
        # dequantize: f32(q * f32(s / G)) in float32, then the weight's dtype
        q = torch.from_numpy(rq.decode(codes, rq.float4_e2m1fn))
        s = torch.from_numpy(rq.decode(scodes, rq.float8_e4m3fn)).repeat_interleave(16, dim=1)
        want = _to_numpy(_dequantize(q, s, dtype=w.dtype, global_scale=gs.float()))
        got = rq.nvfp4.dequantize(codes, scodes, g, convention="compressed_tensors", dtype=x.dtype)
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    # the other library rows differ on these weights (the block scale and the element divisor)
    for other in ("modelopt", "torchao"):
        oc, osc, _ = rq.nvfp4.quantize(x, convention=other)
        assert not (np.array_equal(oc, codes) and np.array_equal(osc, scodes))


def test_nvfp4_nan_has_no_code():
    x = np.zeros(16, np.float32)
    x[3] = np.nan
    with pytest.raises(ValueError, match="'compressed_tensors' convention has no code for it"):
        rq.nvfp4.quantize(x, global_scale=1.0, convention="compressed_tensors")


def test_cast_to_fp4():
    """Every float16 pattern but NaN and the fp4 probes: sign(x) * |x| rounded, as codes."""
    from compressed_tensors.quantization.utils.fp4_utils import cast_to_fp4

    pats = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    x = np.concatenate([pats, probes32("float4_e2m1fn")])
    x = x[~np.isnan(x)]
    values = cast_to_fp4(torch.from_numpy(x.copy())).numpy()
    want = rq.encode(values, rq.float4_e2m1fn)  # its values are fp4 values: their own codes
    got = rq.encode(x, rq.float4_e2m1fn, convention="compressed_tensors")
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, [(float(x[i]), int(got[i]), int(want[i])) for i in bad[:6]]
    assert got[np.flatnonzero((x == 0) & np.signbit(x))[0]] == 0  # -0.0 in, +0 out
    assert got[np.flatnonzero((x < 0) & (x > -0.25))[0]] == 8  # a negative rounding to zero: -0
