"""Activation functions, each one Function with its derivative beside it.

Definitions follow Keras 3 (``keras.activations``): e.g. ``hard_sigmoid`` is
``clip(x / 6 + 1/2, 0, 1)``, ``gelu`` is the exact erf form unless
``approximate=True``, ``leaky_relu`` has ``negative_slope=0.2``.
"""

import math

from ..autograd import Function
from .arithmetic import Unary
from .special import erf

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _stable_sigmoid(xp, x):
    z = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + z), z / (1 + z))


class ReLU(Function):
    def forward(self, x):
        kernel = self.backend.kernel("relu")
        y = kernel(x) if kernel is not None else None
        self.y = y if y is not None else self.xp.maximum(x, 0.0)
        return self.y

    def backward(self, g):
        relu_grad = self.backend.kernel("relu_grad")
        if relu_grad is not None:
            return relu_grad(g, self.y)
        return self.xp.where(self.y > 0, g, 0.0)

    def release(self):
        super().release()
        self.y = None


class LeakyReLU(Unary):
    def __init__(self, negative_slope=0.2):
        self.negative_slope = negative_slope

    def f(self, xp, x):
        return xp.where(x >= 0, x, x * self.negative_slope)

    def df(self, xp, x, y):
        return xp.astype(x >= 0, x.dtype) * (1.0 - self.negative_slope) + self.negative_slope


class ReLU6(Unary):
    f = staticmethod(lambda xp, x: xp.clip(x, 0.0, 6.0))
    df = staticmethod(lambda xp, x, y: xp.astype((x > 0) & (x < 6), x.dtype))


class ELU(Unary):
    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def f(self, xp, x):
        return xp.where(x > 0, x, self.alpha * xp.expm1(xp.minimum(x, 0.0)))

    def df(self, xp, x, y):
        return xp.where(x > 0, 1.0, y + self.alpha)


class SELU(Unary):
    def f(self, xp, x):
        return SELU_SCALE * xp.where(x > 0, x, SELU_ALPHA * xp.expm1(xp.minimum(x, 0.0)))

    def df(self, xp, x, y):
        return xp.where(x > 0, SELU_SCALE, y + SELU_SCALE * SELU_ALPHA)


class GELU(Unary):
    def __init__(self, approximate=False):
        self.approximate = approximate

    def f(self, xp, x):
        if self.approximate:
            c = math.sqrt(2 / math.pi)
            self.t = xp.tanh(c * (x + 0.044715 * x * x * x))
            return 0.5 * x * (1 + self.t)
        self.cdf = 0.5 * (1 + erf(xp, x / math.sqrt(2), self.backend))
        return x * self.cdf

    def df(self, xp, x, y):
        if self.approximate:
            c = math.sqrt(2 / math.pi)
            dt = (1 - self.t * self.t) * c * (1 + 3 * 0.044715 * x * x)
            return 0.5 * (1 + self.t) + 0.5 * x * dt
        return self.cdf + x * xp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


class Sigmoid(Unary):
    f = staticmethod(_stable_sigmoid)
    df = staticmethod(lambda xp, x, y: y * (1 - y))


class HardSigmoid(Unary):
    f = staticmethod(lambda xp, x: xp.clip(x / 6 + 0.5, 0.0, 1.0))
    df = staticmethod(lambda xp, x, y: xp.astype((x > -3) & (x < 3), x.dtype) / 6)


class HardSilu(Unary):
    f = staticmethod(lambda xp, x: x * xp.clip(x / 6 + 0.5, 0.0, 1.0))
    df = staticmethod(lambda xp, x, y: xp.where(x <= -3, 0.0, xp.where(x >= 3, 1.0, x / 3 + 0.5)))


class Tanh(Unary):
    f = staticmethod(lambda xp, x: xp.tanh(x))
    df = staticmethod(lambda xp, x, y: 1 - y * y)


class Softplus(Unary):
    f = staticmethod(lambda xp, x: xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(x, 0.0))
    df = staticmethod(lambda xp, x, y: _stable_sigmoid(xp, x))


