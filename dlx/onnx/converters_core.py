"""Converters of the core layers: Dense, Activation, Dropout, Flatten, Reshape, Embedding,
BatchNormalization, LayerNormalization and the merge layers; the activation table."""

import math

import numpy as np

from .export import register_converter, unsupported

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


# ---------------------------------------------------------------------------
# activations (Keras 3 definitions, as dlx.ops.activations computes them)


def _gelu(ctx, x):
    # exact form: x * 0.5 * (1 + erf(x / sqrt(2)))
    t = ctx.op("Div", [x, ctx.scalar(math.sqrt(2.0), "sqrt2")], "gelu_div")
    cdf = ctx.op("Add", [ctx.op("Erf", [t], "gelu_erf"), ctx.scalar(1.0, "one")], "gelu_add")
    cdf = ctx.op("Mul", [cdf, ctx.scalar(0.5, "half")], "gelu_cdf")
    return ctx.op("Mul", [x, cdf], "gelu")


def _softplus(ctx, x):
    # log1p(exp(-|x|)) + max(x, 0): stable for large |x|, as dlx computes it
    e = ctx.op("Exp", [ctx.op("Neg", [ctx.op("Abs", [x], "abs")], "neg")], "exp")
    log1p = ctx.op("Log", [ctx.op("Add", [e, ctx.scalar(1.0, "one")], "add")], "log1p")
    return ctx.op("Add", [log1p, ctx.op("Relu", [x], "relu")], "softplus")


def _hard_sigmoid(ctx, x):
    return ctx.op("HardSigmoid", [x], "hard_sigmoid", alpha=1.0 / 6.0, beta=0.5)


ACTIVATIONS = {
    "linear": lambda ctx, x: x,
    "relu": lambda ctx, x: ctx.op("Relu", [x], "relu"),
    "sigmoid": lambda ctx, x: ctx.op("Sigmoid", [x], "sigmoid"),
    "tanh": lambda ctx, x: ctx.op("Tanh", [x], "tanh"),
    "softmax": lambda ctx, x: ctx.op("Softmax", [x], "softmax", axis=-1),
    "log_softmax": lambda ctx, x: ctx.op("LogSoftmax", [x], "log_softmax", axis=-1),
    "elu": lambda ctx, x: ctx.op("Elu", [x], "elu", alpha=1.0),
    "selu": lambda ctx, x: ctx.op("Selu", [x], "selu", alpha=SELU_ALPHA, gamma=SELU_SCALE),
    "gelu": _gelu,
    "leaky_relu": lambda ctx, x: ctx.op("LeakyRelu", [x], "leaky_relu", alpha=0.2),
    "relu6": lambda ctx, x: ctx.op(
        "Clip", [x, ctx.scalar(0.0, "zero"), ctx.scalar(6.0, "six")], "relu6"
    ),
    "hard_sigmoid": _hard_sigmoid,
    "hard_silu": lambda ctx, x: ctx.op("Mul", [x, _hard_sigmoid(ctx, x)], "hard_silu"),
    "softplus": _softplus,
    "softsign": lambda ctx, x: ctx.op("Softsign", [x], "softsign"),
    "silu": lambda ctx, x: ctx.op("Mul", [x, ctx.op("Sigmoid", [x], "sigmoid")], "silu"),
    "mish": lambda ctx, x: ctx.op("Mul", [x, ctx.op("Tanh", [_softplus(ctx, x)], "tanh")], "mish"),
    "exponential": lambda ctx, x: ctx.op("Exp", [x], "exp"),
}
ACTIVATIONS["swish"] = ACTIVATIONS["silu"]
ACTIVATIONS["hard_swish"] = ACTIVATIONS["hard_silu"]


def apply_activation(ctx, fn, x):
    from ..ops.activations import ACTIVATIONS as DLX_ACTIVATIONS
    from ..ops.activations import activation_name

    name = fn if isinstance(fn, str) else activation_name(fn)
    if name not in ACTIVATIONS or (not isinstance(fn, str) and DLX_ACTIVATIONS.get(name) is not fn):
        raise unsupported(
            ctx.layer,
            f"activation {name!r} has no ONNX form; exportable activations are "
            f"{sorted(ACTIVATIONS)}",
        )
    return ACTIVATIONS[name](ctx, x)


@register_converter("Activation")
def convert_activation(layer, inputs, ctx):
    return ctx.activation(layer.activation, inputs[0].name)


# ---------------------------------------------------------------------------
# dense and shape layers


@register_converter("Dense")
def convert_dense(layer, inputs, ctx):
    weights = layer.get_weights()
    y = ctx.matmul_bias(inputs[0].name, weights[0], weights[1] if layer.use_bias else None)
    return ctx.activation(layer.activation, y)


@register_converter("Dropout", "InputLayer")
def convert_identity(layer, inputs, ctx):
    return ctx.op("Identity", [inputs[0].name], "identity")


