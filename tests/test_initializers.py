"""Initializers: Keras formulas, statistics, seeds."""

import numpy as np
import pytest

import dlx
from dlx import initializers


@pytest.mark.parametrize(
    "name, std",
    [
        ("glorot_uniform", np.sqrt(2 / (300 + 200))),
        ("glorot_normal", np.sqrt(2 / (300 + 200))),
        ("he_uniform", np.sqrt(2 / 300)),
        ("he_normal", np.sqrt(2 / 300)),
        ("lecun_uniform", np.sqrt(1 / 300)),
        ("lecun_normal", np.sqrt(1 / 300)),
    ],
)
def test_variance_scaling_statistics(backend, name, std):
    w = dlx.to_numpy(initializers.get(name)((300, 200)))
    assert abs(w.std() / std - 1) < 0.03
    assert abs(w.mean()) < 0.05 * std
    if name.endswith("normal"):
        assert np.abs(w).max() <= 2 * std / 0.87962566103423978 + 1e-6  # truncated at 2 sigma


def test_conv_kernel_fans():
    assert initializers.compute_fans((3, 3, 16, 32)) == (144, 288)


def test_orthogonal(backend):
    w = dlx.to_numpy(initializers.Orthogonal(gain=2.0)((6, 4), "float64"))
    np.testing.assert_allclose(w.T @ w, 4 * np.eye(4), atol=1e-10)


def test_constant_zeros_ones_random(backend):
    assert dlx.to_numpy(initializers.Constant(3.0)((2,))).tolist() == [3.0, 3.0]
    assert dlx.to_numpy(initializers.get("zeros")((2,))).tolist() == [0.0, 0.0]
    assert dlx.to_numpy(initializers.get("ones")((2,))).tolist() == [1.0, 1.0]
    u = dlx.to_numpy(initializers.RandomUniform(-0.1, 0.3)((1000,)))
    assert u.min() >= -0.1 and u.max() <= 0.3
    n = dlx.to_numpy(initializers.RandomNormal(1.0, 0.5)((20000,)))
    assert abs(n.mean() - 1) < 0.02 and abs(n.std() - 0.5) < 0.02


def test_dtype_follows_floatx(backend):
    dlx.set_floatx("float64")
    assert initializers.get("glorot_uniform")((2, 2)).dtype == backend.dtype("float64")


def test_unknown_initializer():
    with pytest.raises(ValueError, match="Unknown initializer 'glorot'"):
        initializers.get("glorot")
