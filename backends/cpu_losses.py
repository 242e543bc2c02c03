"""Compiled CPU kernels for the loss math (``backends/cpu/losses.cpp``).

``sparse_softmax_cross_entropy`` and its backward replace the NumPy kernels of the
same names (:mod:`numpy_kernels`) for float32/float64 logits ``(..., classes)`` and
integer labels ``(...)``: one C call each instead of some ten NumPy calls, which for
a classifier's small logits (mlp_train: 128 x 10) cost more than the arithmetic.
Labels outside ``[0, classes)`` raise the NumPy kernel's ValueError, found while
the forward runs. Anything else (other dtypes, strided arrays) goes to the NumPy kernels.
"""

import ctypes

import numpy as np

from . import cpu_library, numpy_kernels
from .host_arrays import plain

_P, _I = ctypes.c_void_p, ctypes.c_int64
p = cpu_library.pointer


def _functions(dtype):
    """The compiled forward and backward for ``dtype``, or None (then fall back)."""
    from . import cpu_kernels  # here: cpu_kernels imports this module at its end

    forward = cpu_kernels.compiled(
        "losses", "sparse_softmax_cross_entropy", dtype, _I, _I, _P, _P, _P, _P, _P
    )
    backward = cpu_kernels.compiled(
        "losses", "sparse_softmax_cross_entropy_backward", dtype, _I, _I, _P, _I, _P, _P, _P
    )
    return None if forward is None or backward is None else (forward, backward)


def _int64_labels(labels):
    if plain(np.int64, labels):
        return labels
    if type(labels) is np.ndarray and labels.dtype.kind in "iu":
        return np.ascontiguousarray(labels, np.int64)
    return None


def sparse_softmax_cross_entropy(logits, labels):
    """Per-sample ``-log_softmax(logits)[label]`` ``(...)`` and the softmax ``(..., classes)``."""
    functions = _functions(logits.dtype)
    labels64 = _int64_labels(labels) if functions is not None else None
    if labels64 is None or not plain(logits.dtype, logits) or logits.ndim < 1:
        return numpy_kernels.sparse_softmax_cross_entropy(logits, labels)
    classes = logits.shape[-1]
    rows = labels64.size
    if rows * classes != logits.size or classes == 0:
        return numpy_kernels.sparse_softmax_cross_entropy(logits, labels)
    loss = np.empty(labels64.shape, logits.dtype)
    probabilities = np.empty(logits.shape, logits.dtype)
    bad_row = np.empty(1, np.int64)
    functions[0](rows, classes, p(logits), p(labels64), p(loss), p(probabilities), p(bad_row))
    if bad_row[0] >= 0:
        raise numpy_kernels.label_range_error(labels64, classes)
    return loss, probabilities


def sparse_softmax_cross_entropy_backward(g, probabilities, labels):
    """``g[..., None] * (softmax - one_hot(labels))``; ``g`` is per sample or one value."""
    dtype = probabilities.dtype
    functions = _functions(dtype)
    labels64 = _int64_labels(labels) if functions is not None else None
    g = np.asarray(g) if functions is not None else g
    if (
        labels64 is None
        or not plain(dtype, probabilities)
        or g.dtype != dtype
        or not (g.ndim == 0 or (g.shape == labels64.shape and g.flags.c_contiguous))
        or labels64.size * (probabilities.shape[-1] if probabilities.ndim else 0)
        != probabilities.size
    ):
        return numpy_kernels.sparse_softmax_cross_entropy_backward(g, probabilities, labels)
    grad = np.empty_like(probabilities)
    functions[1](
        labels64.size,
        probabilities.shape[-1],
        p(g),
        0 if g.ndim == 0 else 1,
        p(probabilities),
        p(labels64),
        p(grad),
    )
    return grad


CPU_LOSS_KERNELS = {
    "sparse_softmax_cross_entropy": sparse_softmax_cross_entropy,
    "sparse_softmax_cross_entropy_backward": sparse_softmax_cross_entropy_backward,
}
