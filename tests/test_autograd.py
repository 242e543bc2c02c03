"""Tensor, Variable, Function, no_grad and gradient accumulation."""

import numpy as np
import pytest

import dlx
from dlx import ops


def host(x):
    return dlx.to_numpy(x)


def test_backward_fills_grad_of_leaves(backend):
    x = dlx.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    np.testing.assert_allclose(host(x.grad), [2.0, 4.0, 6.0])


def test_gradients_accumulate_until_cleared(backend):
    x = dlx.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 3.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(host(x.grad), [6.0, 6.0])
    x.grad = None
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(host(x.grad), [3.0, 3.0])


def test_a_tensor_used_twice_gets_both_contributions(backend):
    x = dlx.Tensor(np.array([2.0]), requires_grad=True)
    a = x * 3.0
    y = (a * a + a).sum()  # 9x^2 + 3x -> 18x + 3
    y.backward()
    np.testing.assert_allclose(host(x.grad), [39.0])


def test_no_grad_records_nothing(backend):
    x = dlx.Tensor(np.ones(3), requires_grad=True)
    with dlx.no_grad():
        y = (x * 2.0).sum()
    assert not y.requires_grad and y.creator is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_second_backward_needs_retain_graph(backend):
    x = dlx.Tensor(np.ones(2), requires_grad=True)
    y = ops.exp(x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(host(x.grad), 2 * np.e * np.ones(2))
    z = ops.exp(x).sum()
    z.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        z.backward()


def test_non_scalar_backward_with_explicit_grad(backend):
    x = dlx.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x * x
    y.backward(dlx.asarray(np.array([1.0, 10.0])))
    np.testing.assert_allclose(host(x.grad), [2.0, 40.0])


def test_retain_grad_keeps_intermediate_gradient(backend):
    x = dlx.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = (x * 2.0).retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(host(h.grad), [4.0, 8.0])


def test_constants_get_no_gradient(backend):
    x = dlx.Tensor(np.ones(2), requires_grad=True)
    c = dlx.Tensor(np.ones(2))
    (x * c).sum().backward()
    assert c.grad is None


def test_variable_assign_checks_shape_and_copies(backend):
    v = dlx.Variable(np.zeros(3, dtype=np.float32), name="w")
    source = np.ones(3, dtype=np.float32)
    v.assign(source)
    v.value -= 1.0  # in-place updates must not reach the caller's array
    np.testing.assert_array_equal(source, np.ones(3))
    with pytest.raises(ValueError, match="shape \\(2,\\).*shape \\(3,\\)"):
        v.assign(np.zeros(2))


def test_custom_function(backend):
    class Cube(dlx.Function):
        def forward(self, x):
            self.x = x
            return x * x * x

        def backward(self, g):
            return 3 * self.x * self.x * g

    x = dlx.Tensor(np.array([2.0]), requires_grad=True)
    Cube()(x).sum().backward()
    np.testing.assert_allclose(host(x.grad), [12.0])


def test_operators_with_numpy_arrays_on_the_left():
    x = dlx.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = np.array([3.0, 4.0]) * x
    assert isinstance(y, dlx.Tensor)
    y.sum().backward()
    np.testing.assert_allclose(host(x.grad), [3.0, 4.0])
