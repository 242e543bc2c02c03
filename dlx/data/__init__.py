"""Level 7: data on the host: batching for training loops, bundled and downloadable datasets.

``batches``/``ArrayBatches`` slice host arrays into (shuffled) batches;
``load_digits`` reads scikit-learn's bundled 8x8 digits; ``load_mnist`` and
``load_fashion_mnist`` read the standard IDX files from a cache folder
(downloading them when allowed); ``read_idx``/``write_idx`` handle single IDX files.
"""

from .batching import ArrayBatches, batches, num_samples, split_validation, take_samples
from .datasets import load_digits
from .mnist import IDXError, load_fashion_mnist, load_mnist, read_idx, write_idx

__all__ = [
    "ArrayBatches",
    "IDXError",
    "batches",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "num_samples",
    "read_idx",
    "split_validation",
    "take_samples",
    "write_idx",
]
