"""Shared fixtures: every test that takes ``backend`` runs once per backend.

Backends: ``numpy`` and ``array_api_strict`` by default; with ``DLX_BACKEND=cupy``
(on a GPU machine) the suite runs on ``cupy`` instead; ``DLX_TEST_BACKENDS``
(comma-separated) overrides both.
"""

import os

import pytest

import dlx


def _test_backends():
    explicit = os.environ.get("DLX_TEST_BACKENDS")
    if explicit:
        return [b.strip() for b in explicit.split(",") if b.strip()]
    if os.environ.get("DLX_BACKEND", "numpy") == "cupy":
        return ["cupy"]
    return ["numpy", "array_api_strict"]


TEST_BACKENDS = _test_backends()


@pytest.fixture(params=TEST_BACKENDS)
def backend(request):
    """The backend under test, made current and seeded."""
    dlx.set_backend(request.param)
    dlx.set_seed(0)
    return dlx.get_backend()


@pytest.fixture
def kernels_on(monkeypatch):
    """The kernel tables and the compiled CPU kernels on, for tests of the kernels
    themselves, also when the suite runs under ``DLX_KERNELS=numpy`` or ``generic``."""
    from dlx.backends import cpu_kernels

    monkeypatch.delenv("DLX_KERNELS", raising=False)
    dlx.backends.set_kernels_enabled(True)  # _restore_globals sets it back
    cpu_kernels.forget()
    yield
    monkeypatch.undo()
    cpu_kernels.forget()


@pytest.fixture(autouse=True)
def _restore_globals():
    yield
    dlx.set_backend(TEST_BACKENDS[0] if TEST_BACKENDS == ["cupy"] else "numpy")
    dlx.set_floatx("float32")
    dlx.backends.set_kernels_enabled(os.environ.get("DLX_KERNELS", "").lower() != "generic")


@pytest.fixture(scope="session")
def keras():
    """Keras 3 on its torch backend, the reference for layer/loss/optimizer semantics.

    Skipped cleanly where keras or torch is not installed (``pip install -e ".[reference]"``).
    """
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras runs on {keras.backend.backend()}, the reference tests expect torch")
    return keras


def _use_compiled_cpu_kernels(monkeypatch, on):
    from dlx.backends import cpu_kernels

    if on:
        monkeypatch.delenv("DLX_KERNELS", raising=False)
    else:
        monkeypatch.setenv("DLX_KERNELS", "numpy")
    cpu_kernels.forget()


@pytest.fixture
def numpy_kernels_only(monkeypatch):
    """The numpy backend's kernels without the compiled CPU ones (``DLX_KERNELS=numpy``)."""
    _use_compiled_cpu_kernels(monkeypatch, False)
    yield
    monkeypatch.undo()
    from dlx.backends import cpu_kernels

    cpu_kernels.forget()


@pytest.fixture(params=["compiled", "numpy"])
def cpu_kernel_kind(request, monkeypatch):
    """Runs a test twice: with the compiled CPU kernels, and with the NumPy ones alone."""
    _use_compiled_cpu_kernels(monkeypatch, request.param == "compiled")
    yield request.param
    monkeypatch.undo()
    from dlx.backends import cpu_kernels

    cpu_kernels.forget()
