"""RMSprop and Adagrad (Keras 3 update rules; epsilon inside the square root)."""

from .optimizer import Optimizer


class RMSprop(Optimizer):
    """``v = rho v + (1 - rho) g^2``; ``w -= lr g / sqrt(v + eps)``
    (centered: ``v - mean(g)^2``)."""

    def __init__(
        self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **kwargs
    ):
        super().__init__(learning_rate, **kwargs)
        self.rho, self.momentum, self.epsilon, self.centered = rho, momentum, epsilon, centered
        self.slot_names = (
            ("velocity",)
            + (("momentum",) if momentum else ())
            + (("average_gradient",) if centered else ())
        )

    def update_step(self, g, variable, lr):
        xp = variable.xp
        slots = self.slots(variable)
        v = slots["velocity"]
        kernel = None if self.centered else variable.backend.kernel("rmsprop_update")
        if kernel is not None and kernel(
            variable.value, g, v, slots.get("momentum"), lr, self.rho, self.epsilon, self.momentum
        ):
            return  # the same arithmetic in one pass
        v *= self.rho
        v += (1 - self.rho) * (g * g)
        if self.centered:
            a = slots["average_gradient"]
            a *= self.rho
            a += (1 - self.rho) * g
            denominator = v - a * a + self.epsilon
        else:
            denominator = v + self.epsilon
        increment = lr * g / xp.sqrt(denominator)
        if self.momentum:
            m = slots["momentum"]
            m *= self.momentum
            m += increment
            variable.value -= m
        else:
            variable.value -= increment

    def get_config(self):
        return {
            **super().get_config(),
            "rho": self.rho,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "centered": self.centered,
        }


class Adagrad(Optimizer):
    """``acc += g^2``; ``w -= lr g / sqrt(acc + eps)``; ``acc`` starts at
    ``initial_accumulator_value``."""

    slot_names = ("accumulator",)

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.initial_accumulator_value, self.epsilon = initial_accumulator_value, epsilon

    def create_slots(self, variable):
        xp, v = variable.xp, variable.value
        return {
            "accumulator": xp.full(
                v.shape, self.initial_accumulator_value, dtype=v.dtype, device=v.device
            )
        }

    def update_step(self, g, variable, lr):
        acc = self.slots(variable)["accumulator"]
        acc += g * g
        variable.value -= lr * g / variable.xp.sqrt(acc + self.epsilon)

    def get_config(self):
        return {
            **super().get_config(),
            "initial_accumulator_value": self.initial_accumulator_value,
            "epsilon": self.epsilon,
        }
