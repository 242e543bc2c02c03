"""The compiled pool kernel (backends/cpu_pool.py, backends/cpu/pooling.cpp).

It must compute what the NumPy kernel computes, bit for bit (same sums in the same
order, first maximum, NaN, padding, the NumPy kernel's ``g * 0`` cells), and what
the generic op computes; its saved value must work in the NumPy and generic
backward and the NumPy forward's in its own; it falls back where it cannot run.
"""

import itertools
import shutil

import numpy as np
import pytest
from dlx.backends import cpu_kernels, cpu_library
from dlx.backends.cpu_pool import CompiledPool, MaxSaved
from dlx.backends.numpy_conv import NumpyPool
from helpers import check_gradients, check_layer_gradients, count_compiled_calls

import dlx
from dlx import layers, ops
from dlx.ops.convolution import conv_padding
from dlx.ops.pooling import pool_backward

needs_compiler = pytest.mark.skipif(
    shutil.which(cpu_library.compiler_name()) is None, reason="no C++ compiler on this machine"
)


@pytest.fixture
def calls(monkeypatch):
    """The compiled kernels on (also under ``DLX_KERNELS=numpy`` or ``generic``), and a
    Counter of the pooling.cpp functions that ran (``(name, relu)`` for max_pool_backward)."""

    def key(name, args):
        return (name, bool(args[-1] & 1)) if name == "max_pool_backward" else name

    yield count_compiled_calls(monkeypatch, "pooling", key)
    monkeypatch.undo()
    cpu_kernels.forget()


COMPILED, NUMPY = CompiledPool(), NumpyPool()


def _input(rng, shape, dtype, nonnegative=False):
    """Random values, every other channel rounded (many tied maxima), as ``dtype``."""
    x = rng.standard_normal(shape)
    x[..., ::2] = np.round(x[..., ::2])
    return (np.abs(x) if nonnegative else x).astype(dtype)


def _pads(shape, pool_size, strides, padding):
    return tuple(conv_padding(n, k, s, 1, padding) for n, k, s in zip(shape, pool_size, strides))


def _both(method, kernel_args, saved_of, *rest):
    """``method`` of the compiled and the NumPy kernel, each on its own saved value, copied
    (the outputs are pooled buffers)."""
    results = []
    for kernel in (COMPILED, NUMPY):
        out = getattr(kernel, method)(*kernel_args, saved_of[kernel], *rest)
        results.append(None if out is None else np.array(out, copy=True))
    return results


def _forward_both(x, kind, pool_size, strides, pads):
    """``{kernel: saved}`` and the two outputs, which must be equal (NaN included)."""
    saved, ys = {}, []
    for kernel in (COMPILED, NUMPY):
        y, s = kernel.forward(x, kind, pool_size, strides, pads, True)
        y = y.copy()
        if kind == "max":  # the saved y is the output buffer: keep a private copy
            s = MaxSaved(s[0], y, s.hits.copy()) if isinstance(s, MaxSaved) else (s[0], y)
        saved[kernel] = s
        ys.append(y)
    np.testing.assert_array_equal(ys[0], ys[1])
    return saved, ys[0]


GEOMETRIES = [  # pool_size, strides (per axis, cycled over the rank)
    ((2,), (2,)),
    ((3,), (2,)),
    ((2,), (1,)),
    ((3,), (3,)),
    ((2,), (3,)),
    ((1,), (1,)),
    ((3, 2, 2), (1, 2, 3)),
]


@needs_compiler
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("geometry", range(len(GEOMETRIES)))
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_compiled_equals_the_numpy_kernel_bit_for_bit(calls, rank, geometry, padding, dtype):
    pool_size, strides = (
        tuple(itertools.islice(itertools.cycle(v), rank)) for v in GEOMETRIES[geometry]
    )
    rng = np.random.default_rng(rank * 100 + geometry * 10 + (padding == "same"))
    spatial = (7, 6, 5)[:rank]
    pads = _pads(spatial, pool_size, strides, padding)
    channels = (5, 21, 17)[rank - 1]  # whole vectors of channels and the rest, or the rest
    for kind in ("max", "avg"):
        x = _input(rng, (2,) + spatial + (channels,), dtype, nonnegative=kind == "max")
        saved, y = _forward_both(x, kind, pool_size, strides, pads)
        g = rng.standard_normal(y.shape).astype(dtype)
        args = (x.shape, kind, pool_size, strides, pads)
        gx, expected = _both("backward", (g,), saved, *args)
        np.testing.assert_array_equal(gx, expected)
        if kind == "max":
            gx, expected = _both("backward_relu", (g,), saved, *args)
            np.testing.assert_array_equal(gx, expected)
    assert calls["max_pool_forward"] == calls["avg_pool_forward"] == 1
    assert calls[("max_pool_backward", False)] == calls[("max_pool_backward", True)] == 1
    assert calls["avg_pool_backward"] == 1


