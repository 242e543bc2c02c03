"""Matrix products: ``matmul`` (batched, broadcasting) and the fused ``linear``
(``x @ kernel + bias``) behind the Dense layer."""

from ..autograd import Function
from ._util import sum_to_shape


def _swap_last(xp, a):
    return xp.matrix_transpose(a)


class MatMul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, g):
        xp, a, b = self.xp, self.a, self.b
        ga = gb = None
        a2 = a if a.ndim > 1 else xp.reshape(a, (1, -1))
        b2 = b if b.ndim > 1 else xp.reshape(b, (-1, 1))
        g2 = g
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, axis=-2)
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, axis=-1)
        if self.needs_input_grad[0]:
            ga = sum_to_shape(xp, g2 @ _swap_last(xp, b2), a2.shape)
            ga = xp.reshape(ga, a.shape)
        if self.needs_input_grad[1]:
            gb = sum_to_shape(xp, _swap_last(xp, a2) @ g2, b2.shape)
            gb = xp.reshape(gb, b.shape)
        return ga, gb

    def release(self):
        super().release()
        self.a = self.b = None


class Linear(Function):
    """``y = x @ kernel (+ bias)`` over the last axis of ``x``, optionally followed by ReLU.

    Shapes: x ``(..., in)``, kernel ``(in, units)``, bias ``(units,)`` or None;
    y ``(..., units)``. Leading axes are folded into one for the products.
    Fusing the ReLU saves a graph node and an array per Dense layer.
    """

    def __init__(self, relu=False):
        self.relu = relu

    y = None

    def forward(self, x, kernel, bias=None):
        xp = self.xp
        self.input_shape = tuple(x.shape)
        x2 = x if x.ndim == 2 else xp.reshape(x, (-1, x.shape[-1]))
        self.x2, self.kernel = x2, kernel
        fused = self.backend.kernel("linear_forward")
        y = fused(x2, kernel, bias, self.relu) if fused is not None else None
        if y is not None:
            self.y = y if self.relu else None
        else:
            y = self._forward_steps(x2, kernel, bias)
        if x.ndim != 2:
            y = xp.reshape(y, self.input_shape[:-1] + (kernel.shape[1],))
        return y

    def _forward_steps(self, x2, kernel, bias):
        xp = self.xp
        y = self._matmul(x2, kernel)
        if bias is not None:
            y += bias
        if self.relu:
            inplace = self.backend.kernel("relu_inplace")
            y = inplace(y) if inplace is not None else xp.maximum(y, 0.0)
            self.y = y
        return y

    def _matmul(self, a, b):
        """The backend's 2-D product kernel (the CPU one uses dlx's thread pool), else ``@``."""
        kernel = self.backend.kernel("matmul")
        return kernel(a, b) if kernel is not None else a @ b

    def backward(self, g):
        xp = self.xp
        g2 = g if g.ndim == 2 else xp.reshape(g, (-1, g.shape[-1]))
        need_x, need_k = self.needs_input_grad[:2]
        need_b = len(self.needs_input_grad) > 2 and self.needs_input_grad[2]
        fused = self.backend.kernel("linear_backward")
        grads = None
        if fused is not None:
            grads = fused(g2, self.y, self.x2, self.kernel, need_x, need_k, need_b)
        if grads is not None:
            gx, gk, gb = grads
            return (xp.reshape(gx, self.input_shape) if need_x else None), gk, gb
        if self.relu:
            relu_grad = self.backend.kernel("relu_grad")
            g2 = relu_grad(g2, self.y) if relu_grad is not None else xp.where(self.y > 0, g2, 0.0)
        matmul = self._matmul
        gx = xp.reshape(matmul(g2, self.kernel.T), self.input_shape) if need_x else None
        gk = matmul(self.x2.T, g2) if need_k else None
        gb = xp.sum(g2, axis=0) if need_b else None
        return gx, gk, gb

    def release(self):
        super().release()
        self.x2 = self.kernel = self.y = None


def matmul(a, b):
    return MatMul()(a, b)


def linear(x, kernel, bias=None, relu=False):
    """``x @ kernel + bias`` (then ReLU when ``relu``); see :class:`Linear` for shapes."""
    if bias is None:
        return Linear(relu)(x, kernel)
    return Linear(relu)(x, kernel, bias)
