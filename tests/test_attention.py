"""scaled_dot_product_attention, MultiHeadAttention and Attention: float64 gradient checks
(with padding and causal masks), PyTorch/Keras references, kernel dispatch, bad input."""

import numpy as np
import pytest
from helpers import check_gradients, check_layer_gradients

import dlx
from dlx import layers, ops

rng = np.random.default_rng(11)


def _qkv(batch=(2, 2), tq=3, tk=4, dk=3, dv=2):
    return (
        rng.normal(size=batch + (tq, dk)),
        rng.normal(size=batch + (tk, dk)),
        rng.normal(size=batch + (tk, dv)),
    )


def _np_attention(q, k, v, mask=None, causal=False, scale=None):
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    keep = np.ones(s.shape, bool)
    if mask is not None:
        keep = keep & mask
    if causal:
        keep = keep & np.tril(np.ones(s.shape[-2:], bool))
    s = np.where(keep, s, -1e9)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p = np.where(keep, p, 0.0)
    return p @ v, p


# -- the op ------------------------------------------------------------------------------
def test_sdpa_values_match_numpy(backend):
    q, k, v = _qkv()
    mask = rng.random((2, 1, 3, 4)) > 0.3
    out, p = ops.scaled_dot_product_attention(
        dlx.Tensor(q), dlx.Tensor(k), dlx.Tensor(v), mask=mask, is_causal=True, return_scores=True
    )
    ref_out, ref_p = _np_attention(q, k, v, mask, causal=True)
    np.testing.assert_allclose(dlx.to_numpy(out), ref_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dlx.to_numpy(p), ref_p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["plain", "mask", "causal", "mask+causal", "scale"])
def test_sdpa_gradients(backend, case):
    q, k, v = _qkv()
    mask = rng.random((2, 1, 3, 4)) > 0.4 if "mask" in case else None
    causal = "causal" in case
    scale = 0.7 if case == "scale" else None
    check_gradients(
        lambda q, k, v: ops.scaled_dot_product_attention(
            q, k, v, mask=mask, is_causal=causal, scale=scale
        ),
        [q, k, v],
    )


def test_sdpa_gradients_through_scores_and_fully_masked_rows(backend):
    q, k, v = _qkv(batch=(2,))
    mask = np.ones((2, 3, 4), bool)
    mask[0, 1] = False  # a query that may attend to nothing: zeros (as Keras), no NaN
    check_gradients(
        lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, mask=mask, return_scores=True),
        [q, k, v],
    )
    out = ops.scaled_dot_product_attention(dlx.Tensor(q), dlx.Tensor(k), dlx.Tensor(v), mask=mask)
    out = dlx.to_numpy(out)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[0, 1], 0)


def test_sdpa_dropout_only_in_training_and_gradients(backend):
    q, k, v = _qkv(batch=(2,))

    def attend(q, k, v):
        dlx.set_seed(5)  # the same dropout mask on every evaluation
        return ops.scaled_dot_product_attention(q, k, v, dropout_rate=0.5, training=True)

    check_gradients(attend, [q, k, v])
    plain = ops.scaled_dot_product_attention(dlx.Tensor(q), dlx.Tensor(k), dlx.Tensor(v))
    inference = ops.scaled_dot_product_attention(
        dlx.Tensor(q), dlx.Tensor(k), dlx.Tensor(v), dropout_rate=0.5, training=False
    )
    np.testing.assert_array_equal(dlx.to_numpy(plain), dlx.to_numpy(inference))
    dropped = attend(dlx.Tensor(q), dlx.Tensor(k), dlx.Tensor(v))
    assert not np.allclose(dlx.to_numpy(dropped), dlx.to_numpy(plain))


