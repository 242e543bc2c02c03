"""The seed Keras CNN classifies scikit-learn's bundled handwritten digits (no download).

    python examples/mnist_cnn.py            # NumPy (the default backend)
    DLX_BACKEND=cupy python examples/mnist_cnn.py

The model is the Keras tutorial CNN, unchanged apart from the imports:
Conv2D(32, 3x3, relu) -> MaxPooling2D -> Conv2D(64, 3x3, relu) -> MaxPooling2D
-> Flatten -> Dense(64, relu) -> Dense(10, softmax), Adam and sparse categorical
cross-entropy. The 8x8 digits are upsampled 3x (nearest) and padded to 28x28, the
MNIST image size. Prints a progress line per epoch and the test accuracy.
"""

import argparse

import numpy as np

import dlx
from dlx import layers


def build_model():
    model = dlx.Sequential()
    model.add(layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Flatten())
    model.add(layers.Dense(64, activation="relu"))
    model.add(layers.Dense(10, activation="softmax"))
    return model


def to_28x28(images):
    """(n, 8, 8, 1) -> (n, 28, 28, 1): each pixel repeated 3x3, then 2 pixels of zeros around."""
    big = images.repeat(3, axis=1).repeat(3, axis=2)
    return np.pad(big, ((0, 0), (2, 2), (2, 2), (0, 0)))


def main(epochs=12, batch_size=32, verbose=1):
    dlx.set_seed(0)
    (x_train, y_train), (x_test, y_test) = dlx.data.load_digits()
    x_train, x_test = to_28x28(x_train), to_28x28(x_test)
    model = build_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    if verbose:
        model.summary()
    model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        validation_split=0.1,
        verbose=verbose,
    )
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"test loss {loss:.4f} - test accuracy {accuracy:.4f} (backend {dlx.get_backend().name})")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    main(args.epochs, args.batch_size)