class Softsign(Unary):
    f = staticmethod(lambda xp, x: x / (1 + xp.abs(x)))
    df = staticmethod(lambda xp, x, y: 1 / ((1 + xp.abs(x)) * (1 + xp.abs(x))))


class Silu(Unary):
    def f(self, xp, x):
        self.s = _stable_sigmoid(xp, x)
        return x * self.s

    def df(self, xp, x, y):
        return self.s * (1 + x * (1 - self.s))


class Mish(Unary):
    def f(self, xp, x):
        sp = xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(x, 0.0)
        self.t = xp.tanh(sp)
        return x * self.t

    def df(self, xp, x, y):
        return self.t + x * (1 - self.t * self.t) * _stable_sigmoid(xp, x)


class Exponential(Unary):
    f = staticmethod(lambda xp, x: xp.exp(x))
    df = staticmethod(lambda xp, x, y: y)


class Softmax(Function):
    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        xp = self.xp
        e = xp.exp(x - xp.max(x, axis=self.axis, keepdims=True))
        self.y = e / xp.sum(e, axis=self.axis, keepdims=True)
        return self.y

    def backward(self, g):
        y = self.y
        return y * (g - self.xp.sum(g * y, axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        xp = self.xp
        shifted = x - xp.max(x, axis=self.axis, keepdims=True)
        self.y = shifted - xp.log(xp.sum(xp.exp(shifted), axis=self.axis, keepdims=True))
        return self.y

    def backward(self, g):
        xp = self.xp
        return g - xp.exp(self.y) * xp.sum(g, axis=self.axis, keepdims=True)


def relu(x):
    return ReLU()(x)


def leaky_relu(x, negative_slope=0.2):
    return LeakyReLU(negative_slope)(x)


def relu6(x):
    return ReLU6()(x)


def elu(x, alpha=1.0):
    return ELU(alpha)(x)


def selu(x):
    return SELU()(x)


def gelu(x, approximate=False):
    return GELU(approximate)(x)


def sigmoid(x):
    return Sigmoid()(x)


def hard_sigmoid(x):
    return HardSigmoid()(x)


def hard_silu(x):
    return HardSilu()(x)


def tanh(x):
    return Tanh()(x)


def softplus(x):
    return Softplus()(x)


def softsign(x):
    return Softsign()(x)


def silu(x):
    return Silu()(x)


swish = silu
hard_swish = hard_silu


def mish(x):
    return Mish()(x)


def exponential(x):
    return Exponential()(x)


def softmax(x, axis=-1):
    return Softmax(axis)(x)


def log_softmax(x, axis=-1):
    return LogSoftmax(axis)(x)


def linear(x):
    """The identity activation (Keras ``"linear"``)."""
    return x


ACTIVATIONS = {
    "relu": relu,
    "leaky_relu": leaky_relu,
    "relu6": relu6,
    "elu": elu,
    "selu": selu,
    "gelu": gelu,
    "sigmoid": sigmoid,
    "hard_sigmoid": hard_sigmoid,
    "hard_silu": hard_silu,
    "hard_swish": hard_silu,
    "tanh": tanh,
    "softplus": softplus,
    "softsign": softsign,
    "silu": silu,
    "swish": silu,
    "mish": mish,
    "exponential": exponential,
    "softmax": softmax,
    "log_softmax": log_softmax,
    "linear": linear,
}


def get_activation(identifier):
    """An activation callable from a name, a callable or None (linear)."""
    if identifier is None:
        return linear
    if callable(identifier):
        return identifier
    if isinstance(identifier, str) and identifier in ACTIVATIONS:
        return ACTIVATIONS[identifier]
    raise ValueError(
        f"Unknown activation {identifier!r}; choose one of {sorted(ACTIVATIONS)} or pass a "
        "callable."
    )


def activation_name(fn):
    for name, candidate in ACTIVATIONS.items():
        if candidate is fn:
            return name
    return getattr(fn, "__name__", repr(fn))
