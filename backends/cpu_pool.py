"""Compiled CPU kernels for the pool ops (``backends/cpu/pooling.cpp``).

:class:`CompiledPool` replaces the kernel table entry ``"pool"``
(:class:`~numpy_conv.NumpyPool`) for max and average pooling over 1 to 3 spatial
axes, channels_last ``(N, *spatial, C)``, float32/float64, any strides and
padding: each window is read once, and a max-pool forward that keeps its saved
form records the offset of each window's first maximum, so the backward reads
only the gradient and those offsets instead of comparing ``x`` with ``y`` again.

The saved form stays the NumPy kernel's ``(x, y)`` (a tuple subclass that also
carries the offsets), so the NumPy and generic backward take whatever the
compiled forward saved; a ``(x, y)`` saved by the NumPy forward (a fallback)
goes to the NumPy backward. Results equal the NumPy kernel's bit for bit: the
same order of additions and divisions, first maximum in row-major window order,
NaN windows passing NaN forward and no gradient back.
"""

import ctypes
import math

import numpy as np

from . import cpu_library
from .buffer_pool import pooled
from .numpy_conv import NumpyPool
from .pool_counts import valid_cell_counts

_P, _I = ctypes.c_void_p, ctypes.c_int64
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
p = cpu_library.pointer
MAX_WINDOW = 127  # offsets in the low 7 bits of a byte, 127 meaning "no hit"

# flags of max_pool_backward / avg_pool_backward (backends/cpu/pooling.cpp)
_RELU, _MULTIPLY, _KEEP_G, _OVERLAP, _ZERO_FILL = 1, 2, 4, 8, 16


class MaxSaved(tuple):
    """``(x, y)``, the NumPy kernel's saved form of max pooling, with ``hits``: a
    ``(N, *out, C)`` uint8 array, in its low 7 bits the offset (row-major in the window)
    of each window's first maximum, 127 where a window has none, and bit 7 set where
    ``y > 0`` (what the backward of a ReLU before the pool needs)."""

    def __new__(cls, x, y, hits):
        saved = super().__new__(cls, (x, y))
        saved.hits = hits
        return saved


def _geometry(x_shape, out_size, pool_size, strides, pads):
    """The int64[17] geometry of pooling.cpp: n, c, in[3], out[3], k[3], s[3], pad[3], the
    spatial axes padded in front to three."""
    lead = 3 - len(pool_size)
    spatial = (1,) * lead + tuple(x_shape[1:-1])
    out = (1,) * lead + tuple(out_size)
    k = (1,) * lead + tuple(pool_size)
    s = (1,) * lead + tuple(strides)
    pad = (0,) * lead + tuple(b for b, _ in pads)
    return np.array((x_shape[0], x_shape[-1], *spatial, *out, *k, *s, *pad), np.int64)


def _out_size(x_shape, pool_size, strides, pads):
    return tuple(
        (n + b + a - k) // s + 1 for n, k, s, (b, a) in zip(x_shape[1:-1], pool_size, strides, pads)
    )


def _covers(x_shape, out_size, pool_size, strides, pads):
    """Whether the windows are disjoint and together hold every input cell."""
    return all(
        s == k and o * k - b >= n
        for n, o, k, s, (b, _) in zip(x_shape[1:-1], out_size, pool_size, strides, pads)
    )


def _supported(array, rank):
    return (
        type(array) is np.ndarray
        and array.dtype in _FLOATS
        and array.ndim == rank + 2
        and 1 <= rank <= 3
        and array.size > 0
    )


def compiled(name, dtype, *argtypes):
    """``dlx_<name>_<f32|f64>`` of pooling.cpp, or None (cpu_kernels imports this module:
    looked up on use, which also lets tests spy on ``cpu_kernels.compiled``)."""
    from . import cpu_kernels

    return cpu_kernels.compiled("pooling", name, dtype, *argtypes)


