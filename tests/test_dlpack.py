"""Zero-copy exchange through DLPack: PyTorch tensors as inputs to dlx."""

import numpy as np
import pytest

import dlx
from dlx import layers

torch = pytest.importorskip("torch")


def test_from_dlpack_on_numpy_shares_memory():
    dlx.set_backend("numpy")
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    a = dlx.from_dlpack(t)
    assert isinstance(a, np.ndarray) and a.shape == (3, 4) and a.dtype == np.float32
    t[0, 0] = 42.0  # one buffer: a write on the torch side shows in dlx
    assert a[0, 0] == 42.0
    assert np.shares_memory(a, t.numpy())


def test_from_dlpack_on_every_backend(backend):
    t = torch.linspace(-1, 1, 6, dtype=torch.float32).reshape(2, 3)
    a = dlx.from_dlpack(t)
    assert backend.owns(a)
    np.testing.assert_array_equal(dlx.to_numpy(a), t.numpy())


def test_tensor_and_layer_take_torch_tensors(backend):
    t = torch.randn(4, 5, dtype=torch.float32)
    x = dlx.Tensor(t)
    assert backend.owns(x.value)
    np.testing.assert_array_equal(dlx.to_numpy(x), t.numpy())
    dense = layers.Dense(3)
    y = dense(t)
    kernel, bias = dense.get_weights()
    np.testing.assert_allclose(dlx.to_numpy(y), t.numpy() @ kernel + bias, rtol=1e-5, atol=1e-6)


def test_tensor_of_torch_tensor_is_zero_copy_on_numpy():
    dlx.set_backend("numpy")
    t = torch.zeros(3, dtype=torch.float32)
    x = dlx.Tensor(t)
    t += 1
    np.testing.assert_array_equal(x.value, [1.0, 1.0, 1.0])


def test_tensor_requiring_grad_is_detached():
    dlx.set_backend("numpy")
    t = torch.ones(2, 2, requires_grad=True)
    np.testing.assert_array_equal(dlx.from_dlpack(t), np.ones((2, 2), np.float32))


def test_dtype_cast_of_a_torch_tensor():
    dlx.set_backend("numpy")
    x = dlx.Tensor(torch.arange(3), dtype="float32")
    assert x.dtype == np.float32


def test_predict_and_fit_take_torch_tensors(backend):
    dlx.set_seed(0)
    model = dlx.Sequential(
        [layers.Input((6,)), layers.Dense(4, activation="relu"), layers.Dense(2)]
    )
    x = torch.randn(10, 6, dtype=torch.float32)
    expected = model.predict(x.numpy(), verbose=0)
    got = model.predict(x, verbose=0)
    np.testing.assert_allclose(dlx.to_numpy(got), dlx.to_numpy(expected), rtol=1e-6)
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, torch.zeros(10, 2), epochs=1, batch_size=5, verbose=0)


def test_functional_model_takes_torch_tensors():
    dlx.set_backend("numpy")
    a, b = layers.Input((3,)), layers.Input((3,))
    model = dlx.Model([a, b], layers.Add()([layers.Dense(2)(a), layers.Dense(2)(b)]))
    ta, tb = torch.randn(4, 3), torch.randn(4, 3)
    np.testing.assert_allclose(
        model.predict([ta, tb], verbose=0),
        model.predict([ta.numpy(), tb.numpy()], verbose=0),
        rtol=1e-6,
    )


def test_objects_without_dlpack_are_refused():
    with pytest.raises(TypeError, match="__dlpack__"):
        dlx.get_backend().from_dlpack([1, 2, 3])


def test_outputs_go_to_torch_without_a_copy(backend):
    # backend arrays (predict's outputs, Tensor.value) speak DLPack themselves
    model = dlx.Sequential([layers.Input((3,)), layers.Dense(2)])
    out = model.predict(np.ones((4, 3), np.float32), verbose=0)
    t = torch.from_dlpack(out)
    np.testing.assert_array_equal(t.numpy(), dlx.to_numpy(out))
    if backend.name == "numpy":
        assert np.shares_memory(t.numpy(), out)
