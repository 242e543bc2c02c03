"""Transposed convolution layers: Conv1DTranspose, Conv2DTranspose, Conv3DTranspose.

Input ``(batch, *spatial, channels)`` (or channels first); output
``(batch, *out, filters)`` with Keras's rule: ``padding="valid"``:
``(n - 1) * stride + max(k_eff, stride)`` (or ``(n - 1) * stride + k_eff +
output_padding``); ``"same"``: ``n * stride`` (or ``(n - 1) * stride + k_eff % 2
+ output_padding``), where ``k_eff = dilation * (k - 1) + 1``.

Weights (Keras layout): kernel ``(*kernel_size, filters, channels)``, bias ``(filters,)``.
"""

from .. import initializers, ops, regularizers
from ..ops.activations import activation_name, get_activation
from .layer import InputSpec, Layer
from .spatial_utils import (
    channel_axis,
    check_rank,
    layer_label,
    standardize_data_format,
    standardize_padding,
    standardize_tuple,
)


class BaseConvTranspose(Layer):
    rank = None

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        output_padding=None,
        data_format=None,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        rank = self.rank
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(
                f"{layer_label(self)}: filters must be a positive integer, got {filters!r}"
            )
        self.filters = filters
        self.kernel_size = standardize_tuple(self, kernel_size, rank, "kernel_size")
        self.strides = standardize_tuple(self, strides, rank, "strides")
        self.dilation_rate = standardize_tuple(self, dilation_rate, rank, "dilation_rate")
        self.padding = standardize_padding(self, padding)
        self.output_padding = (
            None
            if output_padding is None
            else standardize_tuple(self, output_padding, rank, "output_padding", allow_zero=True)
        )
        if self.output_padding is not None:
            for i, (op, s) in enumerate(zip(self.output_padding, self.strides)):
                if op >= s:
                    raise ValueError(
                        f"{layer_label(self)}: output_padding must be smaller than strides on "
                        f"every axis; axis {i} has output_padding {op} and stride {s}"
                    )
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                f"{layer_label(self)}: strides > 1 cannot be combined with dilation_rate > 1 "
                f"(got strides={self.strides}, dilation_rate={self.dilation_rate})"
            )
        self.data_format = standardize_data_format(self, data_format)
        self.activation = get_activation(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
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
        self.kernel = self.add_weight(
            "kernel",
            self.kernel_size + (self.filters, channels),
            self.kernel_initializer,
            self.kernel_regularizer,
        )
        self.bias = (
            self.add_weight("bias", (self.filters,), self.bias_initializer, self.bias_regularizer)
            if self.use_bias
            else None
        )
        self.input_spec = InputSpec(ndim=self.rank + 2, axes={axis: channels})

    def call(self, inputs):
        y = ops.conv_transpose(
            inputs,
            self.kernel,
            self.bias,
            strides=self.strides,
            padding=self.padding,
            output_padding=self.output_padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        return self.activation(y)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "output_padding": None if self.output_padding is None else list(self.output_padding),
            "data_format": self.data_format,
            "dilation_rate": list(self.dilation_rate),
            "activation": activation_name(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
        }


class Conv1DTranspose(BaseConvTranspose):
    """``(batch, steps, channels)`` -> ``(batch, out, filters)``; kernel ``(k, filters, in)``."""

    rank = 1


class Conv2DTranspose(BaseConvTranspose):
    """``(batch, rows, cols, channels)`` -> ``(batch, r, c, filters)``.

    kernel ``(kh, kw, filters, channels)``.
    """

    rank = 2


class Conv3DTranspose(BaseConvTranspose):
    """Kernel ``(k1, k2, k3, filters, channels)``; 5-D inputs."""

    rank = 3


Convolution1DTranspose, Convolution2DTranspose, Convolution3DTranspose = (
    Conv1DTranspose,
    Conv2DTranspose,
    Conv3DTranspose,
)
