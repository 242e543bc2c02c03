"""The backend registry: which backends exist, which one is current, and which
backend owns a given array ("dispatch follows the data")."""

import os

from .random import HostRandom


class BackendUnavailableError(RuntimeError):
    """A backend was requested that cannot run here (missing package, device or driver)."""


class DeviceMismatchError(TypeError):
    """Arrays of two backends/devices met in one operation."""


class Backend:
    """One place arrays can live, and how to compute on them there.

    Attributes:
        name: registry name, e.g. ``"numpy"``.
        xp: the Array API namespace.
        device: where new arrays are created (``xp.asarray(..., device=device)``).
        array_types: the array classes this backend owns.
        kernels: ``{op name: implementation}``; an op asks :meth:`kernel` first
            and falls back to its generic Array API code when it gets ``None``.
    """

    name = "abstract"
    host = False  # True for the backend whose arrays are host NumPy arrays

    def __init__(self, xp, device=None, array_types=(), kernels=None):
        self.xp = xp
        self.device = device
        self.array_types = tuple(array_types)
        self.kernels = dict(kernels or {})

    # -- kernels ---------------------------------------------------------
    def kernel(self, op_name):
        """The registered implementation of ``op_name``, or None for the generic path."""
        if not _KERNELS_ENABLED:
            return None
        return self.kernels.get(op_name)

    def register_kernel(self, op_name, implementation):
        self.kernels[op_name] = implementation

    # -- arrays ----------------------------------------------------------
    def dtype(self, name):
        """The namespace's dtype object for a name like ``"float32"`` (or a dtype)."""
        if isinstance(name, str):
            return getattr(self.xp, name)
        if hasattr(name, "name") and not isinstance(name, type):  # numpy dtype from host
            return getattr(self.xp, str(name.name), name)
        return name

    def asarray(self, value, dtype=None):
        """``value`` (host array, list, scalar or another backend's array) on this backend."""
        if dtype is not None:
            dtype = self.dtype(dtype)
        if not isinstance(value, self.array_types):
            other = _owner_or_none(value)
            if other is not None and other is not self:
                value = other.to_numpy(value)
            value = self.from_host(value)
        if dtype is not None and value.dtype != dtype:
            value = self.xp.astype(value, dtype)
        return value

    def from_host(self, value):
        return self.xp.asarray(value, device=self.device)

    def from_dlpack(self, value):
        """An object with ``__dlpack__`` (a PyTorch/JAX/CuPy array...) as an array of this
        backend, without a copy where the producer's device is this backend's device.

        A torch tensor that requires grad is detached first (dlx cannot send gradients back
        into another library). Arrays on another device are copied where the producer
        allows it (``copy=True``), else a clear error names both devices."""
        if not hasattr(value, "__dlpack__"):
            raise TypeError(
                f"from_dlpack: expected an object with __dlpack__ (e.g. a torch tensor), got "
                f"{type(value).__name__}"
            )
        if getattr(value, "requires_grad", False) and hasattr(value, "detach"):
            value = value.detach()
        try:
            return self.xp.from_dlpack(value)
        except (BufferError, RuntimeError, TypeError, ValueError) as error:
            try:  # another device: ask the producer for a copy onto ours (DLPack 1.0)
                return self.xp.from_dlpack(value, device=self.device, copy=True)
            except Exception:
                where = getattr(value, "device", None)
                raise BufferError(
                    f"from_dlpack: cannot bring a {type(value).__name__} of shape "
                    f"{tuple(getattr(value, 'shape', ()))} on device {where} to the {self.name!r} "
                    f"backend (device {self.device}): {error}"
                ) from error

    def to_numpy(self, array, copy=False):
        """``array`` as a host NumPy array; ``copy=True`` guarantees it shares no memory."""
        raise NotImplementedError

    def owns(self, array):
        return isinstance(array, self.array_types)

    def synchronize(self):
        """Wait for queued device work (a no-op on the CPU)."""

    # -- random numbers (host draws moved here; see random.py) ----------
    def random_uniform(self, shape, dtype="float32", low=0.0, high=1.0):
        return self.asarray(_HOST_RANDOM.uniform(shape, low, high), dtype)

    def random_normal(self, shape, dtype="float32", mean=0.0, stddev=1.0):
        return self.asarray(_HOST_RANDOM.normal(shape, mean, stddev), dtype)

    def random_truncated_normal(self, shape, dtype="float32", mean=0.0, stddev=1.0):
        return self.asarray(_HOST_RANDOM.truncated_normal(shape, mean, stddev), dtype)

    def random_bits(self, shape, keep_probability, dtype="float32"):
        """A 0/1 mask (in ``dtype``) with ones at probability ``keep_probability``."""
        return self.asarray(_HOST_RANDOM.uniform(shape) < keep_probability, dtype)

    def seed(self, seed):
        """Reseed any device generator of this backend (host draws are seeded globally)."""

    def __repr__(self):
        return f"<dlx backend {self.name!r} on {self.device}>"


