"""The ONNX exporter: walks a model's layers and asks one converter per layer type.

A converter is ``converter(layer, inputs, ctx) -> outputs``: ``inputs`` is a list
of :class:`Value` (an ONNX tensor name plus the static shape dlx knows, batch axis
None), ``ctx`` the :class:`ExportContext` that adds nodes and initializers, and the
result one ONNX tensor name or a list of them (one per layer output). Converters
read weights only through ``layer.get_weights()`` (host NumPy in Keras layout), so a
model trained on any backend exports the same way.

This module is a host boundary: it builds the graph from host NumPy arrays.
``onnx`` itself is imported only inside :func:`export`.
"""

import hashlib
import os

import numpy as np

DEFAULT_OPSET = 17  # the first opset with LayerNormalization
MIN_OPSET = 17

CONVERTERS = {}


class UnsupportedLayerError(NotImplementedError):
    """A layer (or a setting of it) that the ONNX exporter cannot express."""


def register_converter(*class_names):
    """Decorator: ``@register_converter("Dense")`` makes the function the converter of layers
    whose class is named ``Dense`` (user layers can be registered the same way)."""

    def decorate(fn):
        for name in class_names:
            CONVERTERS[name] = fn
        return fn

    return decorate


def unsupported(layer, why):
    """The error for a layer (setting) that cannot be exported, naming the layer and its type."""
    return UnsupportedLayerError(
        f"ONNX export: layer '{layer.name}' ({type(layer).__name__}): {why}"
    )


class Value:
    """One tensor of the ONNX graph: its ``name``, the static ``shape`` dlx knows (batch axis
    None; None for unknown sizes) and the ONNX name of the Keras mask it carries (a boolean
    ``(batch, timesteps)`` tensor from Embedding(mask_zero=True) or Masking), or None."""

    def __init__(self, name, shape, mask=None):
        self.name = name
        self.shape = None if shape is None else tuple(shape)
        self.mask = mask

    @property
    def masked(self):
        return self.mask is not None

    @property
    def rank(self):
        return len(self.shape)

    def __repr__(self):
        return f"Value({self.name!r}, shape={self.shape})"


def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "dlx.onnx.export needs the onnx package: pip install 'dlx[onnx]' "
            "(onnx, plus onnxruntime to run the exported model)"
        ) from error
    return onnx, helper, numpy_helper


