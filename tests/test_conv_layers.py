"""Convolution layers: gradients (float64 finite differences), Keras output
shapes, weight layouts, configs and errors that name the layer and shapes."""

import numpy as np
import pytest
from helpers import check_layer_gradients

import dlx
from dlx import layers


def _input(rng, rank, channels, data_format, spatial=(5, 4, 3), batch=2):
    spatial = spatial[:rank]
    shape = (
        (batch, channels) + spatial
        if data_format == "channels_first"
        else (batch,) + spatial + (channels,)
    )
    return rng.normal(size=shape)


CONV_CASES = [
    # rank, kwargs, data_format
    (1, dict(kernel_size=3), "channels_last"),
    (1, dict(kernel_size=2, strides=2, padding="same"), "channels_first"),
    (1, dict(kernel_size=2, dilation_rate=2, padding="causal", groups=2), "channels_last"),
    (2, dict(kernel_size=(3, 2)), "channels_last"),
    (2, dict(kernel_size=2, strides=2, padding="same", groups=2), "channels_last"),
    (2, dict(kernel_size=(2, 3), dilation_rate=(2, 1), padding="same"), "channels_first"),
    (2, dict(kernel_size=3, strides=(1, 2), padding="same", activation="tanh"), "channels_first"),
    (3, dict(kernel_size=2, padding="valid", use_bias=False), "channels_last"),
    (3, dict(kernel_size=2, strides=2, padding="same", groups=2), "channels_first"),
    (3, dict(kernel_size=(2, 1, 2), dilation_rate=(1, 1, 2)), "channels_last"),
]


@pytest.mark.parametrize("rank,kwargs,data_format", CONV_CASES)
def test_conv_gradients(backend, rank, kwargs, data_format):
    rng = np.random.default_rng(0)
    cls = {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}[rank]
    layer = cls(
        4, data_format=data_format, dtype="float64", bias_initializer="random_normal", **kwargs
    )
    check_layer_gradients(layer, _input(rng, rank, 2, data_format))


def test_conv_relu_gradients(backend):
    rng = np.random.default_rng(1)
    layer = layers.Conv2D(
        3, 2, activation="relu", dtype="float64", bias_initializer="random_normal"
    )
    check_layer_gradients(layer, rng.normal(size=(2, 4, 4, 2)))


TRANSPOSE_CASES = [
    (1, dict(kernel_size=3, strides=2), "channels_last"),
    (1, dict(kernel_size=4, strides=2, padding="same"), "channels_first"),
    (2, dict(kernel_size=(3, 2), strides=(2, 1), padding="same"), "channels_last"),
    (2, dict(kernel_size=3, strides=2, padding="valid", output_padding=1), "channels_first"),
    (2, dict(kernel_size=2, dilation_rate=2, padding="same", activation="tanh"), "channels_last"),
    (2, dict(kernel_size=1, strides=3), "channels_last"),
    (3, dict(kernel_size=2, strides=2, padding="same"), "channels_last"),
    (3, dict(kernel_size=(2, 1, 2), padding="valid", use_bias=False), "channels_first"),
]


@pytest.mark.parametrize("rank,kwargs,data_format", TRANSPOSE_CASES)
def test_conv_transpose_gradients(backend, rank, kwargs, data_format):
    rng = np.random.default_rng(2)
    cls = {1: layers.Conv1DTranspose, 2: layers.Conv2DTranspose, 3: layers.Conv3DTranspose}[rank]
    layer = cls(
        3, data_format=data_format, dtype="float64", bias_initializer="random_normal", **kwargs
    )
    check_layer_gradients(layer, _input(rng, rank, 2, data_format, spatial=(3, 3, 2)))


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_depthwise_and_separable_gradients(backend, data_format):
    rng = np.random.default_rng(3)
    x = _input(rng, 2, 2, data_format, spatial=(4, 5))
    check_layer_gradients(
        layers.DepthwiseConv2D(
            2,
            depth_multiplier=2,
            padding="same",
            strides=(1, 2),
            data_format=data_format,
            dtype="float64",
            bias_initializer="random_normal",
        ),
        x,
    )
    check_layer_gradients(
        layers.SeparableConv2D(
            3,
            (2, 3),
            depth_multiplier=2,
            dilation_rate=(1, 2),
            padding="same",
            data_format=data_format,
            dtype="float64",
            bias_initializer="random_normal",
        ),
        x,
    )


