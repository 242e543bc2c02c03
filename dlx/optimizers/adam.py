"""Adam and AdamW (Keras 3 update rules; ``epsilon=1e-7`` outside the square root)."""

import math

from .optimizer import Optimizer


class Adam(Optimizer):
    """``m += (g - m)(1 - b1)``, ``v += (g^2 - v)(1 - b2)``,
    ``w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``."""

    def __init__(
        self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **kwargs
    ):
        super().__init__(learning_rate, **kwargs)
        for name, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0 <= value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be in [0, 1), got {value}")
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = beta_1, beta_2, epsilon, amsgrad
        self.slot_names = ("m", "v", "v_hat") if amsgrad else ("m", "v")

    def _alpha(self, lr):
        t = self.iterations + 1
        return lr * math.sqrt(1 - self.beta_2**t) / (1 - self.beta_1**t)

    def update_steps(self, gradients, variables, lr):
        # one kernel call for all variables when they share a backend (an array type) that has
        # one -- unless a subclass changed the per-variable rule
        fused = not self.amsgrad and type(self).update_step is Adam.update_step
        kernel = variables[0].backend.kernel("adam_update_many") if fused else None
        if kernel is None or len({type(v.value) for v in variables}) != 1:
            return super().update_steps(gradients, variables, lr)
        slots = [self.slots(v) for v in variables]
        kernel(
            [v.value for v in variables],
            gradients,
            [s["m"] for s in slots],
            [s["v"] for s in slots],
            self._alpha(lr),
            self.beta_1,
            self.beta_2,
            self.epsilon,
        )

    def update_step(self, g, variable, lr):
        slots = self.slots(variable)
        alpha = self._alpha(lr)
        kernel = variable.backend.kernel("adam_update")
        if kernel is not None and not self.amsgrad:
            kernel(
                variable.value,
                g,
                slots["m"],
                slots["v"],
                alpha,
                self.beta_1,
                self.beta_2,
                self.epsilon,
            )
            return
        xp = variable.xp
        m, v = slots["m"], slots["v"]
        m += (g - m) * (1 - self.beta_1)
        v += (g * g - v) * (1 - self.beta_2)
        if self.amsgrad:
            slots["v_hat"] = v = xp.maximum(slots["v_hat"], v)
        variable.value -= (alpha * m) / (xp.sqrt(v) + self.epsilon)

    def get_config(self):
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "amsgrad": self.amsgrad,
        }


class AdamW(Adam):
    """Adam with decoupled weight decay (default ``weight_decay=0.004`` as in Keras)."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, **kwargs):
        super().__init__(learning_rate, weight_decay=weight_decay, **kwargs)
