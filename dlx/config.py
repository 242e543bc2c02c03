"""Global settings: the default float dtype (Keras's ``floatx``) and the epsilon
used by losses and optimizers."""

_FLOATX = "float32"
_EPSILON = 1e-7


def floatx():
    return _FLOATX


def set_floatx(name):
    """Default dtype of new weights and of float inputs given to models."""
    global _FLOATX
    if name not in ("float16", "float32", "float64"):
        raise ValueError(f"set_floatx: expected 'float16', 'float32' or 'float64', got {name!r}")
    _FLOATX = name


def epsilon():
    return _EPSILON


def set_epsilon(value):
    global _EPSILON
    _EPSILON = float(value)
