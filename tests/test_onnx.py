"""ONNX export: every exported model runs in ONNX Runtime and matches ``model.predict``."""

import subprocess
import sys

import numpy as np
import pytest

import dlx
from dlx import layers

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from dlx.onnx import UnsupportedLayerError  # noqa: E402

RTOL, ATOL = 1e-5, 1e-5


def randomize(model, seed=0):
    """Random weights everywhere (biases and BN statistics too, so no term is trivially 0)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        new = [(rng.standard_normal(w.shape) * 0.5).astype(w.dtype) for w in weights]
        if type(layer).__name__ == "BatchNormalization":
            new[-1] = np.abs(new[-1]) + 0.5  # moving variance
        layer.set_weights(new)


def run_onnx(path, xs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: x for i, x in zip(session.get_inputs(), xs)}
    return session.run(None, feeds)


def check(model, xs, tmp_path, randomize_weights=True, **export_kwargs):
    """Export ``model``, run it in ONNX Runtime on ``xs`` and compare with predict."""
    xs = xs if isinstance(xs, list) else [xs]
    path = tmp_path / "model.onnx"
    if isinstance(model, dlx.Sequential) and not model.built:
        model.build((None,) + xs[0].shape[1:])
    if randomize_weights:
        randomize(model)
    proto = dlx.onnx.export(model, path, **export_kwargs)
    onnx.checker.check_model(proto, full_check=True)  # strict shape inference too
    got = run_onnx(path, xs)
    expected = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    expected = expected if isinstance(expected, list) else [expected]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        e = dlx.to_numpy(e)
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)
    return path


def normal(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------------------
# dense, activations, shapes


ACTIVATION_NAMES = [
    "relu",
    "sigmoid",
    "tanh",
    "softmax",
    "log_softmax",
    "elu",
    "selu",
    "gelu",
    "leaky_relu",
    "relu6",
    "hard_sigmoid",
    "hard_silu",
    "softplus",
    "softsign",
    "silu",
    "mish",
    "exponential",
    "linear",
]


def test_mlp_with_every_activation(tmp_path):
    dlx.set_seed(0)
    model = dlx.Sequential(
        [layers.Input((6,))]
        + [layers.Dense(6, activation=name) for name in ACTIVATION_NAMES]
        + [layers.Activation("gelu"), layers.Dropout(0.5), layers.Dense(3)]
    )
    x = normal(7, 6) * 3
    check(model, x, tmp_path)


def test_dense_on_3d_inputs_reshape_flatten_and_dynamic_batch(tmp_path):
    dlx.set_seed(0)
    model = dlx.Sequential(
        [
            layers.Dense(8, activation="relu", use_bias=False, input_shape=(4, 5)),
            layers.Reshape((8, 4)),
            layers.Reshape((-1, 2)),
            layers.Flatten(),
            layers.Dense(2, activation="softmax"),
        ]
    )
    path = check(model, normal(3, 4, 5), tmp_path)
    for batch in (1, 9):  # the batch axis is dynamic
        x = normal(batch, 4, 5, seed=batch)
        np.testing.assert_allclose(
            run_onnx(path, [x])[0], model.predict(x, verbose=0), rtol=RTOL, atol=ATOL
        )


def test_unbuilt_sequential_is_built_from_input_shape(tmp_path):
    dlx.set_seed(0)
    model = dlx.Sequential([layers.Dense(4, activation="tanh"), layers.Dense(2)])
    path = tmp_path / "m.onnx"
    dlx.onnx.export(model, path, input_shape=(3,))
    x = normal(5, 3)
    np.testing.assert_allclose(
        run_onnx(path, [x])[0], model.predict(x, verbose=0), rtol=RTOL, atol=ATOL
    )


# ---------------------------------------------------------------------------
# convolution and pooling


def test_cnn_2d_same_padding_strides_bn_pools(tmp_path):
    dlx.set_seed(0)
    model = dlx.Sequential(
        [
            layers.Conv2D(
                4, 3, strides=2, padding="same", activation="relu", input_shape=(9, 10, 2)
            ),
            layers.BatchNormalization(),
            layers.Conv2D(6, (2, 3), padding="same", dilation_rate=2),
            layers.MaxPooling2D(2, padding="same"),
            layers.AveragePooling2D(2, strides=1, padding="same"),
            layers.AveragePooling2D((2, 1)),
            layers.Conv2D(6, 1, groups=2, activation="gelu"),
            layers.GlobalMaxPooling2D(keepdims=True),
            layers.Flatten(),
            layers.Dense(3, activation="softmax"),
        ]
    )
    check(model, normal(3, 9, 10, 2), tmp_path)


def test_conv1d_causal_and_conv3d_and_global_average(tmp_path):
    dlx.set_seed(0)
    model = dlx.Sequential(
        [
            layers.Conv1D(5, 3, padding="causal", dilation_rate=2, input_shape=(11, 3)),
            layers.Conv1D(4, 4, strides=3, padding="same", activation="elu"),
            layers.MaxPooling1D(2, padding="same"),
            layers.GlobalAveragePooling1D(),
        ]
    )
    check(model, normal(2, 11, 3), tmp_path)
    model = dlx.Sequential(
        [
            layers.Conv3D(3, 2, strides=(1, 2, 1), padding="same", input_shape=(4, 5, 6, 2)),
            layers.AveragePooling3D(2, padding="same"),
            layers.MaxPooling3D((1, 2, 2)),
            layers.GlobalAveragePooling3D(),
        ]
    )
    check(model, normal(2, 4, 5, 6, 2), tmp_path)


def test_channels_first_convolution_pooling_and_flatten(tmp_path):
    dlx.set_seed(0)
    model = dlx.Sequential(
        [
            layers.Conv2D(
                4, 3, padding="same", data_format="channels_first", input_shape=(2, 7, 6)
            ),
            layers.MaxPooling2D(2, padding="same", data_format="channels_first"),
            layers.Conv2DTranspose(3, 2, strides=2, data_format="channels_first"),
            layers.GlobalAveragePooling2D(data_format="channels_first", keepdims=True),
            layers.Flatten(data_format="channels_first"),
        ]
    )
    check(model, normal(2, 2, 7, 6), tmp_path)
    model = dlx.Sequential(
        [
            layers.Conv2D(3, 2, data_format="channels_first", input_shape=(2, 5, 4)),
            layers.Flatten(data_format="channels_first"),
        ]
    )
    check(model, normal(2, 2, 5, 4), tmp_path)


@pytest.mark.parametrize(
    "cls,shape",
    [
        (layers.Conv1DTranspose, (7, 3)),
        (layers.Conv2DTranspose, (5, 6, 3)),
        (layers.Conv3DTranspose, (3, 4, 3, 2)),
    ],
)
def test_transposed_convolutions(cls, shape, tmp_path):
    dlx.set_seed(0)
    x = normal(2, *shape)
    for padding in ("valid", "same"):
        for strides, kernel, output_padding in [
            (1, 3, None),
            (2, 3, None),
            (3, 2, None),
            (2, 4, None),
            (2, 3, 1),
        ]:
            model = dlx.Sequential(
                [
                    cls(
                        4,
                        kernel,
                        strides=strides,
                        padding=padding,
                        output_padding=output_padding,
                        activation="relu",
                        input_shape=shape,
                    )
                ]
            )
            check(model, x, tmp_path)
    model = dlx.Sequential([cls(2, 3, dilation_rate=2, padding="same", input_shape=shape)])
    check(model, x, tmp_path)


def test_zero_padding(tmp_path):
    dlx.set_seed(0)
    model = dlx.Sequential(
        [layers.ZeroPadding2D(((1, 2), (0, 3)), input_shape=(4, 5, 2)), layers.Conv2D(2, 3)]
    )
    check(model, normal(2, 4, 5, 2), tmp_path)


def test_depthwise_separable_cropping_upsampling(tmp_path):
    dlx.set_seed(0)
    model = dlx.Sequential(
        [
            layers.Input((9, 8, 3)),
            layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu"),
            layers.SeparableConv2D(4, (3, 2), strides=2, depth_multiplier=2, padding="same"),
            layers.Cropping2D(((1, 0), (0, 1))),
            layers.UpSampling2D((2, 3)),
            layers.DepthwiseConv2D(2, use_bias=False),
        ]
    )
    check(model, normal(2, 9, 8, 3), tmp_path)
    model = dlx.Sequential(
        [
            layers.Input((10, 3)),
            layers.SeparableConv1D(4, 3, activation="tanh"),
            layers.DepthwiseConv1D(2, strides=2, padding="same"),
            layers.Cropping1D((2, 1)),
            layers.UpSampling1D(3),
            layers.ZeroPadding1D(2),
        ]
    )
    check(model, normal(2, 10, 3), tmp_path)
    model = dlx.Sequential(
        [
            layers.Input((2, 6, 5)),
            layers.Cropping2D(((0, 2), (1, 1)), data_format="channels_first"),
            layers.UpSampling2D(2, data_format="channels_first"),
            layers.DepthwiseConv2D(3, data_format="channels_first"),
        ]
    )
    check(model, normal(2, 2, 6, 5), tmp_path)
    model = dlx.Sequential(
        [
            layers.Input((4, 5, 3, 2)),
            layers.Cropping3D(((1, 0), (0, 2), (1, 1))),
            layers.UpSampling3D((1, 2, 3)),
            layers.ZeroPadding3D(1),
        ]
    )
    check(model, normal(2, 4, 5, 3, 2), tmp_path)


def test_group_normalization(tmp_path):
    dlx.set_seed(0)
    model = dlx.Sequential(
        [
            layers.Input((4, 5, 6)),
            layers.GroupNormalization(groups=3),
            layers.GroupNormalization(groups=-1, center=False),
            layers.GroupNormalization(groups=2, axis=1, scale=False),
        ]
    )
    check(model, normal(2, 4, 5, 6) * 3 + 1, tmp_path)


# ---------------------------------------------------------------------------
# embeddings and recurrent layers


def test_bidirectional_and_time_distributed(tmp_path):
    dlx.set_seed(0)
    inp = layers.Input((6, 4))
    outs = [
        layers.Bidirectional(layers.LSTM(3, return_sequences=True))(inp),
        layers.Bidirectional(layers.GRU(2), merge_mode="sum")(inp),
        layers.Bidirectional(layers.SimpleRNN(2, return_sequences=True), merge_mode="ave")(inp),
        layers.Bidirectional(layers.GRU(2), merge_mode="mul")(inp),
        layers.TimeDistributed(layers.Dense(3, activation="relu"))(inp),
    ]
    pair = layers.Bidirectional(layers.LSTM(2, return_state=True), merge_mode=None)(inp)
    outs.extend(pair)
    check(dlx.Model(inp, outs), normal(3, 6, 4), tmp_path)
    model = dlx.Sequential(
        [
            layers.Input((5, 6, 6, 1)),
            layers.TimeDistributed(layers.Conv2D(2, 3)),
            layers.TimeDistributed(layers.Flatten()),
            layers.LSTM(3),
        ]
    )
    check(model, normal(2, 5, 6, 6, 1), tmp_path)


@pytest.mark.parametrize("cell", ["SimpleRNN", "LSTM", "GRU"])
def test_recurrent_layers(cell, tmp_path):
    dlx.set_seed(0)
    cls = getattr(layers, cell)
    tokens = np.random.default_rng(3).integers(0, 12, (4, 7)).astype(np.float32)
    for kwargs in (
        {},
        {"return_sequences": True},
        {"go_backwards": True},
        {"go_backwards": True, "return_sequences": True},
        {"use_bias": False},
    ):
        model = dlx.Sequential([layers.Embedding(12, 5), cls(6, **kwargs)])
        model.build((None, 7))
        check(model, tokens, tmp_path)


def test_recurrent_variants(tmp_path):
    dlx.set_seed(0)
    x = normal(3, 6, 4)
    for layer in (
        layers.GRU(5, reset_after=False),
        layers.LSTM(5, activation="relu", recurrent_activation="hard_sigmoid"),
        layers.SimpleRNN(5, activation="softsign"),
        layers.GRU(5, activation="linear", recurrent_activation="sigmoid"),
    ):
        model = dlx.Sequential([layers.Input((6, 4)), layer])
        check(model, x, tmp_path)


def padded_tokens(batch=4, steps=7, vocab=12, seed=3):
    """Token ids with zero padding at the end, at the start and in the middle."""
    tokens = np.random.default_rng(seed).integers(1, vocab, (batch, steps))
    tokens[0, 4:] = 0
    tokens[1, :3] = 0
    tokens[2, 2] = tokens[2, 5] = 0
    return tokens.astype(np.float32)


@pytest.mark.parametrize("cell", ["SimpleRNN", "LSTM", "GRU"])
def test_masked_recurrent_layers(cell, tmp_path):
    dlx.set_seed(0)
    cls = getattr(layers, cell)
    tokens = padded_tokens()
    for kwargs in ({}, {"return_sequences": True, "go_backwards": True}, {"return_state": True}):
        inp = layers.Input((7,))
        x = layers.Embedding(12, 5, mask_zero=True)(inp)
        x = layers.Dropout(0.1)(x)  # passes the mask on
        out = cls(4, **kwargs)(x)
        check(dlx.Model(inp, out), tokens, tmp_path)
    if cell == "GRU":
        model = dlx.Sequential(
            [
                layers.Input((7,)),
                layers.Embedding(12, 5, mask_zero=True),
                layers.GRU(3, reset_after=False, return_sequences=True),
                layers.GRU(2),
            ]
        )
        check(model, tokens, tmp_path)


def test_masking_layer_and_unrolled_activations(tmp_path):
    dlx.set_seed(0)
    x = normal(3, 6, 4)
    x[0, 4:] = 0.0
    x[1, :2] = 0.0
    model = dlx.Sequential(
        [
            layers.Input((6, 4)),
            layers.Masking(),
            layers.LSTM(3, return_sequences=True),
            layers.SimpleRNN(3, activation="selu"),
        ]
    )
    check(model, x, tmp_path)
    for layer in (
        layers.LSTM(3, activation="relu6", recurrent_activation="exponential"),
        layers.GRU(3, activation="selu"),
    ):
        check(dlx.Sequential([layers.Input((6, 4)), layer]), x * 0.3, tmp_path)


def test_masks_reach_attention_and_bidirectional(tmp_path):
    dlx.set_seed(0)
    inp = layers.Input((7,))
    emb = layers.Embedding(12, 8, mask_zero=True)(inp)
    att = layers.MultiHeadAttention(2, 4)(emb, emb)
    seq = layers.Bidirectional(layers.LSTM(3, return_sequences=True))(emb)
    dot = layers.Attention()([seq, seq])
    last = layers.Bidirectional(layers.GRU(2))(emb)
    check(dlx.Model(inp, [att, dot, last]), padded_tokens(), tmp_path)


def test_stacked_recurrent_model_with_states(tmp_path):
    dlx.set_seed(0)
    inp = layers.Input((5, 3))
    seq, h, c = layers.LSTM(4, return_sequences=True, return_state=True)(inp)
    out, state = layers.GRU(4, return_state=True)(seq)
    merged = layers.Concatenate()([out, state, h, c])
    model = dlx.Model(inp, [merged, layers.Dense(2)(out)])
    check(model, normal(3, 5, 3), tmp_path)


def test_variable_length_sequences(tmp_path):
    dlx.set_seed(0)
    model = dlx.Sequential(
        [
            layers.Input((None, 3)),
            layers.Conv1D(4, 3, strides=2, padding="same"),  # pads found at run time
            layers.MaxPooling1D(2, padding="same"),
            layers.Conv1D(3, 2, padding="causal"),
            layers.LSTM(4, return_sequences=True),
            layers.GRU(2),
        ]
    )
    randomize(model)
    path = tmp_path / "m.onnx"
    dlx.onnx.export(model, path)
    for steps in (5, 9, 12):
        x = normal(2, steps, 3, seed=steps)
        np.testing.assert_allclose(
            run_onnx(path, [x])[0], model.predict(x, verbose=0), rtol=RTOL, atol=ATOL
        )


# ---------------------------------------------------------------------------
# attention, normalization, merges, functional graphs


def test_transformer_block(tmp_path):
    dlx.set_seed(0)
    inp = layers.Input((6, 8))
    attn = layers.MultiHeadAttention(2, 4, value_dim=3, output_shape=8)
    x = attn(inp, inp, use_causal_mask=True)
    x = layers.LayerNormalization(epsilon=1e-5)(layers.Add()([inp, x]))
    ff = layers.Dense(8)(layers.Dense(16, activation="gelu")(x))
    x = layers.LayerNormalization()(layers.Add()([x, ff]))
    out = layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling1D()(x))
    check(dlx.Model(inp, out), normal(4, 6, 8), tmp_path)


def test_cross_attention_with_scores_masks_and_key(tmp_path):
    dlx.set_seed(0)
    q, v, k = layers.Input((4, 6)), layers.Input((5, 3)), layers.Input((5, 2))
    m = layers.Input((4, 5))
    qm, vm = layers.Input((4,)), layers.Input((5,))
    out, scores = layers.MultiHeadAttention(3, 2, use_bias=False)(
        q, v, key=k, attention_mask=m, return_attention_scores=True
    )
    out2 = layers.MultiHeadAttention(2, 3)(q, v, query_mask=qm, value_mask=vm)
    model = dlx.Model([q, v, k, m, qm, vm], [out, scores, out2])
    rng = np.random.default_rng(5)
    mask = (rng.random((2, 4, 5)) > 0.3).astype(np.float32)
    mask[:, :, 0] = 1
    qmask = np.array([[1, 1, 0, 1], [1, 0, 1, 1]], np.float32)
    vmask = np.array([[1, 1, 1, 0, 0], [1, 0, 1, 1, 1]], np.float32)
    xs = [normal(2, 4, 6), normal(2, 5, 3), normal(2, 5, 2), mask, qmask, vmask]
    check(model, xs, tmp_path)


def test_attention_layer(tmp_path):
    dlx.set_seed(0)
    q, v, k = layers.Input((4, 6)), layers.Input((5, 3)), layers.Input((5, 6))
    dot, dot_scores = layers.Attention(use_scale=True)([q, v, k], return_attention_scores=True)
    concat = layers.Attention(score_mode="concat", use_scale=True)([q, v, k])
    selfatt = layers.Attention()([q, q], use_causal_mask=True)
    model = dlx.Model([q, v, k], [dot, dot_scores, concat, selfatt])
    check(model, [normal(2, 4, 6), normal(2, 5, 3), normal(2, 5, 6)], tmp_path)


def test_normalization_axes(tmp_path):
    dlx.set_seed(0)
    model = dlx.Sequential(
        [
            layers.Input((3, 4, 5)),
            layers.LayerNormalization(axis=[1, 2]),
            layers.LayerNormalization(axis=[-2, -1], center=False),
            layers.LayerNormalization(scale=False),
            layers.BatchNormalization(axis=1),
            layers.BatchNormalization(axis=[2, 3], center=False, scale=False),
        ]
    )
    check(model, normal(3, 3, 4, 5) * 2 + 1, tmp_path)


def test_merge_layers_and_nested_models(tmp_path):
    dlx.set_seed(0)
    a, b, c = layers.Input((4,)), layers.Input((4,)), layers.Input((1,))
    inner = dlx.Sequential([layers.Dense(4, activation="tanh", input_shape=(4,)), layers.Dense(4)])
    ea = inner(a)
    outs = [
        layers.Add()([ea, b, a]),
        layers.Subtract()([a, b]),
        layers.Multiply()([a, b, c]),
        layers.Average()([a, b, ea]),
        layers.Maximum()([a, b, ea]),
        layers.Minimum()([a, b]),
        layers.Concatenate()([a, b, ea]),
        layers.Dot(axes=1)([a, b]),
        layers.Dot(axes=1, normalize=True)([a, ea]),
    ]
    model = dlx.Model([a, b, c], outs)
    randomize(inner, seed=3)
    check(
        model,
        [normal(5, 4, seed=1), normal(5, 4, seed=2), normal(5, 1, seed=3)],
        tmp_path,
        randomize_weights=False,
    )


def test_dot_on_sequences(tmp_path):
    dlx.set_seed(0)
    x, y = layers.Input((3, 4)), layers.Input((5, 4))
    model = dlx.Model([x, y], layers.Dot(axes=(2, 2))([x, y]))
    check(model, [normal(2, 3, 4), normal(2, 5, 4)], tmp_path)


def test_export_of_a_model_trained_on_any_backend(backend, tmp_path):
    dlx.set_seed(0)
    model = dlx.Sequential(
        [
            layers.Input((5,)),
            layers.Dense(4, activation="relu"),
            layers.BatchNormalization(),
            layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    x = normal(16, 5)
    model.fit(x, x[:, :1], epochs=2, batch_size=8, verbose=0)
    check(model, x, tmp_path, randomize_weights=False)


def test_output_and_input_names(tmp_path):
    dlx.set_seed(0)
    inp = layers.Input((3,), name="features")
    model = dlx.Model(inp, layers.Dense(2, name="logits")(inp))
    proto = dlx.onnx.export(model, tmp_path / "m.onnx")
    assert [i.name for i in proto.graph.input] == ["features"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    proto = dlx.onnx.export(model, None, input_names=["x"], output_names=["y"])
    assert [i.name for i in proto.graph.input] == ["x"]
    assert [o.name for o in proto.graph.output] == ["y"]


def test_opset_18_reduce_axes_as_inputs(tmp_path):
    dlx.set_seed(0)
    model = dlx.Sequential(
        [layers.Input((5, 3)), layers.LayerNormalization(axis=1), layers.GlobalMaxPooling1D()]
    )
    check(model, normal(2, 5, 3), tmp_path, opset=18)


# ---------------------------------------------------------------------------
# errors


def test_unsupported_layer_is_named(tmp_path):
    class Clip(layers.Layer):  # a user layer: its call() is Python, no converter
        def call(self, x):
            return dlx.ops.minimum(x, 1.0)

    model = dlx.Sequential([layers.Input((4, 3)), layers.Flatten(), Clip(name="clip")])
    with pytest.raises(UnsupportedLayerError, match=r"'clip' \(Clip\): no ONNX converter"):
        dlx.onnx.export(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    assert issubclass(UnsupportedLayerError, NotImplementedError)


def test_unsupported_activation_and_mask_and_state_are_named():
    model = dlx.Sequential(
        [layers.Input((3,)), layers.Dense(2, activation=lambda x: x, name="odd")]
    )
    with pytest.raises(UnsupportedLayerError, match="'odd' \\(Dense\\): activation"):
        dlx.onnx.export(model)
    model = dlx.Sequential(
        [layers.Input((None,)), layers.Embedding(9, 3, mask_zero=True), layers.LSTM(2, name="rnn")]
    )
    with pytest.raises(UnsupportedLayerError, match="'rnn' \\(LSTM\\).*mask.*time steps"):
        dlx.onnx.export(model)
    model = dlx.Sequential(
        [layers.Input((None, 2)), layers.SimpleRNN(2, activation="selu", name="srnn")]
    )
    with pytest.raises(UnsupportedLayerError, match="'srnn' \\(SimpleRNN\\).*selu"):
        dlx.onnx.export(model)
    model = dlx.Sequential(
        [layers.Input((5, 2), batch_size=2), layers.GRU(2, stateful=True, name="carry")]
    )
    with pytest.raises(UnsupportedLayerError, match="'carry' \\(GRU\\): stateful"):
        dlx.onnx.export(model)


def test_subclassed_model_and_custom_layer_are_refused():
    class Custom(layers.Layer):
        def call(self, x):
            return x * 2

    model = dlx.Sequential([layers.Input((3,)), Custom(name="custom")])
    with pytest.raises(UnsupportedLayerError, match="'custom' \\(Custom\\)"):
        dlx.onnx.export(model)

    class Net(dlx.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(2)

        def call(self, x, training=False):
            return self.dense(x)

    with pytest.raises(UnsupportedLayerError, match="subclassed"):
        dlx.onnx.export(Net(), input_shape=(3,))


def test_register_converter_for_a_custom_layer(tmp_path):
    from dlx.onnx import CONVERTERS, register_converter

    class Double(layers.Layer):
        def call(self, x):
            return x * 2

    @register_converter("Double")
    def convert_double(layer, inputs, ctx):
        return ctx.op("Mul", [inputs[0].name, ctx.scalar(2.0)], "double")

    try:
        model = dlx.Sequential([layers.Input((3,)), Double(), layers.Dense(2)])
        check(model, normal(4, 3), tmp_path)
    finally:
        CONVERTERS.pop("Double")


def test_unbuilt_sequential_without_input_shape_is_an_error():
    with pytest.raises(ValueError, match="input_shape"):
        dlx.onnx.export(dlx.Sequential([layers.Dense(2)]))


def test_importing_dlx_does_not_import_onnx():
    code = (
        "import sys, dlx; import dlx.onnx; "
        "assert 'onnx' not in sys.modules and 'onnxruntime' not in sys.modules, "
        "sorted(m for m in sys.modules if 'onnx' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_export_example(tmp_path):
    pytest.importorskip("sklearn")
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "export_onnx.py"
    spec = importlib.util.spec_from_file_location("export_onnx_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    accuracy, onnx_accuracy, max_diff = example.main(tmp_path / "m.onnx", epochs=1, verbose=False)
    assert max_diff < 1e-5 and abs(accuracy - onnx_accuracy) < 0.01


def test_shared_layer_weights_are_stored_once(tmp_path):
    dlx.set_seed(0)
    inp = layers.Input((4,))
    shared = layers.Dense(4, activation="tanh")
    model = dlx.Model(inp, shared(shared(inp)))
    proto = check(model, normal(3, 4), tmp_path)
    proto = onnx.load(str(proto))
    kernels = [i for i in proto.graph.initializer if list(i.dims) == [4, 4]]
    assert len(kernels) == 1


def test_integer_token_inputs(tmp_path):
    dlx.set_seed(0)
    model = dlx.Sequential([layers.Input((5,)), layers.Embedding(10, 4), layers.GRU(3)])
    randomize(model)
    tokens = np.random.default_rng(2).integers(0, 10, (3, 5))
    expected = model.predict(tokens.astype(np.float32), verbose=0)
    for dtype in ("int64", "int32"):
        path = tmp_path / f"{dtype}.onnx"
        dlx.onnx.export(model, path, input_dtype=dtype)
        got = run_onnx(path, [tokens.astype(dtype)])[0]
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_fixed_length_export_of_a_model_built_for_any_length(tmp_path):
    dlx.set_seed(0)
    model = dlx.Sequential(
        [layers.Input((None,)), layers.Embedding(12, 4, mask_zero=True), layers.LSTM(3)]
    )
    randomize(model)
    path = tmp_path / "m.onnx"
    dlx.onnx.export(model, path, input_shape=(7,))  # a mask needs the unrolled loop
    assert model.input_shape == (None, None)  # the model itself is left as it was
    tokens = padded_tokens()
    np.testing.assert_allclose(
        run_onnx(path, [tokens])[0], model.predict(tokens, verbose=0), rtol=RTOL, atol=ATOL
    )
    with pytest.raises(ValueError, match="does not match"):
        dlx.onnx.export(model, None, input_shape=(7, 2))


def test_fixed_length_export_of_a_functional_model(tmp_path):
    dlx.set_seed(0)
    inp = layers.Input((None,))
    x = layers.Embedding(12, 8, mask_zero=True)(inp)
    x = layers.MultiHeadAttention(2, 4)(x, x)
    out = layers.GRU(3)(layers.Conv1D(8, 3, strides=2, padding="same")(x))
    model = dlx.Model(inp, [out, layers.LSTM(2)(x)])
    randomize(model)
    path = tmp_path / "m.onnx"
    dlx.onnx.export(model, path, input_shape=(7,))
    tokens = padded_tokens()
    for got, expected in zip(run_onnx(path, [tokens]), model.predict(tokens, verbose=0)):
        np.testing.assert_allclose(got, dlx.to_numpy(expected), rtol=RTOL, atol=ATOL)
