"""Callbacks (Keras names, arguments and hooks).

``fit`` calls, in order: ``on_train_begin``, then per epoch ``on_epoch_begin``,
``on_train_batch_begin``/``on_train_batch_end`` per batch, the validation pass
(``on_test_begin``/``on_test_end``), ``on_epoch_end(epoch, logs)``, and finally
``on_train_end``. ``logs`` maps metric names (``loss``, ``val_accuracy``...) to floats.
A callback stops training by setting ``self.model.stop_training = True``.

Built in: :class:`History` and :class:`ProgbarLogger` (added by ``fit``),
:class:`EarlyStopping`, :class:`ModelCheckpoint`, :class:`LearningRateScheduler`,
:class:`ReduceLROnPlateau`, :class:`CSVLogger`, :class:`TerminateOnNaN` and
:class:`LambdaCallback`.

Files: ``ModelCheckpoint`` writes model files (see ``dlx.models.saving``) or
weights files, each crash-safely (temporary file, fsync, rename); ``CSVLogger``
writes one CSV row per epoch (header ``epoch,<sorted metric names>``).
"""

import csv
import io
import math
import os
import sys
import time
import warnings

from .io import atomic_write


class Callback:
    """Base class: override any of the ``on_*`` hooks; ``self.model`` is the model being
    trained and ``self.params`` holds ``epochs``, ``steps`` and ``verbose``."""

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_batch_begin(self, batch, logs=None): ...  # Keras's older names for the train hooks
    def on_batch_end(self, batch, logs=None): ...

    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs=logs)

    def on_test_begin(self, logs=None): ...
    def on_test_end(self, logs=None): ...
    def on_test_batch_begin(self, batch, logs=None): ...
    def on_test_batch_end(self, batch, logs=None): ...
    def on_predict_begin(self, logs=None): ...
    def on_predict_end(self, logs=None): ...
    def on_predict_batch_begin(self, batch, logs=None): ...
    def on_predict_batch_end(self, batch, logs=None): ...


class CallbackList(Callback):
    """Forwards every hook to each callback in order, always passing ``logs``
    (``on_epoch_end(epoch, logs)``, ``on_train_begin(logs)``...) as Keras does."""

    def __init__(self, callbacks, model=None, params=None):
        super().__init__()
        self.callbacks = list(callbacks or [])
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be Callback instances, got {type(cb).__name__}")
            cb.set_model(model)
            cb.set_params(params or {})


def _forward(name, indexed):
    if indexed:

        def hook(self, index, logs=None):
            for cb in self.callbacks:
                getattr(cb, name)(index, logs)

    else:

        def hook(self, logs=None):
            for cb in self.callbacks:
                getattr(cb, name)(logs)

    hook.__name__ = name
    return hook


for _name in [n for n in vars(Callback) if n.startswith("on_")]:
    setattr(CallbackList, _name, _forward(_name, "epoch" in _name or "batch" in _name))
del _name


