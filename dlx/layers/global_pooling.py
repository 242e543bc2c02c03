"""Global pooling: GlobalAveragePooling1D/2D/3D, GlobalMaxPooling1D/2D/3D.

Input ``(batch, *spatial, channels)`` (or channels first) -> ``(batch, channels)``,
or ``(batch, 1, ..., 1, channels)`` with ``keepdims=True``. Global max sends
the gradient to every maximal cell, shared evenly. No weights.
"""

from .. import ops
from .layer import InputSpec, Layer
from .spatial_utils import check_rank, standardize_data_format


class BaseGlobalPooling(Layer):
    rank = None
    kind = None

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.data_format = standardize_data_format(self, data_format)
        self.keepdims = bool(keepdims)

    def build(self, input_shape):
        check_rank(self, input_shape, self.rank, self.data_format)
        self.input_spec = InputSpec(ndim=self.rank + 2)

    def call(self, inputs):
        first = 2 if self.data_format == "channels_first" else 1
        axes = tuple(range(first, first + self.rank))
        reduce = ops.mean if self.kind == "avg" else ops.max
        return reduce(inputs, axis=axes, keepdims=self.keepdims)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


class GlobalAveragePooling1D(BaseGlobalPooling):
    rank, kind = 1, "avg"


class GlobalAveragePooling2D(BaseGlobalPooling):
    rank, kind = 2, "avg"


class GlobalAveragePooling3D(BaseGlobalPooling):
    rank, kind = 3, "avg"


class GlobalMaxPooling1D(BaseGlobalPooling):
    rank, kind = 1, "max"


class GlobalMaxPooling2D(BaseGlobalPooling):
    rank, kind = 2, "max"


class GlobalMaxPooling3D(BaseGlobalPooling):
    rank, kind = 3, "max"


GlobalAvgPool1D, GlobalAvgPool2D, GlobalAvgPool3D = (
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalAveragePooling3D,
)
GlobalMaxPool1D, GlobalMaxPool2D, GlobalMaxPool3D = (
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
    GlobalMaxPooling3D,
)
