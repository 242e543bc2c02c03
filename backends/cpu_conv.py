"""Compiled CPU kernels for the conv ops (``backends/cpu/convolution.cpp``).

:class:`CompiledConv` is :class:`~.numpy_conv.NumpyConv` with each primitive one C++
call on dlx's thread pool (``cpu/parallel.h``), its products made by NumPy's OpenBLAS
on one thread per part:

* the forward goes through the rows in blocks (about ``block_bytes`` of columns and
  outputs each, at least one block per thread): each part im2cols a block from the
  unpadded input (zeros where a window leaves it), multiplies it at once and adds bias
  + ReLU to its rows while they are in its cache. Columns kept for the weight gradient
  are written whole, block by block; an inference forward's live only in per-thread
  scratch. Layouts are the NumPy kernel's: ``(M, Kp * C)`` rows, or for single-channel
  input ``(Kp [+ 1], M)`` rows per kernel offset, handed on transposed (the extra row of
  ones carries the bias through the product); 1x1 kernels read ``x`` itself. For float32
  with a multiple of 16 filters on AVX-512 (``register_product``) the product is the C++
  code's own: register tiles of rows over panels of 144 rows of the kernel (in the L1
  cache), one fused multiply-add per term in order as OpenBLAS's kernels add, bias and
  ReLU in the store -- 20% above OpenBLAS's rate on these skinny (F = 64) products;
* the input gradient goes through the batch in blocks of whole samples: per block one
  product ``g2 @ w.reshape(Kp * C, F).T`` into the part's scratch columns, then col2im,
  which adds every output cell's row into the input cells it met, output cells in
  reverse order -- so every input cell gets its terms in the order of the NumPy kernel's
  window additions (kernel offsets ascending) while the columns are read as one stream;
  trailing all-zero output slices (a max pool over an odd size) are cropped block by
  block; the product, where Kp * C is a multiple of 16, by the forward's own loop (on
  ``w``'s transpose);
* the weight gradient ``cols.T @ g`` as one product per block of ``weight_grad_rows``
  rows into its own partial sum, the partials added in order (0: one product split over
  the pool by rows of the result);
* single-channel input with 16, 32 or 64 filters: the forward as im2col and a
  register-blocked product (fused multiply-adds, bias and ReLU in the store) per block
  of ``single_channel_rows`` rows -- OpenBLAS reaches a fraction of its rate on K = 9
  columns; on AVX-512 the float32 weight gradient of such layers likewise (``cols.T @ g``
  with only Kp + 1 rows of output, partial sums over fixed blocks of rows added in
  order); an inference output of ``stream_bytes`` or more (far beyond the cache) goes
  out with non-temporal stores;
* the ReLU gradient in one pass (when no max pool follows to fold it into its own
  backward).

Every split is over independent rows, samples or outputs, or into partial sums of a
fixed size, so results do not depend on the number of threads. Where no BLAS is
connected (NumPy's is not an OpenBLAS the C++ code can call) the products stay NumPy's,
around the compiled im2col, col2im and bias + ReLU. The bias gradient comes with the
weight gradient (column sums of g in the same partial sums; with single-channel columns
from their row of ones), elsewhere from NumPy (one matrix-vector product).

Shapes and layouts are those of ``dlx.ops.convolution`` (channels_last arrays,
kernels ``(*K, C // groups, F)``); 1D and 2D convolutions go to the C++ code as
3D ones with leading axes of size 1. Groups other than 1, more than three
spatial axes, dtypes other than float32/float64, and a missing compiler
(``DLX_KERNELS=numpy``) fall back to the NumPy kernel (``super()``).
"""

import ctypes
import math

import numpy as np

from . import cpu_library
from .buffer_pool import pooled
from .conv_transpose_from_conv import ConvTransposeFromConv
from .numpy_conv import NumpyConv, _float, _nonzero_size, _out_size, _trim_zero_border

