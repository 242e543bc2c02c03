"""GroupNormalization (Keras 3 semantics).

The ``C`` channels of ``axis`` are split into ``groups`` groups of ``C // groups``;
each sample is normalized per group over the group's channels and every other
non-batch axis. ``groups=-1`` means one group per channel (instance normalization).

Input ``(batch, ..., C)`` -> output of the same shape.
Weights (Keras order): gamma ``(C,)`` (if ``scale``), beta ``(C,)`` (if ``center``).
"""

from .. import initializers, regularizers
from ..ops.normalization import group_normalization
from .batch_normalization import feature_axes
from .layer import InputSpec, Layer


class GroupNormalization(Layer):
    """Args: groups (32; -1 for instance normalization), axis (-1), epsilon (1e-3),
    center, scale, initializers and regularizers of beta/gamma."""

    supports_masking = True

    def __init__(
        self,
        groups=32,
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
        if (
            not isinstance(groups, int)
            or isinstance(groups, bool)
            or (groups <= 0 and groups != -1)
        ):
            raise ValueError(
                f"GroupNormalization '{self.name}': groups must be a positive integer or -1 "
                f"(instance normalization), got {groups!r}"
            )
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise TypeError(f"GroupNormalization '{self.name}': axis must be an int, got {axis!r}")
        if not isinstance(epsilon, (int, float)) or epsilon <= 0:
            raise ValueError(
                f"GroupNormalization '{self.name}': epsilon must be positive, got {epsilon!r}"
            )
        self.groups, self.axis, self.epsilon = groups, axis, float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)

    def build(self, input_shape):
        (self._axis,) = feature_axes(self, self.axis, input_shape)
        channels = input_shape[self._axis]
        groups = channels if self.groups == -1 else self.groups
        if groups > channels or channels % groups:
            raise ValueError(
                f"GroupNormalization '{self.name}': {channels} channels (axis {self.axis} of input "
                f"shape {tuple(input_shape)}) cannot be split into {groups} equal groups"
            )
        self._groups = groups
        self.gamma = (
            self.add_weight("gamma", (channels,), self.gamma_initializer, self.gamma_regularizer)
            if self.scale
            else None
        )
        self.beta = (
            self.add_weight("beta", (channels,), self.beta_initializer, self.beta_regularizer)
            if self.center
            else None
        )
        self.input_spec = InputSpec(ndim=len(input_shape), axes={self._axis: channels})

    def call(self, inputs):
        return group_normalization(
            inputs, self.gamma, self.beta, self._groups, self._axis, self.epsilon
        )

    def get_config(self):
        return {
            **super().get_config(),
            "groups": self.groups,
            "axis": self.axis,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
        }