class ExportContext:
    """Collects the nodes and initializers of the graph; helpers for converters."""

    def __init__(self, opset=DEFAULT_OPSET, dtype="float32"):
        self.onnx, self.helper, self.numpy_helper = _import_onnx()
        self.TensorProto = self.onnx.TensorProto
        self.opset = int(opset)
        self.dtype = np.dtype(dtype)
        self.nodes, self.initializers = [], []
        self._names = set()
        self._constants = {}
        self.call_kwargs = {}  # keyword arguments of the layer call being converted
        self.layer = None  # the layer being converted (names its nodes)
        self.produced_mask = None  # set by converters of mask-making layers (set_output_mask)

    # -- names, constants, nodes ----------------------------------------------------
    def fresh(self, hint):
        base = "".join(c if c.isalnum() or c in "_./" else "_" for c in str(hint)) or "t"
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def _prefix(self, hint):
        return f"{self.layer.name}/{hint}" if self.layer is not None else hint

    def const(self, array, hint="const", dtype=None):
        """An initializer holding ``array`` (floats cast to the model dtype unless ``dtype``)."""
        array = np.asarray(array)
        if dtype is not None:
            array = array.astype(dtype)
        elif array.dtype.kind == "f":
            array = array.astype(self.dtype)
        array = np.array(array, order="C", copy=True)  # (ascontiguousarray makes 0-d 1-d)
        # equal constants are stored once (shared layers, repeated shapes and scalars)
        key = (array.dtype.str, array.shape, hashlib.sha1(array.tobytes()).hexdigest())
        if key in self._constants:
            return self._constants[key]
        name = self.fresh(self._prefix(hint))
        self.initializers.append(self.numpy_helper.from_array(array, name))
        self._constants[key] = name
        return name

    def ints(self, values, hint="shape"):
        return self.const(np.asarray(values, dtype=np.int64), hint, dtype=np.int64)

    def scalar(self, value, hint="scalar"):
        return self.const(np.asarray(value, dtype=self.dtype), hint)

    def op(self, op_type, inputs, hint=None, outputs=1, **attrs):
        """Add one node; returns its output name (or a list of ``outputs`` names)."""
        names = [self.fresh(self._prefix(f"{hint or op_type}")) for _ in range(outputs)]
        node_name = self.fresh(self._prefix(f"{op_type}_node"))
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(
            self.helper.make_node(op_type, list(inputs), names, name=node_name, **attrs)
        )
        return names[0] if outputs == 1 else names

    @property
    def onnx_dtype(self):
        return self.helper.np_dtype_to_tensor_dtype(self.dtype)

    # -- common patterns ---------------------------------------------------------
    def transpose(self, x, perm):
        return self.op("Transpose", [x], "transpose", perm=list(perm))

    def reshape(self, x, shape):
        """Reshape to ``shape`` (ONNX rules: 0 copies the input's size, -1 is inferred)."""
        return self.op("Reshape", [x, self.ints(shape)], "reshape")

    def squeeze(self, x, axes):
        return self.op("Squeeze", [x, self.ints(axes, "axes")], "squeeze")

    def unsqueeze(self, x, axes):
        return self.op("Unsqueeze", [x, self.ints(axes, "axes")], "unsqueeze")

    def reduce(self, op_type, x, axes, keepdims):
        """``ReduceMean``/``ReduceMax``/... over ``axes`` (an attribute before opset 18, then an
        input)."""
        if self.opset >= 18 or op_type == "ReduceSum":  # ReduceSum: an input since opset 13
            return self.op(op_type, [x, self.ints(axes, "axes")], op_type, keepdims=int(keepdims))
        return self.op(op_type, [x], op_type, axes=list(axes), keepdims=int(keepdims))

    def matmul_bias(self, x, kernel, bias=None):
        y = self.op("MatMul", [x, self.const(kernel, "kernel")], "matmul")
        if bias is not None:
            y = self.op("Add", [y, self.const(bias, "bias")], "bias_add")
        return y

    def set_output_mask(self, name):
        """For converters of layers that make a mask (Embedding(mask_zero=True), Masking):
        the ONNX name of the boolean mask of the output."""
        self.produced_mask = name

    def activation(self, fn_or_name, x):
        """Apply a dlx activation (a function of ``dlx.ops.activations`` or its name)."""
        from .converters_core import apply_activation

        return apply_activation(self, fn_or_name, x)

    # -- layers and models ---------------------------------------------------------
    def convert_layer(self, layer, inputs, call_kwargs=None):
        """The ONNX output names of ``layer`` called on ``inputs`` (a list of Values)."""
        from ..models.model import Model

        if isinstance(layer, Model):
            return self.convert_model(layer, inputs)
        converter = CONVERTERS.get(type(layer).__name__)
        if converter is None:
            raise unsupported(
                layer,
                "no ONNX converter for this layer type; exportable types are "
                f"{sorted(CONVERTERS)} (add one with dlx.onnx.register_converter)",
            )
        if any(v.shape is None for v in inputs):
            raise unsupported(layer, "an input has no known shape")
        saved = self.layer, self.call_kwargs
        self.layer, self.call_kwargs = layer, dict(call_kwargs or {})
        self.produced_mask = None
        try:
            outputs = converter(layer, inputs, self)
        finally:
            self.layer, self.call_kwargs = saved
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

    def output_mask(self, layer, inputs):
        """The mask of ``layer``'s output, as dlx's ``Layer.compute_mask`` gives it."""
        if self.produced_mask is not None:
            mask, self.produced_mask = self.produced_mask, None
            return mask
        kind = type(layer).__name__
        if kind in ("SimpleRNN", "LSTM", "GRU", "Bidirectional"):
            return inputs[0].mask if layer.return_sequences else None
        if kind in ("Attention", "MultiHeadAttention"):  # the query's mask
            return inputs[0].mask
        if getattr(layer, "supports_masking", False) and len(inputs) == 1:
            return inputs[0].mask
        return None

    def convert_model(self, model, inputs):
        """Convert a Sequential or functional model applied to ``inputs`` (Values)."""
        from ..models.sequential import Sequential

        if isinstance(model, Sequential):
            return self._convert_sequential(model, inputs)
        if getattr(model, "_functional", False):
            return self._convert_functional(model, inputs)
        raise unsupported(
            model,
            "subclassed models compute in Python code (call), which cannot be exported; "
            "rebuild it as a Sequential or functional model",
        )

    def _convert_sequential(self, model, inputs):
        if len(inputs) != 1:
            raise ValueError(
                f"ONNX export: Sequential '{model.name}' takes one input, got {len(inputs)}"
            )
        x = inputs[0]
        built_for = tuple(model.input_shape or ())[1:]
        # Sequential.build records sizes probed with 1 for unknown axes, and only for the
        # shape it was built for: otherwise find the shapes the way functional models do
        infer = any(s is None for s in x.shape[1:]) or tuple(x.shape[1:]) != built_for
        for layer in model.layers:
            names = self.convert_layer(layer, [x])
            shape = model.output_shapes.get(layer.name)
            if infer:
                from ..layers.input_layer import infer_output_shape

                shape = infer_output_shape(layer, x.shape)
                shape = shape[0] if isinstance(shape, list) else shape
            x = Value(names[0], shape, mask=self.output_mask(layer, [x]))
        return [x.name]

    def _convert_functional(self, model, inputs):
        from ..models.model import _node_outputs

        if len(inputs) != len(model.inputs):
            raise ValueError(
                f"ONNX export: model '{model.name}' takes {len(model.inputs)} inputs, "
                f"got {len(inputs)}"
            )
        values = {id(t): v for t, v in zip(model.inputs, inputs)}
        # inputs more specific than the model's Input shapes (export's input_shape): find
        # every tensor's shape again, the way the graph was first traced
        infer = any(tuple(v.shape) != tuple(t.shape) for t, v in zip(model.inputs, inputs))
        for node in model._nodes:
            args = [values[id(t)] for t in node.input_tensors]
            kwargs = {k: v for k, v in node.call_kwargs.items() if k != "training"}
            if node.call_args or node.spread:
                raise unsupported(
                    node.layer, "positional call arguments beyond the inputs are not supported"
                )
            names = self.convert_layer(node.layer, args, kwargs)
            mask = self.output_mask(node.layer, args)
            shapes = _traced_shapes(node, args) if infer else None
            for t in _node_outputs(model, node):
                if t.index >= len(names):
                    raise unsupported(
                        node.layer,
                        f"the converter gave {len(names)} outputs, the model uses output {t.index}",
                    )
                shape = t.shape if shapes is None else shapes[t.index]
                values[id(t)] = Value(names[t.index], shape, mask=mask if t.index == 0 else None)
        return [values[id(t)].name for t in model.outputs]


