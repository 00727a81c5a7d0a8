"""Core checks that also run with ``NUMBA_DISABLE_JIT=1`` (CI runs this file so), where every
kernel is plain Python and the LLVM intrinsics have exact Python twins; and, with the JIT on, the
twins against the intrinsics."""

from fractions import Fraction

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refquant as rq
from refquant._kernels._jit import _py_fma32, _py_fma64, fma32, fma64, kernel
from tests.references import ROUNDERS, exact_code, exact_fake, tie_heavy

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy scalars warn, Numba not


@pytest.mark.parametrize("dtype,fmt", [(np.float32, "float32"), (np.float64, "float64"),
                                       (np.float16, "float16")])
@pytest.mark.parametrize("s,z,lo,hi", [(0.1, 3, 0, 255), (1 / 3, 0, -8, 7), (2.0**-140, -1, -128, 127)])
def test_exact_against_the_oracle(dtype, fmt, s, z, lo, hi):
    x = tie_heavy(s, z, lo, hi, 200, seed=3).astype(dtype)
    x = np.concatenate([x, dtype([np.inf, -np.inf, 0.0, -0.0])])
    q = rq.quantize(x, s, z, qmin=lo, qmax=hi)
    assert q.tolist() == [exact_code(float(v), s, z, lo, hi) for v in x]
    y = rq.fake_quantize(x, s, z, qmin=lo, qmax=hi)
    want = np.array([exact_fake(float(v), s, z, lo, hi, fmt) for v in x], dtype)
    assert y.tobytes() == want.tobytes()


def test_pact_against_the_oracle():
    x = np.float32(np.linspace(-1, 3, 301))
    q = rq.pact.quantize(x, 2.2, bits=4)
    assert q.tolist() == [ROUNDERS["half_even"](min(max(Fraction(float(v)), 0), Fraction(2.2)) * 15
                                                / Fraction(2.2)) for v in x]


def test_observers_agree_with_their_rule():
    x = np.float32([-1.5, 0.25, 2.0, 3.0])
    s, z = rq.observers.MinMax(fmt=rq.uint8).update(x).qparams()
    assert (s, z) == rq.choose_qparams(-1.5, 3.0, fmt=rq.uint8)
    hist = rq.observers.Histogram(fmt=rq.uint8).update(x)
    assert int(hist.histogram.sum()) == 4


def _fmas(a, b, c, a64, b64, c64):
    return fma32(a, b, c), fma64(a64, b64, c64)


_both_fmas = kernel(_fmas)
finite32 = st.floats(-(2.0**100), 2.0**100, width=32, allow_subnormal=True)
finite64 = st.floats(-1e300, 1e300, allow_subnormal=True)


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="compares the twins with the compiled intrinsics")
@given(finite32, finite32, finite32, finite64, finite64, finite64)
def test_python_fma_twins_match_the_intrinsics(a, b, c, a64, b64, c64):
    f32, f64 = _both_fmas(np.float32(a), np.float32(b), np.float32(c), a64, b64, c64)
    assert np.float32(f32).tobytes() == _py_fma32(a, b, c).tobytes()
    assert np.float64(f64).tobytes() == np.float64(_py_fma64(a64, b64, c64)).tobytes()
