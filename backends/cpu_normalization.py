"""Compiled CPU kernels for batch and layer normalization (``backends/cpu/normalization.cpp``).

``batch_norm_forward``/``_backward`` handle the training-time batch normalization of
``x`` ``(..., C)`` over every axis but the last (Keras's default ``axis=-1``, channels
last); ``layer_norm_forward``/``_backward`` the layer normalization of ``x`` over its
last axis. Two passes over ``x`` each, where the generic op makes some ten NumPy passes
(for a 64 x 26 x 26 x 32 convolution output, about 1 ms each). Sums are taken in
double precision, those over rows in fixed blocks, so results do not depend on the
thread count. They return None for anything else (then the generic op runs).
"""

import ctypes

import numpy as np

from . import cpu_library
from .host_arrays import plain

_P, _I, _D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
p = cpu_library.pointer


def _function(name, dtype):
    from . import cpu_kernels  # here: cpu_kernels imports this module at its end

    if name == "batch_norm_forward":
        return cpu_kernels.compiled("normalization", name, dtype, _I, _I, _P, _P, _P, _D, *[_P] * 4)
    if name == "layer_norm_forward":
        return cpu_kernels.compiled("normalization", name, dtype, _I, _I, _P, _P, _P, _D, *[_P] * 3)
    return cpu_kernels.compiled("normalization", name, dtype, _I, _I, *[_P] * 8)


def _optional(dtype, C, *arrays):
    return all(a is None or (plain(dtype, a) and a.shape == (C,)) for a in arrays)


def batch_norm_forward(x, gamma, beta, epsilon):
    """``(y, mean, var, inv)`` of ``x`` ``(..., C)`` normalized over all axes but the last,
    the last three ``(C,)``; ``gamma``/``beta`` ``(C,)`` or None. None when not handled."""
    if x.ndim < 2:
        return None
    return _forward("batch_norm_forward", x.shape[-1:], 3, x, gamma, beta, epsilon)


def _forward(name, stats_shape, statistics, x, gamma, beta, epsilon):
    """Both forward kernels: ``y`` then ``statistics`` arrays of ``stats_shape``."""
    dtype = x.dtype
    f = _function(name, dtype)
    if f is None or not plain(dtype, x) or 0 in x.shape:
        return None
    C = x.shape[-1]
    if not _optional(dtype, C, gamma, beta):
        return None
    outputs = [np.empty_like(x)] + [np.empty(stats_shape, dtype) for _ in range(statistics)]
    affine = (None if a is None else p(a) for a in (gamma, beta))
    f(x.size // C, C, p(x), *affine, float(epsilon), *map(p, outputs))
    return tuple(outputs)


def batch_norm_backward(g, x, mean, inv, gamma, need_x, need_gamma, need_beta):
    """``(gx, dgamma, dbeta)`` of :func:`batch_norm_forward` given dL/dy ``g``; unwanted ones
    are None. None when not handled. ``mean``/``inv``: ``(C,)``."""
    return _backward(
        "batch_norm_backward", (x.shape[-1],), g, x, mean, inv, gamma, need_x, need_gamma, need_beta
    )


def layer_norm_forward(x, gamma, beta, epsilon):
    """``(y, mean, inv)`` of ``x`` ``(..., C)`` normalized over its last axis, ``mean`` and
    ``inv`` (``1 / sqrt(var + epsilon)``) of shape ``x.shape[:-1]``; ``gamma``/``beta``
    ``(C,)`` or None. None when not handled."""
    if x.ndim < 1:
        return None
    return _forward("layer_norm_forward", x.shape[:-1], 2, x, gamma, beta, epsilon)


def layer_norm_backward(g, x, mean, inv, gamma, need_x, need_gamma, need_beta):
    """``(gx, dgamma, dbeta)`` of :func:`layer_norm_forward` given dL/dy ``g``; unwanted ones
    are None. None when not handled. ``mean``/``inv``: ``x.shape[:-1]``."""
    return _backward(
        "layer_norm_backward", x.shape[:-1], g, x, mean, inv, gamma, need_x, need_gamma, need_beta
    )


def _backward(name, stats_shape, g, x, mean, inv, gamma, need_x, need_gamma, need_beta):
    """Both backward kernels take the same arguments; only the statistics' shape differs."""
    dtype = x.dtype
    f = _function(name, dtype)
    C = x.shape[-1]
    if type(g) is np.ndarray and g.dtype == dtype:
        g = np.ascontiguousarray(g)  # e.g. the broadcast ones of a sum's gradient
    if (
        f is None
        or not plain(dtype, g, x, mean, inv)
        or g.shape != x.shape
        or mean.shape != stats_shape
        or inv.shape != stats_shape
        or not _optional(dtype, C, gamma)
    ):
        return None
    gx = np.empty_like(x) if need_x else None
    dgamma = np.empty(C, dtype) if need_gamma else None
    dbeta = np.empty(C, dtype) if need_beta else None
    optional = (None if a is None else p(a) for a in (gamma, gx, dgamma, dbeta))
    f(x.size // C, C, p(g), p(x), p(mean), p(inv), *optional)
    return gx, dgamma, dbeta


CPU_NORMALIZATION_KERNELS = {
    "layer_norm_forward": layer_norm_forward,
    "layer_norm_backward": layer_norm_backward,
    "batch_norm_forward": batch_norm_forward,
    "batch_norm_backward": batch_norm_backward,
}
