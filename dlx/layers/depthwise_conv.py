"""Depthwise convolution: DepthwiseConv1D, DepthwiseConv2D.

Each input channel is convolved with its own ``depth_multiplier`` filters:
input ``(batch, *spatial, channels)`` (or channels first) -> output
``(batch, *out, channels * depth_multiplier)``, output channel
``c * depth_multiplier + m`` (Keras order). Padding rules as for Conv2D.

Weights (Keras layout): depthwise_kernel ``(*kernel_size, channels, depth_multiplier)``,
bias ``(channels * depth_multiplier,)``. Computed as a grouped convolution
(``groups = channels``).
"""

from .. import initializers, ops, regularizers
from ..ops.activations import activation_name, get_activation
from .conv import check_kernel_fits
from .layer import InputSpec, Layer
from .spatial_utils import (
    channel_axis,
    check_rank,
    layer_label,
    standardize_data_format,
    standardize_padding,
    standardize_tuple,
)


class BaseDepthwiseConv(Layer):
    rank = None

    def __init__(
        self,
        kernel_size,
        strides=1,
        padding="valid",
        depth_multiplier=1,
        data_format=None,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        rank = self.rank
        if not isinstance(depth_multiplier, int) or depth_multiplier <= 0:
            raise ValueError(
                f"{layer_label(self)}: depth_multiplier must be a positive integer, "
                f"got {depth_multiplier!r}"
            )
        self.depth_multiplier = depth_multiplier
        self.kernel_size = standardize_tuple(self, kernel_size, rank, "kernel_size")
        self.strides = standardize_tuple(self, strides, rank, "strides")
        self.dilation_rate = standardize_tuple(self, dilation_rate, rank, "dilation_rate")
        self.padding = standardize_padding(self, padding, allow_causal=rank == 1)
        self.data_format = standardize_data_format(self, data_format)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                f"{layer_label(self)}: strides > 1 cannot be combined with dilation_rate > 1 "
                f"(got strides={self.strides}, dilation_rate={self.dilation_rate})"
            )
        self.activation = get_activation(activation)
        self.use_bias = use_bias
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.depthwise_regularizer = regularizers.get(depthwise_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    def build(self, input_shape):
        check_rank(self, input_shape, self.rank, self.data_format)
        axis = channel_axis(self.data_format)
        channels = input_shape[axis]
        if channels is None:
            raise ValueError(
                f"{layer_label(self)}: the channel axis of input shape "
                f"{tuple(input_shape)} must be known"
            )
        check_kernel_fits(
            self,
            input_shape,
            self.kernel_size,
            self.strides,
            self.dilation_rate,
            self.padding,
            self.data_format,
        )
        self.channels = channels
        self.depthwise_kernel = self.add_weight(
            "depthwise_kernel",
            self.kernel_size + (channels, self.depth_multiplier),
            self.depthwise_initializer,
            self.depthwise_regularizer,
        )
        self.bias = (
            self.add_weight(
                "bias",
                (channels * self.depth_multiplier,),
                self.bias_initializer,
                self.bias_regularizer,
            )
            if self.use_bias
            else None
        )
        self.input_spec = InputSpec(ndim=self.rank + 2, axes={axis: channels})

    def call(self, inputs):
        check_kernel_fits(
            self,
            inputs.shape,
            self.kernel_size,
            self.strides,
            self.dilation_rate,
            self.padding,
            self.data_format,
        )
        kernel = ops.reshape(
            self.depthwise_kernel, self.kernel_size + (1, self.channels * self.depth_multiplier)
        )
        relu = activation_name(self.activation) == "relu"
        y = ops.conv(
            inputs,
            kernel,
            self.bias,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            groups=self.channels,
            data_format=self.data_format,
            relu=relu,
        )
        return y if relu else self.activation(y)

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "depth_multiplier": self.depth_multiplier,
            "data_format": self.data_format,
            "dilation_rate": list(self.dilation_rate),
            "activation": activation_name(self.activation),
            "use_bias": self.use_bias,
            "depthwise_initializer": initializers.serialize(self.depthwise_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "depthwise_regularizer": regularizers.serialize(self.depthwise_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
        }


class DepthwiseConv1D(BaseDepthwiseConv):
    """depthwise_kernel ``(k, channels, depth_multiplier)``."""

    rank = 1


class DepthwiseConv2D(BaseDepthwiseConv):
    """depthwise_kernel ``(kh, kw, channels, depth_multiplier)``."""

    rank = 2
