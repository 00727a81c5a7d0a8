"""Private Numba kernels. Importing this package imports Numba: public modules load it lazily."""
