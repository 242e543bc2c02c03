"""Pooling layers: MaxPooling1D/2D/3D and AveragePooling1D/2D/3D (one N-D implementation).

Input ``(batch, *spatial, channels)`` (or channels first) -> ``(batch, *out, channels)``;
``strides`` default to ``pool_size``. ``padding="valid"``:
``floor((n - pool) / stride) + 1``; ``"same"``: ``ceil(n / stride)``, and the
padded cells are ignored (max over the valid cells, average divided by their
count), as in Keras. No weights.
"""

from .. import ops
from ..ops.convolution import conv_output_size, conv_padding
from .layer import InputSpec, Layer
from .spatial_utils import (
    check_rank,
    layer_label,
    spatial_shape,
    standardize_data_format,
    standardize_padding,
    standardize_tuple,
)


class BasePooling(Layer):
    rank = None
    kind = None

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = standardize_tuple(self, pool_size, self.rank, "pool_size")
        self.strides = (
            self.pool_size
            if strides is None
            else standardize_tuple(self, strides, self.rank, "strides")
        )
        self.padding = standardize_padding(self, padding)
        self.data_format = standardize_data_format(self, data_format)

    def build(self, input_shape):
        check_rank(self, input_shape, self.rank, self.data_format)
        self.input_spec = InputSpec(ndim=self.rank + 2)

    def call(self, inputs):
        spatial = spatial_shape(inputs.shape, self.data_format)
        for n, k, s in zip(spatial, self.pool_size, self.strides):
            if conv_output_size(n, k, s, 1, conv_padding(n, k, s, 1, self.padding)) <= 0:
                raise ValueError(
                    f"{layer_label(self)}: pool_size {self.pool_size} is larger than the input's "
                    f"spatial shape {spatial} (input shape {tuple(inputs.shape)}) with "
                    f"padding={self.padding!r}"
                )
        return ops.pool(
            inputs, self.kind, self.pool_size, self.strides, self.padding, self.data_format
        )

    def get_config(self):
        return {
            **super().get_config(),
            "pool_size": list(self.pool_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "data_format": self.data_format,
        }


class MaxPooling1D(BasePooling):
    rank, kind = 1, "max"


class MaxPooling2D(BasePooling):
    rank, kind = 2, "max"

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class MaxPooling3D(BasePooling):
    rank, kind = 3, "max"

    def __init__(
        self, pool_size=(2, 2, 2), strides=None, padding="valid", data_format=None, **kwargs
    ):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class AveragePooling1D(BasePooling):
    rank, kind = 1, "avg"


class AveragePooling2D(BasePooling):
    rank, kind = 2, "avg"

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class AveragePooling3D(BasePooling):
    rank, kind = 3, "avg"

    def __init__(
        self, pool_size=(2, 2, 2), strides=None, padding="valid", data_format=None, **kwargs
    ):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


MaxPool1D, MaxPool2D, MaxPool3D = MaxPooling1D, MaxPooling2D, MaxPooling3D
AvgPool1D, AvgPool2D, AvgPool3D = AveragePooling1D, AveragePooling2D, AveragePooling3D
