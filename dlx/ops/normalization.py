"""Normalization as fused Functions with analytic backward passes.

All three normalizations compute

    y = (x - mean) / sqrt(var + epsilon) * gamma + beta

and differ only in the axes the statistics are taken over:

* batch normalization: every axis except the feature axes (``axis``),
* layer normalization: the feature axes (``axis``) of each sample,
* group normalization: each group of channels (and every non-batch axis) of each sample.

``var`` is the biased variance ``mean((x - mean)**2)`` (Keras 3 and PyTorch
both normalize with it). ``gamma``/``beta`` have the shape of the feature
axes of ``x`` (in axis order) and may be None. Each op is a single Function
so the backward pass is one fused formula, not a chain of small ops:

    xhat = (x - mean) * inv,  inv = 1/sqrt(var + eps)
    dxhat = dy * gamma
    dx = inv * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))   (means over the statistics axes)
    dgamma = sum(dy * xhat), dbeta = sum(dy)                        (sums over the non-feature axes)
"""

import math

from ..autograd import Function
from ._util import normalize_axes, sum_to_shape


def _param_broadcast_shape(shape, feature_axes):
    """Shape of gamma/beta broadcast against ``shape``: feature axes kept, others 1."""
    return tuple(s if i in feature_axes else 1 for i, s in enumerate(shape))


class _Normalize(Function):
    """Normalize ``x`` over ``stat_axes`` (of ``x`` reshaped to ``group_shape`` if given),
    then scale and shift by ``gamma``/``beta`` of the ``feature_axes`` of ``x``.

    After forward, ``self.mean`` and ``self.var`` hold the statistics (keepdims,
    in the grouped view) — batch normalization reads them for its moving averages.
    """

    def __init__(self, stat_axes, feature_axes, epsilon, group_shape=None):
        self.stat_axes = tuple(stat_axes)
        self.feature_axes = tuple(feature_axes)
        self.epsilon = float(epsilon)
        self.group_shape = group_shape

    x = None  # the input, kept when the batch_norm kernel ran (its backward recomputes xhat)

    def forward(self, x, gamma=None, beta=None):
        xp = self.xp
        self.x_shape = tuple(x.shape)
        self.param_shape = _param_broadcast_shape(self.x_shape, self.feature_axes)
        y = self._kernel_forward(x, gamma, beta)
        if y is not None:
            return y
        xs = xp.reshape(x, self.group_shape) if self.group_shape is not None else x
        mean = xp.mean(xs, axis=self.stat_axes, keepdims=True)
        centered = xs - mean
        var = xp.mean(centered * centered, axis=self.stat_axes, keepdims=True)
        inv = 1.0 / xp.sqrt(var + self.epsilon)
        xhat = centered * inv
        if self.group_shape is not None:
            xhat = xp.reshape(xhat, self.x_shape)
        self.mean, self.var, self.inv, self.xhat = mean, var, inv, xhat
        self.gamma = None if gamma is None else xp.reshape(gamma, self.param_shape)
        self.has_beta = beta is not None
        y = xhat if self.gamma is None else xhat * self.gamma
        if beta is not None:
            y = y + xp.reshape(beta, self.param_shape)
        return y

    def _kernel_kind(self):
        """``"batch_norm"`` for statistics over every axis but the last (batch normalization,
        channels last), ``"layer_norm"`` for statistics over the last axis alone, else None:
        the layouts the backends' normalization kernels take."""
        last = len(self.x_shape) - 1
        if self.group_shape is not None or self.feature_axes != (last,):
            return None
        if self.stat_axes == tuple(range(last)):
            return "batch_norm"
        return "layer_norm" if self.stat_axes == (last,) else None

    def _kernel_forward(self, x, gamma, beta):
        """y from the backend's ``batch_norm_forward`` or ``layer_norm_forward``, or None
        (then the generic code runs)."""
        kind = self._kernel_kind()
        kernel = self.backend.kernel(f"{kind}_forward") if kind is not None else None
        result = kernel(x, gamma, beta, self.epsilon) if kernel is not None else None
        if result is None:
            return None
        xp = self.xp
        if kind == "batch_norm":
            y, mean, var, inv = result
            self.mean, self.var, self.inv = (
                xp.reshape(a, self.param_shape) for a in (mean, var, inv)
            )
        else:  # per-row statistics, kept flat: only the backward reads them
            y, self.mean, self.inv = result
            self.var = None
        self.kind, self.x, self.gamma_flat = kind, x, gamma
        self.gamma = None if gamma is None else xp.reshape(gamma, self.param_shape)
        return y

    def backward(self, g):
        xp = self.xp
        need_x, need_gamma, need_beta = (tuple(self.needs_input_grad) + (False, False))[:3]
        if self.x is not None:  # the forward ran a normalization kernel
            kernel = self.backend.kernel(f"{self.kind}_backward")
            stats = self.x_shape[-1] if self.kind == "batch_norm" else self.x_shape[:-1]
            mean, inv = xp.reshape(self.mean, stats), xp.reshape(self.inv, stats)
            grads = None
            if kernel is not None:
                grads = kernel(g, self.x, mean, inv, self.gamma_flat, need_x, need_gamma, need_beta)
            if grads is not None:
                return grads
            if self.kind == "layer_norm":  # the generic formula wants keepdims statistics
                mean, inv = (xp.reshape(a, self.x_shape[:-1] + (1,)) for a in (mean, inv))
            else:
                mean, inv = self.mean, self.inv
            self.inv = inv
            self.xhat = (self.x - mean) * inv
        xhat = self.xhat
        gx = ggamma = gbeta = None
        if need_x:
            dxhat = g if self.gamma is None else g * self.gamma
            xh = xhat
            if self.group_shape is not None:
                dxhat = xp.reshape(dxhat, self.group_shape)
                xh = xp.reshape(xhat, self.group_shape)
            axes = self.stat_axes
            gx = self.inv * (
                dxhat
                - xp.mean(dxhat, axis=axes, keepdims=True)
                - xh * xp.mean(dxhat * xh, axis=axes, keepdims=True)
            )
            if self.group_shape is not None:
                gx = xp.reshape(gx, self.x_shape)
        if need_gamma:
            ggamma = _reduce_to_params(xp, g * xhat, self.param_shape, self.feature_axes)
        if need_beta:
            gbeta = _reduce_to_params(xp, g, self.param_shape, self.feature_axes)
        return gx, ggamma, gbeta

    def release(self):
        super().release()
        self.xhat = self.inv = self.gamma = self.gamma_flat = self.x = None


