"""Callbacks: Keras names, arguments and behaviour."""

import csv
import io
import math
import os
import sys

import numpy as np
import pytest

import dlx
from dlx import callbacks, layers
from dlx.models.saving import ModelFileError


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x[:, 0] - x[:, 1] > 0).astype("int64")
    return x, y


def model(lr=0.01):
    dlx.set_seed(0)
    m = dlx.Sequential(
        [
            layers.Dense(8, activation="relu", input_shape=(4,)),
            layers.Dense(2, activation="softmax"),
        ]
    )
    m.compile(
        optimizer=dlx.optimizers.Adam(lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return m


class Script(callbacks.Callback):
    """Replaces ``monitor`` in the epoch logs by scripted values and records the weights
    each epoch ends with (it must come before the callback under test)."""

    def __init__(self, values, monitor="val_loss"):
        super().__init__()
        self.values, self.monitor, self.weights = list(values), monitor, []

    def on_epoch_end(self, epoch, logs=None):
        logs[self.monitor] = self.values[epoch]
        self.weights.append([w.copy() for w in self.model.get_weights()])


def fit(m, cbs, epochs, **kwargs):
    x, y = data()
    return m.fit(
        x,
        y,
        epochs=epochs,
        batch_size=16,
        validation_split=0.25,
        verbose=0,
        callbacks=cbs,
        **kwargs,
    )


# -- base class and CallbackList ---------------------------------------------------------
def test_hooks_are_called_in_keras_order():
    calls = []

    class Recorder(callbacks.Callback):
        def __getattribute__(self, name):
            attr = object.__getattribute__(self, name)
            if name.startswith("on_") and callable(attr) and "on_batch" not in name:

                def wrapper(*args, **kwargs):
                    calls.append(name)
                    return attr(*args, **kwargs)

                return wrapper
            return attr

    m = model()
    x, y = data(32)
    m.fit(
        x,
        y,
        epochs=1,
        batch_size=16,
        validation_data=(x[:16], y[:16]),
        verbose=0,
        callbacks=[Recorder()],
    )
    assert calls == [
        "on_train_begin",
        "on_epoch_begin",
        "on_train_batch_begin",
        "on_train_batch_end",
        "on_train_batch_begin",
        "on_train_batch_end",
        "on_test_begin",
        "on_test_batch_begin",
        "on_test_batch_end",
        "on_test_end",
        "on_epoch_end",
        "on_train_end",
    ]


def test_base_callback_has_the_keras_hooks_and_batch_aliases():
    names = {n for n in dir(callbacks.Callback) if n.startswith("on_")}
    for phase in ("train", "test", "predict"):
        assert {
            f"on_{phase}_begin",
            f"on_{phase}_end",
            f"on_{phase}_batch_begin",
            f"on_{phase}_batch_end",
        } <= names
    assert {"on_epoch_begin", "on_epoch_end", "on_batch_begin", "on_batch_end"} <= names
    seen = []

    class Old(callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append(batch)

    m = model()
    x, y = data(32)
    m.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[Old()])
    assert seen == [0, 1]


def test_callbacks_must_be_callback_instances():
    m = model()
    x, y = data(16)
    with pytest.raises(TypeError, match="Callback instances"):
        m.fit(x, y, verbose=0, callbacks=[lambda: None])


# -- History -------------------------------------------------------------------------------
def test_history_records_every_epoch(backend):
    m = model()
    history = fit(m, [], epochs=3)
    assert history.epoch == [0, 1, 2]
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(
        len(v) == 3 and all(isinstance(f, float) for f in v) for v in history.history.values()
    )
    assert m.history is history


# -- EarlyStopping ---------------------------------------------------------------------------
def test_early_stopping_restores_the_best_weights(backend):
    m = model()
    script = Script([3.0, 1.0, 2.0, 4.0, 5.0, 6.0])
    stop = callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    history = fit(m, [script, stop], epochs=6)
    assert history.epoch == [0, 1, 2, 3]  # best at epoch 1, two epochs without improvement
    assert stop.stopped_epoch == 3 and stop.best_epoch == 1 and stop.best == 1.0
    for a, b in zip(m.get_weights(), script.weights[1]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(script.weights[1][0], script.weights[3][0])


def test_early_stopping_restores_best_weights_even_when_not_stopped():
    m = model()
    script = Script([3.0, 1.0, 2.0])
    stop = callbacks.EarlyStopping(patience=5, restore_best_weights=True)
    fit(m, [script, stop], epochs=3)
    assert stop.stopped_epoch == 0
    np.testing.assert_array_equal(m.get_weights()[0], script.weights[1][0])


def test_early_stopping_without_restore_keeps_the_last_weights():
    m = model()
    script = Script([1.0, 2.0, 3.0])
    fit(m, [script, callbacks.EarlyStopping(patience=1)], epochs=3)
    np.testing.assert_array_equal(m.get_weights()[0], script.weights[-1][0])


@pytest.mark.parametrize(
    "values, kwargs, epochs_run",
    [
        ([1.0, 0.99, 0.985, 0.984], {"min_delta": 0.02, "patience": 1}, 2),
        ([0.5, 0.6, 0.7, 0.6, 0.5], {"monitor": "val_accuracy", "patience": 2}, 5),
        ([0.5, 0.6, 0.7, 0.6, 0.5, 0.4], {"monitor": "val_accuracy", "patience": 0}, 4),
        ([5.0, 5.0, 5.0, 5.0, 5.0], {"patience": 0, "start_from_epoch": 3}, 5),
        ([2.0, 2.5, 2.6, 2.7], {"baseline": 1.0, "patience": 2}, 2),  # never beat the baseline
        ([2.0, 1.5, 1.2, 1.1], {"baseline": 1.0, "patience": 1}, 4),  # improving: Keras goes on
    ],
)
def test_early_stopping_modes_min_delta_baseline_warmup(values, kwargs, epochs_run):
    monitor = kwargs.get("monitor", "val_loss")
    m = model()
    history = fit(
        m, [Script(values, monitor), callbacks.EarlyStopping(**kwargs)], epochs=len(values)
    )
    assert len(history.epoch) == epochs_run


def test_early_stopping_warns_about_a_missing_metric():
    m = model()
    with pytest.warns(UserWarning, match="'val_los'.*not available.*val_loss"):
        history = fit(m, [callbacks.EarlyStopping(monitor="val_los")], epochs=2)
    assert len(history.epoch) == 2


def test_monitor_arguments_are_checked():
    with pytest.raises(ValueError, match="mode must be"):
        callbacks.EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="patience"):
        callbacks.EarlyStopping(patience=-1)
    assert callbacks.EarlyStopping(monitor="val_accuracy").mode == "max"
    assert callbacks.EarlyStopping(monitor="val_loss").mode == "min"
    assert callbacks.ModelCheckpoint("m.dlx", monitor="auc").mode == "max"


# -- ModelCheckpoint -------------------------------------------------------------------------
def test_model_checkpoint_file_name_template(tmp_path):
    m = model()
    pattern = str(tmp_path / "ckpt" / "epoch{epoch:02d}-loss{loss:.3f}.dlx")
    history = fit(m, [callbacks.ModelCheckpoint(pattern)], epochs=3)
    names = sorted(os.listdir(tmp_path / "ckpt"))
    expected = [
        f"epoch{e + 1:02d}-loss{loss:.3f}.dlx" for e, loss in enumerate(history.history["loss"])
    ]
    assert names == expected
    last = dlx.load_model(tmp_path / "ckpt" / names[-1])
    for a, b in zip(last.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert last.initial_epoch == 3


def test_model_checkpoint_save_best_only(tmp_path):
    m = model()
    script = Script([3.0, 1.0, 2.0, 0.5, 0.7])
    checkpoint = callbacks.ModelCheckpoint(str(tmp_path / "best-{epoch}.dlx"), save_best_only=True)
    fit(m, [script, checkpoint], epochs=5)
    assert sorted(os.listdir(tmp_path)) == ["best-1.dlx", "best-2.dlx", "best-4.dlx"]
    single = callbacks.ModelCheckpoint(
        str(tmp_path / "best.dlx"), save_best_only=True, monitor="val_loss", mode="min"
    )
    m = model()
    script = Script([3.0, 1.0, 2.0, 0.5, 0.7])
    fit(m, [script, single], epochs=5)
    best = dlx.load_model(tmp_path / "best.dlx")
    np.testing.assert_array_equal(best.get_weights()[0], script.weights[3][0])
    assert best.initial_epoch == 4


def test_model_checkpoint_initial_value_threshold(tmp_path):
    m = model()
    checkpoint = callbacks.ModelCheckpoint(
        str(tmp_path / "b{epoch}.dlx"), save_best_only=True, initial_value_threshold=1.5
    )
    fit(m, [Script([3.0, 2.0, 1.0]), checkpoint], epochs=3)
    assert os.listdir(tmp_path) == ["b3.dlx"]


def test_model_checkpoint_save_weights_only(tmp_path):
    m = model()
    fit(m, [callbacks.ModelCheckpoint(str(tmp_path / "w.dlx"), save_weights_only=True)], epochs=2)
    with pytest.raises(ModelFileError, match="holds only weights"):
        dlx.load_model(tmp_path / "w.dlx")
    other = model()
    other.load_weights(tmp_path / "w.dlx")
    np.testing.assert_array_equal(other.get_weights()[0], m.get_weights()[0])


def test_model_checkpoint_every_n_batches(tmp_path):
    m = model()
    checkpoint = callbacks.ModelCheckpoint(str(tmp_path / "e{epoch}-b{batch}.dlx"), save_freq=2)
    fit(m, [checkpoint], epochs=2)  # 48 training samples / 16 = 3 batches per epoch
    assert sorted(os.listdir(tmp_path)) == ["e1-b2.dlx", "e2-b1.dlx", "e2-b3.dlx"]


def test_model_checkpoint_errors(tmp_path):
    with pytest.raises(ValueError, match="save_freq"):
        callbacks.ModelCheckpoint("x.dlx", save_freq="batch")
    m = model()
    with pytest.raises(KeyError, match="val_f1.*not among"):
        fit(m, [callbacks.ModelCheckpoint(str(tmp_path / "{val_f1}.dlx"))], epochs=1)
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError, match="directory"):
        fit(m, [callbacks.ModelCheckpoint(str(tmp_path / "folder"))], epochs=1)


# -- learning rate ---------------------------------------------------------------------------
def test_learning_rate_scheduler(backend):
    m = model(lr=0.1)
    seen = []
    history = fit(
        m,
        [
            callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5),
            callbacks.LambdaCallback(
                on_epoch_begin=lambda e, logs: seen.append(m.optimizer.learning_rate)
            ),
        ],
        epochs=3,
    )
    assert seen == [0.05, 0.025, 0.0125]
    assert history.history["learning_rate"] == [0.05, 0.025, 0.0125]
    m = model()
    fit(m, [callbacks.LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1))], epochs=2)
    assert m.optimizer.learning_rate == pytest.approx(0.05)
    with pytest.raises(ValueError, match="finite float"):
        fit(model(), [callbacks.LearningRateScheduler(lambda e, lr: "fast")], epochs=1)


