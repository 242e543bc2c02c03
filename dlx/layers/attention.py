"""Attention: Keras's dot-product (Luong) attention layer, and additive ("concat") scores.

``layer([query, value])`` or ``layer([query, value, key])`` with query
``(batch, Tq, dim)``, value ``(batch, Tv, dim_v)``, key ``(batch, Tv, dim)``
(default: value) -> ``(batch, Tq, dim_v)``; with ``return_attention_scores=True``
also the attention distribution ``(batch, Tq, Tv)``.

``mask=[query_mask (batch, Tq), value_mask (batch, Tv)]`` (or the inputs' ``.mask``):
masked values get no attention, masked queries output zeros. ``use_causal_mask``
lets query ``i`` see values ``j <= i`` only. Every query needs at least one value it
may attend to (as Keras documents); one with none gets zero attention here.

Scores: ``score_mode="dot"``: ``query @ key^T`` (times the scalar weight ``scale``
if ``use_scale``; no ``1/sqrt(d)``, as Keras); ``"concat"``:
``concat_score_weight * sum(tanh(scale * (query_i + key_j)))``.
Weights (Keras order): ``scale ()`` if ``use_scale``, ``concat_score_weight ()`` for ``"concat"``.
"""

from .. import ops
from ..ops.activations import softmax
from ..ops.attention import LARGE_NEGATIVE, causal_mask, prepare_mask, scaled_dot_product_attention
from .layer import Layer


class Attention(Layer):
    """Args: use_scale (False), score_mode ("dot" or "concat"), dropout (0.0) on the
    attention distribution while training, seed."""

    def __init__(self, use_scale=False, score_mode="dot", dropout=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if score_mode not in ("dot", "concat"):
            raise ValueError(
                f"Attention '{self.name}': score_mode must be 'dot' or 'concat', got {score_mode!r}"
            )
        if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"Attention '{self.name}': dropout must be in [0, 1), got {dropout!r}")
        self.use_scale, self.score_mode = bool(use_scale), score_mode
        self.dropout, self.seed = float(dropout), seed

    def __call__(self, inputs, *args, **kwargs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) not in (2, 3):
            raise ValueError(
                f"Attention '{self.name}' must be called on [query, value] or [query, value, key]"
            )
        return super().__call__(list(inputs), *args, **kwargs)

    def build(self, input_shape):
        self._check_shapes([tuple(s) for s in input_shape])
        self.scale = self.add_weight("scale", (), "ones") if self.use_scale else None
        self.concat_score_weight = (
            self.add_weight("concat_score_weight", (), "ones")
            if self.score_mode == "concat"
            else None
        )

    def _check_shapes(self, shapes):
        q, v = shapes[0], shapes[1]
        k = shapes[2] if len(shapes) > 2 else v
        problem = None
        if any(len(s) != 3 for s in shapes):
            problem = "query, value and key must be (batch, length, features)"
        elif q[-1] != k[-1]:
            problem = f"query and key need the same feature size, got {q[-1]} and {k[-1]}"
        elif k[1] != v[1]:
            problem = f"key and value need the same length, got {k[1]} and {v[1]}"
        elif len({q[0], k[0], v[0]}) > 1:
            problem = "batch sizes differ"
        if problem:
            raise ValueError(
                f"Attention '{self.name}': {problem}; got query {q}, value {v}, key {k}"
            )

    def call(
        self,
        inputs,
        mask=None,
        training=False,
        return_attention_scores=False,
        use_causal_mask=False,
    ):
        self._check_shapes([tuple(x.shape) for x in inputs])
        query, value = inputs[0], inputs[1]
        key = inputs[2] if len(inputs) > 2 else value
        b, tq, tv = query.shape[0], query.shape[1], value.shape[1]
        xp = query.xp
        masks = list(mask) if isinstance(mask, (list, tuple)) else [mask, None]
        where = f"Attention '{self.name}'"
        q_mask = prepare_mask(masks[0], (b, tq), query, where=where, name="query mask")
        v_mask = prepare_mask(
            masks[1] if len(masks) > 1 else None, (b, tv), query, where=where, name="value mask"
        )
        scores_mask = None if v_mask is None else xp.expand_dims(v_mask, axis=-2)
        if use_causal_mask:
            causal = causal_mask(xp, tq, tv, device=query.value.device)
            scores_mask = causal if scores_mask is None else xp.logical_and(scores_mask, causal)
        if self.score_mode == "dot":
            q = query * self.scale if self.scale is not None else query
            out, weights = scaled_dot_product_attention(
                q,
                key,
                value,
                mask=scores_mask,
                scale=1.0,
                dropout_rate=self.dropout,
                training=training,
                return_scores=True,
            )
        else:
            summed = ops.expand_dims(query, -2) + ops.expand_dims(key, -3)  # (b, tq, tv, d)
            if self.scale is not None:
                summed = summed * self.scale
            scores = ops.sum(ops.tanh(summed), axis=-1) * self.concat_score_weight
            if scores_mask is not None:
                scores = ops.where(
                    xp.broadcast_to(scores_mask, (b, tq, tv)), scores, LARGE_NEGATIVE
                )
            weights = softmax(scores, axis=-1)
            dropped = ops.dropout(weights, self.dropout, training=training)
            out = ops.matmul(dropped, value)
        if q_mask is not None:
            out = out * xp.astype(xp.expand_dims(q_mask, axis=-1), out.dtype)
        return [out, weights] if return_attention_scores else out

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)) and mask and mask[0] is not None:
            return mask[0]
        return None

    def get_config(self):
        return {
            **super().get_config(),
            "use_scale": self.use_scale,
            "score_mode": self.score_mode,
            "dropout": self.dropout,
            "seed": self.seed,
        }