class _NormalizeWithStats(Function):
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` with given (constant) ``mean``/``var``
    of the feature axes' shape: batch normalization at inference."""

    def __init__(self, feature_axes, epsilon):
        self.feature_axes = tuple(feature_axes)
        self.epsilon = float(epsilon)

    def forward(self, x, mean, var, gamma=None, beta=None):
        xp = self.xp
        self.param_shape = _param_broadcast_shape(tuple(x.shape), self.feature_axes)
        mean = xp.reshape(mean, self.param_shape)
        self.inv = 1.0 / xp.sqrt(xp.reshape(var, self.param_shape) + self.epsilon)
        self.gamma = None if gamma is None else xp.reshape(gamma, self.param_shape)
        self.xhat = (x - mean) * self.inv if self.needs_input_grad[3:4] == (True,) else None
        scale = self.inv if self.gamma is None else self.inv * self.gamma
        y = (x - mean) * scale
        if beta is not None:
            y = y + xp.reshape(beta, self.param_shape)
        return y

    def backward(self, g):
        xp = self.xp
        need = tuple(self.needs_input_grad) + (False,) * 5
        gx = ggamma = gbeta = None
        if need[0]:
            gx = g * (self.inv if self.gamma is None else self.inv * self.gamma)
        if need[3]:
            ggamma = _reduce_to_params(xp, g * self.xhat, self.param_shape, self.feature_axes)
        if need[4]:
            gbeta = _reduce_to_params(xp, g, self.param_shape, self.feature_axes)
        return gx, None, None, ggamma, gbeta

    def release(self):
        super().release()
        self.xhat = self.inv = self.gamma = None


def _reduce_to_params(xp, g, param_shape, feature_axes):
    """Sum ``g`` over the non-feature axes and drop them: the shape of gamma/beta."""
    g = sum_to_shape(xp, g, param_shape)
    return xp.reshape(g, tuple(param_shape[a] for a in feature_axes))


def _feature_axes(axis, ndim, op):
    try:
        return normalize_axes(axis, ndim)
    except ValueError as error:
        raise ValueError(f"{op}: {error}") from None


def _check_param(name, param, expected, x_shape, op):
    if param is not None and tuple(param.shape) != expected:
        raise ValueError(
            f"{op}: {name} has shape {tuple(param.shape)} but the feature axes of an input of "
            f"shape {x_shape} need {expected}"
        )


def _args(*tensors):
    """Trailing None arguments dropped (a Function takes them positionally)."""
    args = list(tensors)
    while args and args[-1] is None:
        args.pop()
    return args


def batch_normalization(
    x,
    gamma=None,
    beta=None,
    axis=-1,
    epsilon=1e-3,
    mean=None,
    variance=None,
    return_statistics=False,
):
    """Batch normalization of ``x`` with feature axes ``axis`` (int or sequence).

    Without ``mean``/``variance`` the statistics are those of the batch (every axis
    but ``axis``); with them (arrays of the feature axes' shape, e.g. moving averages)
    those are used and get no gradient. ``gamma``/``beta``: the feature axes' shape.
    With ``return_statistics`` returns ``(y, mean, variance)`` where the statistics
    are plain arrays of the feature axes' shape (the biased batch variance).
    """
    ndim = len(x.shape)
    features = _feature_axes(axis, ndim, "batch_normalization")
    expected = tuple(x.shape[a] for a in features)
    _check_param("gamma", gamma, expected, tuple(x.shape), "batch_normalization")
    _check_param("beta", beta, expected, tuple(x.shape), "batch_normalization")
    if (mean is None) != (variance is None):
        raise ValueError("batch_normalization: give both mean and variance, or neither")
    if mean is not None:
        mean = mean.value if hasattr(mean, "creator") else mean
        variance = variance.value if hasattr(variance, "creator") else variance
        _check_param("mean", mean, expected, tuple(x.shape), "batch_normalization")
        _check_param("variance", variance, expected, tuple(x.shape), "batch_normalization")
        y = _NormalizeWithStats(features, epsilon)(*_args(x, mean, variance, gamma, beta))
        return (y, mean, variance) if return_statistics else y
    stat_axes = tuple(a for a in range(ndim) if a not in features)
    fn = _Normalize(stat_axes, features, epsilon)
    y = fn(*_args(x, gamma, beta))
    if not return_statistics:
        return y
    xp = fn.xp
    return y, xp.reshape(fn.mean, expected), xp.reshape(fn.var, expected)


def layer_normalization(x, gamma=None, beta=None, axis=-1, epsilon=1e-3):
    """Layer normalization: statistics over ``axis`` (int or sequence) of each sample;
    ``gamma``/``beta`` have the shape of those axes."""
    features = _feature_axes(axis, len(x.shape), "layer_normalization")
    expected = tuple(x.shape[a] for a in features)
    _check_param("gamma", gamma, expected, tuple(x.shape), "layer_normalization")
    _check_param("beta", beta, expected, tuple(x.shape), "layer_normalization")
    return _Normalize(features, features, epsilon)(*_args(x, gamma, beta))


def group_normalization(x, gamma=None, beta=None, groups=32, axis=-1, epsilon=1e-3):
    """Group normalization: the channels of ``axis`` are split into ``groups`` groups and
    each sample is normalized per group over the group's channels and every other
    non-batch axis. ``gamma``/``beta``: ``(channels,)``."""
    shape = tuple(x.shape)
    ndim = len(shape)
    (channel_axis,) = _feature_axes(axis, ndim, "group_normalization")
    if channel_axis == 0:
        raise ValueError("group_normalization: axis must not be the batch axis 0")
    channels = shape[channel_axis]
    if groups <= 0 or channels % groups:
        raise ValueError(
            f"group_normalization: {channels} channels (axis {axis} of shape {shape}) cannot be "
            f"split into {groups} groups"
        )
    _check_param("gamma", gamma, (channels,), shape, "group_normalization")
    _check_param("beta", beta, (channels,), shape, "group_normalization")
    group_shape = shape[:channel_axis] + (groups, channels // groups) + shape[channel_axis + 1 :]
    stat_axes = tuple(a for a in range(1, ndim + 1) if a != channel_axis)
    fn = _Normalize(stat_axes, (channel_axis,), epsilon, group_shape=group_shape)
    return fn(*_args(x, gamma, beta))


def moving_average_update(moving, batch_value, momentum):
    """Keras's rule ``moving * momentum + batch_value * (1 - momentum)`` (arrays, no gradient)."""
    if not 0 <= momentum <= 1 or math.isnan(momentum):
        raise ValueError(f"moving_average_update: momentum must be in [0, 1], got {momentum}")
    return moving * momentum + batch_value * (1.0 - momentum)