@register_converter("Flatten")
def convert_flatten(layer, inputs, ctx):
    x = inputs[0]
    name = x.name
    if layer.data_format == "channels_first" and x.rank > 2:
        name = ctx.transpose(name, (0,) + tuple(range(2, x.rank)) + (1,))
    return ctx.op("Flatten", [name], "flatten", axis=1)


@register_converter("Reshape")
def convert_reshape(layer, inputs, ctx):
    return ctx.reshape(inputs[0].name, (0,) + tuple(layer.target_shape))


@register_converter("Embedding")
def convert_embedding(layer, inputs, ctx):
    (table,) = layer.get_weights()
    indices = ctx.op("Cast", [inputs[0].name], "indices", to=ctx.TensorProto.INT64)
    if layer.mask_zero:  # index 0 is padding: the mask is indices != 0
        zero = ctx.const(np.zeros((), np.int64), "zero", dtype=np.int64)
        ctx.set_output_mask(ctx.op("Not", [ctx.op("Equal", [indices, zero], "is_pad")], "mask"))
    return ctx.op("Gather", [ctx.const(table, "embeddings"), indices], "embedding", axis=0)


@register_converter("Masking")
def convert_masking(layer, inputs, ctx):
    # mask = any(x != mask_value, axis=-1); output x * mask (masked steps set to zero)
    x = inputs[0].name
    differs = ctx.op(
        "Not",
        [ctx.op("Equal", [x, ctx.scalar(layer.mask_value, "mask_value")], "equal")],
        "differs",
    )
    keep = ctx.reduce(
        "ReduceMax", ctx.op("Cast", [differs], "differs_f", to=ctx.onnx_dtype), [-1], keepdims=False
    )
    ctx.set_output_mask(ctx.op("Cast", [keep], "mask", to=ctx.TensorProto.BOOL))
    return ctx.op("Mul", [x, ctx.unsqueeze(keep, [-1])], "masked")


# ---------------------------------------------------------------------------
# normalization


def _param_shape(rank, axes, sizes):
    """Shape that broadcasts a parameter of the ``axes`` dimensions against a rank-``rank``
    input (the batch axis excluded: ONNX broadcasting aligns from the right)."""
    shape = [1] * rank
    for a, s in zip(axes, sizes):
        shape[a] = s
    return shape[1:]


@register_converter("BatchNormalization")
def convert_batch_normalization(layer, inputs, ctx):
    # inference: (x - mean) / sqrt(var + eps) * gamma + beta, folded to x * scale + shift
    x = inputs[0]
    weights = list(layer.get_weights())
    gamma = weights.pop(0).astype(np.float64) if layer.scale else None
    beta = weights.pop(0).astype(np.float64) if layer.center else None
    mean, var = (w.astype(np.float64) for w in weights)
    scale = 1.0 / np.sqrt(var + layer.epsilon)
    if gamma is not None:
        scale = scale * gamma
    shift = -mean * scale
    if beta is not None:
        shift = shift + beta
    axes = list(layer._axes)
    shape = _param_shape(x.rank, axes, [x.shape[a] for a in axes])
    y = ctx.op("Mul", [x.name, ctx.const(scale.reshape(shape), "scale")], "bn_scale")
    return ctx.op("Add", [y, ctx.const(shift.reshape(shape), "shift")], "bn_shift")


@register_converter("LayerNormalization")
def convert_layer_normalization(layer, inputs, ctx):
    x = inputs[0]
    weights = list(layer.get_weights())
    gamma = weights.pop(0) if layer.scale else None
    beta = weights.pop(0) if layer.center else None
    axes = list(layer._axes)
    sizes = [x.shape[a] for a in axes]
    if axes == list(range(axes[0], x.rank)):
        # the trailing axes: ONNX LayerNormalization (opset 17)
        if gamma is None:
            gamma = np.ones(sizes, dtype=ctx.dtype)
        args = [x.name, ctx.const(gamma, "gamma")]
        if beta is not None:
            args.append(ctx.const(beta, "beta"))
        return ctx.op("LayerNormalization", args, "layer_norm", axis=axes[0], epsilon=layer.epsilon)
    # other axes: the same arithmetic as dlx, node by node
    mean = ctx.reduce("ReduceMean", x.name, axes, keepdims=True)
    centered = ctx.op("Sub", [x.name, mean], "centered")
    var = ctx.reduce("ReduceMean", ctx.op("Mul", [centered, centered], "sq"), axes, True)
    std = ctx.op("Sqrt", [ctx.op("Add", [var, ctx.scalar(layer.epsilon, "eps")], "var")], "std")
    y = ctx.op("Mul", [centered, ctx.op("Reciprocal", [std], "inv")], "xhat")
    shape = _param_shape(x.rank, axes, sizes)
    if gamma is not None:
        y = ctx.op("Mul", [y, ctx.const(gamma.reshape(shape), "gamma")], "ln_scale")
    if beta is not None:
        y = ctx.op("Add", [y, ctx.const(beta.reshape(shape), "beta")], "ln_shift")
    return y


