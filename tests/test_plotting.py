"""plot_history / History.plot: loss and metric curves, PNG files, a clear error
without matplotlib."""

import builtins

import numpy as np
import pytest

import dlx
from dlx import layers

HISTORY = {
    "loss": [1.0, 0.6, 0.4],
    "accuracy": [0.5, 0.7, 0.8],
    "val_loss": [1.1, 0.8, 0.7],
    "val_accuracy": [0.4, 0.6, 0.65],
}


def test_plot_history_draws_train_and_validation_curves(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    figure = dlx.plot_history(HISTORY, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    titles = [axes.get_title() for axes in figure.axes]
    assert titles == ["loss", "accuracy"]
    loss_axes = figure.axes[0]
    lines = {line.get_label(): line for line in loss_axes.get_lines()}
    assert set(lines) == {"train", "validation"}
    np.testing.assert_array_equal(lines["train"].get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(lines["validation"].get_ydata(), HISTORY["val_loss"])


def test_history_plot_after_fit(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = dlx.Sequential([layers.Dense(2, activation="softmax", input_shape=(3,))])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, validation_split=0.25, verbose=0)
    figure = history.plot(tmp_path / "h.svg", metrics=["loss"])
    assert [a.get_title() for a in figure.axes] == ["loss"]
    assert (tmp_path / "h.svg").read_text().lstrip().startswith("<?xml")


def test_plot_history_errors():
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="empty"):
        dlx.plot_history({})
    with pytest.raises(ValueError, match=r"\['auc'\] not logged"):
        dlx.plot_history(HISTORY, metrics=["auc"])
    with pytest.raises(TypeError, match="History"):
        dlx.plot_history([1, 2, 3])


def test_missing_matplotlib_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"pip install matplotlib.*dlx\[plot\]"):
        dlx.plot_history(HISTORY)