def _traced_shapes(node, args):
    """Output shapes of ``node``'s layer for the input shapes of ``args`` (Values)."""
    from ..layers.input_layer import infer_output_shape

    listed = isinstance(node.inputs, (list, tuple))
    shapes = [v.shape for v in args] if listed else args[0].shape
    dtypes = [t.dtype for t in node.input_tensors] if listed else node.input_tensors[0].dtype
    out = infer_output_shape(node.layer, shapes, node.call_args, node.call_kwargs, dtypes=dtypes)
    return out if isinstance(out, list) else [out]


# ---------------------------------------------------------------------------
# the entry point


def _sample_shapes(input_shape, count):
    if input_shape is None:
        return None
    shapes = list(input_shape) if count > 1 else [input_shape]
    nested = all(isinstance(s, (list, tuple)) for s in shapes)
    if count > 1 and (len(shapes) != count or not nested):
        raise ValueError(
            f"ONNX export: the model has {count} inputs; give input_shape as a list of {count} "
            f"shapes, got {input_shape!r}"
        )
    return [tuple(s) for s in shapes]


def _graph_inputs(model, input_shape):
    """``[(name, batch shape, dtype name)]`` of the model's inputs; builds a Sequential."""
    from ..models.sequential import Sequential

    if isinstance(model, Sequential):
        if not model.layers:
            raise ValueError(f"ONNX export: Sequential '{model.name}' has no layers")
        shapes = _sample_shapes(input_shape, 1)
        if shapes is not None and not model.built:
            model.build((None,) + shapes[0])
        if not model.built or model.input_shape is None:
            raise ValueError(
                f"ONNX export: Sequential '{model.name}' is not built; give input_shape "
                f"(the shape of one sample, e.g. input_shape=(28, 28, 1))"
            )
        shape = (None,) + tuple(model.input_shape[1:])
        if shapes is not None:  # e.g. a fixed length for a model built for any length
            given = (None,) + shapes[0]
            if len(given) != len(shape) or any(
                s is not None and g != s for s, g in zip(shape[1:], given[1:])
            ):
                raise ValueError(
                    f"ONNX export: input_shape {shapes[0]} does not match Sequential "
                    f"'{model.name}', built for input shape {model.input_shape}"
                )
            shape = given
        return [("input", shape, model.dtype)]
    if not getattr(model, "_functional", False):
        raise UnsupportedLayerError(
            f"ONNX export: model '{model.name}' ({type(model).__name__}) is subclassed; its "
            f"call() is Python code that cannot be exported. Rebuild it as a Sequential or "
            f"functional model."
        )
    shapes = _sample_shapes(input_shape, len(model.inputs))
    out = []
    for i, t in enumerate(model.inputs):
        shape = tuple(t.shape)
        if shapes is not None:
            given = (None,) + shapes[i]
            if len(given) != len(shape) or any(
                s is not None and g != s for s, g in zip(shape[1:], given[1:])
            ):
                raise ValueError(
                    f"ONNX export: input_shape {shapes[i]} does not match the model input "
                    f"{t.name!r} of shape {shape}"
                )
            shape = given
        out.append((t.name, shape, str(t.dtype)))
    return out


