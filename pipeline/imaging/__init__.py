"""Imaging: weighting, gridding (ducc0 on the CPU, CuPy on the GPU), CLEAN, products."""