def test_reduce_lr_on_plateau():
    m = model(lr=0.1)
    reduce = callbacks.ReduceLROnPlateau(factor=0.5, patience=2, min_lr=0.02, cooldown=1)
    history = fit(m, [Script([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]), reduce], epochs=8)
    lrs = history.history["learning_rate"]
    # logged before each epoch's decision: reduced after epochs 2, 4 and 6 (wait 2, cooldown 1),
    # the last time to min_lr instead of 0.0125
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.02])
    assert m.optimizer.learning_rate == pytest.approx(0.02)
    with pytest.raises(ValueError, match="factor >= 1.0"):
        callbacks.ReduceLROnPlateau(factor=1.5)


def test_reduce_lr_on_plateau_resets_on_improvement():
    m = model(lr=0.1)
    fit(m, [Script([1.0, 0.9, 0.8, 0.7]), callbacks.ReduceLROnPlateau(patience=1)], epochs=4)
    assert m.optimizer.learning_rate == pytest.approx(0.1)


# -- CSVLogger ---------------------------------------------------------------------------------
def test_csv_logger_output_parses_with_the_csv_module(backend, tmp_path):
    path = tmp_path / "logs" / "train.csv"
    m = model()
    history = fit(m, [callbacks.CSVLogger(str(path))], epochs=3)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for key, values in history.history.items():
        assert [float(r[key]) for r in rows] == values  # repr(float) round-trips exactly
    # append=True continues the file without a second header
    fit(m, [callbacks.CSVLogger(str(path), append=True)], epochs=2)
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == 1 + 3 + 2 and rows.count(rows[0]) == 1