_P = ctypes.c_void_p
_I = ctypes.c_int64
_SOURCE = "convolution"
_p = cpu_library.pointer
_SIGNATURES = {
    "im2col_rows": (_P, _P, _P, _I, _I),
    "im2col_offsets": (_P, _P, _P, _I, _I, _I, _I),
    "col2im": (_P, _P, _P, _I, _I),
    "bias_relu": (_P, _P, _I, _I, _I),
    "relu_grad": (_P, _P, _P, _I),
    "single_channel_forward": (_P, _P, _P, _I, _P, _P, _P, _I, _I, _I, _I, _I),
    "single_channel_weight_grad": (_P, _P, _P, _I, _I, _I, _P),  # float32 with AVX-512 only
    "conv_forward": (_P, _P, _P, _I, _I, _P, _P, _P, _I, _I, _I, _I, _I),
    "conv_input_grad": (_P, _P, _P, _P, _P, _P, _I, _I, _P),
    "conv_weight_grad": (_P, _P, _P, _I, _I, _I, _I, _I, _P, _P),
    "conv_setup": (_P,),
}
_ROWS, _OFFSETS, _VIEW = 0, 1, 2  # column layouts of conv_forward
_WEIGHT_GRAD_ROWS = 4096  # kWeightGradRows of convolution.cpp
_SINGLE_CHANNEL_FILTERS = (16, 32, 64)  # the filter counts of the compiled single-channel product


def _function(name, dtype):
    """The compiled ``name`` for ``dtype``, or None (then fall back)."""
    from . import cpu_kernels  # here: cpu_kernels imports this module at its end

    # None too where this build lacks it (single_channel_weight_grad without AVX-512)
    return cpu_kernels.compiled(_SOURCE, name, dtype, *_SIGNATURES[name])


_SETUPS = {}  # id of the conv_setup function -> (it, (parts, BLAS connected))


def _setup(dtype):
    """``(parts, ready)``: the parts a parallel region of convolution.cpp may have (the
    slices its scratch buffers need) and whether it can call a BLAS for ``dtype``; None
    without the library."""
    f = _function("conv_setup", dtype)
    if f is None:
        return None
    held = _SETUPS.get(id(f))
    if held is None or held[0] is not f:
        answer = np.zeros(2, np.int64)
        f(_p(answer))
        if len(_SETUPS) > 8:  # libraries reloaded by tests
            _SETUPS.clear()
        held = _SETUPS[id(f)] = (f, (max(1, int(answer[0])), bool(answer[1])))
    return held[1]


def _parts(dtype):
    found = _setup(dtype)
    return 1 if found is None else found[0]


def _geometry(n, c, in_size, out_size, kernel_size, strides, dilation, before):
    """The int64 geometry array of ``convolution.cpp`` (spatial axes padded to 3 in front)."""
    lead = 3 - len(in_size)
    values = [n, c]
    for axis, fill in (
        (in_size, 1),
        (out_size, 1),
        (kernel_size, 1),
        (strides, 1),
        (dilation, 1),
        (before, 0),
    ):
        values.extend((fill,) * lead + tuple(axis))
    return np.array(values, dtype=np.int64)


def _is_view(kernel_cells, strides, pads):
    """Whether the columns are ``x`` itself: 1x1 kernels, stride 1, no padding."""
    return kernel_cells == 1 and all(s == 1 for s in strides) and all(b == a == 0 for b, a in pads)