# ---------------------------------------------------------------------------
_FACTORIES = {}  # name -> callable returning a Backend
_INSTANCES = {}  # name -> Backend, created on first use
_TYPE_CACHE = {}  # array class -> Backend
_CURRENT = None
_KERNELS_ENABLED = os.environ.get("DLX_KERNELS", "").lower() != "generic"
_HOST_RANDOM = HostRandom(None)


def register_backend(name, factory):
    """Make ``factory()`` (returning a :class:`Backend`) available as ``name``."""
    _FACTORIES[name] = factory
    _INSTANCES.pop(name, None)
    _TYPE_CACHE.clear()


def list_backends():
    """Names of all registered backends (whether or not they can run here)."""
    return sorted(_FACTORIES)


def _instance(name):
    if name not in _INSTANCES:
        if name not in _FACTORIES:
            raise ValueError(
                f"Unknown backend {name!r}; registered backends are {list_backends()}."
            )
        backend = _FACTORIES[name]()
        backend.name = name
        _INSTANCES[name] = backend
        for array_type in backend.array_types:
            _TYPE_CACHE.setdefault(array_type, backend)
    return _INSTANCES[name]


def set_backend(name):
    """Make ``name`` the backend new arrays (weights, host inputs) are created on."""
    global _CURRENT
    _CURRENT = _instance(name)
    # two backends may own one array class (numpy and cuda_emulation both hold
    # NumPy arrays): the current one wins, so ownership is looked up afresh
    _TYPE_CACHE.clear()
    return _CURRENT


def get_backend():
    """The current backend (``DLX_BACKEND`` or ``numpy`` until ``set_backend`` is called)."""
    if _CURRENT is None:
        set_backend(os.environ.get("DLX_BACKEND", "numpy"))
    return _CURRENT


# Array modules whose arrays a built-in backend owns, found by the array's module.
_MODULE_TO_BACKEND = {"numpy": "numpy", "array_api_strict": "array_api_strict", "cupy": "cupy"}


def _owner_or_none(array):
    cls = type(array)
    backend = _TYPE_CACHE.get(cls)
    if backend is not None:
        return backend
    if _CURRENT is not None and _CURRENT.owns(array):
        _TYPE_CACHE[cls] = _CURRENT
        return _CURRENT
    for backend in _INSTANCES.values():
        if backend.owns(array):
            _TYPE_CACHE[cls] = backend
            return backend
    module = cls.__module__.split(".")[0]
    if module in _MODULE_TO_BACKEND and _MODULE_TO_BACKEND[module] in _FACTORIES:
        backend = _instance(_MODULE_TO_BACKEND[module])
        if backend.owns(array):
            _TYPE_CACHE[cls] = backend
            return backend
    return None


def backend_of(*arrays, op=None):
    """The backend that owns ``arrays`` (Python scalars and None are skipped).

    Raises :class:`DeviceMismatchError` naming both backends/devices when the
    arrays live in different places.
    """
    found = None
    for array in arrays:
        if array is None or isinstance(array, (int, float, bool, complex)):
            continue
        backend = _owner_or_none(array)
        if backend is None:
            raise TypeError(
                f"{op or 'dlx'}: expected an array of a registered backend, got {type(array)!r}"
            )
        if found is None:
            found = backend
        elif backend is not found:
            raise DeviceMismatchError(
                f"{op or 'dlx'}: cannot mix {found.name} arrays (device {found.device}) with "
                f"{backend.name} arrays (device {backend.device}) in one operation; move them "
                f"to one backend first (e.g. dlx.to_numpy or get_backend().asarray)."
            )
    return found if found is not None else get_backend()


def kernels_enabled():
    return _KERNELS_ENABLED


def set_kernels_enabled(enabled):
    """Turn every backend kernel table on or off (``DLX_KERNELS=generic`` starts it off)."""
    global _KERNELS_ENABLED
    _KERNELS_ENABLED = bool(enabled)


def set_seed(seed):
    """Seed the host generator and every created backend's device generator."""
    _HOST_RANDOM.seed(seed)
    for backend in _INSTANCES.values():
        backend.seed(seed)


def get_random_state():
    """The host generator's state (JSON-safe dict): saved in checkpoints so that a
    resumed ``fit`` draws the same shuffles and dropout masks as an uninterrupted one."""
    return _HOST_RANDOM.get_state()


def set_random_state(state):
    """Restore the host generator to a state from :func:`get_random_state`."""
    _HOST_RANDOM.set_state(state)


def permutation(n):
    """A seeded random permutation of ``range(n)`` as a host NumPy array (for shuffling data)."""
    return _HOST_RANDOM.permutation(n)


def warmup():
    """Compile/load every kernel of the current backend now instead of on first use."""
    backend = get_backend()
    if hasattr(backend, "warmup"):
        return backend.warmup()
    return {}


def _builtin(module_name, class_name):
    def factory():
        import importlib

        module = importlib.import_module(f"{__package__}.{module_name}")
        return getattr(module, class_name)()

    return factory


register_backend("numpy", _builtin("numpy_backend", "NumpyBackend"))
register_backend("array_api_strict", _builtin("strict_backend", "StrictBackend"))
register_backend("cupy", _builtin("cupy_backend", "CupyBackend"))
register_backend("cuda_emulation", _builtin("cuda_emulation_backend", "CudaEmulationBackend"))
