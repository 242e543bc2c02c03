"""dlx: a readable deep-learning library on the Python Array API.

The same model code runs on NumPy (CPU), ``array_api_strict`` and CuPy (GPU);
``dlx.set_backend`` decides where new arrays are created.
"""

from . import backends
from .autograd import Function, Tensor, Variable, enable_grad, is_grad_enabled, no_grad
from .backends import get_backend, list_backends, set_backend
from .config import epsilon, floatx, set_epsilon, set_floatx

__version__ = "0.1.0"


def set_seed(seed):
    """Seed every random draw dlx makes: same seed -> identical weights on every backend."""
    backends.set_seed(seed)


def to_numpy(x):
    """A Tensor or backend array as a host ``numpy.ndarray``."""
    if isinstance(x, Tensor):
        x = x.value
    owner = backends.registry._owner_or_none(x)
    if owner is None:
        import numpy  # host boundary: plain Python data

        return numpy.asarray(x)
    return owner.to_numpy(x)


def asarray(x, dtype=None):
    """``x`` (host data or another backend's array) on the current backend."""
    return get_backend().asarray(x, dtype)


def from_dlpack(x):
    """An array of another library (PyTorch, JAX, CuPy... anything with ``__dlpack__``) as an
    array of the current backend, sharing memory where the devices match (no copy)."""
    return get_backend().from_dlpack(x)


# the levels above autograd, imported in order (each needs only those before it)
from . import (  # noqa: E402  # noqa: E402
    callbacks,
    data,  # noqa: E402
    initializers,
    layers,  # noqa: E402
    losses,
    metrics,
    ops,  # noqa: E402
    optimizers,
    regularizers,
)
from .models import Model, NonFiniteLossError, Sequential  # noqa: E402
from .models.saving import load_model  # noqa: E402
from .models.serialization import register_serializable  # noqa: E402
from .plotting import plot_history  # noqa: E402


def __getattr__(name):
    """``dlx.distributed`` loads on first use (it never imports mpi4py before ``init()``);
    so does ``dlx.onnx`` (importing dlx never imports onnx/onnxruntime)."""
    if name in ("distributed", "onnx"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Function",
    "Model",
    "NonFiniteLossError",
    "Sequential",
    "Tensor",
    "Variable",
    "asarray",
    "from_dlpack",
    "backends",
    "callbacks",
    "data",
    "enable_grad",
    "epsilon",
    "floatx",
    "get_backend",
    "initializers",
    "is_grad_enabled",
    "layers",
    "list_backends",
    "load_model",
    "losses",
    "metrics",
    "no_grad",
    "ops",
    "optimizers",
    "plot_history",
    "register_serializable",
    "regularizers",
    "set_backend",
    "set_epsilon",
    "set_floatx",
    "set_seed",
    "to_numpy",
]
