"""NumPy kernels for convolution, transposed convolution and pooling.

They compute what the generic ops in ``dlx/ops/convolution.py`` and
``dlx/ops/pooling.py`` compute (same layouts, same padding rules, same
first-maximum rule), but:

* im2col is one copy of an ``as_strided`` window view ``(N, *O, *K, C)`` -- no
  Python loop over batch or pixels -- followed by one matrix product (per group);
* every large array they make (columns, outputs, gradients, scratch) comes from
  :mod:`buffer_pool`: a step reuses the arrays of the previous one that nothing
  refers to any more instead of page-faulting fresh memory (about 2.5 us per
  4 KiB page on these VMs: 2,500 faults, ~6 ms, per ``cnn_train`` step before);
* products write into those arrays (``out=``); bias and ReLU are applied in place;
* max pooling over windows that tile the input writes its gradient in one pass
  per window offset, and can fold the backward of a preceding ReLU into its
  own (``backward_relu``).

Every array here is channels_last. A method returns None for what it does not
handle (non-float dtypes, mixed dtypes), and the generic code runs instead.
"""

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .blas_threads import OneBlasThread
from .buffer_pool import pooled
from .conv_transpose_from_conv import ConvTransposeFromConv
from .pool_counts import valid_cell_counts

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
    out = pooled(shape, x.dtype)
    out.fill(fill)
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


def _im2col(x, kernel_size, strides, dilation, pads, ones=False):
    """``(M, Kp * C)`` columns (often a view of a pooled buffer) and the output size.

    1x1 kernels use a view of x (unless ``ones`` asks for the row of ones);
    single-channel inputs are gathered one kernel offset at a time into a
    ``(Kp, M)`` buffer (contiguous rows) and returned transposed -- with
    ``ones`` that buffer gets a last row of ones, and the columns
    ``(M, Kp + 1)`` carry it (a bias row appended to the kernel then
    adds the bias inside the product); otherwise one copy of the
    ``(N, *O, *K, C)`` window view.
    """
    xpad = _reframe(x, pads)
    rank = len(kernel_size)
    out_size = _out_size(xpad.shape[1:-1], kernel_size, strides, dilation, ((0, 0),) * rank)
    n, c = x.shape[0], x.shape[-1]
    kp = math.prod(kernel_size)
    m = n * math.prod(out_size)
    if kp == 1 and all(s == 1 for s in strides) and xpad.flags.c_contiguous and not ones:
        return xpad.reshape(m, c), out_size
    if c == 1:
        buffer = pooled((kp + 1 if ones else kp, m), x.dtype)
        if ones:
            buffer[kp] = 1
        for k, offset in enumerate(_offsets(kernel_size)):
            np.copyto(
                buffer[k].reshape((n,) + out_size + (1,)),
                xpad[_window(offset, strides, dilation, out_size)],
            )
        return buffer.T, out_size
    buffer = pooled((m, kp * c), x.dtype)
    np.copyto(
        buffer.reshape((n,) + out_size + tuple(kernel_size) + (c,)),
        _windows(xpad, kernel_size, strides, dilation, out_size),
    )
    return buffer, out_size


def _windows(x, kernel_size, strides, dilation, out_size):
    """Read-only ``(N, *O, *K, C)`` view: ``[n, o, k] = x[n, o * strides + k * dilation]``."""
    rank = len(kernel_size)
    st = x.strides
    return as_strided(
        x,
        (x.shape[0],) + tuple(out_size) + tuple(kernel_size) + (x.shape[-1],),
        (st[0],)
        + tuple(st[1 + i] * strides[i] for i in range(rank))
        + tuple(st[1 + i] * dilation[i] for i in range(rank))
        + (st[-1],),
        writeable=False,
    )


_ZERO_ROWS = {}


