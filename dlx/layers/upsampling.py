"""Nearest-neighbour upsampling: UpSampling1D/2D/3D.

Each cell is repeated ``size`` times along each spatial axis:
``(batch, *spatial, channels)`` -> ``(batch, *(n * s), channels)`` (or channels
first). Built from reshape and broadcast, so the gradient sums each block. No weights.
"""

from .. import ops
from .layer import InputSpec, Layer
from .spatial_utils import check_rank, layer_label, standardize_data_format, standardize_tuple


class BaseUpSampling(Layer):
    rank = None

    def __init__(self, size=2, data_format=None, interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        self.size = standardize_tuple(self, size, self.rank, "size")
        self.data_format = standardize_data_format(self, data_format)
        if interpolation != "nearest":
            raise ValueError(
                f"{layer_label(self)}: only interpolation='nearest' is supported, "
                f"got {interpolation!r}"
            )
        self.interpolation = interpolation

    def build(self, input_shape):
        check_rank(self, input_shape, self.rank, self.data_format)
        self.input_spec = InputSpec(ndim=self.rank + 2)

    def call(self, inputs):
        shape = tuple(inputs.shape)
        first = 2 if self.data_format == "channels_first" else 1
        spatial_axes = range(first, first + self.rank)
        expanded, broadcast, final = [], [], []
        for axis, n in enumerate(shape):
            if axis in spatial_axes:
                s = self.size[axis - first]
                expanded += [n, 1]
                broadcast += [n, s]
                final.append(n * s)
            else:
                expanded.append(n)
                broadcast.append(n)
                final.append(n)
        y = ops.broadcast_to(ops.reshape(inputs, tuple(expanded)), tuple(broadcast))
        return ops.reshape(y, tuple(final))

    def get_config(self):
        config = {**super().get_config(), "size": list(self.size), "data_format": self.data_format}
        if self.rank == 2:
            config["interpolation"] = self.interpolation
        return config


class UpSampling1D(BaseUpSampling):
    rank = 1

    def __init__(self, size=2, **kwargs):
        super().__init__(size=size, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.pop("data_format")
        config["size"] = self.size[0]
        return config


class UpSampling2D(BaseUpSampling):
    rank = 2

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(size, data_format, interpolation, **kwargs)


class UpSampling3D(BaseUpSampling):
    rank = 3

    def __init__(self, size=(2, 2, 2), data_format=None, **kwargs):
        super().__init__(size, data_format, **kwargs)
