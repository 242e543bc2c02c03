"""Random numbers for backends (the Array API standard has no random module).

All draws come from one host NumPy ``Generator`` (PCG64) and are moved to the
backend's device, so ``set_seed(n)`` yields bit-identical initial weights and
dropout masks on every backend. A backend may override the draws used in hot
loops (dropout) with a device generator of its own.
"""

import numpy as np


class HostRandom:
    """A seeded host generator whose draws are float64 NumPy arrays."""

    def __init__(self, seed=None):
        self.seed(seed)

    def seed(self, seed):
        self.generator = np.random.Generator(np.random.PCG64(seed))

    def uniform(self, shape, low=0.0, high=1.0):
        return self.generator.uniform(low, high, size=tuple(shape))

    def normal(self, shape, mean=0.0, stddev=1.0):
        return self.generator.normal(mean, stddev, size=tuple(shape))

    def truncated_normal(self, shape, mean=0.0, stddev=1.0):
        """Normal draws re-drawn until they lie within two standard deviations."""
        values = self.generator.standard_normal(size=tuple(shape))
        outside = np.abs(values) > 2.0
        while outside.any():
            values[outside] = self.generator.standard_normal(size=int(outside.sum()))
            outside = np.abs(values) > 2.0
        return mean + stddev * values

    def permutation(self, n):
        return self.generator.permutation(n)

    def integers(self, low, high, shape):
        return self.generator.integers(low, high, size=tuple(shape))
