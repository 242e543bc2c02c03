"""Level 1: the backend registry (installed as ``dlx.backends``).

A :class:`Backend` bundles what the generic code cannot get from the Array API
standard alone: the namespace ``xp``, the device new arrays are created on, a
random source, host <-> device transfer, and a kernel table
``{op name: implementation}`` that lets a backend replace hot operations.

Built-in backends: ``numpy`` (default), ``array_api_strict`` and ``cupy``
(imported lazily). ``DLX_BACKEND`` sets the default, ``DLX_KERNELS=generic``
turns every kernel table off so that the generic Array API code runs.
"""

from .registry import (
    Backend,
    BackendUnavailableError,
    DeviceMismatchError,
    backend_of,
    get_backend,
    get_random_state,
    kernels_enabled,
    list_backends,
    permutation,
    register_backend,
    set_backend,
    set_kernels_enabled,
    set_random_state,
    set_seed,
    warmup,
)

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "DeviceMismatchError",
    "backend_of",
    "get_backend",
    "get_random_state",
    "kernels_enabled",
    "list_backends",
    "permutation",
    "register_backend",
    "set_backend",
    "set_kernels_enabled",
    "set_random_state",
    "set_seed",
    "warmup",
]
