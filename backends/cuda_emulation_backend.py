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

from .numpy_backend import NumpyBackend
from .registry import BackendUnavailableError


class CudaEmulationBackend(NumpyBackend):
    """The numpy backend's arrays and transfers, with the CUDA kernel table."""

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
        # NumPy arrays, shared with the numpy backend (the current one owns them), and
        # none of its NumPy fast paths: an op runs a CUDA kernel or the generic code
        super().__init__(kernels=cuda_kernels(np, self._load))

    def warmup(self):
        """Compile every kernel now; returns ``{source: number of kernels}``."""
        from .cupy_kernels import compile_all

        return compile_all(self._load)
