"""Flatten: ``(batch, d1, d2, ...)`` -> ``(batch, d1 * d2 * ...)``."""

from .. import ops
from .layer import Layer


class Flatten(Layer):
    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        if data_format not in (None, "channels_last", "channels_first"):
            raise ValueError(f"Flatten '{self.name}': unknown data_format {data_format!r}")
        self.data_format = data_format or "channels_last"

    def call(self, inputs):
        if self.data_format == "channels_first" and inputs.ndim > 2:
            # Keras flattens channels_first inputs in channels_last order
            inputs = ops.transpose(inputs, (0,) + tuple(range(2, inputs.ndim)) + (1,))
        return ops.flatten(inputs)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}
