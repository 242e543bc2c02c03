"""Converters of SimpleRNN, LSTM and GRU as ONNX's RNN, LSTM and GRU operators.

Weight layouts (Keras -> ONNX): kernels are transposed to ``(gates*u, in)``; the
LSTM's gates go from Keras's ``i, f, c, o`` to ONNX's ``i, o, f, c``; the GRU keeps
``z, r, h`` and ``reset_after=True`` is ``linear_before_reset=1`` with the input and
recurrent biases as ONNX's ``Wb`` and ``Rb``. ``go_backwards`` reverses the time
axis of the input and runs forward, so the sequence comes out in processing order
(reversed), as in Keras.
"""

import numpy as np

from .export import register_converter, reject_mask, unsupported

# dlx activation name -> (ONNX RNN activation, alpha, beta)
RNN_ACTIVATIONS = {
    "tanh": ("Tanh", None, None),
    "sigmoid": ("Sigmoid", None, None),
    "relu": ("Relu", None, None),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),
    "linear": ("Affine", 1.0, 0.0),
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
    "elu": ("Elu", 1.0, None),
    "leaky_relu": ("LeakyRelu", 0.2, None),
}


def _activations(layer, names):
    from ..ops.activations import activation_name

    ops, alphas, betas = [], [], []
    for what in names:
        name = activation_name(getattr(layer, what))
        if name not in RNN_ACTIVATIONS:
            raise unsupported(
                layer,
                f"{what} {name!r} has no ONNX {type(layer).__name__} form; exportable "
                f"recurrent activations are {sorted(RNN_ACTIVATIONS)}",
            )
        op, alpha, beta = RNN_ACTIVATIONS[name]
        ops.append(op)
        if alpha is not None:
            alphas.append(alpha)
        if beta is not None:
            betas.append(beta)
    return {
        "activations": ops,
        "activation_alpha": alphas or None,
        "activation_beta": betas or None,
    }


def _gates(matrix, order, units):
    """Reorder the gate blocks of the last axis of ``matrix``."""
    blocks = [matrix[..., g * units : (g + 1) * units] for g in range(len(order))]
    return np.concatenate([blocks[g] for g in order], axis=-1)


def _check(layer, inputs, ctx):
    reject_mask(layer, inputs)
    if layer.stateful:
        raise unsupported(
            layer,
            "stateful=True carries states between calls; export a stateless copy of the model",
        )
    if ctx.call_kwargs.get("initial_state") is not None:
        raise unsupported(layer, "an initial_state argument is not supported")


def _sequence_input(layer, x, ctx):
    name = x.name
    if layer.go_backwards:
        big = np.iinfo(np.int64).max
        name = ctx.op(
            "Slice",
            [
                name,
                ctx.ints([-1], "starts"),
                ctx.ints([-big], "ends"),
                ctx.ints([1], "axes"),
                ctx.ints([-1], "steps"),
            ],
            "reversed",
        )
    return ctx.transpose(name, (1, 0, 2))  # time-major (T, B, F)


def _outputs(layer, ctx, y, y_h, y_c=None):
    if layer.return_sequences:
        out = ctx.transpose(ctx.squeeze(y, [1]), (1, 0, 2))  # (T, 1, B, u) -> (B, T, u)
    else:
        out = ctx.squeeze(y_h, [0])
    if not layer.return_state:
        return out
    states = [ctx.squeeze(y_h, [0]) if layer.return_sequences else out]
    if y_c is not None:
        states.append(ctx.squeeze(y_c, [0]))
    return [out, *states]


def _bias(layer, input_bias, units, gates):
    recurrent = np.zeros(gates * units, dtype=input_bias.dtype)
    return np.concatenate([input_bias, recurrent])[None]


@register_converter("SimpleRNN")
def convert_simple_rnn(layer, inputs, ctx):
    _check(layer, inputs, ctx)
    u = layer.units
    weights = layer.get_weights()
    kernel, recurrent = weights[0], weights[1]
    args = [
        _sequence_input(layer, inputs[0], ctx),
        ctx.const(kernel.T[None], "W"),
        ctx.const(recurrent.T[None], "R"),
    ]
    if layer.use_bias:
        args.append(ctx.const(_bias(layer, weights[2], u, 1), "B"))
    y, y_h = ctx.op(
        "RNN", args, "rnn", outputs=2, hidden_size=u, **_activations(layer, ["activation"])
    )
    return _outputs(layer, ctx, y, y_h)


