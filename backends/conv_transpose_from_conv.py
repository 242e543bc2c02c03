"""A ``"conv_transpose"`` kernel table entry made from a ``"conv"`` one.

A transposed convolution's forward is the convolution's input gradient, its
input gradient is the convolution's forward, and its weight gradient is the
convolution's with input and output gradient swapped (see ``dlx.ops.convolution``
for both contracts), so every backend with conv kernels gets these for free.
"""


class ConvTransposeFromConv:
    """Kernel table entry ``"conv_transpose"``: the conv primitives with roles swapped."""

    def __init__(self, conv):
        self.conv = conv

    def forward(self, x, w, geometry, out_shape):
        return self.conv.input_grad(x, w, geometry, out_shape)

    def input_grad(self, g, w, geometry):
        result = self.conv.forward(g, w, None, geometry, False, False)
        return None if result is None else result[0]

    def weight_grad(self, x, g, geometry, w_shape):
        return self.conv.weight_grad(g, x, geometry, w_shape, None)
