"""Shared base of SimpleRNN, LSTM and GRU: arguments, weights, masks, states.

Input ``(batch, timesteps, features)``. The layer projects the inputs of all
time steps with one matrix product (``sequence_projection``: time-major out)
and runs the whole time loop as one op (:mod:`dlx.ops.recurrent`), whose
backward does backpropagation through time.

Output: ``(batch, timesteps, units)`` with ``return_sequences`` (in processing
order, i.e. reversed for ``go_backwards``, as in Keras), else the last output
``(batch, units)``; with ``return_state`` a list ``[output, *states]`` (states
``(batch, units)``: ``h`` for SimpleRNN/GRU, ``h, c`` for LSTM).

Keras semantics: at masked steps the state is carried and the output repeats
the previous one (or is zero with ``zero_output_for_mask``); dropout masks are
drawn once per call and reused at every
step. One difference: ``recurrent_dropout`` uses one mask of ``h`` shared by
all gates (Keras draws one per gate).
"""

from .. import initializers, ops, regularizers
from ..autograd import Tensor, as_backend_array
from ..ops.activations import activation_name, get_activation
from ..ops.recurrent import (
    RECURRENT_ACTIVATIONS,
    SequenceSpec,
    recurrent_sequence,
    sequence_projection,
)
from .input_layer import in_shape_probe
from .layer import InputSpec, Layer


