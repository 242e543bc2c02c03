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
from .conv import BaseConvLayer


class BaseDepthwiseConv(BaseConvLayer):
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
        super().__init__(
            kernel_size,
            strides,
            padding,
            data_format,
            dilation_rate,
            activation,
            use_bias,
            bias_initializer,
            bias_regularizer,
            **kwargs,
        )
        self.depth_multiplier = self.check_positive_int(depth_multiplier, "depth_multiplier")
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.depthwise_regularizer = regularizers.get(depthwise_regularizer)

    def build(self, input_shape):
        self.build_depthwise(input_shape)
        self.bias = self.add_bias(self.channels * self.depth_multiplier)

    def build_depthwise(self, input_shape):
        """Check the input shape and make ``depthwise_kernel`` (sets ``channels``)."""
        channels = self.input_channels(input_shape)
        self.check_fits(input_shape)
        self.channels = channels
        self.depthwise_kernel = self.add_weight(
            "depthwise_kernel",
            self.kernel_size + (channels, self.depth_multiplier),
            self.depthwise_initializer,
            self.depthwise_regularizer,
        )
        self.set_input_spec(channels)

    def depthwise(self, inputs, bias, relu):
        """The depthwise convolution of ``inputs``: a conv with ``groups = channels``."""
        self.check_fits(inputs.shape)
        kernel = ops.reshape(
            self.depthwise_kernel, self.kernel_size + (1, self.channels * self.depth_multiplier)
        )
        return ops.conv(
            inputs,
            kernel,
            bias,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            groups=self.channels,
            data_format=self.data_format,
            relu=relu,
        )

    def call(self, inputs):
        relu = self.fused_relu
        return self.activate(self.depthwise(inputs, self.bias, relu), relu)

    def get_config(self):
        return {
            **super().get_config(),
            "depth_multiplier": self.depth_multiplier,
            "depthwise_initializer": initializers.serialize(self.depthwise_initializer),
            "depthwise_regularizer": regularizers.serialize(self.depthwise_regularizer),
        }


class DepthwiseConv1D(BaseDepthwiseConv):
    """depthwise_kernel ``(k, channels, depth_multiplier)``."""

    rank = 1


class DepthwiseConv2D(BaseDepthwiseConv):
    """depthwise_kernel ``(kh, kw, channels, depth_multiplier)``."""

    rank = 2
