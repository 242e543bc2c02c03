"""Layer and model configs <-> objects, as JSON-safe data (no pickle, no code).

A layer is ``{"class_name": ..., "config": layer.get_config()}``. Built-in
classes are found by name in :mod:`dlx.layers`; user layers (and subclassed
models with a config) are made loadable with the :func:`register_serializable`
decorator or passed as ``custom_objects={"Name": cls}``. Only subclasses of
``Layer`` can ever be produced from a name, so a file cannot name an arbitrary
Python callable.

A functional model's config (Keras-like) lists its layers once each and the
graph of calls::

    {"name": "model",
     "layers": [{"class_name": "InputLayer", "config": {...}}, {"class_name": "Dense", ...}],
     "input_layers": ["input_layer"],          # names, in the order of model.inputs
     "input_keys": null,                        # or the dict keys when inputs were a dict
     "nodes": [{"layer": "dense", "inputs": {"input": 0}, "args": [], "kwargs": {}}, ...],
     "outputs": [{"node": 3, "index": 0}],     # a tensor is {"input": i} or {"node": k, "index": j}
     "output_structure": "single" | "list" | {"dict": [keys]}}

Nodes are in execution order, so rebuilding calls each layer on the symbolic
outputs of earlier nodes and gets the same graph (and the same weight order).
"""

import json

_CUSTOM = {}


def register_serializable(cls=None, name=None):
    """Class decorator: make a custom Layer (or Model) loadable by ``dlx.load_model``.

    The class must implement ``get_config()`` returning JSON-safe values and
    accept them back in ``__init__`` (or override ``from_config``).
    """

    def decorate(c):
        _CUSTOM[name or c.__name__] = c
        return c

    return decorate(cls) if cls is not None else decorate


def layer_class(name, custom_objects=None):
    """The Layer subclass called ``name`` (custom objects, registered classes, then dlx.layers)."""
    from .. import layers
    from ..layers.layer import Layer
    from . import Model, Sequential

    if not isinstance(name, str):
        raise ValueError(f"layer class_name must be a string, got {name!r}")
    candidates = [
        (custom_objects or {}).get(name),
        _CUSTOM.get(name),
        {"Sequential": Sequential, "Model": Model, "Functional": Model}.get(name),
        None if name.startswith("_") else getattr(layers, name, None),
    ]
    for cls in candidates:
        if isinstance(cls, type) and issubclass(cls, Layer):
            return cls
    raise ValueError(
        f"unknown layer class {name!r}: a custom layer must be registered with "
        f"@dlx.register_serializable (or passed in custom_objects) before loading"
    )


def serialize_layer(layer):
    """``{"class_name", "config"}`` for ``layer``; the config must be JSON-safe."""
    config = layer.get_config()
    try:
        json.dumps(config)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Layer '{layer.name}' ({type(layer).__name__}): get_config() returned values that "
            f"are not JSON-safe ({error}); return plain numbers, strings, lists and dicts"
        ) from error
    return {"class_name": type(layer).__name__, "config": config}


