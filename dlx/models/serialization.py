"""Layer configs <-> layers: ``{"class_name": ..., "config": {...}}`` (JSON-safe, no pickle).

Built-in layers are found by class name in :mod:`dlx.layers`; user layers are
made loadable with the :func:`register_serializable` decorator.
"""

_CUSTOM = {}


def register_serializable(cls=None, name=None):
    """Class decorator: make a custom Layer (or Model) loadable by ``dlx.load_model``."""

    def decorate(c):
        _CUSTOM[name or c.__name__] = c
        return c

    return decorate(cls) if cls is not None else decorate


def layer_class(name):
    from .. import layers
    from . import Model, Sequential

    if name in _CUSTOM:
        return _CUSTOM[name]
    builtins = {"Sequential": Sequential, "Model": Model}
    if name in builtins:
        return builtins[name]
    cls = getattr(layers, name, None)
    if isinstance(cls, type):
        return cls
    raise ValueError(
        f"unknown layer class {name!r}: a custom layer must be registered with "
        f"@dlx.register_serializable before loading"
    )


def serialize_layer(layer):
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize_layer(config):
    cls = layer_class(config["class_name"])
    return cls.from_config(config["config"])
