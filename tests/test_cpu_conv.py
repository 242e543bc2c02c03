"""The compiled conv kernels (backends/cpu/convolution.cpp via backends/cpu_conv.py).

Each primitive of ``CompiledConv`` is compared with the NumPy kernel it replaces
(``NumpyConv``) and with the generic Array API code of ``dlx.ops.convolution``;
a spy counts the calls of the compiled functions, so a silent fallback fails.
"""

import itertools
import shutil

import numpy as np
import pytest
from array_api_compat import numpy as xp
from dlx.backends import cpu_conv, cpu_kernels, cpu_library
from dlx.backends.numpy_conv import NumpyConv
from helpers import check_layer_gradients, count_compiled_calls

import dlx
from dlx import layers, ops
from dlx.ops import convolution as generic

pytestmark = pytest.mark.skipif(
    shutil.which(cpu_library.compiler_name()) is None, reason="no C++ compiler on this machine"
)

TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


@pytest.fixture
def calls(monkeypatch):
    """The compiled kernels on (also under ``DLX_KERNELS=generic``); returns a Counter
    ``{function name: calls}`` of the convolution.cpp functions, filled as they run."""
    yield count_compiled_calls(monkeypatch, "convolution")
    monkeypatch.undo()
    cpu_kernels.forget()


def _without_blas(monkeypatch):
    """As where NumPy's BLAS is no OpenBLAS the C++ code can call: the products stay NumPy's,
    around the compiled im2col, col2im and bias + ReLU."""
    parts = cpu_conv._parts(np.float32)
    monkeypatch.setattr(cpu_conv, "_setup", lambda dtype: (parts, False))


@pytest.fixture(params=["fused", "numpy products"])
def products(request, monkeypatch):
    """Both ways of the compiled kernels: whole primitives in C++ (with a connected BLAS),
    and NumPy's products around the compiled helpers (without)."""
    if request.param != "fused":
        _without_blas(monkeypatch)
    return request.param


def _ran(calls, products, channels=2):
    """Whether the compiled forward, input gradient and weight gradient (or, without a BLAS,
    im2col and col2im) ran."""
    if products == "fused":
        names = ("conv_forward", "conv_input_grad", "conv_weight_grad")
    else:
        names = ("im2col_rows" if channels > 1 else "im2col_offsets", "col2im")
    return all(calls.get(name) for name in names)


def _close(actual, expected, dtype, what):
    """rtol 1e-5 (float32) / 1e-12 (float64), and as much absolutely on the scale of the
    values (sums that cancel)."""
    rtol = TOLERANCE[dtype]["rtol"]
    scale = float(np.max(np.abs(expected), initial=1.0))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=str(what))


def _geometry(spatial, kernel_size, strides, dilation, padding, groups=1):
    pads = tuple(
        generic.conv_padding(n, k, s, d, padding)
        for n, k, s, d in zip(spatial, kernel_size, strides, dilation)
    )
    return tuple(strides), tuple(dilation), pads, groups


def _copy(result):
    """Results may be pooled buffers that the next call reuses: keep copies."""
    if isinstance(result, tuple):
        return tuple(_copy(r) for r in result)
    return None if result is None else np.array(result)


def _all_primitives(kernel, x, w, b, g, geometry, relu):
    x_shape, w_shape = x.shape, w.shape
    y, saved = kernel.forward(x, w, b, geometry, relu, True)
    y = _copy(y)
    y_plain = _copy(kernel.forward(x, w, b, geometry, relu, False)[0])
    gx = _copy(kernel.input_grad(g, w, geometry, x_shape))
    gw_saved = _copy(kernel.weight_grad(x, g, geometry, w_shape, saved))
    gw = _copy(kernel.weight_grad(x, g, geometry, w_shape, None))
    both = _copy(kernel.weight_and_bias_grad(x, g, geometry, w_shape, saved))
    gb = _copy(kernel.bias_grad(g))
    return [y, y_plain, gx, gw_saved, gw, both[0], both[1], gb]


def _generic(x, w, b, g, geometry, relu):
    y, _ = generic.conv_forward(xp, x, w, b, geometry, relu)
    gx = generic.conv_input_grad(xp, g, w, geometry, x.shape)
    gw = generic.conv_weight_grad(xp, x, g, geometry, w.shape)
    gb = np.sum(g.reshape(-1, g.shape[-1]), axis=0)
    return [y, y, gx, gw, gw, gw, gb, gb]


