"""The CUDA conv / conv_transpose / pool kernels compute what the generic ops compute.

``backends/cuda/convolution.cu`` and ``pooling.cu`` are compiled by g++ through
the emulation header and driven by their glue (``backends/cupy_conv.py``) with
``xp = numpy``, exactly as the cupy backend drives them with ``xp = cupy``.

* Each kernel method is compared with the generic Array API primitive of
  ``dlx.ops.convolution`` / ``dlx.ops.pooling`` on random shapes (float32 within
  1e-5 relative, float64 tightly).
* Layers on the ``cuda_emulation`` backend pass float64 finite-difference
  gradient checks, and the kernels are seen to run (not fall back).
* The seed CNN of WORKLOADS.md trains a few steps with the losses it has on numpy.
"""

import functools
import itertools
import math

import numpy as np
import pytest
from cuda_emulation import emulated_backend  # noqa: F401  (a fixture)
from dlx.backends.cuda_modules import load_module
from dlx.backends.cupy_conv import MaxPoolArgmax, conv_kernels
from helpers import check_gradients, check_layer_gradients

import dlx
from dlx import layers, losses
from dlx.ops import convolution as conv_ops
from dlx.ops import pooling as pool_ops

pytestmark = pytest.mark.usefixtures("kernels_on")  # also under DLX_KERNELS=generic

TOLERANCE = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}


@pytest.fixture(scope="module")
def kernels():
    return conv_kernels(np, functools.partial(load_module, emulate=True))


def _close(actual, expected, dtype):
    assert actual is not None, "the kernel fell back (returned None)"
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, **TOLERANCE[dtype])


