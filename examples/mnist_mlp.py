"""An MLP classifies scikit-learn's bundled handwritten digits (8x8, no download).

    python examples/mnist_mlp.py            # NumPy (the default backend)
    DLX_BACKEND=cupy python examples/mnist_mlp.py

Prints a Keras-style progress line per epoch and the final test accuracy.
"""

import argparse

import dlx
from dlx import layers


def build_model():
    return dlx.Sequential(
        [
            layers.Input((64,)),
            layers.Dense(256, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(128, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ]
    )


def main(epochs=30, batch_size=32, verbose=1):
    dlx.set_seed(0)
    (x_train, y_train), (x_test, y_test) = dlx.data.load_digits(image_shape=(64,))
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
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    main(args.epochs, args.batch_size)