def test_sdpa_matches_torch():
    torch = pytest.importorskip("torch")
    q, k, v = _qkv(batch=(2, 3), tq=5, tk=5, dk=4, dv=3)
    mask = rng.random((2, 1, 5, 5)) > 0.3
    mask[..., 0] = True  # torch gives NaN for rows with nothing to attend to
    for kwargs in ({"attn_mask": mask}, {"is_causal": True}, {}):
        qt, kt, vt = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
        torch_kwargs = dict(kwargs)
        if "attn_mask" in torch_kwargs:
            torch_kwargs["attn_mask"] = torch.tensor(mask)
        yt = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, **torch_kwargs)
        qd, kd, vd = (dlx.Tensor(a, requires_grad=True) for a in (q, k, v))
        yd = ops.scaled_dot_product_attention(
            qd, kd, vd, mask=kwargs.get("attn_mask"), is_causal=kwargs.get("is_causal", False)
        )
        r = rng.normal(size=yt.shape)
        (yt * torch.tensor(r)).sum().backward()
        (yd * r).sum().backward()
        np.testing.assert_allclose(dlx.to_numpy(yd), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        for ours, theirs in ((qd, qt), (kd, kt), (vd, vt)):
            np.testing.assert_allclose(
                dlx.to_numpy(ours.grad), theirs.grad.numpy(), rtol=1e-9, atol=1e-10
            )


@pytest.mark.usefixtures("kernels_on")
def test_sdpa_asks_the_kernel_table_first():
    backend = dlx.set_backend("numpy")
    calls = []

    def kernel(q, k, v, mask, scale):
        calls.append(scale)
        return None if len(calls) == 1 else _np_attention(q, k, v, mask, scale=scale)

    backend.register_kernel("scaled_dot_product_attention", kernel)
    try:
        q, k, v = _qkv()
        generic = ops.scaled_dot_product_attention(q, k, v)  # kernel declines: generic path
        fast = ops.scaled_dot_product_attention(q, k, v)  # kernel computes
        assert len(calls) == 2
        np.testing.assert_allclose(dlx.to_numpy(fast), dlx.to_numpy(generic), rtol=1e-12)
        check_gradients(lambda q, k, v: ops.scaled_dot_product_attention(q, k, v), [q, k, v])
    finally:
        backend.kernels.pop("scaled_dot_product_attention")


def test_sdpa_bad_input_names_shapes(backend):
    q, k, v = (dlx.Tensor(a) for a in _qkv())
    with pytest.raises(
        ValueError, match=r"mask of shape \(2, 5\) does not broadcast.*\(2, 2, 3, 4\)"
    ):
        ops.scaled_dot_product_attention(q, k, v, mask=np.ones((2, 5), bool))
    with pytest.raises(
        ValueError, match=r"incompatible shapes query \(2, 2, 3, 3\), key \(2, 2, 3, 3\)"
    ):
        ops.scaled_dot_product_attention(q, q, v)


# -- MultiHeadAttention ------------------------------------------------------------------
def test_mha_weight_layout(backend):
    mha = layers.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=4, output_shape=6)
    mha(np.zeros((1, 5, 7), np.float32), np.zeros((1, 4, 8), np.float32))
    assert [w.shape for w in mha.weights] == [
        (7, 2, 3),
        (2, 3),
        (8, 2, 3),
        (2, 3),
        (8, 2, 4),
        (2, 4),
        (2, 4, 6),
        (6,),
    ]
    no_bias = layers.MultiHeadAttention(num_heads=2, key_dim=3, use_bias=False)
    out = no_bias(np.zeros((1, 5, 7), np.float32), np.zeros((1, 4, 8), np.float32))
    assert [w.shape for w in no_bias.weights] == [(7, 2, 3), (8, 2, 3), (8, 2, 3), (2, 3, 7)]
    assert out.shape == (1, 5, 7)


