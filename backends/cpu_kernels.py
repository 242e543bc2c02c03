"""Compiled CPU kernels (``backends/cpu/*.cpp``) in the numpy backend's kernel table.

Each entry takes the arguments of the NumPy kernel it replaces and falls back to
it for what it does not handle (no compiler, ``DLX_KERNELS=numpy``, a dtype other
than float32/float64, arrays that are not C-contiguous). Tests compare every
entry with the generic op, as for any kernel.
"""

import ctypes

import numpy as np

from . import cpu_library, numpy_kernels

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_FUNCTIONS = {}  # (name, dtype) -> ctypes function or None
_P = ctypes.c_void_p
_I = ctypes.c_int64
_D = ctypes.c_double


def compiled(source, name, dtype, *argtypes):
    """``dlx_<name>_<f32|f64>`` for ``dtype`` from ``backends/cpu/<source>.cpp``, or
    ``None`` (then fall back)."""
    key = (source, name, dtype)
    if key not in _FUNCTIONS:
        suffix = _SUFFIX.get(np.dtype(dtype))
        found = None
        if suffix is not None:
            found = cpu_library.function(source, f"dlx_{name}_{suffix}", *argtypes)
        _FUNCTIONS[key] = found
    return _FUNCTIONS[key]


def forget():
    """Drop the looked-up functions (tests that switch the library off and on)."""
    _FUNCTIONS.clear()
    cpu_library.reset()


def plain(dtype, *arrays):
    """Whether every array is a C-contiguous ``np.ndarray`` of ``dtype``."""
    return all(type(a) is np.ndarray and a.dtype == dtype and a.flags.c_contiguous for a in arrays)


p = cpu_library.pointer


def adam_update_many(weights, grads, ms, vs, alpha, beta_1, beta_2, epsilon):
    """:func:`numpy_kernels.adam_update_many` in one pass per variable."""
    rest = []
    for w, g, m, v in zip(weights, grads, ms, vs):
        kernel = compiled("optimizers", "adam", w.dtype, _P, _P, _P, _P, _I, _D, _D, _D, _D)
        if kernel is None or not plain(w.dtype, w, g, m, v) or w.shape != g.shape:
            rest.append((w, g, m, v))
            continue
        kernel(p(w), p(g), p(m), p(v), w.size, alpha, 1 - beta_1, 1 - beta_2, epsilon)
    if rest:
        numpy_kernels.adam_update_many(*zip(*rest), alpha, beta_1, beta_2, epsilon)


def adam_update(w, g, m, v, alpha, beta_1, beta_2, epsilon):
    adam_update_many((w,), (g,), (m,), (v,), alpha, beta_1, beta_2, epsilon)


def sgd_momentum_update(w, g, m, lr, momentum, nesterov):
    """SGD with momentum in place (``dlx/optimizers/sgd.py``'s rule); False when not handled."""
    kernel = compiled("optimizers", "sgd_momentum", w.dtype, _P, _P, _P, _I, _D, _D, ctypes.c_int)
    if kernel is None or not plain(w.dtype, w, g, m) or not w.shape == g.shape == m.shape:
        return False
    kernel(p(w), p(g), p(m), w.size, lr, momentum, int(bool(nesterov)))
    return True


def rmsprop_update(w, g, v, m, lr, rho, epsilon, momentum):
    """RMSprop (not centered) in place; ``m`` is None without momentum. False when not handled."""
    kernel = compiled("optimizers", "rmsprop", w.dtype, _P, _P, _P, _P, _I, _D, _D, _D, _D, _D)
    arrays = (w, g, v) if m is None else (w, g, v, m)
    if kernel is None or not plain(w.dtype, *arrays) or any(a.shape != w.shape for a in arrays):
        return False
    kernel(
        p(w), p(g), p(v), None if m is None else p(m), w.size, lr, rho, 1 - rho, epsilon, momentum
    )
    return True


CPU_KERNELS = {
    "adam_update": adam_update,
    "adam_update_many": adam_update_many,
    "sgd_momentum_update": sgd_momentum_update,
    "rmsprop_update": rmsprop_update,
}

# the op families, each in a module of its own
from .cpu_conv import CPU_CONV_KERNELS  # noqa: E402
from .cpu_pool import CPU_POOL_KERNELS  # noqa: E402
from .cpu_rnn import CPU_RNN_KERNELS  # noqa: E402

CPU_KERNELS.update(CPU_CONV_KERNELS)
CPU_KERNELS.update(CPU_POOL_KERNELS)
CPU_KERNELS.update(CPU_RNN_KERNELS)
