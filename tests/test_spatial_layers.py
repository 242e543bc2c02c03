"""Pooling, global pooling, upsampling, zero-padding and cropping layers;
Keras's padding="same" pooling values; the seed CNN end to end."""

import numpy as np
import pytest
from helpers import check_layer_gradients

import dlx
from dlx import layers


def _input(rng, rank, data_format, spatial=(5, 4, 3), channels=2):
    spatial = spatial[:rank]
    if data_format == "channels_first":
        return rng.normal(size=(2, channels) + spatial)
    return rng.normal(size=(2,) + spatial + (channels,))


POOL_CASES = [
    (rank, kind, kwargs, fmt)
    for rank in (1, 2, 3)
    for kind in ("max", "avg")
    for kwargs, fmt in (
        ({}, "channels_last"),
        ({"pool_size": 3, "strides": 2, "padding": "same"}, "channels_first"),
        ({"pool_size": 2, "strides": 1, "padding": "same"}, "channels_last"),
    )
]


@pytest.mark.parametrize("rank,kind,kwargs,data_format", POOL_CASES)
def test_pooling_gradients(backend, rank, kind, kwargs, data_format):
    cls = getattr(layers, f"{'Max' if kind == 'max' else 'Average'}Pooling{rank}D")
    layer = cls(data_format=data_format, dtype="float64", **kwargs)
    spatial, channels = ((5, 4), 2) if rank < 3 else ((4, 3, 3), 1)
    x = _input(
        np.random.default_rng(rank), rank, data_format, spatial=spatial + (3,), channels=channels
    )
    check_layer_gradients(layer, x)


def test_pooling_same_matches_keras_values(backend):
    # Keras 3: MaxPooling2D((3, 3), strides=2, padding="same") on -arange(25) and
    # AveragePooling2D on arange(25) (5x5 images); padded cells are ignored
    x = np.arange(25.0, dtype=np.float32).reshape(1, 5, 5, 1)
    y = dlx.to_numpy(layers.MaxPooling2D((3, 3), strides=2, padding="same")(-x))
    np.testing.assert_allclose(y[0, :, :, 0], [[0, -1, -3], [-5, -6, -8], [-15, -16, -18]])
    y = dlx.to_numpy(layers.AveragePooling2D((3, 3), strides=2, padding="same")(x))
    np.testing.assert_allclose(y[0, :, :, 0], [[3, 4.5, 6], [10.5, 12, 13.5], [18, 19.5, 21]])


def test_pooling_default_strides_and_shapes(backend):
    x = np.zeros((2, 9, 7, 3), np.float32)
    assert layers.MaxPooling2D()(x).shape == (2, 4, 3, 3)
    assert layers.AveragePooling2D((3, 2), strides=(1, 2))(x).shape == (2, 7, 3, 3)
    assert layers.MaxPooling2D(2, padding="same")(x).shape == (2, 5, 4, 3)
    assert layers.MaxPooling1D()(np.zeros((2, 9, 3), np.float32)).shape == (2, 4, 3)
    assert layers.AveragePooling3D()(np.zeros((1, 4, 5, 6, 2), np.float32)).shape == (1, 2, 2, 3, 2)
    first = layers.MaxPooling2D(data_format="channels_first")(np.zeros((2, 3, 8, 6), np.float32))
    assert first.shape == (2, 3, 4, 3)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kind", ["Average", "Max"])
def test_global_pooling(backend, rank, data_format, kind):
    rng = np.random.default_rng(rank)
    x = _input(rng, rank, data_format, spatial=(3, 4, 2))
    layer = getattr(layers, f"Global{kind}Pooling{rank}D")(data_format=data_format, dtype="float64")
    axes = (
        tuple(range(2, 2 + rank)) if data_format == "channels_first" else tuple(range(1, 1 + rank))
    )
    expected = x.mean(axis=axes) if kind == "Average" else x.max(axis=axes)
    np.testing.assert_allclose(dlx.to_numpy(layer(x)), expected, rtol=1e-12)
    check_layer_gradients(layer, x)
    keep = getattr(layers, f"Global{kind}Pooling{rank}D")(data_format=data_format, keepdims=True)
    assert keep(x.astype(np.float32)).shape == tuple(
        1 if a in axes else n for a, n in enumerate(x.shape)
    )


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_upsampling(backend, rank, data_format):
    rng = np.random.default_rng(rank)
    x = _input(rng, rank, data_format, spatial=(2, 3, 2))
    size = (2, 3, 1)[:rank]
    if rank == 1:
        if data_format == "channels_first":
            return
        layer = layers.UpSampling1D(2, dtype="float64")
    else:
        layer = getattr(layers, f"UpSampling{rank}D")(
            size, data_format=data_format, dtype="float64"
        )
    y = dlx.to_numpy(layer(x))
    first = 2 if data_format == "channels_first" else 1
    expected = x
    for i, s in enumerate(size):
        expected = np.repeat(expected, s, axis=first + i)
    np.testing.assert_array_equal(y, expected)
    check_layer_gradients(layer, x)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_zero_padding_and_cropping(backend, data_format):
    rng = np.random.default_rng(0)
    x = _input(rng, 2, data_format, spatial=(4, 5))
    pad = layers.ZeroPadding2D(((1, 2), (0, 3)), data_format=data_format, dtype="float64")
    y = dlx.to_numpy(pad(x))
    sp = ((1, 2), (0, 3))
    width = ((0, 0), (0, 0)) + sp if data_format == "channels_first" else ((0, 0),) + sp + ((0, 0),)
    np.testing.assert_array_equal(y, np.pad(x, width))
    check_layer_gradients(pad, x)
    crop = layers.Cropping2D(((1, 0), (2, 1)), data_format=data_format, dtype="float64")
    y = dlx.to_numpy(crop(x))
    expected = x[:, :, 1:, 2:-1] if data_format == "channels_first" else x[:, 1:, 2:-1, :]
    np.testing.assert_array_equal(y, expected)
    check_layer_gradients(crop, x)