class History(Callback):
    """Records ``logs`` of every epoch: ``history.history["loss"]`` is a list of floats."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
        if self.model is not None:
            self.model._completed_epochs = epoch + 1  # recorded in saved models (resume)

    def plot(self, path=None, metrics=None):
        """Draw loss and metric curves (needs matplotlib); save to ``path`` if given."""
        from .plotting import plot_history

        return plot_history(self, path, metrics)


def _format_logs(logs):
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


def _format_duration(seconds):
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{seconds:.0f}s"


class ProgbarLogger(Callback):
    """Keras-style progress: ``Epoch 1/5`` then ``32/32 [=====] 1s 3ms/step - loss: ...``.

    On a terminal or in a Jupyter notebook (``verbose=1``) the bar redraws in
    place at most every ``interval`` seconds; when output is not a terminal (a
    file, a CI log) or ``verbose=2`` it prints one plain line per epoch, without
    carriage returns or escape codes.
    """

    def __init__(self, verbose=1, stream=None, interval=0.1):
        super().__init__()
        self.verbose = verbose
        self.stream = stream
        self.interval = interval

    def _out(self):
        return self.stream or sys.stdout

    def _interactive(self):
        out = self._out()
        if self.verbose != 1:
            return False
        return bool(getattr(out, "isatty", None) and out.isatty()) or self._notebook()

    def _notebook(self):
        """Writing to stdout inside a Jupyter kernel (it honours ``\\r`` but not all escapes)."""
        if self.stream is not None and self.stream is not sys.stdout:
            return False
        shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
        return type(shell).__name__ == "ZMQInteractiveShell"

    def _redraw(self, line, end=""):
        # erase the rest of the previous, possibly longer, line
        if self._notebook():
            padding = " " * max(getattr(self, "_last_length", 0) - len(line), 0)
            self._out().write("\r" + line + padding + end)
        else:
            self._out().write("\r" + line + "\033[K" + end)
        self._last_length = 0 if end else len(line)
        self._out().flush()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = self.last_draw = time.perf_counter()
        self.steps = self.params.get("steps")
        if self.verbose:
            epochs = self.params.get("epochs", "?")
            print(f"Epoch {epoch + 1}/{epochs}", file=self._out(), flush=True)

    def on_train_batch_end(self, batch, logs=None):
        if not self._interactive():
            return
        now = time.perf_counter()
        if now - self.last_draw < self.interval and (self.steps is None or batch + 1 < self.steps):
            return
        self.last_draw = now
        done = batch + 1
        elapsed = now - self.epoch_start
        if self.steps:
            eta = elapsed / done * (self.steps - done)
            timing = f"ETA: {_format_duration(eta)}"
        else:
            timing = _format_duration(elapsed)
        line = f"{self._bar(done)} {timing}"
        if logs:
            line += " - " + _format_logs(logs)
        self._redraw(line)

    def _bar(self, done, width=20):
        total = self.steps or done
        filled = int(width * done / total) if total else width
        bar = "=" * max(filled - 1, 0) + (">" if filled < width else "=") + "." * (width - filled)
        digits = len(str(total))
        return f"{done:{digits}d}/{total} [{bar[:width]}]"

    def on_epoch_end(self, epoch, logs=None):
        if not self.verbose:
            return
        elapsed = time.perf_counter() - self.epoch_start
        steps = self.steps or 1
        per_step = elapsed / steps
        line = f"{self._bar(steps)} {_format_duration(elapsed)} {per_step * 1000:.0f}ms/step"
        if logs:
            line += " - " + _format_logs(logs)
        if self._interactive():
            self._redraw(line, end="\n")
        else:
            self._out().write(line + "\n")
            self._out().flush()


class TerminateOnNaN(Callback):
    """Stops training (without raising) when a batch loss is NaN or infinite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: invalid loss {loss}, terminating training", file=sys.stderr)
            self.model.stop_training = True
            self.model.stopped_on_nan = True


class LambdaCallback(Callback):
    """A callback built from functions, e.g. ``LambdaCallback(on_epoch_end=lambda e, logs: ...)``.

    Any hook name of :class:`Callback` may be given (``on_epoch_begin``,
    ``on_epoch_end``, ``on_train_begin``, ``on_train_end``, ``on_train_batch_begin``,
    ``on_train_batch_end``, ...); hooks given as None are left out.
    """

    def __init__(self, **hooks):
        super().__init__()
        for name, fn in hooks.items():
            if not name.startswith("on_") or not hasattr(Callback, name):
                raise ValueError(
                    f"LambdaCallback: unknown hook {name!r}; hooks are "
                    f"{sorted(n for n in dir(Callback) if n.startswith('on_'))}"
                )
            if fn is None:
                continue
            if not callable(fn):
                raise TypeError(f"LambdaCallback: {name} must be callable, got {fn!r}")
            setattr(self, name, fn)


# -- callbacks that watch one logged quantity -------------------------------------------
_MAXIMIZED = ("acc", "auc", "precision", "recall", "f1", "iou", "r2")


class _MonitorCallback(Callback):
    """Shared logic of callbacks that watch ``monitor`` (Keras's MonitorCallback).

    ``mode="auto"`` minimizes losses and errors and maximizes accuracy-like
    quantities (names containing acc, auc, precision, recall, f1, iou, r2).
    A value improves on ``reference`` when it is better by more than ``min_delta``.
    """

    def __init__(self, monitor="val_loss", mode="auto", baseline=None, min_delta=0):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(
                f"{type(self).__name__}: mode must be 'auto', 'min' or 'max', got {mode!r}"
            )
        if not isinstance(monitor, str):
            raise TypeError(
                f"{type(self).__name__}: monitor must be a metric name, got {monitor!r}"
            )
        self.monitor, self.best, self.min_delta = monitor, baseline, abs(min_delta)
        if mode == "auto":
            name = monitor.removeprefix("val_").lower()
            mode = "max" if any(tag in name for tag in _MAXIMIZED) else "min"
        self.mode = mode

    def _is_improvement(self, current, reference):
        if reference is None:
            return True
        if self.mode == "min":
            return current + self.min_delta < reference
        return current - self.min_delta > reference

    def _monitor_value(self, logs, what):
        value = (logs or {}).get(self.monitor)
        if value is None:
            warnings.warn(
                f"{type(self).__name__}: {what} is conditioned on metric {self.monitor!r}, "
                f"which is not available. Available metrics are: {', '.join(sorted(logs or {}))}",
                stacklevel=3,
            )
            return None
        return float(value)


def _weights_copy(model):
    """Copies of the weights: on NumPy ``get_weights`` may hand out the live arrays,
    which the optimizer then updates in place."""
    return [w.copy() for w in model.get_weights()]


