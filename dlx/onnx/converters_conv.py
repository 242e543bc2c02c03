"""Converters of the convolution and pooling layers.

ONNX convolutions and pools are channels-first, so channels-last inputs are
transposed to ``(N, C, *spatial)`` around each of them (ONNX Runtime removes
back-to-back transposes). Keras's ``"same"``/``"causal"`` padding becomes explicit
``pads`` computed with dlx's own rule (:func:`dlx.ops.convolution.conv_padding`), so
odd padding goes to the end exactly as in dlx.
"""

import numpy as np

from ..ops.convolution import conv_padding, transpose_padding
from .export import register_converter, unsupported


def _to_first(ctx, x, rank):
    return ctx.transpose(x, (0, rank + 1) + tuple(range(1, rank + 1)))


def _to_last(ctx, x, rank):
    return ctx.transpose(x, (0,) + tuple(range(2, rank + 2)) + (1,))


def _spatial(value, rank, data_format):
    return value.shape[2:] if data_format == "channels_first" else value.shape[1 : rank + 1]


def _pads(layer, value, rank, kernel, strides, dilation, padding, data_format):
    """ONNX ``pads`` ``[b_1..b_r, e_1..e_r]`` (or ``auto_pad`` where a size is unknown)."""
    spatial = _spatial(value, rank, data_format)
    if padding == "valid":
        return {"pads": [0] * (2 * rank)}
    if any(n is None for n in spatial):
        if padding == "same":  # SAME_UPPER is TensorFlow's rule: the odd cell at the end
            return {"auto_pad": "SAME_UPPER"}
        if padding != "causal":
            raise unsupported(layer, f"padding={padding!r} needs known spatial sizes")
    pairs = [
        conv_padding(n if n is not None else 1, k, s, d, padding)
        for n, k, s, d in zip(spatial, kernel, strides, dilation)
    ]
    return {"pads": [b for b, _ in pairs] + [a for _, a in pairs]}


def _channels_first_kernel(kernel, rank):
    """Keras ``(*K, in, out)`` -> ONNX ``(out, in, *K)``."""
    return np.transpose(kernel, (rank + 1, rank) + tuple(range(rank)))


def _conv_first(ctx, layer, x, name, kernel, bias, strides, padding, dilation, groups):
    """ONNX Conv on the channels-first tensor ``name``; ``kernel`` in Keras layout
    ``(*K, in // groups, out)``; pads from ``x`` (the layer's input Value)."""
    rank = kernel.ndim - 2
    args = [name, ctx.const(_channels_first_kernel(kernel, rank), "kernel")]
    if bias is not None:
        args.append(ctx.const(bias, "bias"))
    pads = _pads(layer, x, rank, kernel.shape[:rank], strides, dilation, padding, layer.data_format)
    return ctx.op(
        "Conv",
        args,
        "conv",
        kernel_shape=list(kernel.shape[:rank]),
        strides=list(strides),
        dilations=list(dilation),
        group=groups,
        **pads,
    )


def _around_first(ctx, layer, x, rank, compute):
    """Run ``compute(channels_first_name)`` with transposes for channels-last layers."""
    last = layer.data_format == "channels_last"
    name = _to_first(ctx, x.name, rank) if last else x.name
    y = compute(name)
    return _to_last(ctx, y, rank) if last else y


@register_converter("Conv1D", "Conv2D", "Conv3D")
def convert_conv(layer, inputs, ctx):
    weights = layer.get_weights()
    bias = weights[1] if layer.use_bias else None
    y = _around_first(
        ctx,
        layer,
        inputs[0],
        layer.rank,
        lambda name: _conv_first(
            ctx,
            layer,
            inputs[0],
            name,
            weights[0],
            bias,
            layer.strides,
            layer.padding,
            layer.dilation_rate,
            layer.groups,
        ),
    )
    return ctx.activation(layer.activation, y)


def _depthwise_kernel(layer, kernel):
    """``(*K, C, M)`` -> the grouped-conv kernel ``(*K, 1, C*M)`` (output ``c*M + m``)."""
    return kernel.reshape(tuple(layer.kernel_size) + (1, -1))


@register_converter("DepthwiseConv1D", "DepthwiseConv2D")
def convert_depthwise_conv(layer, inputs, ctx):
    weights = layer.get_weights()
    bias = weights[1] if layer.use_bias else None
    y = _around_first(
        ctx,
        layer,
        inputs[0],
        layer.rank,
        lambda name: _conv_first(
            ctx,
            layer,
            inputs[0],
            name,
            _depthwise_kernel(layer, weights[0]),
            bias,
            layer.strides,
            layer.padding,
            layer.dilation_rate,
            layer.channels,
        ),
    )
    return ctx.activation(layer.activation, y)


@register_converter("SeparableConv1D", "SeparableConv2D")
def convert_separable_conv(layer, inputs, ctx):
    weights = layer.get_weights()
    bias = weights[2] if layer.use_bias else None
    rank = layer.rank

    def compute(name):
        y = _conv_first(
            ctx,
            layer,
            inputs[0],
            name,
            _depthwise_kernel(layer, weights[0]),
            None,
            layer.strides,
            layer.padding,
            layer.dilation_rate,
            layer.channels,
        )
        return _conv_first(
            ctx, layer, inputs[0], y, weights[1], bias, (1,) * rank, "valid", (1,) * rank, 1
        )

    return ctx.activation(layer.activation, _around_first(ctx, layer, inputs[0], rank, compute))


