"""LSTM: long short-term memory layer (gates i, f, c, o in Keras order)."""

from .. import initializers
from ..backends import get_backend
from .rnn_base import RNNBase


class _UnitForgetBias:
    """``bias_initializer`` for the i and c/o gates, ones for the forget gate."""

    def __init__(self, initializer, units):
        self.initializer, self.units = initializer, units

    def __call__(self, shape, dtype=None):
        u = self.units
        xp = get_backend().xp
        ones = initializers.get("ones")((u,), dtype)
        return xp.concat([self.initializer((u,), dtype), ones, self.initializer((2 * u,), dtype)])


class LSTM(RNNBase):
    """Long short-term memory (Keras 3 arguments, defaults and weight layout).

    Per step: ``z = x_t @ kernel + h_{t-1} @ recurrent_kernel + bias`` split into
    ``i, f, c, o``; ``i, f, o = recurrent_activation(.)``, ``g = activation(z_c)``;
    ``c_t = f*c_{t-1} + i*g``; ``h_t = o*activation(c_t)``.

    Input ``(batch, timesteps, features)``; output ``(batch, units)`` or, with
    ``return_sequences``, ``(batch, timesteps, units)``; ``return_state`` adds
    ``h`` and ``c``. Weights: kernel ``(features, 4*units)``, recurrent_kernel
    ``(units, 4*units)``, bias ``(4*units,)``. ``unit_forget_bias`` starts the
    forget-gate bias at one.
    """

    cell = "lstm"
    state_count = 2

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        unit_forget_bias=True,
        use_cudnn="auto",
        **kwargs,
    ):
        super().__init__(
            units, activation=activation, recurrent_activation=recurrent_activation, **kwargs
        )
        self.unit_forget_bias = bool(unit_forget_bias)
        self.use_cudnn = use_cudnn  # accepted for Keras compatibility

    def _bias_initializer(self):
        if self.unit_forget_bias:
            return _UnitForgetBias(self.bias_initializer, self.units)
        return self.bias_initializer

    def get_config(self):
        from ..ops.activations import activation_name

        return {
            **super().get_config(),
            "recurrent_activation": activation_name(self.recurrent_activation),
            "unit_forget_bias": self.unit_forget_bias,
        }
