"""Masking: mark time steps whose features all equal ``mask_value`` as padding."""

from .. import ops
from .layer import Layer


class Masking(Layer):
    """Input ``(batch, timesteps, features)`` (or more axes); output the same with
    masked steps set to zero, and the mask ``(batch, timesteps)``:
    ``any(inputs != mask_value, axis=-1)``, which recurrent layers then honour."""

    supports_masking = True

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = float(mask_value)

    def _mask(self, inputs):
        xp = inputs.xp
        return xp.any(inputs.value != self.mask_value, axis=-1)

    def call(self, inputs):
        keep = inputs.xp.astype(self._mask(inputs), inputs.dtype)
        return ops.multiply(inputs, keep[..., None])

    def compute_mask(self, inputs, mask=None):
        return self._mask(inputs)

    def get_config(self):
        return {**super().get_config(), "mask_value": self.mask_value}
