"""dlx's thread pool (backends/cpu/thread_pool.cpp) and the Dense products run on it
(backends/cpu/matmul.cpp): results against NumPy and the generic op, for one thread and
several, through fork and from two Python threads at once."""

import multiprocessing
import shutil
import threading

import numpy as np
import pytest
from dlx.backends import cpu_kernels, cpu_library
from helpers import count_compiled_calls

import dlx
from dlx import layers

pytestmark = [
    pytest.mark.skipif(
        shutil.which(cpu_library.compiler_name()) is None, reason="no C++ compiler on this machine"
    ),
    pytest.mark.usefixtures("kernels_on"),
]


@pytest.fixture(params=[1, 2, 3])
def pool_threads(request, monkeypatch):
    """Runs a test with a pool of 1, 2 and 3 threads (3 splits unevenly on 2 cores)."""
    monkeypatch.setenv("DLX_NUM_THREADS", str(request.param))
    monkeypatch.delenv("DLX_KERNELS", raising=False)
    cpu_kernels.forget()
    yield request.param
    monkeypatch.undo()
    cpu_kernels.forget()


def _pool_size():
    return cpu_library.library(cpu_library.POOL_SOURCE).dlx_thread_pool_size()


def test_the_pool_takes_its_size_from_dlx_num_threads(pool_threads):
    assert cpu_library.pool_threads() == pool_threads
    assert _pool_size() == pool_threads


def test_a_bad_dlx_num_threads_names_the_variable(monkeypatch):
    monkeypatch.setenv("DLX_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="DLX_NUM_THREADS.*'two'"):
        cpu_library.pool_threads()


PRODUCT_SHAPES = [(128, 784, 512), (784, 128, 512), (3, 5, 7), (200, 300, 37), (1, 64, 1000)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M, K, N", PRODUCT_SHAPES)
def test_matmul_matches_numpy_for_every_layout(pool_threads, dtype, M, K, N):
    rng = np.random.default_rng(M + K + N)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    for left in (a, np.asfortranarray(a)):
        for right in (b, np.asfortranarray(b)):
            got = cpu_kernels.matmul(left, right)
            assert got.dtype == dtype and got.shape == (M, N)
            np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * K)
    out = np.full((M, N), np.nan, dtype)
    assert cpu_kernels.matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance * K)


def test_matmul_gives_what_it_cannot_read_in_place_to_numpy(monkeypatch):
    calls = count_compiled_calls(monkeypatch, "matmul")
    a = np.arange(24.0).reshape(4, 6)
    strided = a[:, ::2]  # neither C- nor F-contiguous
    b = np.ones((3, 2))
    np.testing.assert_array_equal(cpu_kernels.matmul(strided, b), strided @ b)
    ints = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(cpu_kernels.matmul(ints, ints.T), ints @ ints.T)
    assert cpu_kernels.matmul(a, np.ones((6, 0))).shape == (4, 0)
    np.testing.assert_array_equal(cpu_kernels.matmul(np.ones((2, 0)), np.ones((0, 3))), 0)
    assert calls["matmul"] == 0
    cpu_kernels.matmul(a, np.ones((6, 5)))
    assert calls["matmul"] == 1


def _dense_reference(x, w, b, relu, g):
    """y and (gx, gw, gb) of x @ w + b (then ReLU), in float64 NumPy."""
    z = x @ w + (0 if b is None else b)
    y = np.maximum(z, 0) if relu else z
    gz = np.where(z > 0, g, 0) if relu else g
    return y, (gz @ w.T, x.T @ gz, None if b is None else gz.sum(axis=0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("M, K, N", [(128, 784, 512), (300, 40, 20), (5, 3, 17)])
def test_linear_kernels_match_a_float64_reference(pool_threads, dtype, relu, bias, M, K, N):
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((M, K)), rng.standard_normal((K, N))
    b = rng.standard_normal(N) if bias else None
    g = rng.standard_normal((M, N))
    cast = [None if a is None else a.astype(dtype) for a in (x, w, b, g)]
    y_ref, grads_ref = _dense_reference(
        *[None if a is None else a.astype(np.float64) for a in cast[:3]],
        relu,
        cast[3].astype(np.float64),
    )
    tolerance = 1e-4 if dtype == np.float32 else 1e-11
    y = cpu_kernels.linear_forward(cast[0], cast[1], cast[2], relu)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, y_ref, rtol=tolerance, atol=tolerance * K)
    grads = cpu_kernels.linear_backward(
        cast[3], y if relu else None, cast[0], cast[1], True, True, bias
    )
    for got, expected, inner in zip(grads, grads_ref, (N, M, M)):
        if expected is None:
            assert got is None
        else:
            np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * inner)


