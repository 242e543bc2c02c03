"""SimpleRNN: ``h_t = activation(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias)``."""

from .rnn_base import RNNBase


class SimpleRNN(RNNBase):
    """Fully connected recurrent layer (Keras 3 arguments and defaults).

    Input ``(batch, timesteps, features)``; output ``(batch, units)`` or, with
    ``return_sequences``, ``(batch, timesteps, units)``; ``return_state`` adds ``h``.
    Weights: kernel ``(features, units)``, recurrent_kernel ``(units, units)``,
    bias ``(units,)``.
    """

    cell = "rnn"
    state_count = 1

    def __init__(self, units, activation="tanh", **kwargs):
        kwargs.pop("recurrent_activation", None)
        super().__init__(units, activation=activation, **kwargs)
