"""Every op: gradients against central finite differences (float64), values
against NumPy/PyTorch references, and the numerically delicate cases."""

import math

import numpy as np
import pytest
from helpers import check_gradients

import dlx
from dlx import ops

rng = np.random.default_rng(0)


def r(*shape, low=-2.0, high=2.0):
    return rng.uniform(low, high, size=shape)


def positive(*shape):
    return rng.uniform(0.5, 2.0, size=shape)


UNARY = {
    "negative": (ops.negative, r(3, 4)),
    "exp": (ops.exp, r(3, 4)),
    "log": (ops.log, positive(3, 4)),
    "log1p": (ops.log1p, positive(3, 4)),
    "expm1": (ops.expm1, r(3, 4)),
    "sqrt": (ops.sqrt, positive(3, 4)),
    "square": (ops.square, r(3, 4)),
    "abs": (ops.abs, r(3, 4)),
    "sin": (ops.sin, r(3, 4)),
    "cos": (ops.cos, r(3, 4)),
    "reciprocal": (ops.reciprocal, positive(3, 4)),
    "power_scalar": (lambda x: x**3, r(3, 4)),
    "clip": (lambda x: ops.clip(x, -0.5, 0.7), r(3, 4)),
    "sum_all": (lambda x: ops.sum(x), r(3, 4)),
    "sum_axis": (lambda x: ops.sum(x, axis=1), r(3, 4)),
    "sum_keepdims": (lambda x: ops.sum(x, axis=(0, 2), keepdims=True), r(2, 3, 4)),
    "mean": (lambda x: ops.mean(x, axis=-1), r(3, 4)),
    "max": (lambda x: ops.max(x, axis=0), r(3, 4)),
    "min_keepdims": (lambda x: ops.min(x, axis=1, keepdims=True), r(3, 4)),
    "logsumexp": (lambda x: ops.logsumexp(x, axis=-1), r(3, 4)),
    "var": (lambda x: ops.var(x, axis=0), r(3, 4)),
    "std": (lambda x: ops.std(x, axis=1), r(3, 4)),
    "reshape": (
        lambda x: ops.reshape(x, (4, 3)) * dlx.asarray(np.arange(12.0).reshape(4, 3)),
        r(3, 4),
    ),
    "transpose": (lambda x: ops.transpose(x, (2, 0, 1)), r(2, 3, 4)),
    "expand_squeeze": (lambda x: ops.squeeze(ops.expand_dims(x, 1) * 2.0, 1), r(3, 4)),
    "broadcast_to": (lambda x: ops.broadcast_to(x, (2, 3, 4)), r(3, 1)),
    "getitem": (lambda x: x[1:, ::2], r(3, 4)),
    "getitem_int": (lambda x: x[1], r(3, 4)),
    "take": (lambda x: ops.take(x, dlx.asarray(np.array([2, 0, 2])), axis=0), r(3, 4)),
    "take_axis1": (lambda x: ops.take(x, dlx.asarray(np.array([[1, 1], [3, 0]])), axis=1), r(3, 4)),
    "pad": (lambda x: ops.pad(x, ((1, 0), (2, 1)), value=0.5), r(3, 4)),
    "flatten": (lambda x: ops.flatten(x), r(2, 3, 4)),
    "split": (lambda x: ops.split(x, [1, 3], axis=1), r(3, 4)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_op_gradients(backend, name):
    fn, x = UNARY[name]
    check_gradients(fn, [x])


def test_cast_changes_dtype_and_casts_the_gradient_back(backend):
    x = dlx.Tensor(np.array([1.5, -2.25]), requires_grad=True)
    y = ops.cast(x, "float32")
    assert y.dtype == backend.dtype("float32")
    (y * 2.0).sum().backward()
    assert x.grad.dtype == backend.dtype("float64")
    np.testing.assert_array_equal(dlx.to_numpy(x.grad), [2.0, 2.0])


BINARY = {
    "add": (ops.add, r(3, 4), r(4)),
    "subtract": (ops.subtract, r(3, 1), r(3, 4)),
    "multiply": (ops.multiply, r(2, 3, 4), r(3, 1)),
    "divide": (ops.divide, r(3, 4), positive(1, 4)),
    "power": (ops.power, positive(3, 4), r(3, 4)),
    "maximum": (ops.maximum, r(3, 4), r(3, 4)),
    "minimum": (ops.minimum, r(3, 4), r(4)),
    "matmul": (ops.matmul, r(3, 4), r(4, 5)),
    "matmul_batched": (ops.matmul, r(2, 3, 4), r(4, 5)),
    "matmul_vector": (ops.matmul, r(3, 4), r(4)),
    "matmul_vector_left": (ops.matmul, r(4), r(2, 4, 3)),
    "linear": (lambda x, w: ops.linear(x, w), r(2, 3, 4), r(4, 5)),
    "concat": (lambda a, b: ops.concat([a, b], axis=1), r(3, 2), r(3, 4)),
    "stack": (lambda a, b: ops.stack([a, b], axis=1), r(3, 4), r(3, 4)),
    "where": (
        lambda a, b: ops.where(dlx.asarray(np.array([True, False, True, False])), a, b),
        r(3, 4),
        r(4),
    ),
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_op_gradients(backend, name):
    fn, a, b = BINARY[name]
    check_gradients(fn, [a, b])


def test_linear_with_bias_gradients(backend):
    check_gradients(lambda x, w, b: ops.linear(x, w, b), [r(5, 4), r(4, 3), r(3)])


def test_linear_with_fused_relu_equals_relu_of_linear(backend):
    x, w, b = r(2, 5, 4), r(4, 3), r(3)
    check_gradients(lambda x, w, b: ops.linear(x, w, b, relu=True), [x, w, b])
    fused = ops.linear(dlx.Tensor(x), dlx.Tensor(w), dlx.Tensor(b), relu=True)
    plain = ops.relu(ops.linear(dlx.Tensor(x), dlx.Tensor(w), dlx.Tensor(b)))
    np.testing.assert_array_equal(dlx.to_numpy(fused), dlx.to_numpy(plain))


def test_maximum_splits_gradient_at_ties(backend):
    a = dlx.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = dlx.Tensor(np.array([1.0, 3.0]), requires_grad=True)
    ops.maximum(a, b).sum().backward()
    np.testing.assert_allclose(dlx.to_numpy(a.grad), [0.5, 0.0])
    np.testing.assert_allclose(dlx.to_numpy(b.grad), [0.5, 1.0])


ACTIVATIONS = sorted(set(ops.ACTIVATIONS) - {"linear"})


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_gradients(backend, name):
    fn = ops.get_activation(name)
    # stay away from kinks (relu at 0, hard_sigmoid at +-3, relu6 at 6) where differences are
    # one-sided
    x = np.array([[-3.7, -2.1, -0.6, -0.2], [0.3, 0.9, 2.4, 3.3], [4.0, 5.1, 6.5, -5.0]])
    check_gradients(fn, [x])


def _reference_activations():
    from math import erf

    def sig(v):
        return 1 / (1 + np.exp(-v))

    return {
        "relu": lambda v: np.maximum(v, 0),
        "leaky_relu": lambda v: np.where(v >= 0, v, 0.2 * v),
        "relu6": lambda v: np.clip(v, 0, 6),
        "elu": lambda v: np.where(v > 0, v, np.expm1(v)),
        "selu": lambda v: 1.0507009873554805 * np.where(v > 0, v, 1.6732632423543772 * np.expm1(v)),
        "gelu": lambda v: 0.5 * v * (1 + np.vectorize(erf)(v / math.sqrt(2))),
        "sigmoid": sig,
        "hard_sigmoid": lambda v: np.clip(v / 6 + 0.5, 0, 1),
        "hard_silu": lambda v: v * np.clip(v / 6 + 0.5, 0, 1),
        "hard_swish": lambda v: v * np.clip(v / 6 + 0.5, 0, 1),
        "tanh": np.tanh,
        "softplus": lambda v: np.log1p(np.exp(v)),
        "softsign": lambda v: v / (1 + np.abs(v)),
        "silu": lambda v: v * sig(v),
        "swish": lambda v: v * sig(v),
        "mish": lambda v: v * np.tanh(np.log1p(np.exp(v))),
        "exponential": np.exp,
        "softmax": lambda v: np.exp(v) / np.exp(v).sum(-1, keepdims=True),
        "log_softmax": lambda v: v - np.log(np.exp(v).sum(-1, keepdims=True)),
    }


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_values_match_reference(backend, name):
    x = np.linspace(-7, 7, 29).reshape(1, 29)
    expected = _reference_activations()[name](x)
    got = dlx.to_numpy(ops.get_activation(name)(dlx.Tensor(x)))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)


def test_gelu_float32_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.linspace(-6, 6, 101).astype(np.float32)
    for approximate in (False, True):
        got = dlx.to_numpy(ops.gelu(dlx.Tensor(x), approximate=approximate))
        expected = torch.nn.functional.gelu(
            torch.from_numpy(x), approximate="tanh" if approximate else "none"
        ).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "name", ["sigmoid", "softplus", "softmax", "log_softmax", "silu", "tanh", "elu"]
)
def test_activations_stay_finite_for_extreme_inputs(backend, name):
    x = dlx.Tensor(np.array([[-1e4, -50.0, 0.0, 50.0, 1e4]], dtype=np.float32), requires_grad=True)
    y = ops.get_activation(name)(x)
    y.sum().backward()
    assert np.all(np.isfinite(dlx.to_numpy(y)))
    assert np.all(np.isfinite(dlx.to_numpy(x.grad)))


def test_unknown_activation_names_the_choices():
    with pytest.raises(ValueError, match="Unknown activation 'rellu'.*relu"):
        ops.get_activation("rellu")


def test_dropout_is_inverted_and_only_in_training(backend):
    x = dlx.Tensor(np.ones((200, 50)))
    same = ops.dropout(x, 0.3, training=False)
    np.testing.assert_array_equal(dlx.to_numpy(same), np.ones((200, 50)))
    y = dlx.to_numpy(ops.dropout(x, 0.3, training=True))
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.7)


def test_dropout_gradient_uses_the_same_mask(backend):
    x = dlx.Tensor(np.ones((20, 10)), requires_grad=True)
    y = ops.dropout(x, 0.5, training=True)
    y.sum().backward()
    np.testing.assert_allclose(dlx.to_numpy(x.grad), dlx.to_numpy(y))
