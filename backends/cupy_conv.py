"""Convolution, transposed convolution and pooling kernels of the cupy backend.

Glue between the kernel-table contracts of ``dlx/ops/convolution.py`` and
``dlx/ops/pooling.py`` and the CUDA sources ``backends/cuda/convolution.cu`` and
``backends/cuda/pooling.cu``. Written against a NumPy-compatible ``xp``
(``cupy`` on the GPU, ``numpy`` under the CPU emulation) and a loader
``load(source_name, name_expressions) -> module`` (see ``cuda_modules.py``).

Convolution is im2col + one matrix product per group on cuBLAS (``xp.matmul``):

* ``im2col`` writes the columns ``(G, M, Kp * C/G)`` (M output positions, Kp
  kernel offsets, row-major) for every group at once, so grouped products are
  one batched ``matmul``; a 1x1, stride-1, unpadded, ungrouped convolution uses
  x itself as its columns;
* a fused epilogue adds the bias and applies the ReLU (and puts grouped
  products back in channels_last order) in one pass; ``relu_grad`` masks the
  gradient in one pass;
* the input gradient is ``g @ w^T`` followed by a gather ``col2im`` (each input
  cell sums the column entries that read it: no atomics), which is also the
  transposed convolution's forward; negative pads (cropping) need nothing special;
* ``forward(..., keep=True)`` keeps the columns as ``saved`` for ``weight_grad``;
* ``bias_grad`` is one matrix-vector product with a cached vector of ones.

Pooling: one thread per output cell forward, one per input cell backward
(gather form). Max pooling with ``keep=True`` keeps the int32 index of each
window's first maximal valid cell in a :class:`MaxPoolArgmax` as ``saved``, not
the generic ``(x, y)``: ``CudaPool.backward`` never returns None for that form
(the generic backward could not read it), and returns None for the generic
form. Average pooling keeps the generic form (the valid-cell counts).

Every method returns None -- so the generic Array API code runs -- for inputs
other than arrays of ``xp`` in float32 or float64 with one dtype throughout, and
for geometries it does not know (e.g. more than 3 spatial axes).
"""

import math

import numpy as np

from .conv_transpose_from_conv import ConvTransposeFromConv
from .pool_counts import valid_cell_counts

_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_CONV_KERNELS = ("im2col", "col2im", "bias_act", "relu_mask")
_POOL_KERNELS = ("max_pool_forward", "max_pool_backward", "avg_pool_forward", "avg_pool_backward")

CUDA_SOURCES = {
    "convolution.cu": [f"{k}<{t}>" for k in _CONV_KERNELS for t in ("float", "double")],
    "pooling.cu": [f"{k}<{t}>" for k in _POOL_KERNELS for t in ("float", "double")],
}

_BLOCK = 256
_MAX_BLOCKS = 8192  # grid-stride loops cover the rest


