"""Convolution layers: Conv1D, Conv2D, Conv3D (one N-D implementation).

Input ``(batch, *spatial, channels)`` (``data_format="channels_last"``, the
default) or ``(batch, channels, *spatial)``; output ``(batch, *out, filters)``
(or channels first) with ``out`` from Keras's rule: ``padding="valid"``:
``floor((n - dilation * (k - 1) - 1) / stride) + 1``; ``"same"``:
``ceil(n / stride)``; ``"causal"`` (Conv1D): like ``"same"`` with all padding
before.

Weights (Keras layout): kernel ``(*kernel_size, channels // groups, filters)``,
bias ``(filters,)``.
"""

from .. import initializers, ops, regularizers
from ..ops.activations import activation_name, get_activation
from ..ops.convolution import conv_output_size, conv_padding
from .layer import InputSpec, Layer
from .spatial_utils import (
    channel_axis,
    check_rank,
    layer_label,
    spatial_shape,
    standardize_data_format,
    standardize_padding,
    standardize_tuple,
)


def check_kernel_fits(layer, input_shape, kernel_size, strides, dilation, padding, data_format):
    """Raise a clear error when the (dilated) kernel does not fit the padded input."""
    spatial = spatial_shape(input_shape, data_format)
    for n, k, s, d in zip(spatial, kernel_size, strides, dilation):
        if n is None:
            continue
        pads = conv_padding(n, k, s, d, padding)
        if conv_output_size(n, k, s, d, pads) <= 0:
            raise ValueError(
                f"{layer_label(layer)}: kernel_size {tuple(kernel_size)} (dilation_rate "
                f"{tuple(dilation)}) is larger than the input's spatial shape {spatial} with "
                f"padding={padding!r} (input shape {tuple(input_shape)}); use padding='same' "
                f"or a smaller kernel."
            )


class BaseConvLayer(Layer):
    """What every convolution layer shares (Conv, ConvTranspose, DepthwiseConv, SeparableConv).

    The spatial arguments (``kernel_size``, ``strides``, ``padding``,
    ``data_format``, ``dilation_rate``) with their checks, ``activation``,
    ``use_bias`` and the bias initializer/regularizer; the input checks of
    ``build``; the common part of ``get_config``. Subclasses fix ``rank`` (number
    of spatial axes) and ``causal`` (whether 1D layers accept ``padding="causal"``).
    """

    rank = None
    causal = True

    def __init__(
        self,
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
    ):
        super().__init__(**kwargs)
        rank = self.rank
        self.kernel_size = standardize_tuple(self, kernel_size, rank, "kernel_size")
        self.strides = standardize_tuple(self, strides, rank, "strides")
        self.dilation_rate = standardize_tuple(self, dilation_rate, rank, "dilation_rate")
        self.padding = standardize_padding(self, padding, allow_causal=self.causal and rank == 1)
        self.data_format = standardize_data_format(self, data_format)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                f"{layer_label(self)}: strides > 1 cannot be combined with dilation_rate > 1 "
                f"(got strides={self.strides}, dilation_rate={self.dilation_rate})"
            )
        self.activation = get_activation(activation)
        self.use_bias = use_bias
        self.bias_initializer = initializers.get(bias_initializer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    def check_positive_int(self, value, name):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(
                f"{layer_label(self)}: {name} must be a positive integer, got {value!r}"
            )
        return value

    def input_channels(self, input_shape):
        """The channel count of ``input_shape`` (checked: rank, channel axis known)."""
        check_rank(self, input_shape, self.rank, self.data_format)
        channels = input_shape[channel_axis(self.data_format)]
        if channels is None:
            raise ValueError(
                f"{layer_label(self)}: the channel axis of input shape "
                f"{tuple(input_shape)} must be known"
            )
        return channels

    def check_fits(self, input_shape):
        check_kernel_fits(
            self,
            input_shape,
            self.kernel_size,
            self.strides,
            self.dilation_rate,
            self.padding,
            self.data_format,
        )

    def add_bias(self, size):
        """The ``(size,)`` bias weight, or None without ``use_bias``."""
        if not self.use_bias:
            return None
        return self.add_weight("bias", (size,), self.bias_initializer, self.bias_regularizer)

    def set_input_spec(self, channels):
        axis = channel_axis(self.data_format)
        self.input_spec = InputSpec(ndim=self.rank + 2, axes={axis: channels})

    @property
    def fused_relu(self):
        """Whether the activation is a ReLU the convolution op applies itself."""
        return activation_name(self.activation) == "relu"

    def activate(self, y, fused):
        return y if fused else self.activation(y)

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": list(self.dilation_rate),
            "activation": activation_name(self.activation),
            "use_bias": self.use_bias,
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
        }


class BaseConv(BaseConvLayer):
    """N-D convolution; subclasses fix ``rank`` (number of spatial axes)."""

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
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
        self.filters = self.check_positive_int(filters, "filters")
        self.groups = self.check_positive_int(groups, "groups")
        if filters % groups:
            raise ValueError(
                f"{layer_label(self)}: filters ({filters}) must be divisible by groups ({groups})"
            )
        if self.padding == "causal" and self.data_format != "channels_last":
            raise ValueError(
                f"{layer_label(self)}: padding='causal' needs data_format='channels_last'"
            )
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        channels = self.input_channels(input_shape)
        if channels % self.groups:
            raise ValueError(
                f"{layer_label(self)}: input channels ({channels}, input shape "
                f"{tuple(input_shape)}) must be divisible by groups ({self.groups})"
            )
        self.check_fits(input_shape)
        kernel_shape = self.kernel_size + (channels // self.groups, self.filters)
        self.kernel = self.add_weight(
            "kernel", kernel_shape, self.kernel_initializer, self.kernel_regularizer
        )
        self.bias = self.add_bias(self.filters)
        self.set_input_spec(channels)

    def call(self, inputs):
        self.check_fits(inputs.shape)
        relu = self.fused_relu
        y = ops.conv(
            inputs,
            self.kernel,
            self.bias,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            groups=self.groups,
            data_format=self.data_format,
            relu=relu,
        )
        return self.activate(y, relu)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "groups": self.groups,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
        }


class Conv1D(BaseConv):
    """1D convolution over ``(batch, steps, channels)``.

    kernel ``(k, channels // groups, filters)``.
    """

    rank = 1


class Conv2D(BaseConv):
    """2D convolution over ``(batch, rows, cols, channels)``.

    kernel ``(kh, kw, channels // groups, filters)``.
    """

    rank = 2


class Conv3D(BaseConv):
    """3D convolution over ``(batch, d1, d2, d3, channels)``.

    kernel ``(k1, k2, k3, channels // groups, filters)``.
    """

    rank = 3


Convolution1D, Convolution2D, Convolution3D = Conv1D, Conv2D, Conv3D
