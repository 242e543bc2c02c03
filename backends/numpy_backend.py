"""The default backend: NumPy through ``array_api_compat.numpy``.

Its kernel table holds NumPy-specific fast paths (``out=`` arguments,
``np.add.at`` scatters, strided windows) for the hot ops, overlaid by the
compiled CPU kernels (``cpu_kernels``), which fall back to the NumPy ones when
there is no C++ compiler; each must compute what the generic op computes (tests
compare them)."""

import numpy as np
from array_api_compat import numpy as xp_numpy

from .registry import Backend


class NumpyBackend(Backend):
    host = True

    def __init__(self, kernels=None):
        """``kernels``: the kernel table, by default the NumPy and compiled CPU kernels."""
        if kernels is None:
            from . import cpu_kernels, numpy_kernels

            kernels = {**numpy_kernels.KERNELS, **cpu_kernels.CPU_KERNELS}
        super().__init__(
            xp_numpy, device="cpu", array_types=(np.ndarray, np.generic), kernels=kernels
        )

    def from_host(self, value):
        return np.asarray(value)

    def to_numpy(self, array, copy=False):
        return np.array(array, copy=True) if copy else np.asarray(array)

    def warmup(self):
        """Build the compiled CPU kernels now; returns ``{source: status}``."""
        from . import cpu_library

        return cpu_library.warmup()
