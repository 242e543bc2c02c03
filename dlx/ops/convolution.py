"""N-dimensional convolution and transposed convolution (1D, 2D and 3D are the
same code with a different number of spatial axes).

Layouts (Keras):

* input ``x``: ``(N, *spatial, C_in)`` (``channels_last``) or ``(N, C_in, *spatial)``
  (``channels_first``; transposed to channels_last inside the op);
* ``conv`` kernel: ``(*kernel_size, C_in // groups, filters)``; bias ``(filters,)``;
  output ``(N, *out_spatial, filters)``;
* ``conv_transpose`` kernel: ``(*kernel_size, filters, C_in)`` -- the layout of
  the convolution it is the input-gradient of; output ``(N, *out_spatial, filters)``.

Padding is handled as explicit ``(before, after)`` zero counts per spatial axis
(:func:`conv_padding` turns ``"valid"``/``"same"``/``"causal"`` into them with
Keras's rule). A negative count crops instead of padding; transposed
convolutions need that.

The three primitives -- forward, input gradient (col2im) and weight gradient --
are written here against the Array API (``im2col`` by stacking strided slices,
one matrix product per group). A backend may replace them through its kernel
table entries ``"conv"`` and ``"conv_transpose"``: objects with methods

``forward(x, w, b, geometry, relu, keep) -> (y, saved)``,
``input_grad(g, w, geometry, x_shape) -> gx`` and
``weight_grad(x, g, geometry, w_shape, saved) -> gw`` (and optionally
``release(saved)``, ``relu_grad(g, y)``, the gradient through the fused ReLU,
``bias_grad(g) -> gb``, ``g`` summed over every axis but the last, and
``weight_and_bias_grad(x, g, geometry, w_shape, saved) -> (gw, gb)``, both at
once when the bias needs a gradient; ``saved`` is whatever the kernel's forward
returned, passed back unchanged)

(for ``conv_transpose``: ``forward(x, w, geometry, out_shape)``,
``input_grad(g, w, geometry)``, ``weight_grad(x, g, geometry, w_shape)``), on
channels_last arrays, where ``geometry = (strides, dilation, pads, groups)``.
Any method may return None to fall back to the generic code here.

A max pool right after a ``relu=True`` Conv folds the ReLU's backward into its
own (see ``dlx.ops.pooling``) and hands the Conv a gradient already masked: the
Conv skips its mask when the gradient it receives is that very array object
(with any other consumer of its output, autograd sums the gradients into a new
array, and the mask is applied as usual).
"""

import math

from ..autograd import Function

# ---------------------------------------------------------------------------
# shape arithmetic (pure Python)


def normalize_tuple(value, rank, name, allow_zero=False, layer=None):
    """``value`` (an int or a sequence of ``rank`` ints) as a tuple of ``rank`` ints."""
    where = f"{layer}: " if layer else ""
    if isinstance(value, int):
        value = (value,) * rank
    try:
        value = tuple(int(v) for v in value)
    except TypeError:
        raise ValueError(
            f"{where}`{name}` must be an int or a tuple of {rank} ints, got {value!r}"
        ) from None
    if len(value) != rank:
        raise ValueError(f"{where}`{name}` must be an int or a tuple of {rank} ints, got {value!r}")
    low = 0 if allow_zero else 1
    if any(v < low for v in value):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{where}`{name}` must contain {kind} ints, got {value!r}")
    return value


def effective_size(kernel, dilation):
    """Extent of a dilated kernel along one axis."""
    return (kernel - 1) * dilation + 1


