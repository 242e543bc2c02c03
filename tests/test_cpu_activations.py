"""The compiled ReLU and ReLU gradient (backends/cpu/activations.cpp): NumPy's bits."""

import shutil

import numpy as np
import pytest
from dlx.backends import cpu_kernels, cpu_library, numpy_kernels
from helpers import check_gradients, count_compiled_calls

import dlx
from dlx import layers, ops

pytestmark = pytest.mark.skipif(
    shutil.which(cpu_library.compiler_name()) is None, reason="no C++ compiler on this machine"
)

SPECIAL = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3.0, -3.0]


@pytest.fixture
def calls(monkeypatch):
    yield count_compiled_calls(monkeypatch, "activations")
    monkeypatch.undo()
    cpu_kernels.forget()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 3])
def test_relu_and_its_gradient_give_numpys_bits(monkeypatch, calls, dtype, threads):
    monkeypatch.setenv("DLX_NUM_THREADS", str(threads))
    cpu_kernels.forget()
    rng = np.random.default_rng(threads)
    x = rng.standard_normal((70, 1000)).astype(dtype)  # several parts of the pool
    x.reshape(-1)[: len(SPECIAL)] = SPECIAL
    g = rng.standard_normal(x.shape).astype(dtype)
    g.reshape(-1)[-len(SPECIAL) :] = SPECIAL
    y = cpu_kernels.relu(x)
    want = np.maximum(x, dtype(0))
    assert y.dtype == dtype
    np.testing.assert_array_equal(y.view(f"u{y.itemsize}"), want.view(f"u{y.itemsize}"))
    out = cpu_kernels.relu_grad(g, y)
    want = np.where(y > 0, g, dtype(0))
    np.testing.assert_array_equal(out.view(f"u{y.itemsize}"), want.view(f"u{y.itemsize}"))
    assert calls == {"relu": 1, "relu_grad": 1}


def test_fallbacks_and_a_broadcast_gradient(calls):
    y = np.maximum(np.random.default_rng(0).standard_normal((4, 6)), 0)
    assert cpu_kernels.relu(y[:, ::2]) is None  # strided: the op uses NumPy
    ones = np.broadcast_to(np.ones(1), y.shape)  # a sum's gradient
    np.testing.assert_array_equal(cpu_kernels.relu_grad(ones, y), (y > 0).astype(float))
    half = y.astype(np.float16)
    np.testing.assert_array_equal(
        cpu_kernels.relu_grad(half, half), numpy_kernels.relu_grad(half, half)
    )
    assert calls["relu_grad"] == 1


def test_the_relu_op_and_layer_use_them(calls):
    dlx.set_backend("numpy")
    x = np.random.default_rng(1).standard_normal((5, 4)) + 0.05  # away from the kink
    check_gradients(lambda t: ops.relu(t), [x])
    layers.Activation("relu")(dlx.Tensor(x, requires_grad=True)).sum().backward()
    assert calls["relu"] > 1 and calls["relu_grad"] > 1
