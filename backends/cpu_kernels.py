"""Compiled CPU kernels (``backends/cpu/*.cpp``) in the numpy backend's kernel table.

Each entry takes the arguments of the NumPy kernel it replaces and falls back to
it for what it does not handle (no compiler, ``DLX_KERNELS=numpy``, a dtype other
than float32/float64, arrays that are not C-contiguous). Tests compare every
entry with the generic op, as for any kernel.
"""

import ctypes

import numpy as np

from . import cpu_library, numpy_kernels
from .blas_threads import openblas_symbol
from .host_arrays import plain

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
    _DENSE.clear()
    cpu_library.reset()


p = cpu_library.pointer


class _VariableTable:
    """Pointer arrays of one optimizer's weights and slots (which live as long as the model and
    are updated in place), so a step only looks up the addresses of the new gradients."""

    def __init__(self, weights, ms, vs):
        self.arrays = (*weights, *ms, *vs)  # held: their addresses stay valid
        self.shapes = [w.shape for w in weights]
        self.sizes = np.array([w.size for w in weights], np.int64)
        self.w, self.m, self.v = (
            np.array([p(a) for a in arrays], np.uintp) for arrays in (weights, ms, vs)
        )
        self.g = np.zeros(len(weights), np.uintp)

    def matches(self, weights, ms, vs):
        return all(a is b for a, b in zip(self.arrays, (*weights, *ms, *vs)))


_TABLES = {}  # ids of the weights -> _VariableTable


def _table(weights, ms, vs):
    """The cached table of these arrays, or None when one of them is not a plain array of the
    first weight's dtype (then each variable goes its own way)."""
    key = tuple(map(id, weights))
    table = _TABLES.get(key)
    if table is not None and table.matches(weights, ms, vs):
        return table
    dtype = weights[0].dtype
    if not all(
        plain(dtype, w, m, v) and w.shape == m.shape == v.shape for w, m, v in zip(weights, ms, vs)
    ):
        return None
    if len(_TABLES) > 16:  # models come and go in a long session
        _TABLES.clear()
    table = _TABLES[key] = _VariableTable(weights, ms, vs)
    return table


def adam_update_many(weights, grads, ms, vs, alpha, beta_1, beta_2, epsilon):
    """:func:`numpy_kernels.adam_update_many` in one pass per variable, one C call in all."""
    if not weights:
        return
    dtype = weights[0].dtype
    many = compiled("optimizers", "adam_many", dtype, _I, _P, _P, _P, _P, _P, _D, _D, _D, _D)
    table = _table(weights, ms, vs) if many is not None else None
    if table is not None:
        for k, g in enumerate(grads):
            if not (
                type(g) is np.ndarray
                and g.dtype == dtype
                and g.flags.c_contiguous
                and g.shape == table.shapes[k]
            ):
                break
            table.g[k] = p(g)
        else:
            many(
                len(weights),
                p(table.sizes),
                p(table.w),
                p(table.g),
                p(table.m),
                p(table.v),
                alpha,
                1 - beta_1,
                1 - beta_2,
                epsilon,
            )
            return
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


def _operand(a):
    """``(transposed, leading dimension)`` of a 2-D array the BLAS can read as it lies, or None."""
    if a.flags.c_contiguous:
        return False, max(a.shape[1], 1)
    if a.flags.f_contiguous:
        return True, max(a.shape[0], 1)
    return None


def _matmul_kernel(dtype):
    """``dlx_matmul_<f32|f64>``, or None without the library or without NumPy's OpenBLAS
    (whose ``cblas_?gemm`` the library calls)."""
    letter = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}.get(np.dtype(dtype))
    if letter is None or openblas_symbol(f"cblas_{letter}gemm") is None:
        return None
    return compiled(
        "matmul",
        "matmul",
        dtype,
        ctypes.c_int,
        ctypes.c_int,
        _I,
        _I,
        _I,
        _P,
        _I,
        _P,
        _I,
        _D,
        _P,
        _I,
    )