class EarlyStopping(_MonitorCallback):
    """Stop training when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights=True`` the model ends with the weights of the best
    epoch seen (whether or not training stopped early). ``baseline``: training
    stops unless the quantity beats it within ``patience`` epochs.
    ``start_from_epoch``: epochs of warm-up during which nothing is monitored.
    """

    def __init__(
        self,
        monitor="val_loss",
        min_delta=0,
        patience=0,
        verbose=0,
        mode="auto",
        baseline=None,
        restore_best_weights=False,
        start_from_epoch=0,
    ):
        super().__init__(monitor, mode, min_delta=min_delta)
        if not isinstance(patience, int) or patience < 0:
            raise ValueError(
                f"EarlyStopping: patience must be a non-negative int, got {patience!r}"
            )
        self.patience, self.verbose, self.baseline = patience, verbose, baseline
        self.restore_best_weights, self.start_from_epoch = restore_best_weights, start_from_epoch
        self.wait = self.stopped_epoch = self.best_epoch = 0
        self.best_weights = None

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.best, self.best_weights = None, None

    def on_epoch_end(self, epoch, logs=None):
        current = self._monitor_value(logs, "early stopping")
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = _weights_copy(self.model), epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = _weights_copy(self.model)
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                best = self.best_epoch + 1
                print(f"Restoring model weights from the end of the best epoch: {best}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(_MonitorCallback):
    """Save the model (or its weights) during training, crash-safely.

    Args:
        filepath: where to save; may hold ``{epoch}`` (1-based), ``{batch}`` and any
            logged metric, e.g. ``"ckpt/epoch{epoch:02d}-{val_loss:.3f}.dlx"``.
        monitor, mode: the quantity ``save_best_only`` compares (as in EarlyStopping).
        save_best_only: only save when ``monitor`` improved (the file is then the best model).
        save_weights_only: ``model.save_weights`` instead of ``model.save`` (the full
            save also stores optimizer state, epoch and random state, for exact resume).
        save_freq: ``"epoch"`` or a number of batches between saves.
        initial_value_threshold: the value ``monitor`` must beat for the first save.

    Each file is written to a temporary name, fsynced and renamed, so a crash during
    a save leaves the previous checkpoint intact. A model restored from an epoch-end
    checkpoint with ``dlx.load_model`` continues exactly with
    ``fit(..., initial_epoch=model.initial_epoch)``.
    """

    def __init__(
        self,
        filepath,
        monitor="val_loss",
        verbose=0,
        save_best_only=False,
        save_weights_only=False,
        mode="auto",
        save_freq="epoch",
        initial_value_threshold=None,
    ):
        super().__init__(monitor, mode, baseline=initial_value_threshold)
        self.filepath = os.fspath(filepath)
        self.verbose, self.save_best_only = verbose, save_best_only
        self.save_weights_only = save_weights_only
        if save_freq != "epoch" and not (isinstance(save_freq, int) and save_freq > 0):
            raise ValueError(
                f"ModelCheckpoint: save_freq must be 'epoch' or a positive number of batches, "
                f"got {save_freq!r}"
            )
        self.save_freq = save_freq
        self._batches_since_save = 0
        self._current_epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        self._batches_since_save += 1
        if self._batches_since_save >= self.save_freq:
            self._batches_since_save = 0
            self._save(self._current_epoch, batch, logs, completed_epochs=self._current_epoch)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, None, logs, completed_epochs=epoch + 1)

    def _file_path(self, epoch, batch, logs):
        values = dict(logs or {})
        values["epoch"] = epoch + 1
        if batch is not None:
            values["batch"] = batch + 1
        try:
            return self.filepath.format(**values)
        except KeyError as error:
            raise KeyError(
                f"ModelCheckpoint: cannot fill filepath {self.filepath!r}: {error} is not among "
                f"epoch, batch and the logged metrics {sorted(logs or {})}"
            ) from None
        except (ValueError, IndexError) as error:
            raise ValueError(
                f"ModelCheckpoint: bad filepath template {self.filepath!r}: {error}"
            ) from None

    def _save(self, epoch, batch, logs, completed_epochs):
        path = self._file_path(epoch, batch, logs)
        if self.save_best_only:
            current = self._monitor_value(logs, "saving the best model")
            if current is not None:
                if not self._is_improvement(current, self.best):
                    if self.verbose > 0:
                        best = "None" if self.best is None else f"{self.best:.5f}"
                        print(f"Epoch {epoch + 1}: {self.monitor} did not improve from {best}")
                    return
                if self.verbose > 0:
                    best = "None" if self.best is None else f"{self.best:.5f}"
                    print(
                        f"Epoch {epoch + 1}: {self.monitor} improved from {best} to "
                        f"{current:.5f}, saving model to {path}"
                    )
                self.best = current
        elif self.verbose > 0:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if os.path.isdir(path):
            raise IsADirectoryError(
                f"ModelCheckpoint: filepath {path!r} is an existing directory; give a file path"
            )
        self.model._completed_epochs = completed_epochs
        if self.save_weights_only:
            self.model.save_weights(path, overwrite=True)
        else:
            self.model.save(path, overwrite=True)


