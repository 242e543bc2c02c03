"""A small Transformer encoder classifies the 8x8 digits, reading each image as a
sequence of 8 rows (8 tokens of 8 pixels).

Rows are projected to ``d_model`` features, a learned position embedding is added
(``PositionalEmbedding``, a custom layer written here), then encoder blocks of
self-attention and a feed-forward network, each wrapped in a residual ``Add`` and
``LayerNormalization``; the tokens are averaged and classified. Reaches >= 0.95 test
accuracy (about 0.98) in a few minutes on a laptop CPU.

    python examples/transformer_classifier.py
"""

import dlx
from dlx import layers


class PositionalEmbedding(layers.Layer):
    """Adds a learned vector per position: ``(batch, length, d) -> (batch, length, d)``.

    Weight: positions ``(length, d)``.
    """

    def __init__(self, initializer="random_normal", **kwargs):
        super().__init__(**kwargs)
        self.initializer = initializer

    def build(self, input_shape):
        self.positions = self.add_weight("positions", tuple(input_shape[1:]), self.initializer)

    def call(self, inputs):
        return inputs + self.positions

    def get_config(self):
        return {**super().get_config(), "initializer": self.initializer}


def encoder_block(x, d_model, num_heads, ff_dim, dropout):
    """Post-norm Transformer block: x + attention -> norm -> x + feed-forward -> norm."""
    attended = layers.MultiHeadAttention(num_heads, key_dim=d_model // num_heads, dropout=dropout)(
        x, x
    )
    x = layers.LayerNormalization(epsilon=1e-6)(
        layers.Add()([x, layers.Dropout(dropout)(attended)])
    )
    h = layers.Dense(ff_dim, activation="gelu")(x)
    h = layers.Dropout(dropout)(layers.Dense(d_model)(h))
    return layers.LayerNormalization(epsilon=1e-6)(layers.Add()([x, h]))


def build(
    length=8, features=8, classes=10, d_model=32, num_heads=4, ff_dim=64, blocks=2, dropout=0.1
):
    tokens = layers.Input((length, features), name="rows")
    x = PositionalEmbedding()(layers.Dense(d_model)(tokens))
    for _ in range(blocks):
        x = encoder_block(x, d_model, num_heads, ff_dim, dropout)
    x = layers.GlobalAveragePooling1D()(x)
    outputs = layers.Dense(classes, activation="softmax")(x)
    return dlx.Model(tokens, outputs, name="transformer_classifier")


def main(epochs=30, batch_size=32, verbose=True, seed=0):
    dlx.set_seed(seed)
    (x_train, y_train), (x_test, y_test) = dlx.data.load_digits(image_shape=(8, 8))
    model = build()
    model.compile(
        optimizer=dlx.optimizers.Adam(2e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    if verbose:
        model.summary()
    history = model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        validation_split=0.1,
        verbose=2 if verbose else 0,
    )
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    if verbose:
        print(f"test loss {loss:.4f}, test accuracy {accuracy:.4f}")
    return accuracy, history


if __name__ == "__main__":
    main()
