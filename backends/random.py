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

    def get_state(self):
        """The generator's full state as JSON-safe Python data (ints and strings).

        Restoring it with :meth:`set_state` makes the following draws repeat exactly.
        """
        state = self.generator.bit_generator.state
        return {
            "bit_generator": str(state["bit_generator"]),
            "state": {"state": int(state["state"]["state"]), "inc": int(state["state"]["inc"])},
            "has_uint32": int(state["has_uint32"]),
            "uinteger": int(state["uinteger"]),
        }

    def set_state(self, state):
        """Restore a state from :meth:`get_state`; raises ValueError when it is malformed."""
        try:
            name = state["bit_generator"]
            inner = state["state"]
            values = (inner["state"], inner["inc"], state["has_uint32"], state["uinteger"])
        except (TypeError, KeyError) as error:
            raise ValueError(
                f"random state: expected a dict from get_state(), got {state!r}"
            ) from error
        if name != "PCG64":
            raise ValueError(f"random state: bit generator {name!r} is not PCG64")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise ValueError(f"random state: state values must be non-negative ints, got {values}")
        bit_generator = np.random.PCG64()
        try:
            bit_generator.state = {
                "bit_generator": "PCG64",
                "state": {"state": values[0], "inc": values[1]},
                "has_uint32": values[2],
                "uinteger": values[3],
            }
        except (TypeError, ValueError, OverflowError) as error:
            raise ValueError(f"random state: invalid PCG64 state ({error})") from error
        self.generator = np.random.Generator(bit_generator)

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