@pytest.mark.parametrize("masks", ["none", "attention_mask", "causal", "query+value"])
def test_mha_gradients(backend, masks):
    mha = layers.MultiHeadAttention(
        num_heads=2, key_dim=2, value_dim=3, dtype="float64", bias_initializer="glorot_uniform"
    )
    q, v = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 4, 5))
    kwargs = {}
    if masks == "attention_mask":
        kwargs["attention_mask"] = rng.random((2, 3, 4)) > 0.3
    elif masks == "causal":
        kwargs["use_causal_mask"] = True
    elif masks == "query+value":
        kwargs["query_mask"] = np.array([[1, 1, 0], [1, 0, 1]], bool)
        kwargs["value_mask"] = np.array([[1, 1, 1, 0], [1, 0, 1, 1]], bool)
    value = dlx.Tensor(v)
    check_layer_gradients(_Bound(mha, value, **kwargs), q)
    check_gradients(lambda v: mha(dlx.Tensor(q), v, **kwargs), [v])


class _Bound(layers.Layer):
    """``mha(query, fixed value, **kwargs)`` as a one-input layer for check_layer_gradients."""

    def __init__(self, inner, value, **kwargs):
        super().__init__(dtype="float64")
        self.inner, self.value, self.kwargs = inner, value, kwargs

    def call(self, x, training=False):
        return self.inner(x, self.value, training=training, **self.kwargs)


def test_mha_matches_keras(keras):
    q = rng.normal(size=(2, 4, 6)).astype(np.float32)
    v = rng.normal(size=(2, 5, 3)).astype(np.float32)
    key = rng.normal(size=(2, 5, 4)).astype(np.float32)
    ours = layers.MultiHeadAttention(num_heads=3, key_dim=2, value_dim=4)
    theirs = keras.layers.MultiHeadAttention(num_heads=3, key_dim=2, value_dim=4)
    ours(q, v, key)
    theirs(q, v, key)
    weights = [w + rng.normal(size=w.shape).astype(np.float32) * 0.1 for w in ours.get_weights()]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    mask = rng.random((2, 4, 5)) > 0.3
    for kwargs in (
        {},
        {"attention_mask": mask},
        {"use_causal_mask": True},
        {"attention_mask": mask, "use_causal_mask": True},
    ):
        y, s = ours(q, v, key, return_attention_scores=True, **kwargs)
        yk, sk = theirs(q, v, key, return_attention_scores=True, **kwargs)
        np.testing.assert_allclose(
            dlx.to_numpy(y),
            keras.ops.convert_to_numpy(yk),
            rtol=1e-4,
            atol=1e-5,
            err_msg=str(kwargs),
        )
        np.testing.assert_allclose(
            dlx.to_numpy(s),
            keras.ops.convert_to_numpy(sk),
            rtol=1e-4,
            atol=1e-6,
            err_msg=str(kwargs),
        )


def test_mha_in_functional_model_with_scores_and_dropout(backend):
    x = layers.Input((5, 8))
    mask = layers.Input((5, 5), dtype="bool")
    mha = layers.MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.2)
    y, scores = mha(x, x, attention_mask=mask, return_attention_scores=True)
    assert y.shape == (None, 5, 8) and scores.shape == (None, 2, 5, 5)
    model = dlx.Model([x, mask], [layers.LayerNormalization()(layers.Add()([x, y])), scores])
    xs = rng.normal(size=(3, 5, 8)).astype(np.float32)
    causal = np.broadcast_to(np.tril(np.ones((5, 5), bool)), (3, 5, 5))
    out, p = model.predict([xs, causal], verbose=0)
    assert out.shape == (3, 5, 8)
    p = dlx.to_numpy(p)
    np.testing.assert_allclose(p.sum(-1), 1, rtol=1e-5)
    assert np.all(p[:, :, np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]] < 1e-6)
    model.compile(optimizer="adam", loss=["mse", None])
    model.fit([xs, causal], [xs, np.zeros((3, 2, 5, 5), np.float32)], epochs=1, verbose=0)


def test_mha_get_config_roundtrip():
    mha = layers.MultiHeadAttention(
        num_heads=4, key_dim=8, value_dim=2, dropout=0.1, use_bias=False, output_shape=16
    )
    config = mha.get_config()
    clone = layers.MultiHeadAttention.from_config({**config, "name": "clone"})
    assert {k: v for k, v in clone.get_config().items() if k != "name"} == {
        k: v for k, v in config.items() if k != "name"
    }


