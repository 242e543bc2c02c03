"""NumPy kernels for convolution, transposed convolution and pooling.

They compute what the generic ops in ``dlx/ops/convolution.py`` and
``dlx/ops/pooling.py`` compute (same layouts, same padding rules, same
first-maximum rule), but:

* im2col is one copy of an ``as_strided`` window view ``(N, *O, *K, C)`` -- no
  Python loop over batch or pixels -- followed by one matrix product (per group);
* the column buffers are pooled: a training step reuses the previous step's
  buffers instead of page-faulting fresh ones, and inference gives them back at once;
* bias and ReLU are applied in place on the product;
* pooling works on strided slices with ``out=``/``where=`` arguments.

Every array here is channels_last. A method returns None for what it does not
handle (non-float dtypes, mixed dtypes), and the generic code runs instead.
"""

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

# ---------------------------------------------------------------------------
# buffer pool

_FREE = {}
_MAX_FREE = 4


def _take(shape, dtype):
    free = _FREE.get((shape, dtype))
    if free:
        return free.pop()
    return np.empty(shape, dtype)


def _give(array):
    free = _FREE.setdefault((array.shape, array.dtype), [])
    if len(free) < _MAX_FREE:
        free.append(array)


def clear_buffers():
    """Drop every pooled buffer (frees their memory)."""
    _FREE.clear()


# ---------------------------------------------------------------------------
# helpers


def _offsets(kernel_size):
    offsets = [()]
    for k in kernel_size:
        offsets = [o + (i,) for o in offsets for i in range(k)]
    return offsets


def _window(offset, strides, dilation, out_size):
    return (
        (slice(None),)
        + tuple(
            slice(o * d, o * d + s * (n - 1) + 1, s)
            for o, s, d, n in zip(offset, strides, dilation, out_size)
        )
        + (slice(None),)
    )


def _reframe(x, pads, fill=0.0):
    """Pad (positive) / crop (negative) spatial axes, like the generic ``reframe``."""
    if all(b == 0 and a == 0 for b, a in pads):
        return x
    if any(b < 0 or a < 0 for b, a in pads):
        crop = (
            (slice(None),)
            + tuple(slice(max(-b, 0), n - max(-a, 0)) for n, (b, a) in zip(x.shape[1:-1], pads))
            + (slice(None),)
        )
        x = x[crop]
        pads = tuple((max(b, 0), max(a, 0)) for b, a in pads)
        if all(b == 0 and a == 0 for b, a in pads):
            return x
    shape = (
        (x.shape[0],) + tuple(n + b + a for n, (b, a) in zip(x.shape[1:-1], pads)) + (x.shape[-1],)
    )
    out = np.full(shape, fill, x.dtype)
    inner = (
        (slice(None),)
        + tuple(slice(b, b + n) for n, (b, _) in zip(x.shape[1:-1], pads))
        + (slice(None),)
    )
    out[inner] = x
    return out


def _float(*arrays):
    dtype = arrays[0].dtype
    return dtype.kind == "f" and all(
        isinstance(a, np.ndarray) and a.dtype == dtype for a in arrays if a is not None
    )


def _out_size(shape, kernel_size, strides, dilation, pads):
    return tuple(
        (n + b + a - (k - 1) * d - 1) // s + 1
        for n, k, s, d, (b, a) in zip(shape, kernel_size, strides, dilation, pads)
    )


def _im2col(x, kernel_size, strides, dilation, pads):
    """``(M, Kp * C)`` columns, the output size and the pooled buffer behind them (or None).

    1x1 kernels use a view of x; single-channel inputs are gathered one kernel
    offset at a time into a ``(Kp, M)`` buffer (contiguous rows) and returned
    transposed; otherwise one copy of the ``(N, *O, *K, C)`` window view.
    """
    xpad = _reframe(x, pads)
    rank = len(kernel_size)
    out_size = _out_size(xpad.shape[1:-1], kernel_size, strides, dilation, ((0, 0),) * rank)
    n, c = x.shape[0], x.shape[-1]
    kp = math.prod(kernel_size)
    m = n * math.prod(out_size)
    if kp == 1 and all(s == 1 for s in strides) and xpad.flags.c_contiguous:
        return xpad.reshape(m, c), out_size, None
    if c == 1:
        buffer = _take((kp, m), x.dtype)
        for k, offset in enumerate(_offsets(kernel_size)):
            np.copyto(
                buffer[k].reshape((n,) + out_size + (1,)),
                xpad[_window(offset, strides, dilation, out_size)],
            )
        return buffer.T, out_size, buffer
    st = xpad.strides
    view = as_strided(
        xpad,
        (n,) + out_size + tuple(kernel_size) + (c,),
        (st[0],)
        + tuple(st[1 + i] * strides[i] for i in range(rank))
        + tuple(st[1 + i] * dilation[i] for i in range(rank))
        + (st[-1],),
        writeable=False,
    )
    buffer = _take((m, kp * c), x.dtype)
    np.copyto(buffer.reshape(view.shape), view)
    return buffer, out_size, buffer