def test_depthwise_conv1d_and_separable_conv1d_gradients(backend):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 6, 2))
    check_layer_gradients(layers.DepthwiseConv1D(3, depth_multiplier=2, dtype="float64"), x)
    check_layer_gradients(
        layers.SeparableConv1D(2, 2, strides=2, padding="same", dtype="float64"), x
    )


def test_weight_layouts():
    x = np.zeros((1, 8, 8, 6), np.float32)
    conv = layers.Conv2D(4, (3, 2), groups=2)
    conv(x)
    assert [w.shape for w in conv.get_weights()] == [(3, 2, 3, 4), (4,)]
    t = layers.Conv2DTranspose(5, (3, 2))
    t(x)
    assert [w.shape for w in t.get_weights()] == [(3, 2, 5, 6), (5,)]
    d = layers.DepthwiseConv2D((3, 3), depth_multiplier=2)
    d(x)
    assert [w.shape for w in d.get_weights()] == [(3, 3, 6, 2), (12,)]
    s = layers.SeparableConv2D(7, 3, depth_multiplier=2)
    s(x)
    assert [w.shape for w in s.get_weights()] == [(3, 3, 6, 2), (1, 1, 12, 7), (7,)]
    c3 = layers.Conv3D(2, 2)
    c3(np.zeros((1, 3, 3, 3, 4), np.float32))
    assert c3.get_weights()[0].shape == (2, 2, 2, 4, 2)


def test_depthwise_output_channel_order_is_keras():
    # output channel c * depth_multiplier + m sees only input channel c with kernel [..., c, m]
    x = np.zeros((1, 3, 3, 2), np.float32)
    x[..., 1] = 1.0
    layer = layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False)
    layer(x)
    kernel = np.zeros((3, 3, 2, 2), np.float32)
    kernel[..., 1, 0] = 1.0
    kernel[..., 1, 1] = 2.0
    layer.set_weights([kernel])
    y = dlx.to_numpy(layer(x))
    np.testing.assert_allclose(y.reshape(-1), [0, 0, 9, 18])


