"""The compiled CPU kernels (backends/cpu/*.cpp): building, caching, falling back, Adam."""

import shutil
import warnings

import numpy as np
import pytest
from dlx.backends import cpu_kernels, cpu_library, numpy_kernels

import dlx
from dlx import optimizers

needs_compiler = pytest.mark.skipif(
    shutil.which(cpu_library.compiler_name()) is None, reason="no C++ compiler on this machine"
)


@pytest.fixture
def fresh_library(monkeypatch):
    """Forget the loaded library before and after the test."""
    cpu_kernels.forget()
    yield monkeypatch
    monkeypatch.undo()
    cpu_kernels.forget()


@needs_compiler
def test_the_library_compiles_and_exports_both_dtypes(fresh_library):
    fresh_library.delenv("DLX_KERNELS", raising=False)
    status = cpu_library.status()
    assert set(status) >= {"optimizers"}
    assert all(text.startswith("compiled: ") for text in status.values()), status
    for suffix in ("f32", "f64"):
        assert hasattr(cpu_library.library("optimizers"), f"dlx_adam_{suffix}")


@needs_compiler
def test_a_built_library_is_taken_from_the_cache_without_a_compiler(fresh_library, tmp_path):
    from dlx.backends import host_compiler

    fresh_library.setenv("DLX_CPU_KERNEL_CACHE", str(tmp_path))
    first = cpu_library.build("optimizers")
    assert first.parent == tmp_path and first.exists()
    fresh_library.setattr(host_compiler.shutil, "which", lambda name: None)
    assert cpu_library.build("optimizers") == first
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no half-written leftovers


def test_without_a_compiler_the_numpy_kernels_run_and_a_warning_says_why(fresh_library, tmp_path):
    fresh_library.setenv("DLX_CPU_KERNEL_CACHE", str(tmp_path))
    fresh_library.setenv("CXX", str(tmp_path / "no-such-compiler"))
    fresh_library.delenv("DLX_KERNELS", raising=False)
    with pytest.warns(RuntimeWarning, match="no-such-compiler.*not found") as caught:
        assert cpu_library.library("optimizers") is None
        cpu_library.status()  # every other source fails too, without another warning
    assert len(caught) == 1
    assert cpu_library.status()["optimizers"].startswith("unavailable: ")
    weights, expected = _run_both(np.float32, (50, 7))
    np.testing.assert_array_equal(weights, expected)


def test_dlx_kernels_numpy_turns_the_compiled_kernels_off(fresh_library):
    fresh_library.setenv("DLX_KERNELS", "numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cpu_library.library("optimizers") is None
    assert set(cpu_library.status().values()) == {"off (DLX_KERNELS=numpy)"}


def _adam_arrays(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    w, g = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    m = (0.1 * rng.standard_normal(shape)).astype(dtype)
    v = (0.01 * rng.random(shape)).astype(dtype)
    return w, g, m, v


def _run_both(dtype, shape, layout=lambda a: a):
    """Three Adam steps through the table's kernel and through the NumPy one."""
    results = []
    for kernel in (cpu_kernels.adam_update_many, numpy_kernels.adam_update_many):
        w, g, m, v = (layout(a) for a in _adam_arrays(dtype, shape, seed=2))
        for _ in range(3):
            kernel([w], [g], [m], [v], 0.003, 0.9, 0.999, 1e-7)
        results.append(np.concatenate([w.ravel(), m.ravel(), v.ravel()]))
    return results


@needs_compiler
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (17,), (784, 512), (3, 3, 5, 64)])
def test_compiled_adam_rounds_exactly_as_the_numpy_kernel(fresh_library, dtype, shape):
    fresh_library.delenv("DLX_KERNELS", raising=False)
    assert cpu_library.library("optimizers") is not None
    compiled, numpy_result = _run_both(dtype, shape)
    np.testing.assert_array_equal(compiled, numpy_result)


@needs_compiler
def test_compiled_adam_leaves_non_contiguous_weights_to_numpy(fresh_library):
    fresh_library.delenv("DLX_KERNELS", raising=False)
    compiled, numpy_result = _run_both(np.float32, (40, 30), layout=lambda a: np.asfortranarray(a))
    np.testing.assert_array_equal(compiled, numpy_result)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adam_through_the_table_matches_the_generic_rule(cpu_kernel_kind, dtype):
    """Adam.apply_gradients with the table's kernel against the generic Array API update."""
    dlx.set_floatx(dtype)
    finals = []
    for kernels in (True, False):
        dlx.set_backend("numpy")
        dlx.backends.set_kernels_enabled(kernels)
        rng = np.random.default_rng(5)
        shapes = [(30, 20), (20,), (5, 5, 3)]
        variables = [dlx.Variable(rng.standard_normal(s).astype(dtype)) for s in shapes]
        optimizer = optimizers.Adam(learning_rate=0.01)
        for _ in range(4):
            grads = [dlx.asarray(rng.standard_normal(s).astype(dtype)) for s in shapes]
            optimizer.apply_gradients(zip(grads, variables))
        finals.append([dlx.to_numpy(v.value) for v in variables])
    for a, b in zip(*finals):
        np.testing.assert_allclose(a, b, rtol=1e-6 if dtype == "float32" else 1e-12, atol=1e-7)


