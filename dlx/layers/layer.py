"""The Layer base class: weights created lazily in ``build``, math in ``call``.

Subclasses validate their arguments in ``__init__``, create weights with
:meth:`Layer.add_weight` in ``build(input_shape)`` and compute in
``call(inputs, training=False[, mask=None])``. ``__call__`` converts inputs to
Tensors, casts floats to the layer dtype, builds on first use, checks the input
against what the layer was built for (``input_spec``), applies the activity
regularizer and propagates masks.
"""

import functools
import inspect
import math
import re

from .. import initializers, regularizers
from ..autograd import Tensor, Variable, as_backend_array, no_grad
from ..backends import backend_of, get_backend
from ..config import floatx

_NAME_COUNTS = {}
# Bumped whenever layers gain weights or sublayers or change ``trainable``: the
# weight lists that training asks for every step are cached against it.
_STRUCTURE_VERSION = [0]


def structure_changed():
    _STRUCTURE_VERSION[0] += 1


def unique_name(base):
    count = _NAME_COUNTS.get(base, 0)
    _NAME_COUNTS[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


def snake_case(name):
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


class InputSpec:
    """What a built layer accepts: ``ndim`` (exact) or ``min_ndim``, and fixed sizes of ``axes``."""

    def __init__(self, ndim=None, min_ndim=None, axes=None):
        self.ndim, self.min_ndim, self.axes = ndim, min_ndim, dict(axes or {})


class Layer:
    """Base class of all layers (Keras 3 semantics).

    Args:
        name: unique name (default: the snake_case class name, numbered).
        trainable: whether the layer's weights are updated by training.
        dtype: dtype of weights and computations (default ``dlx.floatx()``).
        input_shape: shape of one sample (without the batch axis), used by the
            first layer of a ``Sequential`` model.
    """

    supports_masking = False

    def __init__(
        self,
        name=None,
        trainable=True,
        dtype=None,
        input_shape=None,
        input_dim=None,
        batch_size=None,
        activity_regularizer=None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(
                f"{type(self).__name__}: unexpected keyword argument(s) {sorted(kwargs)}"
            )
        self.name = name or unique_name(snake_case(type(self).__name__))
        self.dtype = dtype or floatx()
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        self.batch_input_shape = (
            (batch_size,) + tuple(input_shape) if input_shape is not None else None
        )
        self._weights = []
        self._trainable = trainable
        self.built = False
        self.input_spec = None
        self.activity_regularizer = regularizers.get(activity_regularizer)
        self._activity_losses = []
        self.build_input_shape = None
        signature = inspect.signature(self.call).parameters
        self._call_takes_training = "training" in signature
        self._call_takes_mask = "mask" in signature

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        build = cls.__dict__.get("build")
        if build is not None and not getattr(build, "marks_built", False):
            cls.build = _marking_built(build)

    # -- to override ---------------------------------------------------------
    def build(self, input_shape):
        self.built = True

    def call(self, inputs):
        return inputs

    def compute_mask(self, inputs, mask=None):
        return mask if self.supports_masking else None

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype}
        if self.batch_input_shape is not None:
            config["batch_input_shape"] = list(self.batch_input_shape)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        batch_input_shape = config.pop("batch_input_shape", None)
        if batch_input_shape is not None:
            config["input_shape"] = tuple(batch_input_shape[1:])
        return cls(**config)

    # -- calling --------------------------------------------------------------
    def __call__(self, inputs, *args, training=None, mask=None, **kwargs):
        if args and any(_is_symbolic(a) for a in args):
            # layer(a, b) on symbolic tensors: one node with the tensors spread as arguments
            tensors = [inputs, *args]
            symbolic = _symbolic_tensor_type()
            if not all(isinstance(t, symbolic) for t in tensors):
                raise TypeError(
                    f"Layer '{self.name}' ({type(self).__name__}): called with symbolic tensors "
                    f"as positional arguments, every positional argument must be one "
                    f"(got {[type(t).__name__ for t in tensors]}); pass other values by keyword"
                )
            return symbolic.from_call(
                self, tensors, (), kwargs, training=training, mask=mask, spread=True
            )
        if _is_symbolic(inputs):
            return _symbolic_tensor_type().from_call(
                self, inputs, args, kwargs, training=training, mask=mask
            )
        inputs = self._to_tensors(inputs)
        if not self.built:
            self._build_from(inputs)
        self._check_inputs(inputs)
        if mask is None:
            mask = _collect_mask(inputs)
        call_kwargs = kwargs  # a fresh dict of this call's own
        if self._call_takes_training:
            call_kwargs["training"] = bool(training)
        if self._call_takes_mask:
            call_kwargs["mask"] = mask
        outputs = self.call(inputs, *args, **call_kwargs)
        if self.activity_regularizer is not None and training:
            for output in _flatten(outputs):
                batch = output.shape[0] if output.ndim else 1
                self._activity_losses.append(self.activity_regularizer(output) / batch)
        output_mask = self.compute_mask(inputs, mask)
        if output_mask is not None:
            for output in _flatten(outputs):
                if isinstance(output, Tensor) and output.mask is None:
                    output.mask = output_mask
        return outputs

    def _to_tensors(self, inputs):
        if isinstance(inputs, (list, tuple)):
            return type(inputs)(self._to_tensors(x) for x in inputs)
        if isinstance(inputs, Tensor):
            tensor = inputs
        else:
            tensor = Tensor(as_backend_array(inputs))
        backend = backend_of(tensor.value)
        dtype = tensor.value.dtype
        if dtype != backend.dtype(self.dtype) and backend.xp.isdtype(dtype, "real floating"):
            cast = Tensor(backend.xp.astype(tensor.value, backend.dtype(self.dtype)))
            if tensor.requires_grad:
                from ..ops.cast import cast as cast_op

                cast = cast_op(tensor, self.dtype)
            cast.mask = tensor.mask
            tensor = cast
        return tensor

    def _build_from(self, inputs):
        shapes = _shapes(inputs)
        self.build_input_shape = shapes
        if hasattr(self, "_build_shape_check"):
            self._build_shape_check(shapes)
        self.build(shapes)
        self.built = True

    def _check_inputs(self, inputs):
        spec = self.input_spec
        if spec is None or isinstance(inputs, (list, tuple)):
            return
        shape = inputs.shape
        expected = self.build_input_shape
        if spec.ndim is not None and len(shape) != spec.ndim:
            raise ValueError(
                f"Layer '{self.name}' ({type(self).__name__}) expects input with {spec.ndim} "
                f"dimensions, e.g. shape {_fmt_shape(expected)}, but got shape {tuple(shape)}."
            )
        if spec.min_ndim is not None and len(shape) < spec.min_ndim:
            raise ValueError(
                f"Layer '{self.name}' ({type(self).__name__}) expects input with at least "
                f"{spec.min_ndim} dimensions, but got shape {tuple(shape)}."
            )
        for axis, size in spec.axes.items():
            if shape[axis] != size:
                raise ValueError(
                    f"Layer '{self.name}' ({type(self).__name__}) was built for input shape "
                    f"{_fmt_shape(expected)} (axis {axis} of size {size}) but got input shape "
                    f"{tuple(shape)}."
                )

    # -- weights ----------------------------------------------------------------
    def add_weight(
        self,
        name,
        shape,
        initializer="glorot_uniform",
        regularizer=None,
        trainable=True,
        dtype=None,
    ):
        """Create, register and return a :class:`Variable` of ``shape``."""
        initializer = initializers.get(initializer)
        dtype = dtype or self.dtype
        value = initializer(tuple(shape), dtype)
        variable = Variable(
            value,
            trainable=trainable,
            name=f"{self.name}/{name}",
            regularizer=regularizers.get(regularizer),
        )
        variable.requires_grad = trainable and self._trainable
        self._weights.append(variable)
        structure_changed()
        return variable

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = bool(value)
        for w in self._weights:
            w.requires_grad = w.trainable and self._trainable
        for layer in self._sublayers():
            layer.trainable = value
        structure_changed()

    def __setattr__(self, name, value):
        if isinstance(value, Layer) or (
            isinstance(value, (list, tuple)) and any(isinstance(v, Layer) for v in value)
        ):
            structure_changed()
        object.__setattr__(self, name, value)

    def _cached(self, key, compute):
        cache = self.__dict__.setdefault("_structure_cache", {})
        entry = cache.get(key)
        if entry is None or entry[0] != _STRUCTURE_VERSION[0]:
            entry = cache[key] = (_STRUCTURE_VERSION[0], compute())
        return entry[1]

    def _sublayers(self):
        """Direct sublayers: Layer attributes and lists of Layers, in assignment order."""
        found = []
        for value in vars(self).values():
            if isinstance(value, Layer):
                found.append(value)
            elif isinstance(value, (list, tuple)):
                found.extend(v for v in value if isinstance(v, Layer))
        return found

    def _all_layers(self):
        """This layer and every layer below it, each once, depth first."""

        def compute():
            seen, order = set(), []

            def visit(layer):
                if id(layer) in seen:
                    return
                seen.add(id(layer))
                order.append(layer)
                for sub in layer._sublayers():
                    visit(sub)

            visit(self)
            return order

        return self._cached("all_layers", compute)

    @property
    def weights(self):
        def compute():
            seen, out = set(), []
            for layer in self._all_layers():
                for w in layer._weights:
                    if id(w) not in seen:
                        seen.add(id(w))
                        out.append(w)
            return out

        return list(self._cached("weights", compute))

    @property
    def trainable_weights(self):
        def compute():
            if not self._trainable:
                return []
            seen, out = set(), []
            for layer in self._all_layers():
                if not layer._trainable:
                    continue
                for w in layer._weights:
                    if w.trainable and id(w) not in seen:
                        seen.add(id(w))
                        out.append(w)
            return out

        return list(self._cached("trainable_weights", compute))

    @property
    def non_trainable_weights(self):
        trainable = {id(w) for w in self.trainable_weights}
        return [w for w in self.weights if id(w) not in trainable]

    def get_weights(self):
        """The weights as host NumPy arrays (copies), in Keras order and shapes."""
        # copies: training updates weights in place, a snapshot must not change with them
        return [w.backend.to_numpy(w.value, copy=True) for w in self.weights]

    def set_weights(self, values):
        weights = self.weights
        values = list(values)
        if len(values) != len(weights):
            raise ValueError(
                f"Layer '{self.name}' has {len(weights)} weights "
                f"({[w.shape for w in weights]}) but set_weights got {len(values)} arrays."
            )
        for w, v in zip(weights, values):
            if tuple(v.shape) != w.shape:
                raise ValueError(
                    f"Layer '{self.name}': weight {w.name!r} has shape {w.shape} but the "
                    f"provided array has shape {tuple(v.shape)}."
                )
        for w, v in zip(weights, values):
            w.assign(get_backend().asarray(v))

    def count_params(self):
        return sum(math.prod(w.shape) for w in self.weights)

    @property
    def losses(self):
        """Penalties of this layer and its sublayers: weight regularizers and the
        activity losses of the last training call."""
        regularized = self._cached(
            "regularized",
            lambda: [w for w in self.weights if w.regularizer is not None],
        )
        out = [w.regularizer(w) for w in regularized if w.trainable]
        for layer in self._all_layers():
            out.extend(layer._activity_losses)
        return out

    def clear_losses(self):
        for layer in self._all_layers():
            if layer._activity_losses:
                layer._activity_losses = []

    def zero_grad(self):
        for w in self.weights:
            w.grad = None

    def compute_output_shape(self, input_shape):
        """Output shape for ``input_shape`` (batch axis included, None allowed)."""
        from .input_layer import infer_output_shape

        return infer_output_shape(self, input_shape)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r}, built={self.built}>"