def test_csv_logger_separator_and_missing_validation(tmp_path):
    path = tmp_path / "t.csv"
    m = model()
    x, y = data(32)
    m.fit(x, y, epochs=2, verbose=0, callbacks=[callbacks.CSVLogger(str(path), separator=";")])
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    assert set(rows[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}
    assert rows[0]["val_loss"] == "NA" and math.isfinite(float(rows[1]["loss"]))


# -- TerminateOnNaN, LambdaCallback, ProgbarLogger ------------------------------------------
def test_terminate_on_nan_stops_quietly(capsys):
    m = model(lr=1e30)
    x, y = data()
    x[5] = np.nan
    history = m.fit(
        x, y, epochs=3, batch_size=16, verbose=0, callbacks=[callbacks.TerminateOnNaN()]
    )
    assert len(history.epoch) == 1 and m.stop_training
    assert "invalid loss" in capsys.readouterr().err


def test_lambda_callback():
    events = []
    cb = callbacks.LambdaCallback(
        on_train_begin=lambda logs: events.append("begin"),
        on_epoch_end=lambda epoch, logs: events.append(("epoch", epoch, round(logs["loss"], 9))),
        on_train_batch_end=lambda batch, logs: events.append("batch"),
        on_train_end=None,
    )
    m = model()
    x, y = data(32)
    history = m.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb])
    assert events == [
        "begin",
        "batch",
        "batch",
        ("epoch", 0, round(history.history["loss"][0], 9)),
        "batch",
        "batch",
        ("epoch", 1, round(history.history["loss"][1], 9)),
    ]
    with pytest.raises(ValueError, match="unknown hook 'on_epoch_finish'"):
        callbacks.LambdaCallback(on_epoch_finish=print)
    with pytest.raises(TypeError, match="callable"):
        callbacks.LambdaCallback(on_epoch_end=3)


