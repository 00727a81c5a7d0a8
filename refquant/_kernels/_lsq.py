"""LSQ gradient kernels: the paper in float64 with exact clip decisions, and torch's learnable
fake-quant CPU backward in float32 (with or without its contracted multiply-adds)."""

import numpy as np

from ._elements import group_of
from ._jit import fma32, kernel
from ._round import HALF_EVEN, cmp_x_vs_prod, round_quotient


@kernel
def lsq_grad(x, g, s, z, gidx, qmin, qmax, gf, gx, gs, gz):
    """LSQ (Esser et al.) per element: clip decided on the real x / s against qmin - z, qmax - z
    (inclusive); inside ``d scale = round(x / s) - fl(x / s)``; outside ``qmin - z`` / ``qmax - z``
    and ``d zero_point = -s``. Every product in float64."""
    for i in range(x.size):
        j = group_of(gidx, i)
        si, zi = s[j], z[j]
        xi = np.float64(x[i])
        gi = np.float64(g[i])
        if xi != xi:
            gx[i] = xi
            gs[i] = xi
            gz[i] = xi
        elif cmp_x_vs_prod(xi, qmin - zi, si) <= 0:
            gx[i] = 0.0
            gs[i] = gi * (qmin - zi) * gf
            gz[i] = -gi * si * gf
        elif cmp_x_vs_prod(xi, qmax - zi, si) >= 0:
            gx[i] = 0.0
            gs[i] = gi * (qmax - zi) * gf
            gz[i] = -gi * si * gf
        else:
            gx[i] = gi
            gs[i] = gi * (round_quotient(xi, si, HALF_EVEN, 0.0) - xi / si) * gf
            gz[i] = 0.0


@kernel
def torch_learnable_grad(x, dy, s, z, gidx, qmin, qmax, gf, fma, dx, ds, dz):
    """torch's ``fake_quantize_learnable_{tensor,channel}_grad_kernel_cpu``, float32 throughout.

    ``z`` is the backward's float32 zero point (already rounded the way torch rounds it)."""
    one = np.float32(1.0)
    for i in range(x.size):
        j = group_of(gidx, i)
        si, zi = s[j], z[j]
        xi, gi = x[i], dy[i]
        inv = one / si
        if fma:
            t = fma32(xi, inv, zi)
        else:
            t = np.float32(xi * inv) + zi
        xq = np.rint(t)
        if not abs(xq) < 9.2e18:  # x86 float -> int64 of NaN or overflow: INT64_MIN
            xq = np.float32(-9.223372036854775808e18)
        inside = qmin <= xq <= qmax
        dx[i] = gi * np.float32(1.0 if inside else 0.0)
        if not inside:
            dz[i] = ((gi * np.float32(-1.0)) * si) * gf
            dscale = np.float32(qmin) - zi if xq < qmin else np.float32(qmax) - zi
            ds[i] = (gi * dscale) * gf
        else:
            dz[i] = np.float32(0.0)
            c = np.float32(xq) - zi
            diff = fma32(c, si, -xi) if fma else np.float32(c * si) - xi
            ds[i] = ((gi * diff) * inv) * gf
