"""The compiled batch and layer normalization (backends/cpu_normalization.py,
backends/cpu/normalization.cpp).

They must give what the generic op gives (forward, statistics, all three gradients), the
same bits for any thread count, pass a float64 gradient check, and leave to the generic
op what they do not handle (other axes, strided inputs).
"""

import shutil

import numpy as np
import pytest
from dlx.backends import cpu_kernels, cpu_library
from helpers import check_gradients, count_compiled_calls

import dlx
from dlx import layers, losses
from dlx.ops.normalization import batch_normalization, layer_normalization

pytestmark = pytest.mark.skipif(
    shutil.which(cpu_library.compiler_name()) is None, reason="no C++ compiler on this machine"
)


@pytest.fixture
def calls(monkeypatch):
    """The compiled kernels on, and a Counter of the normalization.cpp functions that ran."""
    yield count_compiled_calls(monkeypatch, "normalization")
    monkeypatch.undo()
    cpu_kernels.forget()


def _run(x, gamma, beta, g, kernels, op=batch_normalization):
    """y (and for batch normalization the batch mean and variance), then the gradients of
    sum(y * g), through ``op``."""
    dlx.set_backend("numpy")
    dlx.backends.set_kernels_enabled(kernels)
    tx = dlx.Tensor(x, requires_grad=True)
    tg = None if gamma is None else dlx.Tensor(gamma, requires_grad=True)
    tb = None if beta is None else dlx.Tensor(beta, requires_grad=True)
    if op is batch_normalization:
        outputs = op(tx, tg, tb, epsilon=1e-3, return_statistics=True)
    else:
        outputs = (op(tx, tg, tb, epsilon=1e-3),)
    (outputs[0] * dlx.asarray(g)).sum().backward()
    grads = [None if t is None else dlx.to_numpy(t.grad) for t in (tx, tg, tb)]
    return [dlx.to_numpy(a) for a in outputs] + grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape", [(64, 26, 26, 32), (128, 512), (8, 20, 64), (3, 5), (1, 7), (700, 3), (4, 1)]
)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("op", [batch_normalization, layer_normalization], ids=["batch", "layer"])
def test_matches_the_generic_op(calls, dtype, shape, affine, op):
    rng = np.random.default_rng(len(shape) + shape[-1])
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    gamma = rng.standard_normal(shape[-1]).astype(dtype) if affine else None
    beta = rng.standard_normal(shape[-1]).astype(dtype) if affine else None
    g = rng.standard_normal(shape).astype(dtype)
    fast = _run(x, gamma, beta, g, kernels=True, op=op)
    kind = "batch_norm" if op is batch_normalization else "layer_norm"
    assert calls == {f"{kind}_forward": 1, f"{kind}_backward": 1}
    generic = _run(x, gamma, beta, g, kernels=False, op=op)
    tolerance = 2e-5 if dtype == np.float32 else 1e-11
    for got, want in zip(fast, generic):
        if want is None:
            assert got is None
        else:
            assert got.dtype == dtype and got.shape == want.shape
            scale = max(1.0, float(np.abs(want).max()))
            np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * scale)


def test_float64_gradients_match_finite_differences(calls):
    dlx.set_backend("numpy")
    rng = np.random.default_rng(2)
    x, gamma, beta = rng.standard_normal((6, 3, 4)), rng.standard_normal(4), rng.standard_normal(4)
    check_gradients(lambda x, gm, bt: batch_normalization(x, gm, bt), [x, gamma, beta])
    assert calls["batch_norm_forward"] > 0 and calls["batch_norm_backward"] > 0


