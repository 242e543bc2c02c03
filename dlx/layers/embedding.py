"""Embedding: integer indices -> rows of a trainable table."""

from .. import initializers, ops, regularizers
from .layer import Layer


class Embedding(Layer):
    """Look up ``embeddings[index]`` for every index of the input.

    Input: integers of any shape ``(batch, ...)`` in ``[0, input_dim)``; float
    inputs are cast (so a model can probe the layer with zeros). Output
    ``(batch, ..., output_dim)``. Weight: embeddings ``(input_dim, output_dim)``.
    With ``mask_zero=True`` index 0 is padding: the output mask is
    ``inputs != 0`` and ``input_dim`` should count it.
    """

    input_dtype = "int32"

    def __init__(
        self,
        input_dim,
        output_dim,
        embeddings_initializer="uniform",
        embeddings_regularizer=None,
        mask_zero=False,
        **kwargs,
    ):
        kwargs.pop("input_length", None)  # Keras 2 argument, no longer needed
        super().__init__(**kwargs)
        for what, value in (("input_dim", input_dim), ("output_dim", output_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(
                    f"Embedding '{self.name}': {what} must be a positive integer, got {value!r}"
                )
        self.input_dim, self.output_dim = input_dim, output_dim
        if embeddings_initializer == "uniform":
            embeddings_initializer = initializers.RandomUniform(-0.05, 0.05)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            "embeddings",
            (self.input_dim, self.output_dim),
            self.embeddings_initializer,
            self.embeddings_regularizer,
        )

    def _indices(self, inputs):
        xp = inputs.xp
        value = inputs.value
        if not xp.isdtype(value.dtype, "integral"):
            value = xp.astype(value, xp.int64)
        return value

    def call(self, inputs):
        return ops.take(self.embeddings, self._indices(inputs), axis=0)

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return self._indices(inputs) != 0

    def get_config(self):
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "embeddings_initializer": initializers.serialize(self.embeddings_initializer),
            "embeddings_regularizer": regularizers.serialize(self.embeddings_regularizer),
            "mask_zero": self.mask_zero,
        }
