"""Reshape: ``(batch, ...)`` -> ``(batch, *target_shape)``; one entry may be -1."""

import math

from .. import ops
from .layer import Layer


class Reshape(Layer):
    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        target_shape = tuple(target_shape)
        if sum(1 for s in target_shape if s == -1) > 1:
            raise ValueError(
                f"Reshape '{self.name}': at most one -1 in target_shape {target_shape}"
            )
        self.target_shape = target_shape

    def call(self, inputs):
        size = math.prod(inputs.shape[1:])
        known = math.prod(s for s in self.target_shape if s != -1)
        if (-1 in self.target_shape and size % known) or (
            -1 not in self.target_shape and size != known
        ):
            raise ValueError(
                f"Reshape '{self.name}': cannot reshape input of shape {tuple(inputs.shape)} "
                f"({size} values per sample) to target_shape {self.target_shape}"
            )
        return ops.reshape(inputs, (inputs.shape[0],) + self.target_shape)

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape)}
