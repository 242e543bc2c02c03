"""N-dimensional max and average pooling (1D, 2D, 3D: the same code).

Layout: x ``(N, *spatial, C)`` (``channels_last``) or ``(N, C, *spatial)``
(``channels_first``, transposed inside the op); y ``(N, *out, C)`` likewise.

Keras semantics: ``padding="valid"`` drops windows that do not fit,
``"same"`` gives ``ceil(size / stride)`` outputs with the TensorFlow split of the
padding (the odd cell at the end), and padded cells are ignored -- the maximum
is taken over the valid cells of a window and the average divides by their
count. Max pooling sends the gradient to the first maximal cell of a window
(row-major order), as PyTorch does.

The backend kernel ``"pool"`` may replace the generic code: an object with
``forward(x, kind, pool_size, strides, pads, keep) -> (y, saved)`` and
``backward(g, saved, x_shape, kind, pool_size, strides, pads) -> gx`` on
channels_last arrays (``kind`` is ``"max"`` or ``"avg"``); either may return None.
``saved`` has the generic form: ``(x, y)`` for max (backward finds each
window's first maximum again), the valid-cell count (a float or a
``(1, *out, 1)`` array) for avg.

ReLU before max pooling (``Conv(..., relu=True)`` feeding ``Pool("max")``, the
usual CNN block): the ReLU's backward ``where(x > 0, gx, 0)`` can be folded
into the pool's, because the pooled gradient lands only on each window's
maximum, which is > 0 exactly where the pool output ``y`` is. So when the
pool's input was made by such a Conv, has no other consumer whose gradient
would be summed in, and keeps no ``.grad`` of its own, the pool backpropagates
``where(y > 0, g, 0)`` (a quarter of the cells for 2x2 windows) and marks its
result so that the Conv skips its ReLU mask (see ``Conv.premasked``). A kernel
may do that masking itself through an optional method with the arguments of
``backward``: ``backward_relu(g, saved, x_shape, kind, pool_size, strides, pads) -> gx``
(equal to ``backward`` of ``where(y > 0, g, 0)``; may return None).
"""

import math

from ..autograd import Function
from .convolution import (
    Conv,
    _to_first,
    _to_last,
    conv_output_size,
    conv_padding,
    kernel_offsets,
    normalize_tuple,
    reframe,
    window_slice,
)


def _pad_with(xp, x, pads, value):
    if all(b == 0 and a == 0 for b, a in pads):
        return x
    shape = (
        (x.shape[0],) + tuple(n + b + a for n, (b, a) in zip(x.shape[1:-1], pads)) + (x.shape[-1],)
    )
    out = xp.full(shape, value, dtype=x.dtype, device=x.device)
    inner = (
        (slice(None),)
        + tuple(slice(b, b + n) for n, (b, _) in zip(x.shape[1:-1], pads))
        + (slice(None),)
    )
    out[inner] = x
    return out


def valid_counts(x_shape, pool_size, strides, pads):
    """Per-axis counts of the valid (unpadded) cells of each window, as lists."""
    counts = []
    for n, k, s, (b, a) in zip(x_shape[1:-1], pool_size, strides, pads):
        out = conv_output_size(n, k, s, 1, (b, a))
        counts.append([min(o * s - b + k, n) - max(o * s - b, 0) for o in range(out)])
    return counts


def count_array(xp, x_shape, pool_size, strides, pads, dtype, device):
    """``(1, *out, 1)`` array of valid cells per window (padding="same" averages)."""
    counts = valid_counts(x_shape, pool_size, strides, pads)
    rank = len(counts)
    total = None
    for axis, c in enumerate(counts):
        shape = (1,) + tuple(len(c) if i == axis else 1 for i in range(rank)) + (1,)
        part = xp.reshape(xp.asarray(c, dtype=dtype, device=device), shape)
        total = part if total is None else total * part
    return total


def pool_forward(xp, x, kind, pool_size, strides, pads):
    """Generic forward: ``(y, saved)``; ``saved`` is the argmax offset (max) or the counts (avg)."""
    rank = len(pool_size)
    ones = (1,) * rank
    out_size = tuple(
        conv_output_size(n, k, s, 1, p)
        for n, k, s, p in zip(x.shape[1:-1], pool_size, strides, pads)
    )
    padded = any(b or a for b, a in pads)
    if kind == "max":
        xpad = _pad_with(xp, x, pads, -math.inf)
        y = None
        for offset in kernel_offsets(pool_size):
            part = xpad[window_slice(offset, strides, ones, out_size)]
            y = part if y is None else xp.maximum(y, part)
        return y, (x, y)
    xpad = reframe(xp, x, pads)
    total = None
    for offset in kernel_offsets(pool_size):
        part = xpad[window_slice(offset, strides, ones, out_size)]
        total = part if total is None else total + part
    count = (
        count_array(xp, x.shape, pool_size, strides, pads, x.dtype, x.device)
        if padded
        else float(math.prod(pool_size))
    )
    return total / count, count


