"""BatchNormalization (Keras 3 semantics).

Training (``training=True`` and the layer trainable): normalize with the batch
mean and biased variance over every axis but ``axis``, and update the moving
statistics ``moving = moving * momentum + batch_stat * (1 - momentum)``.
Inference (or a frozen layer, as in Keras): normalize with the moving statistics.

Input ``(batch, ...)`` -> output of the same shape.
Weights (Keras order): gamma ``(C,)`` (if ``scale``), beta ``(C,)`` (if ``center``),
moving_mean ``(C,)``, moving_variance ``(C,)`` — the last two non-trainable;
``C`` is the shape of the ``axis`` dimensions (a tuple for several axes).
"""

from .. import initializers, regularizers
from ..autograd import no_grad
from ..ops._util import normalize_axes
from ..ops.normalization import batch_normalization, moving_average_update
from .input_layer import in_shape_probe
from .layer import InputSpec, Layer


def _check_axis(layer, axis):
    items = axis if isinstance(axis, (list, tuple)) else [axis]
    if not items or not all(isinstance(a, int) and not isinstance(a, bool) for a in items):
        raise TypeError(
            f"{type(layer).__name__} '{layer.name}': axis must be an int or a list of ints, "
            f"got {axis!r}"
        )
    return list(axis) if isinstance(axis, (list, tuple)) else axis


def feature_axes(layer, axis, input_shape, allow_batch=False):
    """``axis`` of ``layer`` as sorted non-negative axes of ``input_shape``.

    Errors name the layer and the shape."""
    ndim = len(input_shape)
    try:
        axes = normalize_axes(axis, ndim)
    except ValueError:
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}': axis {axis} is out of range for input shape "
            f"{tuple(input_shape)}"
        ) from None
    if not allow_batch and 0 in axes:
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}': axis {axis} is the batch axis of input shape "
            f"{tuple(input_shape)}; normalize over feature axes"
        )
    for a in axes:
        if input_shape[a] is None:
            raise ValueError(
                f"{type(layer).__name__} '{layer.name}': axis {a} of input shape "
                f"{tuple(input_shape)} "
                f"must have a known size"
            )
    return axes


class BatchNormalization(Layer):
    """Normalize each feature with batch statistics while training and moving ones at inference.

    Args: axis (int or list; default -1, the channels of channels-last data),
    momentum (0.99), epsilon (1e-3), center, scale, initializers and regularizers of
    beta/gamma, initializers of the moving statistics.
    """

    supports_masking = True

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        synchronized=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.axis = _check_axis(self, axis)
        if not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
            raise ValueError(
                f"BatchNormalization '{self.name}': momentum must be in [0, 1], got {momentum!r}"
            )
        if not isinstance(epsilon, (int, float)) or epsilon <= 0:
            raise ValueError(
                f"BatchNormalization '{self.name}': epsilon must be positive, got {epsilon!r}"
            )
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.synchronized = synchronized  # one device: nothing to synchronize

    def build(self, input_shape):
        self._axes = feature_axes(self, self.axis, input_shape)
        shape = tuple(input_shape[a] for a in self._axes)
        self.gamma = (
            self.add_weight("gamma", shape, self.gamma_initializer, self.gamma_regularizer)
            if self.scale
            else None
        )
        self.beta = (
            self.add_weight("beta", shape, self.beta_initializer, self.beta_regularizer)
            if self.center
            else None
        )
        self.moving_mean = self.add_weight(
            "moving_mean", shape, self.moving_mean_initializer, trainable=False
        )
        self.moving_variance = self.add_weight(
            "moving_variance", shape, self.moving_variance_initializer, trainable=False
        )
        self.input_spec = InputSpec(
            ndim=len(input_shape), axes={a: input_shape[a] for a in self._axes}
        )

    def call(self, inputs, training=False):
        if training and self.trainable:
            y, mean, variance = batch_normalization(
                inputs, self.gamma, self.beta, self._axes, self.epsilon, return_statistics=True
            )
            if in_shape_probe():
                return y  # a shape probe, not data
            with no_grad():
                m = self.momentum
                self.moving_mean.value = moving_average_update(self.moving_mean.value, mean, m)
                self.moving_variance.value = moving_average_update(
                    self.moving_variance.value, variance, m
                )
            return y
        return batch_normalization(
            inputs,
            self.gamma,
            self.beta,
            self._axes,
            self.epsilon,
            mean=self.moving_mean.value,
            variance=self.moving_variance.value,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "synchronized": self.synchronized,
        }


__all__ = ["BatchNormalization"]
