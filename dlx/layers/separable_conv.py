"""Depthwise-separable convolution: SeparableConv1D, SeparableConv2D.

A depthwise convolution (strides, padding, dilation apply here) followed by a
pointwise (1x1) convolution to ``filters`` channels, then bias and activation.
Input ``(batch, *spatial, channels)`` (or channels first) -> ``(batch, *out, filters)``.

Weights (Keras layout): depthwise_kernel ``(*kernel_size, channels, depth_multiplier)``,
pointwise_kernel ``(*(1,) * rank, channels * depth_multiplier, filters)``, bias ``(filters,)``.
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


class BaseSeparableConv(Layer):
    rank = None

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        depth_multiplier=1,
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        pointwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        pointwise_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        rank = self.rank
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(
                f"{layer_label(self)}: filters must be a positive integer, got {filters!r}"
            )
        if not isinstance(depth_multiplier, int) or depth_multiplier <= 0:
            raise ValueError(
                f"{layer_label(self)}: depth_multiplier must be a positive integer, "
                f"got {depth_multiplier!r}"
            )
        self.filters, self.depth_multiplier = filters, depth_multiplier
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
        self.pointwise_initializer = initializers.get(pointwise_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.depthwise_regularizer = regularizers.get(depthwise_regularizer)
        self.pointwise_regularizer = regularizers.get(pointwise_regularizer)
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
        self.pointwise_kernel = self.add_weight(
            "pointwise_kernel",
            (1,) * self.rank + (channels * self.depth_multiplier, self.filters),
            self.pointwise_initializer,
            self.pointwise_regularizer,
        )
        self.bias = (
            self.add_weight("bias", (self.filters,), self.bias_initializer, self.bias_regularizer)
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
        depthwise = ops.reshape(
            self.depthwise_kernel, self.kernel_size + (1, self.channels * self.depth_multiplier)
        )
        y = ops.conv(
            inputs,
            depthwise,
            None,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            groups=self.channels,
            data_format=self.data_format,
        )
        relu = activation_name(self.activation) == "relu"
        y = ops.conv(y, self.pointwise_kernel, self.bias, data_format=self.data_format, relu=relu)
        return y if relu else self.activation(y)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": list(self.dilation_rate),
            "depth_multiplier": self.depth_multiplier,
            "activation": activation_name(self.activation),
            "use_bias": self.use_bias,
            "depthwise_initializer": initializers.serialize(self.depthwise_initializer),
            "pointwise_initializer": initializers.serialize(self.pointwise_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "depthwise_regularizer": regularizers.serialize(self.depthwise_regularizer),
            "pointwise_regularizer": regularizers.serialize(self.pointwise_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
        }


class SeparableConv1D(BaseSeparableConv):
    rank = 1


class SeparableConv2D(BaseSeparableConv):
    rank = 2


SeparableConvolution1D, SeparableConvolution2D = SeparableConv1D, SeparableConv2D
