"""The ``emulated_backend`` fixture: dlx on the ``cuda_emulation`` backend.

NumPy arrays, the GPU backend's kernel table (``backends/cupy_kernels.py``) with
the CUDA kernels compiled by g++ through the emulation header, so real layers
run through the CUDA kernels and their glue on the CPU. Import it into a test
module: ``from cuda_emulation import emulated_backend``.
"""

import pytest

import dlx


@pytest.fixture
def emulated_backend():
    """The ``cuda_emulation`` backend, made current and seeded (conftest restores numpy)."""
    backend = dlx.set_backend("cuda_emulation")
    dlx.set_seed(0)
    return backend
