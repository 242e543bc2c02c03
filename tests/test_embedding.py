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


@pytest.mark.usefixtures("kernels_on")
@pytest.mark.parametrize(
    "shape, axis, index_shape",
    [((5000, 8), 0, (64, 50)), ((3, 6, 2), 1, (2, 4)), ((4,), 0, (3, 3)), ((2, 3, 5), 2, (7,))],
)
def test_take_backward_kernel_matches_the_generic_op(monkeypatch, shape, axis, index_shape):
    # the NumPy kernel sums rows sorted by index; the generic op multiplies by a one-hot matrix
    from dlx.backends import numpy_kernels

    from dlx import ops

    used = []
    real = numpy_kernels.take_backward
    monkeypatch.setitem(
        dlx.set_backend("numpy").kernels,
        "take_backward",
        lambda *args: used.append(1) or real(*args),
    )
    rng = np.random.default_rng(axis)
    x = rng.standard_normal(shape)
    indices = rng.integers(-shape[axis], shape[axis], index_shape)  # repeats and negatives
    g = rng.standard_normal(shape[:axis] + index_shape + shape[axis + 1 :])
    grads = []
    for kernels in (True, False):
        dlx.backends.set_kernels_enabled(kernels)
        t = dlx.Tensor(x, requires_grad=True)
        (ops.take(t, dlx.asarray(indices), axis=axis) * dlx.asarray(g)).sum().backward()
        grads.append(dlx.to_numpy(t.grad))
    assert used == [1]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12, atol=1e-12)
    expected = np.zeros(shape)
    moved = np.moveaxis(expected, axis, 0)  # a view: adding into it fills expected
    k = len(index_shape)
    rows = np.moveaxis(g, tuple(range(axis, axis + k)), tuple(range(k)))
    np.add.at(moved, indices.reshape(-1), rows.reshape((-1,) + moved.shape[1:]))
    np.testing.assert_allclose(grads[0], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_compiled_take_backward_matches_the_numpy_kernel(monkeypatch, threads):
    import shutil

    from dlx.backends import cpu_kernels, cpu_library, numpy_kernels
    from helpers import count_compiled_calls

    if shutil.which(cpu_library.compiler_name()) is None:
        pytest.skip("no C++ compiler on this machine")
    calls = count_compiled_calls(monkeypatch, "gather")
    monkeypatch.setenv("DLX_NUM_THREADS", str(threads))
    cpu_kernels.forget()
    rng = np.random.default_rng(threads)
    for shape, index_shape, dtype in [
        ((5000, 64), (64, 100), np.float32),  # several parts of output rows
        ((7, 3, 2), (4, 5), np.float64),
        ((6,), (9,), np.float32),
        ((4, 3), (0,), np.float32),
    ]:
        indices = rng.integers(-shape[0], shape[0], index_shape).astype(np.int32)
        g = rng.standard_normal(index_shape + shape[1:]).astype(dtype)
        got = cpu_kernels.take_backward(g, indices, shape, 0)
        want = numpy_kernels.take_backward(g, indices, shape, 0)
        assert got.dtype == dtype and got.shape == shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert calls["take_rows_backward"] == 4
    g = rng.standard_normal((3, 3, 5))
    cpu_kernels.take_backward(g, np.array([0, 1, 1]), (3, 4, 5), 1)  # another axis: NumPy's
    assert calls["take_rows_backward"] == 4
    with pytest.raises(IndexError, match="out of range for 3 rows"):
        cpu_kernels.take_backward(np.ones((1, 2)), np.array([7]), (3, 2), 0)
    monkeypatch.undo()
    cpu_kernels.forget()
