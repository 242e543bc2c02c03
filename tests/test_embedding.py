"""Embedding: lookups, gradients (repeated indices add up), mask_zero, configs."""

import numpy as np
import pytest
from helpers import to_host

import dlx
from dlx import layers


def test_lookup_and_gradient(backend):
    dlx.set_floatx("float64")
    layer = layers.Embedding(6, 3)
    idx = np.array([[1, 2, 1], [5, 0, 1]])
    out = layer(idx)
    table = to_host(layer.embeddings.value)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(to_host(out), table[idx])
    g = np.random.default_rng(0).standard_normal((2, 3, 3))
    (out * dlx.asarray(g)).sum().backward()
    expected = np.zeros_like(table)
    np.add.at(expected, idx, g)
    np.testing.assert_allclose(to_host(layer.embeddings.grad), expected, rtol=1e-12, atol=1e-12)


def test_mask_zero(backend):
    layer = layers.Embedding(5, 2, mask_zero=True)
    idx = np.array([[3, 1, 0, 0], [2, 0, 4, 0]])
    out = layer(idx)
    np.testing.assert_array_equal(to_host(out.mask), idx != 0)
    assert layers.Embedding(5, 2)(idx).mask is None


def test_float_inputs_and_models(backend):
    # models probe layers with float zeros; float indices are cast
    layer = layers.Embedding(4, 2)
    np.testing.assert_array_equal(
        to_host(layer(np.array([[1.0, 3.0]], "float32"))), to_host(layer(np.array([[1, 3]])))
    )
    model = dlx.Sequential(
        [layers.Input((3,)), layers.Embedding(10, 4), layers.Flatten(), layers.Dense(2)]
    )
    assert to_host(model.predict_on_batch(np.array([[1, 2, 3]]))).shape == (1, 2)
    inp = layers.Input((5,), dtype="int32")
    out = layers.LSTM(3)(layers.Embedding(10, 4, mask_zero=True)(inp))
    assert to_host(dlx.Model(inp, out).predict_on_batch(np.array([[1, 2, 0, 0, 0]]))).shape == (
        1,
        3,
    )


def test_trains_and_config_round_trip():
    layer = layers.Embedding(7, 3, mask_zero=True, embeddings_regularizer="l2", name="emb")
    layer(np.array([[1, 2]]))
    clone = layers.Embedding.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert len(layer.losses) == 1
    dlx.set_seed(0)
    model = dlx.Sequential(
        [layers.Input((4,)), layers.Embedding(8, 4), layers.Flatten(), layers.Dense(2)]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).integers(0, 8, (32, 4))
    y = (x[:, 0] > 3).astype("int64")
    before = float(model.evaluate(x, y, verbose=0))
    model.fit(x, y, epochs=5, verbose=0)
    assert float(model.evaluate(x, y, verbose=0)) < before


def test_bad_arguments():
    with pytest.raises(ValueError, match="input_dim"):
        layers.Embedding(0, 3)
    with pytest.raises(ValueError, match="output_dim"):
        layers.Embedding(3, -1)