# ---------------------------------------------------------------------------
# convolution


class NumpyConv:
    """Kernel table entry ``"conv"`` (see ``dlx.ops.convolution`` for the contract)."""

    def forward(self, x, w, b, geometry, relu, keep):
        if not _float(x, w, b):
            return None
        strides, dilation, pads, groups = geometry
        kernel_size = w.shape[:-2]
        n, c, f = x.shape[0], x.shape[-1], w.shape[-1]
        kp = math.prod(kernel_size)
        cols, out_size, buffer = _im2col(x, kernel_size, strides, dilation, pads)
        m = cols.shape[0]
        if groups == 1:
            y = cols @ w.reshape(kp * c, f)
        else:
            cg, fg = c // groups, f // groups
            a = cols.reshape(m, kp, groups, cg).transpose(2, 0, 1, 3).reshape(groups, m, kp * cg)
            wg = w.reshape(kp, cg, groups, fg).transpose(2, 0, 1, 3).reshape(groups, kp * cg, fg)
            y = np.ascontiguousarray((a @ wg).transpose(1, 0, 2)).reshape(m, f)
        if b is not None:
            y += b
        if relu:
            np.maximum(y, 0, out=y)
        saved = None
        if keep:
            saved = (cols, buffer)
        elif buffer is not None:
            _give(buffer)
        return y.reshape((n,) + out_size + (f,)), saved

    def release(self, saved):
        if saved[1] is not None:
            _give(saved[1])

    def relu_grad(self, g, y):
        """``g`` where ``y > 0``, else 0 (as the generic ``where``)."""
        return np.multiply(g, np.greater(y, 0))

    def input_grad(self, g, w, geometry, x_shape):
        if not _float(g, w):
            return None
        strides, dilation, pads, groups = geometry
        kernel_size = w.shape[:-2]
        out_size = g.shape[1:-1]
        n, c, f = g.shape[0], x_shape[-1], w.shape[-1]
        kp = math.prod(kernel_size)
        m = n * math.prod(out_size)
        g2 = g.reshape(m, f)
        framed = (n,) + tuple(s + b + a for s, (b, a) in zip(x_shape[1:-1], pads)) + (c,)
        block = (n,) + out_size + (c,)
        if groups == 1:
            # one (M, F) x (F, C) product per kernel offset, added into its window:
            # contiguous blocks add twice as fast as strided slices of one big product
            wk = w.reshape(kp, c, f)
            if kp == 1 and all(s == 1 for s in strides) and framed[1:-1] == out_size:
                gx = (g2 @ wk[0].T).reshape(framed)
            else:
                gx = np.zeros(framed, g.dtype)
                for k, offset in enumerate(_offsets(kernel_size)):
                    gx[_window(offset, strides, dilation, out_size)] += (g2 @ wk[k].T).reshape(
                        block
                    )
        else:
            cg, fg = c // groups, f // groups
            a = g2.reshape(m, groups, fg).transpose(1, 0, 2)
            wg = w.reshape(kp, cg, groups, fg).transpose(2, 3, 0, 1).reshape(groups, fg, kp * cg)
            dcols = (a @ wg).reshape(groups, m, kp, cg).transpose(1, 2, 0, 3)
            dcols = dcols.reshape((n,) + out_size + (kp, c))
            gx = np.zeros(framed, g.dtype)
            for k, offset in enumerate(_offsets(kernel_size)):
                gx[_window(offset, strides, dilation, out_size)] += dcols[..., k, :]
        return _reframe(gx, tuple((-b, -a) for b, a in pads))

    def weight_grad(self, x, g, geometry, w_shape, saved):
        if not _float(x, g):
            return None
        strides, dilation, pads, groups = geometry
        kernel_size = w_shape[:-2]
        if saved is not None:
            cols, buffer = saved
        else:
            cols, _, buffer = _im2col(x, kernel_size, strides, dilation, pads)
        f = g.shape[-1]
        m = cols.shape[0]
        g2 = g.reshape(m, f)
        if groups == 1:
            gw = (cols.T @ g2).reshape(w_shape)
        else:
            kp = math.prod(kernel_size)
            c = x.shape[-1]
            cg, fg = c // groups, f // groups
            a = cols.reshape(m, kp, groups, cg).transpose(2, 1, 3, 0).reshape(groups, kp * cg, m)
            b = g2.reshape(m, groups, fg).transpose(1, 0, 2)
            gw = (a @ b).reshape(groups, kp, cg, fg).transpose(1, 2, 0, 3).reshape(w_shape)
        if saved is None and buffer is not None:
            _give(buffer)
        return gw


