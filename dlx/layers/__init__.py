"""Level 4: layers (Keras names, arguments and weight layouts)."""

from .activation import Activation
from .dense import Dense
from .dropout import Dropout
from .flatten import Flatten
from .input_layer import Input, InputLayer, SymbolicTensor
from .layer import InputSpec, Layer
from .reshape import Reshape

__all__ = [name for name in dir() if not name.startswith("_")]
