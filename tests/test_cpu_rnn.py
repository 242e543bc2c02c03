"""The compiled recurrent step kernels (backends/cpu/recurrent.cpp, backends/cpu_rnn.py).

Each case runs the compiled kernel, the NumPy kernel it replaces and the generic
loop on the same inputs and compares outputs and every gradient; a spy proves
the compiled steps ran. The gate functions are checked against float64 NumPy
over a wide grid, and float64 gradient checks run through the layers.
"""

import itertools
import shutil

import numpy as np
import pytest
from dlx.backends import cpu_kernels, cpu_library, cpu_rnn, numpy_rnn
from helpers import check_gradients, check_layer_gradients

import dlx
from dlx import layers
from dlx.ops.recurrent import GENERIC, SequenceSpec

pytestmark = pytest.mark.skipif(
    shutil.which(cpu_library.compiler_name()) is None, reason="no C++ compiler on this machine"
)

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
CLASSES = {
    "lstm": (cpu_rnn.CompiledLSTMSequence, numpy_rnn.LSTMSequence),
    "gru": (cpu_rnn.CompiledGRUSequence, numpy_rnn.GRUSequence),
    "rnn": (cpu_rnn.CompiledRNNSequence, numpy_rnn.RNNSequence),
}


@pytest.fixture(autouse=True)
def _compiled(monkeypatch):
    """The compiled kernels on (whatever DLX_KERNELS says outside), forgotten afterwards."""
    monkeypatch.delenv("DLX_KERNELS", raising=False)
    cpu_kernels.forget()
    dlx.backends.set_kernels_enabled(True)
    yield
    monkeypatch.undo()
    cpu_kernels.forget()


@pytest.fixture
def calls(monkeypatch):
    """Counts of the compiled functions called, by name."""
    counts = {}
    real = cpu_rnn.function

    def counting(name, dtype):
        f = real(name, dtype)
        if f is None:
            return None

        def call(*args):
            counts[name] = counts.get(name, 0) + 1
            return f(*args)

        return call

    monkeypatch.setattr(cpu_rnn, "function", counting)
    return counts


# -- gate functions -------------------------------------------------------------------------


def _grid():
    tiny = [1e-45, 1e-40, 1e-38, 1.2e-38, 1e-30, 1e-10, 1e-7, 1e-4]
    big = [0.5, 0.624, 0.625, 0.626, 1, 2, 5, 8.99, 9, 9.01, 15, 20, 30, 50, 80, 86.6]
    big += [87.3, 88, 88.72, 88.73, 89, 100, 103, 104, 200, 1e3, 1e4, 1e30, 3e38, np.inf]
    magnitudes = np.array([0.0] + tiny + big)
    dense = np.linspace(-20, 20, 200_001)
    return np.concatenate([magnitudes, -magnitudes, dense, [np.nan]])


def _sigmoid64(x):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("name, exact", [("sigmoid", _sigmoid64), ("tanh", np.tanh)])
def test_float32_gate_functions_are_accurate_to_a_few_ulp(name, exact):
    x = _grid().astype(np.float32)
    y = cpu_rnn.gate_function(name, x)
    assert y is not None and y.dtype == np.float32
    expected = exact(x.astype(np.float64))
    finite = ~np.isnan(x)
    # a few ulp in the normal range; below the smallest normal float an absolute error
    # under it (the sigmoid flushes its far tail, under 2.9e-39, to 0)
    error = np.abs(y[finite].astype(np.float64) - expected[finite])
    ulp = np.spacing(np.abs(expected[finite]).astype(np.float32)).astype(np.float64)
    normal = np.abs(expected[finite]) >= np.finfo(np.float32).tiny
    assert np.max(error[normal] / ulp[normal]) <= 4
    assert np.max(error[~normal], initial=0) < np.finfo(np.float32).tiny
    assert np.isnan(y[~finite]).all()
    ends = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}[name]
    np.testing.assert_array_equal(y[x == -np.inf], ends[0])
    np.testing.assert_array_equal(y[x == np.inf], ends[1])
    np.testing.assert_array_equal(
        y[np.abs(x) == 1e4], np.where(x[np.abs(x) == 1e4] > 0, 1, ends[0])
    )
    if name == "tanh":  # odd, and exact for tiny arguments
        np.testing.assert_array_equal(y[finite], -cpu_rnn.gate_function(name, -x[finite]))
        small = np.abs(x) < 1e-10
        np.testing.assert_array_equal(y[small], x[small])


