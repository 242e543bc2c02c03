"""Level 4: layers (Keras names, arguments and weight layouts)."""

from .activation import Activation
from .attention import Attention
from .batch_normalization import BatchNormalization
from .bidirectional import Bidirectional
from .conv import Conv1D, Conv2D, Conv3D, Convolution1D, Convolution2D, Convolution3D
from .conv_transpose import (
    Conv1DTranspose,
    Conv2DTranspose,
    Conv3DTranspose,
    Convolution1DTranspose,
    Convolution2DTranspose,
    Convolution3DTranspose,
)
from .cropping import Cropping1D, Cropping2D, Cropping3D
from .dense import Dense
from .depthwise_conv import DepthwiseConv1D, DepthwiseConv2D
from .dropout import Dropout
from .embedding import Embedding
from .flatten import Flatten
from .global_pooling import (
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalAveragePooling3D,
    GlobalAvgPool1D,
    GlobalAvgPool2D,
    GlobalAvgPool3D,
    GlobalMaxPool1D,
    GlobalMaxPool2D,
    GlobalMaxPool3D,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
    GlobalMaxPooling3D,
)
from .group_normalization import GroupNormalization
from .gru import GRU
from .input_layer import Input, InputLayer, SymbolicTensor
from .layer import InputSpec, Layer
from .layer_normalization import LayerNormalization
from .lstm import LSTM
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
from .pooling import (
    AveragePooling1D,
    AveragePooling2D,
    AveragePooling3D,
    AvgPool1D,
    AvgPool2D,
    AvgPool3D,
    MaxPool1D,
    MaxPool2D,
    MaxPool3D,
    MaxPooling1D,
    MaxPooling2D,
    MaxPooling3D,
)
from .reshape import Reshape
from .separable_conv import (
    SeparableConv1D,
    SeparableConv2D,
    SeparableConvolution1D,
    SeparableConvolution2D,
)
from .simple_rnn import SimpleRNN
from .time_distributed import TimeDistributed
from .upsampling import UpSampling1D, UpSampling2D, UpSampling3D
from .zero_padding import ZeroPadding1D, ZeroPadding2D, ZeroPadding3D

__all__ = [name for name in dir() if not name.startswith("_")]
