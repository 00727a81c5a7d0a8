"""refquant_torch: the torch adapter of refquant (differentiable ops, quantized tensors, modules).

The math comes from :mod:`refquant`; this package converts tensors, registers custom ops and
autograd, and holds module state.
"""

__version__ = "0.1.0"