def _relu_inplace(y):
    """``maximum(y, 0)`` into ``y`` (contiguous).

    NumPy's ``maximum`` against a scalar 0 runs 2-3x slower than against an
    array of zeros (0.45 vs 0.13 ms on a 26x26x32x64 float32 output), so the
    flat array is taken in rows of up to 1024 against a cached row of zeros.
    """
    flat = y.reshape(-1)
    for width in (1024, 512, 256, 128):
        if flat.size % width == 0:
            zeros = _ZERO_ROWS.get((width, y.dtype))
            if zeros is None:
                zeros = _ZERO_ROWS[width, y.dtype] = np.zeros(width, y.dtype)
            rows = flat.reshape(-1, width)
            np.maximum(rows, zeros, out=rows)
            return y
    np.maximum(y, 0, out=y)
    return y


# ---------------------------------------------------------------------------
# convolution


class NumpyConv:
    """Kernel table entry ``"conv"`` (see ``dlx.ops.convolution`` for the contract).

    Outputs, gradients and column buffers come from :mod:`buffer_pool`: the
    arrays of the previous step are reused once nothing refers to them.
    """

    def forward(self, x, w, b, geometry, relu, keep):
        if not _float(x, w, b):
            return None
        strides, dilation, pads, groups = geometry
        kernel_size = w.shape[:-2]
        n, c, f = x.shape[0], x.shape[-1], w.shape[-1]
        kp = math.prod(kernel_size)
        # single-channel input: the bias rides in the product as a row of ones
        fold_bias = c == 1 and groups == 1 and b is not None
        cols, out_size = _im2col(x, kernel_size, strides, dilation, pads, ones=fold_bias)
        m = cols.shape[0]
        y = pooled((m, f), x.dtype)
        if fold_bias:
            # the columns keep their ones: weight_and_bias_grad gets the bias gradient from them
            np.matmul(cols, np.concatenate([w.reshape(kp, f), b.reshape(1, f)]), out=y)
            b = None
        elif groups == 1:
            np.matmul(cols, w.reshape(kp * c, f), out=y)
        else:
            cg, fg = c // groups, f // groups
            a = cols.reshape(m, kp, groups, cg).transpose(2, 0, 1, 3).reshape(groups, m, kp * cg)
            wg = w.reshape(kp, cg, groups, fg).transpose(2, 0, 1, 3).reshape(groups, kp * cg, fg)
            np.copyto(y.reshape(m, groups, fg), (a @ wg).transpose(1, 0, 2))
        if b is not None:
            y += b
        if relu:
            _relu_inplace(y)
        return y.reshape((n,) + out_size + (f,)), (cols if keep else None)

    def relu_grad(self, g, y):
        """``g`` where ``y > 0``, else 0 (as the generic ``where``)."""
        if not _float(g, y):
            return None
        mask = pooled(y.shape, bool)
        np.greater(y, 0, out=mask)
        out = pooled(g.shape, g.dtype)
        return np.multiply(g, mask, out=out)

    def bias_grad(self, g):
        """``sum(g)`` over every axis but the last, as one matrix-vector product
        (``np.sum`` over the rows of a ``(M, F)`` array walks them ``F`` at a time)."""
        if not _float(g):
            return None
        g2 = g.reshape(-1, g.shape[-1])
        ones = pooled((g2.shape[0],), g.dtype)
        ones.fill(1)
        with OneBlasThread():  # memory-bound: a second thread only adds a wait
            return ones @ g2

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
        gx = pooled(framed, g.dtype)
        if groups == 1:
            # one (M, F) x (F, C) product per kernel offset, added into its window:
            # contiguous blocks add twice as fast as strided slices of one big product
            wk = w.reshape(kp, c, f)
            if kp == 1 and all(s == 1 for s in strides) and framed[1:-1] == out_size:
                np.matmul(g2, wk[0].T, out=gx.reshape(m, c))
            else:
                gx.fill(0)
                g2, out_size = _trim_zero_border(g)
                block = (n,) + out_size + (c,)
                part = pooled((g2.shape[0], c), g.dtype)
                for k, offset in enumerate(_offsets(kernel_size)):
                    np.matmul(g2, wk[k].T, out=part)
                    gx[_window(offset, strides, dilation, out_size)] += part.reshape(block)
        else:
            cg, fg = c // groups, f // groups
            a = g2.reshape(m, groups, fg).transpose(1, 0, 2)
            wg = w.reshape(kp, cg, groups, fg).transpose(2, 3, 0, 1).reshape(groups, fg, kp * cg)
            dcols = (a @ wg).reshape(groups, m, kp, cg).transpose(1, 2, 0, 3)
            dcols = dcols.reshape((n,) + out_size + (kp, c))
            gx.fill(0)
            for k, offset in enumerate(_offsets(kernel_size)):
                gx[_window(offset, strides, dilation, out_size)] += dcols[..., k, :]
        return _reframe(gx, tuple((-b, -a) for b, a in pads))

    def weight_grad(self, x, g, geometry, w_shape, saved):
        result = self._weight_grad(x, g, geometry, w_shape, saved)
        return None if result is None else result[0]

    def weight_and_bias_grad(self, x, g, geometry, w_shape, saved):
        """``(weight_grad, bias_grad)``; when the forward carried the bias in a column
        of ones, the bias gradient is one more row of the weight-gradient product."""
        result = self._weight_grad(x, g, geometry, w_shape, saved)
        if result is None:
            return None
        gw, gb = result
        return gw, (gb if gb is not None else self.bias_grad(g))

    def _weight_grad(self, x, g, geometry, w_shape, saved):
        if not _float(x, g):
            return None
        strides, dilation, pads, groups = geometry
        kernel_size = w_shape[:-2]
        cols = saved if saved is not None else _im2col(x, kernel_size, strides, dilation, pads)[0]
        f = g.shape[-1]
        m, width = cols.shape
        g2 = g.reshape(m, f)
        if groups == 1:
            product = cols.T @ g2
            if width == math.prod(w_shape[:-1]):
                return product.reshape(w_shape), None
            return product[:-1].reshape(w_shape), product[-1]  # the last column held ones
        kp = math.prod(kernel_size)
        c = x.shape[-1]
        cg, fg = c // groups, f // groups
        a = cols.reshape(m, kp, groups, cg).transpose(2, 1, 3, 0).reshape(groups, kp * cg, m)
        b = g2.reshape(m, groups, fg).transpose(1, 0, 2)
        gw = (a @ b).reshape(groups, kp, cg, fg).transpose(1, 2, 0, 3).reshape(w_shape)
        return gw, None