@pytest.mark.parametrize("name, exact", [("sigmoid", _sigmoid64), ("tanh", np.tanh)])
def test_float64_gate_functions_match_numpy(name, exact):
    x = _grid()
    y = cpu_rnn.gate_function(name, x)
    np.testing.assert_allclose(y, exact(x), rtol=1e-15, atol=1e-300)
    assert np.isnan(y[np.isnan(x)]).all()


# -- compiled vs NumPy kernel vs generic loop -------------------------------------------------


def _case(cell, dtype, go_backwards, masked, dropout, reset_after, return_sequences, seed=0):
    rng = np.random.default_rng(seed)
    T, B, u = 5, 3, 7  # odd sizes: no vector loop ends evenly
    g = GATES[cell]
    dt = np.dtype(dtype)
    x = rng.standard_normal((T, B, g * u)).astype(dt)
    U = (0.5 * rng.standard_normal((u, g * u))).astype(dt)
    rbias = rng.standard_normal(g * u).astype(dt) if cell == "gru" and reset_after else None
    h0 = rng.standard_normal((B, u)).astype(dt)
    c0 = rng.standard_normal((B, u)).astype(dt) if cell == "lstm" else None
    mask = rng.random((B, T)) > 0.35 if masked else None
    if masked:
        mask[0, :] = False  # a sample fully masked
    rm = (rng.random((B, u)) > 0.3).astype(dt) / 0.7 if dropout else None
    spec = SequenceSpec(
        cell,
        go_backwards=go_backwards,
        return_sequences=return_sequences,
        reset_after=reset_after,
        mask=mask,
        recurrent_mask=rm,
    )
    d_seq = rng.standard_normal((T, B, u)).astype(dt) if return_sequences else None
    d_h = rng.standard_normal((B, u)).astype(dt)
    d_c = rng.standard_normal((B, u)).astype(dt) if cell == "lstm" else None
    return spec, (x, U, rbias, h0, c0), (d_seq, d_h, d_c)


def _run(impl, spec, inputs, grads, needs=(True,) * 5):
    """Outputs and gradients (host copies) of one kernel object, or of the generic loop."""
    x, U, rbias, h0, c0 = inputs
    if impl is None:
        import array_api_compat.numpy as xp

        generic = GENERIC[spec.cell]
        outputs, saved = generic.forward(xp, spec, x, U, rbias, h0, c0)
        result = generic.backward(xp, spec, saved, U, *grads, needs)
        return [np.array(o) for o in outputs], result, saved
    outputs, saved = impl.forward(spec, x, U, rbias, h0, c0)
    outputs = [np.array(o, copy=True) for o in outputs]
    result = impl.backward(spec, saved, *grads, needs)
    return outputs, [None if r is None else np.array(r, copy=True) for r in result], saved


def _compare(cell, dtype, *options, needs=(True,) * 5):
    spec, inputs, grads = _case(cell, dtype, *options)
    compiled, numpy_class = CLASSES[cell]
    ours = _run(compiled(), spec, inputs, grads, needs)
    assert isinstance(ours[2], cpu_rnn._Saved), "the compiled path did not run"
    tol = 1e-5 if dtype == "float32" else 1e-12
    for other in (_run(numpy_class(), spec, inputs, grads, needs), _run(None, spec, inputs, grads)):
        for a, b in zip(ours[0] + list(ours[1]), other[0] + list(other[1])):
            if a is None or b is None:
                continue
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    return ours


OPTIONS = [
    # go_backwards, masked, dropout, reset_after, return_sequences
    (False, False, False, True, True),
    (True, False, False, True, False),
    (False, True, False, True, True),
    (True, True, True, True, True),
    (False, False, True, True, False),
]
GRU_OPTIONS = OPTIONS + [
    (False, False, False, False, True),
    (True, True, False, False, True),
    (False, True, True, False, False),
]
CELL_OPTIONS = (
    [("lstm", o) for o in OPTIONS]
    + [("gru", o) for o in GRU_OPTIONS]
    + [("rnn", o) for o in OPTIONS]
)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell, options", CELL_OPTIONS)
def test_compiled_kernel_matches_numpy_kernel_and_generic(cell, options, dtype, calls):
    _compare(cell, dtype, *options)
    if cpu_rnn.blas_gemm(dtype) is not None:  # one call per loop
        assert calls[f"{cell}_forward_loop"] == calls[f"{cell}_backward_loop"] == 1, calls
    else:
        _assert_called_per_step(cell, options, calls)


