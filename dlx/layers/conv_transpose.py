"""Transposed convolution layers: Conv1DTranspose, Conv2DTranspose, Conv3DTranspose.

Input ``(batch, *spatial, channels)`` (or channels first); output
``(batch, *out, filters)`` with Keras's rule: ``padding="valid"``:
``(n - 1) * stride + max(k_eff, stride)`` (or ``(n - 1) * stride + k_eff +
output_padding``); ``"same"``: ``n * stride`` (or ``(n - 1) * stride + k_eff % 2
+ output_padding``), where ``k_eff = dilation * (k - 1) + 1``.

Weights (Keras layout): kernel ``(*kernel_size, filters, channels)``, bias ``(filters,)``.
"""

from .. import initializers, ops, regularizers
from .conv import BaseConvLayer
from .spatial_utils import layer_label, standardize_tuple


class BaseConvTranspose(BaseConvLayer):
    causal = False

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
        self.output_padding = (
            None
            if output_padding is None
            else standardize_tuple(
                self, output_padding, self.rank, "output_padding", allow_zero=True
            )
        )
        if self.output_padding is not None:
            for i, (op, s) in enumerate(zip(self.output_padding, self.strides)):
                if op >= s:
                    raise ValueError(
                        f"{layer_label(self)}: output_padding must be smaller than strides on "
                        f"every axis; axis {i} has output_padding {op} and stride {s}"
                    )
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        channels = self.input_channels(input_shape)
        self.kernel = self.add_weight(
            "kernel",
            self.kernel_size + (self.filters, channels),
            self.kernel_initializer,
            self.kernel_regularizer,
        )
        self.bias = self.add_bias(self.filters)
        self.set_input_spec(channels)

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
            "output_padding": None if self.output_padding is None else list(self.output_padding),
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
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
