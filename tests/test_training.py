"""Sequential compile / fit / evaluate / predict, metrics, progress output, errors."""

import io

import numpy as np
import pytest

import dlx
from dlx import callbacks, layers, optimizers

rng = np.random.default_rng(4)


def blobs(n=200, classes=3, features=4, seed=0):
    g = np.random.default_rng(seed)
    centers = g.normal(size=(classes, features)) * 3
    y = g.integers(0, classes, n)
    x = centers[y] + g.normal(size=(n, features))
    return x.astype(np.float32), y


def small_model(classes=3, activation="softmax"):
    return dlx.Sequential(
        [
            layers.Dense(16, activation="relu", input_shape=(4,)),
            layers.Dense(classes, activation=activation),
        ]
    )


def test_fit_learns_and_reports_history(backend):
    x, y = blobs()
    model = small_model()
    model.compile(
        optimizer=optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(x, y, epochs=15, batch_size=16, validation_split=0.2, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["loss"]) == 15
    assert history.history["loss"][-1] < history.history["loss"][0] / 3
    assert history.history["val_accuracy"][-1] > 0.9
    loss, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy > 0.9 and loss < 0.5


def test_predict_returns_backend_arrays(backend):
    x, _ = blobs(50)
    model = small_model()
    out = model.predict(x, batch_size=16, verbose=0)
    assert backend.owns(out) and tuple(out.shape) == (50, 3)
    np.testing.assert_allclose(dlx.to_numpy(out).sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        dlx.to_numpy(model.predict_on_batch(x[:7])), dlx.to_numpy(out)[:7], rtol=1e-6
    )


def test_batch_methods(backend):
    x, y = blobs(32)
    model = small_model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    loss_before, _ = model.test_on_batch(x, y)
    for _ in range(20):
        model.train_on_batch(x, y)
    loss_after, acc = model.test_on_batch(x, y)
    assert loss_after < loss_before and 0 <= acc <= 1
    assert isinstance(model.train_on_batch(x, y, return_dict=True), dict)


def test_evaluate_without_metrics_is_a_float(backend):
    x, y = blobs(40)
    model = small_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert isinstance(model.evaluate(x, y, verbose=0), float)


def test_evaluate_loss_equals_the_mean_loss(backend):
    x, y = blobs(50)
    model = small_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    probs = dlx.to_numpy(model.predict(x, verbose=0)).astype(np.float64)
    expected = -np.log(np.clip(probs[np.arange(50), y], 1e-7, 1)).mean()
    assert np.isclose(model.evaluate(x, y, batch_size=16, verbose=0), expected, rtol=1e-5)


@pytest.mark.parametrize(
    "loss, y_kind, metric_class",
    [
        ("sparse_categorical_crossentropy", "sparse", "SparseCategoricalAccuracy"),
        ("categorical_crossentropy", "onehot", "CategoricalAccuracy"),
        ("binary_crossentropy", "binary", "BinaryAccuracy"),
    ],
)
def test_accuracy_is_chosen_from_the_loss(backend, loss, y_kind, metric_class):
    x, y = blobs(60, classes=3)
    target = {"sparse": y, "onehot": np.eye(3)[y], "binary": np.eye(3)[y]}[y_kind]
    model = small_model(activation="sigmoid" if y_kind == "binary" else "softmax")
    extra = [] if y_kind == "sparse" else ["mae", "mse"]
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy", *extra])
    model.fit(x, target, epochs=1, verbose=0)
    kinds = [type(m).__name__ for _, m in model._metrics]
    assert kinds == [metric_class] + (["MeanAbsoluteError", "MeanSquaredError"] if extra else [])
    logs = model.evaluate(x, target, return_dict=True, verbose=0)
    assert set(logs) == {"loss", "accuracy", *extra}
    pred = dlx.to_numpy(model.predict(x, verbose=0))
    if y_kind == "binary":
        expected = ((pred > 0.5) == target).mean()
    else:
        expected = (pred.argmax(-1) == y).mean()
    assert np.isclose(logs["accuracy"], expected)
    if extra:
        assert np.isclose(logs["mae"], np.abs(pred - target).mean(), rtol=1e-5)
        assert np.isclose(logs["mse"], ((pred - target) ** 2).mean(), rtol=1e-5)


def test_validation_data_and_shuffle_false(backend):
    x, y = blobs(80)
    model = small_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, validation_data=(x[:20], y[:20]), shuffle=False, verbose=0)
    assert len(history.history["val_loss"]) == 2


def test_regularization_penalty_is_part_of_the_loss(backend):
    x, y = blobs(32)
    model = dlx.Sequential(
        [layers.Dense(3, input_shape=(4,), kernel_regularizer=dlx.regularizers.L2(0.5))]
    )
    model.compile(optimizer="sgd", loss=dlx.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain = dlx.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x)).item()
    kernel = model.layers[0].get_weights()[0]
    assert np.isclose(model.test_on_batch(x, y), plain + 0.5 * (kernel**2).sum(), rtol=1e-5)


def test_seeded_training_is_bit_identical():
    def train():
        dlx.set_seed(7)
        x, y = blobs(64)
        model = dlx.Sequential(
            [
                layers.Dense(8, activation="relu", input_shape=(4,)),
                layers.Dropout(0.3),
                layers.Dense(3, activation="softmax"),
            ]
        )
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=3, batch_size=8, verbose=0)
        return model.get_weights()

    for a, b in zip(train(), train()):
        np.testing.assert_array_equal(a, b)


