"""Converters of SimpleRNN, LSTM and GRU as ONNX's RNN, LSTM and GRU operators.

Weight layouts (Keras -> ONNX): kernels are transposed to ``(gates*u, in)``; the
LSTM's gates go from Keras's ``i, f, c, o`` to ONNX's ``i, o, f, c``; the GRU keeps
``z, r, h`` and ``reset_after=True`` is ``linear_before_reset=1`` with the input and
recurrent biases as ONNX's ``Wb`` and ``Rb``. ``go_backwards`` reverses the time
axis of the input and runs forward, so the sequence comes out in processing order
(reversed), as in Keras.

Inputs that carry a mask (Embedding(mask_zero=True), Masking), and activations those
operators lack, are exported as the unrolled time loop instead (one group of nodes per
step, as :mod:`dlx.ops.recurrent` computes it), which needs a known number of steps.
"""

import numpy as np

from .export import register_converter, unsupported

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
    if _needs_unrolling(layer, inputs):
        return convert_unrolled(layer, inputs, ctx)
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
    if _needs_unrolling(layer, inputs):
        return convert_unrolled(layer, inputs, ctx)
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
    if _needs_unrolling(layer, inputs):
        return convert_unrolled(layer, inputs, ctx)
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
# the time loop unrolled: masks and any activation, for a known number of steps


def _activation_names(layer):
    from ..ops.activations import activation_name

    names = [activation_name(layer.activation)]
    if layer.cell != "rnn":
        names.append(activation_name(layer.recurrent_activation))
    return names


def _needs_unrolling(layer, inputs):
    """Masks (Embedding(mask_zero=True), Masking) and activations ONNX's RNN operators lack
    need the unrolled loop."""
    return inputs[0].masked or any(n not in RNN_ACTIVATIONS for n in _activation_names(layer))


