"""Symbolic inputs for functional models: ``Input(shape)`` returns a
:class:`SymbolicTensor`; calling a layer on one records a node of the graph
instead of computing.

Output shapes are found by running the layer once on zeros of batch size 1
(under ``no_grad``), so no layer needs a hand-written shape rule; axes given
as None (other than the batch axis) are found by a second probe.
"""

import contextlib

from ..autograd import Tensor, no_grad
from ..backends import get_backend
from ..config import floatx
from .layer import Layer, unique_name

_SHAPE_PROBES = [0]


@contextlib.contextmanager
def shape_probe():
    """Marks the zero-input runs that find output shapes: they are not data.

    Layers with state updated by data (BatchNormalization's moving statistics)
    check :func:`in_shape_probe` and leave it alone.
    """
    _SHAPE_PROBES[0] += 1
    try:
        yield
    finally:
        _SHAPE_PROBES[0] -= 1


def in_shape_probe():
    return _SHAPE_PROBES[0] > 0


class Node:
    """One call of ``layer`` on symbolic ``inputs`` (a tensor or a list of them).

    ``spread``: the layer was called with the tensors as separate positional
    arguments, ``layer(a, b)``; ``inputs`` is then their list, replayed as
    ``layer(*values)``.
    """

    def __init__(self, layer, inputs, call_args=(), call_kwargs=None, spread=False):
        self.layer, self.inputs = layer, inputs
        self.call_args, self.call_kwargs = tuple(call_args), dict(call_kwargs or {})
        self.spread = bool(spread)

    @property
    def input_tensors(self):
        return list(self.inputs) if isinstance(self.inputs, (list, tuple)) else [self.inputs]


class SymbolicTensor:
    """A placeholder with a shape (batch axis None): output ``index`` of ``node``, or a model
    input."""

    def __init__(self, shape, dtype, node=None, index=0, name=None):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.node = node
        self.index = index
        self.name = name or (node.layer.name if node is not None else unique_name("input"))

    @property
    def ndim(self):
        return len(self.shape)

    @classmethod
    def from_call(cls, layer, inputs, args, kwargs, training=None, mask=None, spread=False):
        shapes = _shapes(inputs)
        if training is not None:
            kwargs = {**kwargs, "training": training}
        output_shapes = infer_output_shape(
            layer, shapes, args, kwargs, dtypes=_dtypes(inputs), spread=spread
        )
        node = Node(layer, inputs, args, kwargs, spread=spread)
        if isinstance(output_shapes, list):
            return [cls(s, layer.dtype, node, index=i) for i, s in enumerate(output_shapes)]
        return cls(output_shapes, layer.dtype, node)

    def __repr__(self):
        return f"<SymbolicTensor shape={self.shape} from {self.name!r}>"


class InputLayer(Layer):
    """The entry of a model: holds the sample shape; passes inputs through."""

    def __init__(
        self, shape=None, batch_size=None, dtype=None, name=None, input_shape=None, **kwargs
    ):
        shape = shape if shape is not None else input_shape
        if shape is None:
            raise ValueError("InputLayer: give the shape of one sample, e.g. shape=(28, 28, 1)")
        super().__init__(name=name or unique_name("input_layer"), dtype=dtype, **kwargs)
        self.shape = tuple(shape)
        self.batch_input_shape = (batch_size,) + self.shape
        self.built = True
        self.output = SymbolicTensor((batch_size,) + self.shape, self.dtype, name=self.name)
        self.output.input_layer = self

    def get_config(self):
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def Input(shape=None, batch_size=None, dtype=None, name=None, batch_shape=None):  # noqa: N802 - Keras name
    """A symbolic input of one sample ``shape`` (batch axis excluded)."""
    if batch_shape is not None:
        batch_size, shape = batch_shape[0], batch_shape[1:]
    if shape is None:
        raise ValueError("Input: give the shape of one sample, e.g. Input((28, 28, 1))")
    if isinstance(shape, int):
        shape = (shape,)
    return InputLayer(shape=tuple(shape), batch_size=batch_size, dtype=dtype, name=name).output


def _dtypes(inputs):
    if isinstance(inputs, (list, tuple)):
        return [_dtypes(x) for x in inputs]
    return inputs.dtype


def _shapes(inputs):
    if isinstance(inputs, (list, tuple)):
        return [_shapes(x) for x in inputs]
    return tuple(inputs.shape)


def _dummy(shape, fill, dtype):
    backend = get_backend()
    concrete = tuple(
        1 if i == 0 and s is None else (fill if s is None else s) for i, s in enumerate(shape)
    )
    return Tensor(backend.xp.zeros(concrete, dtype=backend.dtype(dtype), device=backend.device))


def _run(layer, shapes, fill, args, kwargs, dtypes, spread=False):
    def make(s, d):
        if isinstance(s, list):
            return [make(si, di) for si, di in zip(s, d)]
        return _dummy(s, fill, d)

    with no_grad(), shape_probe():
        if spread:
            outputs = layer(*make(shapes, dtypes), **kwargs)
        else:
            outputs = layer(make(shapes, dtypes), *args, **kwargs)
    if isinstance(outputs, (list, tuple)):
        return [tuple(o.shape) for o in outputs]
    return tuple(outputs.shape)


def infer_output_shape(layer, input_shapes, args=(), kwargs=None, dtypes=None, spread=False):
    """The output shape(s) of ``layer`` for ``input_shapes`` (batch axis None); with
    ``spread`` the inputs are passed as separate positional arguments."""
    kwargs = kwargs or {}
    if dtypes is None:
        dtypes = _default_dtypes(layer, input_shapes)
    first = _run(layer, input_shapes, 2, args, kwargs, dtypes, spread)
    if not _has_free_axis(input_shapes):
        return _batch_none(first)
    second = _run(layer, input_shapes, 3, args, kwargs, dtypes, spread)
    return _merge(first, second)


def _default_dtypes(layer, shapes):
    dtype = getattr(layer, "input_dtype", None) or floatx()
    if isinstance(shapes, list):
        return [_default_dtypes(layer, s) for s in shapes]
    return dtype


def _has_free_axis(shapes):
    if isinstance(shapes, list):
        return any(_has_free_axis(s) for s in shapes)
    return any(s is None for s in shapes[1:])


def _batch_none(shape):
    if isinstance(shape, list):
        return [_batch_none(s) for s in shape]
    return (None,) + tuple(shape[1:])


def _merge(a, b):
    if isinstance(a, list):
        return [_merge(x, y) for x, y in zip(a, b)]
    return (None,) + tuple(x if x == y else None for x, y in zip(a[1:], b[1:]))
