"""ZeroPadding1D/2D/3D: add rows/columns of zeros at both ends of each spatial axis.

``(batch, *spatial, channels)`` -> ``(batch, *(n + before + after), channels)``
(or channels first). ``padding``: an int (all sides), one int per axis
(symmetric), or a ``(before, after)`` pair per axis; ZeroPadding1D takes an int or
one ``(left, right)`` pair. No weights.
"""

from .. import ops
from .layer import InputSpec, Layer
from .spatial_utils import check_rank, layer_label, standardize_data_format


def normalize_pairs(layer, value, rank, name):
    """An int, ``rank`` ints or ``rank`` pairs (one pair for rank 1) as ``((b, a), ...)``."""
    error = ValueError(
        f"{layer_label(layer)}: {name} must be an int, {rank} ints or {rank} "
        f"(before, after) pairs, got {value!r}"
    )
    if isinstance(value, int):
        pairs = ((value, value),) * rank
    else:
        value = tuple(value)
        if rank == 1 and len(value) == 2 and all(isinstance(v, int) for v in value):
            pairs = (value,)
        elif len(value) != rank:
            raise error
        else:
            pairs = []
            for v in value:
                if isinstance(v, int):
                    pairs.append((v, v))
                else:
                    v = tuple(v)
                    if len(v) != 2:
                        raise error
                    pairs.append(v)
            pairs = tuple(pairs)
    pairs = tuple((int(b), int(a)) for b, a in pairs)
    if any(b < 0 or a < 0 for b, a in pairs):
        raise error
    return pairs


class BaseZeroPadding(Layer):
    rank = None

    def __init__(self, padding=1, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.padding = normalize_pairs(self, padding, self.rank, "padding")
        self.data_format = standardize_data_format(self, data_format)

    def build(self, input_shape):
        check_rank(self, input_shape, self.rank, self.data_format)
        self.input_spec = InputSpec(ndim=self.rank + 2)

    def call(self, inputs):
        spatial = list(self.padding)
        if self.data_format == "channels_first":
            width = [(0, 0), (0, 0)] + spatial
        else:
            width = [(0, 0)] + spatial + [(0, 0)]
        return ops.pad(inputs, width)

    def get_config(self):
        return {
            **super().get_config(),
            "padding": [list(p) for p in self.padding],
            "data_format": self.data_format,
        }


class ZeroPadding1D(BaseZeroPadding):
    rank = 1


class ZeroPadding2D(BaseZeroPadding):
    rank = 2

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(padding, data_format, **kwargs)


class ZeroPadding3D(BaseZeroPadding):
    rank = 3

    def __init__(self, padding=(1, 1, 1), data_format=None, **kwargs):
        super().__init__(padding, data_format, **kwargs)