def test_progress_bar_lines_in_a_log_file():
    stream = io.StringIO()
    m = model()
    fit(m, [callbacks.ProgbarLogger(1, stream=stream)], epochs=2)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2"
    assert lines[1].startswith("3/3 [====================]") and "val_loss: " in lines[1]
    assert "\r" not in stream.getvalue() and "\033" not in stream.getvalue()


# -- against Keras's own callbacks, driven by the same scripted logs -------------------------
class FakeModel:
    def __init__(self):
        self.stop_training = False
        self.epoch = 0
        self.restored = None
        self.metrics = []
        self.optimizer = type("Opt", (), {"learning_rate": 0.1})()

    def get_weights(self):
        return [np.array([float(self.epoch)])]

    def set_weights(self, weights):
        self.restored = float(weights[0][0])


def drive(cb, values, monitor):
    fake = FakeModel()
    cb.set_model(fake)
    cb.on_train_begin({})
    run, lrs = 0, []
    for epoch, value in enumerate(values):
        fake.epoch = epoch
        cb.on_epoch_begin(epoch, {})
        logs = {monitor: value}
        cb.on_epoch_end(epoch, logs)
        lrs.append(float(fake.optimizer.learning_rate))
        run += 1
        if fake.stop_training:
            break
    cb.on_train_end({})
    return run, fake.restored, lrs


