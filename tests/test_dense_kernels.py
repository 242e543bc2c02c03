"""The NumPy kernels behind Dense training compute what the generic ops compute.

``relu_grad``/``relu_inplace`` (the fused Linear+ReLU) and ``adam_update_many``
(one Adam step over all variables, split over threads) are compared with the
generic Array API path (``set_kernels_enabled(False)``) and with plain NumPy.
"""

import numpy as np
import pytest
from dlx.backends import numpy_kernels

import dlx
from dlx import ops, optimizers


def _linear_relu(arrays, kernels):
    dlx.set_backend("numpy")
    dlx.backends.set_kernels_enabled(kernels)
    tensors = [dlx.Tensor(a, requires_grad=True) for a in arrays]
    y = ops.linear(*tensors, relu=True)
    r = np.random.default_rng(7).standard_normal(y.shape)
    (y * dlx.asarray(r, dtype=y.dtype)).sum().backward()
    return [dlx.to_numpy(y)] + [dlx.to_numpy(t.grad) for t in tensors]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape", [(33, 20), (4, 6, 20)])
def test_linear_relu_kernels_match_generic(dtype, x_shape):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(dtype) for s in (x_shape, (20, 17), (17,))]
    fast, generic = _linear_relu(arrays, True), _linear_relu(arrays, False)
    for f, g in zip(fast, generic):
        assert f.dtype == g.dtype and f.shape == g.shape
        np.testing.assert_allclose(f, g, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-6)
    assert (fast[0] == 0).any() and (fast[0] > 0).any()  # both sides of the ReLU were exercised


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_grad_equals_where_bit_for_bit(dtype):
    rng = np.random.default_rng(1)
    y = np.maximum(rng.standard_normal((64, 48)), 0).astype(dtype)
    y[0, :4] = [0.0, -0.0, np.inf, np.nan]
    g = rng.standard_normal((64, 48)).astype(dtype)
    g[1:3, :6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30]
    g[0, :4] = np.nan  # masked NaN gradients must come out 0, as where gives
    expected = np.where(y > 0, g, dtype(0))
    got = numpy_kernels.relu_grad(g, y)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got.view(np.uint8), expected.view(np.uint8))
    # a non-contiguous gradient and a dtype without a matching unsigned type take other paths
    np.testing.assert_array_equal(numpy_kernels.relu_grad(g.T, y.T), np.where(y.T > 0, g.T, 0))
    half_y, half_g = y.astype(np.float16), g.astype(np.float16)
    np.testing.assert_array_equal(
        numpy_kernels.relu_grad(half_g, half_y), np.where(half_y > 0, half_g, 0)
    )


SHAPES = [(300, 257), (257,), (257, 129), (129,), (3, 5), (1,)]


@pytest.fixture
def threads(monkeypatch, numpy_kernels_only):
    """``threads(n)``: the Adam kernel splits its work over ``n`` threads; counts the shares run."""
    calls = []
    adam_share = numpy_kernels._adam_share

    def spy(segments, args):
        calls.append(sum(piece[0].size for piece in segments))
        return adam_share(segments, args)

    def use(n):
        monkeypatch.setattr(numpy_kernels, "worker_threads", lambda: n)
        monkeypatch.setattr(numpy_kernels, "MIN_ELEMENTS_PER_THREAD", 1000)
        monkeypatch.setattr(numpy_kernels, "_adam_share", spy)
        calls.clear()
        return calls

    return use


