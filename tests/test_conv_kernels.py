"""The NumPy conv/conv_transpose/pool kernels compute what the generic ops compute.

Each case runs forward and backward once with the kernel table on and once with
``set_kernels_enabled(False)`` (the generic Array API code) on random shapes.
"""

import itertools

import numpy as np
import pytest

import dlx
from dlx import layers, ops


def _run(fn, arrays, kernels):
    dlx.set_backend("numpy")
    dlx.backends.set_kernels_enabled(kernels)
    tensors = [dlx.Tensor(a, requires_grad=True) for a in arrays]
    y = fn(*tensors)
    r = np.random.default_rng(7).standard_normal(y.shape)
    (y * dlx.asarray(r, dtype=y.dtype)).sum().backward()
    return [dlx.to_numpy(y)] + [dlx.to_numpy(t.grad) for t in tensors]


def _compare(fn, arrays, rtol=1e-10, atol=1e-12):
    fast = _run(fn, arrays, True)
    generic = _run(fn, arrays, False)
    for f, g in zip(fast, generic):
        assert f.shape == g.shape
        np.testing.assert_allclose(f, g, rtol=rtol, atol=atol)


@pytest.mark.usefixtures("kernels_on")
def test_numpy_kernels_are_registered():
    backend = dlx.set_backend("numpy")
    for name in ("conv", "conv_transpose", "pool"):
        assert backend.kernel(name) is not None


CASES = [
    (rank, s, d, pad, groups, cf)
    for rank, s, d, pad, groups, cf in itertools.product(
        (1, 2, 3), (1, 2), (1, 2), ("valid", "same"), (1, 2), (False, True)
    )
    if not (s > 1 and d > 1)
]


def _fmt(cf):
    return "channels_first" if cf else "channels_last"


