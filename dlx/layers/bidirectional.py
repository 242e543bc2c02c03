"""Bidirectional: run a recurrent layer forwards and backwards and merge the outputs."""

from .. import ops
from ..ops.recurrent import flip
from .layer import Layer
from .time_distributed import layer_config, layer_from

MERGE_MODES = ("concat", "sum", "mul", "ave", None)


def _strip(name, prefix):
    return name[len(prefix) :] if name.startswith(prefix) else name


class Bidirectional(Layer):
    """Wrap a SimpleRNN/LSTM/GRU: one copy reads the sequence forwards, a second
    (``go_backwards`` flipped, or ``backward_layer``) backwards.

    Input ``(batch, timesteps, features)``. With ``return_sequences`` the
    backward outputs are put back in time order before merging. ``merge_mode``:
    ``"concat"`` (last axis, ``2*units``), ``"sum"``, ``"mul"``, ``"ave"`` or None
    (a list ``[forward, backward]``). With ``return_state`` the forward states
    then the backward states follow the output; ``initial_state`` is split the
    same way. Weights: the forward layer's, then the backward layer's.
    """

    supports_masking = True

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kwargs):
        super().__init__(**kwargs)
        owner = f"Bidirectional '{self.name}'"
        layer = layer_from(layer, owner)
        if merge_mode not in MERGE_MODES:
            raise ValueError(
                f"{owner}: merge_mode must be one of {MERGE_MODES}, got {merge_mode!r}"
            )
        if not hasattr(layer, "go_backwards") or not hasattr(layer, "return_sequences"):
            raise ValueError(
                f"{owner}: needs a recurrent layer (SimpleRNN, LSTM, GRU), "
                f"got {type(layer).__name__}"
            )
        config = dict(layer.get_config())
        config["name"] = "forward_" + _strip(layer.name, "forward_")
        self.forward_layer = type(layer).from_config(config)
        if backward_layer is None:
            config = dict(layer.get_config())
            config["name"] = "backward_" + _strip(layer.name, "backward_")
            config["go_backwards"] = not layer.go_backwards
            self.backward_layer = type(layer).from_config(config)
        else:
            self.backward_layer = layer_from(backward_layer, owner)
            for attr in ("return_sequences", "return_state"):
                if getattr(self.backward_layer, attr) != getattr(self.forward_layer, attr):
                    raise ValueError(f"{owner}: forward and backward layers must agree on {attr}")
        # as in Keras: with return_sequences, masked steps output zeros in both directions
        for sub in (self.forward_layer, self.backward_layer):
            sub.zero_output_for_mask = sub.return_sequences
        self.merge_mode = merge_mode
        self.return_sequences = self.forward_layer.return_sequences
        self.return_state = self.forward_layer.return_state
        self.stateful = self.forward_layer.stateful
        self._initial_weights = weights

    def build(self, input_shape):
        for sub in (self.forward_layer, self.backward_layer):
            if not sub.built:
                sub.build_input_shape = tuple(input_shape)
                sub.build(tuple(input_shape))
                sub.built = True
        if self._initial_weights is not None:
            self.set_weights(self._initial_weights)
            self._initial_weights = None

    def call(self, inputs, mask=None, training=False, initial_state=None):
        forward_state = backward_state = None
        if initial_state is not None:
            states = (
                list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
            )
            if len(states) % 2:
                raise ValueError(
                    f"Bidirectional '{self.name}': initial_state needs the forward states then the "
                    f"backward states (an even count), got {len(states)}"
                )
            half = len(states) // 2
            forward_state, backward_state = states[:half], states[half:]
        y = self.forward_layer(inputs, training=training, mask=mask, initial_state=forward_state)
        y_rev = self.backward_layer(
            inputs, training=training, mask=mask, initial_state=backward_state
        )
        states = []
        if self.return_state:
            states = list(y[1:]) + list(y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            y_rev = flip(y_rev, axis=1)
        if self.merge_mode == "concat":
            output = ops.concat([y, y_rev], axis=-1)
        elif self.merge_mode == "sum":
            output = y + y_rev
        elif self.merge_mode == "ave":
            output = (y + y_rev) * 0.5
        elif self.merge_mode == "mul":
            output = y * y_rev
        else:
            output = [y, y_rev]
        if self.return_state:
            return (output if isinstance(output, list) else [output]) + states
        return output

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        return mask if self.return_sequences else None

    def reset_states(self, states=None):
        if states is None:
            self.forward_layer.reset_states()
            self.backward_layer.reset_states()
            return
        half = len(states) // 2
        self.forward_layer.reset_states(states[:half])
        self.backward_layer.reset_states(states[half:])

    reset_state = reset_states

    def get_config(self):
        return {
            **super().get_config(),
            "layer": layer_config(self.forward_layer),
            "merge_mode": self.merge_mode,
            "backward_layer": layer_config(self.backward_layer),
        }
