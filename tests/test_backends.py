"""The backend registry: names, selection, dispatch by data, seeds, clear errors."""

import os
import subprocess
import sys

import numpy as np
import pytest

import dlx
from dlx import backends, layers


def test_builtin_backends_are_listed():
    assert {"numpy", "array_api_strict", "cupy"} <= set(dlx.list_backends())


def test_default_backend_is_numpy():
    code = "import dlx; print(dlx.get_backend().name)"
    env = {k: v for k, v in os.environ.items() if k != "DLX_BACKEND"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "numpy"


def test_env_var_sets_default_backend():
    code = "import dlx; print(dlx.get_backend().name)"
    env = {**os.environ, "DLX_BACKEND": "array_api_strict"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "array_api_strict"


def test_importing_dlx_does_not_import_cupy():
    code = "import sys, dlx; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_set_backend_switches_where_arrays_are_created(backend):
    t = dlx.Tensor(np.ones((2, 3), dtype=np.float32))
    assert backend.owns(t.value)
    assert dlx.get_backend().name == backend.name


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match="Unknown backend 'tensorflow'.*numpy"):
        dlx.set_backend("tensorflow")


def test_cupy_without_cupy_or_gpu_raises_one_clear_error():
    try:
        import cupy  # noqa: F401

        has_cupy = True
    except ImportError:
        has_cupy = False
    if has_cupy:
        pytest.skip("CuPy is installed here; this checks the message on machines without it")
    backends.registry._INSTANCES.pop("cupy", None)
    with pytest.raises(
        backends.BackendUnavailableError, match="needs CuPy, which is not installed"
    ):
        dlx.set_backend("cupy")
    assert dlx.get_backend().name == "numpy"  # the failed switch changed nothing


def test_register_backend_adds_a_custom_backend():
    calls = []

    def factory():
        calls.append(1)
        return backends.registry._FACTORIES["numpy"]()

    backends.register_backend("my_numpy", factory)
    try:
        assert "my_numpy" in dlx.list_backends()
        assert dlx.set_backend("my_numpy").name == "my_numpy"
        assert calls == [1]
    finally:
        backends.registry._FACTORIES.pop("my_numpy")
        backends.registry._INSTANCES.pop("my_numpy", None)
        backends.registry._TYPE_CACHE.clear()
        dlx.set_backend("numpy")


def test_dispatch_follows_the_data():
    dlx.set_backend("numpy")
    strict = backends.registry._instance("array_api_strict")
    a = dlx.Tensor(strict.asarray(np.ones(3)))
    b = a * 2.0 + 1.0
    assert strict.owns(b.value)  # computed where the data lives, not on the current backend


def test_mixing_backends_in_one_op_names_both():
    strict = backends.registry._instance("array_api_strict")
    a = dlx.Tensor(strict.asarray(np.ones(3)))
    b = dlx.Tensor(np.ones(3))
    with pytest.raises(
        backends.DeviceMismatchError, match="array_api_strict.*numpy|numpy.*array_api_strict"
    ):
        dlx.ops.add(a, b)


def test_same_seed_gives_identical_weights_on_every_backend():
    weights = {}
    for name in ("numpy", "array_api_strict"):
        dlx.set_backend(name)
        dlx.set_seed(42)
        layer = layers.Dense(5)
        layer(np.zeros((1, 3), dtype=np.float32))
        weights[name] = layer.get_weights()
    for a, b in zip(weights["numpy"], weights["array_api_strict"]):
        np.testing.assert_array_equal(a, b)


def test_different_seeds_give_different_weights():
    dlx.set_seed(1)
    a = layers.Dense(4)
    a(np.zeros((1, 3), dtype=np.float32))
    dlx.set_seed(2)
    b = layers.Dense(4)
    b(np.zeros((1, 3), dtype=np.float32))
    assert not np.array_equal(a.get_weights()[0], b.get_weights()[0])


@pytest.mark.usefixtures("kernels_on")
def test_kernels_can_be_turned_off():
    numpy_backend = backends.registry._instance("numpy")
    assert numpy_backend.kernel("adam_update") is not None
    backends.set_kernels_enabled(False)
    assert numpy_backend.kernel("adam_update") is None
    backends.set_kernels_enabled(True)


def test_generic_env_var_disables_kernels():
    code = "import dlx; print(dlx.get_backend().kernel('adam_update'))"
    env = {**os.environ, "DLX_KERNELS": "generic"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "None"


def test_to_numpy_round_trips(backend):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = dlx.Tensor(host)
    np.testing.assert_array_equal(dlx.to_numpy(t), host)
    np.testing.assert_array_equal(dlx.to_numpy(t.value), host)
    assert isinstance(dlx.to_numpy(t), np.ndarray)