@needs_compiler
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("strides", [2, 1])
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_inf_and_padding_edge_cases_equal_the_numpy_kernel(calls, dtype, k, strides, padding):
    """NaN windows (NaN out, no gradient), -inf windows next to the padding (the NumPy
    kernel's hit is the padded cell: no gradient), infinite gradients (its ``g * 0``)."""
    rng = np.random.default_rng(21)
    x = _input(rng, (2, 7, 6, 4), np.float64)
    x[0, 0, 0, 0] = np.nan
    x[1, 3, 2:5, 1] = np.nan
    x[:, :, :, 2] = -np.inf
    x[0, 4, 4, 2] = 1.0
    x[:, 5:, 4:, 3] = 0.0  # a ReLU-blocked window
    x = np.concatenate([x] * 5, axis=-1).astype(dtype)  # every lane of a vector, the rest
    pool_size, stride = (k, k), (strides, strides)
    pads = _pads(x.shape[1:-1], pool_size, stride, padding)
    assert k == 2 or padding == "valid" or pads[0][0] == 1  # padded first cells
    # backward_relu takes what a ReLU made (x >= 0; NaN passes a ReLU)
    cases = [("max", "backward", x), ("avg", "backward", x)]
    cases.append(("max", "backward_relu", np.maximum(x, 0)))
    for kind, method, x in cases:
        saved, y = _forward_both(x, kind, pool_size, stride, pads)
        g = rng.standard_normal(y.shape).astype(dtype)
        g[0, 0, 0, :] = np.inf
        g[1, 1, 1, :] = np.nan
        g[1, -1, -1, :] = -np.inf
        gx, expected = _both(method, (g,), saved, x.shape, kind, pool_size, stride, pads)
        np.testing.assert_array_equal(gx, expected)
    assert calls["max_pool_forward"] and calls[("max_pool_backward", True)]


@needs_compiler
def test_first_maximum_wins_ties(calls):
    x = np.zeros((1, 4, 4, 2), np.float32)
    x[0, :2, :2, 0] = 3.0  # four equal maxima: the first, (0, 0), takes the gradient
    x[0, 2, 3, 1] = x[0, 3, 2, 1] = 5.0  # two: (2, 3) comes first
    y, saved = COMPILED.forward(x, "max", (2, 2), (2, 2), ((0, 0), (0, 0)), True)
    assert isinstance(saved, MaxSaved)
    gx = COMPILED.backward(np.ones_like(y), saved, x.shape, "max", (2, 2), (2, 2), ((0, 0),) * 2)
    assert gx[0, 0, 0, 0] == 1 and gx[0, :2, :2, 0].sum() == 1
    assert gx[0, 2, 3, 1] == 1 and gx[0, 3, 2, 1] == 0
    assert calls["max_pool_forward"] == calls[("max_pool_backward", False)] == 1


CASES = [
    (rank, kind, k, s, padding, cf)
    for rank, kind, (k, s), padding, cf in itertools.product(
        (1, 2, 3), ("max", "avg"), ((2, 2), (3, 2), (2, 1)), ("valid", "same"), (False, True)
    )
    if not (cf and rank == 3 and k == 2)
]


def _run(fn, x, kernels):
    dlx.set_backend("numpy")
    dlx.backends.set_kernels_enabled(kernels)
    t = dlx.Tensor(x, requires_grad=True)
    y = fn(t)
    r = np.random.default_rng(7).standard_normal(y.shape).astype(x.dtype)
    (y * dlx.asarray(r)).sum().backward()
    return dlx.to_numpy(y), dlx.to_numpy(t.grad)