def _onnx_dims(shape, name):
    dims = []
    for i, s in enumerate(shape):
        if i == 0:
            dims.append("batch")
        else:
            dims.append(f"{name}_dim{i}" if s is None else int(s))
    return dims


def export(
    model,
    path=None,
    input_shape=None,
    opset=DEFAULT_OPSET,
    input_names=None,
    output_names=None,
    input_dtype=None,
):
    """Write ``model`` (Sequential or functional) as an ONNX model; returns the ModelProto.

    Args:
        model: a built model, or a Sequential given ``input_shape``.
        path: file to write (``None``: only return the ModelProto).
        input_shape: shape of one sample (batch axis excluded), a list of them for
            several inputs; needed for an unbuilt Sequential, else checked against the model.
        opset: ONNX opset (>= 17).
        input_names / output_names: graph names (default: the dlx input/output names).
        input_dtype: dtype of the graph inputs (default: the model inputs' dtype, e.g.
            ``"float32"``; an Embedding input accepts float indices, as in dlx).

    The batch axis is dynamic ("batch"); other axes keep the sizes dlx knows. Layers
    run in inference mode (Dropout is the identity, BatchNormalization uses its moving
    statistics). Raises :class:`UnsupportedLayerError` (a NotImplementedError) naming
    the first layer that cannot be exported.
    """
    if int(opset) < MIN_OPSET:
        raise ValueError(f"ONNX export: opset must be >= {MIN_OPSET}, got {opset}")
    ctx = ExportContext(opset, model.dtype)
    helper = ctx.helper
    specs = _graph_inputs(model, input_shape)
    names = list(input_names) if input_names is not None else [_clean(n) for n, _, _ in specs]
    if len(names) != len(specs):
        raise ValueError(f"ONNX export: {len(specs)} inputs but {len(names)} input_names")
    graph_inputs, values = [], []
    for i, ((_, shape, dtype), name) in enumerate(zip(specs, names)):
        if input_dtype is not None:
            dtype = input_dtype[i] if isinstance(input_dtype, (list, tuple)) else input_dtype
        name = ctx.fresh(name)
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        graph_inputs.append(helper.make_tensor_value_info(name, elem, _onnx_dims(shape, name)))
        values.append(Value(name, shape))
    outs = ctx.convert_model(model, values)

    out_shapes = _output_shapes(model)
    default_names = _default_output_names(model, len(outs))
    out_names = list(output_names) if output_names is not None else default_names
    if len(out_names) != len(outs):
        raise ValueError(f"ONNX export: {len(outs)} outputs but {len(out_names)} output_names")
    graph_outputs = []
    for out, name, shape in zip(outs, out_names, out_shapes):
        name = ctx.fresh(_clean(name))
        ctx.nodes.append(helper.make_node("Identity", [out], [name], name=ctx.fresh("output")))
        dims = _onnx_dims(shape, name) if shape is not None else None
        graph_outputs.append(helper.make_tensor_value_info(name, ctx.onnx_dtype, dims))

    graph = helper.make_graph(
        ctx.nodes, _clean(model.name), graph_inputs, graph_outputs, initializer=ctx.initializers
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ctx.opset)],
        producer_name="dlx",
        producer_version=_version(),
    )
    # consumers with an older IR reader (onnxruntime) need an IR version they know
    proto.ir_version = min(proto.ir_version, 9 if ctx.opset <= 21 else 10)
    ctx.onnx.checker.check_model(proto)
    if path is not None:
        path = os.fspath(path)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(proto.SerializeToString())
        os.replace(tmp, path)
    return proto


def _output_shapes(model):
    from ..models.sequential import Sequential

    if isinstance(model, Sequential):
        return [model.output_shape]
    return [tuple(t.shape) for t in model.outputs]


def _default_output_names(model, count):
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != count or len(set(names)) != count:
        return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    return names


def _clean(name):
    return "".join(c if c.isalnum() or c in "_." else "_" for c in str(name)) or "t"


def _version():
    try:
        from .. import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return ""


# the converters register themselves on import
from . import (  # noqa: E402,F401
    converters_attention,
    converters_conv,
    converters_core,
    converters_recurrent,
)