SEQUENCES = [
    [3.0, 1.0, 2.0, 4.0, 5.0, 6.0, 0.5],
    [1.0, 0.99, 0.985, 0.984, 0.9, 0.9],
    [5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0],
    [2.0, 1.5, 1.2, 1.1, 1.0, 0.9],
    [0.2, 0.6, 0.7, 0.6, 0.5, 0.8, 0.8, 0.1],
]
EARLY_STOPPING_ARGS = [
    dict(patience=2, restore_best_weights=True),
    dict(patience=1, min_delta=0.02, restore_best_weights=True),
    dict(patience=0, start_from_epoch=3),
    dict(patience=2, baseline=1.05, restore_best_weights=True),
    dict(monitor="val_accuracy", mode="max", patience=2, restore_best_weights=True),
    dict(monitor="val_accuracy", mode="min", patience=1),
]


@pytest.mark.parametrize("kwargs", EARLY_STOPPING_ARGS)
@pytest.mark.parametrize("values", SEQUENCES)
def test_early_stopping_matches_keras(keras, kwargs, values):
    monitor = kwargs.get("monitor", "val_loss")
    ours = drive(callbacks.EarlyStopping(**kwargs), values, monitor)
    theirs = drive(keras.callbacks.EarlyStopping(**kwargs), values, monitor)
    assert ours[:2] == theirs[:2]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(factor=0.5, patience=2, min_lr=0.02, cooldown=1),
        dict(factor=0.1, patience=1, min_delta=0.05),
        dict(factor=0.2, patience=0, cooldown=2, monitor="val_accuracy", mode="max"),
    ],
)
@pytest.mark.parametrize("values", SEQUENCES)
def test_reduce_lr_on_plateau_matches_keras(keras, kwargs, values):
    monitor = kwargs.get("monitor", "val_loss")
    ours = drive(callbacks.ReduceLROnPlateau(**kwargs), values, monitor)
    theirs = drive(keras.callbacks.ReduceLROnPlateau(**kwargs), values, monitor)
    assert ours[2] == pytest.approx(theirs[2], rel=1e-6)


def test_callbacks_and_checkpoints_example_smoke(tmp_path):
    import importlib.util
    import pathlib

    path = (
        pathlib.Path(__file__).resolve().parent.parent / "examples" / "callbacks_and_checkpoints.py"
    )
    spec = importlib.util.spec_from_file_location("dlx_example_callbacks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dlx.set_backend("numpy")
    history, same = module.main(str(tmp_path), epochs=3, verbose=0)
    assert same and len(history.epoch) == 3
    assert {"best.dlx", "last.dlx", "log.csv", "resume.dlx"} <= set(os.listdir(tmp_path))


def test_progress_bar_redraws_in_a_notebook_without_escape_codes(monkeypatch, capsys):
    import types

    class ZMQInteractiveShell:  # what IPython's get_ipython() returns in a Jupyter kernel
        pass

    monkeypatch.setitem(
        sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: ZMQInteractiveShell())
    )
    m = model()
    x, y = data(64)
    m.fit(
        x, y, epochs=1, batch_size=8, verbose=0, callbacks=[callbacks.ProgbarLogger(1, interval=0)]
    )
    out = capsys.readouterr().out
    assert out.count("\r") >= 8 and "\033" not in out and "ETA" in out
    assert out.endswith("\n") and out.splitlines()[0] == "Epoch 1/1"