class LearningRateScheduler(Callback):
    """Set the learning rate to ``schedule(epoch, lr)`` (or ``schedule(epoch)``) per epoch.

    The rate is also logged as ``learning_rate`` at each epoch end.
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: schedule must be callable, got {schedule!r}")
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        try:
            lr = self.schedule(epoch, float(optimizer.learning_rate))
        except TypeError:  # Keras also accepts schedule(epoch)
            lr = self.schedule(epoch)
        try:
            lr = float(lr)
        except (TypeError, ValueError):
            lr = None
        if lr is None or not math.isfinite(lr):
            raise ValueError(
                f"LearningRateScheduler: the schedule must return a finite float, got {lr!r} "
                f"at epoch {epoch}"
            )
        optimizer.learning_rate = float(lr)
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(lr)}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class ReduceLROnPlateau(_MonitorCallback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for
    ``patience`` epochs; then wait ``cooldown`` epochs; never go below ``min_lr``."""

    def __init__(
        self,
        monitor="val_loss",
        factor=0.1,
        patience=10,
        verbose=0,
        mode="auto",
        min_delta=1e-4,
        cooldown=0,
        min_lr=0.0,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(f"ReduceLROnPlateau: unexpected argument(s) {sorted(kwargs)}")
        super().__init__(monitor, mode, min_delta=min_delta)
        if not factor < 1.0:
            raise ValueError(
                f"ReduceLROnPlateau does not support a factor >= 1.0, got factor={factor}"
            )
        self.factor, self.min_lr, self.patience = factor, min_lr, patience
        self.verbose, self.cooldown = verbose, cooldown
        self.cooldown_counter = self.wait = 0

    def on_train_begin(self, logs=None):
        self.best, self.cooldown_counter, self.wait = None, 0, 0

    def in_cooldown(self):
        return self.cooldown_counter > 0

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if logs is not None:
            logs["learning_rate"] = float(optimizer.learning_rate)
        current = self._monitor_value(logs, "learning rate reduction")
        if current is None:
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best, self.wait = current, 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old = float(optimizer.learning_rate)
                if old > self.min_lr:
                    new = max(old * self.factor, self.min_lr)
                    optimizer.learning_rate = new
                    if self.verbose > 0:
                        print(
                            f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}."
                        )
                    self.cooldown_counter, self.wait = self.cooldown, 0


class CSVLogger(Callback):
    """Write one CSV row per epoch to ``filename``: ``epoch`` (0-based, as Keras) then the
    logged values in sorted key order; ``val_*`` columns are added when none are logged.

    ``append=True`` continues an existing file (its header is kept). After every
    epoch the whole file is rewritten crash-safely (temporary file, fsync, rename),
    so it can be read while training runs and a crash never leaves a torn row.
    """

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename, self.sep, self.append = os.fspath(filename), separator, append
        self.writer = self.keys = None
        self.append_header = True
        self._prefix, self._rows = "", None

    def on_train_begin(self, logs=None):
        self._prefix = ""
        if self.append and os.path.exists(self.filename):
            with open(self.filename, encoding="utf-8", newline="") as f:
                self._prefix = f.read()
            if self._prefix and not self._prefix.endswith("\n"):
                self._prefix += "\r\n"
        self.append_header = not self._prefix.split("\n", 1)[0].strip()
        folder = os.path.dirname(self.filename)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self._rows = io.StringIO()
        self.writer = self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if self._rows is None:  # used without on_train_begin
            self.on_train_begin()
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys += [f"val_{k}" for k in self.keys]
        if self.writer is None:
            self.writer = csv.DictWriter(
                self._rows,
                fieldnames=["epoch"] + self.keys,
                delimiter=self.sep,
                extrasaction="ignore",
            )
            if self.append_header:
                self.writer.writeheader()
        row = {"epoch": epoch}
        for key in self.keys:
            value = logs.get(key, "NA")
            row[key] = value if isinstance(value, str) else _csv_value(value)
        self.writer.writerow(row)
        with atomic_write(self.filename, "w", encoding="utf-8", newline="") as handle:
            handle.write(self._prefix + self._rows.getvalue())

    def on_train_end(self, logs=None):
        self.writer = None


def _csv_value(value):
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return str(value)


__all__ = [
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ProgbarLogger",
    "ReduceLROnPlateau",
    "TerminateOnNaN",
]