class _Launcher:
    """Loads the two sources on first use and launches their kernels."""

    def __init__(self, xp, load):
        self.xp, self._load = xp, load
        self._functions = {}  # (source, kernel, dtype) -> compiled kernel

    def _function(self, source, kernel, dtype):
        key = (source, kernel, dtype)
        function = self._functions.get(key)
        if function is None:
            module = self._load(source, CUDA_SOURCES[source])  # the loader caches modules
            name = f"{kernel}<{_TYPES[np.dtype(dtype)]}>"
            function = self._functions[key] = module.get_function(name)
        return function

    def __call__(self, source, kernel, dtype, work, *args):
        """Run ``kernel<T>`` (T from ``dtype``) over ``work`` threads' worth of cells."""
        if work <= 0:
            return
        function = self._function(source, kernel, dtype)
        blocks = min((work + _BLOCK - 1) // _BLOCK, _MAX_BLOCKS)
        function((blocks,), (_BLOCK,), args)


def _supported(xp, *arrays):
    """True when every array (None skipped) is an ``xp`` array of one float dtype."""
    first = arrays[0]
    if not isinstance(first, xp.ndarray) or np.dtype(first.dtype) not in _TYPES:
        return False
    return all(a is None or (isinstance(a, xp.ndarray) and a.dtype == first.dtype) for a in arrays)


def _i32(*values):
    return tuple(np.int32(v) for v in values)


def _as_3d(values, fill):
    """Per-axis values of a 1-3 axis geometry, led by ``fill`` up to 3 axes."""
    return (fill,) * (3 - len(values)) + tuple(values)


def _out_size(spatial, kernel_size, strides, dilation, pads):
    return tuple(
        (n + b + a - (k - 1) * d - 1) // s + 1
        for n, k, s, d, (b, a) in zip(spatial, kernel_size, strides, dilation, pads)
    )


def _geometry_args(x_shape, out_size, kernel_size, strides, dilation, pads):
    """The int32 ``N, D, H, W, C, OD, OH, OW, KD, KH, KW, SD, SH, SW, DD, DH, DW, PD, PH, PW``."""
    return _i32(
        x_shape[0],
        *_as_3d(x_shape[1:-1], 1),
        x_shape[-1],
        *_as_3d(out_size, 1),
        *_as_3d(kernel_size, 1),
        *_as_3d(strides, 1),
        *_as_3d(dilation, 1),
        *_as_3d(tuple(b for b, _ in pads), 0),
    )


def _without_dilation(args):
    """Pooling's geometry: :func:`_geometry_args` less ``DD, DH, DW``."""
    return args[:14] + args[17:]


def _fits(rank, out_size):
    return 1 <= rank <= 3 and all(o > 0 for o in out_size)


# ---------------------------------------------------------------------------
# convolution


class CudaConv:
    """Kernel table entry ``"conv"`` (contract in ``dlx.ops.convolution``)."""

    def __init__(self, launch):
        self.launch, self.xp = launch, launch.xp
        self._ones = {}  # (M, dtype) -> ones(M): bias gradients as one matrix-vector product

    def _columns(self, x, kernel_size, geometry, out_size):
        """``(G, M, Kp * C/G)`` columns of channels_last ``x`` (a view of x for 1x1 kernels)."""
        xp = self.xp
        strides, dilation, pads, groups = geometry
        n, c = x.shape[0], x.shape[-1]
        kp = math.prod(kernel_size)
        m = n * math.prod(out_size)
        plain = all(s == 1 for s in strides) and all(b == 0 and a == 0 for b, a in pads)
        if kp == 1 and groups == 1 and plain:
            return xp.reshape(x, (1, m, c))
        cols = xp.empty((groups, m, kp * (c // groups)), dtype=x.dtype)
        args = _geometry_args(x.shape, out_size, kernel_size, strides, dilation, pads)
        self.launch(
            "convolution.cu", "im2col", x.dtype, cols.size, x, cols, *args, np.int32(groups)
        )
        return cols

    def forward(self, x, w, b, geometry, relu, keep):
        xp = self.xp
        if not _supported(xp, x, w, b):
            return None
        strides, dilation, pads, groups = geometry
        kernel_size = tuple(w.shape[:-2])
        out_size = _out_size(x.shape[1:-1], kernel_size, strides, dilation, pads)
        if not _fits(len(kernel_size), out_size):
            return None
        x, w = xp.ascontiguousarray(x), xp.ascontiguousarray(w)
        n, c, f = x.shape[0], x.shape[-1], w.shape[-1]
        kp = math.prod(kernel_size)
        cg, fg = c // groups, f // groups
        cols = self._columns(x, kernel_size, geometry, out_size)
        m = cols.shape[1]
        if groups == 1:
            y = xp.matmul(cols[0], xp.reshape(w, (kp * c, f)))  # (M, F)
            src = y
        else:
            wg = xp.reshape(
                xp.transpose(xp.reshape(w, (kp, cg, groups, fg)), (2, 0, 1, 3)),
                (groups, kp * cg, fg),
            )
            src = xp.matmul(cols, wg)  # (G, M, Fg)
            y = xp.empty((m, f), dtype=x.dtype)
        if groups > 1 or b is not None or relu:
            bias = src if b is None else xp.ascontiguousarray(b)
            self.launch(
                "convolution.cu",
                "bias_act",
                x.dtype,
                y.size,
                src,
                bias,
                y,
                np.int64(m),
                *_i32(groups, fg, b is not None, relu),
            )
        y = xp.reshape(y, (n,) + out_size + (f,))
        return y, (cols if keep else None)

    def relu_grad(self, g, y):
        xp = self.xp
        if not _supported(xp, g, y) or g.shape != y.shape:
            return None
        g, y = xp.ascontiguousarray(g), xp.ascontiguousarray(y)
        out = xp.empty(g.shape, dtype=g.dtype)
        self.launch("convolution.cu", "relu_mask", g.dtype, g.size, g, y, out, np.int64(g.size))
        return out

    def bias_grad(self, g):
        """``g`` summed over every axis but the last, as ``ones(M) @ g`` on cuBLAS."""
        xp = self.xp
        if not _supported(xp, g):
            return None
        f = g.shape[-1]
        m = g.size // f if f else 0
        key = (m, np.dtype(g.dtype))
        ones = self._ones.get(key)
        if ones is None:
            if len(self._ones) >= 8:  # a few batch sizes at a time
                self._ones.clear()
            ones = self._ones[key] = xp.ones((m,), dtype=g.dtype)
        return xp.matmul(ones, xp.reshape(xp.ascontiguousarray(g), (m, f)))

    def _by_group(self, g2, groups):
        """``(M, F)`` -> ``(G, M, F/G)``, contiguous."""
        xp = self.xp
        m, f = g2.shape
        return xp.ascontiguousarray(
            xp.transpose(xp.reshape(g2, (m, groups, f // groups)), (1, 0, 2))
        )

    def input_grad(self, g, w, geometry, x_shape):
        xp = self.xp
        if not _supported(xp, g, w):
            return None
        strides, dilation, pads, groups = geometry
        kernel_size = tuple(w.shape[:-2])
        out_size = tuple(g.shape[1:-1])
        if not _fits(len(kernel_size), out_size):
            return None
        if out_size != _out_size(x_shape[1:-1], kernel_size, strides, dilation, pads):
            return None
        g, w = xp.ascontiguousarray(g), xp.ascontiguousarray(w)
        c, f = x_shape[-1], w.shape[-1]
        kp = math.prod(kernel_size)
        cg, fg = c // groups, f // groups
        m = math.prod(g.shape[:-1])
        if groups == 1:  # one product; cuBLAS reads the transposed kernel in place
            dcols = xp.matmul(xp.reshape(g, (m, f)), xp.reshape(w, (kp * c, f)).T)
        else:
            gg = self._by_group(xp.reshape(g, (m, f)), groups)  # (G, M, Fg)
            # (G, Fg, Kp*Cg): the kernel of each group, transposed
            wt = xp.transpose(xp.reshape(w, (kp, cg, groups, fg)), (2, 3, 0, 1))
            wt = xp.ascontiguousarray(xp.reshape(wt, (groups, fg, kp * cg)))
            dcols = xp.matmul(gg, wt)  # (G, M, Kp*Cg)
        plain = all(s == 1 for s in strides) and all(b == 0 and a == 0 for b, a in pads)
        if kp == 1 and groups == 1 and plain:
            return xp.reshape(dcols, tuple(x_shape))
        gx = xp.empty(tuple(x_shape), dtype=g.dtype)
        args = _geometry_args(x_shape, out_size, kernel_size, strides, dilation, pads)
        self.launch(
            "convolution.cu", "col2im", g.dtype, gx.size, dcols, gx, *args, np.int32(groups)
        )
        return gx

    def weight_grad(self, x, g, geometry, w_shape, saved):
        xp = self.xp
        if not _supported(xp, x, g):
            return None
        strides, dilation, pads, groups = geometry
        kernel_size = tuple(w_shape[:-2])
        out_size = tuple(g.shape[1:-1])
        if not _fits(len(kernel_size), out_size):
            return None
        if out_size != _out_size(x.shape[1:-1], kernel_size, strides, dilation, pads):
            return None
        kp = math.prod(kernel_size)
        c, f = x.shape[-1], g.shape[-1]
        cg, fg = c // groups, f // groups
        cols = saved
        if cols is None:
            cols = self._columns(xp.ascontiguousarray(x), kernel_size, geometry, out_size)
        m = cols.shape[1]
        g2 = xp.reshape(xp.ascontiguousarray(g), (m, f))
        if groups == 1:  # cols^T read in place by cuBLAS
            return xp.reshape(xp.matmul(cols[0].T, g2), tuple(w_shape))
        gw = xp.matmul(xp.transpose(cols, (0, 2, 1)), self._by_group(g2, groups))  # (G, Kp*Cg, Fg)
        gw = xp.transpose(xp.reshape(gw, (groups, kp, cg, fg)), (1, 2, 0, 3))
        return xp.reshape(xp.ascontiguousarray(gw), tuple(w_shape))


# ---------------------------------------------------------------------------
# pooling


class MaxPoolArgmax:
    """``saved`` of a max-pooling forward: ``index``, per output cell the int32 row-major
    index inside its window of the first maximal valid cell, and ``y``, the output
    (read by ``backward_relu``); both channels_last, shape of y."""

    __slots__ = ("index", "y")

    def __init__(self, index, y):
        self.index, self.y = index, y

    def __iter__(self):  # the generic backward unpacks (x, y): say why it cannot
        raise TypeError(
            "max-pooling state saved by the CUDA pool kernel (argmax indices, not (x, y)): "
            "run the backward pass with the kernel table enabled, as the forward pass was"
        )


class CudaPool:
    """Kernel table entry ``"pool"`` (contract in ``dlx.ops.pooling``)."""

    def __init__(self, launch):
        self.launch, self.xp = launch, launch.xp
        self._counts = {}  # geometry -> (1, *out, 1) valid-cell counts of "same" averages

    def forward(self, x, kind, pool_size, strides, pads, keep):
        xp = self.xp
        if kind not in ("max", "avg") or not _supported(xp, x):
            return None
        rank = len(pool_size)
        ones = (1,) * rank
        out_size = _out_size(x.shape[1:-1], pool_size, strides, ones, pads)
        if not _fits(rank, out_size) or any(b < 0 or a < 0 for b, a in pads):
            return None
        x = xp.ascontiguousarray(x)
        y = xp.empty((x.shape[0],) + out_size + (x.shape[-1],), dtype=x.dtype)
        args = _geometry_args(x.shape, out_size, pool_size, strides, ones, pads)
        geometry = _without_dilation(args)
        if kind == "max":
            index = xp.empty(y.shape if keep else (1,), dtype=np.int32)
            self.launch(
                "pooling.cu",
                "max_pool_forward",
                x.dtype,
                y.size,
                x,
                y,
                index,
                np.int32(keep),
                *geometry,
            )
            return y, (MaxPoolArgmax(index, y) if keep else None)
        self.launch("pooling.cu", "avg_pool_forward", x.dtype, y.size, x, y, *geometry)
        return y, (self._count(x.shape, pool_size, strides, pads, x.dtype) if keep else None)

    def _count(self, x_shape, pool_size, strides, pads, dtype):
        """The generic ``saved`` of an average: a float, or ``(1, *out, 1)`` counts when padded."""
        if not any(b or a for b, a in pads):
            return float(math.prod(pool_size))
        key = (tuple(x_shape[1:-1]), tuple(pool_size), tuple(strides), tuple(pads), np.dtype(dtype))
        count = self._counts.get(key)
        if count is None:
            counts = valid_cell_counts(x_shape, pool_size, strides, pads, dtype)
            count = self._counts[key] = self.xp.asarray(counts)
        return count

    def backward(self, g, saved, x_shape, kind, pool_size, strides, pads):
        if kind == "max":
            return self._max_backward(g, saved, x_shape, pool_size, strides, pads, False)
        if kind != "avg" or not _supported(self.xp, g):
            return None
        g = self.xp.ascontiguousarray(g)
        gx, geometry = self._gradient_buffer(g, x_shape, pool_size, strides, pads)
        self.launch("pooling.cu", "avg_pool_backward", g.dtype, gx.size, g, gx, *geometry)
        return gx

    def backward_relu(self, g, saved, x_shape, kind, pool_size, strides, pads):
        """``backward`` of ``where(y > 0, g, 0)`` (a ReLU before the max pool, folded in)."""
        if kind != "max":
            return None
        return self._max_backward(g, saved, x_shape, pool_size, strides, pads, True)

    def _gradient_buffer(self, g, x_shape, pool_size, strides, pads):
        """An empty gx and the kernels' geometry arguments."""
        out_size = tuple(g.shape[1:-1])
        args = _geometry_args(x_shape, out_size, pool_size, strides, (1,) * len(pool_size), pads)
        return self.xp.empty(tuple(x_shape), dtype=g.dtype), _without_dilation(args)

    def _max_backward(self, g, saved, x_shape, pool_size, strides, pads, relu):
        xp = self.xp
        if not isinstance(saved, MaxPoolArgmax):
            return None  # the generic (x, y) form: the generic backward reads it
        dtype = None
        if not _supported(xp, g, saved.y):
            # the generic path cannot read our saved form: compute in y's dtype, cast back
            dtype = g.dtype
            g = xp.asarray(g, dtype=saved.y.dtype)
        g = xp.ascontiguousarray(g)
        gx, geometry = self._gradient_buffer(g, x_shape, pool_size, strides, pads)
        y = saved.y if relu else g  # g: a placeholder the kernel does not read
        self.launch(
            "pooling.cu",
            "max_pool_backward",
            g.dtype,
            gx.size,
            g,
            saved.index,
            y,
            np.int32(relu),
            gx,
            *geometry,
        )
        return gx if dtype is None else gx.astype(dtype)


def conv_kernels(xp, load):
    """``{"conv", "conv_transpose", "pool"}`` kernel-table entries on ``xp`` arrays."""
    launch = _Launcher(xp, load)
    conv = CudaConv(launch)
    return {"conv": conv, "conv_transpose": ConvTransposeFromConv(conv), "pool": CudaPool(launch)}
