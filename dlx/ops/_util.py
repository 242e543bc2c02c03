"""Helpers shared by the ops: broadcasting gradients back, axis normalisation."""


def sum_to_shape(xp, grad, shape):
    """Sum ``grad`` over the axes that broadcasting added or stretched to reach ``shape``."""
    shape = tuple(shape)
    if tuple(grad.shape) == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        extra + i for i, size in enumerate(shape) if size == 1 and grad.shape[extra + i] != 1
    )
    if axes:
        grad = xp.sum(grad, axis=axes, keepdims=True)
    if extra:
        grad = xp.reshape(grad, shape)
    return grad


def normalize_axes(axis, ndim):
    """``axis`` (None, int or sequence, negatives allowed) as a sorted tuple of non-negative
    ints."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    axes = []
    for a in axis:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for an array of {ndim} dimensions")
        axes.append(a % ndim)
    return tuple(sorted(set(axes)))


def expand_reduced(xp, grad, axes, keepdims):
    """Re-insert reduced ``axes`` (size 1) into ``grad`` when the reduction dropped them."""
    if keepdims:
        return grad
    for a in axes:
        grad = xp.expand_dims(grad, axis=a)
    return grad


def shape_of(x):
    return tuple(x.shape) if hasattr(x, "shape") else ()