@register_converter("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
def convert_conv_transpose(layer, inputs, ctx):
    # dlx's transposed convolution is the input-gradient of the convolution whose
    # kernel (*K, filters, channels) maps filters -> channels: ONNX ConvTranspose with
    # W = (channels, filters, *K) and that convolution's pads. A negative end pad
    # (output cells no input reaches) is ONNX's output_padding.
    rank = layer.rank
    weights = layer.get_weights()
    x = inputs[0]
    last = layer.data_format == "channels_last"
    output_padding = layer.output_padding or (None,) * rank
    pairs = [
        transpose_padding(k, s, d, layer.padding, op)
        for k, s, d, op in zip(
            layer.kernel_size, layer.strides, layer.dilation_rate, output_padding
        )
    ]
    begin = [b for b, _ in pairs]
    end = [max(a, 0) for _, a in pairs]
    extra = [max(-a, 0) for _, a in pairs]
    if any(b < 0 for b in begin):
        raise unsupported(layer, f"negative leading padding {begin} cannot be expressed")
    name = _to_first(ctx, x.name, rank) if last else x.name
    kernel = np.transpose(weights[0], (rank + 1, rank) + tuple(range(rank)))
    args = [name, ctx.const(kernel, "kernel")]
    if layer.use_bias:
        args.append(ctx.const(weights[1], "bias"))
    y = ctx.op(
        "ConvTranspose",
        args,
        "conv_transpose",
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.strides),
        dilations=list(layer.dilation_rate),
        pads=begin + end,
        output_padding=extra if any(extra) else None,
    )
    y = _to_last(ctx, y, rank) if last else y
    return ctx.activation(layer.activation, y)


@register_converter(
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
)
def convert_pooling(layer, inputs, ctx):
    rank = layer.rank
    x = inputs[0]
    last = layer.data_format == "channels_last"
    name = _to_first(ctx, x.name, rank) if last else x.name
    pads = _pads(
        layer,
        x,
        rank,
        layer.pool_size,
        layer.strides,
        (1,) * rank,
        layer.padding,
        layer.data_format,
    )
    attrs = dict(kernel_shape=list(layer.pool_size), strides=list(layer.strides), **pads)
    if layer.kind == "max":
        y = ctx.op("MaxPool", [name], "max_pool", **attrs)
    else:  # padded cells do not count, as in Keras
        y = ctx.op("AveragePool", [name], "avg_pool", count_include_pad=0, **attrs)
    return _to_last(ctx, y, rank) if last else y


@register_converter(
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
)
def convert_global_pooling(layer, inputs, ctx):
    first = 2 if layer.data_format == "channels_first" else 1
    axes = list(range(first, first + layer.rank))
    op_type = "ReduceMean" if layer.kind == "avg" else "ReduceMax"
    return ctx.reduce(op_type, inputs[0].name, axes, keepdims=layer.keepdims)


@register_converter("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D")
def convert_zero_padding(layer, inputs, ctx):
    x = inputs[0]
    pairs = [tuple(p) for p in layer.padding]
    rank = len(pairs)
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        axes = list(range(2, rank + 2))
    else:
        axes = list(range(1, rank + 1))
    begin, end = [0] * x.rank, [0] * x.rank
    for a, (b, e) in zip(axes, pairs):
        begin[a], end[a] = b, e
    return ctx.op("Pad", [x.name, ctx.ints(begin + end, "pads")], "zero_padding", mode="constant")


def _spatial_axes(layer, rank):
    first = 2 if layer.data_format == "channels_first" else 1
    return list(range(first, first + rank))


@register_converter("Cropping1D", "Cropping2D", "Cropping3D")
def convert_cropping(layer, inputs, ctx):
    big = np.iinfo(np.int64).max
    axes = _spatial_axes(layer, layer.rank)
    starts = [b for b, _ in layer.cropping]
    ends = [-a if a else big for _, a in layer.cropping]
    return ctx.op(
        "Slice",
        [
            inputs[0].name,
            ctx.ints(starts, "starts"),
            ctx.ints(ends, "ends"),
            ctx.ints(axes, "axes"),
        ],
        "cropping",
    )


@register_converter("UpSampling1D", "UpSampling2D", "UpSampling3D")
def convert_upsampling(layer, inputs, ctx):
    # nearest neighbour: each cell repeated ``size`` times along its axis, as dlx does it
    # (reshape to (.., n, 1, ..), broadcast to (.., n, s, ..), reshape to (.., n*s, ..))
    x = inputs[0]
    axes = _spatial_axes(layer, layer.rank)
    if any(x.shape[a] is None for a in range(1, x.rank)):
        raise unsupported(layer, f"input shape {x.shape} needs known non-batch sizes")
    expanded, broadcast, final = [0], [1], [0]
    for axis in range(1, x.rank):
        n = x.shape[axis]
        if axis in axes:
            s = layer.size[axes.index(axis)]
            expanded += [n, 1]
            broadcast += [n, s]
            final.append(n * s)
        else:
            expanded.append(n)
            broadcast.append(n)
            final.append(n)
    y = ctx.reshape(x.name, expanded)
    y = ctx.op("Expand", [y, ctx.ints(broadcast, "shape")], "upsampled")
    return ctx.reshape(y, final)
