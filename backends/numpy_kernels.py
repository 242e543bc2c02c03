"""NumPy fast paths registered in the numpy backend's kernel table.

Each computes what the generic op computes, but with ``out=`` arguments and
reused scratch buffers: on a 2-core CPU the cost of the small elementwise
steps of training is dominated by allocating and first-touching temporaries.
"""

import numpy as np

KERNELS = {}
_SCRATCH = {}


def scratch(shape, dtype, slot=0):
    """A reusable uninitialised buffer (one per shape, dtype and slot)."""
    key = (tuple(shape), np.dtype(dtype).str, slot)
    buffer = _SCRATCH.get(key)
    if buffer is None:
        buffer = _SCRATCH[key] = np.empty(shape, dtype)
    return buffer


def adam_update(w, g, m, v, alpha, beta_1, beta_2, epsilon):
    """In place: ``m += (g - m)(1 - b1)``; ``v += (g^2 - v)(1 - b2)``; ``w -= alpha m / (sqrt(v) + eps)``."""
    t = scratch(w.shape, w.dtype)
    np.subtract(g, m, out=t)
    t *= 1 - beta_1
    m += t
    np.multiply(g, g, out=t)
    t -= v
    t *= 1 - beta_2
    v += t
    np.sqrt(v, out=t)
    t += epsilon
    np.divide(m, t, out=t)
    t *= alpha
    w -= t


KERNELS["adam_update"] = adam_update


def sparse_softmax_cross_entropy(logits, labels):
    """Per-sample ``-log_softmax(logits)[label]`` ``(...)`` and the softmax ``(..., classes)``."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    probabilities = np.exp(shifted)
    sums = probabilities.sum(axis=-1, keepdims=True)
    picked = np.take_along_axis(shifted, labels[..., None].astype(np.intp), axis=-1)
    loss = (np.log(sums) - picked)[..., 0]
    probabilities /= sums
    return loss, probabilities


def sparse_softmax_cross_entropy_backward(g, probabilities, labels):
    """``g[..., None] * (softmax - one_hot(labels))`` without building the one-hot matrix."""
    grad = probabilities.copy()
    flat = grad.reshape(-1, grad.shape[-1])
    flat[np.arange(flat.shape[0]), labels.reshape(-1)] -= 1
    grad *= g[..., None]
    return grad


KERNELS["sparse_softmax_cross_entropy"] = sparse_softmax_cross_entropy
KERNELS["sparse_softmax_cross_entropy_backward"] = sparse_softmax_cross_entropy_backward


# kernels of the op families, each in a module of its own
from .numpy_conv import CONV_KERNELS  # noqa: E402

KERNELS.update(CONV_KERNELS)

from .numpy_rnn import RNN_KERNELS  # noqa: E402

KERNELS.update(RNN_KERNELS)
