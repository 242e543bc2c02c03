"""Level 7: data on the host: batching for training loops and bundled datasets."""

from .batching import ArrayBatches, num_samples, split_validation, take_samples
from .datasets import load_digits

__all__ = ["ArrayBatches", "load_digits", "num_samples", "split_validation", "take_samples"]
