"""GRU: gated recurrent unit (gates z, r, h in Keras order), both ``reset_after`` variants."""

from .. import ops
from .rnn_base import RNNBase


class GRU(RNNBase):
    """Gated recurrent unit (Keras 3 arguments, defaults and weight layout).

    Per step, with ``x = x_t @ kernel + input_bias`` split into ``x_z, x_r, x_h``:
    ``z = recurrent_activation(x_z + (h @ U)_z [+ b_z])``, ``r`` likewise,
    ``reset_after=True`` (default): ``hh = activation(x_h + r * (h @ U_h + b_h))``;
    ``reset_after=False``: ``hh = activation(x_h + (r*h) @ U_h)``;
    then ``h_t = z*h_{t-1} + (1 - z)*hh``.

    Input ``(batch, timesteps, features)``; output ``(batch, units)`` or, with
    ``return_sequences``, ``(batch, timesteps, units)``; ``return_state`` adds ``h``.
    Weights: kernel ``(features, 3*units)``, recurrent_kernel ``(units, 3*units)``,
    bias ``(2, 3*units)`` (row 0 input bias, row 1 recurrent bias) with
    ``reset_after=True``, else ``(3*units,)``.
    """

    cell = "gru"
    state_count = 1

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        reset_after=True,
        use_cudnn="auto",
        **kwargs,
    ):
        super().__init__(
            units, activation=activation, recurrent_activation=recurrent_activation, **kwargs
        )
        self.reset_after = bool(reset_after)
        self.use_cudnn = use_cudnn  # accepted for Keras compatibility

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _split_bias(self):
        if self.bias is None or not self.reset_after:
            return self.bias, None
        return ops.getitem(self.bias, 0), ops.getitem(self.bias, 1)

    def get_config(self):
        from ..ops.activations import activation_name

        return {
            **super().get_config(),
            "recurrent_activation": activation_name(self.recurrent_activation),
            "reset_after": self.reset_after,
        }
