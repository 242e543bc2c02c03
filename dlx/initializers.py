"""Weight initializers with Keras 3 names, arguments and formulas.

Each is a callable ``initializer(shape, dtype) -> array`` on the current
backend. Random draws come from the backend's seeded host generator, so
``dlx.set_seed`` gives identical weights on every backend. Fans follow Keras:
for a kernel of shape ``(*receptive_field, in, out)``,
``fan_in = in * prod(receptive_field)`` and ``fan_out = out * prod(receptive_field)``.
"""

import math

from .backends import get_backend
from .config import floatx


def compute_fans(shape):
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    def __call__(self, shape, dtype=None):
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class Zeros(Initializer):
    def __call__(self, shape, dtype=None):
        backend = get_backend()
        return backend.xp.zeros(
            tuple(shape), dtype=backend.dtype(dtype or floatx()), device=backend.device
        )


class Ones(Initializer):
    def __call__(self, shape, dtype=None):
        backend = get_backend()
        return backend.xp.ones(
            tuple(shape), dtype=backend.dtype(dtype or floatx()), device=backend.device
        )


class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = value

    def __call__(self, shape, dtype=None):
        backend = get_backend()
        return backend.xp.full(
            tuple(shape), self.value, dtype=backend.dtype(dtype or floatx()), device=backend.device
        )

    def get_config(self):
        return {"value": self.value}


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev, self.seed = mean, stddev, seed

    def __call__(self, shape, dtype=None):
        return get_backend().random_normal(shape, dtype or floatx(), self.mean, self.stddev)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class TruncatedNormal(RandomNormal):
    def __call__(self, shape, dtype=None):
        return get_backend().random_truncated_normal(
            shape, dtype or floatx(), self.mean, self.stddev
        )


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval, self.maxval, self.seed = minval, maxval, seed

    def __call__(self, shape, dtype=None):
        return get_backend().random_uniform(shape, dtype or floatx(), self.minval, self.maxval)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class VarianceScaling(Initializer):
    """Keras's VarianceScaling: scale / fan drawn from a truncated normal, normal or uniform."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        if scale <= 0:
            raise ValueError(f"VarianceScaling: scale must be positive, got {scale}")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(
                f"VarianceScaling: mode must be fan_in, fan_out or fan_avg, got {mode!r}"
            )
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(f"VarianceScaling: unknown distribution {distribution!r}")
        self.scale, self.mode, self.distribution, self.seed = scale, mode, distribution, seed

    def __call__(self, shape, dtype=None):
        fan_in, fan_out = compute_fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, fan)
        backend, dtype = get_backend(), dtype or floatx()
        if self.distribution == "truncated_normal":
            # std of a standard normal truncated to [-2, 2]
            stddev = math.sqrt(variance) / 0.87962566103423978
            return backend.random_truncated_normal(shape, dtype, 0.0, stddev)
        if self.distribution == "untruncated_normal":
            return backend.random_normal(shape, dtype, 0.0, math.sqrt(variance))
        limit = math.sqrt(3.0 * variance)
        return backend.random_uniform(shape, dtype, -limit, limit)

    def get_config(self):
        return {
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            "seed": self.seed,
        }


class GlorotUniform(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(1.0, "fan_avg", "uniform", seed)

    def get_config(self):
        return {"seed": self.seed}


class GlorotNormal(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(1.0, "fan_avg", "truncated_normal", seed)

    get_config = GlorotUniform.get_config


class HeUniform(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(2.0, "fan_in", "uniform", seed)

    get_config = GlorotUniform.get_config


class HeNormal(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(2.0, "fan_in", "truncated_normal", seed)

    get_config = GlorotUniform.get_config


class LecunUniform(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(1.0, "fan_in", "uniform", seed)

    get_config = GlorotUniform.get_config


class LecunNormal(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(1.0, "fan_in", "truncated_normal", seed)

    get_config = GlorotUniform.get_config


class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix from the QR decomposition of a normal draw, times ``gain``."""

    def __init__(self, gain=1.0, seed=None):
        self.gain, self.seed = gain, seed

    def __call__(self, shape, dtype=None):
        shape = tuple(shape)
        if len(shape) < 2:
            raise ValueError(f"Orthogonal: needs a shape of at least 2 dimensions, got {shape}")
        backend = get_backend()
        xp = backend.xp
        rows, cols = math.prod(shape[:-1]), shape[-1]
        flat = (max(rows, cols), min(rows, cols))
        a = backend.random_normal(flat, "float64")
        q, r = xp.linalg.qr(a)
        d = xp.sign(xp.linalg.diagonal(r))
        q = q * d[None, :]
        if rows < cols:
            q = xp.matrix_transpose(q)
        # through a flat array: a transposed q would otherwise stay a column-major array, which
        # kernels that want row-major weights (the compiled optimizer steps, the recurrent
        # loops' products) must copy or pass by
        q = xp.reshape(xp.reshape(self.gain * q, (-1,)), shape)
        return xp.astype(q, backend.dtype(dtype or floatx()))

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


class Identity(Initializer):
    def __init__(self, gain=1.0):
        self.gain = gain

    def __call__(self, shape, dtype=None):
        backend = get_backend()
        if len(shape) != 2:
            raise ValueError(f"Identity: needs a 2-D shape, got {tuple(shape)}")
        return self.gain * backend.xp.eye(
            shape[0], shape[1], dtype=backend.dtype(dtype or floatx()), device=backend.device
        )

    def get_config(self):
        return {"gain": self.gain}


ALIASES = {
    "zeros": Zeros,
    "ones": Ones,
    "constant": Constant,
    "random_normal": RandomNormal,
    "random_uniform": RandomUniform,
    "truncated_normal": TruncatedNormal,
    "variance_scaling": VarianceScaling,
    "glorot_uniform": GlorotUniform,
    "glorot_normal": GlorotNormal,
    "he_uniform": HeUniform,
    "he_normal": HeNormal,
    "lecun_uniform": LecunUniform,
    "lecun_normal": LecunNormal,
    "orthogonal": Orthogonal,
    "identity": Identity,
}


def get(identifier):
    """An initializer from a name, a config dict, an instance or a callable."""
    if identifier is None:
        return None
    if (
        isinstance(identifier, Initializer)
        or callable(identifier)
        and not isinstance(identifier, type)
    ):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if isinstance(identifier, dict):
        return ALIASES[_snake(identifier["class_name"])](**identifier.get("config", {}))
    if isinstance(identifier, str):
        key = _snake(identifier)
        if key in ALIASES:
            return ALIASES[key]()
    raise ValueError(f"Unknown initializer {identifier!r}; choose one of {sorted(ALIASES)}.")


def serialize(initializer):
    for name, cls in ALIASES.items():
        if type(initializer) is cls:
            return {"class_name": name, "config": initializer.get_config()}
    raise ValueError(f"cannot serialize initializer {initializer!r}")


def _snake(name):
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
