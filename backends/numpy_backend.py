"""The default backend: NumPy through ``array_api_compat.numpy``.

Its kernel table holds NumPy-specific fast paths (``out=`` arguments,
``np.add.at`` scatters, strided windows) for the hot ops; each must compute
what the generic op computes (tests compare them)."""

import numpy as np
from array_api_compat import numpy as xp_numpy

from .registry import Backend


class NumpyBackend(Backend):
    host = True

    def __init__(self, kernels=None):
        """``kernels``: the kernel table, by default the NumPy fast paths."""
        if kernels is None:
            from . import numpy_kernels

            kernels = numpy_kernels.KERNELS
        super().__init__(
            xp_numpy, device="cpu", array_types=(np.ndarray, np.generic), kernels=kernels
        )

    def from_host(self, value):
        return np.asarray(value)

    def to_numpy(self, array, copy=False):
        return np.array(array, copy=True) if copy else np.asarray(array)
