"""Level 6: models: Sequential, functional and subclassed Model, training loops, summary."""

from .model import Model
from .sequential import Sequential
from .training import NonFiniteLossError

__all__ = ["Model", "NonFiniteLossError", "Sequential"]
