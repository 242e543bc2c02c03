"""MultiHeadAttention (Keras 3 arguments and weight layout).

``layer(query, value, key=None, attention_mask=None, return_attention_scores=False,
use_causal_mask=False, training=False)`` with query ``(batch, Tq, dim_q)``,
value ``(batch, Tv, dim_v)``, key ``(batch, Tv, dim_k)`` (default: value) ->
``(batch, Tq, output_dim)`` (``output_dim`` = ``output_shape`` or ``dim_q``), and
the attention probabilities ``(batch, num_heads, Tq, Tv)`` with
``return_attention_scores=True``.

``attention_mask``: boolean (or 0/1) broadcasting to ``(batch, Tq, Tv)``, True =
attend. ``query_mask`` ``(batch, Tq)``, ``value_mask``/``key_mask`` ``(batch, Tv)``
(also taken from the inputs' ``.mask``, e.g. set by ``Embedding(mask_zero=True)``) and
the causal mask are combined with it by logical AND, as Keras does; a query with no key
left to attend to gets zero probabilities. The output carries the query's mask.
(Keras 3 ignores an explicit ``query_mask`` in favour of the query's own mask; dlx
uses it.)

Weights (Keras order and shapes): query kernel ``(dim_q, heads, key_dim)``, query
bias ``(heads, key_dim)``; key kernel ``(dim_k, heads, key_dim)``, key bias; value
kernel ``(dim_v, heads, value_dim)``, value bias ``(heads, value_dim)``; output
kernel ``(heads, value_dim, output_dim)``, output bias ``(output_dim,)``. Biases
only with ``use_bias``. The attention itself is :func:`dlx.ops.scaled_dot_product_attention`
with scale ``1/sqrt(key_dim)``.
"""

import math

from .. import initializers, ops, regularizers
from ..ops.attention import causal_mask, prepare_mask, scaled_dot_product_attention
from .layer import Layer

_SLOTS = ("query", "value", "key", "query_mask", "value_mask", "key_mask", "attention_mask")