def convert_unrolled(layer, inputs, ctx):
    """One group of nodes per time step, computing what dlx.ops.recurrent computes: at a
    masked step the state is carried and the output repeats it (Keras semantics)."""
    from ..ops.activations import activation_name

    x = inputs[0]
    steps = x.shape[1]
    if steps is None:
        why = (
            "its input carries a mask"
            if x.masked
            else f"activations {_activation_names(layer)} have no ONNX {type(layer).__name__} form"
        )
        raise unsupported(
            layer,
            f"{why}, which is exported as an unrolled loop and needs a known number of time "
            f"steps; input shape {x.shape} (fix it in layers.Input, or export a Sequential "
            f"with input_shape=...)",
        )
    act_name = activation_name(layer.activation)
    ract_name = activation_name(layer.recurrent_activation) if layer.cell != "rnn" else None

    def act(name):
        return ctx.activation(act_name, name)

    def ract(name):
        return ctx.activation(ract_name, name)

    u, cell = layer.units, layer.cell
    weights = layer.get_weights()
    kernel, recurrent = weights[0], weights[1]
    bias = weights[2] if layer.use_bias else None
    input_bias, recurrent_bias = bias, None
    if cell == "gru" and bias is not None and layer.reset_after:
        input_bias, recurrent_bias = bias[0], bias[1]
    xproj = ctx.matmul_bias(x.name, kernel, input_bias)  # (B, T, G*u)
    batch = ctx.op("Shape", [x.name], "batch", start=0, end=1)
    shape = ctx.op("Concat", [batch, ctx.ints([u], "units")], "state_shape", axis=0)
    zero = ctx.helper.make_tensor("zero", ctx.onnx_dtype, [1], [0.0])
    h = ctx.op("ConstantOfShape", [shape], "h0", value=zero)
    c = h if cell == "lstm" else None
    reset_before = cell == "gru" and not layer.reset_after
    u_all = ctx.const(recurrent if not reset_before else recurrent[:, : 2 * u], "recurrent")
    u_h = ctx.const(recurrent[:, 2 * u :], "recurrent_h") if reset_before else None
    r_bias = ctx.const(recurrent_bias, "recurrent_bias") if recurrent_bias is not None else None

    def gate(z, g):
        return ctx.op(
            "Slice",
            [
                z,
                ctx.ints([g * u], "starts"),
                ctx.ints([(g + 1) * u], "ends"),
                ctx.ints([-1], "axes"),
            ],
            f"gate{g}",
        )

    order = range(steps - 1, -1, -1) if layer.go_backwards else range(steps)
    outputs = []
    for t in order:
        xt = ctx.op(
            "Gather",
            [xproj, ctx.const(np.asarray(t, np.int64), "t", dtype=np.int64)],
            f"x{t}",
            axis=1,
        )
        inner = ctx.op("MatMul", [h, u_all], f"hU{t}")
        if cell == "rnn":
            h_new = act(ctx.op("Add", [xt, inner], "z"))
        elif cell == "lstm":
            z = ctx.op("Add", [xt, inner], "z")
            i, f, g, o = ract(gate(z, 0)), ract(gate(z, 1)), act(gate(z, 2)), ract(gate(z, 3))
            c_new = ctx.op("Add", [ctx.op("Mul", [f, c], "fc"), ctx.op("Mul", [i, g], "ig")], "c")
            h_new = ctx.op("Mul", [o, act(c_new)], "h")
        elif layer.reset_after:
            if r_bias is not None:
                inner = ctx.op("Add", [inner, r_bias], "inner")
            zg = ract(ctx.op("Add", [gate(xt, 0), gate(inner, 0)], "z"))
            rg = ract(ctx.op("Add", [gate(xt, 1), gate(inner, 1)], "r"))
            hh = act(ctx.op("Add", [gate(xt, 2), ctx.op("Mul", [rg, gate(inner, 2)], "rh")], "hh"))
            h_new = _gru_update(ctx, zg, h, hh)
        else:
            zg = ract(ctx.op("Add", [gate(xt, 0), gate(inner, 0)], "z"))
            rg = ract(ctx.op("Add", [gate(xt, 1), gate(inner, 1)], "r"))
            rh = ctx.op("MatMul", [ctx.op("Mul", [rg, h], "r_h"), u_h], "rhU")
            hh = act(ctx.op("Add", [gate(xt, 2), rh], "hh"))
            h_new = _gru_update(ctx, zg, h, hh)
        if x.masked:  # carry the state where the step is masked
            mt = ctx.op(
                "Gather",
                [x.mask, ctx.const(np.asarray(t, np.int64), "t", dtype=np.int64)],
                f"m{t}",
                axis=1,
            )
            mt = ctx.unsqueeze(mt, [1])
            h_new = ctx.op("Where", [mt, h_new, h], "h_carried")
            if cell == "lstm":
                c_new = ctx.op("Where", [mt, c_new, c], "c_carried")
        h = h_new
        if cell == "lstm":
            c = c_new
        outputs.append(h)
    if layer.return_sequences:
        out = ctx.op("Concat", [ctx.unsqueeze(o, [1]) for o in outputs], "sequence", axis=1)
    else:
        out = ctx.op("Identity", [h], "last")
    if not layer.return_state:
        return out
    return [out, h] + ([c] if cell == "lstm" else [])


def _gru_update(ctx, z, h, hh):
    # h = z*h + (1 - z)*hh
    one_minus = ctx.op("Sub", [ctx.scalar(1.0, "one"), z], "one_minus_z")
    return ctx.op("Add", [ctx.op("Mul", [z, h], "zh"), ctx.op("Mul", [one_minus, hh], "zhh")], "h")


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
    (out,) = ctx.convert_layer(layer.layer, [Value(folded, (None,) + x.shape[2:])])
    # (batch*steps, ...) -> (batch, steps, ...), sizes taken from the tensors at run time
    lead = ctx.op("Shape", [x.name], "lead", start=0, end=2)
    rest = ctx.op("Shape", [out], "rest", start=1)
    shape = ctx.op("Concat", [lead, rest], "unfolded_shape", axis=0)
    return ctx.op("Reshape", [out, shape], "unfolded")