def _case(rng, dtype, rank, channels, kernel_size, strides, dilation, padding, bias, filters=5):
    spatial = (7, 6, 5)[:rank]
    geometry = _geometry(spatial, kernel_size, strides, dilation, padding)
    x = rng.standard_normal((3,) + spatial + (channels,)).astype(dtype)
    w = rng.standard_normal(tuple(kernel_size) + (channels, filters)).astype(dtype)
    b = rng.standard_normal(filters).astype(dtype) if bias else None
    out = generic._out_size(x.shape, kernel_size, *geometry[:3])
    g = rng.standard_normal((3,) + out + (filters,)).astype(dtype)
    return x, w, b, g, geometry


CASES = [
    (rank, kernel, s, d, padding, channels)
    for rank, kernel, s, d, padding, channels in itertools.product(
        (1, 2, 3), ((3, 2, 2), (2, 3, 1)), (1, 2), (1, 2), ("valid", "same"), (1, 3)
    )
    if not (s > 1 and d > 1)
]


@pytest.mark.parametrize("rank,kernel,strides,dilation,padding,channels", CASES)
def test_primitives_match_the_numpy_kernel_and_the_generic_code(
    calls, rank, kernel, strides, dilation, padding, channels
):
    rng = np.random.default_rng(rank * 100 + strides * 10 + dilation + channels)
    for dtype, bias, relu in itertools.product((np.float32, np.float64), (True, False), (0, 1)):
        kernel_size = kernel[:rank]
        x, w, b, g, geometry = _case(
            rng,
            dtype,
            rank,
            channels,
            kernel_size,
            (strides,) * rank,
            (dilation,) * rank,
            padding,
            bias,
        )
        compiled = _all_primitives(cpu_conv.CONV, x, w, b, g, geometry, relu)
        numpy = _all_primitives(NumpyConv(), x, w, b, g, geometry, relu)
        reference = _generic(x, w, b, g, geometry, relu)
        for index, (c, n, r) in enumerate(zip(compiled, numpy, reference)):
            assert c.dtype == dtype and c.shape == n.shape == r.shape, index
            _close(c, n, dtype, index)
            _close(c, r, dtype, index)
    assert _ran(calls, "fused"), calls


def test_the_forward_is_bit_identical_to_the_numpy_kernel(calls):
    """Same columns, same product; the input gradient adds in the same order."""
    rng = np.random.default_rng(1)
    for channels, padding in ((1, "valid"), (4, "same")):
        x, w, b, g, geometry = _case(
            rng, np.float32, 2, channels, (3, 3), (1, 1), (1, 1), padding, True, filters=8
        )
        y = _copy(cpu_conv.CONV.forward(x, w, b, geometry, True, False)[0])
        np.testing.assert_array_equal(y, NumpyConv().forward(x, w, b, geometry, True, False)[0])
    gx = _copy(cpu_conv.CONV.input_grad(g, w, geometry, x.shape))
    # the NumPy kernel's products per kernel offset are slices of the one product
    expected = NumpyConv().input_grad(g, w, geometry, x.shape)
    np.testing.assert_allclose(gx, expected, rtol=1e-6, atol=1e-6)
    assert calls["conv_forward"] == 2 and calls["conv_input_grad"]


@pytest.mark.parametrize("block_bytes", [1, 300, 5000])
def test_small_blocks_cover_every_row_and_sample(calls, products, monkeypatch, block_bytes):
    monkeypatch.setattr(cpu_conv.CompiledConv, "block_bytes", block_bytes)
    # partial sums of the weight gradient over blocks of 3 or 7 rows, or none (one product)
    rows = {1: 0, 300: 3, 5000: 7}[block_bytes]
    monkeypatch.setattr(cpu_conv.CompiledConv, "weight_grad_rows", rows)
    rng = np.random.default_rng(3)
    for channels, relu in ((1, True), (3, False), (2, True)):
        x, w, b, g, geometry = _case(
            rng, np.float64, 2, channels, (3, 2), (2, 1), (1, 1), "same", True
        )
        compiled = _all_primitives(cpu_conv.CompiledConv(), x, w, b, g, geometry, relu)
        numpy = _all_primitives(NumpyConv(), x, w, b, g, geometry, relu)
        for c, n in zip(compiled, numpy):
            np.testing.assert_allclose(c, n, rtol=1e-12, atol=1e-12)
    assert _ran(calls, products)
    if products != "fused":
        assert calls["col2im"] > 3 and calls["bias_relu"] > 3