def deserialize_layer(config, custom_objects=None):
    """A new layer from ``{"class_name", "config"}`` (inverse of :func:`serialize_layer`)."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(
            f"a layer config must be a dict with 'class_name' and 'config', got {config!r:.200}"
        )
    cls = layer_class(config["class_name"], custom_objects)
    inner = config.get("config", {})
    if not isinstance(inner, dict):
        raise ValueError(
            f"layer {config['class_name']!r}: 'config' must be a dict, got {inner!r:.200}"
        )
    from . import Model

    if issubclass(cls, Model) and custom_objects:
        return cls.from_config(inner, custom_objects=custom_objects)
    return cls.from_config(inner)


# -- functional models -----------------------------------------------------------------
def _json_safe(value, what):
    try:
        json.dumps(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"cannot save {what}: {value!r:.200} is not JSON-safe ({error})") from error
    return value


def functional_config(model):
    """The config of a functional ``Model`` (see the module docstring)."""
    input_ids = {id(t): i for i, t in enumerate(model.inputs)}
    node_ids = {id(node): k for k, node in enumerate(model._nodes)}

    def ref(tensor):
        if id(tensor) in input_ids:
            return {"input": input_ids[id(tensor)]}
        return {"node": node_ids[id(tensor.node)], "index": tensor.index}

    def refs(inputs):
        if isinstance(inputs, (list, tuple)):
            return [refs(t) for t in inputs]
        return ref(inputs)

    input_layers = []
    for t in model.inputs:
        layer = getattr(t, "input_layer", None)
        if layer is None:
            raise TypeError(f"Model '{model.name}': input {t.name!r} is not a layers.Input tensor")
        input_layers.append(layer)
    layer_configs = [serialize_layer(layer) for layer in input_layers]
    layer_configs += [serialize_layer(layer) for layer in model.graph_layers]
    nodes = []
    for node in model._nodes:
        entry = {
            "layer": node.layer.name,
            "inputs": refs(node.inputs),
            "args": _json_safe(list(node.call_args), f"the arguments of layer '{node.layer.name}'"),
            "kwargs": _json_safe(
                dict(node.call_kwargs), f"the arguments of layer '{node.layer.name}'"
            ),
        }
        if node.spread:
            entry["spread"] = True  # layer(a, b): the inputs are separate arguments
        nodes.append(entry)
    nested_out = model._nested_outputs
    if isinstance(nested_out, dict):
        structure = {"dict": list(nested_out)}
    elif isinstance(nested_out, (list, tuple)):
        structure = "list"
    else:
        structure = "single"
    nested_in = model._nested_inputs
    return {
        "name": model.name,
        "layers": layer_configs,
        "input_layers": [layer.name for layer in input_layers],
        "input_keys": list(nested_in) if isinstance(nested_in, dict) else None,
        "input_structure": "list" if isinstance(nested_in, (list, tuple)) else "single",
        "nodes": nodes,
        "outputs": [ref(t) for t in model.outputs],
        "output_structure": structure,
    }


def _expect(condition, message):
    if not condition:
        raise ValueError(f"functional model config: {message}")


def functional_from_config(cls, config, custom_objects=None):
    """Rebuild a functional model of class ``cls`` from :func:`functional_config` output."""
    from ..layers.input_layer import InputLayer

    _expect(isinstance(config, dict), f"expected a dict, got {type(config).__name__}")
    for key in ("layers", "input_layers", "nodes", "outputs"):
        _expect(isinstance(config.get(key), list), f"'{key}' must be a list")
    layers_by_name = {}
    for entry in config["layers"]:
        layer = deserialize_layer(entry, custom_objects)
        _expect(layer.name not in layers_by_name, f"two layers are named {layer.name!r}")
        layers_by_name[layer.name] = layer
    inputs = []
    for name in config["input_layers"]:
        layer = layers_by_name.get(name) if isinstance(name, str) else None
        _expect(
            isinstance(layer, InputLayer),
            f"input layer {name!r} is not an InputLayer of the config",
        )
        inputs.append(layer.output)
    produced = []  # per node: its output(s)

    def resolve(item):
        if isinstance(item, list):
            return [resolve(x) for x in item]
        _expect(isinstance(item, dict), f"bad tensor reference {item!r:.100}")
        if "input" in item:
            i = item["input"]
            _expect(isinstance(i, int) and 0 <= i < len(inputs), f"bad input index {i!r}")
            return inputs[i]
        k, j = item.get("node"), item.get("index", 0)
        _expect(
            isinstance(k, int) and 0 <= k < len(produced), f"node {k!r} is used before it is made"
        )
        out = produced[k]
        if isinstance(out, (list, tuple)):
            _expect(isinstance(j, int) and 0 <= j < len(out), f"bad output index {j!r} of node {k}")
            return out[j]
        _expect(j == 0, f"node {k} has one output, not index {j!r}")
        return out

    for node in config["nodes"]:
        _expect(isinstance(node, dict), "each node must be a dict")
        layer = layers_by_name.get(node.get("layer"))
        _expect(layer is not None, f"node calls unknown layer {node.get('layer')!r}")
        args, kwargs = node.get("args", []), node.get("kwargs", {})
        _expect(isinstance(args, list) and isinstance(kwargs, dict), "node args/kwargs malformed")
        _expect(all(isinstance(k, str) for k in kwargs), "node kwargs keys must be strings")
        if node.get("spread", False) is True:
            tensors = resolve(node.get("inputs"))
            _expect(isinstance(tensors, list) and not args, "spread node inputs malformed")
            produced.append(layer(*tensors, **kwargs))
        else:
            produced.append(layer(resolve(node.get("inputs")), *args, **kwargs))
    outputs = [resolve(item) for item in config["outputs"]]
    structure = config.get("output_structure", "single")
    if isinstance(structure, dict):
        keys = structure.get("dict")
        _expect(isinstance(keys, list) and len(keys) == len(outputs), "output keys malformed")
        outputs = dict(zip(keys, outputs))
    elif structure == "single":
        _expect(len(outputs) == 1, "a single output structure with several outputs")
        outputs = outputs[0]
    keys = config.get("input_keys")
    if keys is not None:
        _expect(isinstance(keys, list) and len(keys) == len(inputs), "input keys malformed")
        inputs = dict(zip(keys, inputs))
    elif config.get("input_structure") == "single" and len(inputs) == 1:
        inputs = inputs[0]
    name = config.get("name")
    return cls(inputs, outputs, name=name if isinstance(name, str) else None)
