"""Bundled datasets (no download): scikit-learn's handwritten digits."""

import numpy as np


def load_digits(test_fraction=0.2, seed=0, image_shape=(8, 8, 1), normalize=True):
    """The 1,797 8x8 digit images that scikit-learn ships, split into train and test.

    Returns ``(x_train, y_train), (x_test, y_test)`` with images of
    ``image_shape`` (e.g. ``(64,)`` for an MLP), float32 in [0, 1] when
    ``normalize``, and int64 labels 0-9. The split is stratified-free but
    seeded and fixed.
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as error:
        raise ImportError("load_digits needs scikit-learn: pip install scikit-learn") from error
    digits = sk_load_digits()
    x = digits.images.astype(np.float32)
    if normalize:
        x /= 16.0
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int(len(x) * (1 - test_fraction))
    x = x.reshape((len(x),) + tuple(image_shape))
    return (x[:split], y[:split]), (x[split:], y[split:])