_SYMBOLIC_TENSOR = []  # input_layer.SymbolicTensor, imported on first use (it imports us)


def _symbolic_tensor_type():
    if not _SYMBOLIC_TENSOR:
        from .input_layer import SymbolicTensor

        _SYMBOLIC_TENSOR.append(SymbolicTensor)
    return _SYMBOLIC_TENSOR[0]


def _is_symbolic(inputs):
    if isinstance(inputs, Tensor):  # the common case
        return False
    symbolic = _symbolic_tensor_type()
    if isinstance(inputs, (list, tuple)):
        return any(isinstance(x, symbolic) for x in inputs)
    return isinstance(inputs, symbolic)


def _flatten(outputs):
    if isinstance(outputs, (list, tuple)):
        out = []
        for o in outputs:
            out.extend(_flatten(o))
        return out
    return [outputs]


def _collect_mask(inputs):
    if isinstance(inputs, (list, tuple)):
        masks = [getattr(x, "mask", None) for x in inputs]
        return masks if any(m is not None for m in masks) else None
    return getattr(inputs, "mask", None)


def _marking_built(build):
    """``build`` that also marks the layer built, as Keras does: a user may call
    ``layer.build(shape)`` directly, and the first call must not build it again."""

    @functools.wraps(build)
    def build_and_mark(self, input_shape, *args, **kwargs):
        result = build(self, input_shape, *args, **kwargs)
        if self.build_input_shape is None and input_shape is not None:
            self.build_input_shape = _plain_shape(input_shape)
        self.built = True
        return result

    build_and_mark.marks_built = True
    return build_and_mark


def _plain_shape(shape):
    """A shape given to ``build`` in the form ``_shapes`` gives (tuples; lists for several)."""
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
        return [_plain_shape(s) for s in shape]
    return tuple(shape) if isinstance(shape, (list, tuple)) else shape


def _shapes(inputs):
    if isinstance(inputs, (list, tuple)):
        return [_shapes(x) for x in inputs]
    return tuple(inputs.shape)


def _fmt_shape(shape):
    if shape is None:
        return "?"
    if isinstance(shape, list):
        return str([_fmt_shape(s) for s in shape])
    return str((None,) + tuple(shape[1:]))


__all__ = ["InputSpec", "Layer", "no_grad", "unique_name"]
