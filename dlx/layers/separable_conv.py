"""Depthwise-separable convolution: SeparableConv1D, SeparableConv2D.

A depthwise convolution (strides, padding, dilation apply here) followed by a
pointwise (1x1) convolution to ``filters`` channels, then bias and activation.
Input ``(batch, *spatial, channels)`` (or channels first) -> ``(batch, *out, filters)``.

Weights (Keras layout): depthwise_kernel ``(*kernel_size, channels, depth_multiplier)``,
pointwise_kernel ``(*(1,) * rank, channels * depth_multiplier, filters)``, bias ``(filters,)``.
"""

from .. import initializers, ops, regularizers
from .depthwise_conv import BaseDepthwiseConv


class BaseSeparableConv(BaseDepthwiseConv):
    """The depthwise convolution of :class:`BaseDepthwiseConv` (without its bias),
    then a pointwise one to ``filters`` channels with the bias and activation."""

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
        super().__init__(
            kernel_size,
            strides,
            padding,
            depth_multiplier,
            data_format,
            dilation_rate,
            activation,
            use_bias,
            depthwise_initializer,
            bias_initializer,
            depthwise_regularizer,
            bias_regularizer,
            **kwargs,
        )
        self.filters = self.check_positive_int(filters, "filters")
        self.pointwise_initializer = initializers.get(pointwise_initializer)
        self.pointwise_regularizer = regularizers.get(pointwise_regularizer)

    def build(self, input_shape):
        self.build_depthwise(input_shape)
        self.pointwise_kernel = self.add_weight(
            "pointwise_kernel",
            (1,) * self.rank + (self.channels * self.depth_multiplier, self.filters),
            self.pointwise_initializer,
            self.pointwise_regularizer,
        )
        self.bias = self.add_bias(self.filters)

    def call(self, inputs):
        y = self.depthwise(inputs, None, False)
        relu = self.fused_relu
        y = ops.conv(y, self.pointwise_kernel, self.bias, data_format=self.data_format, relu=relu)
        return self.activate(y, relu)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "pointwise_initializer": initializers.serialize(self.pointwise_initializer),
            "pointwise_regularizer": regularizers.serialize(self.pointwise_regularizer),
        }


class SeparableConv1D(BaseSeparableConv):
    rank = 1


class SeparableConv2D(BaseSeparableConv):
    rank = 2


SeparableConvolution1D, SeparableConvolution2D = SeparableConv1D, SeparableConv2D
