"""The compiled erf (backends/cpu/special.cpp) behind the exact GELU."""

import math
import shutil

import numpy as np
import pytest
from array_api_compat import numpy as xp_numpy
from dlx.backends import cpu_kernels, cpu_library
from helpers import check_gradients, count_compiled_calls

import dlx
from dlx import ops
from dlx.ops.special import erf

pytestmark = pytest.mark.skipif(
    shutil.which(cpu_library.compiler_name()) is None, reason="no C++ compiler on this machine"
)


@pytest.fixture
def calls(monkeypatch):
    yield count_compiled_calls(monkeypatch, "special")
    monkeypatch.undo()
    cpu_kernels.forget()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_erf_matches_the_c_library_and_the_series(calls, dtype):
    x = np.concatenate([np.linspace(-7, 7, 20000), [0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0]])
    x = x.astype(dtype).reshape(2, -1)  # any shape
    got = cpu_kernels.erf(x)
    exact = np.array([math.erf(float(v)) for v in x.reshape(-1)]).reshape(x.shape)
    assert got.dtype == dtype and got.shape == x.shape
    ulp = np.finfo(dtype).eps
    np.testing.assert_allclose(got, exact, rtol=ulp, atol=ulp * 1e-3)
    series = dlx.ops.special.erf(xp_numpy, x)  # the portable version, no kernel
    loose = max(2 * ulp, 5e-15)  # the series is good to ~2e-15 near +-1
    np.testing.assert_allclose(got, series, rtol=loose, atol=loose)
    assert calls["erf"] == 1


def test_erf_special_values_and_fallbacks(calls):
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
    got = cpu_kernels.erf(special)
    assert np.isnan(got[0]) and list(got[1:]) == [1.0, -1.0, 0.0, 0.0]
    assert np.signbit(got[4])
    assert cpu_kernels.erf(np.ones(8)[::2]) is None  # strided: not handled
    assert cpu_kernels.erf(np.ones(3, np.float16)) is None
    assert cpu_kernels.erf(np.ones((0, 3), np.float32)).shape == (0, 3)


def test_exact_gelu_uses_it_and_its_gradient_checks_out(calls):
    dlx.set_backend("numpy")
    x = np.random.default_rng(0).standard_normal((4, 5)) * 2
    check_gradients(lambda t: ops.gelu(t), [x])
    assert calls["erf"] > 0
    y = dlx.to_numpy(ops.gelu(dlx.asarray(x)))
    cdf = np.array([math.erf(v / math.sqrt(2)) for v in x.reshape(-1)]).reshape(x.shape)
    np.testing.assert_allclose(y, x * 0.5 * (1 + cdf), rtol=1e-15, atol=1e-15)
    assert erf(xp_numpy, x, dlx.get_backend()).shape == x.shape