def _nonzero_size(g):
    """The output size of g ``(N, *O, F)`` without its trailing all-zero slices along each
    spatial axis."""
    out_size = list(g.shape[1:-1])
    for axis in range(len(out_size)):
        while out_size[axis] > 1:
            last = [slice(None)] + [slice(0, o) for o in out_size]
            last[1 + axis] = out_size[axis] - 1
            if g[tuple(last)].any():
                break
            out_size[axis] -= 1
    return tuple(out_size)


def _trim_zero_border(g):
    """``g`` ``(N, *O, F)`` without its trailing all-zero slices along each spatial axis,
    as ``(M', F)`` rows, and the remaining ``O'``.

    They contribute nothing to the input gradient; a 2x2 max pool over an odd
    size leaves one such row and column (11x11 -> 10x10: 17% fewer rows to multiply).
    """
    out_size = _nonzero_size(g)
    if out_size == g.shape[1:-1]:
        return g.reshape(-1, g.shape[-1]), out_size
    trimmed = pooled((g.shape[0],) + out_size + (g.shape[-1],), g.dtype)
    np.copyto(trimmed, g[(slice(None),) + tuple(slice(0, o) for o in out_size)])
    return trimmed.reshape(-1, g.shape[-1]), out_size


# ---------------------------------------------------------------------------
# pooling