class CompiledConv(NumpyConv):
    """Kernel table entry ``"conv"``: :class:`NumpyConv` with its primitives compiled (see
    the module docstring).

    ``block_bytes``: the size of the blocks of columns (and outputs) that the forward and
    the input gradient go through one at a time; ``weight_grad_rows``: the rows of a block
    of the weight gradient's partial sums (a fixed size: the same sums on any thread count).
    """

    block_bytes = 1 << 20
    single_channel = True
    single_channel_rows = 1024
    weight_grad_rows = 1024
    register_product = True
    trim_per_block = True
    stream_bytes = 16 << 20

    # ------------------------------------------------------------------ helpers

    def _columns(self, x, kernel_size, strides, dilation, pads, ones=False, block=None):
        """``(cols, out_size, fill)`` or None when the compiled code does not handle the case.

        ``cols``: the columns as :func:`numpy_conv._im2col` gives them (a pooled buffer,
        for single-channel input transposed, or a view of ``x`` for 1x1 kernels), not
        written yet: ``fill(r0, r1)`` writes rows ``r0:r1``. With ``block`` rows, ``cols``
        holds only that many, and ``fill`` writes rows ``r0:r1`` into ``cols[:r1 - r0]``.
        ``fill`` is None for a view.
        """
        if len(kernel_size) > 3:
            return None
        n, c = x.shape[0], x.shape[-1]
        kernel = _function("im2col_offsets" if c == 1 else "im2col_rows", x.dtype)
        out_size = _out_size(x.shape[1:-1], kernel_size, strides, dilation, pads)
        if kernel is None or any(o <= 0 for o in out_size) or n == 0 or c == 0:
            return None
        x = np.ascontiguousarray(x)
        kp = math.prod(kernel_size)
        m = n * math.prod(out_size)
        if _is_view(kp, strides, pads):
            return x.reshape(m, c), out_size, None
        geometry = _geometry(
            n, c, x.shape[1:-1], out_size, kernel_size, strides, dilation, [b for b, _ in pads]
        )
        rows = m if block is None else min(block, m)
        whole = rows == m
        item = x.dtype.itemsize
        if c == 1:
            buffer = pooled((kp + 1 if ones else kp, rows), x.dtype)

            def fill(r0, r1):
                at = _p(buffer) + (r0 * item if whole else 0)
                kernel(_p(x), at, _p(geometry), int(ones), r0, r1, rows)

            return buffer.T, out_size, fill
        buffer = pooled((rows, kp * c), x.dtype)
        row_bytes = kp * c * item

        def fill(r0, r1):
            kernel(_p(x), _p(buffer) + (r0 * row_bytes if whole else 0), _p(geometry), r0, r1)

        return buffer, out_size, fill

    def _im2col(self, x, kernel_size, strides, dilation, pads, ones=False):
        """``(cols, out_size)`` as :func:`numpy_conv._im2col` gives them, or None."""
        found = self._columns(x, kernel_size, strides, dilation, pads, ones)
        if found is None:
            return None
        cols, out_size, fill = found
        if fill is not None:
            fill(0, cols.shape[0])
        return cols, out_size

    # ------------------------------------------------------------------ primitives

    def forward(self, x, w, b, geometry, relu, keep):
        """x ``(N, *S, C)``, w ``(*K, C, F)``, b ``(F,)`` or None -> ``(y, saved)``: y
        ``(N, *O, F)`` (a pooled buffer), saved the columns when ``keep``."""
        strides, dilation, pads, groups = geometry
        if groups != 1 or not _float(x, w, b):
            return super().forward(x, w, b, geometry, relu, keep)
        bias_relu = _function("bias_relu", x.dtype)
        kernel_size = w.shape[:-2]
        n, c, f = x.shape[0], x.shape[-1], w.shape[-1]
        kp = math.prod(kernel_size)
        # single-channel input: the bias rides in the product on a row of ones, except for
        # 1x1 kernels, whose columns are a view of x
        fold_bias = c == 1 and b is not None and not _is_view(kp, strides, pads)
        if c == 1 and not _is_view(kp, strides, pads):
            done = self._single_channel_forward(x, w, b, geometry, relu, keep)
            if done is not None:
                return done
        done = self._fused_forward(x, w, b, geometry, relu, keep, fold_bias)
        if done is not None:
            return done
        # no BLAS to call from C++: NumPy's products, kept columns (for the weight gradient)
        # written whole (a product per block costs more in the BLAS's thread hand-offs than
        # its cache-warm columns save)
        width = kp * c + (1 if fold_bias else 0)
        step = m = n * math.prod(_out_size(x.shape[1:-1], kernel_size, strides, dilation, pads))
        if not keep:
            step = max(1, self.block_bytes // ((width + f) * x.dtype.itemsize))
        found = None
        if bias_relu is not None and f > 0 and m > 0:
            block = None if keep else step
            found = self._columns(x, kernel_size, strides, dilation, pads, fold_bias, block)
        if found is None:
            return super().forward(x, w, b, geometry, relu, keep)
        cols, out_size, fill = found
        y = pooled((m, f), x.dtype)
        if fold_bias:
            # the columns keep their ones: weight_and_bias_grad gets the bias gradient from them
            weights = np.concatenate([w.reshape(kp, f), b.reshape(1, f)])
            b = None
        else:
            weights = w.reshape(kp * c, f)
        if b is not None:
            b = np.ascontiguousarray(b)
        after = b is not None or relu
        whole = cols.shape[0] == m
        y_at, row_bytes = _p(y), f * x.dtype.itemsize
        for r0 in range(0, m, step):
            r1 = min(m, r0 + step)
            if fill is not None:
                fill(r0, r1)
            block_cols = cols[r0:r1] if whole else cols[: r1 - r0]
            np.matmul(block_cols, weights, out=y[r0:r1])
            if after:
                bias_relu(
                    y_at + r0 * row_bytes, None if b is None else _p(b), r1 - r0, f, int(relu)
                )
        return y.reshape((n,) + out_size + (f,)), (cols if keep else None)

    def _fused_forward(self, x, w, b, geometry, relu, keep, fold_bias):
        """The forward in one C++ call (im2col, product, bias + ReLU per block of rows on the
        pool's threads), or None (no connected BLAS, unsupported geometry)."""
        strides, dilation, pads, _ = geometry
        kernel_size = w.shape[:-2]
        setup = _setup(x.dtype)
        kernel = _function("conv_forward", x.dtype)
        if setup is None or not setup[1] or kernel is None or len(kernel_size) > 3:
            return None
        parts = setup[0]
        n, c, f = x.shape[0], x.shape[-1], w.shape[-1]
        out_size = _out_size(x.shape[1:-1], kernel_size, strides, dilation, pads)
        if any(o <= 0 for o in out_size) or min(n, c, f) == 0:
            return None
        x = np.ascontiguousarray(x)
        kp = math.prod(kernel_size)
        m = n * math.prod(out_size)
        if _is_view(kp, strides, pads):
            layout, width = _VIEW, c
        elif c == 1:
            layout, width = _OFFSETS, kp + fold_bias
        else:
            layout, width = _ROWS, kp * c
        # blocks of rows whose columns and outputs stay in the cache, at least one per part
        block = max(1, self.block_bytes // ((width + f) * x.dtype.itemsize))
        block = min(block, -(-m // parts))
        saved = cols = None
        if layout == _VIEW:
            saved = x.reshape(m, c) if keep else None
        elif keep and layout == _OFFSETS:
            cols = pooled((width, m), x.dtype)
            saved = cols.T
        elif keep:
            cols = saved = pooled((m, width), x.dtype)
        else:
            cols = pooled((parts, block, width), x.dtype)
        if fold_bias:
            # the columns keep their ones: weight_and_bias_grad gets the bias gradient from them
            weights = np.concatenate([w.reshape(kp, f), b.reshape(1, f)])
            b = None
        else:
            weights = np.ascontiguousarray(w.reshape(kp * c, f))
        if b is not None:
            b = np.ascontiguousarray(b)
        y = pooled((m, f), x.dtype)
        shape = _geometry(
            n, c, x.shape[1:-1], out_size, kernel_size, strides, dilation, [p for p, _ in pads]
        )
        kernel(
            _p(x),
            None if cols is None else _p(cols),
            _p(shape),
            layout,
            int(fold_bias),
            _p(weights),
            None if b is None else _p(b),
            _p(y),
            f,
            int(relu),
            int(keep),
            block,
            int(self.register_product),
        )
        return y.reshape((n,) + out_size + (f,)), saved

    def _single_channel_forward(self, x, w, b, geometry, relu, keep):
        """The forward of a single-channel convolution with 16, 32 or 64 filters in one C++
        call (im2col and product per block of ``single_channel_rows`` rows, in the cache),
        or None."""
        strides, dilation, pads, _ = geometry
        kernel_size = w.shape[:-2]
        n, f = x.shape[0], w.shape[-1]
        kernel = _function("single_channel_forward", x.dtype)
        if (
            not self.single_channel
            or kernel is None
            or f not in _SINGLE_CHANNEL_FILTERS
            or len(kernel_size) > 3
            or n == 0
        ):
            return None
        out_size = _out_size(x.shape[1:-1], kernel_size, strides, dilation, pads)
        if any(o <= 0 for o in out_size):
            return None
        x = np.ascontiguousarray(x)
        w = np.ascontiguousarray(w)
        kp, m = math.prod(kernel_size), n * math.prod(out_size)
        geometry = _geometry(
            n, 1, x.shape[1:-1], out_size, kernel_size, strides, dilation, [b for b, _ in pads]
        )
        ones = b is not None
        block = min(m, self.single_channel_rows)
        # kept columns carry the row of ones: weight_and_bias_grad gets the bias gradient there
        cols = pooled((kp + ones, m) if keep else (_parts(x.dtype), kp, block), x.dtype)
        if b is not None:
            b = np.ascontiguousarray(b)
        stream = not keep and m * f * x.dtype.itemsize >= self.stream_bytes
        if stream:  # non-temporal stores need 64-byte aligned rows
            flat = pooled((m * f + 64 // x.dtype.itemsize,), x.dtype)
            skip = (-_p(flat) % 64) // x.dtype.itemsize
            y = flat[skip : skip + m * f].reshape(m, f)
        else:
            y = pooled((m, f), x.dtype)
        kernel(
            _p(x),
            _p(cols),
            _p(geometry),
            int(ones),
            _p(w),
            None if b is None else _p(b),
            _p(y),
            f,
            int(relu),
            int(keep),
            block,
            int(stream),
        )
        return y.reshape((n,) + out_size + (f,)), (cols.T if keep else None)

    def _single_channel_weight_grad(self, cols, g):
        """``cols.T @ g`` ``(width, F)`` for transposed single-channel columns ``cols``
        ``(M, width)`` and g ``(N, *O, F)``, F a multiple of 32, float32, or None."""
        f = g.shape[-1]
        if not self.single_channel or g.dtype != np.float32 or cols.dtype != np.float32:
            return None
        rows = cols.T
        if f % 32 or f == 0 or not rows.flags.c_contiguous or not g.flags.c_contiguous:
            return None
        kernel = _function("single_channel_weight_grad", g.dtype)
        if kernel is None:
            return None
        out = np.empty((rows.shape[0], f), g.dtype)
        blocks = -(-rows.shape[1] // _WEIGHT_GRAD_ROWS)
        partials = pooled((blocks, rows.shape[0], f), g.dtype)  # partial sums per block of rows
        kernel(_p(rows), _p(g), _p(out), rows.shape[0], rows.shape[1], f, _p(partials))
        return out

    def _product_weight_grad(self, cols, g, bias):
        """``cols.T @ g`` ``(width, F)`` for columns ``cols`` ``(M, width)`` (or the transpose
        of a C-contiguous ``(width, M)``) and g ``(N, *O, F)``, in partial sums over the pool,
        with ``bias`` one more row: the column sums of g (the bias gradient). None without a
        connected BLAS."""
        setup = _setup(g.dtype)
        kernel = _function("conv_weight_grad", g.dtype)
        if setup is None or not setup[1] or kernel is None or cols.dtype != g.dtype:
            return None
        (m, width), f = cols.shape, g.shape[-1]
        if cols.flags.c_contiguous:
            transposed = 0
        elif cols.T.flags.c_contiguous:
            transposed = 1
        else:
            return None
        g = np.ascontiguousarray(g)
        out = np.empty((width + bias, f), g.dtype)
        rows = self.weight_grad_rows
        partials = None
        if rows and rows < m:
            partials = pooled((-(-m // rows), width + bias, f), g.dtype)
        kernel(
            _p(cols),
            _p(g),
            _p(out),
            width,
            m,
            f,
            transposed,
            rows or m,
            None if partials is None else _p(partials),
            _p(out[width]) if bias else None,
        )
        return out

    def relu_grad(self, g, y):
        """``g`` where ``y > 0``, else 0 (the generic ``where``), both ``(N, *O, F)``."""
        kernel = _function("relu_grad", g.dtype) if _float(g, y) else None
        if kernel is None or g.shape != y.shape:
            return super().relu_grad(g, y)
        g, y = np.ascontiguousarray(g), np.ascontiguousarray(y)
        out = pooled(g.shape, g.dtype)
        kernel(_p(g), _p(y), _p(out), g.size)
        return out

    def input_grad(self, g, w, geometry, x_shape):
        """g ``(N, *O, F)``, w ``(*K, C, F)`` -> the input gradient ``x_shape`` ``(N, *S, C)``
        (a pooled buffer)."""
        strides, dilation, pads, groups = geometry
        kernel_size = w.shape[:-2]
        col2im = _function("col2im", g.dtype) if _float(g, w) else None
        kp = math.prod(kernel_size)
        n, c, f = g.shape[0], x_shape[-1], w.shape[-1]
        if (
            col2im is None
            or groups != 1
            or len(kernel_size) > 3
            or _is_view(kp, strides, pads)  # one product, no col2im
            or min(g.shape) == 0
            or c == 0
        ):
            return super().input_grad(g, w, geometry, x_shape)
        # trailing all-zero output slices (a max pool over an odd size) meet no input
        g = np.ascontiguousarray(g)
        done = self._fused_input_grad(g, w, geometry, x_shape)
        if done is not None:
            return done
        if self.trim_per_block:
            out_size = _nonzero_size(g)
            g2 = g.reshape(-1, f)
        else:
            g2, out_size = _trim_zero_border(g)
        trim = out_size != g.shape[1:-1]
        per_sample = math.prod(out_size)
        samples = max(1, self.block_bytes // (per_sample * kp * c * g.dtype.itemsize))
        samples = min(samples, n)
        dcols = pooled((samples * per_sample, kp * c), g.dtype)
        if self.trim_per_block and trim:
            part = pooled((samples,) + out_size + (f,), g.dtype)
            crop = (slice(None),) + tuple(slice(0, o) for o in out_size)
        weights = w.reshape(kp * c, f).T
        gx = pooled(tuple(x_shape), g.dtype)
        geometry = _geometry(
            n, c, x_shape[1:-1], out_size, kernel_size, strides, dilation, [b for b, _ in pads]
        )
        for n0 in range(0, n, samples):
            n1 = min(n, n0 + samples)
            rows = (n1 - n0) * per_sample
            if self.trim_per_block and trim:
                # this block's trimmed rows, copied while the product is about to read them
                np.copyto(part[: n1 - n0], g[n0:n1][crop])
                block = part.reshape(-1, f)[:rows]
            else:
                block = g2[n0 * per_sample : n0 * per_sample + rows]
            np.matmul(block, weights, out=dcols[:rows])
            col2im(_p(dcols), _p(gx), _p(geometry), n0, n1)
        return gx

    def _fused_input_grad(self, g, w, geometry, x_shape):
        """The input gradient in one C++ call (per block of samples on the pool's threads:
        crop, product, col2im), or None without a connected BLAS."""
        strides, dilation, pads, _ = geometry
        kernel_size = w.shape[:-2]
        setup = _setup(g.dtype)
        kernel = _function("conv_input_grad", g.dtype)
        if setup is None or not setup[1] or kernel is None:
            return None
        parts = setup[0]
        n, c, f = g.shape[0], x_shape[-1], w.shape[-1]
        kpc = math.prod(kernel_size) * c
        out_size = _nonzero_size(g)
        cells = math.prod(out_size)
        samples = max(1, self.block_bytes // (cells * kpc * g.dtype.itemsize))
        samples = min(samples, -(-n // parts))
        crop = out_size != g.shape[1:-1]
        scratch = pooled((parts, samples * cells * (kpc + (f if crop else 0))), g.dtype)
        weights = np.ascontiguousarray(w.reshape(kpc, f))
        # the C++ code's own product reads the transpose
        wt = np.ascontiguousarray(weights.T) if self.register_product else None
        gx = pooled(tuple(x_shape), g.dtype)
        shape = _geometry(
            n, c, x_shape[1:-1], out_size, kernel_size, strides, dilation, [b for b, _ in pads]
        )
        g_out = np.array((1,) * (3 - len(out_size)) + g.shape[1:-1], np.int64)
        kernel(
            _p(g),
            _p(weights),
            None if wt is None else _p(wt),
            _p(gx),
            _p(shape),
            _p(g_out),
            f,
            samples,
            _p(scratch),
        )
        return gx

    def weight_and_bias_grad(self, x, g, geometry, w_shape, saved):
        """``(weight_grad, bias_grad)``, the bias gradient from the weight gradient's pass
        over g where the columns hold no row of ones (see :class:`NumpyConv`)."""
        result = self._weight_grad(x, g, geometry, w_shape, saved, bias=True)
        if result is None:
            return None
        gw, gb = result
        return gw, (gb if gb is not None else self.bias_grad(g))

    def _weight_grad(self, x, g, geometry, w_shape, saved, bias=False):
        """As :meth:`NumpyConv._weight_grad`, with compiled im2col when nothing was saved;
        ``bias``: also the bias gradient, where the compiled product can add it."""
        strides, dilation, pads, groups = geometry
        if groups != 1 or not _float(x, g):
            return super()._weight_grad(x, g, geometry, w_shape, saved)
        cols = saved
        if cols is None:
            found = self._im2col(x, w_shape[:-2], strides, dilation, pads)
            if found is None:
                return super()._weight_grad(x, g, geometry, w_shape, saved)
            cols = found[0]
        m, width = cols.shape
        product = self._single_channel_weight_grad(cols, g)
        if product is None:
            # a last row of column sums, as a last column of ones in cols gives
            product = self._product_weight_grad(cols, g, bias and width == math.prod(w_shape[:-1]))
        if product is None:
            product = cols.T @ g.reshape(m, g.shape[-1])
        if product.shape[0] == math.prod(w_shape[:-1]):
            return product.reshape(w_shape), None
        return product[:-1].reshape(w_shape), product[-1]  # the bias gradient


CONV = CompiledConv()
CPU_CONV_KERNELS = {"conv": CONV, "conv_transpose": ConvTransposeFromConv(CONV)}