class MultiHeadAttention(Layer):
    """Multi-head attention (Vaswani et al.) with Keras's arguments."""

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        dropout=0.0,
        use_bias=True,
        output_shape=None,
        attention_axes=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for arg, value in (("num_heads", num_heads), ("key_dim", key_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(
                    f"MultiHeadAttention '{self.name}': "
                    f"{arg} must be a positive integer, got {value!r}"
                )
        if value_dim is not None and (not isinstance(value_dim, int) or value_dim <= 0):
            raise ValueError(
                f"MultiHeadAttention '{self.name}': "
                f"value_dim must be a positive integer or None, got {value_dim!r}"
            )
        if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(
                f"MultiHeadAttention '{self.name}': dropout must be in [0, 1), got {dropout!r}"
            )
        if attention_axes not in (None, 1, (1,), [1], -2, (-2,), [-2]):
            raise NotImplementedError(
                f"MultiHeadAttention '{self.name}': "
                f"attention_axes={attention_axes!r} is not supported; "
                f"attention runs over axis 1 of (batch, length, features) inputs"
            )
        if isinstance(output_shape, (list, tuple)):
            if len(output_shape) != 1:
                raise NotImplementedError(
                    f"MultiHeadAttention '{self.name}': "
                    f"output_shape must be an int or a 1-tuple, got {output_shape!r}"
                )
            output_shape = output_shape[0]
        if output_shape is not None and (not isinstance(output_shape, int) or output_shape <= 0):
            raise ValueError(
                f"MultiHeadAttention '{self.name}': "
                f"output_shape must be a positive int, got {output_shape!r}"
            )
        self.num_heads, self.key_dim = num_heads, key_dim
        self.value_dim = value_dim if value_dim is not None else key_dim
        self._value_dim_arg = value_dim
        self.dropout, self.use_bias = float(dropout), bool(use_bias)
        self.output_shape = output_shape
        self.attention_axes = attention_axes
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.seed = seed

    # -- calling: pack every tensor into one list so symbolic graphs see them all ----
    def __call__(
        self,
        query,
        value=None,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
        _slots=None,
        **kwargs,
    ):
        if _slots is not None:  # a packed call (from a functional graph)
            self._current_slots = tuple(_slots)
            return super().__call__(
                query,
                training=training,
                _slots=_slots,
                return_attention_scores=return_attention_scores,
                use_causal_mask=use_causal_mask,
                **kwargs,
            )
        if value is None:
            raise ValueError(
                f"MultiHeadAttention '{self.name}' needs query and value: layer(query, value), "
                f"e.g. layer(x, x) for self-attention"
            )
        given = dict(
            zip(_SLOTS, (query, value, key, query_mask, value_mask, key_mask, attention_mask))
        )
        slots = tuple(name for name in _SLOTS if given[name] is not None)
        self._current_slots = slots
        return super().__call__(
            [given[name] for name in slots],
            training=training,
            _slots=slots,
            return_attention_scores=return_attention_scores,
            use_causal_mask=use_causal_mask,
            **kwargs,
        )

    def build(self, input_shape):
        shapes = dict(zip(self._current_slots, input_shape))
        q, v = shapes["query"], shapes["value"]
        k = shapes.get("key", v)
        for name, s in (("query", q), ("value", v), ("key", k)):
            if len(s) != 3:
                raise ValueError(
                    f"MultiHeadAttention '{self.name}': "
                    f"{name} must have shape (batch, length, features), "
                    f"got {tuple(s)}"
                )
        heads, kd, vd = self.num_heads, self.key_dim, self.value_dim
        out_dim = self.output_shape or q[-1]
        self._dims = (q[-1], k[-1], v[-1])

        def bias(name, shape):
            return (
                self.add_weight(name, shape, self.bias_initializer, self.bias_regularizer)
                if self.use_bias
                else None
            )

        kinit, kreg = self.kernel_initializer, self.kernel_regularizer
        self.query_kernel = self.add_weight("query/kernel", (q[-1], heads, kd), kinit, kreg)
        self.query_bias = bias("query/bias", (heads, kd))
        self.key_kernel = self.add_weight("key/kernel", (k[-1], heads, kd), kinit, kreg)
        self.key_bias = bias("key/bias", (heads, kd))
        self.value_kernel = self.add_weight("value/kernel", (v[-1], heads, vd), kinit, kreg)
        self.value_bias = bias("value/bias", (heads, vd))
        self.output_kernel = self.add_weight(
            "attention_output/kernel", (heads, vd, out_dim), kinit, kreg
        )
        self.output_bias = bias("attention_output/bias", (out_dim,))

    def _check_inputs(self, inputs):
        pass  # checked in call, naming every tensor

    def _project(self, x, kernel, bias, depth):
        """``(batch, T, dim) -> (batch, heads, T, depth)``.

        One product with the kernel viewed as ``(dim, heads * depth)``."""
        b, t, d = x.shape
        k2 = ops.reshape(kernel, (d, self.num_heads * depth))
        b2 = ops.reshape(bias, (self.num_heads * depth,)) if bias is not None else None
        y = ops.linear(x, k2, b2)
        return ops.transpose(ops.reshape(y, (b, t, self.num_heads, depth)), (0, 2, 1, 3))

    def call(
        self,
        inputs,
        training=False,
        _slots=None,
        return_attention_scores=False,
        use_causal_mask=False,
    ):
        t = dict(zip(_slots, inputs))
        query, value = t["query"], t["value"]
        key = t.get("key", value)
        self._check_shapes(query, value, key)
        mask = self._attention_mask(t, query, value, key, use_causal_mask)
        q = self._project(query, self.query_kernel, self.query_bias, self.key_dim)
        k = self._project(key, self.key_kernel, self.key_bias, self.key_dim)
        v = self._project(value, self.value_kernel, self.value_bias, self.value_dim)
        attended, scores = scaled_dot_product_attention(
            q,
            k,
            v,
            mask=mask,
            scale=1.0 / math.sqrt(self.key_dim),
            dropout_rate=self.dropout,
            training=training,
            return_scores=True,
        )
        b, _, tq, _ = attended.shape
        merged = ops.reshape(
            ops.transpose(attended, (0, 2, 1, 3)), (b, tq, self.num_heads * self.value_dim)
        )
        out_dim = self.output_kernel.shape[-1]
        out = ops.linear(
            merged,
            ops.reshape(self.output_kernel, (self.num_heads * self.value_dim, out_dim)),
            self.output_bias,
        )
        return [out, scores] if return_attention_scores else out

    def _check_shapes(self, query, value, key):
        shapes = {"query": tuple(query.shape), "value": tuple(value.shape), "key": tuple(key.shape)}
        problem = None
        if any(len(s) != 3 for s in shapes.values()):
            problem = "query, value and key must be (batch, length, features)"
        elif (shapes["query"][-1], shapes["key"][-1], shapes["value"][-1]) != self._dims:
            problem = (
                f"the layer was built for feature sizes query {self._dims[0]}, "
                f"key {self._dims[1]}, "
                f"value {self._dims[2]}"
            )
        elif shapes["key"][1] != shapes["value"][1]:
            problem = "key and value must have the same length (axis 1)"
        elif len({s[0] for s in shapes.values()}) > 1:
            problem = "batch sizes differ"
        if problem:
            raise ValueError(
                f"MultiHeadAttention '{self.name}': "
                f"{problem}; got query {shapes['query']}, "
                f"value {shapes['value']}, key {shapes['key']}"
            )

    def _attention_mask(self, t, query, value, key, use_causal_mask):
        """The (batch, 1, Tq, Tv) boolean mask from every source, or None."""
        b, tq, tv = query.shape[0], query.shape[1], value.shape[1]
        xp = query.xp
        target = (b, tq, tv)
        where = f"MultiHeadAttention '{self.name}'"
        query_mask = t.get("query_mask", query.mask)
        value_mask = t.get("value_mask", value.mask)
        key_mask = t.get("key_mask", key.mask if key is not value else None)
        mask = None

        def combine(current, new):
            return new if current is None else xp.logical_and(current, new)

        for name, m, shape in (
            ("query_mask", query_mask, (b, tq)),
            ("value_mask", value_mask, (b, tv)),
            ("key_mask", key_mask, (b, tv)),
        ):
            if m is None:
                continue
            m = prepare_mask(m, shape, query, where=where, name=name)
            mask = combine(mask, xp.expand_dims(m, axis=-1 if name == "query_mask" else -2))
        if use_causal_mask:
            mask = combine(mask, causal_mask(xp, tq, tv, device=query.value.device))
        if "attention_mask" in t:
            m = prepare_mask(t["attention_mask"], target, query, where=where, name="attention_mask")
            mask = combine(mask, m)
        if mask is None:
            return None
        while mask.ndim < 3:
            mask = xp.expand_dims(mask, axis=0)
        return xp.expand_dims(mask, axis=-3)  # broadcast over the heads

    def compute_mask(self, inputs, mask=None):
        """The output keeps the query's padding mask (as Keras)."""
        query = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        return getattr(query, "mask", None)

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self._value_dim_arg,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "output_shape": self.output_shape,
            "attention_axes": self.attention_axes,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "seed": self.seed,
        }
