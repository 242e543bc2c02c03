"""The CUDA sources build for real GPUs and their emulation runs on the CPU.

For every ``.cu`` file in ``backends/cuda/`` (with the template instances the
glue launches, ``backends.cupy_kernels.cuda_sources()``):

* ``nvcc`` compiles it for ``sm_80`` and ``sm_90`` (skipped where nvcc is not on
  the PATH);
* NVRTC, the run-time compiler ``cupy.RawModule`` uses, compiles it with the
  backend's options and finds every name expression (skipped without the
  ``nvidia-cuda-nvrtc`` wheel or a system libnvrtc);
* g++ compiles it against the emulation header and every kernel can be launched.

The emulation itself is checked on ``tests/cuda/launch_check.cu``: index
variables over 2-D grids and blocks, grid-stride loops, atomics, the math
helpers, and the launcher's argument checks. The kernels' numerics are tested
against the generic ops in ``test_cuda_conv.py`` and ``test_cuda_rnn.py``.
"""

from pathlib import Path

import numpy as np
import pytest
from cuda_compilers import have_nvcc, nvcc_cubins, nvrtc, nvrtc_compile
from dlx.backends import cuda_modules
from dlx.backends.cuda_modules import SOURCE_DIR, load_module
from dlx.backends.cupy_kernels import cuda_sources

import dlx

LAUNCH_CHECK = str(Path(__file__).parent / "cuda" / "launch_check.cu")
LAUNCH_CHECK_KERNELS = [
    "axpy<float>",
    "axpy<double>",
    "thread_ids",
    "histogram",
    "sigmoid_lowest<float>",
    "sigmoid_lowest<double>",
]

needs_nvcc = pytest.mark.skipif(not have_nvcc(), reason="nvcc is not on the PATH")
needs_nvrtc = pytest.mark.skipif(
    nvrtc() is None, reason="no NVRTC library (pip install nvidia-cuda-nvrtc)"
)


@pytest.fixture(scope="module")
def launch_check():
    return load_module(LAUNCH_CHECK, LAUNCH_CHECK_KERNELS, emulate=True)


# ---------------------------------------------------------------------------
# the emulation


@pytest.mark.parametrize("dtype, name", [(np.float32, "float"), (np.float64, "double")])
def test_grid_stride_loop_covers_every_element_once(launch_check, dtype, name):
    kernel = launch_check.get_function(f"axpy<{name}>")
    x = np.random.default_rng(0).random(1000).astype(dtype)
    y = np.ones(1000, dtype)
    kernel((3,), (64,), (np.int64(1000), dtype(2.5), x, y))  # 192 threads, 1000 elements
    np.testing.assert_array_equal(y, dtype(2.5) * x + 1)


def test_index_variables_over_2d_grid_and_blocks(launch_check):
    out = np.full(2 * 3 * 4 * 5, -1, np.int32)
    launch_check.get_function("thread_ids")((2, 3), (4, 5), (out,))
    blocks, threads = np.divmod(np.arange(out.size), 20)
    np.testing.assert_array_equal(out, blocks * 1000 + threads)


def test_atomic_add(launch_check):
    values = np.random.default_rng(1).integers(0, 7, 500).astype(np.int32)
    counts = np.zeros(7, np.int32)
    launch_check.get_function("histogram")((3,), (16,), (np.int32(500), values, counts))
    np.testing.assert_array_equal(counts, np.bincount(values, minlength=7))


@pytest.mark.parametrize("dtype, name", [(np.float32, "float"), (np.float64, "double")])
def test_math_helpers(launch_check, dtype, name):
    out = np.zeros(3, dtype)
    launch_check.get_function(f"sigmoid_lowest<{name}>")((1,), (1,), (out,))
    expected = np.tanh(0.5) + np.e + np.log(2) + np.sqrt(2) + 2
    np.testing.assert_allclose(
        out,
        [1 / (1 + np.exp(-0.5)), np.finfo(dtype).min, expected],
        rtol=1e-6 if dtype == np.float32 else 1e-14,
    )


def test_launcher_checks_arguments_against_the_kernel_signature(launch_check):
    kernel = launch_check.get_function("axpy<float>")
    assert kernel.parameters == ["int64", "float32", "*float32", "*float32"]
    x, y = np.zeros(8, np.float32), np.zeros(8, np.float32)
    with pytest.raises(TypeError, match=r"axpy<float>: argument 0 must be a NumPy int64"):
        kernel((1,), (1,), (8, np.float32(1), x, y))  # a Python int has no fixed width
    with pytest.raises(TypeError, match=r"argument 2 must be an array of float32, got float64"):
        kernel((1,), (1,), (np.int64(8), np.float32(1), x.astype(np.float64), y))
    with pytest.raises(ValueError, match=r"argument 3 must be C-contiguous"):
        kernel((1,), (1,), (np.int64(4), np.float32(1), x[:4], y[::2]))
    with pytest.raises(TypeError, match=r"takes 4 arguments"):
        kernel((1,), (1,), (np.int64(8), x, y))
    with pytest.raises(KeyError, match=r"not among the name expressions"):
        launch_check.get_function("axpy<int>")


