"""TimeDistributed: apply one layer to every time step of a sequence."""

from .. import ops
from .layer import Layer


def layer_from(spec, owner):
    """A Layer from a Layer or a ``{"class_name": ..., "config": ...}`` dict (wrapper configs)."""
    if isinstance(spec, Layer):
        return spec
    if isinstance(spec, dict) and "class_name" in spec:
        from .. import layers

        cls = getattr(layers, spec["class_name"], None)
        if not isinstance(cls, type):
            raise ValueError(
                f"{owner}: unknown layer class {spec['class_name']!r} in the wrapped layer config"
            )
        return cls.from_config(spec["config"])
    raise TypeError(
        f"{owner}: expected a Layer (or a layer config dict), got {type(spec).__name__}"
    )


def layer_config(layer):
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


class TimeDistributed(Layer):
    """Apply ``layer`` to each of the ``timesteps`` slices of the input.

    Input ``(batch, timesteps, ...)`` is folded to ``(batch*timesteps, ...)``,
    passed through ``layer`` (one call, weights shared over time) and unfolded
    to ``(batch, timesteps, ...out)``. The mask, if any, passes through.
    """

    supports_masking = True

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer_from(layer, f"TimeDistributed '{self.name}'")

    def build(self, input_shape):
        if len(input_shape) < 3:
            raise ValueError(
                f"TimeDistributed '{self.name}': input needs at least 3 dimensions "
                f"(batch, timesteps, "
                f"...), got shape {tuple(input_shape)}"
            )

    def call(self, inputs, training=False):
        if inputs.ndim < 3:
            raise ValueError(
                f"TimeDistributed '{self.name}': input needs at least 3 dimensions "
                f"(batch, timesteps, "
                f"...), got shape {tuple(inputs.shape)}"
            )
        batch, steps = inputs.shape[:2]
        folded = ops.reshape(inputs, (batch * steps,) + tuple(inputs.shape[2:]))
        out = self.layer(folded, training=training)
        return ops.reshape(out, (batch, steps) + tuple(out.shape[1:]))

    def get_config(self):
        return {**super().get_config(), "layer": layer_config(self.layer)}
