"""CuPy on an NVIDIA GPU through ``array_api_compat.cupy``.

Importing dlx never touches the GPU: CuPy is imported when this backend is
first requested, and ``set_backend("cupy")`` fails with one clear
:class:`BackendUnavailableError` that says whether CuPy, a CUDA device or a
recent enough driver is missing.

Kernel table: the hand-written CUDA kernels of ``backends/cuda/*.cu`` with their
glue (``cupy_kernels``): convolution, transposed convolution, pooling and the
fused recurrent steps. Each source is compiled by NVRTC the first time one of
its kernels runs (``dlx.backends.warmup()`` compiles them all up front) and
cached for the process, and by CuPy on disk. ``DLX_KERNELS=generic`` (or
``dlx.backends.set_kernels_enabled(False)``) runs the generic Array API code
instead, for A/B checks.
"""

import functools

import numpy as np

from .registry import Backend, BackendUnavailableError

MIN_DRIVER_VERSION = 11020  # CUDA 11.2, the oldest driver CuPy 13 supports


def _import_cupy():
    try:
        import cupy
    except ImportError as error:
        raise BackendUnavailableError(
            "The 'cupy' backend needs CuPy, which is not installed: "
            "pip install 'dlx[cupy]' (CUDA 12) or 'dlx[cupy13]' (CUDA 13)."
        ) from error
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDARuntimeError without a driver or device
        raise BackendUnavailableError(
            f"The 'cupy' backend found CuPy but no usable CUDA device: {error}"
        ) from error
    if count < 1:
        raise BackendUnavailableError("The 'cupy' backend found CuPy but no CUDA device.")
    driver = cupy.cuda.runtime.driverGetVersion()
    if driver < MIN_DRIVER_VERSION:
        raise BackendUnavailableError(
            f"The 'cupy' backend needs a CUDA driver >= {MIN_DRIVER_VERSION}; "
            f"this machine's driver reports {driver}."
        )
    return cupy


class CupyBackend(Backend):
    def __init__(self):
        cupy = _import_cupy()
        from array_api_compat import cupy as xp_cupy

        from .cuda_modules import load_module
        from .cupy_kernels import cuda_kernels

        self.cupy = cupy
        self._load = functools.partial(load_module, emulate=False)
        super().__init__(
            xp_cupy,
            device=cupy.cuda.Device(),
            array_types=(cupy.ndarray,),
            kernels=cuda_kernels(cupy, self._load),
        )
        self._generator = cupy.random.default_rng(None)

    def from_host(self, value):
        return self.cupy.asarray(value)

    def to_numpy(self, array, copy=False):  # a device-to-host transfer always copies
        return self.cupy.asnumpy(array)

    def synchronize(self):
        self.cupy.cuda.get_current_stream().synchronize()

    def seed(self, seed):
        self._generator = self.cupy.random.default_rng(seed)

    def random_bits(self, shape, keep_probability, dtype="float32"):
        # dropout masks are drawn on the device: a host draw per step would stall the GPU
        draws = self._generator.random(tuple(shape), dtype=np.float32)
        return (draws < keep_probability).astype(self.dtype(dtype))

    def memory_info(self):
        """Bytes used and held by CuPy's memory pool."""
        pool = self.cupy.get_default_memory_pool()
        return {"used_bytes": pool.used_bytes(), "total_bytes": pool.total_bytes()}

    def warmup(self):
        """Compile every CUDA kernel now; returns ``{source: number of kernels}``."""
        from .cupy_kernels import compile_all

        return compile_all(self._load)

    def free_memory(self):
        """Return all unused blocks of CuPy's memory pools to the driver."""
        self.cupy.get_default_memory_pool().free_all_blocks()
        self.cupy.get_default_pinned_memory_pool().free_all_blocks()
