"""Optimizers (Keras names, defaults and update rules) and learning-rate schedules."""

from . import schedules
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .rmsprop import Adagrad, RMSprop
from .sgd import SGD

ALIASES = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}


def get(identifier):
    """An Optimizer from a name (default arguments), a config dict or an instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in ALIASES:
        return ALIASES[identifier.lower()]()
    if isinstance(identifier, dict):
        return ALIASES[identifier["class_name"].lower()].from_config(identifier.get("config", {}))
    raise ValueError(f"Unknown optimizer {identifier!r}; choose one of {sorted(ALIASES)}.")


def serialize(optimizer):
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}


__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSprop",
    "get",
    "schedules",
    "serialize",
]