class NumpyConvTranspose:
    """Kernel table entry ``"conv_transpose"``: the conv primitives with roles swapped."""

    def __init__(self, conv):
        self.conv = conv

    def forward(self, x, w, geometry, out_shape):
        return self.conv.input_grad(x, w, geometry, out_shape)

    def input_grad(self, g, w, geometry):
        result = self.conv.forward(g, w, None, geometry, False, False)
        return None if result is None else result[0]

    def weight_grad(self, x, g, geometry, w_shape):
        return self.conv.weight_grad(g, x, geometry, w_shape, None)


# ---------------------------------------------------------------------------
# pooling


class NumpyPool:
    """Kernel table entry ``"pool"`` (see ``dlx.ops.pooling`` for the contract)."""

    def forward(self, x, kind, pool_size, strides, pads, keep):
        if not _float(x):
            return None
        rank = len(pool_size)
        ones = (1,) * rank
        xpad = _reframe(x, pads, -np.inf if kind == "max" else 0.0)
        out_size = _out_size(xpad.shape[1:-1], pool_size, strides, ones, ((0, 0),) * rank)
        parts = [xpad[_window(o, strides, ones, out_size)] for o in _offsets(pool_size)]
        shape = (x.shape[0],) + out_size + (x.shape[-1],)
        y = np.empty(shape, x.dtype)
        np.copyto(y, parts[0])
        if kind == "max":
            for part in parts[1:]:
                np.maximum(y, part, out=y)
            return y, ((x, y) if keep else None)
        for part in parts[1:]:
            y += part
        if any(b or a for b, a in pads):
            count = _counts(x.shape, pool_size, strides, pads, x.dtype)
        else:
            count = float(math.prod(pool_size))
        y /= count
        return y, count

    def backward(self, g, saved, x_shape, kind, pool_size, strides, pads):
        if not _float(g):
            return None
        rank = len(pool_size)
        ones = (1,) * rank
        out_size = g.shape[1:-1]
        framed = (
            (x_shape[0],)
            + tuple(n + b + a for n, (b, a) in zip(x_shape[1:-1], pads))
            + (x_shape[-1],)
        )
        disjoint = all(s >= k for s, k in zip(strides, pool_size))
        exact = disjoint and all(
            s == k and o * s == n for s, k, o, n in zip(strides, pool_size, out_size, framed[1:-1])
        )
        gx = np.empty(framed, g.dtype) if exact else np.zeros(framed, g.dtype)
        offsets = _offsets(pool_size)
        if kind == "avg":
            g = g / saved
            for offset in offsets:
                view = gx[_window(offset, strides, ones, out_size)]
                if disjoint:
                    np.copyto(view, g)
                else:
                    view += g
        else:
            x, y = saved
            xpad = _reframe(x, pads, -np.inf)
            hit, free = np.empty(g.shape, bool), np.empty(g.shape, bool)
            for k, offset in enumerate(offsets):
                window = _window(offset, strides, ones, out_size)
                np.equal(xpad[window], y, out=hit)
                if k:
                    np.logical_and(hit, free, out=hit)
                if k + 1 < len(offsets):
                    if k:
                        np.greater(free, hit, out=free)  # free & ~hit
                    else:
                        np.logical_not(hit, out=free)
                view = gx[window]
                if exact:
                    np.multiply(g, hit, out=view)
                elif disjoint:
                    np.copyto(view, g, where=hit)
                else:
                    view += np.where(hit, g, 0)
        return _reframe(gx, tuple((-b, -a) for b, a in pads))


def _counts(x_shape, pool_size, strides, pads, dtype):
    total = None
    rank = len(pool_size)
    for axis, (n, k, s, (b, a)) in enumerate(zip(x_shape[1:-1], pool_size, strides, pads)):
        out = (n + b + a - k) // s + 1
        c = np.array([min(o * s - b + k, n) - max(o * s - b, 0) for o in range(out)], dtype)
        c = c.reshape((1,) + tuple(out if i == axis else 1 for i in range(rank)) + (1,))
        total = c if total is None else total * c
    return total


CONV = NumpyConv()
CONV_KERNELS = {
    "conv": CONV,
    "conv_transpose": NumpyConvTranspose(CONV),
    "pool": NumpyPool(),
}