@pytest.mark.parametrize("rank,strides,dilation,padding,groups,cf", CASES)
def test_conv_kernel_matches_generic(rank, strides, dilation, padding, groups, cf):
    rng = np.random.default_rng(rank * 100 + strides * 10 + dilation)
    spatial = (7, 6, 5)[:rank]
    channels = 4
    x = rng.standard_normal((2, channels) + spatial if cf else (2,) + spatial + (channels,))
    w = rng.standard_normal((3, 2, 2)[:rank] + (channels // groups, 6))
    b = rng.standard_normal(6)
    for relu in (False, True):
        _compare(
            lambda x, w, b, relu=relu: ops.conv(
                x,
                w,
                b,
                strides=strides,
                padding=padding,
                dilation_rate=dilation,
                groups=groups,
                data_format=_fmt(cf),
                relu=relu,
            ),
            [x, w, b],
        )


@pytest.mark.parametrize(
    "rank,strides,dilation,padding,cf",
    [(rank, s, d, pad, cf) for rank, s, d, pad, g, cf in CASES if g == 1],
)
def test_conv_transpose_kernel_matches_generic(rank, strides, dilation, padding, cf):
    rng = np.random.default_rng(rank * 100 + strides * 10 + dilation + 1)
    spatial = (5, 4, 3)[:rank]
    x = rng.standard_normal((2, 3) + spatial if cf else (2,) + spatial + (3,))
    w = rng.standard_normal((3, 2, 2)[:rank] + (5, 3))
    b = rng.standard_normal(5)
    _compare(
        lambda x, w, b: ops.conv_transpose(
            x, w, b, strides=strides, padding=padding, dilation_rate=dilation, data_format=_fmt(cf)
        ),
        [x, w, b],
    )


@pytest.mark.parametrize(
    "rank,kind,pool_size,strides,padding,cf",
    [
        (rank, kind, p, s, pad, cf)
        for rank, kind, p, s, pad, cf in itertools.product(
            (1, 2, 3), ("max", "avg"), (2, 3), (1, 2, 3), ("valid", "same"), (False, True)
        )
        if not (rank == 3 and cf)
    ],
)
def test_pool_kernel_matches_generic(rank, kind, pool_size, strides, padding, cf):
    rng = np.random.default_rng(rank + pool_size * 10 + strides)
    spatial = (7, 6, 5)[:rank]
    x = rng.standard_normal((2, 3) + spatial if cf else (2,) + spatial + (3,))
    x = np.maximum(np.round(x * 2) / 2, 0)  # many ties (as after a ReLU)
    _compare(
        lambda x: ops.pool(x, kind, (pool_size,) * rank, (strides,) * rank, padding, _fmt(cf)),
        [x],
        rtol=1e-12,
        atol=0,
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cnn_shapes_kernel_matches_generic(dtype):
    """The shapes of the cnn_train workload, float32 and float64, first-layer single channel."""
    rng = np.random.default_rng(3)
    x = rng.random((4, 12, 12, 1)).astype(dtype)
    w1 = (rng.standard_normal((3, 3, 1, 8)) * 0.3).astype(dtype)
    w2 = (rng.standard_normal((3, 3, 8, 6)) * 0.3).astype(dtype)
    b1 = (rng.standard_normal(8) * 0.1).astype(dtype)
    b2 = (rng.standard_normal(6) * 0.1).astype(dtype)

    def model(x, w1, b1, w2, b2):
        h = ops.max_pool(ops.conv(x, w1, b1, relu=True), (2, 2))
        return ops.max_pool(ops.conv(h, w2, b2, relu=True), (2, 2))

    tol = 1e-4 if dtype == "float32" else 1e-10
    _compare(model, [x, w1, b1, w2, b2], rtol=tol, atol=tol)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("strides", [1, 2])
def test_single_channel_conv_with_bias_matches_generic(relu, strides):
    """C_in = 1 takes its own im2col path, with the bias folded into the product."""
    rng = np.random.default_rng(4)
    x, w, b = (
        rng.standard_normal((3, 9, 7, 1)),
        rng.standard_normal((3, 2, 1, 5)),
        rng.standard_normal(5),
    )
    _compare(lambda x, w, b: ops.conv(x, w, b, strides=strides, relu=relu), [x, w, b])


def _conv_pool_grads(x, w, b, kernels, fold, extra_consumer=False, tie_value=None):
    """Gradients of ``sum(r * max_pool(relu(conv(x))))`` (plus ``sum(conv output)`` when
    ``extra_consumer``), with the ReLU fused into the conv (``fold``) or a separate op."""
    dlx.set_backend("numpy")
    dlx.backends.set_kernels_enabled(kernels)
    tx, tw, tb = (dlx.Tensor(a, requires_grad=True) for a in (x, w, b))
    if fold:
        h = ops.conv(tx, tw, tb, relu=True)
    else:
        h = ops.relu(ops.conv(tx, tw, tb))
    y = ops.max_pool(h, (2, 2))
    r = np.random.default_rng(5).standard_normal(y.shape)
    loss = (y * dlx.asarray(r)).sum()
    if extra_consumer:
        loss = loss + (h * dlx.asarray(np.linspace(-1, 1, h.shape[-1]))).sum()
    loss.backward()
    return [dlx.to_numpy(t.grad) for t in (tx, tw, tb)]


@pytest.mark.parametrize("kernels", [True, False])
@pytest.mark.parametrize("extra_consumer", [False, True])
def test_relu_folded_into_max_pool_backward_matches_separate_relu(kernels, extra_consumer):
    rng = np.random.default_rng(11)
    # a constant patch makes equal positive conv outputs: ties the pool breaks by first maximum
    x = rng.standard_normal((3, 9, 8, 2))
    x[:, 2:7, 1:6] = 0.5
    w = rng.standard_normal((3, 3, 2, 4))
    b = np.array([0.3, -0.2, 0.1, 0.0])
    folded = _conv_pool_grads(x, w, b, kernels, True, extra_consumer)
    separate = _conv_pool_grads(x, w, b, kernels, False, extra_consumer)
    for f, s in zip(folded, separate):
        np.testing.assert_allclose(f, s, rtol=1e-12, atol=1e-12)


def test_relu_fold_skips_the_conv_mask_only_for_the_pool_gradient(monkeypatch):
    """The conv's ReLU mask runs when another consumer adds to its output's gradient."""
    dlx.set_backend("numpy")
    conv_class = type(dlx.get_backend().kernels["conv"])  # compiled or NumPy, whichever runs
    calls = []
    real = conv_class.relu_grad
    monkeypatch.setattr(
        conv_class, "relu_grad", lambda self, g, y: calls.append(1) or real(self, g, y)
    )
    rng = np.random.default_rng(12)
    x, w, b = rng.standard_normal((2, 6, 6, 1)), rng.standard_normal((3, 3, 1, 3)), np.zeros(3)
    _conv_pool_grads(x, w, b, True, True)
    assert calls == []
    _conv_pool_grads(x, w, b, True, True, extra_consumer=True)
    assert calls == [1]


def test_retained_grad_of_a_relu_conv_output_is_the_unmasked_gradient():
    dlx.set_backend("numpy")
    rng = np.random.default_rng(13)
    x = dlx.Tensor(rng.standard_normal((2, 6, 6, 2)), requires_grad=True)
    w = dlx.Tensor(rng.standard_normal((3, 3, 2, 3)))
    h = ops.conv(x, w, relu=True).retain_grad()
    ops.max_pool(h, (2, 2)).sum().backward()
    # every window's first maximum gets 1, zero windows (ReLU-blocked) included
    h_value = dlx.to_numpy(h)
    expected = np.zeros_like(h_value)
    for i in range(2):
        for j in range(2):
            window = h_value[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].reshape(2, 4, 3)
            first = np.argmax(window, axis=1)
            for n in range(2):
                for c in range(3):
                    a, bb = divmod(first[n, c], 2)
                    expected[n, 2 * i + a, 2 * j + bb, c] = 1
    np.testing.assert_array_equal(dlx.to_numpy(h.grad), expected)


@pytest.mark.parametrize("relu", [False, True])
def test_max_pool_kernel_with_a_nan_window_and_ties_matches_generic(relu):
    """A NaN window has no maximum to hit; it must not hide a tie in another window."""
    x = np.abs(np.random.default_rng(8).standard_normal((2, 4, 4, 3)))
    x[0, 0, 0, 0] = np.nan  # window (0, 0) of channel 0: no hit
    x[1, 2:4, 2:4, 1] = 2.5  # a window of four equal maxima
    if relu:
        w = np.eye(3).reshape(1, 1, 3, 3)

        def fn(x, w):
            return ops.max_pool(ops.conv(x, w, relu=True), (2, 2))

        _compare(fn, [x, w], rtol=1e-12, atol=0)
    else:
        _compare(lambda x: ops.max_pool(x, (2, 2)), [x], rtol=1e-12, atol=0)


def test_kept_outputs_and_gradients_are_not_reused_by_later_calls():
    """The kernels recycle their large arrays only once nothing refers to them."""
    dlx.set_backend("numpy")
    dlx.backends.set_kernels_enabled(True)
    rng = np.random.default_rng(9)
    w = rng.standard_normal((3, 3, 2, 16)).astype(np.float32)
    kept, copies = [], []
    for _ in range(3):
        x = dlx.Tensor(rng.standard_normal((8, 20, 20, 2)).astype(np.float32), requires_grad=True)
        h = ops.conv(x, dlx.asarray(w), relu=True)
        y = ops.max_pool(h, (2, 2))
        y.sum().backward()
        kept.append((dlx.to_numpy(h), dlx.to_numpy(y), x.grad))
        copies.append(tuple(np.array(a, copy=True) for a in kept[-1]))
    for arrays, saved in zip(kept, copies):
        for a, b in zip(arrays, saved):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("use_bias", [True, False])
def test_one_by_one_conv_on_single_channel_input_matches_generic(cpu_kernel_kind, use_bias):
    """Columns of a 1x1 kernel are a view of x; with one input channel the NumPy kernel also
    folds the bias into the product, which needs a row of ones the view does not have."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 5, 4, 1))
    results = []
    for kernels in (True, False):
        dlx.set_backend("numpy")
        dlx.set_floatx("float64")
        dlx.backends.set_kernels_enabled(kernels)
        dlx.set_seed(3)
        layer = layers.Conv2D(3, 1, use_bias=use_bias, bias_initializer="random_normal")
        tx = dlx.Tensor(x, requires_grad=True)
        y = layer(tx)
        (y * y).sum().backward()
        results.append(
            [dlx.to_numpy(y), dlx.to_numpy(tx.grad)]
            + [dlx.to_numpy(w.grad) for w in layer.trainable_weights]
        )
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