def _assert_called_per_step(cell, options, calls, steps=5):
    names = {"lstm": ["lstm_forward_step", "lstm_backward_step"], "rnn": ["rnn_forward_step"]}
    names["gru"] = ["gru_backward_step"] + (
        ["gru_forward_step"] if options[3] else ["gru_gates_step", "gru_reset_step"]
    )
    for name in names[cell]:
        assert calls.get(name, 0) == steps, (name, calls)
    assert not any(name.endswith("_loop") for name in calls), calls


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell, options", CELL_OPTIONS)
def test_step_by_step_without_the_blas_address(cell, options, dtype, calls, monkeypatch):
    """Without the BLAS's gemm address the loops run from Python, a call per step."""
    monkeypatch.setattr(cpu_rnn, "blas_gemm", lambda dtype: None)
    _compare(cell, dtype, *options)
    _assert_called_per_step(cell, options, calls)


def test_the_blas_gemm_is_found_where_threadpoolctl_sees_openblas():
    from dlx.backends.blas_threads import blas_controllers

    if not any(c.internal_api == "openblas" for c in blas_controllers()):
        pytest.skip("no OpenBLAS seen by threadpoolctl")
    assert cpu_rnn.blas_gemm(np.float32) and cpu_rnn.blas_gemm(np.float64)
    assert cpu_rnn.blas_gemm(np.float16) is None


@pytest.mark.parametrize("loop", [True, False], ids=["loop", "steps"])
def test_lstm_without_initial_state_gradients_skips_the_last_product(loop, calls, monkeypatch):
    if not loop:
        monkeypatch.setattr(cpu_rnn, "blas_gemm", lambda dtype: None)
    needs = (True, True, False, False, False)
    ours = _compare("lstm", "float32", False, True, False, True, True, needs=needs)
    assert ours[1][3] is None and ours[1][4] is None
    assert calls.get("lstm_backward_step", 0) == 5 or calls["lstm_backward_loop"] == 1


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_results_survive_later_calls(cell):
    """Outputs are views of pooled buffers: a later call must not overwrite them."""
    spec, inputs, grads = _case(cell, "float32", False, False, False, True, True)
    kernel = CLASSES[cell][0]()
    first, saved = kernel.forward(spec, *inputs)
    kept = [np.array(o, copy=True) for o in first]
    other = [a * 2 if a is not None else None for a in inputs]
    kernel.forward(spec, *other)
    for a, b in zip(first, kept):
        np.testing.assert_array_equal(a, b)


def test_nan_passes_through(calls):
    spec, inputs, grads = _case("lstm", "float32", False, False, False, True, True)
    x = inputs[0].copy()
    x[2, 1, 0] = np.nan
    outputs, saved = cpu_rnn.CompiledLSTMSequence().forward(spec, x, *inputs[1:])
    seq = np.array(outputs[0])
    assert np.isnan(seq[2:, 1]).any() and not np.isnan(seq[:2]).any()
    assert not np.isnan(seq[:, [0, 2]]).any()


# -- fallbacks ---------------------------------------------------------------------------------


def test_unsupported_inputs_fall_back_to_the_numpy_kernel(calls):
    spec, (x, U, rbias, h0, c0), grads = _case("lstm", "float32", False, False, False, True, True)
    kernel = cpu_rnn.CompiledLSTMSequence()
    strided = np.asfortranarray(x)  # not C-contiguous
    outputs, saved = kernel.forward(spec, strided, U, rbias, h0, c0)
    assert not isinstance(saved, cpu_rnn._Saved) and not calls
    kernel.backward(spec, saved, grads[0], grads[1], grads[2], (True,) * 5)
    # an activation the kernels do not have: the NumPy kernel says None, the generic loop runs
    relu = SequenceSpec("lstm", activation="relu")
    assert kernel.forward(relu, x, U, None, h0, c0) is None
    # float16: NumPy kernel's answer too
    assert kernel.forward(spec, x.astype(np.float16), U, None, h0, c0) is None
    # a non-C-contiguous recurrent kernel is fine (it only enters the products)
    outputs, saved = kernel.forward(spec, x, np.asfortranarray(U), rbias, h0, c0)
    assert isinstance(saved, cpu_rnn._Saved)


