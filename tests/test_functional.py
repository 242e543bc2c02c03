"""Functional and subclassed models: several inputs and outputs, shared layers, a loss and a
loss weight per output, dict inputs/outputs, nested and frozen sub-models, summary, errors."""

import numpy as np
import pytest
from helpers import check_gradients

import dlx
from dlx import layers

rng = np.random.default_rng(2)


def _two_in_two_out():
    a = layers.Input((4,), name="a")
    b = layers.Input((3,), name="b")
    shared = layers.Dense(5, activation="tanh", name="shared")
    h = layers.Concatenate(name="joined")(
        [shared(layers.Dense(4, name="pa")(a)), shared(layers.Dense(4, name="pb")(b))]
    )
    reg = layers.Dense(1, name="reg")(h)
    cls = layers.Dense(3, activation="softmax", name="cls")(h)
    return dlx.Model([a, b], [reg, cls], name="two_by_two")


def _data(n=24):
    return (
        [rng.normal(size=(n, 4)).astype(np.float32), rng.normal(size=(n, 3)).astype(np.float32)],
        [rng.normal(size=(n, 1)).astype(np.float32), rng.integers(0, 3, n)],
    )


def test_multi_input_multi_output_fit_with_loss_weights(backend):
    dlx.set_seed(0)
    model = _two_in_two_out()
    assert model.output_names == ["reg", "cls"] and model.input_names == ["a", "b"]
    model.compile(
        optimizer="adam",
        loss=["mse", "sparse_categorical_crossentropy"],
        loss_weights=[0.5, 2.0],
        metrics=[[], ["accuracy"]],
    )
    x, y = _data()
    total, reg_loss, cls_loss, acc = model.evaluate(x, y, batch_size=24, verbose=0)
    assert np.isclose(total, 0.5 * reg_loss + 2.0 * cls_loss, rtol=1e-5)
    assert 0 <= acc <= 1
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert set(history.history) == {"loss", "reg_loss", "cls_loss", "cls_accuracy"}
    assert history.history["loss"][-1] < history.history["loss"][0]
    reg, cls = model.predict(x, verbose=0)
    assert reg.shape == (24, 1) and cls.shape == (24, 3)


def test_dict_losses_inputs_and_outputs(backend):
    dlx.set_seed(0)
    model = _two_in_two_out()
    model.compile(
        optimizer="sgd",
        loss={"reg": "mse", "cls": "sparse_categorical_crossentropy"},
        loss_weights={"cls": 0.0},
    )
    x, y = _data()
    xd, yd = {"a": x[0], "b": x[1]}, {"reg": y[0], "cls": y[1]}
    total, reg_loss, _ = model.evaluate(xd, yd, verbose=0)
    assert np.isclose(total, reg_loss, rtol=1e-5)  # cls weighted by zero
    model.fit(xd, yd, epochs=1, batch_size=12, verbose=0)
    with pytest.raises(ValueError, match=r"outputs are \['reg', 'cls'\]: missing \['cls'\]"):
        model.evaluate(xd, {"reg": y[0]}, verbose=0)

    inp = layers.Input((4,), name="features")
    out = {"mean": layers.Dense(2, name="m")(inp), "scale": layers.Dense(1, name="s")(inp)}
    dict_model = dlx.Model({"features": inp}, out)
    assert dict_model.output_names == ["mean", "scale"]
    dict_model.compile(optimizer="sgd", loss={"mean": "mse", "scale": "mae"})
    xs = rng.normal(size=(10, 4)).astype(np.float32)
    dict_model.fit(
        {"features": xs},
        {"mean": np.zeros((10, 2)), "scale": np.ones((10, 1))},
        epochs=1,
        verbose=0,
    )
    predicted = dict_model.predict({"features": xs}, batch_size=4, verbose=0)
    assert set(predicted) == {"mean", "scale"} and predicted["mean"].shape == (10, 2)


