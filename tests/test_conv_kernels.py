"""The NumPy conv/conv_transpose/pool kernels compute what the generic ops compute.

Each case runs forward and backward once with the kernel table on and once with
``set_kernels_enabled(False)`` (the generic Array API code) on random shapes.
"""

import itertools

import numpy as np
import pytest

import dlx
from dlx import ops


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

    def model(x, w1, w2):
        h = ops.max_pool(ops.conv(x, w1, relu=True), (2, 2))
        return ops.max_pool(ops.conv(h, w2, relu=True), (2, 2))

    tol = 1e-4 if dtype == "float32" else 1e-10
    _compare(model, [x, w1, w2], rtol=tol, atol=tol)
