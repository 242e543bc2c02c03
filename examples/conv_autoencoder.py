"""A convolutional autoencoder on scikit-learn's digits (8x8, no download).

Conv2D encoder (stride 2) -> Conv2DTranspose decoder; prints the reconstruction
error (mean squared error on held-out digits) after every epoch, which falls.

    python examples/conv_autoencoder.py
"""

import argparse

import dlx
from dlx import layers


def build_model():
    return dlx.Sequential(
        [
            layers.Input((8, 8, 1)),
            layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
            layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
            layers.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu"),
            layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="sigmoid"),
        ]
    )


def main(epochs=10, batch_size=32):
    dlx.set_seed(0)
    (x_train, _), (x_test, _) = dlx.data.load_digits()
    model = build_model()
    model.compile(optimizer="adam", loss="mse")
    errors = []
    for epoch in range(epochs):
        model.fit(x_train, x_train, epochs=1, batch_size=batch_size, verbose=0)
        errors.append(model.evaluate(x_test, x_test, verbose=0))
        print(f"epoch {epoch + 1}: reconstruction mse {errors[-1]:.5f}")
    return errors


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    main(args.epochs)