@needs_compiler
@pytest.mark.parametrize("rank,kind,k,s,padding,cf", CASES)
def test_op_through_the_compiled_kernel_matches_generic(calls, rank, kind, k, s, padding, cf):
    """channels_first hands the kernel a transposed (non-contiguous) x and g."""
    rng = np.random.default_rng(rank * 10 + k + s)
    spatial = (9, 6, 5)[:rank]
    dtype = np.float32 if (k + s + rank) % 2 else np.float64
    x = _input(rng, ((2, 3) + spatial) if cf else ((2,) + spatial + (3,)), dtype)
    fmt = "channels_first" if cf else "channels_last"

    def fn(t):
        return ops.pool(t, kind, (k,) * rank, (s,) * rank, padding, fmt)

    fast = _run(fn, x, True)
    assert (
        calls[f"{kind}_pool_forward"] == 1
        and calls[f"{kind}_pool_backward"] + calls[("max_pool_backward", False)] == 1
    )
    generic = _run(fn, x, False)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for f, g in zip(fast, generic):
        np.testing.assert_allclose(f, g, rtol=tol, atol=tol)


@needs_compiler
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_saved_values_cross_between_the_compiled_and_numpy_kernels(calls, kind):
    """The compiled forward's saved value works in the NumPy and the generic backward; the
    NumPy forward's goes to the NumPy backward (no compiled call)."""
    rng = np.random.default_rng(31)
    x = _input(rng, (3, 7, 7, 4), np.float64, nonnegative=True)
    for pool_size, strides, padding in (((2, 2), (2, 2), "valid"), ((3, 3), (2, 2), "same")):
        pads = _pads(x.shape[1:-1], pool_size, strides, padding)
        args = (x.shape, kind, pool_size, strides, pads)
        saved, y = _forward_both(x, kind, pool_size, strides, pads)
        g = rng.standard_normal(y.shape)
        reference = np.array(NUMPY.backward(g, saved[NUMPY], *args))
        crossed = {COMPILED: saved[NUMPY], NUMPY: saved[COMPILED]}
        for method in ("backward", "backward_relu") if kind == "max" else ("backward",):
            gx, expected = _both(method, (g,), crossed, *args)
            np.testing.assert_array_equal(gx, expected)
        np.testing.assert_array_equal(pool_backward(np, g, saved[COMPILED], *args), reference)
    assert calls[f"{kind}_pool_forward"] == 2
    # a max backward on the NumPy forward's (x, y) falls back
    assert calls[("max_pool_backward", False)] == calls[("max_pool_backward", True)] == 0
    assert calls["avg_pool_backward"] == (2 if kind == "avg" else 0)


@needs_compiler
def test_non_contiguous_arrays_run_compiled_on_a_copy(calls):
    rng = np.random.default_rng(41)
    base = _input(rng, (2, 5, 8, 9), np.float32)
    x = base.transpose(0, 3, 2, 1)[:, ::2]  # (2, 5, 8, 5), strided
    pads = ((0, 0), (0, 0))
    saved, y = _forward_both(x, "max", (2, 2), (2, 2), pads)
    g = np.asfortranarray(rng.standard_normal(y.shape).astype(np.float32))
    gx, expected = _both("backward", (g,), saved, x.shape, "max", (2, 2), (2, 2), pads)
    np.testing.assert_array_equal(gx, expected)
    assert calls["max_pool_forward"] == calls[("max_pool_backward", False)] == 1


@needs_compiler
def test_what_it_does_not_handle_falls_back(calls):
    rng = np.random.default_rng(51)
    pads = ((0, 0), (0, 0))
    x16 = rng.standard_normal((2, 6, 6, 3)).astype(np.float16)
    y, saved = COMPILED.forward(x16, "max", (2, 2), (2, 2), pads, True)
    expected, _ = NUMPY.forward(x16, "max", (2, 2), (2, 2), pads, True)
    np.testing.assert_array_equal(y, expected)
    assert y.dtype == np.float16 and not isinstance(saved, MaxSaved)
    # a max window of 128 cells has no 7-bit offset: a kept forward falls back
    x = rng.standard_normal((1, 8, 16, 2))
    y, saved = COMPILED.forward(x, "max", (8, 16), (8, 16), pads, True)
    assert not isinstance(saved, MaxSaved) and calls["max_pool_forward"] == 0
    np.testing.assert_array_equal(y, x.max(axis=(1, 2), keepdims=True))
    y, saved = COMPILED.forward(x, "max", (8, 16), (8, 16), pads, False)
    assert saved is None and calls["max_pool_forward"] == 1
    np.testing.assert_array_equal(y, x.max(axis=(1, 2), keepdims=True))


