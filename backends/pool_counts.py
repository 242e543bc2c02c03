"""How many valid (unpadded) cells each pooling window holds: the divisor of an average
pool with Keras's ``padding="same"``. Shared by the NumPy and CUDA pool kernels."""

import numpy as np


def valid_cell_counts(x_shape, pool_size, strides, pads, dtype):
    """``(1, *out, 1)`` host array of the valid cells of every window of a channels_last
    input of ``x_shape``, padded by ``pads`` (``(before, after)`` per spatial axis)."""
    total = None
    rank = len(pool_size)
    for axis, (n, k, s, (b, a)) in enumerate(zip(x_shape[1:-1], pool_size, strides, pads)):
        out = (n + b + a - k) // s + 1
        cells = np.array([min(o * s - b + k, n) - max(o * s - b, 0) for o in range(out)], dtype)
        cells = cells.reshape((1,) + tuple(out if i == axis else 1 for i in range(rank)) + (1,))
        total = cells if total is None else total * cells
    return total
