"""Converter of MultiHeadAttention as MatMul/Reshape/Transpose/Softmax, step by step as
:class:`dlx.layers.MultiHeadAttention` computes it: per-head projections, scores
``q @ k^T * (1/sqrt(key_dim))``, masked cells set to -1e9, softmax over the keys
(masked weights then set to 0), ``probs @ v``, heads merged and projected."""

import math

import numpy as np

from ..ops.attention import LARGE_NEGATIVE
from .export import register_converter, unsupported


def _project(ctx, x, kernel, bias, heads, depth, hint):
    """``(B, T, d) -> (B, T, heads, depth)`` with one MatMul."""
    d = kernel.shape[0]
    b2 = None if bias is None else bias.reshape(heads * depth)
    y = ctx.matmul_bias(x, kernel.reshape(d, heads * depth), b2)
    return ctx.reshape(y, (0, 0, heads, depth))


def _bool(ctx, name):
    return ctx.op("Cast", [name], "mask", to=ctx.TensorProto.BOOL)


@register_converter("MultiHeadAttention")
def convert_multi_head_attention(layer, inputs, ctx):
    slots = ctx.call_kwargs.get("_slots") or ("query", "value")
    given = dict(zip(slots, inputs))
    query, value = given["query"], given["value"]
    key = given.get("key", value)
    heads, kd, vd = layer.num_heads, layer.key_dim, layer.value_dim
    weights = list(layer.get_weights())

    def take(with_bias):
        kernel = weights.pop(0)
        bias = weights.pop(0) if with_bias else None
        return kernel, bias

    qk, qb = take(layer.use_bias)
    kk, kb = take(layer.use_bias)
    vk, vb = take(layer.use_bias)
    ok, ob = take(layer.use_bias)

    q = _project(ctx, query.name, qk, qb, heads, kd, "query")  # (B, Tq, H, kd)
    k = _project(ctx, key.name, kk, kb, heads, kd, "key")
    v = _project(ctx, value.name, vk, vb, heads, vd, "value")
    q = ctx.transpose(q, (0, 2, 1, 3))  # (B, H, Tq, kd)
    k = ctx.transpose(k, (0, 2, 3, 1))  # (B, H, kd, Tk)
    v = ctx.transpose(v, (0, 2, 1, 3))  # (B, H, Tk, vd)
    scores = ctx.op("MatMul", [q, k], "scores")
    scores = ctx.op("Mul", [scores, ctx.scalar(1.0 / math.sqrt(kd), "scale")], "scaled")

    mask = _mask(layer, ctx, given, query, value, key)
    if mask is not None:
        scores = ctx.op("Where", [mask, scores, ctx.scalar(LARGE_NEGATIVE, "neg")], "masked")
    probs = ctx.op("Softmax", [scores], "probs", axis=-1)
    if mask is not None:  # a query with no key to attend to gets zero weights, as in dlx
        probs = ctx.op("Where", [mask, probs, ctx.scalar(0.0, "zero")], "masked_probs")
    attended = ctx.op("MatMul", [probs, v], "attended")  # (B, H, Tq, vd)
    merged = ctx.reshape(ctx.transpose(attended, (0, 2, 1, 3)), (0, 0, heads * vd))
    out = ctx.matmul_bias(merged, ok.reshape(heads * vd, ok.shape[-1]), ob)
    if ctx.call_kwargs.get("return_attention_scores"):
        return [out, probs]
    return out


