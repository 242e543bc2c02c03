"""Dense, Activation, Flatten, Reshape, Dropout, Input: gradients, Keras equality, errors."""

import numpy as np
import pytest
from helpers import check_gradients, check_layer_gradients

import dlx
from dlx import layers, regularizers

rng = np.random.default_rng(3)


@pytest.mark.parametrize("activation", [None, "relu", "tanh", "softmax", "gelu", "selu"])
def test_dense_gradients(backend, activation):
    layer = layers.Dense(3, activation=activation, dtype="float64")
    check_layer_gradients(layer, rng.normal(size=(4, 5)) + 0.05)


def test_dense_on_3d_input_uses_last_axis(backend):
    layer = layers.Dense(2, dtype="float64", use_bias=False)
    check_layer_gradients(layer, rng.normal(size=(2, 3, 4)))
    assert layer(np.zeros((2, 3, 4))).shape == (2, 3, 2)


def test_dense_with_regularizers_gradients(backend):
    layer = layers.Dense(
        3, dtype="float64", kernel_regularizer=regularizers.L1L2(0.01, 0.02), bias_regularizer="l2"
    )
    layer(np.zeros((1, 4)))
    kernel, bias = layer.trainable_weights
    check_gradients(lambda k: regularizers.L1L2(0.01, 0.02)(k), [dlx.to_numpy(kernel.value) + 0.1])
    penalty = sum(p.item() for p in layer.losses)
    k, b = layer.get_weights()
    assert np.isclose(penalty, 0.01 * np.abs(k).sum() + 0.02 * (k**2).sum() + 0.01 * (b**2).sum())


