"""Stochastic gradient descent with optional (Nesterov) momentum (Keras 3 update rule)."""

from .optimizer import Optimizer


class SGD(Optimizer):
    """``m = momentum * m - lr * g``; ``w += m`` (Nesterov: ``w += momentum * m - lr * g``)."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        if not 0 <= momentum <= 1:
            raise ValueError(f"SGD: momentum must be in [0, 1], got {momentum}")
        self.momentum, self.nesterov = momentum, nesterov
        self.slot_names = ("momentum",) if momentum else ()

    def update_step(self, g, variable, lr):
        if not self.momentum:
            variable.value -= lr * g
            return
        m = self.slots(variable)["momentum"]
        kernel = variable.backend.kernel("sgd_momentum_update")
        if kernel is not None and kernel(variable.value, g, m, lr, self.momentum, self.nesterov):
            return  # the same arithmetic in one pass
        m *= self.momentum
        m -= lr * g
        if self.nesterov:
            variable.value += self.momentum * m - lr * g
        else:
            variable.value += m

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}