def pool_backward(xp, g, saved, x_shape, kind, pool_size, strides, pads):
    rank = len(pool_size)
    ones = (1,) * rank
    out_size = tuple(g.shape[1:-1])
    framed = (
        (x_shape[0],) + tuple(n + b + a for n, (b, a) in zip(x_shape[1:-1], pads)) + (x_shape[-1],)
    )
    gx = xp.zeros(framed, dtype=g.dtype, device=g.device)
    zero = xp.zeros((), dtype=g.dtype, device=g.device)
    if kind == "avg":
        g = g / saved
        for offset in kernel_offsets(pool_size):
            index = window_slice(offset, strides, ones, out_size)
            gx[index] = gx[index] + g
    else:
        x, y = saved
        xpad = _pad_with(xp, x, pads, -math.inf)
        free = None  # windows whose first maximum is still to be found
        for offset in kernel_offsets(pool_size):
            index = window_slice(offset, strides, ones, out_size)
            hit = xpad[index] == y
            if free is None:
                free = xp.logical_not(hit)
            else:
                hit = xp.logical_and(hit, free)
                free = xp.logical_and(free, xp.logical_not(hit))
            gx[index] = gx[index] + xp.where(hit, g, zero)
    return reframe(xp, gx, tuple((-b, -a) for b, a in pads))


class Pool(Function):
    """Max or average pooling over the spatial axes. x ``(N, *S, C)`` -> ``(N, *O, C)``."""

    def __init__(self, kind, pool_size, strides, pads, channels_first=False):
        self.kind = kind
        self.pool_size, self.strides = tuple(pool_size), tuple(strides)
        self.pads = tuple(tuple(p) for p in pads)
        self.channels_first = channels_first
        self.saved = self.y = None

    def forward(self, x):
        xp, cf = self.xp, self.channels_first
        x = _to_last(xp, x, cf)
        keep = bool(self.needs_input_grad and self.needs_input_grad[0])
        kernel = self.backend.kernel("pool")
        args = (self.kind, self.pool_size, self.strides, self.pads)
        result = kernel.forward(x, *args, keep) if kernel is not None else None
        if result is None:
            result = pool_forward(xp, x, *args)
        y, saved = result
        if keep:
            self.saved, self.x_shape = saved, tuple(x.shape)
            self.y = y if self.kind == "max" else None
        return _to_first(xp, y, cf)

    def _relu_producer(self):
        """The Conv whose fused ReLU made this pool's input, when its mask may be folded in."""
        if self.kind != "max" or not self.inputs:
            return None
        x = self.inputs[0]
        creator = getattr(x, "creator", None)
        if not isinstance(creator, Conv) or not creator.relu or x.retains_grad:
            return None
        if creator.channels_first != self.channels_first:
            return None
        return creator

    def backward(self, g):
        xp, cf = self.xp, self.channels_first
        g = _to_last(xp, g, cf)
        args = (self.x_shape, self.kind, self.pool_size, self.strides, self.pads)
        kernel = self.backend.kernel("pool")
        producer = self._relu_producer()
        gx = None
        if producer is not None:
            backward_relu = getattr(kernel, "backward_relu", None)
            if backward_relu is not None:
                gx = backward_relu(g, self.saved, *args)
            if gx is None:
                g = xp.where(self.y > 0, g, xp.zeros((), dtype=g.dtype, device=g.device))
        if gx is None and kernel is not None:
            gx = kernel.backward(g, self.saved, *args)
        if gx is None:
            gx = pool_backward(xp, g, self.saved, *args)
        gx = _to_first(xp, gx, cf)
        if producer is not None:
            producer.premasked = gx
        return gx

    def release(self):
        super().release()
        self.saved = self.y = None


def pool(x, kind, pool_size, strides=None, padding="valid", data_format="channels_last"):
    """N-D pooling, ``kind`` ``"max"`` or ``"avg"``; ``rank = len(pool_size)`` spatial axes.

    x ``(N, *S, C)`` (or ``(N, C, *S)`` with ``channels_first``); strides default to
    ``pool_size``; ``padding`` ``"valid"`` or ``"same"`` (padded cells ignored).
    """
    if kind not in ("max", "avg"):
        raise ValueError(f"pool: kind must be 'max' or 'avg', got {kind!r}")
    rank = len(pool_size) if not isinstance(pool_size, int) else x.ndim - 2
    pool_size = normalize_tuple(pool_size, rank, "pool_size")
    strides = pool_size if strides is None else normalize_tuple(strides, rank, "strides")
    if x.ndim != rank + 2:
        raise ValueError(
            f"pool: expected an input of {rank + 2} dimensions (batch, {rank} spatial, channels), "
            f"got shape {tuple(x.shape)}"
        )
    channels_first = data_format == "channels_first"
    spatial = tuple(x.shape[2:]) if channels_first else tuple(x.shape[1:-1])
    pads = tuple(conv_padding(n, k, s, 1, padding) for n, k, s in zip(spatial, pool_size, strides))
    for n, k, s, p in zip(spatial, pool_size, strides, pads):
        if conv_output_size(n, k, s, 1, p) <= 0:
            raise ValueError(
                f"pool: pool_size {pool_size} is larger than the input of spatial shape {spatial} "
                f"with padding={padding!r}"
            )
    return Pool(kind, pool_size, strides, pads, channels_first)(x)


def max_pool(x, pool_size, strides=None, padding="valid", data_format="channels_last"):
    return pool(x, "max", pool_size, strides, padding, data_format)


def average_pool(x, pool_size, strides=None, padding="valid", data_format="channels_last"):
    return pool(x, "avg", pool_size, strides, padding, data_format)