@pytest.mark.parametrize("rows, C", [(5000, 16), (300_000, 3)])  # 20 blocks; 1024 larger ones
def test_the_same_bits_for_any_thread_count(monkeypatch, calls, rows, C):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((rows, C)).astype(np.float32)
    gamma, beta = np.ones(C, np.float32), np.zeros(C, np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        monkeypatch.setenv("DLX_NUM_THREADS", str(threads))
        cpu_kernels.forget()
        y, mean, var, inv = cpu_kernels.CPU_KERNELS["batch_norm_forward"](x, gamma, beta, 1e-3)
        grads = cpu_kernels.CPU_KERNELS["batch_norm_backward"](
            g, x, mean, inv, gamma, True, True, True
        )
        results.append((y, mean, var, inv, *grads))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(results[0][1], x64.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(results[0][2], x64.var(0), rtol=1e-6)


def test_other_layouts_go_to_the_generic_op(calls):
    dlx.set_backend("numpy")
    rng = np.random.default_rng(4)
    x = dlx.Tensor(rng.standard_normal((8, 6, 5)), requires_grad=True)
    batch_normalization(x, axis=1).sum().backward()  # channels first
    layer_normalization(x, axis=(1, 2)).sum().backward()  # over two axes
    strided = dlx.Tensor(rng.standard_normal((8, 10))[:, ::2], requires_grad=True)
    batch_normalization(strided).sum().backward()
    layer_normalization(strided).sum().backward()
    assert not calls
    half = dlx.Tensor(rng.standard_normal((8, 4)).astype(np.float16))
    assert batch_normalization(half).dtype == np.float16  # no float16 kernel: generic


def test_a_batch_normalized_model_trains_as_with_the_generic_ops(calls):
    rng = np.random.default_rng(5)
    x = rng.random((32, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 4, 32)
    # no biases before the normalizations: their gradient is zero up to rounding, and Adam
    # turns that rounding noise into full-size steps of either sign
    weights = []
    for kernels in (True, False):
        dlx.set_backend("numpy")
        dlx.backends.set_kernels_enabled(kernels)
        dlx.set_seed(0)
        model = dlx.Sequential(
            [
                layers.Conv2D(8, 3, use_bias=False, input_shape=(12, 12, 1)),
                layers.BatchNormalization(),
                layers.Activation("relu"),
                layers.Flatten(),
                layers.Dense(16, use_bias=False),
                layers.BatchNormalization(),
                layers.Dense(4),
            ]
        )
        model.compile(optimizer="adam", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
        for _ in range(3):
            model.train_on_batch(x, y)
        weights.append([dlx.to_numpy(w.value) for w in model.weights])
        if kernels:
            assert calls["batch_norm_forward"] == 6 and calls["batch_norm_backward"] == 6
    for fast, generic in zip(*weights):  # moving statistics included
        np.testing.assert_allclose(fast, generic, rtol=1e-4, atol=1e-5)


def test_layer_norm_float64_gradients_and_thread_counts(monkeypatch, calls):
    dlx.set_backend("numpy")
    rng = np.random.default_rng(6)
    x, gamma, beta = rng.standard_normal((5, 3, 6)), rng.standard_normal(6), rng.standard_normal(6)
    check_gradients(lambda x, gm, bt: layer_normalization(x, gm, bt), [x, gamma, beta])
    assert calls["layer_norm_forward"] > 0 and calls["layer_norm_backward"] > 0
    big = rng.standard_normal((3000, 24)).astype(np.float32)  # several blocks of rows
    g = rng.standard_normal(big.shape).astype(np.float32)
    ones, zeros = np.ones(24, np.float32), np.zeros(24, np.float32)
    results = []
    for threads in (1, 2, 3):
        monkeypatch.setenv("DLX_NUM_THREADS", str(threads))
        cpu_kernels.forget()
        y, mean, inv = cpu_kernels.CPU_KERNELS["layer_norm_forward"](big, ones, zeros, 1e-3)
        grads = cpu_kernels.CPU_KERNELS["layer_norm_backward"](
            g, big, mean, inv, ones, True, True, True
        )
        results.append((y, mean, inv, *grads))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_the_layer_normalization_layer_uses_it(calls):
    dlx.set_backend("numpy")
    layer = layers.LayerNormalization()
    x = dlx.Tensor(np.random.default_rng(7).standard_normal((2, 7, 16)).astype(np.float32))
    y = layer(x)
    y.sum().backward()
    assert calls["layer_norm_forward"] == 1 and calls["layer_norm_backward"] == 1
    assert layer.gamma.grad.shape == (16,) and layer.beta.grad.shape == (16,)