# padding="same" / transposed output lengths, computed by Keras 3 (compute_output_shape)
# as (kind, n, kernel, stride, output_padding, expected length)
KERAS_LENGTHS = [
    ("conv", 7, 2, 2, None, 4),
    ("convT", 7, 2, 2, None, 14),
    ("convTv", 7, 2, 2, None, 14),
    ("convT", 7, 2, 2, 1, 13),
    ("pool", 7, 2, 2, None, 4),
    ("conv", 7, 2, 3, None, 3),
    ("convT", 7, 2, 3, None, 21),
    ("convTv", 7, 2, 3, None, 21),
    ("convT", 7, 2, 3, 1, 19),
    ("pool", 7, 2, 3, None, 3),
    ("conv", 7, 4, 2, None, 4),
    ("convT", 7, 4, 2, None, 14),
    ("convTv", 7, 4, 2, None, 16),
    ("convT", 7, 4, 2, 1, 13),
    ("pool", 7, 4, 2, None, 4),
    ("conv", 7, 4, 3, None, 3),
    ("convT", 7, 4, 3, None, 21),
    ("convTv", 7, 4, 3, None, 22),
    ("convT", 7, 4, 3, 1, 19),
    ("pool", 7, 4, 3, None, 3),
    ("conv", 8, 2, 2, None, 4),
    ("convT", 8, 2, 2, None, 16),
    ("convTv", 8, 2, 2, None, 16),
    ("convT", 8, 2, 2, 1, 15),
    ("pool", 8, 2, 2, None, 4),
    ("conv", 8, 2, 3, None, 3),
    ("convT", 8, 2, 3, None, 24),
    ("convTv", 8, 2, 3, None, 24),
    ("convT", 8, 2, 3, 1, 22),
    ("pool", 8, 2, 3, None, 3),
    ("conv", 8, 4, 2, None, 4),
    ("convT", 8, 4, 2, None, 16),
    ("convTv", 8, 4, 2, None, 18),
    ("convT", 8, 4, 2, 1, 15),
    ("pool", 8, 4, 2, None, 4),
    ("conv", 8, 4, 3, None, 3),
    ("convT", 8, 4, 3, None, 24),
    ("convTv", 8, 4, 3, None, 25),
    ("convT", 8, 4, 3, 1, 22),
    ("pool", 8, 4, 3, None, 3),
    ("conv", 10, 2, 2, None, 5),
    ("convT", 10, 2, 2, None, 20),
    ("convTv", 10, 2, 2, None, 20),
    ("convT", 10, 2, 2, 1, 19),
    ("pool", 10, 2, 2, None, 5),
    ("conv", 10, 2, 3, None, 4),
    ("convT", 10, 2, 3, None, 30),
    ("convTv", 10, 2, 3, None, 30),
    ("convT", 10, 2, 3, 1, 28),
    ("pool", 10, 2, 3, None, 4),
    ("conv", 10, 4, 2, None, 5),
    ("convT", 10, 4, 2, None, 20),
    ("convTv", 10, 4, 2, None, 22),
    ("convT", 10, 4, 2, 1, 19),
    ("pool", 10, 4, 2, None, 5),
    ("conv", 10, 4, 3, None, 4),
    ("convT", 10, 4, 3, None, 30),
    ("convTv", 10, 4, 3, None, 31),
    ("convT", 10, 4, 3, 1, 28),
    ("pool", 10, 4, 3, None, 4),
]


@pytest.mark.parametrize("kind,n,k,s,op,expected", KERAS_LENGTHS)
def test_output_lengths_match_keras(kind, n, k, s, op, expected):
    x = np.zeros((1, n, n, 2), np.float32)
    if kind == "conv":
        layer = layers.Conv2D(3, k, strides=s, padding="same")
    elif kind == "pool":
        layer = layers.MaxPooling2D(k, strides=s, padding="same")
    else:
        layer = layers.Conv2DTranspose(
            3, k, strides=s, padding="valid" if kind == "convTv" else "same", output_padding=op
        )
    assert layer(x).shape[1:3] == (expected, expected)
    assert layer.compute_output_shape((None, n, n, 2))[1:3] == (expected, expected)


def test_same_padding_puts_the_odd_cell_at_the_end():
    # even kernel, stride 1: Keras/TensorFlow pad 0 before and 1 after
    layer = layers.Conv1D(1, 2, padding="same", use_bias=False)
    x = np.arange(1, 5, dtype=np.float32).reshape(1, 4, 1)
    layer(x)
    layer.set_weights([np.array([1.0, 10.0], np.float32).reshape(2, 1, 1)])
    np.testing.assert_allclose(dlx.to_numpy(layer(x)).reshape(-1), [21, 32, 43, 4])


def test_causal_conv1d_sees_only_the_past():
    layer = layers.Conv1D(1, 3, padding="causal", use_bias=False, kernel_initializer="ones")
    x = np.arange(1, 6, dtype=np.float32).reshape(1, 5, 1)
    np.testing.assert_allclose(dlx.to_numpy(layer(x)).reshape(-1), [1, 3, 6, 9, 12])