def test_even_kernels_with_same_padding_and_cropping_pads(calls, products):
    """Even kernels pad more after than before; a negative pad (from a transposed
    convolution) crops."""
    rng = np.random.default_rng(4)
    for pads in (((0, 1), (1, 2)), ((2, -1), (0, -2)), ((-1, 0), (1, -1))):
        geometry = ((2, 1), (1, 2), pads, 1)
        x = rng.standard_normal((2, 9, 8, 3))
        w = rng.standard_normal((2, 2, 3, 4))
        out = generic._out_size(x.shape, (2, 2), *geometry[:3])
        g = rng.standard_normal((2,) + out + (4,))
        compiled = _all_primitives(cpu_conv.CONV, x, w, None, g, geometry, False)
        reference = _generic(x, w, None, g, geometry, False)
        for index, (c, r) in enumerate(zip(compiled, reference)):
            np.testing.assert_allclose(c, r, rtol=1e-12, atol=1e-12, err_msg=str(index))
    assert _ran(calls, products)


@pytest.mark.parametrize("channels", [1, 3])
def test_one_by_one_kernels_take_x_as_columns(calls, products, channels):
    """No im2col; with one channel the bias is added after the product, not folded."""
    rng = np.random.default_rng(10)
    for relu in (0, 1):
        x, w, b, g, geometry = _case(
            rng, np.float64, 2, channels, (1, 1), (1, 1), (1, 1), "same", True
        )
        compiled = _all_primitives(cpu_conv.CONV, x, w, b, g, geometry, relu)
        reference = _generic(x, w, b, g, geometry, relu)
        for index, (c, r) in enumerate(zip(compiled, reference)):
            np.testing.assert_allclose(c, r, rtol=1e-12, atol=1e-12, err_msg=str(index))
    assert calls["conv_forward" if products == "fused" else "bias_relu"]
    assert not any(calls.get(name) for name in ("im2col_rows", "col2im", "conv_input_grad"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_grad_is_the_generic_where(calls, dtype):
    rng = np.random.default_rng(11)
    y = rng.standard_normal((3, 5, 4, 6)).astype(dtype)
    y[0, 0, 0] = 0.0  # y == 0 passes nothing
    g = rng.standard_normal((3, 5, 4, 6)).astype(dtype)
    expected = np.where(y > 0, g, 0)
    np.testing.assert_array_equal(_copy(cpu_conv.CONV.relu_grad(g, y)), expected)
    np.testing.assert_array_equal(_copy(NumpyConv().relu_grad(g, y)), expected)
    # where y <= 0 a NaN or inf in g gives 0, as the generic where (not NaN, as g * mask)
    g[y <= 0] = np.nan
    g[1, 1, 1][y[1, 1, 1] > 0] = np.inf
    expected = np.where(y > 0, g, 0)
    np.testing.assert_array_equal(_copy(cpu_conv.CONV.relu_grad(g, y)), expected)
    # non-contiguous operands
    gt, yt = g.transpose(0, 2, 1, 3), y.transpose(0, 2, 1, 3)
    np.testing.assert_array_equal(_copy(cpu_conv.CONV.relu_grad(gt, yt)), np.where(yt > 0, gt, 0))
    assert calls["relu_grad"] == 3


def test_non_contiguous_inputs(calls, products):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 6)).transpose(0, 2, 3, 1)  # channels_first data
    w = rng.standard_normal((6, 3, 3, 5))[::2].transpose(1, 0, 2, 3)  # (3, 3, 3, 5) strided
    b = rng.standard_normal(10)[::2]
    geometry = _geometry((7, 6), (3, 3), (1, 1), (1, 1), "same")
    g = rng.standard_normal((2, 5, 7, 6)).transpose(0, 2, 3, 1)
    assert not (x.flags.c_contiguous or w.flags.c_contiguous or g.flags.c_contiguous)
    compiled = _all_primitives(cpu_conv.CONV, x, w, b, g, geometry, True)
    reference = _generic(x, w, b, g, geometry, True)
    for index, (c, r) in enumerate(zip(compiled, reference)):
        np.testing.assert_allclose(c, r, rtol=1e-12, atol=1e-12, err_msg=str(index))
    assert _ran(calls, products)


