"""Shape operations: reshape, transpose, expand/squeeze, concat/stack/split,
broadcast, slicing, gather (``take``) and padding."""

from ..autograd import Function, Tensor
from ._util import normalize_axes


class Reshape(Function):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.input_shape = tuple(x.shape)
        return self.xp.reshape(x, self.shape)

    def backward(self, g):
        return self.xp.reshape(g, self.input_shape)


class Transpose(Function):
    def __init__(self, axes=None):
        self.axes = axes

    def forward(self, x):
        axes = self.axes if self.axes is not None else tuple(reversed(range(x.ndim)))
        self.axes = tuple(a % x.ndim for a in axes)
        return self.xp.permute_dims(x, self.axes)

    def backward(self, g):
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a] = i
        return self.xp.permute_dims(g, tuple(inverse))


class ExpandDims(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        return self.xp.expand_dims(x, axis=self.axis)

    def backward(self, g):
        return self.xp.squeeze(g, axis=self.axis)


class Squeeze(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        self.input_shape = tuple(x.shape)
        return self.xp.squeeze(x, axis=self.axis)

    def backward(self, g):
        return self.xp.reshape(g, self.input_shape)


class BroadcastTo(Function):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.input_shape = tuple(x.shape)
        return self.xp.broadcast_to(x, self.shape)

    def backward(self, g):
        from ._util import sum_to_shape

        return sum_to_shape(self.xp, g, self.input_shape)


class Concat(Function):
    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *xs):
        self.sizes = [x.shape[self.axis] for x in xs]
        return self.xp.concat(xs, axis=self.axis)

    def backward(self, g):
        axis = self.axis % g.ndim
        grads, start = [], 0
        for size in self.sizes:
            index = (slice(None),) * axis + (slice(start, start + size), Ellipsis)
            grads.append(g[index])
            start += size
        return tuple(grads)


class Stack(Function):
    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *xs):
        self.count = len(xs)
        return self.xp.stack(xs, axis=self.axis)

    def backward(self, g):
        xp = self.xp
        axis = self.axis % g.ndim
        return tuple(
            xp.squeeze(g[(slice(None),) * axis + (slice(i, i + 1), Ellipsis)], axis=axis)
            for i in range(self.count)
        )


class GetItem(Function):
    """Basic indexing (integers, slices, None, Ellipsis); backward writes ``g`` into zeros."""

    def __init__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if not any(k is Ellipsis for k in key):
            # NumPy's implicit trailing slices, spelled out for the standard
            key = key + (Ellipsis,)
        self.key = key

    def forward(self, x):
        self.input_shape, self.dtype, self.device = tuple(x.shape), x.dtype, x.device
        return x[self.key]

    def backward(self, g):
        xp = self.xp
        gx = xp.zeros(self.input_shape, dtype=self.dtype, device=self.device)
        gx[self.key] = g
        return gx


class Take(Function):
    """``take(x, indices, axis)``: gather along one axis (negative indices count from the end);
    repeated indices add up in backward."""

    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, x, indices):
        xp = self.xp
        self.axis = self.axis % x.ndim
        flat = xp.reshape(indices, (-1,))
        flat = xp.where(flat < 0, flat + x.shape[self.axis], flat)  # -1: the last, as in NumPy
        self.input_shape, self.indices = tuple(x.shape), xp.reshape(flat, indices.shape)
        y = xp.take(x, flat, axis=self.axis)
        shape = x.shape[: self.axis] + tuple(indices.shape) + x.shape[self.axis + 1 :]
        return self.xp.reshape(y, shape)

    def backward(self, g):
        kernel = self.backend.kernel("take_backward")
        if kernel is not None:
            return kernel(g, self.indices, self.input_shape, self.axis), None
        xp = self.xp
        n = self.input_shape[self.axis]
        flat = xp.reshape(self.indices, (-1,))
        # (len(flat), n) one-hot; the gradient of a gather is its transpose times g
        one_hot = xp.astype(flat[:, None] == xp.arange(n, device=g.device)[None, :], g.dtype)
        moved = xp.moveaxis(
            g,
            tuple(range(self.axis, self.axis + self.indices.ndim)),
            tuple(range(self.indices.ndim)),
        )
        moved = xp.reshape(moved, (flat.shape[0], -1))
        gx = xp.reshape(
            one_hot.T @ moved,
            (n,) + self.input_shape[: self.axis] + self.input_shape[self.axis + 1 :],
        )
        return xp.moveaxis(gx, 0, self.axis), None


class Pad(Function):
    """Constant padding; ``pad_width`` is ``((before, after), ...)`` per axis."""

    def __init__(self, pad_width, value=0.0):
        self.pad_width, self.value = tuple(tuple(p) for p in pad_width), value

    def forward(self, x):
        xp = self.xp
        shape = tuple(s + b + a for s, (b, a) in zip(x.shape, self.pad_width))
        y = xp.full(shape, self.value, dtype=x.dtype, device=x.device)
        y[self._inner(x.shape)] = x
        self.input_shape = tuple(x.shape)
        return y

    def _inner(self, shape):
        return tuple(slice(b, b + s) for s, (b, _) in zip(shape, self.pad_width))

    def backward(self, g):
        return g[self._inner(self.input_shape)]


def reshape(x, shape):
    return Reshape(shape)(x)


def transpose(x, axes=None):
    return Transpose(axes)(x)


permute_dims = transpose


def expand_dims(x, axis):
    return ExpandDims(axis)(x)


def squeeze(x, axis):
    return Squeeze(axis)(x)


def broadcast_to(x, shape):
    return BroadcastTo(shape)(x)


def concat(xs, axis=0):
    return Concat(axis)(*xs)


concatenate = concat


def stack(xs, axis=0):
    return Stack(axis)(*xs)


def split(x, sections, axis=-1):
    """Split into ``sections`` equal parts (an int) or at the given sizes (a list)."""
    size = x.shape[axis]
    if isinstance(sections, int):
        if size % sections:
            raise ValueError(f"split: axis of size {size} does not divide into {sections} parts")
        sizes = [size // sections] * sections
    else:
        sizes = list(sections)
    ndim = len(x.shape)
    axis = normalize_axes(axis, ndim)[0]
    parts, start = [], 0
    for s in sizes:
        parts.append(getitem(x, (slice(None),) * axis + (slice(start, start + s), Ellipsis)))
        start += s
    return parts


def getitem(x, key):
    if isinstance(key, Tensor):
        key = key.value
    if isinstance(key, tuple):
        key = tuple(k.value if isinstance(k, Tensor) else k for k in key)
    if hasattr(key, "shape") or (isinstance(key, tuple) and any(hasattr(k, "shape") for k in key)):
        if hasattr(key, "shape") and len(key.shape) >= 1 and "int" in str(key.dtype):
            return take(x, key, axis=0)
        raise TypeError(
            "indexing a Tensor with arrays: use dlx.ops.take (integers) or dlx.ops.where (masks)"
        )
    return GetItem(key)(x)


def take(x, indices, axis=0):
    if isinstance(indices, Tensor):
        indices = indices.value
    return Take(axis)(x, indices)


def flatten(x, start_axis=1):
    shape = tuple(x.shape)
    size = 1
    for s in shape[start_axis:]:
        size *= s
    return reshape(x, shape[:start_axis] + (size,))


def pad(x, pad_width, value=0.0):
    return Pad(pad_width, value)(x)
