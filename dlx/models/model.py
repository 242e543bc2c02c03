"""``Model``: a functional graph (``Model(inputs, outputs)``) or a subclass with ``call``.

Functional models run their layers in the recorded order; subclassed models run
the user's ``call``. Both get the training API from :class:`Trainer` and the
weight API from :class:`Layer`.
"""

from ..autograd import Tensor
from ..layers.input_layer import InputLayer, SymbolicTensor
from ..layers.layer import Layer
from .summary import print_summary
from .training import Trainer


class Model(Trainer, Layer):
    """Keras-style model.

    Functional: ``Model(inputs, outputs, name=None)`` where ``inputs``/``outputs``
    are SymbolicTensors (or lists/dicts of them) from ``layers.Input`` and layer calls.
    Subclassed: ``class M(dlx.Model)`` with layers set in ``__init__`` and
    ``call(x, training=False)``.
    """

    def __init__(self, inputs=None, outputs=None, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self._functional = inputs is not None or outputs is not None
        if self._functional:
            if inputs is None or outputs is None:
                raise ValueError("Model: a functional model needs both inputs and outputs")
            self._init_graph(inputs, outputs)

    # -- functional graph --------------------------------------------------------
    def _init_graph(self, inputs, outputs):
        self._nested_inputs = inputs
        self._nested_outputs = outputs
        self.inputs = _as_list(inputs)
        self.outputs = _as_list(outputs)
        for t in self.inputs + self.outputs:
            if not isinstance(t, SymbolicTensor):
                raise TypeError(
                    f"Model '{self.name}': inputs and outputs must come from layers.Input and "
                    f"layer calls, got {type(t).__name__}"
                )
        for t in self.inputs:
            if t.node is not None:
                raise ValueError(
                    f"Model '{self.name}': input {t.name!r} is not a layers.Input tensor"
                )
        self._nodes = self._ordered_nodes()
        _node_outputs(self, None)  # map each node to its symbolic outputs (summary needs shapes)
        self.output_names = (
            list(outputs)
            if isinstance(outputs, dict)
            else [t.node.layer.name if t.node else t.name for t in self.outputs]
        )
        self.input_names = (
            list(inputs) if isinstance(inputs, dict) else [t.name for t in self.inputs]
        )
        self.graph_layers = []
        for node in self._nodes:
            if node.layer not in self.graph_layers:
                self.graph_layers.append(node.layer)
        self.built = True

    def _ordered_nodes(self):
        """Nodes in execution order; checks that every output depends only on the inputs."""
        input_ids = {id(t) for t in self.inputs}
        order, visited = [], set()

        def visit(tensor, path):
            if id(tensor) in input_ids:
                return
            node = tensor.node
            if node is None:
                raise ValueError(
                    f"Model '{self.name}': output depends on input {tensor.name!r} (shape "
                    f"{tensor.shape}) that is not among the model's inputs "
                    f"{[t.name for t in self.inputs]}"
                )
            if id(node) in visited:
                return
            for t in node.input_tensors:
                if t.node is None and id(t) not in input_ids:
                    chain = " -> ".join(reversed(path + [node.layer.name]))
                    raise ValueError(
                        f"Model '{self.name}': the outputs do not depend only on the model's "
                        f"inputs {[f'{i.name} {i.shape}' for i in self.inputs]}: layer chain "
                        f"{chain} starts from input {t.name!r} of shape {t.shape}, which is not "
                        "among them"
                    )
                visit(t, path + [node.layer.name])
            visited.add(id(node))
            order.append(node)

        for out in self.outputs:
            if id(out) in input_ids:
                continue
            visit(out, [])
        used = set()
        for node in order:
            used.update(id(t) for t in node.input_tensors)
        used.update(id(t) for t in self.outputs)
        unused = [t.name for t in self.inputs if id(t) not in used]
        if unused:
            raise ValueError(
                f"Model '{self.name}': the outputs do not depend on input(s) {unused}; "
                f"every input must reach an output"
            )
        return order

    def _sublayers(self):
        if getattr(self, "_functional", False):
            return list(self.graph_layers)
        return super()._sublayers()

    @property
    def layers(self):
        if self._functional:
            input_layers = [t.input_layer for t in self.inputs if hasattr(t, "input_layer")]
            return input_layers + list(self.graph_layers)
        return self._sublayers()

    def get_layer(self, name=None, index=None):
        layers = self.layers
        if index is not None:
            return layers[index]
        for layer in layers:
            if layer.name == name:
                return layer
        raise ValueError(
            f"Model '{self.name}': no layer named {name!r}; layers are {[l.name for l in layers]}"
        )

    def call(self, inputs, training=False):
        if not self._functional:
            raise NotImplementedError(
                f"{type(self).__name__}: subclassed models must define call()"
            )
        return self._run_graph(inputs, training)

    def _run_graph(self, inputs, training):
        if isinstance(self._nested_inputs, dict) and isinstance(inputs, dict):
            inputs = [inputs[name] for name in self._nested_inputs]
        inputs = _as_list(inputs)
        if len(inputs) != len(self.inputs):
            raise ValueError(
                f"Model '{self.name}' expects {len(self.inputs)} inputs {self.input_names}, got "
                f"{len(inputs)}"
            )
        values = {}
        for symbolic, actual in zip(self.inputs, inputs):
            actual = actual if isinstance(actual, Tensor) else Tensor(actual)
            expected = symbolic.shape[1:]
            got = tuple(actual.shape[1:])
            if len(expected) != len(got) or any(
                e is not None and e != g for e, g in zip(expected, got)
            ):
                raise ValueError(
                    f"Model '{self.name}': input {symbolic.name!r} expects shape {symbolic.shape}, "
                    f"got {tuple(actual.shape)}"
                )
            values[id(symbolic)] = actual
        for node in self._nodes:
            args = node.inputs
            if isinstance(args, (list, tuple)):
                args = type(args)(values[id(t)] for t in args)
            else:
                args = values[id(args)]
            kwargs = dict(node.call_kwargs)
            kwargs.setdefault("training", training)
            if node.spread:
                out = node.layer(*args, **kwargs)
            else:
                out = node.layer(args, *node.call_args, **kwargs)
            outs = out if isinstance(out, (list, tuple)) else [out]
            for i, tensor in enumerate(outs):
                values[(id(node), i)] = tensor
            # SymbolicTensors made from this node are looked up by (node, index)
            for t in _node_outputs(self, node):
                values[id(t)] = outs[t.index]
        result = [values[id(t)] for t in self.outputs]
        if isinstance(self._nested_outputs, dict):
            return dict(zip(self._nested_outputs, result))
        return result if isinstance(self._nested_outputs, (list, tuple)) else result[0]

    def __call__(self, inputs, *args, training=None, mask=None, **kwargs):
        if getattr(self, "_functional", False) and isinstance(inputs, dict):
            inputs = self._inputs_from_dict(inputs)
        if not getattr(self, "_functional", False) and not self.built and not _is_symbolic(inputs):
            self.built = True  # subclassed: layers build themselves inside call
        return super().__call__(inputs, *args, training=training, mask=mask, **kwargs)

    def _check_inputs(self, inputs):
        pass

    def _inputs_from_dict(self, inputs):
        """Dict inputs in the order of the model's inputs, keyed by the dict given to
        ``Model`` or by the ``Input`` names."""
        nested = self._nested_inputs
        names = list(nested) if isinstance(nested, dict) else self.input_names
        missing = [n for n in names if n not in inputs]
        unknown = [k for k in inputs if k not in names]
        if missing or unknown:
            raise ValueError(
                f"Model '{self.name}': inputs given as a dict need exactly the keys {names}; "
                f"missing {missing}, unknown {unknown}"
            )
        ordered = [inputs[n] for n in names]
        return ordered if len(ordered) > 1 else ordered[0]

    def summary(self, line_length=None, print_fn=None):
        print_summary(self, line_length=line_length, print_fn=print_fn)

    def get_config(self):
        """Functional models: layers and call graph (see ``serialization.functional_config``).
        Subclassed models: only the name (their architecture is Python code)."""
        if getattr(self, "_functional", False):
            from .serialization import functional_config

            return functional_config(self)
        return {"name": self.name}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        if isinstance(config, dict) and "nodes" in config:
            from .serialization import functional_from_config

            return functional_from_config(cls, config, custom_objects)
        return super().from_config(config)

    # -- saving (the file format is described in saving.py) ------------------------
    def save(self, filepath, overwrite=True, include_optimizer=True):
        """Write the model (architecture, weights, optimizer state, compile settings) to one
        ``.dlx`` zip file, crash-safely. Subclassed models store weights and state only."""
        from .saving import save_model

        save_model(self, filepath, overwrite=overwrite, include_optimizer=include_optimizer)

    def save_weights(self, filepath, overwrite=True):
        """Write only the weights (Keras order) to a zip file, crash-safely."""
        from .saving import save_weights

        save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath):
        """Set the weights from a file of :meth:`save_weights` or :meth:`save`; the saved
        weights must match this model's weights in number and shapes."""
        from .saving import load_weights

        load_weights(self, filepath)


def _is_symbolic(inputs):
    if isinstance(inputs, (list, tuple)):
        return any(isinstance(x, SymbolicTensor) for x in inputs)
    return isinstance(inputs, SymbolicTensor)


def _as_list(x):
    if isinstance(x, dict):
        return list(x.values())
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def _node_outputs(model, node):
    if not hasattr(model, "_node_output_map"):
        mapping = {}
        seen = set()

        def collect(tensor):
            if id(tensor) in seen:
                return
            seen.add(id(tensor))
            if tensor.node is not None:
                mapping.setdefault(id(tensor.node), []).append(tensor)
                for t in tensor.node.input_tensors:
                    collect(t)

        for out in model.outputs:
            collect(out)
        model._node_output_map = mapping
    return model._node_output_map.get(id(node), [])


__all__ = ["InputLayer", "Model"]
