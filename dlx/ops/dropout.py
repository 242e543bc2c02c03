"""Inverted dropout: zero a fraction ``rate`` of inputs and scale the rest by 1/(1-rate)."""

from ..autograd import Function


class Dropout(Function):
    def __init__(self, rate, noise_shape=None):
        self.rate, self.noise_shape = rate, noise_shape

    def forward(self, x):
        keep = 1.0 - self.rate
        shape = self.noise_shape or tuple(x.shape)
        shape = tuple(x.shape[i] if s is None else s for i, s in enumerate(shape))
        self.mask = self.backend.random_bits(shape, keep, dtype=x.dtype) / keep
        return x * self.mask

    def backward(self, g):
        return g * self.mask


def dropout(x, rate, training=True, noise_shape=None):
    """Apply dropout when ``training`` and ``rate > 0``; otherwise return ``x`` unchanged."""
    if not training or rate == 0:
        return x
    if not 0 <= rate < 1:
        raise ValueError(f"dropout: rate must be in [0, 1), got {rate}")
    return Dropout(rate, noise_shape)(x)