def matmul(a, b, out=None):
    """``a @ b`` for 2-D arrays, split over dlx's thread pool (``cpu/matmul.cpp``); ``out``
    (C-contiguous, ``(M, N)``) receives it when given. Transposed views (``w.T``) are read in
    place. Anything else goes to NumPy."""
    dtype = a.dtype
    kernel = None
    if type(a) is np.ndarray and type(b) is np.ndarray and a.ndim == b.ndim == 2:
        if b.dtype == dtype and a.shape[1] == b.shape[0]:
            kernel = _matmul_kernel(dtype)
    ops = kernel and (_operand(a), _operand(b))
    fits = out is None or (plain(dtype, out) and out.shape == (a.shape[0], b.shape[1]))
    if not ops or None in ops or not fits:
        return np.matmul(a, b, out=out) if out is not None else a @ b
    (ta, lda), (tb, ldb) = ops
    M, K = a.shape
    N = b.shape[1]
    if out is None:
        out = np.empty((M, N), dtype)
    if M and N and not K:
        out[...] = 0
    elif M and N:
        kernel(int(ta), int(tb), M, N, K, p(a), lda, p(b), ldb, 0.0, p(out), max(N, 1))
    return out


_DENSE = {}  # dtype -> (linear_forward, linear_backward) C functions, or None


def _dense_functions(dtype):
    """The C functions of the Dense kernels for ``dtype``, looked up once (a Dense step calls
    them six times: the checks and lookups cost more than the C call for small layers)."""
    found = _DENSE.get(dtype, False)
    if found is False:
        found = None
        if _matmul_kernel(dtype) is not None:
            found = (
                compiled(
                    "matmul", "linear_forward", dtype, _I, _I, _I, _P, _P, _P, ctypes.c_int, _P
                ),
                compiled("matmul", "linear_backward", dtype, _I, _I, _I, *[_P] * 8),
            )
            found = None if None in found else found
        _DENSE[dtype] = found
    return found


def linear_forward(x, kernel, bias, relu):
    """The Dense layer's ``x @ kernel + bias`` (then ReLU), x ``(M, K)``, kernel ``(K, N)``,
    bias ``(N,)`` or None, as one split product with the bias and ReLU done by each part;
    None when not handled."""
    dtype = x.dtype
    functions = _dense_functions(dtype)
    if (
        functions is None
        or x.ndim != 2
        or not plain(dtype, x, kernel)
        or not (bias is None or plain(dtype, bias))
        or 0 in x.shape
        or kernel.shape[1] == 0
    ):
        return None
    (M, K), N = x.shape, kernel.shape[1]
    y = np.empty((M, N), dtype)
    functions[0](M, N, K, p(x), p(kernel), None if bias is None else p(bias), int(relu), p(y))
    return y


def linear_backward(g, y, x, kernel, need_x, need_kernel, need_bias):
    """``(gx, g_kernel, g_bias)`` of :func:`linear_forward` given dL/dy ``g`` ``(M, N)`` and, for
    a fused ReLU, its output ``y`` (else None); unwanted ones are None. None when not handled."""
    dtype = g.dtype
    functions = _dense_functions(dtype)
    if type(g) is np.ndarray:
        g = np.ascontiguousarray(g)  # e.g. the broadcast ones of a sum's gradient
    if (
        functions is None
        or g.ndim != 2
        or not plain(dtype, g, x, kernel)
        or not (y is None or plain(dtype, y))
        or 0 in x.shape
        or kernel.shape[1] == 0
    ):
        return None
    (M, K), N = x.shape, kernel.shape[1]
    masked = g if y is None else np.empty_like(g)
    gx = np.empty((M, K), dtype) if need_x else None
    gk = np.empty((K, N), dtype) if need_kernel else None
    gb = np.empty(N, dtype) if need_bias else None
    functions[1](
        M,
        N,
        K,
        p(g),
        None if y is None else p(y),
        p(x),
        p(kernel),
        p(masked),
        None if gx is None else p(gx),
        None if gk is None else p(gk),
        None if gb is None else p(gb),
    )
    return gx, gk, gb


