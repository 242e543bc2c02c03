"""TimeDistributed: apply one layer to every time step of a sequence."""

from .. import ops
from ..autograd import Tensor, as_backend_array
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
    to ``(batch, timesteps, ...out)``.

    Masks (as in Keras): a mask ``(batch, timesteps, ...)`` is folded the same
    way and given to ``layer``, e.g. ``(batch, timesteps, inner_steps)`` for a
    recurrent layer over the inner steps. The output mask is ``layer``'s output
    mask unfolded to ``(batch, timesteps, ...)``; when ``layer`` gives none, the
    input mask reduced to ``(batch, timesteps)`` (a step counts when any of its
    entries does).
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

    def call(self, inputs, training=False, mask=None):
        if inputs.ndim < 3:
            raise ValueError(
                f"TimeDistributed '{self.name}': input needs at least 3 dimensions "
                f"(batch, timesteps, "
                f"...), got shape {tuple(inputs.shape)}"
            )
        batch, steps = inputs.shape[:2]
        folded = ops.reshape(inputs, (batch * steps,) + tuple(inputs.shape[2:]))
        out = self.layer(folded, training=training, mask=self._folded_mask(mask, inputs))
        return ops.reshape(out, (batch, steps) + tuple(out.shape[1:]))

    def compute_mask(self, inputs, mask=None):
        mask = self._mask_array(mask, inputs)
        batch, steps = inputs.shape[:2]
        xp = inputs.xp
        folded = Tensor(xp.reshape(inputs.value, (batch * steps,) + tuple(inputs.shape[2:])))
        inner = self.layer.compute_mask(folded, self._folded_mask(mask, inputs))
        if inner is not None:
            inner = inner.value if isinstance(inner, Tensor) else inner
            return xp.reshape(inner, (batch, steps) + tuple(inner.shape[1:]))
        if mask is None:
            return None
        return xp.any(mask, axis=tuple(range(2, mask.ndim))) if mask.ndim > 2 else mask

    def _mask_array(self, mask, inputs):
        """The input mask as an array, checked against the input's (batch, timesteps)."""
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if mask is None:
            return None
        mask = mask.value if isinstance(mask, Tensor) else as_backend_array(mask)
        if mask.ndim < 2 or tuple(mask.shape[:2]) != tuple(inputs.shape[:2]):
            raise ValueError(
                f"TimeDistributed '{self.name}': mask of shape {tuple(mask.shape)} does not "
                f"match the input of shape {tuple(inputs.shape)}: it needs the input's "
                f"(batch, timesteps) = {tuple(inputs.shape[:2])} first"
            )
        return mask if mask.dtype == inputs.xp.bool else mask != 0

    def _folded_mask(self, mask, inputs):
        """``(batch*timesteps, ...)``: what the wrapped layer sees as its mask."""
        mask = self._mask_array(mask, inputs)
        if mask is None:
            return None
        xp = inputs.xp
        return xp.reshape(mask, (mask.shape[0] * mask.shape[1],) + tuple(mask.shape[2:]))

    def get_config(self):
        return {**super().get_config(), "layer": layer_config(self.layer)}
