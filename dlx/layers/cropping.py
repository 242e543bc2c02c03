"""Cropping1D/2D/3D: remove cells at both ends of each spatial axis.

``(batch, *spatial, channels)`` -> ``(batch, *(n - before - after), channels)``
(or channels first). ``cropping``: an int, one int per axis (symmetric) or a
``(before, after)`` pair per axis. No weights.
"""

from .. import ops
from .layer import InputSpec, Layer
from .spatial_utils import check_rank, layer_label, spatial_shape, standardize_data_format
from .zero_padding import normalize_pairs


class BaseCropping(Layer):
    rank = None

    def __init__(self, cropping=1, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.cropping = normalize_pairs(self, cropping, self.rank, "cropping")
        self.data_format = standardize_data_format(self, data_format)

    def build(self, input_shape):
        check_rank(self, input_shape, self.rank, self.data_format)
        self.input_spec = InputSpec(ndim=self.rank + 2)

    def call(self, inputs):
        spatial = spatial_shape(inputs.shape, self.data_format)
        for n, (b, a) in zip(spatial, self.cropping):
            if b + a >= n:
                raise ValueError(
                    f"{layer_label(self)}: cropping {self.cropping} removes everything from an "
                    f"input of spatial shape {spatial} (input shape {tuple(inputs.shape)})"
                )
        index = tuple(slice(b, n - a) for n, (b, a) in zip(spatial, self.cropping))
        if self.data_format == "channels_first":
            key = (slice(None), slice(None)) + index
        else:
            key = (slice(None),) + index + (slice(None),)
        return ops.getitem(inputs, key)

    def get_config(self):
        return {
            **super().get_config(),
            "cropping": [list(p) for p in self.cropping],
            "data_format": self.data_format,
        }


class Cropping1D(BaseCropping):
    rank = 1

    def __init__(self, cropping=(1, 1), **kwargs):
        super().__init__(cropping, **kwargs)


class Cropping2D(BaseCropping):
    rank = 2

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        super().__init__(cropping, data_format, **kwargs)


class Cropping3D(BaseCropping):
    rank = 3

    def __init__(self, cropping=((1, 1), (1, 1), (1, 1)), data_format=None, **kwargs):
        super().__init__(cropping, data_format, **kwargs)