def test_groups_fall_back_to_the_numpy_kernel(calls):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 6, 5, 4))
    w = rng.standard_normal((3, 3, 2, 6))
    b = rng.standard_normal(6)
    geometry = ((1, 1), (1, 1), ((1, 1), (1, 1)), 2)
    g = rng.standard_normal((2, 6, 5, 6))
    compiled = _all_primitives(cpu_conv.CONV, x, w, b, g, geometry, True)
    numpy = _all_primitives(NumpyConv(), x, w, b, g, geometry, True)
    for c, n in zip(compiled[:6], numpy[:6]):
        np.testing.assert_array_equal(c, n)
    assert not calls


def test_other_dtypes_and_no_compiler_fall_back(monkeypatch):
    rng = np.random.default_rng(7)
    x, w, b, g, geometry = _case(rng, np.float16, 2, 3, (3, 3), (1, 1), (1, 1), "same", True)
    compiled = _all_primitives(cpu_conv.CONV, x, w, b, g, geometry, True)
    numpy = _all_primitives(NumpyConv(), x, w, b, g, geometry, True)
    for index, (c, n) in enumerate(zip(compiled, numpy)):
        np.testing.assert_array_equal(c, n, err_msg=str(index))
    monkeypatch.setenv("DLX_KERNELS", "numpy")
    cpu_kernels.forget()
    try:
        x, w, b, g, geometry = _case(rng, np.float32, 2, 3, (3, 3), (1, 1), (1, 1), "same", True)
        compiled = _all_primitives(cpu_conv.CONV, x, w, b, g, geometry, True)
        numpy = _all_primitives(NumpyConv(), x, w, b, g, geometry, True)
        for index, (c, n) in enumerate(zip(compiled, numpy)):
            np.testing.assert_array_equal(c, n, err_msg=str(index))
    finally:
        monkeypatch.undo()
        cpu_kernels.forget()


def test_the_table_holds_one_instance_for_conv_and_conv_transpose(calls):
    backend = dlx.set_backend("numpy")
    conv = backend.kernel("conv")
    assert isinstance(conv, cpu_conv.CompiledConv)
    assert backend.kernel("conv_transpose").conv is conv


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_conv_transpose_through_the_compiled_instance(calls, rank):
    rng = np.random.default_rng(8 + rank)
    x = rng.standard_normal((2,) + (4, 3, 3)[:rank] + (3,))
    w = rng.standard_normal((3, 2, 2)[:rank] + (5, 3))
    b = rng.standard_normal(5)
    results = []
    for kernels in (True, False):
        dlx.set_backend("numpy")
        dlx.backends.set_kernels_enabled(kernels)
        tensors = [dlx.Tensor(a, requires_grad=True) for a in (x, w, b)]
        y = ops.conv_transpose(*tensors, strides=2, padding="same")
        r = np.random.default_rng(0).standard_normal(y.shape)
        (y * dlx.asarray(r)).sum().backward()
        results.append([dlx.to_numpy(y)] + [dlx.to_numpy(t.grad) for t in tensors])
    for fast, slow in zip(*results):
        np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)
    assert calls["conv_input_grad"] and calls["conv_forward"]


LAYER_CASES = [
    (layers.Conv1D, dict(filters=3, kernel_size=2, strides=2, padding="same"), (2, 7, 2)),
    (layers.Conv1D, dict(filters=2, kernel_size=3, dilation_rate=2, padding="causal"), (2, 8, 1)),
    (
        layers.Conv2D,
        dict(filters=3, kernel_size=(2, 3), padding="same", activation="relu"),
        (2, 5, 4, 1),
    ),
    (layers.Conv2D, dict(filters=2, kernel_size=3, strides=(2, 1)), (2, 6, 5, 3)),
    (layers.Conv2D, dict(filters=2, kernel_size=1, activation="relu"), (2, 3, 4, 1)),
    (layers.Conv3D, dict(filters=2, kernel_size=2, padding="same"), (1, 3, 4, 3, 2)),
    (
        layers.Conv2DTranspose,
        dict(filters=3, kernel_size=3, strides=2, padding="same"),
        (2, 3, 3, 2),
    ),
    (layers.Conv2DTranspose, dict(filters=2, kernel_size=2, strides=3), (2, 3, 2, 2)),
]


