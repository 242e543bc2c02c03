"""Dense: ``activation(inputs @ kernel + bias)`` over the last axis."""

from .. import initializers, ops, regularizers
from ..ops.activations import activation_name, get_activation
from .layer import InputSpec, Layer


class Dense(Layer):
    """Fully connected layer.

    Input ``(batch, ..., in)`` -> output ``(batch, ..., units)``.
    Weights: kernel ``(in, units)``, bias ``(units,)``.
    """

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(units, int) or units <= 0:
            raise ValueError(
                f"Dense '{self.name}': units must be a positive integer, got {units!r}"
            )
        self.units = units
        self.activation = get_activation(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(
                f"Dense '{self.name}': input needs a batch axis and a feature axis, got shape "
                f"{tuple(input_shape)}"
            )
        in_features = input_shape[-1]
        self.kernel = self.add_weight(
            "kernel", (in_features, self.units), self.kernel_initializer, self.kernel_regularizer
        )
        self.bias = (
            self.add_weight("bias", (self.units,), self.bias_initializer, self.bias_regularizer)
            if self.use_bias
            else None
        )
        self.input_spec = InputSpec(min_ndim=2, axes={-1: in_features})

    def call(self, inputs):
        if self.activation is ops.relu:
            return ops.linear(inputs, self.kernel, self.bias, relu=True)
        return self.activation(ops.linear(inputs, self.kernel, self.bias))

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": activation_name(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
        }
