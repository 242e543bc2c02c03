"""Activation: applies a named activation function (or a callable)."""

from ..ops.activations import activation_name, get_activation
from .layer import Layer


class Activation(Layer):
    supports_masking = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = get_activation(activation)

    def call(self, inputs):
        return self.activation(inputs)

    def get_config(self):
        return {**super().get_config(), "activation": activation_name(self.activation)}