class NumpyPool:
    """Kernel table entry ``"pool"`` (see ``dlx.ops.pooling`` for the contract).

    Max-pool backward over windows that tile the input (``strides == pool_size``,
    no padding: the usual ``MaxPooling2D(2)``) keeps one contiguous hit mask per
    window offset and writes every cell of the gradient once; other geometries
    zero the gradient and add into it offset by offset.
    """

    def forward(self, x, kind, pool_size, strides, pads, keep):
        if not _float(x):
            return None
        rank = len(pool_size)
        ones = (1,) * rank
        xpad = _reframe(x, pads, -np.inf if kind == "max" else 0.0)
        out_size = _out_size(xpad.shape[1:-1], pool_size, strides, ones, ((0, 0),) * rank)
        combine = np.maximum if kind == "max" else np.add
        if strides == pool_size and xpad is x:
            y = _pool_tiles(x, combine, pool_size, out_size)
        else:
            parts = [xpad[_window(o, strides, ones, out_size)] for o in _offsets(pool_size)]
            y = pooled((x.shape[0],) + out_size + (x.shape[-1],), x.dtype)
            if len(parts) == 1:
                np.copyto(y, parts[0])
            else:
                combine(parts[0], parts[1], out=y)  # no separate copy of the first part
            for part in parts[2:]:
                combine(y, part, out=y)
        if kind == "max":
            return y, ((x, y) if keep else None)
        if any(b or a for b, a in pads):
            count = valid_cell_counts(x.shape, pool_size, strides, pads, x.dtype)
        else:
            count = float(math.prod(pool_size))
        y /= count
        return y, count

    def backward(self, g, saved, x_shape, kind, pool_size, strides, pads):
        if not _float(g):
            return None
        return self._backward(g, saved, x_shape, kind, pool_size, strides, pads, False)

    def backward_relu(self, g, saved, x_shape, kind, pool_size, strides, pads):
        """``backward`` of ``where(y > 0, g, 0)``: the gradient also passes the ReLU that
        made the (non-negative) input (see ``dlx.ops.pooling``)."""
        if kind != "max" or not _float(g):
            return None
        return self._backward(g, saved, x_shape, kind, pool_size, strides, pads, True)

    def _backward(self, g, saved, x_shape, kind, pool_size, strides, pads, relu):
        out_size = g.shape[1:-1]
        if kind == "max" and strides == pool_size and not any(b or a for b, a in pads):
            return _max_blocks_backward(g, saved, x_shape, pool_size, relu)
        if relu:
            g = np.where(saved[1] > 0, g, 0)
        rank = len(pool_size)
        ones = (1,) * rank
        framed = (
            (x_shape[0],)
            + tuple(n + b + a for n, (b, a) in zip(x_shape[1:-1], pads))
            + (x_shape[-1],)
        )
        disjoint = all(s >= k for s, k in zip(strides, pool_size))
        exact = disjoint and all(
            s == k and o * s == n for s, k, o, n in zip(strides, pool_size, out_size, framed[1:-1])
        )
        gx = pooled(framed, g.dtype)
        if not exact:
            gx.fill(0)
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
            hit, free = pooled(g.shape, bool), pooled(g.shape, bool)
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


def _pool_tiles(x, combine, pool_size, out_size):
    """Max (``combine=np.maximum``) or sum (``np.add``) over windows that tile ``x``
    (``strides == pool_size``, no padding), one spatial axis after the other.

    The first axis combines whole contiguous rows of ``x`` (long inner loops);
    each later axis works on the already smaller result.
    """
    current = x
    for axis, (k, o) in enumerate(zip(pool_size, out_size)):
        before = (slice(None),) * (1 + axis)
        if k == 1 and o == current.shape[1 + axis]:
            continue
        shape = current.shape[: 1 + axis] + (o,) + current.shape[2 + axis :]
        reduced = pooled(shape, x.dtype)
        parts = [current[before + (slice(j, o * k, k),)] for j in range(k)]
        if k == 1:
            np.copyto(reduced, parts[0])
        else:
            combine(parts[0], parts[1], out=reduced)
        for part in parts[2:]:
            combine(reduced, part, out=reduced)
        current = reduced
    if current is x:
        current = pooled(x.shape, x.dtype)
        np.copyto(current, x)
    return current


