"""SimpleRNN, LSTM, GRU, Bidirectional, TimeDistributed and the fused sequence op.

Gradient checks run in float64 on every test backend; the PyTorch comparisons
(same weights mapped from the Keras layout) run when torch is installed.
"""

import numpy as np
import pytest
from helpers import check_gradients, check_layer_gradients, to_host

import dlx
from dlx import layers
from dlx.ops.recurrent import GENERIC, RecurrentSequence, SequenceSpec, recurrent_sequence

B, T, F, U = 2, 3, 2, 2
MASK = np.array([[True, False, True], [True, True, False]])
CELLS = {"lstm": layers.LSTM, "gru": layers.GRU, "rnn": layers.SimpleRNN}


def _x(shape=(B, T, F), seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _layer(cls, **kwargs):
    kwargs.setdefault("bias_initializer", "random_normal")
    return cls(U, dtype="float64", **kwargs)


# -- gradient checks (float64, every backend) -----------------------------------------

GRAD_CASES = [
    ("lstm", {"return_sequences": True}, False),
    ("lstm", {"go_backwards": True, "return_state": True}, False),
    ("lstm", {"return_sequences": True, "unit_forget_bias": False}, True),
    ("lstm", {"go_backwards": True, "return_sequences": True, "return_state": True}, True),
    ("gru", {"return_sequences": True}, True),
    ("gru", {"go_backwards": True, "return_state": True}, False),
    ("gru", {"reset_after": False, "return_sequences": True}, True),
    ("gru", {"reset_after": False, "go_backwards": True, "return_state": True}, True),
    ("rnn", {"return_sequences": True, "go_backwards": True}, True),
    ("rnn", {"return_state": True, "activation": "relu"}, False),
    ("lstm", {"activation": "softsign", "recurrent_activation": "hard_sigmoid"}, False),
]


@pytest.mark.parametrize("cell, options, masked", GRAD_CASES)
def test_layer_gradients(backend, cell, options, masked):
    dlx.set_floatx("float64")
    layer = _layer(CELLS[cell], **options)
    kwargs = {"mask": dlx.asarray(MASK)} if masked else {}
    check_layer_gradients(layer, _x(), **kwargs)


def test_initial_state_gradients(backend):
    dlx.set_floatx("float64")
    lstm = _layer(layers.LSTM, return_sequences=True)
    lstm(dlx.Tensor(_x()))
    check_gradients(
        lambda x, h, c: lstm(x, initial_state=[h, c]), [_x(), _x((B, U), 1), _x((B, U), 2)]
    )
    gru = _layer(layers.GRU, return_state=True)
    gru(dlx.Tensor(_x()))
    check_gradients(lambda x, h: gru(x, initial_state=h), [_x(), _x((B, U), 3)])


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_gradients(backend, merge_mode):
    dlx.set_floatx("float64")
    inner = _layer(
        layers.SimpleRNN if merge_mode != "concat" else layers.LSTM, return_sequences=True
    )
    layer = layers.Bidirectional(inner, merge_mode=merge_mode, dtype="float64")
    check_layer_gradients(layer, _x(), mask=dlx.asarray(MASK))


def test_bidirectional_return_state_gradients(backend):
    dlx.set_floatx("float64")
    layer = layers.Bidirectional(_layer(layers.GRU, return_state=True), dtype="float64")
    check_layer_gradients(layer, _x())


def test_time_distributed_gradients(backend):
    dlx.set_floatx("float64")
    layer = layers.TimeDistributed(layers.Dense(3, dtype="float64"), dtype="float64")
    check_layer_gradients(layer, _x())


# -- masks: padded steps change neither the state nor the output ----------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_mask_carries_state(backend, cell):
    x = _x((2, 5, 3)).astype("float32")
    layer = CELLS[cell](4, return_sequences=True, return_state=True)
    mask = np.array([[1, 1, 1, 0, 0], [1, 0, 1, 1, 0]], bool)
    seq, *states = layer(x, mask=dlx.asarray(mask))
    seq = to_host(seq)
    # sample 0 is the first three steps followed by padding: same as the truncated run
    short, *short_states = layer(x[:1, :3])
    np.testing.assert_allclose(seq[0, :3], to_host(short)[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(seq[0, 3], seq[0, 2], rtol=0, atol=0)
    np.testing.assert_allclose(seq[0, 4], seq[0, 2], rtol=0, atol=0)
    for s, ss in zip(states, short_states):
        np.testing.assert_allclose(to_host(s)[0], to_host(ss)[0], rtol=1e-5, atol=1e-6)
    # sample 1: a masked step in the middle repeats the previous output
    np.testing.assert_allclose(seq[1, 1], seq[1, 0], rtol=0, atol=0)
    # padded inputs do not matter
    x2 = x.copy()
    x2[0, 3:] = 100.0
    x2[1, 1] = -7.0
    seq2 = to_host(layer(x2, mask=dlx.asarray(mask))[0])
    np.testing.assert_allclose(seq2, seq, rtol=1e-6, atol=1e-6)


def test_mask_from_embedding_in_a_model(backend):
    tokens = np.array([[3, 5, 2, 0, 0], [4, 1, 1, 7, 6]])
    model = dlx.Sequential(
        [
            layers.Embedding(10, 4, mask_zero=True),
            layers.LSTM(3),
        ]
    )
    out = to_host(model.predict_on_batch(tokens))
    short = to_host(model.predict_on_batch(tokens[:1, :3]))
    np.testing.assert_allclose(out[0], short[0], rtol=1e-5, atol=1e-6)


def test_go_backwards_mask_output_order(backend):
    x = _x((1, 4, 2)).astype("float32")
    mask = dlx.asarray(np.array([[1, 1, 0, 0]], bool))
    layer = layers.SimpleRNN(3, go_backwards=True, return_sequences=True)
    seq = to_host(layer(x, mask=mask))
    # processing order is t = 3, 2, 1, 0: the first two steps are padding (zero state)
    np.testing.assert_allclose(seq[0, :2], 0.0, atol=0)
    # then t = 1, 0: the same as a forward layer with the same weights reading x[1], x[0]
    forward = layers.SimpleRNN.from_config(
        {**layer.get_config(), "go_backwards": False, "name": "fw"}
    )
    forward(x)
    forward.set_weights(layer.get_weights())
    np.testing.assert_allclose(seq[0, 2:], to_host(forward(x[:, 1::-1]))[0], rtol=1e-5, atol=1e-6)


# -- agreement with PyTorch (same weights, Keras layout mapped to torch's) -------------


def _torch_module(cell, keras_weights, features, units):
    torch = pytest.importorskip("torch")
    kernel, recurrent, bias = keras_weights

    def reorder(a):  # Keras GRU z, r, h -> torch r, z, n (last axis)
        z, r, h = np.split(a, 3, axis=-1)
        return np.concatenate([r, z, h], axis=-1)

    if cell == "lstm":
        module = torch.nn.LSTM(features, units, batch_first=True)
        b_ih, b_hh = bias, np.zeros_like(bias)
    elif cell == "gru":
        module = torch.nn.GRU(features, units, batch_first=True)
        kernel, recurrent = reorder(kernel), reorder(recurrent)
        b_ih, b_hh = reorder(bias[0]), reorder(bias[1])
    else:
        module = torch.nn.RNN(features, units, batch_first=True)
        b_ih, b_hh = bias, np.zeros_like(bias)
    module = module.double()
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.from_numpy(np.ascontiguousarray(kernel.T)))
        module.weight_hh_l0.copy_(torch.from_numpy(np.ascontiguousarray(recurrent.T)))
        module.bias_ih_l0.copy_(torch.from_numpy(b_ih))
        module.bias_hh_l0.copy_(torch.from_numpy(b_hh))
    return module


def _to_keras_grads(cell, module):
    g = [
        p.grad.numpy()
        for p in (module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0)
    ]
    if cell == "gru":

        def back(a):  # torch r, z, n -> Keras z, r, h
            r, z, h = np.split(a, 3, axis=-1)
            return np.concatenate([z, r, h], axis=-1)

        return [back(g[0].T), back(g[1].T), np.stack([back(g[2]), back(g[3])])]
    return [g[0].T, g[1].T, g[2]]


@pytest.mark.parametrize("kernels", [True, False], ids=["kernels", "generic"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_matches_torch(cell, kernels):
    torch = pytest.importorskip("torch")
    dlx.set_backend("numpy")
    dlx.backends.set_kernels_enabled(kernels)
    dlx.set_floatx("float64")
    features, units = 3, 5
    x = _x((4, 6, features))
    layer = CELLS[cell](units, return_sequences=True, bias_initializer="random_normal")
    xt = dlx.Tensor(x, requires_grad=True)
    y = layer(xt)
    r = np.random.default_rng(5).standard_normal(y.shape)
    (y * dlx.asarray(r)).sum().backward()
    module = _torch_module(cell, layer.get_weights(), features, units)
    xtt = torch.tensor(x, requires_grad=True)
    yt, _ = module(xtt)
    (yt * torch.from_numpy(r)).sum().backward()
    np.testing.assert_allclose(to_host(y), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_host(xt.grad), xtt.grad.numpy(), rtol=1e-9, atol=1e-11)
    for w, expected in zip(layer.weights, _to_keras_grads(cell, module)):
        np.testing.assert_allclose(to_host(w.grad), expected, rtol=1e-9, atol=1e-11, err_msg=w.name)


def test_matches_torch_initial_state_and_float32():
    torch = pytest.importorskip("torch")
    dlx.set_backend("numpy")
    x = _x((3, 7, 4)).astype("float32")
    h0, c0 = _x((3, 6), 1).astype("float32"), _x((3, 6), 2).astype("float32")
    layer = layers.LSTM(6, return_sequences=True, return_state=True)
    seq, h, c = layer(x, initial_state=[h0, c0])
    module = _torch_module("lstm", layer.get_weights(), 4, 6)
    yt, (ht, ct) = module(
        torch.from_numpy(x).double(),
        (torch.from_numpy(h0)[None].double(), torch.from_numpy(c0)[None].double()),
    )
    np.testing.assert_allclose(to_host(seq), yt.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(to_host(h), ht[0].detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(to_host(c), ct[0].detach().numpy(), rtol=1e-4, atol=1e-5)


# -- NumPy kernels compute what the generic loop computes ----------------------------------

KERNEL_CASES = [
    ("lstm", {}),
    ("lstm", {"go_backwards": True, "mask": True}),
    ("lstm", {"recurrent_dropout": True, "return_sequences": False}),
    ("gru", {"mask": True}),
    ("gru", {"go_backwards": True, "recurrent_dropout": True}),
    ("gru", {"reset_after": False, "mask": True, "recurrent_dropout": True}),
    ("gru", {"reset_after": False, "go_backwards": True, "return_sequences": False}),
    ("rnn", {"go_backwards": True, "mask": True, "recurrent_dropout": True}),
    ("rnn", {"return_sequences": False}),
]


def _run_op(cell, kernels, dtype, mask=False, recurrent_dropout=False, **options):
    dlx.set_backend("numpy")
    dlx.backends.set_kernels_enabled(kernels)
    rng = np.random.default_rng(1)
    steps, batch, units = 5, 3, 4
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[cell]

    def tensor(shape, scale=1.0):
        return dlx.Tensor((rng.standard_normal(shape) * scale).astype(dtype), requires_grad=True)

    xproj, u = tensor((steps, batch, gates * units)), tensor((units, gates * units), 0.5)
    rbias = tensor((gates * units,)) if cell == "gru" and options.get("reset_after", True) else None
    h0 = tensor((batch, units))
    c0 = tensor((batch, units)) if cell == "lstm" else None
    spec = SequenceSpec(
        cell,
        mask=dlx.asarray(rng.random((batch, steps)) > 0.3) if mask else None,
        recurrent_mask=dlx.asarray(((rng.random((batch, units)) > 0.3) / 0.7).astype(dtype))
        if recurrent_dropout
        else None,
        **options,
    )
    function = RecurrentSequence(spec)
    inputs = [xproj, u, rbias, h0] + ([c0] if cell == "lstm" else [])
    outs = function(*inputs)
    total = sum((o * dlx.asarray(rng.standard_normal(o.shape).astype(dtype))).sum() for o in outs)
    total.backward()
    is_generic = function.impl is GENERIC[cell] if function.inputs else None
    return [to_host(o) for o in outs] + [
        to_host(t.grad) for t in inputs if t is not None
    ], is_generic


@pytest.mark.parametrize("worker", [False, True], ids=["in-line", "worker"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell, options", KERNEL_CASES)
def test_numpy_kernel_matches_generic(cell, options, dtype, worker, monkeypatch):
    from dlx.backends import numpy_rnn

    if worker:  # hand even these small loops' side work to the worker thread
        monkeypatch.setattr(numpy_rnn, "WORKER_MIN_WORK", 0)
    fast, _ = _run_op(cell, True, dtype, **options)
    slow, _ = _run_op(cell, False, dtype, **options)
    tol = 1e-12 if dtype == "float64" else 2e-5
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.usefixtures("kernels_on")
def test_numpy_kernel_is_used_and_falls_back():
    dlx.set_backend("numpy")
    kernel = dlx.get_backend().kernel("lstm_sequence")
    assert kernel is not None
    xproj = np.zeros((2, 1, 8))
    assert (
        kernel.forward(
            SequenceSpec("lstm", activation="relu"),
            xproj,
            np.zeros((2, 8)),
            None,
            np.zeros((1, 2)),
            np.zeros((1, 2)),
        )
        is None
    )
    # an unsupported activation still works through the generic loop
    y = layers.LSTM(2, activation="relu")(np.ones((1, 3, 2), "float32"))
    assert y.shape == (1, 2)


# -- stateful layers ---------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_stateful_carries_state_and_resets(backend, cell):
    x = _x((2, 6, 3)).astype("float32")
    layer = CELLS[cell](4, stateful=True)
    reference = CELLS[cell].from_config({**layer.get_config(), "stateful": False, "name": "ref"})
    layer(x[:, :3])  # build
    reference(x[:, :3])
    reference.set_weights(layer.get_weights())
    layer.reset_states()
    first = to_host(layer(x[:, :3]))
    second = to_host(layer(x[:, 3:]))
    np.testing.assert_allclose(first, to_host(reference(x[:, :3])), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second, to_host(reference(x)), rtol=1e-5, atol=1e-6)
    layer.reset_states()
    np.testing.assert_allclose(
        to_host(layer(x[:, 3:])), to_host(reference(x[:, 3:])), rtol=1e-5, atol=1e-6
    )
    for s in layer.states:
        assert s.shape == (2, 4)


def test_stateful_in_a_fitted_model(backend):
    model = dlx.Sequential(
        [layers.LSTM(3, stateful=True, input_shape=(4, 2), batch_size=3), layers.Dense(1)]
    )
    model.compile(optimizer="sgd", loss="mse")
    lstm = model.layers[0]
    lstm.reset_states()
    x = _x((3, 4, 2)).astype("float32")
    model.predict_on_batch(x)
    assert np.abs(to_host(lstm.states[0])).sum() > 0
    lstm.reset_states()
    assert np.abs(to_host(lstm.states[0])).sum() == 0
    with pytest.raises(ValueError, match="batch size 3"):
        model.predict_on_batch(x[:2])
    with pytest.raises(AttributeError, match="stateful"):
        layers.LSTM(2).reset_states()


# -- bad input ---------------------------------------------------------------------------


def test_errors_name_layer_and_shapes():
    with pytest.raises(ValueError, match=r"lstm_bad.*3 dimensions.*\(4, 5\)"):
        layers.LSTM(3, name="lstm_bad")(np.zeros((4, 5), "float32"))
    layer = layers.LSTM(3, name="lstm_states")
    x = np.zeros((2, 4, 5), "float32")
    with pytest.raises(ValueError, match=r"lstm_states.*2 state.*got 1"):
        layer(x, initial_state=[np.zeros((2, 3), "float32")])
    with pytest.raises(ValueError, match=r"lstm_states.*initial_state\[1\].*\(2, 4\).*\(2, 3\)"):
        layer(x, initial_state=[np.zeros((2, 3), "float32"), np.zeros((2, 4), "float32")])
    with pytest.raises(ValueError, match=r"lstm_states.*mask of shape \(2, 3\).*\(2, 4\)"):
        layer(x, mask=np.ones((2, 3), bool))
    with pytest.raises(ValueError, match=r"lstm_states.*axis -1 of size 5.*\(2, 4, 6\)"):
        layer(np.zeros((2, 4, 6), "float32"))
    with pytest.raises(ValueError, match="units"):
        layers.GRU(0)
    with pytest.raises(ValueError, match="dropout"):
        layers.SimpleRNN(2, dropout=1.5)
    with pytest.raises(ValueError, match="gelu"):
        layers.LSTM(2, activation="gelu")
    with pytest.raises(ValueError, match="merge_mode"):
        layers.Bidirectional(layers.LSTM(2), merge_mode="max")
    with pytest.raises(ValueError, match="recurrent layer"):
        layers.Bidirectional(layers.Dense(2))


# -- weights, configs, training ----------------------------------------------------------


def test_weight_layouts():
    x = np.zeros((1, 2, 5), "float32")
    shapes = lambda layer: [w.shape for w in layer.get_weights()]  # noqa: E731
    lstm = layers.LSTM(3)
    lstm(x)
    assert shapes(lstm) == [(5, 12), (3, 12), (12,)]
    np.testing.assert_array_equal(lstm.get_weights()[2], [0, 0, 0, 1, 1, 1] + [0] * 6)
    gru = layers.GRU(3)
    gru(x)
    assert shapes(gru) == [(5, 9), (3, 9), (2, 9)]
    gru2 = layers.GRU(3, reset_after=False)
    gru2(x)
    assert shapes(gru2) == [(5, 9), (3, 9), (9,)]
    rnn = layers.SimpleRNN(3, use_bias=False)
    rnn(x)
    assert shapes(rnn) == [(5, 3), (3, 3)]
    bi = layers.Bidirectional(layers.LSTM(3))
    bi(x)
    assert shapes(bi) == [(5, 12), (3, 12), (12,)] * 2
    assert [w.name for w in bi.weights][0].startswith("forward_")


@pytest.mark.parametrize(
    "make",
    [
        lambda: layers.LSTM(
            3,
            return_sequences=True,
            go_backwards=True,
            dropout=0.1,
            recurrent_dropout=0.2,
            kernel_regularizer="l2",
            unit_forget_bias=False,
        ),
        lambda: layers.GRU(
            3, reset_after=False, return_state=True, recurrent_activation="hard_sigmoid"
        ),
        lambda: layers.SimpleRNN(3, activation="relu", stateful=True),
        lambda: layers.Bidirectional(layers.GRU(3, return_sequences=True), merge_mode="ave"),
        lambda: layers.TimeDistributed(layers.Dense(4, activation="relu")),
    ],
)
def test_config_round_trip(make):
    layer = make()
    x = np.random.default_rng(0).random((2, 4, 3)).astype("float32")
    layer(x)
    clone = type(layer).from_config(layer.get_config())
    clone(x)
    clone.set_weights(layer.get_weights())
    assert clone.get_config() == layer.get_config()
    if getattr(layer, "stateful", False):
        layer.reset_states()
        clone.reset_states()
    a, b = layer(x), clone(x)
    a, b = (a if isinstance(a, list) else [a]), (b if isinstance(b, list) else [b])
    for o, p in zip(a, b):
        np.testing.assert_allclose(to_host(o), to_host(p), rtol=1e-6, atol=1e-6)


def test_save_load_model(tmp_path):
    saving = pytest.importorskip("dlx.models.saving", reason="model saving is not in this tree yet")
    load_model = getattr(dlx, "load_model", None) or saving.load_model
    model = dlx.Sequential(
        [
            layers.Input((5,)),
            layers.Embedding(12, 4, mask_zero=True),
            layers.Bidirectional(layers.LSTM(3, return_sequences=True)),
            layers.GRU(2),
            layers.Dense(2),
        ]
    )
    x = np.array([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8]])
    expected = to_host(model.predict_on_batch(x))
    model.save(str(tmp_path / "m.dlx"))
    loaded = load_model(str(tmp_path / "m.dlx"))
    np.testing.assert_allclose(to_host(loaded.predict_on_batch(x)), expected, rtol=1e-6, atol=1e-6)


def test_dropout_only_in_training():
    dlx.set_seed(0)
    layer = layers.LSTM(4, dropout=0.5, recurrent_dropout=0.5, return_sequences=True)
    x = np.ones((3, 5, 2), "float32")
    a, b = to_host(layer(x)), to_host(layer(x))
    np.testing.assert_array_equal(a, b)
    c, d = to_host(layer(x, training=True)), to_host(layer(x, training=True))
    assert not np.allclose(c, a) and not np.allclose(c, d)


def test_functional_model_with_sequence_layers(backend):
    inp = layers.Input((6, 3))
    seq = layers.LSTM(4, return_sequences=True)(inp)
    seq = layers.TimeDistributed(layers.Dense(2))(seq)
    out = layers.Bidirectional(layers.SimpleRNN(3), merge_mode="sum")(seq)
    model = dlx.Model(inp, out)
    assert to_host(model.predict_on_batch(_x((2, 6, 3)).astype("float32"))).shape == (2, 3)


def test_lstm_learns_a_sequence_task():
    """Sum-of-sign classification over 6 steps: a tiny LSTM fits it in a few epochs."""
    dlx.set_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 6, 1)).astype("float32")
    y = (x.sum(axis=(1, 2)) > 0).astype("int64")
    model = dlx.Sequential([layers.Input((6, 1)), layers.LSTM(8), layers.Dense(2)])
    model.compile(
        optimizer=dlx.optimizers.Adam(0.02),
        loss=dlx.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.9


def test_op_level_api():
    dlx.set_backend("numpy")
    xproj = dlx.Tensor(np.random.default_rng(0).standard_normal((3, 2, 8)))
    seq, h, c = dlx.ops.lstm_sequence(xproj, np.eye(2, 8))
    assert seq.shape == (3, 2, 2) and h.shape == (2, 2) and c.shape == (2, 2)
    np.testing.assert_array_equal(to_host(seq)[-1], to_host(h))
    (h,) = dlx.ops.rnn_sequence(xproj[..., :2], np.eye(2), return_sequences=False)
    assert h.shape == (2, 2)
    with pytest.raises(ValueError, match="gru_sequence.*expected last axis 6"):
        recurrent_sequence(SequenceSpec("gru"), xproj, np.eye(2, 6))


def test_lstm_kernel_without_threadpoolctl(monkeypatch):
    """Without threadpoolctl the recurrent-kernel gradient is summed per step: same result."""
    from dlx.backends import blas_threads

    threads_before = [c.num_threads for c in blas_threads.blas_controllers()]
    fast, _ = _run_op("lstm", True, "float64", mask=True, recurrent_dropout=True)
    assert [c.num_threads for c in blas_threads.blas_controllers()] == threads_before
    monkeypatch.setattr(blas_threads, "_CONTROLLERS", [()])
    per_step, _ = _run_op("lstm", True, "float64", mask=True, recurrent_dropout=True)
    slow, _ = _run_op("lstm", False, "float64", mask=True, recurrent_dropout=True)
    for a, b, c in zip(fast, per_step, slow):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(b, c, rtol=1e-12, atol=1e-12)


# -- pooled buffers of the NumPy kernels ---------------------------------------------------


def test_buffer_pool_hands_out_only_unreferenced_buffers():
    from dlx.backends.buffer_pool import pooled

    def address(a):
        return a.__array_interface__["data"][0]

    first = pooled((300, 300), "float32")
    second = pooled((300, 300), "float32")
    assert address(first) != address(second)
    kept_view, first_address = first[1:], address(first)
    del first  # the view still holds it
    third = pooled((300, 300), "float32")
    assert address(third) != first_address
    del kept_view, third  # now nothing references the first buffer: it comes back
    assert address(pooled((300, 300), "float32")) == first_address


def _lstm_stack_run(kernels, x, seed):
    """Two stacked LSTM layers (large enough for pooled buffers): outputs and gradients."""
    dlx.set_backend("numpy")
    dlx.backends.set_kernels_enabled(kernels)
    dlx.set_seed(seed)
    first = layers.LSTM(
        32, return_sequences=True, bias_initializer="random_normal", dtype="float64"
    )
    second = layers.GRU(32, return_sequences=True, go_backwards=True, dtype="float64")
    xt = dlx.Tensor(x, requires_grad=True)
    y = second(first(xt))
    (y * dlx.asarray(np.cos(np.arange(y.size)).reshape(y.shape))).sum().backward()
    weights = first.weights + second.weights
    return [y.value, xt.grad] + [w.grad for w in weights]


def test_numpy_kernel_results_survive_later_calls():
    """Arrays returned by one call (outputs, gradients) are not overwritten by the next."""
    xs = [_x((40, 30, 8), seed) for seed in (1, 2)]
    kept = [_lstm_stack_run(True, x, seed) for seed, x in enumerate(xs)]
    kept_copies = [[np.array(a) for a in run] for run in kept]
    for seed, x in enumerate(xs):
        expected = _lstm_stack_run(False, x, seed)
        for a, copy, b in zip(kept[seed], kept_copies[seed], expected):
            np.testing.assert_array_equal(a, copy)
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("split", [True, False], ids=["split", "blas"])
@pytest.mark.parametrize("contiguous, x_grad", [(True, False), (True, True), (False, True)])
def test_sequence_projection_matches_generic(contiguous, x_grad, split, monkeypatch):
    from dlx.backends import numpy_rnn
    from dlx.backends.numpy_rnn import SequenceProjection

    from dlx.ops.recurrent import sequence_projection

    monkeypatch.setattr(SequenceProjection, "split", split)
    monkeypatch.setattr(numpy_rnn, "WORKER_MIN_WORK", 0)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 40, 7) if contiguous else (40, 30, 7))
    if not contiguous:  # a batch-major view of a time-major array, as between stacked layers
        x = x.transpose(1, 0, 2)
    kernel, bias = rng.standard_normal((7, 12)), rng.standard_normal(12)
    g = rng.standard_normal((40, 30, 12))
    results = []
    for kernels in (True, False):
        dlx.set_backend("numpy")
        dlx.backends.set_kernels_enabled(kernels)
        tensors = [dlx.Tensor(a, requires_grad=True) for a in (x, kernel, bias)]
        tensors[0].requires_grad = x_grad
        y = sequence_projection(*tensors)
        (y * dlx.asarray(g)).sum().backward()
        results.append([to_host(y)] + [to_host(t.grad) for t in tensors[not x_grad :]])
    assert (tensors[0].grad is None) != x_grad
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    expected = np.einsum("btf,fg->tbg", x, kernel) + bias
    np.testing.assert_allclose(results[0][0], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", ["SimpleRNN", "LSTM", "GRU"])
def test_building_a_sequential_model_leaves_stateful_state_alone(cell):
    """Sequential.build runs a zero probe to find output shapes: it is not data, so a
    stateful layer's carried state is the same as if only the real batch had run."""
    x = np.random.default_rng(3).normal(size=(2, 3, 4)).astype(np.float32)

    built_layer = getattr(dlx.layers, cell)(5, stateful=True, bias_initializer="ones")
    built = dlx.Sequential([dlx.layers.Input(batch_shape=(2, 3, 4)), built_layer])
    built.build((2, 3, 4))  # the probe
    assert built_layer.states is None or not np.any(dlx.to_numpy(built_layer.states[0]))
    built.predict(x, verbose=0)

    direct_layer = getattr(dlx.layers, cell)(5, stateful=True)
    direct_layer.build((2, 3, 4))
    direct_layer.set_weights(built_layer.get_weights())
    direct_layer(dlx.asarray(x))
    for a, b in zip(built_layer.states, direct_layer.states):
        np.testing.assert_allclose(dlx.to_numpy(a), dlx.to_numpy(b), rtol=1e-6)