def _mask(layer, ctx, given, query, value, key):
    """Boolean ``(B or 1, 1, Tq, Tv)`` mask from every source dlx combines, or None:
    the explicit masks, else the masks the inputs carry (Embedding(mask_zero=True) ...)."""
    mask = None

    def combine(new):
        return new if mask is None else ctx.op("And", [mask, new], "mask_and")

    carried = {
        "query_mask": query.mask,
        "value_mask": value.mask,
        "key_mask": key.mask if key is not value else None,
    }
    for name, axis in (("query_mask", 2), ("value_mask", 1), ("key_mask", 1)):
        source = _bool(ctx, given[name].name) if name in given else carried[name]
        if source is not None:  # query mask (B, Tq, 1), value/key masks (B, 1, Tv)
            mask = combine(ctx.unsqueeze(source, [axis]))
    if ctx.call_kwargs.get("use_causal_mask"):
        tq, tv = query.shape[1], value.shape[1]
        if tq is None or tv is None:
            raise unsupported(
                layer,
                f"use_causal_mask needs known sequence lengths; query {query.shape}, "
                f"value {value.shape}",
            )
        causal = np.arange(tq)[:, None] >= np.arange(tv)[None, :]
        mask = combine(ctx.const(causal, "causal_mask", dtype=np.bool_))
    if "attention_mask" in given:
        mask = combine(_bool(ctx, given["attention_mask"].name))
    if mask is None:
        return None
    return ctx.unsqueeze(mask, [-3])  # broadcast over the heads


@register_converter("Attention")
def convert_attention(layer, inputs, ctx):
    """Keras's dot-product / additive attention layer, as dlx computes it."""
    if ctx.call_kwargs.get("mask") is not None:
        raise unsupported(
            layer, "a mask argument is not supported (masks carried by the inputs are)"
        )
    query, value = inputs[0], inputs[1]
    key = inputs[2] if len(inputs) > 2 else value
    weights = list(layer.get_weights())
    scale = weights.pop(0) if layer.use_scale else None
    if layer.score_mode == "dot":
        q = query.name
        if scale is not None:
            q = ctx.op("Mul", [q, ctx.const(scale, "scale")], "scaled_query")
        scores = ctx.op("MatMul", [q, ctx.transpose(key.name, (0, 2, 1))], "scores")
    else:
        summed = ctx.op(
            "Add", [ctx.unsqueeze(query.name, [2]), ctx.unsqueeze(key.name, [1])], "summed"
        )
        if scale is not None:
            summed = ctx.op("Mul", [summed, ctx.const(scale, "scale")], "scaled")
        scores = ctx.reduce("ReduceSum", ctx.op("Tanh", [summed], "tanh"), [-1], keepdims=False)
        scores = ctx.op("Mul", [scores, ctx.const(weights.pop(0), "concat_score_weight")], "scores")
    mask = None if value.mask is None else ctx.unsqueeze(value.mask, [1])  # (B, 1, Tv)
    if ctx.call_kwargs.get("use_causal_mask"):
        tq, tv = query.shape[1], value.shape[1]
        if tq is None or tv is None:
            raise unsupported(
                layer,
                f"use_causal_mask needs known sequence lengths; query {query.shape}, "
                f"value {value.shape}",
            )
        causal = ctx.const(
            np.arange(tq)[:, None] >= np.arange(tv)[None, :], "causal_mask", dtype=np.bool_
        )
        mask = causal if mask is None else ctx.op("And", [mask, causal], "mask_and")
    if mask is not None:
        scores = ctx.op("Where", [mask, scores, ctx.scalar(LARGE_NEGATIVE, "neg")], "masked")
    probs = ctx.op("Softmax", [scores], "probs", axis=-1)
    if mask is not None and layer.score_mode == "dot":  # dot scores go through dlx's SDPA
        probs = ctx.op("Where", [mask, probs, ctx.scalar(0.0, "zero")], "masked_probs")
    out = ctx.op("MatMul", [probs, value.name], "attended")
    if query.mask is not None:  # masked queries output zeros
        keep = ctx.op("Cast", [ctx.unsqueeze(query.mask, [-1])], "keep", to=ctx.onnx_dtype)
        out = ctx.op("Mul", [out, keep], "query_masked")
    if ctx.call_kwargs.get("return_attention_scores"):
        return [out, probs]
    return out