def _adam_run(kernels, steps=3, **kwargs):
    dlx.set_backend("numpy")
    dlx.backends.set_kernels_enabled(kernels)
    rng = np.random.default_rng(3)
    variables = [dlx.Variable(rng.standard_normal(s).astype(np.float32)) for s in SHAPES]
    optimizer = optimizers.Adam(learning_rate=0.01, **kwargs)
    for _ in range(steps):
        grads = [dlx.asarray(rng.standard_normal(s).astype(np.float32)) for s in SHAPES]
        optimizer.apply_gradients(zip(grads, variables))
    state = optimizer.get_state(variables)["slots"]
    return [dlx.to_numpy(v.value) for v in variables], [[dlx.to_numpy(a) for a in s] for s in state]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_adam_update_many_matches_generic(threads, n):
    shares = threads(n)
    weights, slots = _adam_run(True)
    assert len(shares) == (3 * 2 * n if n > 1 else 0)  # three steps, two pieces per thread
    generic_weights, generic_slots = _adam_run(False)
    for a, b in zip(weights, generic_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(slots, generic_slots):
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_adam_update_many_is_bit_identical_for_any_thread_count(threads):
    results = []
    for n in (1, 2, 4):
        threads(n)
        results.append(_adam_run(True))
    for weights, _ in results[1:]:
        for a, b in zip(weights, results[0][0]):
            np.testing.assert_array_equal(a, b)


def test_adam_update_many_updates_non_contiguous_weights(threads):
    shares = threads(2)
    rng = np.random.default_rng(4)
    big = rng.standard_normal((400, 400)).astype(np.float32)
    ws = [big.copy(), big.copy().T]  # the second is a Fortran-order view
    gs = [rng.standard_normal((400, 400)).astype(np.float32) for _ in ws]
    ms = [np.zeros_like(w) for w in ws]
    vs = [np.zeros_like(w) for w in ws]
    expected = []
    for w, g in zip(ws, gs):
        m, v = 0.1 * g, 0.001 * g * g
        expected.append(w - 0.01 * m / (np.sqrt(v) + 1e-7))
    numpy_kernels.adam_update_many(ws, gs, ms, vs, 0.01, 0.9, 0.999, 1e-7)
    assert shares == [40000] * 4  # the contiguous weight, split; the other updated whole
    for w, want in zip(ws, expected):
        np.testing.assert_allclose(w, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sizes", [[5], [10, 1, 7], [1] * 9, [1000, 3, 2000, 1]])
@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_shares_cover_every_element_once(sizes, workers):
    segments = [(np.arange(n),) for n in sizes]
    total = sum(sizes)
    shares = numpy_kernels._shares(segments, total, workers)
    assert 1 <= len(shares) <= workers
    covered = np.concatenate([piece[0] for share in shares for piece in share])
    np.testing.assert_array_equal(covered, np.concatenate([s[0] for s in segments]))
    lengths = [sum(piece[0].size for piece in share) for share in shares]
    assert max(lengths) - min(lengths) <= -(-total // workers)


def test_amsgrad_and_other_backends_keep_the_per_variable_path(backend):
    # the generic per-variable update gives Adam's formula on every backend
    rng = np.random.default_rng(5)
    w0, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    for amsgrad in (False, True):
        v = dlx.Variable(w0.astype(np.float32))
        optimizers.Adam(learning_rate=0.1, amsgrad=amsgrad).apply_gradients(
            [(dlx.asarray(g.astype(np.float32)), v)]
        )
        want = w0 - 0.1 * np.sqrt(0.001) / 0.1 * (0.1 * g) / (np.sqrt(0.001 * g * g) + 1e-7)
        np.testing.assert_allclose(dlx.to_numpy(v.value), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mean", [True, False])
def test_sparse_cross_entropy_kernel_matches_generic(mean):
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((33, 10)) * 5
    labels = rng.integers(0, 10, 33)
    results = []
    for kernels in (True, False):
        dlx.set_backend("numpy")
        dlx.backends.set_kernels_enabled(kernels)
        x = dlx.Tensor(logits, requires_grad=True)
        loss = ops.sparse_softmax_cross_entropy(x, dlx.asarray(labels), mean=mean)
        (loss if mean else loss * dlx.asarray(np.arange(33.0))).sum().backward()
        results.append((dlx.to_numpy(loss), dlx.to_numpy(x.grad)))
    for fast, generic in zip(*results):
        np.testing.assert_allclose(fast, generic, rtol=1e-12, atol=1e-15)
    # against the formula: the mean of -log_softmax at the labels, and (softmax - one_hot) / n
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    per_sample = -log_p[np.arange(33), labels]
    np.testing.assert_allclose(results[0][0], per_sample.mean() if mean else per_sample, rtol=1e-12)
    if mean:
        want = (np.exp(log_p) - np.eye(10)[labels]) / 33
        np.testing.assert_allclose(results[0][1], want, rtol=1e-10, atol=1e-15)


def test_run_shared_runs_every_piece_once_and_raises_the_first_error():
    done = []
    numpy_kernels.run_shared(done.append, list(range(50)), helpers=3)
    assert sorted(done) == list(range(50))

    def fail_on_7(piece):
        if piece == 7:
            raise ValueError("piece 7")
        done.append(piece)

    done.clear()
    with pytest.raises(ValueError, match="piece 7"):
        numpy_kernels.run_shared(fail_on_7, list(range(20)), helpers=1)
    assert sorted(done) == [i for i in range(20) if i != 7]  # the others still ran


def test_run_shared_does_not_wait_for_a_helper_that_never_starts(monkeypatch):
    class IdlePool:  # a pool whose threads the OS never gets round to running
        def submit(self, fn, *args):
            pass

    monkeypatch.setattr(numpy_kernels, "thread_pool", lambda: IdlePool())
    done = []
    numpy_kernels.run_shared(done.append, list(range(8)), helpers=1)
    assert done == list(range(8))  # this thread did every piece, in order


def test_a_subclass_with_its_own_update_step_is_not_bypassed(threads):
    shares = threads(2)

    class SignAdam(optimizers.Adam):
        def update_step(self, g, variable, lr):
            variable.value -= lr * dlx.get_backend().xp.sign(g)

    v = dlx.Variable(np.zeros((300, 300), np.float32))
    SignAdam(learning_rate=0.5).apply_gradients([(dlx.asarray(np.ones((300, 300), np.float32)), v)])
    np.testing.assert_array_equal(dlx.to_numpy(v.value), np.full((300, 300), -0.5, np.float32))
    assert shares == []  # the fused kernel did not run
