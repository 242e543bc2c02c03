"""Reductions over axes: sum, mean, max, min, logsumexp, variance."""

from ..autograd import Function
from ._util import expand_reduced, normalize_axes


class Sum(Function):
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape = tuple(x.shape)
        self.axes = normalize_axes(self.axis, x.ndim)
        return self.xp.sum(x, axis=self.axes, keepdims=self.keepdims)

    def backward(self, g):
        xp = self.xp
        g = expand_reduced(xp, g, self.axes, self.keepdims)
        return xp.broadcast_to(g, self.shape)


class Mean(Sum):
    def forward(self, x):
        y = super().forward(x)
        self.count = 1
        for a in self.axes:
            self.count *= self.shape[a]
        return y / self.count

    def backward(self, g):
        return super().backward(g / self.count)


class Max(Function):
    """Maximum over axes; tied maxima share the gradient evenly."""

    minimum = False

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        xp = self.xp
        self.x = x
        self.axes = normalize_axes(self.axis, x.ndim)
        reduce = xp.min if self.minimum else xp.max
        self.y = reduce(x, axis=self.axes, keepdims=True)
        return self.y if self.keepdims else xp.squeeze(self.y, axis=self.axes)

    def backward(self, g):
        xp = self.xp
        g = expand_reduced(xp, g, self.axes, self.keepdims)
        hits = xp.astype(self.x == self.y, g.dtype)
        count = xp.sum(hits, axis=self.axes, keepdims=True)
        return hits * (g / count)

    def release(self):
        super().release()
        self.x = self.y = None


class Min(Max):
    minimum = True


class LogSumExp(Function):
    """``log(sum(exp(x), axis))`` computed without overflow."""

    def __init__(self, axis=-1, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        xp = self.xp
        self.axes = normalize_axes(self.axis, x.ndim)
        shift = xp.max(x, axis=self.axes, keepdims=True)
        self.x = x
        y = xp.log(xp.sum(xp.exp(x - shift), axis=self.axes, keepdims=True)) + shift
        self.y = y
        return y if self.keepdims else xp.squeeze(y, axis=self.axes)

    def backward(self, g):
        xp = self.xp
        g = expand_reduced(xp, g, self.axes, self.keepdims)
        return g * xp.exp(self.x - self.y)


def sum(x, axis=None, keepdims=False):  # noqa: A001
    return Sum(axis, keepdims)(x)


def mean(x, axis=None, keepdims=False):
    return Mean(axis, keepdims)(x)


def max(x, axis=None, keepdims=False):  # noqa: A001
    return Max(axis, keepdims)(x)


def min(x, axis=None, keepdims=False):  # noqa: A001
    return Min(axis, keepdims)(x)


def logsumexp(x, axis=-1, keepdims=False):
    return LogSumExp(axis, keepdims)(x)


def var(x, axis=None, keepdims=False):
    """Population variance (divides by N), composed from differentiable ops."""
    centered = x - mean(x, axis=axis, keepdims=True)
    return mean(centered * centered, axis=axis, keepdims=keepdims)


def std(x, axis=None, keepdims=False):
    from .arithmetic import sqrt

    return sqrt(var(x, axis=axis, keepdims=keepdims))