def test_without_the_library_the_numpy_kernel_runs(monkeypatch):
    monkeypatch.setenv("DLX_KERNELS", "numpy")
    cpu_kernels.forget()
    spec, inputs, grads = _case("gru", "float64", True, True, False, True, True)
    ours = _run(cpu_rnn.CompiledGRUSequence(), spec, inputs, grads)
    assert not isinstance(ours[2], cpu_rnn._Saved)
    reference = _run(None, spec, inputs, grads)
    for a, b in zip(ours[0] + list(ours[1]), reference[0] + list(reference[1])):
        if a is not None and b is not None:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_the_backend_table_holds_the_compiled_kernels(calls):
    dlx.set_backend("numpy")
    backend = dlx.get_backend()
    assert isinstance(backend.kernel("lstm_sequence"), cpu_rnn.CompiledLSTMSequence)
    assert isinstance(backend.kernel("gru_sequence"), cpu_rnn.CompiledGRUSequence)
    assert isinstance(backend.kernel("rnn_sequence"), cpu_rnn.CompiledRNNSequence)
    layers.LSTM(3)(np.ones((2, 4, 5), "float32"))
    assert calls.get("lstm_forward_step") == 4 or calls["lstm_forward_loop"] == 1


# -- through the layers ---------------------------------------------------------------------


