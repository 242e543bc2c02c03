"""NumPy fast paths registered in the numpy backend's kernel table."""

KERNELS = {}