@pytest.mark.parametrize(
    "cls,args",
    [
        (layers.Conv1D, (3, 2)),
        (layers.Conv2D, (3, (2, 3))),
        (layers.Conv3D, (2, 2)),
        (layers.Conv1DTranspose, (3, 2)),
        (layers.Conv2DTranspose, (3, 2)),
        (layers.Conv3DTranspose, (2, 2)),
        (layers.DepthwiseConv2D, (2,)),
        (layers.SeparableConv2D, (3, 2)),
        (layers.DepthwiseConv1D, (2,)),
        (layers.SeparableConv1D, (3, 2)),
    ],
)
def test_config_round_trip(cls, args):
    plain = "Depthwise" not in cls.__name__ and "Separable" not in cls.__name__
    layer = (
        cls(*args, padding="same", kernel_regularizer="l2") if plain else cls(*args, padding="same")
    )
    config = layer.get_config()
    clone = cls.from_config(config)
    assert clone.get_config() == {**config, "name": clone.name}
    rank = cls.rank
    x = np.random.default_rng(0).random((2,) + (4,) * rank + (2,)).astype(np.float32)
    layer(x)
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(dlx.to_numpy(clone(x)), dlx.to_numpy(layer(x)), rtol=1e-6)


def test_conv2d_rejects_3d_input():
    layer = layers.Conv2D(4, 3, name="my_conv")
    with pytest.raises(ValueError, match=r"Conv2D 'my_conv'.*4 dimensions.*\(8, 8, 3\)"):
        layer(np.zeros((8, 8, 3), np.float32))


def test_conv2d_rejects_changed_channel_count():
    layer = layers.Conv2D(4, 3, name="conv_c")
    layer(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"'conv_c'.*\(None, 8, 8, 3\).*\(1, 8, 8, 5\)"):
        layer(np.zeros((1, 8, 8, 5), np.float32))


def test_conv_rejects_kernel_larger_than_input():
    layer = layers.Conv2D(4, 5, name="big_kernel")
    with pytest.raises(
        ValueError, match=r"Conv2D 'big_kernel'.*kernel_size \(5, 5\).*\(3, 3\).*\(2, 3, 3, 1\)"
    ):
        layer(np.zeros((2, 3, 3, 1), np.float32))
    layer = layers.Conv2D(4, 3, name="small")
    layer(np.zeros((1, 6, 6, 1), np.float32))
    with pytest.raises(ValueError, match=r"'small'.*\(2, 2\)"):
        layer(np.zeros((1, 2, 2, 1), np.float32))
    # padding="same" always fits
    assert layers.Conv2D(4, 5, padding="same")(np.zeros((1, 3, 3, 1), np.float32)).shape == (
        1,
        3,
        3,
        4,
    )


def test_groups_must_divide_channels_and_filters():
    with pytest.raises(ValueError, match=r"Conv2D 'g1'.*filters \(5\).*groups \(2\)"):
        layers.Conv2D(5, 3, groups=2, name="g1")
    layer = layers.Conv2D(4, 3, groups=2, name="g2")
    with pytest.raises(
        ValueError, match=r"Conv2D 'g2'.*input channels \(3.*\(1, 5, 5, 3\).*groups \(2\)"
    ):
        layer(np.zeros((1, 5, 5, 3), np.float32))


def test_bad_arguments_name_the_layer():
    with pytest.raises(ValueError, match=r"Conv2D 'a1'.*padding"):
        layers.Conv2D(2, 3, padding="full", name="a1")
    with pytest.raises(ValueError, match=r"Conv2D 'a2'.*kernel_size"):
        layers.Conv2D(2, (3, 3, 3), name="a2")
    with pytest.raises(ValueError, match=r"Conv2D 'a3'.*strides.*dilation_rate"):
        layers.Conv2D(2, 3, strides=2, dilation_rate=2, name="a3")
    with pytest.raises(ValueError, match=r"Conv2DTranspose 'a4'.*output_padding"):
        layers.Conv2DTranspose(2, 3, strides=2, output_padding=2, name="a4")
    with pytest.raises(ValueError, match=r"Conv2D 'a5'.*data_format"):
        layers.Conv2D(2, 3, data_format="NHWC", name="a5")


def test_conv_model_summary_and_functional_shapes():
    inp = layers.Input((12, 12, 3))
    h = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    h = layers.Conv2DTranspose(4, 3, strides=2, padding="same")(h)
    assert h.shape == (None, 12, 12, 4)
    model = dlx.Model(inp, h)
    assert model.predict(np.zeros((2, 12, 12, 3), np.float32)).shape == (2, 12, 12, 4)