def _x(shape=(2, 4, 3), seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


MASK = np.array([[True, False, True, True], [True, True, True, False]])


@pytest.mark.parametrize(
    "cls, options, masked",
    [
        (layers.LSTM, {"return_sequences": True}, False),
        (layers.LSTM, {"go_backwards": True, "return_state": True}, True),
        (layers.GRU, {"return_sequences": True, "go_backwards": True}, True),
        (layers.GRU, {"reset_after": False, "return_state": True}, True),
        (layers.SimpleRNN, {"return_sequences": True}, True),
    ],
)
def test_float64_layer_gradients(cls, options, masked, calls):
    dlx.set_backend("numpy")
    dlx.set_floatx("float64")
    layer = cls(3, dtype="float64", bias_initializer="random_normal", **options)
    kwargs = {"mask": dlx.asarray(MASK)} if masked else {}
    check_layer_gradients(layer, _x(), **kwargs)
    assert calls, "the compiled kernels did not run"


def test_float64_initial_state_gradients(calls):
    dlx.set_backend("numpy")
    dlx.set_floatx("float64")
    lstm = layers.LSTM(3, dtype="float64", return_sequences=True)
    lstm(dlx.Tensor(_x()))
    check_gradients(
        lambda x, h, c: lstm(x, initial_state=[h, c]), [_x(), _x((2, 3), 1), _x((2, 3), 2)]
    )
    gru = layers.GRU(3, dtype="float64", return_state=True)
    gru(dlx.Tensor(_x()))
    check_gradients(lambda x, h: gru(x, initial_state=h), [_x(), _x((2, 3), 3)])
    assert calls.get("gru_backward_step") or calls["gru_backward_loop"]
    assert calls.get("lstm_backward_step") or calls["lstm_backward_loop"]


@pytest.mark.parametrize("cls", [layers.LSTM, layers.GRU])
def test_layers_with_recurrent_dropout_match_the_numpy_kernels(cls, monkeypatch):
    """Training with recurrent dropout: same masks (same seed), same results."""
    x = _x((4, 6, 5)).astype("float32")

    def run():
        dlx.set_seed(3)
        layer = cls(6, recurrent_dropout=0.3, dropout=0.2, return_sequences=True)
        t = dlx.Tensor(x, requires_grad=True)
        y = layer(t, training=True)
        (y * y).sum().backward()
        return [np.array(dlx.to_numpy(y.value))] + [np.array(dlx.to_numpy(t.grad))]

    ours = run()
    monkeypatch.setattr(cpu_rnn, "function", lambda name, dtype: None)
    theirs = run()
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_every_case_of_the_option_grid_runs_compiled(calls):
    """go_backwards x mask x dropout for each cell in float32, all through the compiled path."""
    for cell, gb, masked, dropout in itertools.product(GATES, *[(False, True)] * 3):
        spec, inputs, grads = _case(cell, "float32", gb, masked, dropout, True, True, seed=5)
        _, _, saved = _run(CLASSES[cell][0](), spec, inputs, grads)
        assert isinstance(saved, cpu_rnn._Saved)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_kernel_gradient_on_the_worker_thread(cell, monkeypatch):
    """The Python step loops (no BLAS address) sum the recurrent-kernel gradient beside the
    loop (forced here for small layers)."""
    monkeypatch.setattr(cpu_rnn, "USE_WORKER", True)
    monkeypatch.setattr(cpu_rnn, "_loop_worker", lambda *shape: numpy_rnn._worker())
    monkeypatch.setattr(cpu_rnn, "blas_gemm", lambda dtype: None)
    for options in OPTIONS[:3]:
        _compare(cell, "float64", *options)


def test_the_worker_changes_no_result_bits(monkeypatch):
    """Step by step, the kernel gradient is summed in the same chunks, in the same order, with
    or without the worker thread (USE_WORKER)."""
    monkeypatch.setattr(cpu_rnn, "blas_gemm", lambda dtype: None)
    spec, inputs, grads = _case("lstm", "float32", False, False, False, True, True)
    inputs = (np.repeat(inputs[0], 7, axis=0),) + inputs[1:]  # 35 steps: five chunks
    grads = (np.repeat(grads[0], 7, axis=0),) + grads[1:]
    monkeypatch.setattr(cpu_rnn, "USE_WORKER", False)
    inline = _run(cpu_rnn.CompiledLSTMSequence(), spec, inputs, grads)[1][1]
    monkeypatch.setattr(cpu_rnn, "USE_WORKER", True)
    monkeypatch.setattr(cpu_rnn, "_loop_worker", lambda *shape: numpy_rnn._worker())
    beside = _run(cpu_rnn.CompiledLSTMSequence(), spec, inputs, grads)[1][1]
    np.testing.assert_array_equal(inline, beside)


# -- dlx's thread pool ------------------------------------------------------------------------


def _pool_of(threads, monkeypatch):
    """Reload the compiled kernels with a pool of ``threads`` threads (the caller's included)."""
    monkeypatch.setenv("DLX_NUM_THREADS", str(threads))
    cpu_kernels.forget()


def _split(steps, B, u, width):
    """Whether recurrent.cpp's over_rows splits a loop of (rows, u) @ (u, width) products over
    two threads: parts of at least kPartWork = 2^18 multiply-adds and two rows."""
    grain = max(2, (1 << 18) // (steps * u * width))
    return B >= 2 * grain


# (cell, options, steps, batch, units): large enough that the loops are split by rows
POOL_CASES = [
    ("lstm", (False, False, False, True, True), 8, 21, 32),
    ("lstm", (True, True, True, True, True), 8, 17, 32),
    ("gru", (False, True, False, True, True), 8, 21, 32),
    ("gru", (True, False, True, False, False), 8, 21, 32),
    ("rnn", (True, True, True, True, True), 16, 15, 48),
]


def _pool_case(cell, options, T, B, u, dtype="float32"):
    """_case's inputs at another size."""
    spec, inputs, grads = _case(cell, dtype, *options)
    rng = np.random.default_rng(1)
    dt = np.dtype(dtype)
    g = GATES[cell]
    x = rng.standard_normal((T, B, g * u)).astype(dt)
    U = (0.3 * rng.standard_normal((u, g * u))).astype(dt)
    rbias = rng.standard_normal(g * u).astype(dt) if inputs[2] is not None else None
    h0 = rng.standard_normal((B, u)).astype(dt)
    c0 = rng.standard_normal((B, u)).astype(dt) if cell == "lstm" else None
    mask = None
    if spec.mask is not None:
        mask = rng.random((B, T)) > 0.35
        mask[0, :] = False
    rm = (rng.random((B, u)) > 0.3).astype(dt) / 0.7 if spec.recurrent_mask is not None else None
    spec = SequenceSpec(
        cell,
        go_backwards=spec.go_backwards,
        return_sequences=spec.return_sequences,
        reset_after=spec.reset_after,
        mask=mask,
        recurrent_mask=rm,
    )
    d_seq = rng.standard_normal((T, B, u)).astype(dt) if spec.return_sequences else None
    d_h = rng.standard_normal((B, u)).astype(dt)
    d_c = rng.standard_normal((B, u)).astype(dt) if cell == "lstm" else None
    return spec, (x, U, rbias, h0, c0), (d_seq, d_h, d_c)


@pytest.mark.parametrize("cell, options, T, B, u", POOL_CASES)
def test_loops_split_by_rows_give_the_same_bits_on_any_number_of_threads(
    cell, options, T, B, u, calls, monkeypatch
):
    """Each thread runs the whole sequence for its rows; a row's arithmetic does not depend on
    the split, so one thread and two give identical outputs and gradients, and they match the
    NumPy kernel and the generic loop."""
    if cpu_rnn.blas_gemm(np.float32) is None:
        pytest.skip("no BLAS address: the loops run from Python")
    width = GATES[cell] * u
    assert _split(T, B, u, width), "the case is too small to be split"
    spec, inputs, grads = _pool_case(cell, options, T, B, u)
    results = []
    for threads in (1, 2, 1, 2):
        _pool_of(threads, monkeypatch)
        outputs, result, saved = _run(CLASSES[cell][0](), spec, inputs, grads)
        assert isinstance(saved, cpu_rnn._Saved)
        results.append(outputs + [r for r in result if r is not None])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
    assert calls[f"{cell}_forward_loop"] == calls[f"{cell}_backward_loop"] == 4
    reference = _run(CLASSES[cell][1](), spec, inputs, grads)
    for a, b in zip(results[0], reference[0] + [r for r in reference[1] if r is not None]):
        # float32 sums over 8-16 steps of large terms: rounding relative to the largest entry
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())


# (B, T, F, G): 333 rows, split over two threads; 17 rows and a large input-gradient product,
# split into 16 rows and one (cblas_?gemm rounds a one-row product as the others)
PROJECTION_SHAPES = [(37, 9, 24, 96), (1, 17, 16, 512)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("needs", [(True, True, True), (False, True, False), (True, False, True)])
@pytest.mark.parametrize("shape", PROJECTION_SHAPES)
def test_sequence_projection_is_compiled_and_matches_the_numpy_kernel(
    dtype, bias, needs, shape, calls, monkeypatch
):
    """The projection's product and bias, and its three gradients, in one compiled call each
    way: the NumPy kernel's numbers, bit for bit on one thread or two."""
    if cpu_rnn.blas_gemm(dtype) is None:
        pytest.skip("no BLAS address: the NumPy kernel runs")
    rng = np.random.default_rng(0)
    B, T, F, G = shape
    dt = np.dtype(dtype)
    x = rng.standard_normal((B, T, F)).astype(dt)
    kernel = rng.standard_normal((F, G)).astype(dt)
    b = rng.standard_normal(G).astype(dt) if bias else None
    g = rng.standard_normal((T, B, G)).astype(dt)
    results = []
    for threads in (1, 2):
        _pool_of(threads, monkeypatch)
        projection = cpu_rnn.CompiledSequenceProjection()
        y, saved = projection.forward(x, kernel, b)
        grads = projection.backward(saved, g, needs)
        results.append([np.array(y)] + [None if a is None else np.array(a) for a in grads])
    assert calls["rnn_projection_forward"] == calls["rnn_projection_backward"] == 2
    for a, c in zip(*results):
        assert (a is None) == (c is None)
        if a is not None:
            np.testing.assert_array_equal(a, c)
    y, saved = numpy_rnn.SequenceProjection().forward(x, kernel, b)
    reference = [np.array(y)] + list(numpy_rnn.SequenceProjection().backward(saved, g, needs))
    tol = 1e-5 if dtype == "float32" else 1e-12
    for a, c, wanted in zip(results[0], reference, (True,) + needs):
        assert (a is not None) == wanted
        if wanted:
            np.testing.assert_allclose(a, c, rtol=tol, atol=tol)
    assert results[0][1] is None or results[0][1].shape == (B, T, F)


def test_sequence_projection_falls_back_for_what_it_does_not_take(calls, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    kernel = np.asfortranarray(rng.standard_normal((5, 8)).astype(np.float32))
    expected = np.einsum("btf,fg->tbg", x, kernel)
    projection = cpu_rnn.CompiledSequenceProjection()
    y, saved = projection.forward(x, kernel, None)  # a kernel that is not C-contiguous
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    projection.backward(saved, np.ones((3, 4, 8), np.float32), (True, True, True))
    y, saved = projection.forward(x.astype(np.float16), kernel.astype(np.float16), None)
    assert y.dtype == np.float16
    monkeypatch.setenv("DLX_KERNELS", "numpy")  # no library
    cpu_kernels.forget()
    kernel = np.ascontiguousarray(kernel)
    y, saved = projection.forward(x, kernel, None)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    dx, dk, db = projection.backward(saved, np.ones((3, 4, 8), np.float32), (True, True, True))
    np.testing.assert_allclose(db, np.full(8, 12.0))
    assert not calls