class CompiledPool(NumpyPool):
    """Kernel table entry ``"pool"`` in compiled C++; :class:`NumpyPool` for the rest
    (other dtypes, more than 3 spatial axes, max windows of more than 126 cells, saved
    values of the NumPy forward, or no compiled library)."""

    def forward(self, x, kind, pool_size, strides, pads, keep):
        rank = len(pool_size)
        if not _supported(x, rank) or (
            kind == "max" and keep and math.prod(pool_size) >= MAX_WINDOW
        ):
            return super().forward(x, kind, pool_size, strides, pads, keep)
        if kind == "max":
            kernel = compiled("max_pool_forward", x.dtype, _P, _P, _P, _P)
        else:
            kernel = compiled("avg_pool_forward", x.dtype, _P, _P, _P, _I)
        if kernel is None:
            return super().forward(x, kind, pool_size, strides, pads, keep)
        contiguous = x if x.flags.c_contiguous else np.ascontiguousarray(x)
        out_size = _out_size(x.shape, pool_size, strides, pads)
        geometry = _geometry(x.shape, out_size, pool_size, strides, pads)
        y = pooled((x.shape[0],) + out_size + (x.shape[-1],), x.dtype)
        padded = any(b or a for b, a in pads)
        if kind == "max":
            hits = pooled(y.shape, np.uint8) if keep else None
            kernel(p(contiguous), p(y), None if hits is None else p(hits), p(geometry))
            return y, (MaxSaved(x, y, hits) if keep else None)
        tiles = strides == pool_size and not padded
        kernel(p(contiguous), p(y), p(geometry), int(tiles))
        if padded:
            count = valid_cell_counts(x.shape, pool_size, strides, pads, x.dtype)
        else:
            count = float(math.prod(pool_size))
        return y, count

    def backward(self, g, saved, x_shape, kind, pool_size, strides, pads):
        gx = self._compiled_backward(g, saved, x_shape, kind, pool_size, strides, pads, False)
        if gx is None:
            return super().backward(g, saved, x_shape, kind, pool_size, strides, pads)
        return gx

    def backward_relu(self, g, saved, x_shape, kind, pool_size, strides, pads):
        """``backward`` of ``where(y > 0, g, 0)`` (see ``NumpyPool.backward_relu``)."""
        gx = None
        if kind == "max":
            gx = self._compiled_backward(g, saved, x_shape, kind, pool_size, strides, pads, True)
        if gx is None:
            return super().backward_relu(g, saved, x_shape, kind, pool_size, strides, pads)
        return gx

    def _compiled_backward(self, g, saved, x_shape, kind, pool_size, strides, pads, relu):
        """The input gradient ``(N, *in, C)`` from C++, or None to fall back."""
        rank = len(pool_size)
        if not _supported(g, rank):
            return None
        if kind == "max":
            if not isinstance(saved, MaxSaved) or saved.hits is None:
                return None  # the NumPy forward's (x, y): its own backward takes it
            if saved.hits.shape != g.shape:
                return None
            kernel = compiled("max_pool_backward", g.dtype, _P, _P, _P, _P, _I)
        else:
            kernel = compiled("avg_pool_backward", g.dtype, _P, _P, _P, _I)
        if kernel is None:
            return None
        g = g if g.flags.c_contiguous else np.ascontiguousarray(g)
        out_size = g.shape[1:-1]
        geometry = _geometry(x_shape, out_size, pool_size, strides, pads)
        disjoint = all(s >= k for s, k in zip(strides, pool_size))
        flags = 0 if disjoint else _OVERLAP | _ZERO_FILL
        if not _covers(x_shape, out_size, pool_size, strides, pads):
            flags |= _ZERO_FILL
        gx = pooled(x_shape, g.dtype)
        if kind == "avg":
            kernel(p(g), p(gx), p(geometry), flags)
            return gx
        # which cells the NumPy kernel writes as g * hit (g * 0 without a hit: NaN for an
        # infinite g) rather than g or 0, and where its ReLU mask keeps g: the same here
        tiles = strides == pool_size and not any(b or a for b, a in pads)
        exact = disjoint and all(
            s == k and o * s == n + b + a
            for n, o, k, s, (b, a) in zip(x_shape[1:-1], out_size, pool_size, strides, pads)
        )
        if tiles or exact:
            flags |= _MULTIPLY
        if relu:
            flags |= _RELU | (_KEEP_G if tiles else 0)
        kernel(p(g), p(saved.hits), p(gx), p(geometry), flags)
        return gx


CPU_POOL_KERNELS = {"pool": CompiledPool()}
