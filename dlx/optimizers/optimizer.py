"""The Optimizer base class (Keras 3 semantics).

``apply_gradients(zip(grads, variables))`` clips the gradients (``clipnorm``
per variable, ``global_clipnorm`` over all, or ``clipvalue``), applies
decoupled ``weight_decay`` (``w -= w * weight_decay * lr``), then calls the
subclass's :meth:`update_step` once per variable (or its :meth:`update_steps`
once for all of them) and counts ``iterations``.
Slot arrays (moments etc.) are created lazily per variable and updated in
place.
"""

import math

from ..autograd import Tensor, Variable, no_grad
from . import schedules


class Optimizer:
    slot_names = ()

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        name=None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected argument(s) {sorted(kwargs)}")
        if sum(x is not None for x in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(
                f"{type(self).__name__}: give at most one of clipnorm, clipvalue and "
                "global_clipnorm"
            )
        if not callable(learning_rate) and (
            not isinstance(learning_rate, (int, float)) or learning_rate < 0
        ):
            raise ValueError(
                f"{type(self).__name__}: learning_rate must be a non-negative number or a "
                f"schedule, got {learning_rate!r}"
            )
        self._learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.clipnorm, self.clipvalue, self.global_clipnorm = clipnorm, clipvalue, global_clipnorm
        self.name = name or type(self).__name__.lower()
        self.iterations = 0
        self._slots = {}  # id(variable) -> {slot name: array}
        self._variables = {}  # id(variable) -> variable, to keep ids stable

    # -- learning rate --------------------------------------------------------
    @property
    def learning_rate(self):
        """The rate the next update uses (a schedule is evaluated at ``iterations``)."""
        lr = self._learning_rate
        return float(lr(self.iterations)) if callable(lr) else float(lr)

    @learning_rate.setter
    def learning_rate(self, value):
        self._learning_rate = value

    # -- slots ------------------------------------------------------------------
    def slots(self, variable):
        key = id(variable)
        if key not in self._slots:
            self._variables[key] = variable
            self._slots[key] = self.create_slots(variable)
        return self._slots[key]

    def create_slots(self, variable):
        xp, v = variable.xp, variable.value
        return {name: xp.zeros(v.shape, dtype=v.dtype, device=v.device) for name in self.slot_names}

    # -- updates ----------------------------------------------------------------
    def apply_gradients(self, grads_and_vars):
        """Update each variable from its gradient (pairs with a None gradient are skipped)."""
        pairs = [(g.value if isinstance(g, Tensor) else g, v) for g, v in grads_and_vars]
        pairs = [(g, v) for g, v in pairs if g is not None]
        for g, v in pairs:
            if not isinstance(v, Variable):
                raise TypeError(
                    f"{type(self).__name__}.apply_gradients: expected Variables, got {type(v)!r}"
                )
            if tuple(g.shape) != v.shape:
                raise ValueError(
                    f"{type(self).__name__}.apply_gradients: gradient of shape {tuple(g.shape)} "
                    f"for variable {v.name!r} of shape {v.shape}"
                )
        if not pairs:
            return
        grads = self._clip([g for g, _ in pairs])
        variables = [v for _, v in pairs]
        lr = self.learning_rate
        with no_grad():
            if self.weight_decay:
                for v in variables:
                    v.value = v.value - v.value * (self.weight_decay * lr)
            self.update_steps(grads, variables, lr)
        self.iterations += 1

    def apply(self, grads, variables):
        self.apply_gradients(zip(grads, variables))

    def minimize(self, loss, variables):
        """Backpropagate ``loss`` and apply the gradients of ``variables`` (then clear them)."""
        loss.backward()
        self.apply_gradients([(v.grad, v) for v in variables])
        for v in variables:
            v.grad = None

    def update_step(self, gradient, variable, learning_rate):
        raise NotImplementedError

    def update_steps(self, gradients, variables, learning_rate):
        """One step on every variable; subclasses may update them all at once."""
        for g, v in zip(gradients, variables):
            self.update_step(g, v, learning_rate)

    def _clip(self, grads):
        if self.clipnorm:
            return [_clip_by_norm(g, self.clipnorm) for g in grads]
        if self.global_clipnorm:
            xp = _xp(grads[0])
            norm = math.sqrt(sum(float(xp.sum(g * g)) for g in grads))
            if norm > self.global_clipnorm:
                return [g * (self.global_clipnorm / norm) for g in grads]
            return grads
        if self.clipvalue:
            xp = _xp(grads[0])
            return [xp.clip(g, -self.clipvalue, self.clipvalue) for g in grads]
        return grads

    # -- state (for checkpoints) --------------------------------------------------
    def get_state(self, variables):
        """``iterations`` and the slot arrays of ``variables`` (in order), as backend arrays."""
        return {
            "iterations": self.iterations,
            "slots": [[self.slots(v)[name] for name in sorted(self.slots(v))] for v in variables],
        }

    def set_state(self, state, variables):
        self.iterations = int(state["iterations"])
        for v, arrays in zip(variables, state["slots"]):
            slots = self.slots(v)
            for name, array in zip(sorted(slots), arrays):
                slots[name] = v.backend.asarray(array, v.dtype)

    def get_config(self):
        lr = self._learning_rate
        if isinstance(lr, schedules.LearningRateSchedule):
            lr = {"class_name": type(lr).__name__, "config": lr.get_config()}
        return {
            "name": self.name,
            "learning_rate": lr,
            "weight_decay": self.weight_decay,
            "clipnorm": self.clipnorm,
            "clipvalue": self.clipvalue,
            "global_clipnorm": self.global_clipnorm,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        lr = config.get("learning_rate")
        if isinstance(lr, dict):
            config["learning_rate"] = schedules.ALIASES[lr["class_name"]].from_config(lr["config"])
        return cls(**config)


def _xp(array):
    from ..backends import backend_of

    return backend_of(array).xp


def _clip_by_norm(g, clipnorm):
    xp = _xp(g)
    norm = float(xp.sqrt(xp.sum(g * g)))
    return g * (clipnorm / norm) if norm > clipnorm else g