@pytest.mark.parametrize("cls,kwargs,shape", LAYER_CASES)
def test_float64_layer_gradients_through_the_compiled_kernels(calls, cls, kwargs, shape):
    dlx.set_backend("numpy")
    dlx.set_seed(0)
    rng = np.random.default_rng(9)
    layer = cls(dtype="float64", bias_initializer="random_normal", **kwargs)
    check_layer_gradients(layer, rng.standard_normal(shape))
    if kwargs.get("activation") == "relu":
        assert calls.get("relu_grad")  # no max pool follows to fold the ReLU's backward into
    assert calls.get("conv_forward") and calls.get("conv_weight_grad")
    if layer.kernel_size != (1, 1):
        assert calls.get("conv_input_grad")


@pytest.mark.parametrize("filters", [16, 32, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_single_channel_forward_in_one_call(calls, monkeypatch, filters, dtype):
    """C_in = 1 with 16/32/64 filters: im2col and product fused in C++ (blocks of rows,
    odd tails), matching the NumPy kernel with and without bias, ReLU, kept columns."""
    monkeypatch.setattr(cpu_conv.CompiledConv, "single_channel_rows", 37)
    monkeypatch.setattr(cpu_conv.CompiledConv, "stream_bytes", 0)  # non-temporal stores too
    rng = np.random.default_rng(filters)
    for rank, kernel, strides, dilation, padding in (
        (2, (3, 3), (1, 1), (1, 1), "valid"),
        (2, (3, 2), (2, 1), (1, 1), "same"),
        (1, (3,), (1,), (2,), "same"),
        (3, (2, 3, 1), (1, 1, 1), (1, 1, 1), "valid"),
    ):
        for bias, relu in itertools.product((True, False), (0, 1)):
            x, w, b, g, geometry = _case(
                rng, dtype, rank, 1, kernel, strides, dilation, padding, bias, filters
            )
            x[0, ..., 0].flat[3] = np.nan  # passes through the product and the ReLU
            compiled = _all_primitives(cpu_conv.CONV, x, w, b, g, geometry, relu)
            numpy = _all_primitives(NumpyConv(), x, w, b, g, geometry, relu)
            reference = _generic(x, w, b, g, geometry, relu)
            for index in (0, 1, 3, 5, 6):
                c, n, r = compiled[index], numpy[index], reference[index]
                assert c.dtype == dtype and c.shape == n.shape == r.shape, index
                np.testing.assert_array_equal(np.isnan(c), np.isnan(n), err_msg=str(index))
                _close(np.nan_to_num(c), np.nan_to_num(n), dtype, index)
                _close(np.nan_to_num(c), np.nan_to_num(r), dtype, index)
    assert calls["single_channel_forward"] >= 32
    if filters % 32 == 0 and dtype == np.float32 and _has_weight_grad():
        assert calls["single_channel_weight_grad"] >= 16


def _has_weight_grad():
    """Whether this machine's build has the AVX-512 single-channel weight gradient."""
    return cpu_conv._function("single_channel_weight_grad", np.float32) is not None


def test_single_channel_weight_grad_sums_in_chunks(calls):
    """More rows than one chunk of 256, and 12+ kernel offsets (two register blocks)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 20, 21, 1)).astype(np.float32)
    w = rng.standard_normal((4, 4, 1, 64)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    geometry = _geometry((20, 21), (4, 4), (1, 1), (1, 1), "valid")
    y, saved = cpu_conv.CONV.forward(x, w, b, geometry, True, True)
    g = rng.standard_normal(y.shape).astype(np.float32)
    gw, gb = _copy(cpu_conv.CONV.weight_and_bias_grad(x, g, geometry, w.shape, saved))
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    _close(gw, generic.conv_weight_grad(xp, x64, g64, geometry, w.shape), np.float32, "gw")
    _close(gb, g64.reshape(-1, 64).sum(axis=0), np.float32, "gb")
    if _has_weight_grad():
        assert calls["single_channel_weight_grad"] == 1


def test_single_channel_forward_other_filter_counts_use_the_product(calls):
    rng = np.random.default_rng(5)
    x, w, b, g, geometry = _case(rng, np.float32, 2, 1, (3, 3), (1, 1), (1, 1), "same", True, 8)
    y = _copy(cpu_conv.CONV.forward(x, w, b, geometry, True, False)[0])
    np.testing.assert_array_equal(y, NumpyConv().forward(x, w, b, geometry, True, False)[0])
    assert "single_channel_forward" not in calls and calls["conv_forward"]


@pytest.mark.parametrize("block_bytes", [1, 3000, 1 << 20])
def test_input_grad_trims_the_zero_border_per_block(calls, monkeypatch, block_bytes):
    """Trailing all-zero output rows/columns (a max pool over an odd size) are cropped block
    by block: the same products as cropping the whole gradient first."""
    monkeypatch.setattr(cpu_conv.CompiledConv, "block_bytes", block_bytes)
    rng = np.random.default_rng(11)
    x, w, b, g, geometry = _case(rng, np.float32, 2, 3, (3, 2), (1, 1), (1, 1), "same", True)
    g[:, -1] = 0
    g[:, :, -2:] = 0
    kernel = cpu_conv.CompiledConv()
    gx = _copy(kernel.input_grad(g, w, geometry, x.shape))
    monkeypatch.setattr(cpu_conv.CompiledConv, "trim_per_block", False)
    np.testing.assert_array_equal(gx, kernel.input_grad(g, w, geometry, x.shape))
    _close(gx, NumpyConv().input_grad(g, w, geometry, x.shape), np.float32, "gx")
    assert cpu_conv._nonzero_size(g) == (6, 4)
    assert calls["conv_input_grad"]


@pytest.mark.parametrize("channels,filters", [(8, 16), (1, 32), (1, 5)])
def test_batches_split_over_the_thread_pool(calls, products, monkeypatch, channels, filters):
    """Batches large enough for the pool's threads to take the rows (forward) and samples
    (input gradient) in parts, and the single-channel weight gradient in partial sums of
    4096 rows: the forward bit for bit the NumPy kernel's (the BLAS's products of whole rows,
    or the single-channel loops), the gradients within rounding, under any
    ``DLX_NUM_THREADS``."""
    monkeypatch.setattr(cpu_conv.CompiledConv, "register_product", False)
    rng = np.random.default_rng(channels + filters)
    x, w, b, g, geometry = _case(
        rng, np.float32, 2, channels, (3, 3), (1, 1), (1, 1), "valid", True, filters
    )
    x = rng.standard_normal((12, 24, 22, channels)).astype(np.float32)
    g = rng.standard_normal((12, 22, 20, filters)).astype(np.float32)
    g[:, -1] = 0  # a zero border, cropped block by block
    compiled = _all_primitives(cpu_conv.CONV, x, w, b, g, geometry, True)
    numpy = _all_primitives(NumpyConv(), x, w, b, g, geometry, True)
    for index, (c, n) in enumerate(zip(compiled, numpy)):
        if index < 2 and not (channels == 1 and filters == 32):
            np.testing.assert_array_equal(c, n, err_msg=str(index))
        _close(c, n, np.float32, index)
    if channels == 1 and filters == 32:
        assert calls["single_channel_forward"] == 2
        assert calls["single_channel_weight_grad"] == 3 or not _has_weight_grad()
    else:
        assert _ran(calls, products, channels)


@pytest.mark.parametrize("filters", [16, 48, 64, 80, 128])
def test_the_register_blocked_product_matches_the_blas(calls, filters):
    """float32, filters (forward) or Kp * C (input gradient) a multiple of 16: the C++ code's
    own products (passes of 144 terms over rows in register tiles, bias and ReLU in the
    store) against the BLAS's, for kept and scratch columns, 1x1 kernels (x itself), odd
    row counts and a NaN."""
    rng = np.random.default_rng(filters)
    kernel = cpu_conv.CompiledConv()
    for channels, kernel_size, padding in ((32, (3, 3), "same"), (7, (1, 1), "valid")):
        x = rng.standard_normal((5, 9, 7, channels)).astype(np.float32)
        x[1, 2, 3, 4] = np.nan
        w = rng.standard_normal(kernel_size + (channels, filters)).astype(np.float32)
        geometry = _geometry((9, 7), kernel_size, (1, 1), (1, 1), padding)
        g = rng.standard_normal((5, 9, 7, filters)).astype(np.float32)
        for bias, relu, keep in itertools.product((True, False), (0, 1), (True, False)):
            b = rng.standard_normal(filters).astype(np.float32) if bias else None
            results = []
            for own in (True, False):
                kernel.register_product = own
                y = _copy(kernel.forward(x, w, b, geometry, relu, keep)[0])
                results.append((y, _copy(kernel.input_grad(g, w, geometry, x.shape))))
            for index, (mine, blas) in enumerate(zip(*results)):
                np.testing.assert_array_equal(np.isnan(mine), np.isnan(blas))
                what = (index, bias, relu, keep)
                _close(np.nan_to_num(mine), np.nan_to_num(blas), np.float32, what)
    assert calls["conv_forward"] == 32 and calls["conv_input_grad"] == 16