# ---------------------------------------------------------------------------
# merges


def _chain(ctx, op_type, names):
    out = names[0]
    for name in names[1:]:
        out = ctx.op(op_type, [out, name], op_type.lower())
    return out


@register_converter("Add")
def convert_add(layer, inputs, ctx):
    return _chain(ctx, "Add", [v.name for v in inputs])


@register_converter("Subtract")
def convert_subtract(layer, inputs, ctx):
    return ctx.op("Sub", [inputs[0].name, inputs[1].name], "subtract")


@register_converter("Multiply")
def convert_multiply(layer, inputs, ctx):
    return _chain(ctx, "Mul", [v.name for v in inputs])


@register_converter("Average")
def convert_average(layer, inputs, ctx):
    total = _chain(ctx, "Add", [v.name for v in inputs])
    return ctx.op("Mul", [total, ctx.scalar(1.0 / len(inputs), "inv_n")], "average")


@register_converter("Maximum")
def convert_maximum(layer, inputs, ctx):
    return _chain(ctx, "Max", [v.name for v in inputs])


@register_converter("Minimum")
def convert_minimum(layer, inputs, ctx):
    return _chain(ctx, "Min", [v.name for v in inputs])


@register_converter("Concatenate")
def convert_concatenate(layer, inputs, ctx):
    if len(inputs) == 1:
        return ctx.op("Identity", [inputs[0].name], "identity")
    axis = layer.axis % inputs[0].rank
    return ctx.op("Concat", [v.name for v in inputs], "concat", axis=axis)


def _l2_normalize(ctx, x, axis):
    squared = ctx.reduce("ReduceSum", ctx.op("Mul", [x, x], "sq"), [axis], keepdims=True)
    norm = ctx.op("Sqrt", [ctx.op("Max", [squared, ctx.scalar(1e-12, "eps")], "max")], "norm")
    return ctx.op("Div", [x, norm], "l2_normalize")


@register_converter("Dot")
def convert_dot(layer, inputs, ctx):
    x, y = inputs
    xs, ys = x.shape, y.shape
    if any(s is None for s in xs[1:] + ys[1:]):
        raise unsupported(layer, f"inputs of shapes {xs} and {ys} need known non-batch sizes")
    ax, ay = layer._pair([xs, ys])
    xn, yn = x.name, y.name
    if layer.normalize:
        xn, yn = _l2_normalize(ctx, xn, ax), _l2_normalize(ctx, yn, ay)
    x_rest = [a for a in range(1, len(xs)) if a != ax]
    y_rest = [a for a in range(1, len(ys)) if a != ay]
    p = math.prod(xs[a] for a in x_rest)
    q = math.prod(ys[a] for a in y_rest)
    xt = ctx.reshape(ctx.transpose(xn, (0, *x_rest, ax)), (-1, p, xs[ax]))
    yt = ctx.reshape(ctx.transpose(yn, (0, ay, *y_rest)), (-1, ys[ay], q))
    out = ctx.op("MatMul", [xt, yt], "dot")
    out_shape = tuple(xs[a] for a in x_rest) + tuple(ys[a] for a in y_rest)
    return ctx.reshape(out, (-1,) + (out_shape or (1,)))


@register_converter("GroupNormalization")
def convert_group_normalization(layer, inputs, ctx):
    # dlx's arithmetic: channels split into groups, statistics per sample and group
    x = inputs[0]
    if any(s is None for s in x.shape[1:]):
        raise unsupported(layer, f"input shape {x.shape} needs known non-batch sizes")
    weights = list(layer.get_weights())
    gamma = weights.pop(0) if layer.scale else None
    beta = weights.pop(0) if layer.center else None
    axis, groups = layer._axis, layer._groups
    channels = x.shape[axis]
    grouped = (0,) + x.shape[1:axis] + (groups, channels // groups) + x.shape[axis + 1 :]
    stat_axes = [a for a in range(1, x.rank + 1) if a != axis]
    xs = ctx.reshape(x.name, grouped)
    mean = ctx.reduce("ReduceMean", xs, stat_axes, keepdims=True)
    centered = ctx.op("Sub", [xs, mean], "centered")
    var = ctx.reduce("ReduceMean", ctx.op("Mul", [centered, centered], "sq"), stat_axes, True)
    std = ctx.op("Sqrt", [ctx.op("Add", [var, ctx.scalar(layer.epsilon, "eps")], "var")], "std")
    y = ctx.op("Mul", [centered, ctx.op("Reciprocal", [std], "inv")], "xhat")
    y = ctx.reshape(y, (0,) + x.shape[1:])
    shape = _param_shape(x.rank, [axis], [channels])
    if gamma is not None:
        y = ctx.op("Mul", [y, ctx.const(gamma.reshape(shape), "gamma")], "gn_scale")
    if beta is not None:
        y = ctx.op("Add", [y, ctx.const(beta.reshape(shape), "beta")], "gn_shift")
    return y