def _random(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _conv_pads(spatial, kernel_size, strides, dilation, padding):
    if not isinstance(padding, str):
        return padding
    return tuple(
        conv_ops.conv_padding(n, k, s, d, padding)
        for n, k, s, d in zip(spatial, kernel_size, strides, dilation)
    )


# rank, strides, dilation, padding, groups; kernels (3, 2, 2)[:rank] are odd and even
CONV_CASES = [
    (rank, s, d, pad, g)
    for rank, s, d, pad, g in itertools.product(
        (1, 2, 3), (1, 2), (1, 2), ("valid", "same"), (1, 2)
    )
    if not (s > 1 and d > 1)
] + [
    (2, 1, 1, ((2, 0), (1, 3)), 1),  # explicit, asymmetric
    (2, 2, 1, ((-1, 1), (0, -2)), 2),  # negative = cropping
    (1, 3, 1, "causal", 1),
    (2, 1, 1, "same", 4),  # depthwise: one channel per group
    (1, 2, 1, "valid", 4),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rank,stride,dilation,padding,groups", CONV_CASES)
def test_conv_matches_generic(kernels, rank, stride, dilation, padding, groups, dtype):
    rng = np.random.default_rng(rank * 100 + stride * 10 + dilation + groups)
    spatial = (7, 6, 5)[:rank]
    kernel_size = (3, 2, 2)[:rank]
    strides, dilations = (stride,) * rank, (dilation,) * rank
    pads = _conv_pads(spatial, kernel_size, strides, dilations, padding)
    geometry = (strides, dilations, pads, groups)
    x = _random(rng, (2,) + spatial + (4,), dtype)
    w = _random(rng, kernel_size + (4 // groups, 8), dtype)
    b = _random(rng, (8,), dtype)
    conv = kernels["conv"]
    for bias, relu in ((None, False), (b, False), (b, True)):
        y, saved = conv.forward(x, w, bias, geometry, relu, True)
        expected, _ = conv_ops.conv_forward(np, x, w, bias, geometry, relu)
        _close(y, expected, dtype)
    g = _random(rng, y.shape, dtype)
    _close(conv.relu_grad(g, y), np.where(y > 0, g, np.zeros((), dtype)), dtype)
    _close(
        conv.input_grad(g, w, geometry, x.shape),
        conv_ops.conv_input_grad(np, g, w, geometry, x.shape),
        dtype,
    )
    _close(conv.bias_grad(g), np.sum(g.reshape(-1, g.shape[-1]), axis=0), dtype)
    expected = conv_ops.conv_weight_grad(np, x, g, geometry, w.shape)
    _close(conv.weight_grad(x, g, geometry, w.shape, saved), expected, dtype)
    _close(conv.weight_grad(x, g, geometry, w.shape, None), expected, dtype)
    y, saved = conv.forward(x, w, b, geometry, False, False)
    assert saved is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("groups", [1, 3])
def test_pointwise_conv_matches_generic(kernels, groups, dtype):
    """1x1 kernels: ungrouped, x is its own column matrix (no im2col launch)."""
    rng = np.random.default_rng(groups)
    x = _random(rng, (3, 5, 4, 6), dtype)
    w = _random(rng, (1, 1, 6 // groups, 9), dtype)
    b = _random(rng, (9,), dtype)
    geometry = ((1, 1), (1, 1), ((0, 0), (0, 0)), groups)
    conv = kernels["conv"]
    y, saved = conv.forward(x, w, b, geometry, True, True)
    _close(y, conv_ops.conv_forward(np, x, w, b, geometry, True)[0], dtype)
    g = _random(rng, y.shape, dtype)
    _close(
        conv.input_grad(g, w, geometry, x.shape),
        conv_ops.conv_input_grad(np, g, w, geometry, x.shape),
        dtype,
    )
    _close(
        conv.weight_grad(x, g, geometry, w.shape, saved),
        conv_ops.conv_weight_grad(np, x, g, geometry, w.shape),
        dtype,
    )


def test_conv_takes_strided_views(kernels):
    """channels_first layers hand the kernels transposed (non-contiguous) views."""
    rng = np.random.default_rng(5)
    x = np.moveaxis(rng.standard_normal((2, 4, 6, 5)), 1, -1)  # (2, 6, 5, 4), not contiguous
    w = rng.standard_normal((3, 3, 4, 5))
    geometry = ((1, 2), (1, 1), ((1, 1), (1, 1)), 1)
    conv = kernels["conv"]
    y, saved = conv.forward(x, w, None, geometry, False, True)
    _close(y, conv_ops.conv_forward(np, x, w, None, geometry)[0], "float64")
    g = np.moveaxis(rng.standard_normal((2, 5) + y.shape[1:-1]), 1, -1)
    _close(
        conv.input_grad(g, w, geometry, x.shape),
        conv_ops.conv_input_grad(np, g, w, geometry, x.shape),
        "float64",
    )
    _close(
        conv.weight_grad(x, g, geometry, w.shape, saved),
        conv_ops.conv_weight_grad(np, x, g, geometry, w.shape),
        "float64",
    )
    _close(conv.relu_grad(g, y), np.where(y > 0, g, 0.0), "float64")


TRANSPOSE_CASES = [
    (rank, s, d, pad, op)
    for rank, s, d, pad, op in itertools.product(
        (1, 2, 3), (1, 2, 3), (1, 2), ("valid", "same"), (None, 0)
    )
    if not (s > 1 and d > 1) and not (op is not None and rank == 3)
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rank,stride,dilation,padding,output_padding", TRANSPOSE_CASES)
def test_conv_transpose_matches_generic(
    kernels, rank, stride, dilation, padding, output_padding, dtype
):
    rng = np.random.default_rng(rank * 100 + stride * 10 + dilation)
    spatial = (5, 4, 3)[:rank]
    kernel_size = (3, 2, 2)[:rank]
    strides, dilations = (stride,) * rank, (dilation,) * rank
    pads = tuple(
        conv_ops.transpose_padding(k, s, d, padding, output_padding)
        for k, s, d in zip(kernel_size, strides, dilations)
    )
    out_size = tuple(
        conv_ops.transpose_output_size(n, k, s, d, p)
        for n, k, s, d, p in zip(spatial, kernel_size, strides, dilations, pads)
    )
    geometry = (strides, dilations, pads, 1)
    x = _random(rng, (2,) + spatial + (3,), dtype)
    w = _random(rng, kernel_size + (5, 3), dtype)
    out_shape = (2,) + out_size + (5,)
    transpose = kernels["conv_transpose"]
    y = transpose.forward(x, w, geometry, out_shape)
    _close(y, conv_ops.conv_input_grad(np, x, w, geometry, out_shape), dtype)
    g = _random(rng, out_shape, dtype)
    _close(
        transpose.input_grad(g, w, geometry),
        conv_ops.conv_forward(np, g, w, None, geometry)[0],
        dtype,
    )
    _close(
        transpose.weight_grad(x, g, geometry, w.shape),
        conv_ops.conv_weight_grad(np, g, x, geometry, w.shape),
        dtype,
    )


def test_conv_falls_back_on_other_dtypes(kernels):
    x = np.ones((1, 5, 5, 2), np.float32)
    w = np.ones((3, 3, 2, 4), np.float64)
    geometry = ((1, 1), (1, 1), ((0, 0), (0, 0)), 1)
    conv = kernels["conv"]
    assert conv.forward(x, w, None, geometry, False, False) is None  # mixed dtypes
    assert (
        conv.forward(x.astype(np.float16), w.astype(np.float16), None, geometry, False, False)
        is None
    )
    g = np.ones((1, 3, 3, 4), np.float32)
    assert conv.input_grad(g, w, geometry, x.shape) is None
    assert conv.weight_grad(x, g.astype(np.int32), geometry, w.shape, None) is None
    assert (
        kernels["pool"].forward(x.astype(np.int32), "max", (2, 2), (2, 2), ((0, 0),) * 2, True)
        is None
    )


# rank, kind, pool_size, strides, padding
POOL_CASES = list(
    itertools.product((1, 2, 3), ("max", "avg"), (2, 3), (1, 2, 3), ("valid", "same"))
)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rank,kind,pool,stride,padding", POOL_CASES)
def test_pool_matches_generic(kernels, rank, kind, pool, stride, padding, dtype):
    rng = np.random.default_rng(rank + pool * 10 + stride)
    spatial = (7, 6, 5)[:rank]
    pool_size, strides = (pool,) * rank, (stride,) * rank
    pads = tuple(
        conv_ops.conv_padding(n, k, s, 1, padding) for n, k, s in zip(spatial, pool_size, strides)
    )
    x = rng.standard_normal((2,) + spatial + (3,))
    x = np.maximum(np.round(x * 2) / 2, 0).astype(dtype)  # many ties, as after a ReLU
    pool_kernel = kernels["pool"]
    y, saved = pool_kernel.forward(x, kind, pool_size, strides, pads, True)
    expected, generic_saved = pool_ops.pool_forward(np, x, kind, pool_size, strides, pads)
    _close(y, expected, dtype)
    g = _random(rng, y.shape, dtype)
    expected = pool_ops.pool_backward(np, g, generic_saved, x.shape, kind, pool_size, strides, pads)
    _close(pool_kernel.backward(g, saved, x.shape, kind, pool_size, strides, pads), expected, dtype)
    if kind == "avg":  # the generic form, readable by the generic backward too
        again = pool_ops.pool_backward(np, g, saved, x.shape, kind, pool_size, strides, pads)
        _close(again, expected, dtype)
    else:
        assert isinstance(saved, MaxPoolArgmax)
        # the generic saved form is left to the generic backward, which cannot read ours
        assert (
            pool_kernel.backward(g, generic_saved, x.shape, kind, pool_size, strides, pads) is None
        )
        with pytest.raises(TypeError, match="kernel table enabled"):
            pool_ops.pool_backward(np, g, saved, x.shape, kind, pool_size, strides, pads)
        # backward_relu: the gradient of where(y > 0, g, 0), for a ReLU before the pool
        masked = np.where(y > 0, g, np.zeros((), dtype))
        expected = pool_ops.pool_backward(
            np, masked, generic_saved, x.shape, kind, pool_size, strides, pads
        )
        actual = pool_kernel.backward_relu(g, saved, x.shape, kind, pool_size, strides, pads)
        _close(actual, expected, dtype)
    y, saved = pool_kernel.forward(x, kind, pool_size, strides, pads, False)
    assert saved is None
    _close(y, pool_ops.pool_forward(np, x, kind, pool_size, strides, pads)[0], dtype)


def test_max_pool_takes_the_first_maximum_of_valid_cells(kernels):
    """All-equal and all-negative windows: the gradient goes to the first valid cell."""
    x = np.full((1, 5, 5, 2), -1.0)
    x[0, 1:3, 1:3, 1] = -7.0
    pads = ((0, 1), (0, 1))  # "same" for 5 with pool 2, stride 2: the last window is half padding
    y, saved = kernels["pool"].forward(x, "max", (2, 2), (2, 2), pads, True)
    g = np.random.default_rng(0).standard_normal(y.shape)
    gx = kernels["pool"].backward(g, saved, x.shape, "max", (2, 2), (2, 2), pads)
    expected = pool_ops.pool_backward(
        np,
        g,
        pool_ops.pool_forward(np, x, "max", (2, 2), (2, 2), pads)[1],
        x.shape,
        "max",
        (2, 2),
        (2, 2),
        pads,
    )
    np.testing.assert_array_equal(gx, expected)
    assert math.isclose(gx.sum(), g.sum())


# ---------------------------------------------------------------------------
# layers on the cuda_emulation backend


@pytest.fixture
def kernel_calls(emulated_backend, monkeypatch):  # noqa: F811
    """``{(table entry, method)}`` of the CUDA kernel methods that ran (returned non-None)."""
    calls = set()
    for entry in ("conv", "conv_transpose", "pool"):
        implementation = emulated_backend.kernels[entry]
        methods = (
            "forward",
            "input_grad",
            "weight_grad",
            "bias_grad",
            "relu_grad",
            "backward",
            "backward_relu",
        )
        for method in methods:
            original = getattr(implementation, method, None)
            if original is None:
                continue

            def spy(*args, _original=original, _key=(entry, method), **kwargs):
                result = _original(*args, **kwargs)
                if result is not None:
                    calls.add(_key)
                return result

            monkeypatch.setattr(implementation, method, spy)
    return calls


CONV = {("conv", m) for m in ("forward", "input_grad", "weight_grad", "bias_grad")}
TRANSPOSE = {("conv_transpose", m) for m in ("forward", "input_grad", "weight_grad")}
TRANSPOSE |= {("conv", "bias_grad")}
POOL = {("pool", "forward"), ("pool", "backward")}

LAYER_CASES = [
    # layer, input shape, kernel methods expected to run
    (functools.partial(layers.Conv1D, 3, 3, strides=2, padding="same"), (2, 7, 2), CONV),
    (
        functools.partial(layers.Conv1D, 4, 2, dilation_rate=2, padding="causal", groups=2),
        (2, 6, 2),
        CONV,
    ),
    (
        functools.partial(layers.Conv2D, 3, (3, 2), padding="same", activation="relu"),
        (2, 4, 5, 2),
        CONV | {("conv", "relu_grad")},
    ),
    (
        functools.partial(layers.Conv2D, 4, 2, strides=2, groups=2, data_format="channels_first"),
        (2, 2, 5, 4),
        CONV,
    ),
    (
        functools.partial(layers.Conv3D, 2, 2, strides=(1, 2, 1), padding="same"),
        (1, 3, 4, 3, 2),
        CONV,
    ),
    (
        functools.partial(layers.Conv2DTranspose, 2, 3, strides=2, padding="same"),
        (2, 3, 2, 2),
        TRANSPOSE,
    ),
    (
        functools.partial(
            layers.Conv2DTranspose,
            3,
            (2, 3),
            strides=(2, 1),
            output_padding=(1, 0),
            data_format="channels_first",
        ),
        (1, 2, 2, 3),
        TRANSPOSE,
    ),
    (functools.partial(layers.MaxPooling2D, 2, padding="same"), (2, 5, 5, 2), POOL),
    (
        functools.partial(layers.MaxPooling2D, 3, strides=2, data_format="channels_first"),
        (2, 2, 6, 5),
        POOL,
    ),
    (functools.partial(layers.AveragePooling2D, 2, strides=1, padding="same"), (2, 4, 5, 2), POOL),
    (functools.partial(layers.AveragePooling3D, 2, padding="same"), (1, 3, 4, 5, 2), POOL),
]


@pytest.mark.parametrize(
    "make,shape,expected", LAYER_CASES, ids=[c[0].func.__name__ for c in LAYER_CASES]
)
def test_layer_gradients_on_cuda_kernels(kernel_calls, make, shape, expected):
    layer = make(dtype="float64")
    rng = np.random.default_rng(len(shape))
    check_layer_gradients(layer, rng.standard_normal(shape))
    assert expected <= kernel_calls, f"fell back to the generic path: {expected - kernel_calls}"


def _seed_cnn():
    dlx.set_seed(0)
    model = dlx.Sequential(
        [
            layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(10),
        ]
    )
    model.compile(optimizer="adam", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _train_losses(steps=3, batch=8):
    rng = np.random.default_rng(0)
    x = rng.random((batch, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    model = _seed_cnn()
    return [float(model.train_on_batch(x, y)) for _ in range(steps)]


def test_seed_cnn_trains_as_on_numpy(kernel_calls):
    emulated = _train_losses()
    dlx.set_backend("numpy")
    reference = _train_losses()
    assert emulated[-1] < emulated[0]
    np.testing.assert_allclose(emulated, reference, rtol=1e-4)
    _assert_relu_pool_block_ran(kernel_calls)


def _assert_relu_pool_block_ran(calls):
    """Conv(relu) -> max pool ran on the kernels: the ReLU's gradient through the conv's
    own mask then the pool's backward, or folded into the pool's ``backward_relu``."""
    assert CONV | {("pool", "forward")} <= calls
    folded = ("pool", "backward_relu") in calls
    assert folded or {("pool", "backward"), ("conv", "relu_grad")} <= calls


def test_relu_conv_then_max_pool_gradients(kernel_calls):
    """Conv(relu=True) -> max pool, the usual CNN block (the ReLU mask may be folded into
    the pool's backward): float64 gradients of input, kernel and bias."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 6, 5, 2))
    w = rng.standard_normal((3, 3, 2, 3))
    b = rng.standard_normal(3) * 0.5

    def block(x, w, b):
        return dlx.ops.max_pool(dlx.ops.conv(x, w, b, padding="same", relu=True), 2)

    check_gradients(block, [x, w, b])
    _assert_relu_pool_block_ran(kernel_calls)