def test_mha_bad_input_names_layer_and_shapes(backend):
    mha = layers.MultiHeadAttention(num_heads=2, key_dim=2, name="mha_bad")
    q = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(
        ValueError, match=r"mha_bad.*attention_mask of shape \(2, 3, 5\).*\(2, 3, 3\)"
    ):
        mha(q, q, attention_mask=np.ones((2, 3, 5), bool))
    with pytest.raises(
        ValueError, match=r"mha_bad.*query \(2, 3, 4\), value \(2, 3, 4\), key \(2, 2, 4\)"
    ):
        mha(q, q, np.zeros((2, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"mha_bad.*query and value"):
        mha(q)
    with pytest.raises(ValueError, match=r"mha_bad.*num_heads"):
        layers.MultiHeadAttention(num_heads=0, key_dim=2, name="mha_bad")
    x = layers.Input((3, 4))
    with pytest.raises(ValueError, match=r"attention_mask of shape \(1, 4, 4\)"):
        layers.MultiHeadAttention(2, 2)(x, x, attention_mask=layers.Input((4, 4)))


# -- Attention ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"use_scale": True},
        {"score_mode": "concat"},
        {"score_mode": "concat", "use_scale": True},
    ],
)
def test_attention_layer_gradients(backend, kwargs):
    layer = layers.Attention(dtype="float64", **kwargs)
    q, v = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4))
    layer([q, v])
    for w in layer.trainable_weights:
        w.assign(np.asarray(1.3))
    value = dlx.Tensor(v)
    masks = [
        np.array([[1, 1, 0], [1, 1, 1]], bool),
        np.array([[1, 1, 1, 0, 1], [1, 0, 1, 1, 1]], bool),
    ]

    class Bound(layers.Layer):
        def call(self, x, training=False):
            return layer([x, value], mask=masks, use_causal_mask=True)

    check_layer_gradients(Bound(dtype="float64"), q)
    check_layer_gradients(_AttentionWeights(layer, value), q) if layer.trainable_weights else None


class _AttentionWeights(layers.Layer):
    def __init__(self, inner, value):
        super().__init__(dtype="float64")
        self.inner, self.value = inner, value

    def call(self, x, training=False):
        return self.inner([x, self.value])


def test_attention_layer_matches_keras(keras):
    q = rng.normal(size=(2, 3, 4)).astype(np.float32)
    v = rng.normal(size=(2, 5, 4)).astype(np.float32)
    key = rng.normal(size=(2, 5, 4)).astype(np.float32)
    masks = [
        np.array([[1, 1, 0], [1, 1, 1]], bool),
        np.array([[1, 1, 1, 0, 1], [1, 0, 1, 1, 1]], bool),
    ]
    for kwargs in ({}, {"use_scale": True}, {"score_mode": "concat", "use_scale": True}):
        ours, theirs = layers.Attention(**kwargs), keras.layers.Attention(**kwargs)
        ours([q, v, key])
        theirs([q, v, key])
        weights = [np.asarray(0.7, np.float32) for _ in ours.get_weights()]
        ours.set_weights(weights)
        theirs.set_weights(weights)
        for call_kwargs in ({}, {"mask": masks}, {"use_causal_mask": True}):
            y, s = ours([q, v, key], return_attention_scores=True, **call_kwargs)
            yk, sk = theirs([q, v, key], return_attention_scores=True, **call_kwargs)
            np.testing.assert_allclose(
                dlx.to_numpy(y),
                keras.ops.convert_to_numpy(yk),
                rtol=1e-4,
                atol=1e-5,
                err_msg=f"{kwargs} {call_kwargs}",
            )
            np.testing.assert_allclose(
                dlx.to_numpy(s),
                keras.ops.convert_to_numpy(sk),
                rtol=1e-4,
                atol=1e-5,
                err_msg=f"{kwargs} {call_kwargs}",
            )


