"""The fused straight-through gradient kernel of :func:`refquant.ste.masked_grad`."""

from ._jit import prange, sized_kernel


@sized_kernel
def masked_grad_kernel(x, grad, lo, hi, one, zero, out):
    # one / zero have grad's dtype: the product is grad * 1 or grad * 0 in grad's precision
    for i in prange(x.size):
        v = x[i]
        out[i] = grad[i] * (one if (v >= lo and v <= hi) else zero)


@sized_kernel
def mask_product_kernel(grad, m, one, zero, out):
    # grad * 1 or grad * 0 in grad's dtype, as a product with a 0/1 mask
    for i in prange(grad.size):
        out[i] = grad[i] * (one if m[i] else zero)