def _elementwise(source, name, x):
    """``name`` of ``backends/cpu/<source>.cpp`` applied to every element of ``x``, as a new
    array; None when not handled."""
    dtype = x.dtype
    f = compiled(source, name, dtype, _P, _P, _I)
    if f is None or not plain(dtype, x):
        return None
    y = np.empty_like(x)
    if x.size:
        f(p(x), p(y), x.size)
    return y


def erf(x):
    """The error function of ``x``, elementwise (libm's); None when not handled."""
    return _elementwise("special", "erf", x)


def take_backward(g, indices, input_shape, axis):
    """:func:`numpy_kernels.take_backward`, compiled for ``axis`` 0 (an Embedding's lookup):
    the rows of ``g`` added into zeros of ``input_shape`` at ``indices``."""
    dtype = g.dtype
    f = compiled("gather", "take_rows_backward", dtype, _I, _I, _P, _P, _I, _P)
    rows = input_shape[0] if input_shape else 0
    if (
        f is None
        or axis != 0
        or type(indices) is not np.ndarray
        or indices.dtype.kind not in "iu"
        or not plain(dtype, g)
        or g.shape != tuple(indices.shape) + tuple(input_shape[1:])
    ):
        return numpy_kernels.take_backward(g, indices, input_shape, axis)
    flat = np.ascontiguousarray(indices.reshape(-1), np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= rows):  # take wrapped them already
        flat = np.where(flat < 0, flat + rows, flat)
        if flat.min() < 0 or flat.max() >= rows:
            raise IndexError(f"take_backward: indices out of range for {rows} rows")
    out = np.empty(input_shape, dtype)
    width = out.size // rows if rows else 0
    f(flat.size, width, p(flat), p(g), rows, p(out))
    return out


def relu(x):
    """``maximum(x, 0)`` as a new array, over the pool; None when not handled."""
    return _elementwise("activations", "relu", x)


def relu_grad(g, y):
    """``where(y > 0, g, 0)`` over the pool (:func:`numpy_kernels.relu_grad` otherwise)."""
    dtype = y.dtype
    f = compiled("activations", "relu_grad", dtype, _P, _P, _P, _I)
    if type(g) is np.ndarray and g.dtype == dtype:
        g = np.ascontiguousarray(g)  # e.g. the broadcast ones of a sum's gradient
    if f is None or not plain(dtype, g, y) or g.shape != y.shape:
        return numpy_kernels.relu_grad(g, y)
    out = np.empty_like(y)
    if y.size:
        f(p(g), p(y), p(out), y.size)
    return out


CPU_KERNELS = {
    "relu": relu,
    "relu_grad": relu_grad,
    "erf": erf,
    "take_backward": take_backward,
    "matmul": matmul,
    "linear_forward": linear_forward,
    "linear_backward": linear_backward,
    "adam_update": adam_update,
    "adam_update_many": adam_update_many,
    "sgd_momentum_update": sgd_momentum_update,
    "rmsprop_update": rmsprop_update,
}

# the op families, each in a module of its own
from .cpu_conv import CPU_CONV_KERNELS  # noqa: E402
from .cpu_losses import CPU_LOSS_KERNELS  # noqa: E402
from .cpu_normalization import CPU_NORMALIZATION_KERNELS  # noqa: E402
from .cpu_pool import CPU_POOL_KERNELS  # noqa: E402
from .cpu_rnn import CPU_RNN_KERNELS  # noqa: E402

CPU_KERNELS.update(CPU_CONV_KERNELS)
CPU_KERNELS.update(CPU_LOSS_KERNELS)
CPU_KERNELS.update(CPU_NORMALIZATION_KERNELS)
CPU_KERNELS.update(CPU_POOL_KERNELS)
CPU_KERNELS.update(CPU_RNN_KERNELS)
