"""A dense autoencoder compresses the 8x8 digits (64 pixels) to a 16-number code and back.

Built with the functional API as two sub-models (encoder, decoder) joined into one
model; trained with binary cross-entropy on pixels in [0, 1]; reports the test
reconstruction error (mean squared error per pixel) against a trivial baseline.

    python examples/autoencoder.py
"""

import numpy as np

import dlx
from dlx import layers


def build(code_size=16):
    pixels = layers.Input((64,), name="pixels")
    h = layers.Dense(48, activation="relu")(pixels)
    code = layers.Dense(code_size, activation="relu", name="code")(h)
    encoder = dlx.Model(pixels, code, name="encoder")

    code_in = layers.Input((code_size,), name="code_in")
    h = layers.Dense(48, activation="relu")(code_in)
    image = layers.Dense(64, activation="sigmoid", name="image")(h)
    decoder = dlx.Model(code_in, image, name="decoder")

    x = layers.Input((64,), name="image_in")
    autoencoder = dlx.Model(x, decoder(encoder(x)), name="autoencoder")
    return encoder, decoder, autoencoder


def main(epochs=60, batch_size=32, verbose=True, seed=0):
    dlx.set_seed(seed)
    (x_train, _), (x_test, _) = dlx.data.load_digits(image_shape=(64,))
    encoder, decoder, autoencoder = build()
    autoencoder.compile(optimizer=dlx.optimizers.Adam(3e-3), loss="binary_crossentropy")
    if verbose:
        autoencoder.summary()
    history = autoencoder.fit(
        x_train,
        x_train,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=(x_test, x_test),
        verbose=0,
    )
    reconstructed = dlx.to_numpy(autoencoder.predict(x_test, verbose=0))
    error = float(np.mean((reconstructed - x_test) ** 2))
    baseline = float(np.mean((x_train.mean(axis=0) - x_test) ** 2))  # predict the mean image
    if verbose:
        print(
            f"binary cross-entropy: train {history.history['loss'][-1]:.4f}, "
            f"test {history.history['val_loss'][-1]:.4f}"
        )
        print(
            f"test reconstruction error (MSE per pixel): {error:.4f} "
            f"(mean-image baseline {baseline:.4f})"
        )
        codes = dlx.to_numpy(encoder.predict(x_test[:1], verbose=0))
        print(f"first test digit encoded as {np.round(codes[0], 2)}")
    return error, baseline, history


if __name__ == "__main__":
    main()