@pytest.mark.parametrize("threads", [1, 2, 4, 5])
def test_both_backward_products_side_by_side_match_one_after_the_other(monkeypatch, threads):
    # from 2**20 multiply-adds gx and gw run side by side, each on half the pool (4 threads:
    # each product in two blocks; 5: the same, one thread spare); wanting one of them alone
    # takes the other path, a product split over the whole pool
    monkeypatch.setenv("DLX_NUM_THREADS", str(threads))
    cpu_kernels.forget()
    rng = np.random.default_rng(threads)
    M, K, N = 100, 333, 70  # 2.3M multiply-adds; blocks of 16 do not divide the sides
    x, w, g = (rng.standard_normal(s).astype(np.float32) for s in ((M, K), (K, N), (M, N)))
    y = np.maximum(rng.standard_normal((M, N)), 0).astype(np.float32)
    gx, gw, gb = cpu_kernels.linear_backward(g, y, x, w, True, True, True)
    alone_x = cpu_kernels.linear_backward(g, y, x, w, True, False, False)[0]
    alone_w = cpu_kernels.linear_backward(g, y, x, w, False, True, False)[1]
    np.testing.assert_allclose(gx, alone_x, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(gw, alone_w, rtol=1e-6, atol=1e-5)
    gm = np.where(y > 0, g, 0).astype(np.float64)
    np.testing.assert_allclose(gx, gm @ w.T.astype(np.float64), rtol=1e-4, atol=1e-4 * N)
    np.testing.assert_allclose(gw, x.T.astype(np.float64) @ gm, rtol=1e-4, atol=1e-4 * M)
    np.testing.assert_allclose(gb, gm.sum(axis=0), rtol=1e-4, atol=1e-4 * M)


def test_linear_backward_leaves_out_what_is_not_wanted_and_keeps_its_input():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((6, 4)), rng.standard_normal((4, 3))
    y = cpu_kernels.linear_forward(x, w, None, True)
    g = rng.standard_normal((6, 3))
    before = g.copy()
    gx, gw, gb = cpu_kernels.linear_backward(g, y, x, w, False, True, False)
    assert gx is None and gb is None and gw.shape == (4, 3)
    np.testing.assert_array_equal(g, before)


def test_the_fused_relu_passes_nan_through_like_numpy():
    x = np.array([[1.0, 1.0], [-1.0, 2.0]])
    bias = np.array([np.nan, 0.0])
    y = cpu_kernels.linear_forward(x, np.eye(2), bias, True)
    np.testing.assert_array_equal(y, np.maximum(x + bias, 0))  # NaN in the first column


def _train_dense(seed=0, steps=3):
    dlx.set_seed(seed)
    model = dlx.Sequential(
        [
            layers.Dense(64, activation="relu", input_shape=(30,)),
            layers.Dense(48, activation="relu"),
            layers.Dense(5),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    x = rng.random((96, 30), dtype=np.float32)
    y = rng.integers(0, 5, 96)
    for _ in range(steps):
        model.train_on_batch(x, y)
    return [np.array(w) for w in model.get_weights()]


def test_dense_training_runs_the_fused_kernels_and_matches_the_generic_ops(monkeypatch):
    calls = count_compiled_calls(monkeypatch, "matmul")
    fused = _train_dense()
    assert calls["linear_forward"] >= 9 and calls["linear_backward"] >= 9
    dlx.backends.set_kernels_enabled(False)
    generic = _train_dense()
    for a, b in zip(fused, generic):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_dense_gradients_in_float64_match_finite_differences(monkeypatch):
    from helpers import check_layer_gradients

    calls = count_compiled_calls(monkeypatch, "matmul")
    rng = np.random.default_rng(2)
    # small products run in line; the split ones are checked against float64 NumPy above
    check_layer_gradients(
        layers.Dense(7, activation="relu", dtype="float64"), rng.normal(size=(5, 9))
    )
    check_layer_gradients(
        layers.Dense(4, use_bias=False, dtype="float64"), rng.normal(size=(2, 3, 6))
    )
    assert calls["linear_forward"] and calls["linear_backward"]


def _adam_result(arrays):
    w, g, m, v = (a.copy() for a in arrays)
    cpu_kernels.adam_update_many([w], [g], [m], [v], 1e-3, 0.9, 0.999, 1e-7)
    return w, m, v


def test_adam_on_the_pool_is_bit_identical_for_any_thread_count(monkeypatch):
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(300_001).astype(np.float32) for _ in range(4)]
    arrays[3] = np.abs(arrays[3])
    results = []
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("DLX_NUM_THREADS", threads)
        cpu_kernels.forget()
        results.append(_adam_result(arrays))
    cpu_kernels.forget()
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def _product_in_child(queue):
    a = np.ones((256, 256), np.float32)
    queue.put(float(cpu_kernels.matmul(a, a)[0, 0]))


def test_a_forked_child_gets_a_working_pool():
    a = np.ones((256, 256), np.float32)
    cpu_kernels.matmul(a, a)  # the parent's workers exist now
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_product_in_child, args=(queue,))
    child.start()
    child.join(60)
    assert child.exitcode == 0, "the child hung or failed"
    assert queue.get(timeout=5) == 256.0


def test_two_python_threads_may_use_the_pool_at_once():
    rng = np.random.default_rng(5)
    pairs = [(rng.standard_normal((300, 200)), rng.standard_normal((200, 250))) for _ in range(2)]
    failures = []

    def work(a, b):
        expected = a @ b
        for _ in range(30):
            if not np.allclose(cpu_kernels.matmul(a, b), expected, rtol=1e-12, atol=1e-10):
                failures.append("wrong product")

    threads = [threading.Thread(target=work, args=pair) for pair in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures and not any(t.is_alive() for t in threads)


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_numpys_openblas_is_found_without_threadpoolctl(monkeypatch):
    from dlx.backends import blas_threads

    with_threadpoolctl = blas_threads.openblas_symbol("cblas_sgemm")
    monkeypatch.setattr(blas_threads, "_SYMBOLS", {})
    monkeypatch.setattr(blas_threads, "blas_controllers", lambda: ())
    assert blas_threads.openblas_symbol("cblas_sgemm") == with_threadpoolctl


@pytest.mark.parametrize("threads", ["1", "2"])
def test_optimizer_kernels_flush_subnormal_slots_and_leave_numpy_alone(monkeypatch, threads):
    # Adam's m for a unit whose gradient stays zero decays into the subnormal range, where
    # every operation is many times slower; the compiled optimizers flush it to zero
    monkeypatch.setenv("DLX_NUM_THREADS", threads)
    cpu_kernels.forget()
    n = 100_000
    w = np.ones(n, np.float32)
    g = np.zeros(n, np.float32)
    m = np.full(n, 1e-39, np.float32)  # subnormal
    v = np.full(n, 1e-3, np.float32)
    cpu_kernels.adam_update_many([w], [g], [m], [v], 1e-3, 0.9, 0.999, 1e-7)
    assert not np.any(m), "the subnormal m was not flushed"
    m = np.full(n, 2e-38, np.float32)
    cpu_kernels.adam_update_many([w], [g], [m], [v], 1e-3, 0.9, 0.999, 1e-7)
    assert np.all(m >= np.finfo(np.float32).tiny), "a decaying m became subnormal"
    momentum = np.full(n, 1e-39, np.float32)  # subnormal input
    assert cpu_kernels.sgd_momentum_update(w, g, momentum, 0.1, 0.9, False)
    assert not np.any(momentum)
    # the flush is the kernels' own: NumPy on this thread still keeps subnormals
    tiny = np.float32(2e-38) * np.float32(0.5)
    assert tiny != 0 and tiny < np.finfo(np.float32).tiny
    cpu_kernels.forget()