def test_zero_padding_and_cropping_argument_forms(backend):
    x1 = np.ones((1, 5, 2), np.float32)
    assert layers.ZeroPadding1D(2)(x1).shape == (1, 9, 2)
    assert layers.ZeroPadding1D((1, 3))(x1).shape == (1, 9, 2)
    assert layers.Cropping1D((1, 2))(x1).shape == (1, 2, 2)
    x2 = np.ones((1, 5, 6, 2), np.float32)
    assert layers.ZeroPadding2D()(x2).shape == (1, 7, 8, 2)
    assert layers.ZeroPadding2D((1, 2))(x2).shape == (1, 7, 10, 2)
    assert layers.Cropping2D(1)(x2).shape == (1, 3, 4, 2)
    assert layers.Cropping2D((1, 2))(x2).shape == (1, 3, 2, 2)
    x3 = np.ones((1, 4, 4, 4, 1), np.float32)
    assert layers.ZeroPadding3D(1)(x3).shape == (1, 6, 6, 6, 1)
    assert layers.Cropping3D()(x3).shape == (1, 2, 2, 2, 1)


def test_spatial_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"Cropping2D 'crop'.*\(3, 4\)"):
        layers.Cropping2D(((2, 1), (0, 0)), name="crop")(np.zeros((1, 3, 4, 1), np.float32))
    with pytest.raises(ValueError, match=r"MaxPooling2D 'mp'.*pool_size \(4, 4\).*\(3, 5\)"):
        layers.MaxPooling2D(4, name="mp")(np.zeros((1, 3, 5, 1), np.float32))
    with pytest.raises(ValueError, match=r"MaxPooling2D 'mp3'.*4 dimensions.*\(3, 5, 1\)"):
        layers.MaxPooling2D(name="mp3")(np.zeros((3, 5, 1), np.float32))
    with pytest.raises(ValueError, match=r"ZeroPadding2D 'zp'.*padding"):
        layers.ZeroPadding2D((1, 2, 3), name="zp")
    with pytest.raises(ValueError, match=r"UpSampling2D 'up'.*interpolation"):
        layers.UpSampling2D(interpolation="bicubic", name="up")
    with pytest.raises(ValueError, match=r"GlobalAveragePooling2D 'gap'.*\(2, 3\)"):
        layers.GlobalAveragePooling2D(name="gap")(np.zeros((2, 3), np.float32))


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (layers.MaxPooling2D, {"pool_size": (3, 2), "strides": 1, "padding": "same"}),
        (layers.AveragePooling1D, {"pool_size": 3}),
        (layers.MaxPooling3D, {"data_format": "channels_first"}),
        (layers.GlobalMaxPooling2D, {"keepdims": True}),
        (layers.UpSampling2D, {"size": (2, 3)}),
        (layers.UpSampling1D, {"size": 3}),
        (layers.ZeroPadding2D, {"padding": ((1, 2), (3, 4))}),
        (layers.Cropping2D, {"cropping": ((1, 0), (0, 1))}),
    ],
)
def test_spatial_config_round_trip(cls, kwargs):
    layer = cls(**kwargs)
    config = layer.get_config()
    assert cls.from_config(config).get_config() == config


def test_seed_cnn_trains_and_round_trips(tmp_path):
    """The seed Keras model, unchanged apart from imports, on digits padded to 28x28 (short)."""
    dlx.set_seed(0)
    (x, y), (x_test, y_test) = dlx.data.load_digits()
    x = np.pad(x[:128], ((0, 0), (10, 10), (10, 10), (0, 0)))
    y = y[:128]
    model = dlx.Sequential(
        [
            layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]
    assert [w.shape for w in model.get_weights()][:4] == [
        (3, 3, 1, 32),
        (32,),
        (3, 3, 32, 64),
        (64,),
    ]
    path = str(tmp_path / "cnn.dlx")
    model.save(path)
    clone = dlx.load_model(path)
    np.testing.assert_allclose(
        dlx.to_numpy(clone.predict(x[:8])), dlx.to_numpy(model.predict(x[:8])), rtol=1e-5, atol=1e-6
    )


def test_conv_autoencoder_runs_on_strict_backend(backend):
    """Encoder/decoder with Conv2D + Conv2DTranspose trains a step on each backend."""
    dlx.set_seed(0)
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    model = dlx.Sequential(
        [
            layers.Input((8, 8, 1)),
            layers.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
            layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    first = model.train_on_batch(x, x)
    for _ in range(5):
        last = model.train_on_batch(x, x)
    assert last < first