def test_progress_prints_one_line_per_epoch_when_not_a_terminal(backend):
    x, y = blobs(64)
    model = small_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stream = io.StringIO()
    model.fit(
        x,
        y,
        epochs=3,
        batch_size=8,
        verbose=0,
        callbacks=[callbacks.ProgbarLogger(1, stream=stream)],
    )
    lines = stream.getvalue().splitlines()
    assert lines[0] == "Epoch 1/3"
    assert len(lines) == 6 and "\r" not in stream.getvalue()
    assert lines[1].startswith("8/8 [") and "loss: " in lines[1] and "accuracy: " in lines[1]


def test_progress_redraws_in_place_on_a_terminal(backend):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    x, y = blobs(64)
    model = small_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    stream = Terminal()
    model.fit(
        x,
        y,
        epochs=1,
        batch_size=8,
        verbose=0,
        callbacks=[callbacks.ProgbarLogger(1, stream=stream, interval=0)],
    )
    text = stream.getvalue()
    assert text.count("\r") >= 8 and "ETA" in text


def test_verbose_2_prints_epoch_lines(backend, capsys):
    x, y = blobs(32)
    model = small_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=2)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Epoch 1/2" and out[1].startswith("1/1 [") and len(out) == 4


def test_summary_lists_shapes_and_parameters(capsys):
    model = dlx.Sequential(
        [
            layers.Input((784,)),
            layers.Dense(512, activation="relu", name="hidden"),
            layers.Dropout(0.2),
            layers.Dense(10, name="logits"),
        ],
        name="mlp",
    )
    model.summary()
    out = capsys.readouterr().out
    assert 'Model: "mlp"' in out
    assert "hidden (Dense)" in out and "(None, 512)" in out and "401,920" in out
    assert "logits (Dense)" in out and "(None, 10)" in out and "5,130" in out
    assert "Total params: 407,050" in out and "Trainable params: 407,050" in out


def test_nan_loss_stops_fit_with_a_clear_error(backend):
    x, y = blobs(32)
    x[5, 0] = np.nan
    model = small_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(dlx.NonFiniteLossError, match="loss became nan at epoch 1, batch 1"):
        model.fit(x, y, epochs=2, batch_size=32, verbose=0)


def test_terminate_on_nan_stops_quietly(backend):
    x, y = blobs(32)
    model = small_model()
    model.compile(optimizer=optimizers.SGD(learning_rate=1e30), loss="mse")
    history = model.fit(
        x,
        np.eye(3)[y] * 1e30,
        epochs=5,
        batch_size=8,
        verbose=0,
        callbacks=[callbacks.TerminateOnNaN()],
    )
    assert len(history.history["loss"]) == 1


def test_wrong_input_shape_names_the_layer(backend):
    model = small_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"Layer 'dense.*'.*\(None, 4\).*\(5, 6\)"):
        model.predict(np.zeros((5, 6), dtype=np.float32), verbose=0)


def test_label_count_mismatch_is_named(backend):
    x, y = blobs(32)
    model = small_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="x has 32.*y has 30"):
        model.fit(x, y[:30], verbose=0)


def test_labels_out_of_range_are_named(backend):
    x, y = blobs(32)
    model = small_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    y[3] = 9
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\].*got labels in \[0, 9\]"):
        model.fit(x, y, verbose=0)


def test_unknown_names_in_compile():
    model = small_model()
    with pytest.raises(ValueError, match="Unknown optimizer 'adamw2'"):
        model.compile(optimizer="adamw2", loss="mse")
    model.compile(optimizer="adam", loss="msee")
    with pytest.raises(ValueError, match="Unknown loss 'msee'"):
        model.fit(np.zeros((2, 4)), np.zeros((2, 3)), verbose=0)
    model.compile(optimizer="adam", loss="mse", metrics=["acuracy"])
    with pytest.raises(ValueError, match="Unknown metric 'acuracy'"):
        model.fit(np.zeros((2, 4)), np.zeros((2, 3)), verbose=0)


def test_fit_before_compile_is_an_error():
    with pytest.raises(RuntimeError, match="compile"):
        small_model().fit(np.zeros((2, 4)), np.zeros(2), verbose=0)


def test_sample_and_class_weights(backend):
    x, y = blobs(40)
    model = small_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    zero = model.evaluate(x, y, sample_weight=np.zeros(40), verbose=0)
    assert zero == 0.0
    history = model.fit(x, y, class_weight={0: 1.0, 1: 2.0, 2: 0.5}, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_mnist_digits_mlp_reaches_97_percent():
    """The README's first command, as a test: the digits MLP example."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "examples" / "mnist_mlp.py"
    spec = importlib.util.spec_from_file_location("mnist_mlp", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(epochs=30, verbose=0) >= 0.97


def test_xor_example_learns_xor():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "examples" / "xor.py"
    spec = importlib.util.spec_from_file_location("xor_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    predictions = module.main(epochs=500, verbose=False)
    np.testing.assert_array_equal(predictions[:, 0] > 0.5, [False, True, True, False])
