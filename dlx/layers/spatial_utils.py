"""Argument checks shared by the convolution, pooling and resampling layers."""

from ..ops.convolution import normalize_tuple


def layer_label(layer):
    return f"{type(layer).__name__} '{layer.name}'"


def standardize_data_format(layer, data_format):
    data_format = "channels_last" if data_format is None else str(data_format).lower()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            f"{layer_label(layer)}: data_format must be 'channels_last' or 'channels_first', "
            f"got {data_format!r}"
        )
    return data_format


def standardize_padding(layer, padding, allow_causal=False):
    value = str(padding).lower()
    allowed = ("valid", "same", "causal") if allow_causal else ("valid", "same")
    if value not in allowed:
        raise ValueError(f"{layer_label(layer)}: padding must be one of {allowed}, got {padding!r}")
    return value


def standardize_tuple(layer, value, rank, name, allow_zero=False):
    return normalize_tuple(value, rank, name, allow_zero=allow_zero, layer=layer_label(layer))


def axes_names(rank):
    return {1: "steps", 2: "rows, cols", 3: "dim1, dim2, dim3"}[rank]


def check_rank(layer, input_shape, rank, data_format):
    """Raise a clear error unless ``input_shape`` has batch, ``rank`` spatial, channel axes."""
    input_shape = tuple(input_shape)
    if len(input_shape) != rank + 2:
        layout = (
            f"(batch, {axes_names(rank)}, channels)"
            if data_format == "channels_last"
            else f"(batch, channels, {axes_names(rank)})"
        )
        raise ValueError(
            f"{layer_label(layer)} expects input with {rank + 2} dimensions {layout} "
            f"(data_format={data_format!r}), but got input of shape {input_shape}."
        )


def spatial_shape(input_shape, data_format):
    return tuple(input_shape[2:]) if data_format == "channels_first" else tuple(input_shape[1:-1])


def channel_axis(data_format):
    return 1 if data_format == "channels_first" else -1
