"""``cuda_emulation``: NumPy arrays, with the GPU backend's CUDA kernels run on the CPU.

The kernel table is the one the ``cupy`` backend uses (see ``cupy_kernels``), with
the ``.cu`` sources compiled by the host C++ compiler against the emulation
header (``backends/cuda/emulation/cuda_emulation.h``) instead of NVRTC, and the
glue computing with NumPy instead of CuPy. Every thread of a launch runs one
after the other, so this is for testing GPU code paths on a CPU-only machine
(CI), not for speed::

    dlx.set_backend("cuda_emulation")   # needs g++ (or $CXX)

It deliberately has none of the NumPy backend's fast paths: an op either runs a
CUDA kernel or the generic Array API code, as on the GPU.
"""

import functools
import os
import shutil

import numpy as np
from array_api_compat import numpy as xp_numpy

from .registry import Backend, BackendUnavailableError


class CudaEmulationBackend(Backend):
    host = True

    def __init__(self):
        compiler = os.environ.get("CXX", "g++")
        if shutil.which(compiler) is None:
            raise BackendUnavailableError(
                f"The 'cuda_emulation' backend compiles the CUDA kernels with a host C++ "
                f"compiler; {compiler!r} was not found (install g++ or set CXX)."
            )
        from .cuda_modules import load_module
        from .cupy_kernels import cuda_kernels

        self._load = functools.partial(load_module, emulate=True)
        super().__init__(
            xp_numpy,
            device="cpu",
            array_types=(np.ndarray, np.generic),  # shared with numpy: the current one owns them
            kernels=cuda_kernels(np, self._load),
        )

    def from_host(self, value):
        return np.asarray(value)

    def to_numpy(self, array, copy=False):
        return np.array(array, copy=True) if copy else np.asarray(array)

    def warmup(self):
        """Compile every kernel now; returns ``{source: number of kernels}``."""
        from .cupy_kernels import compile_all

        return compile_all(self._load)