class RNNBase(Layer):
    """Base class; subclasses set ``cell`` ("rnn", "lstm", "gru") and ``state_count``."""

    cell = None
    state_count = 1
    supports_masking = True

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        zero_output_for_mask=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        kind = type(self).__name__
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(
                f"{kind} '{self.name}': units must be a positive integer, got {units!r}"
            )
        self.units = units
        self.activation = get_activation(activation)
        self.recurrent_activation = get_activation(recurrent_activation)
        for what, fn in (
            ("activation", self.activation),
            ("recurrent_activation", self.recurrent_activation),
        ):
            if activation_name(fn) not in RECURRENT_ACTIVATIONS:
                raise ValueError(
                    f"{kind} '{self.name}': {what} {activation_name(fn)!r} is not supported by the "
                    f"fused recurrent loop; choose one of {sorted(RECURRENT_ACTIVATIONS)}"
                )
        for what, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0 <= rate < 1:
                raise ValueError(f"{kind} '{self.name}': {what} must be in [0, 1), got {rate!r}")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.dropout, self.recurrent_dropout = float(dropout), float(recurrent_dropout)
        self.return_sequences, self.return_state = bool(return_sequences), bool(return_state)
        self.go_backwards, self.stateful = bool(go_backwards), bool(stateful)
        self.unroll, self.seed = bool(unroll), seed  # unroll: accepted for Keras compatibility
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.states = None  # stateful layers: the carried states (arrays, no history)

    # -- weights ------------------------------------------------------------------
    @property
    def gates(self):
        return {"rnn": 1, "lstm": 4, "gru": 3}[self.cell]

    def _bias_shape(self):
        return (self.gates * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    def build(self, input_shape):
        kind = type(self).__name__
        if len(input_shape) != 3:
            raise ValueError(
                f"{kind} '{self.name}': expects input of shape (batch, timesteps, features), "
                f"i.e. 3 "
                f"dimensions, but got shape {tuple(input_shape)}"
            )
        features, width = input_shape[-1], self.gates * self.units
        self.kernel = self.add_weight(
            "kernel", (features, width), self.kernel_initializer, self.kernel_regularizer
        )
        self.recurrent_kernel = self.add_weight(
            "recurrent_kernel",
            (self.units, width),
            self.recurrent_initializer,
            self.recurrent_regularizer,
        )
        self.bias = (
            self.add_weight(
                "bias", self._bias_shape(), self._bias_initializer(), self.bias_regularizer
            )
            if self.use_bias
            else None
        )
        self.input_spec = InputSpec(ndim=3, axes={-1: features})
        if self.stateful and self.batch_input_shape is not None and self.batch_input_shape[0]:
            self.reset_states()

    def _split_bias(self):
        """(bias added to the input projection, recurrent bias inside the loop or None)."""
        return self.bias, None

    # -- states ------------------------------------------------------------------
    def _zero_states(self, batch, like=None):
        from ..backends import get_backend

        backend = get_backend()
        dtype = like.dtype if like is not None else backend.dtype(self.dtype)
        device = like.device if like is not None else backend.device
        return [
            backend.xp.zeros((batch, self.units), dtype=dtype, device=device)
            for _ in range(self.state_count)
        ]

    def reset_states(self, states=None):
        """Stateful layers: set the carried states to zeros (or to ``states``)."""
        if not self.stateful:
            raise AttributeError(
                f"{type(self).__name__} '{self.name}': reset_states() needs stateful=True"
            )
        batch = self._stateful_batch()
        if states is None:
            self.states = self._zero_states(batch) if batch is not None else None
            return
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        self.states = [s.value for s in self._check_states(states, batch or states[0].shape[0])]

    reset_state = reset_states

    def _stateful_batch(self):
        if self.batch_input_shape is not None and self.batch_input_shape[0]:
            return self.batch_input_shape[0]
        return self.states[0].shape[0] if self.states else None

    def _check_states(self, states, batch):
        kind = type(self).__name__
        if len(states) != self.state_count:
            raise ValueError(
                f"{kind} '{self.name}': initial_state needs {self.state_count} state tensor(s) "
                f"of shape "
                f"{(batch, self.units)}, got {len(states)}"
            )
        out = []
        for i, s in enumerate(states):
            s = self._to_tensors(s if isinstance(s, Tensor) else as_backend_array(s))
            if tuple(s.shape) != (batch, self.units):
                raise ValueError(
                    f"{kind} '{self.name}': initial_state[{i}] has shape {tuple(s.shape)} but the "
                    f"layer needs shape {(batch, self.units)} (batch, units)"
                )
            out.append(s)
        return out

    # -- calling -----------------------------------------------------------------
    def _check_mask(self, mask, batch, steps):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if mask is None:
            return None
        mask = mask.value if isinstance(mask, Tensor) else as_backend_array(mask)
        if tuple(mask.shape) != (batch, steps):
            raise ValueError(
                f"{type(self).__name__} '{self.name}': mask of shape {tuple(mask.shape)} "
                f"does not match "
                f"the input: expected (batch, timesteps) = {(batch, steps)}"
            )
        from ..backends import backend_of

        xp = backend_of(mask).xp
        return mask if mask.dtype == xp.bool else mask != 0

    def call(self, inputs, mask=None, training=False, initial_state=None):
        kind = type(self).__name__
        if inputs.ndim != 3:
            raise ValueError(
                f"{kind} '{self.name}': expects input of shape (batch, timesteps, features), "
                f"but got "
                f"shape {tuple(inputs.shape)}"
            )
        batch, steps, features = inputs.shape
        mask = self._check_mask(mask, batch, steps)
        if initial_state is not None:
            states = initial_state if isinstance(initial_state, (list, tuple)) else [initial_state]
            states = self._check_states(list(states), batch)
        elif self.stateful and in_shape_probe():
            # a shape probe is not data: it starts from zeros and leaves the carried state alone
            states = self._zero_states(batch, inputs.value)
        elif self.stateful:
            if self.states is None or self.states[0].shape[0] != batch:
                fixed = self.batch_input_shape[0] if self.batch_input_shape is not None else None
                if fixed and fixed != batch:
                    raise ValueError(
                        f"{kind} '{self.name}': stateful layer built for batch size {fixed} "
                        f"got input "
                        f"of shape {tuple(inputs.shape)}"
                    )
                self.states = self._zero_states(batch, inputs.value)
            states = list(self.states)
        else:
            states = [None] * self.state_count
        x = inputs
        if training and self.dropout > 0:
            x = ops.dropout(x, self.dropout, training=True, noise_shape=(batch, 1, features))
        recurrent_mask = None
        if training and self.recurrent_dropout > 0:
            keep = 1.0 - self.recurrent_dropout
            recurrent_mask = x.backend.random_bits((batch, self.units), keep, dtype=x.dtype) / keep
        input_bias, recurrent_bias = self._split_bias()
        xproj = sequence_projection(x, self.kernel, input_bias)
        spec = SequenceSpec(
            self.cell,
            activation=activation_name(self.activation),
            recurrent_activation=activation_name(self.recurrent_activation),
            go_backwards=self.go_backwards,
            return_sequences=self.return_sequences,
            reset_after=getattr(self, "reset_after", True),
            mask=mask,
            recurrent_mask=recurrent_mask,
        )
        outs = recurrent_sequence(spec, xproj, self.recurrent_kernel, recurrent_bias, *states)
        if self.return_sequences:
            output, final = ops.transpose(outs[0], (1, 0, 2)), list(outs[1:])
        else:
            output, final = outs[0], list(outs)
        if self.zero_output_for_mask and mask is not None:
            output = self._zero_masked(output, mask)
        if self.stateful and not in_shape_probe():
            self.states = [s.value for s in final]
        if self.return_state:
            return [output, *final]
        return output

    def _zero_masked(self, output, mask):
        """Outputs of masked steps set to zero (in processing order, like the outputs)."""
        xp = output.xp
        keep = xp.astype(mask, output.dtype)
        if self.go_backwards:
            keep = xp.flip(keep, axis=1)
        keep = keep[:, :, None] if self.return_sequences else keep[:, -1:]
        return ops.multiply(output, keep)

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        return mask if self.return_sequences else None

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": activation_name(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "unroll": self.unroll,
            "zero_output_for_mask": self.zero_output_for_mask,
            "seed": self.seed,
        }