LSTM_ORDER = (0, 3, 1, 2)  # Keras i, f, c, o -> ONNX i, o, f, c


@register_converter("LSTM")
def convert_lstm(layer, inputs, ctx):
    _check(layer, inputs, ctx)
    u = layer.units
    weights = layer.get_weights()
    kernel = _gates(weights[0], LSTM_ORDER, u)
    recurrent = _gates(weights[1], LSTM_ORDER, u)
    args = [
        _sequence_input(layer, inputs[0], ctx),
        ctx.const(kernel.T[None], "W"),
        ctx.const(recurrent.T[None], "R"),
    ]
    if layer.use_bias:
        args.append(ctx.const(_bias(layer, _gates(weights[2], LSTM_ORDER, u), u, 4), "B"))
    y, y_h, y_c = ctx.op(
        "LSTM",
        args,
        "lstm",
        outputs=3,
        hidden_size=u,
        **_activations(layer, ["recurrent_activation", "activation", "activation"]),
    )
    return _outputs(layer, ctx, y, y_h, y_c)


@register_converter("GRU")
def convert_gru(layer, inputs, ctx):
    _check(layer, inputs, ctx)
    u = layer.units
    weights = layer.get_weights()
    args = [
        _sequence_input(layer, inputs[0], ctx),
        ctx.const(weights[0].T[None], "W"),
        ctx.const(weights[1].T[None], "R"),
    ]
    if layer.use_bias:
        bias = weights[2]
        if layer.reset_after:  # (2, 3u): input bias, recurrent bias
            args.append(ctx.const(np.concatenate([bias[0], bias[1]])[None], "B"))
        else:
            args.append(ctx.const(_bias(layer, bias, u, 3), "B"))
    y, y_h = ctx.op(
        "GRU",
        args,
        "gru",
        outputs=2,
        hidden_size=u,
        linear_before_reset=int(layer.reset_after),
        **_activations(layer, ["recurrent_activation", "activation"]),
    )
    return _outputs(layer, ctx, y, y_h)


# ---------------------------------------------------------------------------
# wrappers


def _reverse_time(ctx, name):
    big = np.iinfo(np.int64).max
    return ctx.op(
        "Slice",
        [
            name,
            ctx.ints([-1], "starts"),
            ctx.ints([-big], "ends"),
            ctx.ints([1], "axes"),
            ctx.ints([-1], "steps"),
        ],
        "reversed",
    )


@register_converter("Bidirectional")
def convert_bidirectional(layer, inputs, ctx):
    if ctx.call_kwargs.get("initial_state") is not None:
        raise unsupported(layer, "an initial_state argument is not supported")
    forward = ctx.convert_layer(layer.forward_layer, inputs)
    backward = ctx.convert_layer(layer.backward_layer, inputs)
    y, y_rev = forward[0], backward[0]
    states = forward[1:] + backward[1:] if layer.return_state else []
    if layer.return_sequences:
        y_rev = _reverse_time(ctx, y_rev)  # back in time order
    mode = layer.merge_mode
    if mode == "concat":
        output = [ctx.op("Concat", [y, y_rev], "concat", axis=-1)]
    elif mode == "sum":
        output = [ctx.op("Add", [y, y_rev], "sum")]
    elif mode == "ave":
        output = [ctx.op("Mul", [ctx.op("Add", [y, y_rev], "sum"), ctx.scalar(0.5, "half")], "ave")]
    elif mode == "mul":
        output = [ctx.op("Mul", [y, y_rev], "mul")]
    else:
        output = [y, y_rev]
    return output + states


@register_converter("TimeDistributed")
def convert_time_distributed(layer, inputs, ctx):
    from .export import Value

    x = inputs[0]
    if any(s is None for s in x.shape[2:]):
        raise unsupported(layer, f"input shape {x.shape} needs known sizes after the time axis")
    folded = ctx.reshape(x.name, (-1,) + x.shape[2:])
    (out,) = ctx.convert_layer(layer.layer, [Value(folded, (None,) + x.shape[2:], x.masked)])
    # (batch*steps, ...) -> (batch, steps, ...), sizes taken from the tensors at run time
    lead = ctx.op("Shape", [x.name], "lead", start=0, end=2)
    rest = ctx.op("Shape", [out], "rest", start=1)
    shape = ctx.op("Concat", [lead, rest], "unfolded_shape", axis=0)
    return ctx.op("Reshape", [out, shape], "unfolded")