def test_without_the_library_the_numpy_kernel_runs(numpy_kernels_only):
    rng = np.random.default_rng(61)
    x = _input(rng, (2, 7, 5, 3), np.float32)
    pads = _pads(x.shape[1:-1], (3, 2), (2, 1), "same")
    for kind in ("max", "avg"):
        saved, y = _forward_both(x, kind, (3, 2), (2, 1), pads)
        assert not isinstance(saved[COMPILED], MaxSaved)
        g = rng.standard_normal(y.shape).astype(np.float32)
        gx, expected = _both("backward", (g,), saved, x.shape, kind, (3, 2), (2, 1), pads)
        np.testing.assert_array_equal(gx, expected)


@needs_compiler
@pytest.mark.parametrize(
    "layer",
    [
        lambda: layers.MaxPooling2D(2),
        lambda: layers.MaxPooling2D((3, 2), strides=(2, 1), padding="same"),
        lambda: layers.AveragePooling2D(2),
        lambda: layers.AveragePooling2D(3, strides=2, padding="same"),
    ],
)
def test_float64_layer_gradients_through_the_compiled_kernel(calls, layer):
    dlx.set_backend("numpy")
    dlx.set_floatx("float64")
    x = np.random.default_rng(71).standard_normal((2, 7, 6, 3))  # no ties: smooth maxima
    check_layer_gradients(layer(), x)
    assert calls[("max_pool_backward", False)] + calls["avg_pool_backward"] >= 1


@needs_compiler
def test_relu_conv_into_max_pool_gradient_runs_backward_relu(calls):
    dlx.set_backend("numpy")
    rng = np.random.default_rng(81)
    x, w = rng.standard_normal((2, 7, 7, 2)), rng.standard_normal((3, 3, 2, 3))
    b = np.array([0.2, -0.1, 0.0])

    def fn(x, w, b):
        return ops.max_pool(ops.conv(x, w, b, relu=True), (2, 2))

    check_gradients(fn, [x, w, b])
    assert calls[("max_pool_backward", True)] >= 1


@needs_compiler
def test_the_largest_kept_max_window_runs_compiled(calls):
    """126 cells: offsets 0..125 below the 'no hit' mark 127; 127 cells fall back."""
    rng = np.random.default_rng(91)
    for size in (126, 127):
        x = _input(rng, (2, size + 3, 3), np.float32, nonnegative=True)
        saved, y = _forward_both(x, "max", (size,), (2,), ((0, 0),))
        g = rng.standard_normal(y.shape).astype(np.float32)
        for method in ("backward", "backward_relu"):
            gx, expected = _both(method, (g,), saved, x.shape, "max", (size,), (2,), ((0, 0),))
            np.testing.assert_array_equal(gx, expected)
        assert calls["max_pool_forward"] == 1  # the 126-cell one


@needs_compiler
@pytest.mark.parametrize(
    "pool_size,strides,padding", [(2, 2, "valid"), (3, 2, "same"), (3, 1, "same")]
)
def test_batches_split_over_the_thread_pool_equal_the_numpy_kernel(
    calls, pool_size, strides, padding
):
    """Batches large enough for the pool's threads to take the images in parts (tiled,
    padded and overlapping windows, with a zero fill): the same bits as the NumPy kernel,
    under any ``DLX_NUM_THREADS``."""
    rng = np.random.default_rng(5)
    pool, stride = (pool_size,) * 2, (strides,) * 2
    x = _input(rng, (12, 17, 16, 24), np.float32, nonnegative=True)
    pads = _pads(x.shape[1:-1], pool, stride, padding)
    for kind, method in (("max", "backward"), ("max", "backward_relu"), ("avg", "backward")):
        saved, y = _forward_both(x, kind, pool, stride, pads)
        g = rng.standard_normal(y.shape).astype(np.float32)
        gx, expected = _both(method, (g,), saved, x.shape, kind, pool, stride, pads)
        np.testing.assert_array_equal(gx, expected)
    assert calls["max_pool_forward"] == 2 and calls["avg_pool_backward"] == 1
