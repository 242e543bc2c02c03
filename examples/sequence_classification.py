"""An LSTM classifies scikit-learn's bundled handwritten digits read row by row.

Each 8x8 image is a sequence of 8 time steps (the rows) of 8 features (the
pixels of a row); the LSTM's last output goes to a softmax over the 10 digits.
No download.

    python examples/sequence_classification.py
    python examples/sequence_classification.py --bidirectional
    DLX_BACKEND=cupy python examples/sequence_classification.py

Prints a Keras-style progress line per epoch and the final test accuracy (about 0.97).
"""

import argparse

import dlx
from dlx import layers


def build_model(units=64, bidirectional=False):
    recurrent = layers.LSTM(units)
    return dlx.Sequential(
        [
            layers.Input((8, 8)),
            layers.Bidirectional(recurrent) if bidirectional else recurrent,
            layers.Dense(10, activation="softmax"),
        ]
    )


def main(epochs=25, batch_size=32, bidirectional=False, verbose=1):
    dlx.set_seed(0)
    (x_train, y_train), (x_test, y_test) = dlx.data.load_digits(image_shape=(8, 8))
    model = build_model(bidirectional=bidirectional)
    model.compile(
        optimizer=dlx.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
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
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bidirectional", action="store_true")
    args = parser.parse_args()
    main(args.epochs, args.batch_size, args.bidirectional)