def _max_blocks_backward(g, saved, x_shape, pool_size, relu):
    """Max-pool gradient for windows that tile the input (``strides == pool_size``, no padding).

    The covered part of ``x`` is viewed as ``(N, o1, k1, o2, k2, ..., C)``, so one
    broadcast comparison with the window maxima marks every hit in ``x``'s own
    layout, and one broadcast product writes the gradient; cells past the last
    whole window get 0. Where a window holds its maximum more than once, all but
    the first (row-major) hit are cleared -- only when counting the hits shows
    such a window exists.

    ``relu``: the input came out of a ReLU (``x >= 0``), and the gradient also
    passes it: windows whose maximum is 0 get nothing. They are compared with
    -1 instead of their maximum (no hit at all), so neither their ties nor a
    mask of ``g`` cost anything.
    """
    x, y = saved
    out_size = g.shape[1:-1]
    if relu:
        blocked = pooled(y.shape, bool)
        np.less_equal(y, 0, out=blocked)
        windows = y.size - np.count_nonzero(blocked)
        reference = pooled(y.shape, y.dtype)
        np.subtract(y, blocked, out=reference)  # y where y > 0, else y - 1 = -1
    else:
        reference, windows = y, y.size
    if np.isnan(y).any():
        windows = None  # a NaN window has no hit: the count could not show a tie elsewhere
    covered = (slice(None),) + tuple(slice(0, o * k) for o, k in zip(out_size, pool_size))
    split = (x.shape[0],) + tuple(d for o, k in zip(out_size, pool_size) for d in (o, k))
    split += (x.shape[-1],)
    spread = (g.shape[0],) + tuple(d for o in out_size for d in (o, 1)) + (g.shape[-1],)
    x_split = _split_view(x[covered], split)
    hit = pooled(split, bool)
    np.equal(x_split, reference.reshape(spread), out=hit)
    if math.prod(pool_size) > 1 and np.count_nonzero(hit) != windows:
        _first_hits(
            [hit[(slice(None),) + _offset_index(o) + (slice(None),)] for o in _offsets(pool_size)]
        )
    gx = pooled(x_shape, g.dtype)
    np.multiply(g.reshape(spread), hit, out=_split_view(gx[covered], split))
    for axis, (o, k) in enumerate(zip(out_size, pool_size)):
        if o * k < x_shape[1 + axis]:
            gx[(slice(None),) * (1 + axis) + (slice(o * k, None),)] = 0
    return gx


def _offset_index(offset):
    """Index of one window offset in the ``(o1, k1, o2, k2, ...)`` axes of a split view."""
    return tuple(item for j in offset for item in (slice(None), j))


def _split_view(a, shape):
    """``a`` (a view) reshaped to ``shape`` by splitting axes, without a copy."""
    view = a.reshape(shape)
    if not np.shares_memory(view, a):  # numpy copied: splitting was impossible as a view
        raise AssertionError("internal: window split of a pooling view needs a copy")
    return view


def _first_hits(hit):
    """Clear ``hit[k]`` (in place) wherever an earlier ``hit[j]``, ``j < k``, is set.
    ``hit``: a list of equally shaped boolean arrays (views), one per window offset."""
    taken = pooled(hit[0].shape, bool) if len(hit) > 2 else None
    for k in range(1, len(hit)):
        # hit[k] & ~taken, taken: the windows whose first maximum came earlier
        np.greater(hit[k], taken if k > 1 else hit[0], out=hit[k])
        if k == 1 and taken is not None:
            np.logical_or(hit[0], hit[1], out=taken)
        elif 1 < k < len(hit) - 1:
            np.logical_or(taken, hit[k], out=taken)


CONV = NumpyConv()
CONV_KERNELS = {
    "conv": CONV,
    "conv_transpose": ConvTransposeFromConv(CONV),
    "pool": NumpyPool(),
}