def test_dense_matches_keras(keras):
    import torch

    x = rng.normal(size=(5, 4)).astype(np.float32)
    ours = layers.Dense(3, activation="tanh")
    ours(x)
    theirs = keras.layers.Dense(3, activation="tanh")
    theirs.build((None, 4))
    theirs.set_weights(ours.get_weights())
    xt = dlx.Tensor(x, requires_grad=True)
    y = ours(xt)
    (y * y).sum().backward()
    xk = torch.tensor(x, requires_grad=True)
    yk = theirs(xk)
    (yk * yk).sum().backward()
    np.testing.assert_allclose(dlx.to_numpy(y), yk.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dlx.to_numpy(xt.grad), xk.grad.numpy(), rtol=1e-5, atol=1e-6)
    kernel_grad = dlx.to_numpy(ours.kernel.grad)
    np.testing.assert_allclose(kernel_grad, theirs.kernel.value.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_dense_weights_are_keras_shaped(backend):
    layer = layers.Dense(7)
    layer(np.zeros((2, 5), dtype=np.float32))
    kernel, bias = layer.get_weights()
    assert kernel.shape == (5, 7) and bias.shape == (7,)
    assert layer.count_params() == 42


def test_dense_glorot_uniform_limits():
    dlx.set_seed(0)
    layer = layers.Dense(300)
    layer(np.zeros((1, 200), dtype=np.float32))
    kernel = layer.get_weights()[0]
    limit = np.sqrt(6 / 500)
    assert kernel.max() <= limit and kernel.min() >= -limit
    assert abs(kernel.std() - limit / np.sqrt(3)) < 0.002


def test_flatten_reshape_activation_gradients(backend):
    check_layer_gradients(layers.Flatten(dtype="float64"), rng.normal(size=(2, 3, 4)))
    check_layer_gradients(layers.Reshape((4, -1), dtype="float64"), rng.normal(size=(2, 3, 4)))
    check_layer_gradients(layers.Activation("softplus", dtype="float64"), rng.normal(size=(2, 3)))


def test_flatten_channels_first_matches_keras_order(backend):
    x = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    y = layers.Flatten(data_format="channels_first")(x)
    np.testing.assert_array_equal(dlx.to_numpy(y)[0], x[0].transpose(1, 2, 0).reshape(-1))


def test_reshape_rejects_impossible_shapes(backend):
    with pytest.raises(ValueError, match=r"Reshape 'r1'.*\(2, 12\).*\(5, -1\)"):
        layers.Reshape((5, -1), name="r1")(np.zeros((2, 12), dtype=np.float32))


def test_dropout_layer_training_and_inference(backend):
    layer = layers.Dropout(0.5)
    x = np.ones((100, 100), dtype=np.float32)
    np.testing.assert_array_equal(dlx.to_numpy(layer(x)), x)
    y = dlx.to_numpy(layer(x, training=True))
    assert 0.45 < (y != 0).mean() < 0.55 and set(np.unique(y)) <= {0.0, 2.0}
    with pytest.raises(ValueError, match="rate must be in"):
        layers.Dropout(1.0)


def test_dense_rejects_wrong_feature_size(backend):
    layer = layers.Dense(3, name="classifier")
    layer(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"'classifier'.*\(None, 4\).*\(2, 5\)"):
        layer(np.zeros((2, 5), dtype=np.float32))


def test_dense_rejects_bad_units():
    with pytest.raises(ValueError, match="units must be a positive integer"):
        layers.Dense(0)
    with pytest.raises(TypeError, match="unexpected keyword.*'unit'"):
        layers.Dense(3, unit=4)


def test_layer_casts_float_inputs_to_its_dtype(backend):
    layer = layers.Dense(2)
    y = layer(np.ones((1, 3), dtype=np.float64))
    assert y.dtype == backend.dtype("float32")


def test_trainable_flag_freezes_weights(backend):
    layer = layers.Dense(2)
    layer(np.zeros((1, 3), dtype=np.float32))
    layer.trainable = False
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 2
    x = dlx.Tensor(np.ones((1, 3), dtype=np.float32), requires_grad=True)
    layer(x).sum().backward()
    assert layer.kernel.grad is None and x.grad is not None
    layer.trainable = True
    assert len(layer.trainable_weights) == 2


def test_set_weights_checks_count_and_shapes(backend):
    layer = layers.Dense(2, name="d")
    layer(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="has 2 weights"):
        layer.set_weights([np.zeros((3, 2))])
    with pytest.raises(ValueError, match=r"'d/kernel' has shape \(3, 2\).*\(2, 3\)"):
        layer.set_weights([np.zeros((2, 3)), np.zeros(2)])


def test_activity_regularizer_adds_penalty_in_training(backend):
    layer = layers.Dense(2, kernel_initializer="ones", activity_regularizer=regularizers.L1(0.1))
    layer(np.ones((4, 3), dtype=np.float32), training=True)
    (penalty,) = layer.losses
    assert np.isclose(penalty.item(), 0.1 * 4 * 2 * 3 / 4)  # Keras divides by the batch size
    layer.clear_losses()
    layer(np.ones((4, 3), dtype=np.float32))
    assert layer.losses == []


def test_get_weights_is_a_snapshot(backend):
    model = dlx.Sequential([layers.Dense(2, input_shape=(3,))])
    model.compile(optimizer="adam", loss="mse")
    before = model.get_weights()
    kept = [w.copy() for w in before]
    model.train_on_batch(np.ones((4, 3), dtype=np.float32), np.zeros((4, 2), dtype=np.float32))
    for a, b in zip(before, kept):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(model.get_weights()[0], kept[0])


def test_sequential_shape_probe_leaves_batch_norm_statistics_alone(backend):
    bn = layers.BatchNormalization()
    model = dlx.Sequential([layers.Dense(3), bn])
    model(layers.Input((4,)), training=True)
    np.testing.assert_array_equal(bn.get_weights()[3], np.ones(3))  # moving variance untouched


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: dlx.layers.Dense(3), (2, 4)),
        (lambda: dlx.layers.Conv2D(2, 3), (2, 5, 5, 3)),
        (lambda: dlx.layers.LSTM(4), (2, 3, 5)),
        (lambda: dlx.layers.BatchNormalization(), (2, 6)),
    ],
)
def test_build_called_directly_marks_the_layer_built(make, shape):
    """As in Keras: ``layer.build(shape)`` then ``layer(x)`` uses the weights build made."""
    layer = make()
    layer.build(shape)
    assert layer.built and layer.build_input_shape == shape
    weights = list(layer.weights)
    layer(dlx.asarray(np.zeros(shape, np.float32)))
    assert layer.weights == weights