def conv_padding(size, kernel, stride, dilation, padding):
    """``(before, after)`` zeros for one axis, Keras/TensorFlow rule.

    ``"same"``: output ``ceil(size / stride)``, total padding
    ``max((out - 1) * stride + k_eff - size, 0)``, the odd one at the end.
    ``"causal"`` (1D): ``k_eff - 1`` zeros before.
    """
    k = effective_size(kernel, dilation)
    if padding == "valid":
        return (0, 0)
    if padding == "causal":
        return (k - 1, 0)
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        return (total // 2, total - total // 2)
    raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")


def conv_output_size(size, kernel, stride, dilation, pads):
    """Output length of one axis (``<= 0`` means the kernel does not fit)."""
    return (size + pads[0] + pads[1] - effective_size(kernel, dilation)) // stride + 1


def transpose_padding(kernel, stride, dilation, padding, output_padding=None):
    """``(before, after)`` padding of the convolution a transposed convolution inverts.

    Follows Keras: ``"valid"`` gives outputs of ``(in - 1) * s + max(k_eff, s)``
    (or ``+ k_eff + output_padding``), ``"same"`` gives ``in * s`` (or
    ``(in - 1) * s + k_eff % 2 + output_padding``). ``after`` may be negative:
    output cells that no input reaches (they get zeros).
    """
    k = effective_size(kernel, dilation)
    if padding == "valid":
        extra = max(k, stride) - k if output_padding is None else output_padding
        return (0, -extra)
    if padding == "same":
        total = stride + k - 2 if output_padding is None else k + k % 2 - 2 + output_padding
        left = min(total // 2 + total % 2, k - 1)
        return (k - 1 - left, k - 1 - (total - left))
    raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")


def transpose_output_size(size, kernel, stride, dilation, pads):
    return (size - 1) * stride + effective_size(kernel, dilation) - pads[0] - pads[1]


# ---------------------------------------------------------------------------
# generic Array API primitives (channels_last arrays)


def reframe(xp, x, pads):
    """Pad (positive) or crop (negative) the spatial axes ``1 .. rank`` of ``x``.

    Along axis ``a`` the result has length ``L + before + after`` and
    ``result[j] = x[j - before]`` where that exists, else 0. Its adjoint is
    ``reframe`` with the negated pads.
    """
    if all(b == 0 and a == 0 for b, a in pads):
        return x
    crop = (
        (slice(None),)
        + tuple(slice(max(-b, 0), size - max(-a, 0)) for size, (b, a) in zip(x.shape[1:-1], pads))
        + (slice(None),)
    )
    if any(b < 0 or a < 0 for b, a in pads):
        x = x[crop]
    if all(b <= 0 and a <= 0 for b, a in pads):
        return x
    shape = (
        (x.shape[0],)
        + tuple(size + max(b, 0) + max(a, 0) for size, (b, a) in zip(x.shape[1:-1], pads))
        + (x.shape[-1],)
    )
    out = xp.zeros(shape, dtype=x.dtype, device=x.device)
    inner = (
        (slice(None),)
        + tuple(slice(max(b, 0), max(b, 0) + size) for size, (b, _) in zip(x.shape[1:-1], pads))
        + (slice(None),)
    )
    out[inner] = x
    return out


def kernel_offsets(kernel_size):
    """Every offset of a kernel, row-major (the order of its flattened axes)."""
    offsets = [()]
    for k in kernel_size:
        offsets = [o + (i,) for o in offsets for i in range(k)]
    return offsets


def window_slice(offset, strides, dilation, out_size):
    """Index of the input cells that kernel ``offset`` meets, for every output cell."""
    return (
        (slice(None),)
        + tuple(
            slice(o * d, o * d + s * (n - 1) + 1, s)
            for o, s, d, n in zip(offset, strides, dilation, out_size)
        )
        + (slice(None),)
    )


def _out_size(x_shape, kernel_size, strides, dilation, pads):
    return tuple(
        conv_output_size(n, k, s, d, p)
        for n, k, s, d, p in zip(x_shape[1:-1], kernel_size, strides, dilation, pads)
    )


def im2col(xp, x, kernel_size, strides, dilation, pads):
    """``(N, *O, prod(kernel_size), C)`` windows of the (re-framed) input."""
    xpad = reframe(xp, x, pads)
    out_size = _out_size(x.shape, kernel_size, strides, dilation, pads)
    parts = [
        xpad[window_slice(o, strides, dilation, out_size)] for o in kernel_offsets(kernel_size)
    ]
    return xp.stack(parts, axis=-2), out_size


def _grouped_matmul(xp, cols, w, groups):
    """``(M, Kp, C) x (*K, C/G, F) -> (M, F)``, one product per group."""
    m, kp, c = cols.shape
    f = w.shape[-1]
    if groups == 1:
        return xp.reshape(cols, (m, kp * c)) @ xp.reshape(w, (kp * c, f))
    cg, fg = c // groups, f // groups
    a = xp.permute_dims(xp.reshape(cols, (m, kp, groups, cg)), (2, 0, 1, 3))
    a = xp.reshape(a, (groups, m, kp * cg))
    b = xp.permute_dims(xp.reshape(w, (kp, cg, groups, fg)), (2, 0, 1, 3))
    b = xp.reshape(b, (groups, kp * cg, fg))
    y = a @ b  # (G, M, Fg)
    return xp.reshape(xp.permute_dims(y, (1, 0, 2)), (m, f))


def _grouped_matmul_input(xp, g2, w, groups):
    """Gradient of the columns: ``(M, F) x (*K, C/G, F) -> (M, Kp, C)``."""
    m, f = g2.shape
    cg = w.shape[-2]
    kp = math.prod(w.shape[:-2])
    if groups == 1:
        return xp.reshape(g2 @ xp.matrix_transpose(xp.reshape(w, (kp * cg, f))), (m, kp, cg))
    fg = f // groups
    a = xp.permute_dims(xp.reshape(g2, (m, groups, fg)), (1, 0, 2))  # (G, M, Fg)
    b = xp.permute_dims(xp.reshape(w, (kp, cg, groups, fg)), (2, 3, 0, 1))  # (G, Fg, Kp, Cg)
    d = a @ xp.reshape(b, (groups, fg, kp * cg))  # (G, M, Kp*Cg)
    d = xp.permute_dims(xp.reshape(d, (groups, m, kp, cg)), (1, 2, 0, 3))
    return xp.reshape(d, (m, kp, groups * cg))


def _grouped_matmul_weight(xp, cols, g2, w_shape, groups):
    """Gradient of the kernel: ``(M, Kp, C)^T x (M, F) -> (*K, C/G, F)``."""
    m, kp, c = cols.shape
    f = g2.shape[-1]
    if groups == 1:
        gw = xp.matrix_transpose(xp.reshape(cols, (m, kp * c))) @ g2
        return xp.reshape(gw, w_shape)
    cg, fg = c // groups, f // groups
    a = xp.permute_dims(xp.reshape(cols, (m, kp, groups, cg)), (2, 1, 3, 0))  # (G, Kp, Cg, M)
    a = xp.reshape(a, (groups, kp * cg, m))
    b = xp.permute_dims(xp.reshape(g2, (m, groups, fg)), (1, 0, 2))  # (G, M, Fg)
    gw = xp.reshape(a @ b, (groups, kp, cg, fg))
    gw = xp.permute_dims(gw, (1, 2, 0, 3))
    return xp.reshape(gw, w_shape)


def conv_forward(xp, x, w, b, geometry, relu=False):
    """Generic forward: ``(y, cols)``; ``y = im2col(x) @ w (+ b)``, ReLU when asked."""
    strides, dilation, pads, groups = geometry
    kernel_size = tuple(w.shape[:-2])
    cols, out_size = im2col(xp, x, kernel_size, strides, dilation, pads)
    n = x.shape[0]
    m = n * math.prod(out_size)
    cols = xp.reshape(cols, (m, math.prod(kernel_size), x.shape[-1]))
    y = _grouped_matmul(xp, cols, w, groups)
    if b is not None:
        y = y + b
    if relu:
        y = xp.maximum(y, xp.zeros((), dtype=y.dtype, device=y.device))
    return xp.reshape(y, (n,) + out_size + (w.shape[-1],)), cols


def conv_input_grad(xp, g, w, geometry, x_shape):
    """Generic gradient of the input (col2im): scatter-add every kernel offset."""
    strides, dilation, pads, groups = geometry
    kernel_size = tuple(w.shape[:-2])
    out_size = tuple(g.shape[1:-1])
    dcols = _grouped_matmul_input(xp, xp.reshape(g, (-1, g.shape[-1])), w, groups)
    c = x_shape[-1]
    dcols = xp.reshape(dcols, (g.shape[0],) + out_size + (math.prod(kernel_size), c))
    framed = (x_shape[0],) + tuple(n + b + a for n, (b, a) in zip(x_shape[1:-1], pads)) + (c,)
    gx = xp.zeros(framed, dtype=g.dtype, device=g.device)
    for k, offset in enumerate(kernel_offsets(kernel_size)):
        index = window_slice(offset, strides, dilation, out_size)
        gx[index] = gx[index] + dcols[..., k, :]
    # the adjoint of padding is cropping (and of cropping, padding with zeros)
    return reframe(xp, gx, tuple((-b, -a) for b, a in pads))


def conv_weight_grad(xp, x, g, geometry, w_shape, cols=None):
    """Generic gradient of the kernel: ``im2col(x)^T @ g`` (per group)."""
    strides, dilation, pads, groups = geometry
    kernel_size = tuple(w_shape[:-2])
    if cols is None:
        cols, _ = im2col(xp, x, kernel_size, strides, dilation, pads)
        cols = xp.reshape(cols, (-1, math.prod(kernel_size), x.shape[-1]))
    return _grouped_matmul_weight(xp, cols, xp.reshape(g, (-1, g.shape[-1])), w_shape, groups)


# ---------------------------------------------------------------------------
# Functions


def _to_last(xp, x, channels_first):
    if not channels_first:
        return x
    return xp.permute_dims(x, (0,) + tuple(range(2, x.ndim)) + (1,))


def _to_first(xp, x, channels_first):
    if not channels_first:
        return x
    return xp.permute_dims(x, (0, x.ndim - 1) + tuple(range(1, x.ndim - 1)))


def _bias_grad(xp, kernel, g):
    """``g`` (channels_last) summed over every axis but the last."""
    bias_grad = getattr(kernel, "bias_grad", None)
    gb = bias_grad(g) if bias_grad is not None else None
    return gb if gb is not None else xp.sum(xp.reshape(g, (-1, g.shape[-1])), axis=0)


class Conv(Function):
    """``y = act(conv(x, kernel) + bias)``; act is identity or ReLU (fused).

    Shapes (channels_last): x ``(N, *S, C)``, kernel ``(*K, C // groups, F)``,
    bias ``(F,)`` or absent, y ``(N, *O, F)``.
    """

    def __init__(self, strides, dilation, pads, groups=1, channels_first=False, relu=False):
        self.geometry = (tuple(strides), tuple(dilation), tuple(tuple(p) for p in pads), groups)
        self.channels_first, self.relu = channels_first, relu
        self.saved = self.x = self.w = self.y = None
        # a gradient a consumer already passed through this op's ReLU (set by max pooling)
        self.premasked = None

    def forward(self, x, w, b=None):
        xp, cf = self.xp, self.channels_first
        x = _to_last(xp, x, cf)
        keep = len(self.needs_input_grad) > 1 and self.needs_input_grad[1]
        kernel = self.backend.kernel("conv")
        result = (
            kernel.forward(x, w, b, self.geometry, self.relu, keep) if kernel is not None else None
        )
        self.kernel = kernel if result is not None else None
        if result is None:
            result = conv_forward(xp, x, w, b, self.geometry, self.relu)
        y, saved = result
        if any(self.needs_input_grad):
            self.x, self.w, self.x_shape = x, w, tuple(x.shape)
            self.saved = saved if keep else None
            self.y = y if self.relu else None
        return _to_first(xp, y, cf)

    def backward(self, g):
        xp, cf = self.xp, self.channels_first
        masked_already = g is self.premasked
        self.premasked = None
        g = _to_last(xp, g, cf)
        need = self.needs_input_grad
        kernel = self.backend.kernel("conv")
        if self.relu and not masked_already:
            relu_grad = getattr(kernel, "relu_grad", None)
            masked = relu_grad(g, self.y) if relu_grad is not None else None
            if masked is None:
                masked = xp.where(self.y > 0, g, xp.zeros((), dtype=g.dtype, device=g.device))
            g = masked
        gx = gw = gb = None
        if need[0]:
            gx = (
                kernel.input_grad(g, self.w, self.geometry, self.x_shape)
                if kernel is not None
                else None
            )
            if gx is None:
                gx = conv_input_grad(xp, g, self.w, self.geometry, self.x_shape)
            gx = _to_first(xp, gx, cf)
        need_bias = len(need) > 2 and need[2]
        if need[1]:
            w_shape = tuple(self.w.shape)
            if kernel is not None:
                saved = self.saved if self.kernel is kernel else None
                both = getattr(kernel, "weight_and_bias_grad", None) if need_bias else None
                result = both(self.x, g, self.geometry, w_shape, saved) if both else None
                if result is not None:
                    gw, gb = result
                else:
                    gw = kernel.weight_grad(self.x, g, self.geometry, w_shape, saved)
            if gw is None:
                cols = self.saved if self.kernel is None else None
                gw = conv_weight_grad(xp, self.x, g, self.geometry, w_shape, cols)
        if need_bias and gb is None:
            gb = _bias_grad(xp, kernel, g)
        return gx, gw, gb

    def release(self):
        super().release()
        if self.kernel is not None and self.saved is not None and hasattr(self.kernel, "release"):
            self.kernel.release(self.saved)
        self.saved = self.x = self.w = self.y = self.premasked = None


class ConvTranspose(Function):
    """``y = conv_transpose(x, kernel) + bias``: the input-gradient of a convolution.

    Shapes (channels_last): x ``(N, *S, C)``, kernel ``(*K, F, C)``, bias
    ``(F,)`` or absent, y ``(N, *out_size, F)``. ``pads`` are those of the
    convolution that maps y-space back to x-space (see :func:`transpose_padding`).
    """

    def __init__(self, strides, dilation, pads, out_size, channels_first=False):
        self.geometry = (tuple(strides), tuple(dilation), tuple(tuple(p) for p in pads), 1)
        self.out_size = tuple(out_size)
        self.channels_first = channels_first

    def forward(self, x, w, b=None):
        xp, cf = self.xp, self.channels_first
        x = _to_last(xp, x, cf)
        out_shape = (x.shape[0],) + self.out_size + (w.shape[-2],)
        kernel = self.backend.kernel("conv_transpose")
        y = kernel.forward(x, w, self.geometry, out_shape) if kernel is not None else None
        if y is None:
            y = conv_input_grad(xp, x, w, self.geometry, out_shape)
        if b is not None:
            y = y + b
        if any(self.needs_input_grad):
            self.x, self.w = x, w
        return _to_first(xp, y, cf)

    def backward(self, g):
        xp, cf = self.xp, self.channels_first
        g = _to_last(xp, g, cf)
        need = self.needs_input_grad
        kernel = self.backend.kernel("conv_transpose")
        gx = gw = gb = None
        if need[0]:
            gx = kernel.input_grad(g, self.w, self.geometry) if kernel is not None else None
            if gx is None:
                gx = conv_forward(xp, g, self.w, None, self.geometry)[0]
            gx = _to_first(xp, gx, cf)
        if need[1]:
            w_shape = tuple(self.w.shape)
            gw = (
                kernel.weight_grad(self.x, g, self.geometry, w_shape)
                if kernel is not None
                else None
            )
            if gw is None:
                gw = conv_weight_grad(xp, g, self.x, self.geometry, w_shape)
        if len(need) > 2 and need[2]:
            gb = _bias_grad(xp, self.backend.kernel("conv"), g)
        return gx, gw, gb

    def release(self):
        super().release()
        self.x = self.w = None


# ---------------------------------------------------------------------------
# functional API


def _geometry_args(x_shape, kernel_size, strides, dilation_rate, padding, data_format, name):
    rank = len(kernel_size)
    if len(x_shape) != rank + 2:
        raise ValueError(
            f"{name}: expected an input of {rank + 2} dimensions (batch, {rank} spatial, channels) "
            f"for a kernel of {rank} spatial axes, got shape {tuple(x_shape)}"
        )
    channels_first = data_format == "channels_first"
    spatial = tuple(x_shape[2:]) if channels_first else tuple(x_shape[1:-1])
    strides = normalize_tuple(strides, rank, "strides")
    dilation = normalize_tuple(dilation_rate, rank, "dilation_rate")
    return channels_first, spatial, strides, dilation


def conv(
    x,
    kernel,
    bias=None,
    strides=1,
    padding="valid",
    dilation_rate=1,
    groups=1,
    data_format="channels_last",
    relu=False,
):
    """N-D convolution (``rank = kernel.ndim - 2`` spatial axes), Keras semantics.

    x ``(N, *S, C)`` (or ``(N, C, *S)`` for ``channels_first``), kernel
    ``(*K, C // groups, F)``, bias ``(F,)``; returns ``(N, *O, F)`` (or
    ``(N, F, *O)``). ``padding``: ``"valid"``, ``"same"``, ``"causal"`` or explicit
    ``((before, after), ...)``. ``relu=True`` fuses a ReLU into the op.
    """
    kernel_size = tuple(kernel.shape[:-2])
    channels_first, spatial, strides, dilation = _geometry_args(
        x.shape, kernel_size, strides, dilation_rate, padding, data_format, "conv"
    )
    channels = x.shape[1] if channels_first else x.shape[-1]
    if channels != kernel.shape[-2] * groups or kernel.shape[-1] % groups:
        raise ValueError(
            f"conv: input with {channels} channels (shape {tuple(x.shape)}) does not match a "
            f"kernel of shape {tuple(kernel.shape)} with groups={groups}"
        )
    if isinstance(padding, str):
        pads = tuple(
            conv_padding(n, k, s, d, padding)
            for n, k, s, d in zip(spatial, kernel_size, strides, dilation)
        )
    else:
        pads = tuple(tuple(p) for p in padding)
    for n, k, s, d, p in zip(spatial, kernel_size, strides, dilation, pads):
        if conv_output_size(n, k, s, d, p) <= 0:
            raise ValueError(
                f"conv: kernel of size {kernel_size} (dilation {dilation}) is larger than the "
                f"padded input of spatial shape {spatial} (padding {pads})"
            )
    args = (x, kernel) if bias is None else (x, kernel, bias)
    return Conv(strides, dilation, pads, groups, channels_first, relu)(*args)


def conv_transpose(
    x,
    kernel,
    bias=None,
    strides=1,
    padding="valid",
    output_padding=None,
    dilation_rate=1,
    data_format="channels_last",
):
    """N-D transposed convolution, Keras semantics.

    x ``(N, *S, C)`` (or channels_first), kernel ``(*K, F, C)``, bias ``(F,)``;
    returns ``(N, *O, F)`` with ``O`` from Keras's rule (see :func:`transpose_padding`).
    """
    kernel_size = tuple(kernel.shape[:-2])
    channels_first, spatial, strides, dilation = _geometry_args(
        x.shape, kernel_size, strides, dilation_rate, padding, data_format, "conv_transpose"
    )
    rank = len(kernel_size)
    channels = x.shape[1] if channels_first else x.shape[-1]
    if channels != kernel.shape[-1]:
        raise ValueError(
            f"conv_transpose: input with {channels} channels (shape {tuple(x.shape)}) does not "
            f"match a kernel of shape {tuple(kernel.shape)} (expects {kernel.shape[-1]})"
        )
    if output_padding is None or isinstance(output_padding, int):
        output_padding = (output_padding,) * rank
    pads = tuple(
        transpose_padding(k, s, d, padding, op)
        for k, s, d, op in zip(kernel_size, strides, dilation, output_padding)
    )
    out_size = tuple(
        transpose_output_size(n, k, s, d, p)
        for n, k, s, d, p in zip(spatial, kernel_size, strides, dilation, pads)
    )
    if any(o <= 0 for o in out_size):
        raise ValueError(
            f"conv_transpose: output spatial shape {out_size} is empty for input {tuple(x.shape)}"
        )
    args = (x, kernel) if bias is None else (x, kernel, bias)
    return ConvTranspose(strides, dilation, pads, out_size, channels_first)(*args)
