"""Level 3: differentiable operations on Tensors (and arrays).

Every op here is generic Array API code; hot ops first ask the backend's kernel
table (``backend.kernel(name)``) for a faster implementation.
"""

from .activations import (
    ACTIVATIONS,
    activation_name,
    elu,
    exponential,
    gelu,
    get_activation,
    hard_sigmoid,
    hard_silu,
    hard_swish,
    leaky_relu,
    log_softmax,
    mish,
    relu,
    relu6,
    selu,
    sigmoid,
    silu,
    softmax,
    softplus,
    softsign,
    swish,
    tanh,
)
from .arithmetic import (
    abs,
    add,
    clip,
    cos,
    divide,
    exp,
    expm1,
    log,
    log1p,
    maximum,
    minimum,
    multiply,
    negative,
    power,
    reciprocal,
    sin,
    sqrt,
    square,
    subtract,
    where,
)
from .attention import scaled_dot_product_attention
from .cast import cast
from .convolution import conv, conv_transpose
from .dropout import dropout
from .linalg import linear, matmul
from .losses import sigmoid_cross_entropy, softmax_cross_entropy, sparse_softmax_cross_entropy
from .normalization import batch_normalization, group_normalization, layer_normalization
from .pooling import average_pool, max_pool, pool
from .recurrent import flip, gru_sequence, lstm_sequence, recurrent_sequence, rnn_sequence
from .reductions import logsumexp, max, mean, min, std, sum, var
from .shape import (
    broadcast_to,
    concat,
    concatenate,
    expand_dims,
    flatten,
    getitem,
    pad,
    permute_dims,
    reshape,
    split,
    squeeze,
    stack,
    take,
    transpose,
)

__all__ = [name for name in dir() if not name.startswith("_")]

import sys as _sys  # noqa: E402

from ..autograd import bind_operators as _bind_operators  # noqa: E402

_bind_operators(_sys.modules[__name__])