def test_attention_layer_bad_input(backend):
    layer = layers.Attention(name="att_bad")
    q = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"att_bad.*\[query, value\]"):
        layer(q)
    with pytest.raises(ValueError, match=r"att_bad.*query \(2, 3, 4\), value \(2, 3, 5\)"):
        layer([q, np.zeros((2, 3, 5), np.float32)])
    with pytest.raises(ValueError, match=r"att_bad.*value mask of shape \(2, 4\)"):
        layer([q, q], mask=[None, np.ones((2, 4), bool)])
    with pytest.raises(ValueError, match="score_mode"):
        layers.Attention(score_mode="additive")


def _attention_model(attention_kwargs):
    x = layers.Input((5, 6))
    mask = layers.Input((5, 5), dtype="bool")
    y, scores = layers.MultiHeadAttention(2, 3)(
        x, x, attention_mask=mask, return_attention_scores=True, use_causal_mask=True
    )
    y = layers.Attention(**attention_kwargs)([layers.Add()([x, y]), x])
    return dlx.Model([x, mask], [layers.GroupNormalization(groups=2)(y), scores])


def _save_load_roundtrip(model, tmp_path):
    if not hasattr(dlx, "load_model") or not hasattr(dlx.Model, "save"):
        pytest.skip("dlx.load_model / Model.save are not available yet")
    data = [rng.normal(size=(2, 5, 6)).astype(np.float32), rng.random((2, 5, 5)) > 0.2]
    expected = model.predict(data, verbose=0)
    model.save(str(tmp_path / "attention.dlx"))
    loaded = dlx.load_model(str(tmp_path / "attention.dlx"))
    for a, b in zip(expected, loaded.predict(data, verbose=0)):
        np.testing.assert_array_equal(dlx.to_numpy(a), dlx.to_numpy(b))


def test_attention_model_save_load(backend, tmp_path):
    _save_load_roundtrip(_attention_model({}), tmp_path)


def test_attention_model_with_scalar_weights_save_load(tmp_path):
    dlx.set_backend("numpy")
    _save_load_roundtrip(_attention_model({"use_scale": True, "score_mode": "concat"}), tmp_path)


def test_mha_padding_masks_match_keras(keras):
    tokens = np.array([[3, 5, 2, 0, 0], [1, 4, 0, 0, 0]])
    ours_emb, theirs_emb = (
        layers.Embedding(6, 4, mask_zero=True),
        keras.layers.Embedding(6, 4, mask_zero=True),
    )
    ours, theirs = layers.MultiHeadAttention(2, 3), keras.layers.MultiHeadAttention(2, 3)
    e = ours_emb(tokens)
    ours(e, e)
    theirs_emb.build((None, 5))
    theirs_emb.set_weights(ours_emb.get_weights())
    ek = theirs_emb(tokens)
    theirs(ek, ek)
    weights = [w + rng.normal(size=w.shape).astype(np.float32) * 0.1 for w in ours.get_weights()]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    # implicit masks from the embedding: padded queries attend to nothing (zeros, as Keras)
    ek = theirs_emb(tokens)  # Keras's MultiHeadAttention removes the mask of its inputs
    y, s = ours(e, e, return_attention_scores=True)
    yk, sk = theirs(ek, ek, return_attention_scores=True)
    np.testing.assert_allclose(
        dlx.to_numpy(y), keras.ops.convert_to_numpy(yk), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        dlx.to_numpy(s), keras.ops.convert_to_numpy(sk), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_array_equal(dlx.to_numpy(y.mask), tokens != 0)
    # an explicit value mask on plain tensors (Keras 3 ignores an explicit query_mask in
    # favour of the query's own mask; dlx honours it, see test_mha_gradients)
    x = rng.normal(size=(2, 5, 4)).astype(np.float32)
    v_mask = np.array([[1, 1, 1, 1, 0], [1, 0, 1, 1, 1]], bool)
    y = ours(x, x, value_mask=v_mask)
    yk = theirs(x, x, value_mask=v_mask)
    np.testing.assert_allclose(
        dlx.to_numpy(y), keras.ops.convert_to_numpy(yk), rtol=1e-4, atol=1e-5
    )