@needs_compiler
def test_warmup_on_the_numpy_backend_builds_every_source(fresh_library):
    fresh_library.delenv("DLX_KERNELS", raising=False)
    dlx.set_backend("numpy")
    built = dlx.backends.warmup()
    assert sorted(built) == cpu_library.sources()
    assert all(text.startswith("compiled: ") for text in built.values()), built


@needs_compiler
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("SGD", {"momentum": 0.9}),
        ("SGD", {"momentum": 0.8, "nesterov": True}),
        ("RMSprop", {}),
        ("RMSprop", {"momentum": 0.5, "rho": 0.8}),
    ],
)
def test_compiled_sgd_and_rmsprop_round_exactly_as_the_generic_rule(
    fresh_library, monkeypatch, dtype, name, kwargs
):
    fresh_library.delenv("DLX_KERNELS", raising=False)
    calls = []
    lookup = cpu_kernels.compiled

    def spy(source, kernel_name, *args):
        found = lookup(source, kernel_name, *args)
        calls.append(kernel_name)
        return found

    monkeypatch.setattr(cpu_kernels, "compiled", spy)
    finals = []
    for kernels in (True, False):
        dlx.set_backend("numpy")
        dlx.backends.set_kernels_enabled(kernels)
        rng = np.random.default_rng(6)
        shapes = [(64, 33), (33,)]
        variables = [dlx.Variable(rng.standard_normal(s).astype(dtype)) for s in shapes]
        optimizer = getattr(optimizers, name)(learning_rate=0.05, **kwargs)
        for _ in range(4):
            grads = [dlx.asarray(rng.standard_normal(s).astype(dtype)) for s in shapes]
            optimizer.apply_gradients(zip(grads, variables))
        finals.append([dlx.to_numpy(v.value) for v in variables])
    assert calls.count("sgd_momentum" if name == "SGD" else "rmsprop") == 8
    for a, b in zip(*finals):
        np.testing.assert_array_equal(a, b)


@needs_compiler
def test_compiled_adam_many_follows_replaced_arrays_and_odd_gradients(fresh_library):
    """One C call for all variables (the pointer table of the weights and slots is cached);
    a replaced weight array gets a new table, an odd gradient the per-variable path."""
    fresh_library.delenv("DLX_KERNELS", raising=False)
    # no tables of earlier tests: more than 16 would clear them all during this one
    fresh_library.setattr(cpu_kernels, "_TABLES", {})
    rng = np.random.default_rng(8)
    shapes = [(30, 20), (20,), (4, 5, 6)]

    def fresh():
        return [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(3)]

    compiled_state = fresh()
    compiled_state[2] = [np.abs(v) for v in compiled_state[2]]  # second moments are >= 0
    numpy_state = [[a.copy() for a in group] for group in compiled_state]
    for step in range(4):
        grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        if step == 2:
            grads[0] = np.asfortranarray(grads[0])  # not C-contiguous
        if step == 3:  # a weight replaced by a new array of the same values
            for state in (compiled_state, numpy_state):
                state[0][2] = state[0][2].copy()
        cpu_kernels.adam_update_many(
            *compiled_state[:1], grads, *compiled_state[1:], 0.01, 0.9, 0.999, 1e-7
        )
        numpy_kernels.adam_update_many(
            *numpy_state[:1], grads, *numpy_state[1:], 0.01, 0.9, 0.999, 1e-7
        )
    for a, b in zip(sum(compiled_state, []), sum(numpy_state, [])):
        np.testing.assert_array_equal(a, b)
    assert len(cpu_kernels._TABLES) >= 2  # the replaced weight made a second table


@needs_compiler
def test_every_weight_of_an_lstm_model_takes_the_compiled_adam_step(fresh_library, monkeypatch):
    """No weight is left to the nine-pass NumPy update for its layout: the orthogonal
    recurrent kernels come out row-major."""
    from dlx import layers, losses

    fresh_library.delenv("DLX_KERNELS", raising=False)
    left = []
    numpy_path = numpy_kernels.adam_update_many
    monkeypatch.setattr(
        numpy_kernels,
        "adam_update_many",
        lambda ws, *rest: left.extend(w.shape for w in ws) or numpy_path(ws, *rest),
    )
    dlx.set_backend("numpy")
    dlx.set_seed(0)
    model = dlx.Sequential(
        [layers.LSTM(8, return_sequences=True, input_shape=(5, 3)), layers.GRU(4), layers.Dense(2)]
    )
    model.compile(optimizer="adam", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.random((6, 5, 3), dtype=np.float32), rng.integers(0, 2, 6))
    assert left == []


@needs_compiler
def test_a_compiler_that_refuses_the_tuning_option_builds_without_it(fresh_library, tmp_path):
    fresh_library.delenv("DLX_KERNELS", raising=False)  # also under DLX_KERNELS=numpy
    fresh_library.setenv("DLX_CPU_KERNEL_CACHE", str(tmp_path))
    fresh_library.setattr(cpu_library, "TUNING", ("-fno-such-option-anywhere",))
    built = cpu_library.build("optimizers")
    assert built.exists()
    assert cpu_library.library("optimizers") is not None  # loads, and is the portable build


@needs_compiler
def test_a_function_this_build_lacks_is_none(fresh_library):
    fresh_library.delenv("DLX_KERNELS", raising=False)
    assert cpu_library.function("optimizers", "dlx_no_such_kernel_f32") is None
    assert cpu_kernels.compiled("optimizers", "no_such_kernel", np.float32) is None
