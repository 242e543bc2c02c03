"""LayerNormalization (Keras 3 semantics): each sample is normalized over ``axis``.

Input ``(batch, ...)`` -> output of the same shape.
Weights (Keras order): gamma (if ``scale``), beta (if ``center``), each of the
shape of the ``axis`` dimensions, e.g. ``(features,)`` for ``axis=-1``.
"""

from .. import initializers, regularizers
from ..ops.normalization import layer_normalization
from .batch_normalization import _check_axis, feature_axes
from .layer import InputSpec, Layer


class LayerNormalization(Layer):
    """``(x - mean) / sqrt(var + epsilon) * gamma + beta`` with per-sample statistics over ``axis``.

    Args: axis (int or list; default -1), epsilon (1e-3, as Keras 3), center, scale,
    initializers and regularizers of beta/gamma.
    """

    supports_masking = True

    def __init__(
        self,
        axis=-1,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.axis = _check_axis(self, axis)
        if not isinstance(epsilon, (int, float)) or epsilon <= 0:
            raise ValueError(
                f"LayerNormalization '{self.name}': epsilon must be positive, got {epsilon!r}"
            )
        self.epsilon = float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)

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
        self.input_spec = InputSpec(
            ndim=len(input_shape), axes={a: input_shape[a] for a in self._axes}
        )

    def call(self, inputs):
        return layer_normalization(inputs, self.gamma, self.beta, self._axes, self.epsilon)

    def get_config(self):
        return {
            **super().get_config(),
            "axis": self.axis,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
        }
