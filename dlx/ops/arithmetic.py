"""Elementwise arithmetic and math, with broadcasting.

Non-Tensor operands (arrays, Python scalars) are constants: no gradient is
computed for them.
"""

import math

from ..autograd import Function
from ._util import shape_of, sum_to_shape


class Add(Function):
    def forward(self, a, b):
        self.shapes = shape_of(a), shape_of(b)
        return a + b

    def backward(self, g):
        xp = self.xp
        return (
            sum_to_shape(xp, g, self.shapes[0]) if self.needs_input_grad[0] else None,
            sum_to_shape(xp, g, self.shapes[1]) if self.needs_input_grad[1] else None,
        )


class Subtract(Function):
    def forward(self, a, b):
        self.shapes = shape_of(a), shape_of(b)
        return a - b

    def backward(self, g):
        xp = self.xp
        return (
            sum_to_shape(xp, g, self.shapes[0]) if self.needs_input_grad[0] else None,
            sum_to_shape(xp, -g, self.shapes[1]) if self.needs_input_grad[1] else None,
        )


class Multiply(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        xp, a, b = self.xp, self.a, self.b
        return (
            sum_to_shape(xp, g * b, shape_of(a)) if self.needs_input_grad[0] else None,
            sum_to_shape(xp, g * a, shape_of(b)) if self.needs_input_grad[1] else None,
        )

    def release(self):
        super().release()
        self.a = self.b = None


class Divide(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        xp, a, b = self.xp, self.a, self.b
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = sum_to_shape(xp, g / b, shape_of(a))
        if self.needs_input_grad[1]:
            gb = sum_to_shape(xp, -g * a / (b * b), shape_of(b))
        return ga, gb

    def release(self):
        super().release()
        self.a = self.b = None


class Negative(Function):
    def forward(self, x):
        return -x

    def backward(self, g):
        return -g


class Power(Function):
    """``a ** b``; the gradient with respect to ``b`` needs ``a > 0``."""

    def forward(self, a, b):
        self.a, self.b = a, b
        self.y = a**b
        return self.y

    def backward(self, g):
        xp, a, b = self.xp, self.a, self.b
        ga = gb = None
        if self.needs_input_grad[0]:
            if isinstance(b, (int, float)):
                ga = g * b * a ** (b - 1) if b != 0 else g * 0
            else:
                ga = g * b * a ** (b - 1)
            ga = sum_to_shape(xp, ga, shape_of(a))
        if self.needs_input_grad[1]:
            log_a = math.log(a) if isinstance(a, (int, float)) else xp.log(a)
            gb = sum_to_shape(xp, g * self.y * log_a, shape_of(b))
        return ga, gb


class Maximum(Function):
    """Elementwise maximum; where both are equal the gradient is split evenly."""

    sign = 1

    def forward(self, a, b):
        xp = self.xp
        self.a, self.b = a, b
        return xp.maximum(a, b) if self.sign > 0 else xp.minimum(a, b)

    def backward(self, g):
        xp, a, b = self.xp, self.a, self.b
        a_arr = a if hasattr(a, "shape") else xp.asarray(a, dtype=g.dtype)
        b_arr = b if hasattr(b, "shape") else xp.asarray(b, dtype=g.dtype)
        wins = (a_arr > b_arr) if self.sign > 0 else (a_arr < b_arr)
        share_a = xp.astype(wins, g.dtype) + 0.5 * xp.astype(a_arr == b_arr, g.dtype)
        ga = sum_to_shape(xp, g * share_a, shape_of(a)) if self.needs_input_grad[0] else None
        gb = sum_to_shape(xp, g * (1 - share_a), shape_of(b)) if self.needs_input_grad[1] else None
        return ga, gb


class Minimum(Maximum):
    sign = -1


class Where(Function):
    """``where(condition, a, b)``; ``condition`` is a boolean array (no gradient)."""

    def forward(self, condition, a, b):
        self.condition, self.shapes = condition, (shape_of(a), shape_of(b))
        return self.xp.where(condition, a, b)

    def backward(self, g):
        xp, c = self.xp, self.condition
        ga = (
            sum_to_shape(xp, xp.where(c, g, 0.0), self.shapes[0])
            if self.needs_input_grad[1]
            else None
        )
        gb = (
            sum_to_shape(xp, xp.where(c, 0.0, g), self.shapes[1])
            if self.needs_input_grad[2]
            else None
        )
        return None, ga, gb


class Clip(Function):
    """``clip(x, low, high)``; gradient 1 inside ``[low, high]`` (bounds included), else 0."""

    def __init__(self, low, high):
        self.low, self.high = low, high

    def forward(self, x):
        self.x = x
        return self.xp.clip(x, self.low, self.high)

    def backward(self, g):
        xp, x = self.xp, self.x
        inside = xp.ones(x.shape, dtype=xp.bool, device=x.device)
        if self.low is not None:
            inside = inside & (x >= self.low)
        if self.high is not None:
            inside = inside & (x <= self.high)
        return xp.where(inside, g, 0.0)


class Unary(Function):
    """Base for elementwise ``y = f(x)`` whose derivative is written with ``x`` and ``y``."""

    def forward(self, x):
        self.x = x
        self.y = self.f(self.xp, x)
        return self.y

    def backward(self, g):
        return g * self.df(self.xp, self.x, self.y)

    def release(self):
        super().release()
        self.x = self.y = None


class Exp(Unary):
    f = staticmethod(lambda xp, x: xp.exp(x))
    df = staticmethod(lambda xp, x, y: y)


class Log(Unary):
    f = staticmethod(lambda xp, x: xp.log(x))
    df = staticmethod(lambda xp, x, y: 1 / x)


class Log1p(Unary):
    f = staticmethod(lambda xp, x: xp.log1p(x))
    df = staticmethod(lambda xp, x, y: 1 / (1 + x))


class Expm1(Unary):
    f = staticmethod(lambda xp, x: xp.expm1(x))
    df = staticmethod(lambda xp, x, y: y + 1)


class Sqrt(Unary):
    f = staticmethod(lambda xp, x: xp.sqrt(x))
    df = staticmethod(lambda xp, x, y: 0.5 / y)


class Square(Unary):
    f = staticmethod(lambda xp, x: x * x)
    df = staticmethod(lambda xp, x, y: 2 * x)


class Abs(Unary):
    f = staticmethod(lambda xp, x: xp.abs(x))
    df = staticmethod(lambda xp, x, y: xp.astype(xp.sign(x), x.dtype))


class Sin(Unary):
    f = staticmethod(lambda xp, x: xp.sin(x))
    df = staticmethod(lambda xp, x, y: xp.cos(x))


class Cos(Unary):
    f = staticmethod(lambda xp, x: xp.cos(x))
    df = staticmethod(lambda xp, x, y: -xp.sin(x))


class Reciprocal(Unary):
    f = staticmethod(lambda xp, x: 1 / x)
    df = staticmethod(lambda xp, x, y: -(y * y))


def add(a, b):
    return Add()(a, b)


def subtract(a, b):
    return Subtract()(a, b)


def multiply(a, b):
    return Multiply()(a, b)


def divide(a, b):
    return Divide()(a, b)


def negative(x):
    return Negative()(x)


def power(a, b):
    return Power()(a, b)


def maximum(a, b):
    return Maximum()(a, b)


def minimum(a, b):
    return Minimum()(a, b)


def where(condition, a, b):
    from ..autograd import Tensor

    if isinstance(condition, Tensor):
        condition = condition.value
    return Where()(condition, a, b)


def clip(x, low=None, high=None):
    return Clip(low, high)(x)


def exp(x):
    return Exp()(x)


def log(x):
    return Log()(x)


def log1p(x):
    return Log1p()(x)


def expm1(x):
    return Expm1()(x)


def sqrt(x):
    return Sqrt()(x)


def square(x):
    return Square()(x)


def abs(x):  # noqa: A001 - mirrors the Array API name
    return Abs()(x)


def sin(x):
    return Sin()(x)


def cos(x):
    return Cos()(x)


def reciprocal(x):
    return Reciprocal()(x)
