"""Merge layers: values, float64 gradients, Keras equality, broadcasting and shape errors
that name the layer and every shape."""

import numpy as np
import pytest
from helpers import check_gradients

import dlx
from dlx import layers

rng = np.random.default_rng(5)

ELEMENTWISE = {
    "Add": lambda xs: sum(xs),
    "Subtract": lambda xs: xs[0] - xs[1],
    "Multiply": lambda xs: np.prod(xs, axis=0),
    "Average": lambda xs: sum(xs) / len(xs),
    "Maximum": lambda xs: np.max(xs, axis=0),
    "Minimum": lambda xs: np.min(xs, axis=0),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_merges_values_and_gradients(backend, name):
    n = 2 if name == "Subtract" else 3
    xs = [rng.normal(size=(2, 3, 4)) for _ in range(n)]
    layer = getattr(layers, name)(dtype="float64")
    out = layer([dlx.Tensor(x) for x in xs])
    np.testing.assert_allclose(dlx.to_numpy(out), ELEMENTWISE[name](np.stack(xs)), rtol=1e-12)
    check_gradients(lambda *ts: layer(list(ts)), xs)


def test_elementwise_merge_broadcasts_size_one_axes(backend):
    a, b = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 1, 4))
    check_gradients(lambda a, b: layers.Multiply(dtype="float64")([a, b]), [a, b])
    out = layers.Add()([a.astype(np.float32), b.astype(np.float32)])
    assert out.shape == (2, 3, 4)


@pytest.mark.parametrize("axis", [-1, 1])
def test_concatenate_values_and_gradients(backend, axis):
    shapes = [(2, 3, 4), (2, 2, 4)] if axis == 1 else [(2, 3, 4), (2, 3, 1)]
    xs = [rng.normal(size=s) for s in shapes]
    layer = layers.Concatenate(axis=axis, dtype="float64")
    np.testing.assert_array_equal(dlx.to_numpy(layer(xs)), np.concatenate(xs, axis=axis))
    check_gradients(lambda *ts: layer(list(ts)), xs)


@pytest.mark.parametrize(
    "shapes, axes, normalize",
    [
        (((3, 4), (3, 4)), 1, False),
        (((3, 4), (3, 4)), -1, True),
        (((2, 3, 4), (2, 5, 4)), (2, 2), False),
        (((2, 3, 4), (2, 3, 5)), (1, 1), True),
        (((2, 3, 4), (2, 4)), (2, 1), False),
    ],
)
def test_dot_values_and_gradients(backend, shapes, axes, normalize):
    x, y = (rng.normal(size=s) for s in shapes)
    layer = layers.Dot(axes=axes, normalize=normalize, dtype="float64")
    ax, ay = (axes, axes) if isinstance(axes, int) else axes
    xn, yn = x, y
    if normalize:
        xn = x / np.linalg.norm(x, axis=ax, keepdims=True)
        yn = y / np.linalg.norm(y, axis=ay, keepdims=True)
    expected = np.stack(
        [
            np.tensordot(xn[i], yn[i], axes=(ax % x.ndim - 1, ay % y.ndim - 1))
            for i in range(x.shape[0])
        ]
    )
    if expected.ndim == 1:
        expected = expected[:, None]
    np.testing.assert_allclose(dlx.to_numpy(layer([x, y])), expected, rtol=1e-10)
    check_gradients(lambda a, b: layer([a, b]), [x, y])


def test_merges_match_keras(keras):
    a, b = (rng.normal(size=(3, 2, 4)).astype(np.float32) for _ in range(2))
    for name in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"):
        ours = dlx.to_numpy(getattr(layers, name)()([a, b]))
        theirs = keras.ops.convert_to_numpy(getattr(keras.layers, name)()([a, b]))
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, err_msg=name)
    for axes, normalize in ((2, False), ((1, 1), True)):
        ours = dlx.to_numpy(layers.Dot(axes, normalize=normalize)([a, b]))
        theirs = keras.ops.convert_to_numpy(keras.layers.Dot(axes, normalize=normalize)([a, b]))
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6, err_msg=str(axes))


def test_merges_in_functional_model(backend):
    a, b = layers.Input((4,), name="left"), layers.Input((4,), name="right")
    merged = layers.Concatenate()(
        [layers.Add()([a, b]), layers.Multiply()([a, b]), layers.Dot(axes=1)([a, b])]
    )
    assert merged.shape == (None, 9)
    model = dlx.Model([a, b], layers.Dense(1)(merged))
    x = [rng.normal(size=(5, 4)).astype(np.float32) for _ in range(2)]
    assert model.predict(x, verbose=0).shape == (5, 1)


def test_merge_errors_name_layer_and_shapes(backend):
    a = np.zeros((2, 3), np.float32)
    b = np.zeros((2, 4), np.float32)
    with pytest.raises(
        ValueError, match=r"Add 'add_bad'.*\(2, 3\), \(2, 4\).*axis 1 has sizes \[3, 4\]"
    ):
        layers.Add(name="add_bad")([a, b])
    with pytest.raises(ValueError, match=r"Multiply 'mul_rank'.*different ranks"):
        layers.Multiply(name="mul_rank")([a, np.zeros((2, 3, 1), np.float32)])
    with pytest.raises(ValueError, match=r"Subtract 'sub_n'.*exactly 2 inputs, got 3"):
        layers.Subtract(name="sub_n")([a, a, a])
    with pytest.raises(ValueError, match=r"Add 'add_one'.*list of tensors"):
        layers.Add(name="add_one")(a)
    with pytest.raises(
        ValueError, match=r"Concatenate 'cat_bad'.*\(2, 3, 4\), \(2, 5, 3\).*axis 1"
    ):
        layers.Concatenate(name="cat_bad")(
            [np.zeros((2, 3, 4), np.float32), np.zeros((2, 5, 3), np.float32)]
        )
    with pytest.raises(ValueError, match=r"Dot 'dot_bad'.*\(2, 3\), \(2, 4\).*sizes 3 and 4"):
        layers.Dot(axes=1, name="dot_bad")([a, b])
    with pytest.raises(ValueError, match=r"Add 'add_batch'.*batch sizes differ"):
        layers.Add(name="add_batch")([a, np.zeros((3, 3), np.float32)])
    x, y = layers.Input((3,)), layers.Input((4,))
    with pytest.raises(ValueError, match=r"Average 'avg_sym'.*\(1, 3\), \(1, 4\)"):
        layers.Average(name="avg_sym")([x, y])


def test_merge_get_config():
    assert layers.Concatenate(axis=1).get_config()["axis"] == 1
    config = layers.Dot(axes=(1, 2), normalize=True).get_config()
    assert config["axes"] == [1, 2] and config["normalize"] is True
    clone = layers.Dot.from_config({**config, "name": "dot_clone"})
    assert clone.axes == [1, 2]
