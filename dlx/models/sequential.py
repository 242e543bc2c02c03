"""``Sequential``: a plain stack of layers, each feeding the next."""

from ..autograd import Tensor, as_backend_array, no_grad
from ..backends import get_backend
from ..layers.input_layer import InputLayer, SymbolicTensor, shape_probe
from ..layers.layer import Layer, structure_changed
from .model import Model


class Sequential(Model):
    """``Sequential([layer, ...])``. The input shape comes from ``layers.Input``/``InputLayer``
    as first element, from ``input_shape=`` on the first layer, or from the first batch."""

    def __init__(self, layers=None, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self._layers = []
        self._input_shape = None
        self.output_shapes = {}
        for layer in layers or []:
            self.add(layer)

    @property
    def layers(self):
        return list(self._layers)

    def _sublayers(self):
        return list(self._layers)

    def add(self, layer):
        if isinstance(layer, SymbolicTensor):
            layer = layer.input_layer if hasattr(layer, "input_layer") else None
            if layer is None:
                raise TypeError(
                    "Sequential.add: only layers.Input tensors can be added, not other tensors"
                )
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a Layer, got {type(layer).__name__}")
        if isinstance(layer, InputLayer):
            if self._layers or self._input_shape is not None:
                raise ValueError("Sequential: an Input can only be the first element")
            self._input_shape = layer.batch_input_shape
            return
        if layer.name in {l.name for l in self._layers}:
            raise ValueError(
                f"Sequential: two layers are named {layer.name!r}; layer names must be unique"
            )
        if not self._layers and self._input_shape is None and layer.batch_input_shape is not None:
            self._input_shape = layer.batch_input_shape
        self._layers.append(layer)
        structure_changed()
        self.built = False
        if self._input_shape is not None:
            self.build(self._input_shape)

    def pop(self):
        if not self._layers:
            raise IndexError("Sequential.pop: the model has no layers")
        layer = self._layers.pop()
        structure_changed()
        self.built = False
        return layer

    def build(self, input_shape=None):
        """Build every layer for ``input_shape`` (batch axis first, may be None) and record
        output shapes."""
        input_shape = tuple(input_shape if input_shape is not None else self._input_shape)
        self._input_shape = input_shape
        backend = get_backend()
        concrete = tuple(1 if s is None else s for s in input_shape)
        with no_grad(), shape_probe():
            x = Tensor(
                backend.xp.zeros(concrete, dtype=backend.dtype(self.dtype), device=backend.device)
            )
            for layer in self._layers:
                x = layer(x, training=False)
                self.output_shapes[layer.name] = (None,) + tuple(x.shape[1:])
        self.build_input_shape = input_shape
        self.built = True

    def _prepare_for(self, x):
        if not self.built and self._layers:
            sample = x[0] if isinstance(x, (list, tuple)) else x
            self.build((None,) + tuple(sample.shape[1:]))

    def call(self, inputs, training=False):
        x = inputs
        for layer in self._layers:
            x = layer(x, training=training)
        return x

    def __call__(self, inputs, *args, training=None, mask=None, **kwargs):
        if not self._layers:
            raise ValueError(f"Sequential '{self.name}' has no layers")
        if not self.built and not isinstance(inputs, SymbolicTensor):
            value = inputs.value if isinstance(inputs, Tensor) else as_backend_array(inputs)
            self.build((None,) + tuple(value.shape[1:]))
        return Layer.__call__(self, inputs, *args, training=training, mask=mask, **kwargs)

    @property
    def input_shape(self):
        return self._input_shape

    @property
    def output_shape(self):
        return self.output_shapes.get(self._layers[-1].name) if self._layers else None

    def get_config(self):
        from .serialization import serialize_layer

        return {
            "name": self.name,
            "input_shape": list(self._input_shape) if self._input_shape else None,
            "layers": [serialize_layer(l) for l in self._layers],
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from .serialization import deserialize_layer

        if not isinstance(config, dict) or not isinstance(config.get("layers", []), list):
            raise ValueError(
                f"Sequential config must be a dict with a 'layers' list, got {config!r:.200}"
            )
        name = config.get("name")
        model = cls(name=name if isinstance(name, str) else None)
        for layer_config in config.get("layers", []):
            model.add(deserialize_layer(layer_config, custom_objects))
        input_shape = config.get("input_shape")
        if input_shape is not None and not model.built and model.layers:
            if not isinstance(input_shape, list) or not all(
                s is None or (isinstance(s, int) and s >= 0) for s in input_shape
            ):
                raise ValueError(f"Sequential config: bad input_shape {input_shape!r:.100}")
            model.build(tuple(input_shape))
        return model
