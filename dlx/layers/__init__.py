"""Level 4: layers (Keras names, arguments and weight layouts)."""

from .activation import Activation
from .attention import Attention
from .batch_normalization import BatchNormalization
from .bidirectional import Bidirectional
from .dense import Dense
from .dropout import Dropout
from .embedding import Embedding
from .flatten import Flatten
from .group_normalization import GroupNormalization
from .input_layer import Input, InputLayer, SymbolicTensor
from .layer import InputSpec, Layer
from .layer_normalization import LayerNormalization
from .lstm import LSTM
from .gru import GRU
from .masking import Masking
from .merging import (
    Add,
    Average,
    Concatenate,
    Dot,
    Maximum,
    Minimum,
    Multiply,
    Subtract,
    add,
    average,
    concatenate,
    dot,
    maximum,
    minimum,
    multiply,
    subtract,
)
from .multi_head_attention import MultiHeadAttention
from .reshape import Reshape
from .simple_rnn import SimpleRNN
from .time_distributed import TimeDistributed

__all__ = [name for name in dir() if not name.startswith("_")]