def test_compile_errors_name_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv("DLX_CUDA_EMULATION_CACHE", str(tmp_path / "cache"))
    broken = tmp_path / "broken.cu"
    broken.write_text('#include "common.cuh"\n__global__ void k(float* x) { x[0] = undefined; }\n')
    with pytest.raises(cuda_modules.CudaBuildError, match=r"broken.cu.*undefined"):
        cuda_modules.EmulatedModule(str(broken), ("k",))


def test_cached_library_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("DLX_CUDA_EMULATION_CACHE", str(tmp_path))
    first = cuda_modules.emulation_library(LAUNCH_CHECK, ("thread_ids",))
    mtime = first.stat().st_mtime_ns
    assert cuda_modules.emulation_library(LAUNCH_CHECK, ("thread_ids",)) == first
    assert first.stat().st_mtime_ns == mtime
    assert cuda_modules.emulation_library(LAUNCH_CHECK, ("histogram",)) != first


# ---------------------------------------------------------------------------
# real GPU compilers, without a GPU


@needs_nvcc
def test_nvcc_compiles_the_launch_check(tmp_path):
    counts = nvcc_cubins(LAUNCH_CHECK, LAUNCH_CHECK_KERNELS, tmp_path)
    assert counts == {"sm_80": len(LAUNCH_CHECK_KERNELS), "sm_90": len(LAUNCH_CHECK_KERNELS)}


@needs_nvrtc
def test_nvrtc_compiles_the_launch_check():
    lowered = nvrtc_compile(LAUNCH_CHECK, LAUNCH_CHECK_KERNELS)
    assert lowered["axpy<float>"].startswith("_Z4axpyIfE")
    assert len(set(lowered.values())) == len(LAUNCH_CHECK_KERNELS)


# ---------------------------------------------------------------------------
# the project's sources

SOURCES = cuda_sources()


def test_every_source_is_launched_by_the_glue():
    on_disk = {p.name for p in SOURCE_DIR.glob("*.cu")}
    assert on_disk == set(SOURCES), "a .cu file no glue module lists (or a listed one missing)"


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_emulation_builds_every_kernel(source):
    module = load_module(source, SOURCES[source], emulate=True)
    for name in SOURCES[source]:
        assert module.get_function(name).parameters, name


@needs_nvcc
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_nvcc_compiles_for_sm80_and_sm90(source, tmp_path):
    counts = nvcc_cubins(source, SOURCES[source], tmp_path)
    assert counts == {"sm_80": len(SOURCES[source]), "sm_90": len(SOURCES[source])}


@needs_nvrtc
@pytest.mark.parametrize("standard", [(), ("--std=c++14",)], ids=["default", "c++14"])
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_nvrtc_compiles_with_the_backend_options(source, standard):
    # C++14 is NVRTC's default in CUDA 11, the oldest CUDA CuPy 13 supports
    lowered = nvrtc_compile(source, SOURCES[source], extra_options=standard)
    assert len(set(lowered.values())) == len(SOURCES[source])


# ---------------------------------------------------------------------------
# the backends


def test_cupy_backend_error_without_cupy_or_gpu():
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(dlx.backends.BackendUnavailableError, match="needs CuPy"):
            dlx.set_backend("cupy")


def test_cuda_emulation_backend_owns_numpy_arrays_while_current():
    emulated = dlx.set_backend("cuda_emulation")
    x = dlx.asarray(np.ones((2, 3), np.float32))
    assert dlx.backends.backend_of(x) is emulated
    assert set(emulated.kernels) >= {
        "conv",
        "conv_transpose",
        "pool",
        "rnn_sequence",
        "lstm_sequence",
        "gru_sequence",
    }
    numpy_backend = dlx.set_backend("numpy")
    assert dlx.backends.backend_of(x) is numpy_backend
    assert (
        "conv" in numpy_backend.kernels
        and numpy_backend.kernels["conv"] is not emulated.kernels["conv"]
    )


def test_cuda_emulation_warmup_compiles_every_source():
    dlx.set_backend("cuda_emulation")
    compiled = dlx.backends.warmup()
    assert compiled == {source: len(names) for source, names in SOURCES.items()}


def test_cuda_emulation_without_a_compiler_says_so(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-dlx")
    monkeypatch.delitem(dlx.backends.registry._INSTANCES, "cuda_emulation", raising=False)
    try:
        with pytest.raises(dlx.backends.BackendUnavailableError, match="no-such-compiler-dlx"):
            dlx.set_backend("cuda_emulation")
    finally:
        dlx.backends.registry._INSTANCES.pop("cuda_emulation", None)