def test_shared_layer_weights_once_and_gradients_from_both_uses(backend):
    dlx.set_floatx("float64")
    a, b = layers.Input((3,)), layers.Input((3,))
    shared = layers.Dense(2, activation="tanh")
    model = dlx.Model([a, b], layers.Subtract()([shared(a), shared(b)]))
    assert len(model.weights) == 2 and model.count_params() == 8
    xa, xb = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    check_gradients(lambda a, b: model([a, b]), [xa, xb])
    kernel = shared.kernel
    assert kernel.grad is not None  # check_gradients' backward reached the weights too
    model.zero_grad()
    assert kernel.grad is None
    out = model([xa, xb])
    (out * out).sum().backward()
    # the kernel gradient sums both paths: compare with finite differences through the model
    k0 = dlx.to_numpy(kernel.value)

    def loss_of(k):
        kernel.value = dlx.asarray(k)
        with dlx.no_grad():
            o = dlx.to_numpy(model([xa, xb]))
        kernel.value = dlx.asarray(k0)
        return float((o * o).sum())

    from helpers import numeric_gradient

    np.testing.assert_allclose(
        dlx.to_numpy(kernel.grad), numeric_gradient(loss_of, [k0], 0), rtol=1e-5, atol=1e-7
    )


def test_nested_and_frozen_sub_model(backend):
    dlx.set_seed(0)
    inner_in = layers.Input((4,))
    encoder = dlx.Model(inner_in, layers.Dense(3, name="enc_dense")(inner_in), name="encoder")
    x_in = layers.Input((4,))
    model = dlx.Model(x_in, layers.Dense(1, name="head")(encoder(x_in)))
    assert len(model.trainable_weights) == 4
    encoder.trainable = False
    assert len(model.trainable_weights) == 2 and len(model.weights) == 4
    model.compile(optimizer="adam", loss="mse")
    x = rng.normal(size=(16, 4)).astype(np.float32)
    # copies: on NumPy get_weights() may share memory with the live weights
    frozen = [w.copy() for w in encoder.get_weights()]
    head = [w.copy() for w in model.get_layer("head").get_weights()]
    model.fit(x, np.ones((16, 1), np.float32), epochs=2, batch_size=8, verbose=0)
    for before, after in zip(frozen, encoder.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert not np.allclose(head[0], model.get_layer("head").get_weights()[0])
    encoder.trainable = True
    assert len(model.trainable_weights) == 4
    model.fit(x, np.ones((16, 1), np.float32), epochs=1, batch_size=8, verbose=0)
    assert not np.allclose(frozen[0], encoder.get_weights()[0])


def test_explicit_training_flag_in_graph_is_kept(backend):
    inp = layers.Input((3,))
    out = layers.Dropout(0.5)(inp, training=False)  # always inference, even in fit
    model = dlx.Model(inp, out)
    x = np.ones((4, 3), np.float32)
    np.testing.assert_array_equal(dlx.to_numpy(model(x, training=True)), x)


class Residual(dlx.Model):
    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.hidden = layers.Dense(units, activation="relu")
        self.norm = layers.BatchNormalization()
        self.out = layers.Dense(1)
        self.skip = layers.Dense(1, use_bias=False)

    def call(self, x, training=False):
        h = self.norm(self.hidden(x), training=training)
        return self.out(h) + self.skip(x)


def test_subclassed_model_fit_evaluate_predict(backend):
    dlx.set_seed(0)
    model = Residual()
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    x = rng.normal(size=(32, 4)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5], [0.0]], np.float32)
    history = model.fit(x, y, epochs=5, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert len(model.trainable_weights) == 7 and len(model.weights) == 9
    loss, mae = model.evaluate(x, y, verbose=0)
    assert np.isfinite(loss) and np.isfinite(mae)
    assert model.predict(x, verbose=0).shape == (32, 1)
    lines = []
    model.summary(print_fn=lines.append)
    assert any("batch_normalization" in line for line in lines)


def test_subclassed_model_inside_functional_model(backend):
    inp = layers.Input((4,))
    sub = Residual(units=3)
    model = dlx.Model(inp, layers.Dense(2)(sub(inp)))
    model.compile(optimizer="sgd", loss="mse")
    model.fit(rng.normal(size=(8, 4)), np.zeros((8, 2)), epochs=1, verbose=0)
    assert len(model.weights) == len(sub.weights) + 2


def test_summary_shows_graph(backend):
    model = _two_in_two_out()
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Connected to" in text
    assert "a (InputLayer)" in text and "(None, 4)" in text
    assert "joined (Concatenate)" in text and "shared[0][0], shared[1][0]" in text
    assert "(None, 10)" in text and "(shared)" in text
    assert f"Total params: {model.count_params():,}" in text


def test_functional_model_errors(backend):
    a, b = layers.Input((4,), name="in_a"), layers.Input((4,), name="in_b")
    with pytest.raises(ValueError, match=r"do not depend only on.*in_a.*dense_free.*'in_b'"):
        dlx.Model(a, layers.Dense(2, name="dense_free")(b))
    with pytest.raises(ValueError, match=r"do not depend on input\(s\) \['in_b'\]"):
        dlx.Model([a, b], layers.Dense(2)(a))
    with pytest.raises(TypeError, match="layers.Input"):
        dlx.Model(a, np.zeros((1, 2)))
    model = dlx.Model([a, b], layers.Add()([a, b]))
    with pytest.raises(ValueError, match=r"expects 2 inputs \['in_a', 'in_b'\], got 1"):
        model(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"in_b.*expects shape \(None, 4\), got \(2, 5\)"):
        model([np.zeros((2, 4)), np.zeros((2, 5))])
    with pytest.raises(ValueError, match=r"missing \['in_b'\]"):
        model({"in_a": np.zeros((2, 4))})
    shared = layers.Dense(3, name="shared_dense")
    shared(layers.Input((4,)))
    with pytest.raises(ValueError, match=r"shared_dense.*\(None, 4\).*\(1, 5\)"):
        shared(layers.Input((5,)))
    model.compile(optimizer="sgd", loss=["mse", "mse"])
    two = _two_in_two_out()
    with pytest.raises(ValueError, match=r"3 losses.*2 outputs"):
        two.compile(optimizer="sgd", loss=["mse", "mse", "mse"])
        two.evaluate(*_data(), verbose=0)


@dlx.register_serializable
class ScaledSum(layers.Layer):
    """A layer taking two tensors as separate positional arguments: ``2 a + b``."""

    def call(self, a, b):
        return a * 2.0 + b


def test_layer_called_on_several_symbolic_positional_tensors(backend, tmp_path):
    a, b = layers.Input((3,)), layers.Input((3,))
    summed = ScaledSum()(a, b)
    assert summed.shape == (None, 3)
    model = dlx.Model([a, b], layers.Dense(2)(summed))
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    dense = model.layers[-1]
    kernel, bias = (dlx.to_numpy(w) for w in dense.get_weights())
    expected = (2 * x1 + x2) @ kernel + bias
    predicted = dlx.to_numpy(model.predict([x1, x2], verbose=0))
    np.testing.assert_allclose(predicted, expected, rtol=1e-5)

    path = tmp_path / "spread.dlx"
    model.save(path)
    loaded = dlx.load_model(path)
    np.testing.assert_allclose(
        dlx.to_numpy(loaded.predict([x1, x2], verbose=0)), expected, rtol=1e-5
    )

    model.compile(optimizer="sgd", loss="mse")
    before = model.evaluate([x1, x2], np.zeros((4, 2)), verbose=0)
    model.fit([x1, x2], np.zeros((4, 2)), epochs=5, verbose=0)
    assert model.evaluate([x1, x2], np.zeros((4, 2)), verbose=0) < before


def test_symbolic_and_plain_positional_arguments_do_not_mix(backend):
    a = layers.Input((3,))
    with pytest.raises(TypeError, match=r"ScaledSum.*every positional argument must be one"):
        ScaledSum()(np.ones((1, 3), np.float32), a)
