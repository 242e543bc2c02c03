"""A 2-2-1 sigmoid network learns XOR with plain SGD.

python examples/xor.py
"""

import numpy as np

import dlx
from dlx import layers, optimizers


def main(epochs=2000, verbose=True):
    dlx.set_seed(1)
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([[0], [1], [1], [0]], dtype=np.float32)
    model = dlx.Sequential(
        [
            layers.Dense(4, activation="sigmoid", input_shape=(2,)),
            layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(
        optimizer=optimizers.SGD(learning_rate=1.0, momentum=0.9),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(x, y, epochs=epochs, batch_size=4, verbose=0)
    predictions = dlx.to_numpy(model.predict(x, verbose=0))
    if verbose:
        print(f"loss after {epochs} epochs: {history.history['loss'][-1]:.4f}")
        for inputs, p in zip(x, predictions):
            print(f"{inputs.astype(int)} -> {p[0]:.3f}")
    return predictions


if __name__ == "__main__":
    main()
