"""compile / fit / evaluate / predict and the per-batch steps, shared by every model.

A training step: forward with ``training=True``, total loss = weighted sum of
the per-output losses + every layer penalty (regularizers), ``backward()``,
``optimizer.apply_gradients`` on the trainable weights, metric updates.
"""

import math

from .. import callbacks as callbacks_module
from .. import losses as losses_module
from .. import metrics as metrics_module
from .. import optimizers as optimizers_module
from ..autograd import Tensor, no_grad
from ..data.batching import (
    ArrayBatches,
    as_host_or_backend,
    class_weights_to_sample_weights,
    num_samples,
    split_validation,
)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


class Trainer:
    """Mixin giving a model Keras's training API (it must define ``__call__`` and weights)."""

    optimizer = None
    compiled = False
    stop_training = False
    _distributed = None  # the DataParallel hook while fit(distributed=...) runs

    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, **kwargs):
        """Choose the optimizer, loss(es), loss weights and metrics for training.

        ``loss``/``metrics`` may be one value for every output, a list (one per
        output) or a dict keyed by output name. Keyword arguments that only
        matter to graph compilers (``run_eagerly``, ``jit_compile``,
        ``steps_per_execution``) are accepted and ignored.
        """
        ignored = {"run_eagerly", "jit_compile", "steps_per_execution", "auto_scale_loss"}
        unknown = set(kwargs) - ignored
        if unknown:
            raise TypeError(f"compile: unexpected argument(s) {sorted(unknown)}")
        self.optimizer = optimizers_module.get(optimizer)
        self._loss_spec, self._metric_spec, self._loss_weight_spec = loss, metrics, loss_weights
        self.compiled = True
        self._compiled_for = None

    # -- per-output configuration -------------------------------------------------
    def _output_names(self):
        return list(getattr(self, "output_names", None) or ["output"])

    def _per_output(self, spec, names, what):
        if isinstance(spec, dict):
            unknown = set(spec) - set(names)
            if unknown:
                raise ValueError(
                    f"compile: {what} given for unknown outputs {sorted(unknown)}; outputs are "
                    f"{names}"
                )
            return [spec.get(n) for n in names]
        if isinstance(spec, (list, tuple)) and len(names) > 1:
            if len(spec) != len(names):
                raise ValueError(
                    f"compile: {len(spec)} {what} for a model with {len(names)} outputs {names}"
                )
            return list(spec)
        return [spec] * len(names)

    def _prepare_compiled(self, n_outputs):
        if self._compiled_for == n_outputs:
            return
        names = self._output_names()
        if len(names) != n_outputs:
            names = [f"output_{i}" for i in range(n_outputs)] if n_outputs > 1 else ["output"]
        self._names = names
        if self._loss_spec is None:
            raise ValueError("compile: a loss is needed to train or evaluate (compile(loss=...))")
        self._losses = [
            losses_module.get(s) if s is not None else None
            for s in self._per_output(self._loss_spec, names, "losses")
        ]
        weights = self._loss_weight_spec
        self._loss_weights = (
            [1.0] * n_outputs
            if weights is None
            else [
                1.0 if w is None else float(w)
                for w in self._per_output(weights, names, "loss_weights")
            ]
        )
        metric_spec = self._metric_spec or []
        if isinstance(metric_spec, dict):
            per_output = self._per_output(metric_spec, names, "metrics")
        elif n_outputs > 1 and metric_spec and isinstance(metric_spec[0], (list, tuple)):
            per_output = self._per_output(metric_spec, names, "metrics")
        else:
            per_output = [metric_spec] * n_outputs
        self._metrics = []
        for i, specs in enumerate(per_output):
            specs = specs or []
            if not isinstance(specs, (list, tuple)):
                specs = [specs]
            for spec in specs:
                metric = metrics_module.get(spec, loss=self._losses[i])
                if n_outputs > 1:
                    metric.name = f"{names[i]}_{metric.name}"
                self._metrics.append((i, metric))
        self._loss_tracker = metrics_module.Mean(name="loss")
        self._output_loss_trackers = (
            [metrics_module.Mean(name=f"{n}_loss") for n in names] if n_outputs > 1 else []
        )
        self._compiled_for = n_outputs

    @property
    def metrics_names(self):
        names = ["loss"]
        if getattr(self, "_compiled_for", None):
            names += [t.name for t in self._output_loss_trackers] + [
                m.name for _, m in self._metrics
            ]
        return names

    def _reset_metrics(self):
        self._loss_tracker.reset_state()
        for t in self._output_loss_trackers:
            t.reset_state()
        for _, m in self._metrics:
            m.reset_state()

    def _logs(self):
        logs = {"loss": self._loss_tracker.result()}
        for t in self._output_loss_trackers:
            logs[t.name] = t.result()
        for _, m in self._metrics:
            logs[m.name] = m.result()
        return logs

    # -- steps --------------------------------------------------------------------
    def _check_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"{what}: call model.compile(optimizer=..., loss=...) first")

    def _compute_loss(self, y, y_pred, sample_weight, training):
        if isinstance(y_pred, dict):  # dict outputs: in the order of output_names
            y_pred = [y_pred[n] for n in self._output_names()]
        outputs = list(y_pred) if isinstance(y_pred, (list, tuple)) else [y_pred]
        self._prepare_compiled(len(outputs))
        if len(outputs) > 1:
            if isinstance(y, dict):
                missing = [n for n in self._names if n not in y]
                if missing:
                    raise ValueError(
                        f"y is a dict with keys {sorted(y)} but the model's outputs are "
                        f"{self._names}: missing {missing}"
                    )
                y = [y[n] for n in self._names]
            if not isinstance(y, (list, tuple)) or len(y) != len(outputs):
                raise ValueError(
                    f"the model has {len(outputs)} outputs {self._names}; give y as a list or "
                    f"dict of {len(outputs)} arrays"
                )
            targets = list(y)
        else:
            if isinstance(y, dict):
                if len(y) != 1:
                    raise ValueError(
                        f"the model has one output {self._names}; y is a dict with keys {sorted(y)}"
                    )
                y = next(iter(y.values())) if self._names[0] not in y else y[self._names[0]]
            targets = [y[0] if isinstance(y, (list, tuple)) and len(y) == 1 else y]
        total = None
        batch = outputs[0].shape[0]
        for i, (loss_fn, weight, target, output) in enumerate(
            zip(self._losses, self._loss_weights, targets, outputs)
        ):
            if loss_fn is None:
                continue
            value = loss_fn(target, output, sample_weight=sample_weight)
            if self._output_loss_trackers:
                self._output_loss_trackers[i].update_state(value.value, sample_weight=None)
            value = value * weight if weight != 1.0 else value
            total = value if total is None else total + value
        penalties = self.losses
        for penalty in penalties:
            total = total + penalty
        with no_grad():
            self._loss_tracker.update_state(total.value, sample_weight=batch)
            for i, metric in self._metrics:
                metric.update_state(targets[i], outputs[i], sample_weight=sample_weight)
        return total

    def train_step(self, x, y, sample_weight=None):
        """One optimisation step on one batch; returns the (scalar) loss Tensor."""
        self.clear_losses()
        y_pred = self(x, training=True)
        loss = self._compute_loss(y, y_pred, sample_weight, training=True)
        variables = self.trainable_weights
        for v in variables:
            v.grad = None
        loss.backward()
        if self._distributed is not None:  # fit(distributed=...): gradients summed over ranks
            self._distributed.reduce_gradients(variables)
        self.optimizer.apply_gradients([(v.grad, v) for v in variables])
        for v in variables:
            v.grad = None
        self.clear_losses()
        return loss

    def test_step(self, x, y, sample_weight=None):
        self.clear_losses()
        with no_grad():
            y_pred = self(x, training=False)
            loss = self._compute_loss(y, y_pred, sample_weight, training=False)
        self.clear_losses()
        return loss

    def train_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        self._check_compiled("train_on_batch")
        self._prepare_for(x)
        self._reset_metrics_if_ready()
        self.train_step(x, y, sample_weight)
        return self._result(return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        self._check_compiled("test_on_batch")
        self._prepare_for(x)
        self._reset_metrics_if_ready()
        self.test_step(x, y, sample_weight)
        return self._result(return_dict)

    def predict_on_batch(self, x):
        with no_grad():
            return _values(self(x, training=False))

    def _reset_metrics_if_ready(self):
        if getattr(self, "_compiled_for", None):
            self._reset_metrics()

    def _result(self, return_dict):
        logs = self._logs()
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def _prepare_for(self, x):
        """Hook for models that build lazily from the first data they see."""

    # -- loops ----------------------------------------------------------------------
    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        class_weight=None,
        sample_weight=None,
        initial_epoch=0,
        steps_per_epoch=None,
        validation_batch_size=None,
        validation_freq=1,
        distributed=False,
    ):
        """Train for ``epochs`` passes over ``(x, y)``; returns a :class:`History`.

        A NaN or infinite loss stops training with :class:`NonFiniteLossError`
        (or quietly, when a ``TerminateOnNaN`` callback is given).
        ``distributed=True`` (or a ``dlx.distributed.DataParallel``) trains
        data-parallel over the ranks of an MPI job; ``batch_size`` is then the
        global batch (see ``dlx.distributed``).
        """
        self._check_compiled("fit")
        if class_weight is not None:
            sample_weight = class_weights_to_sample_weights(y, class_weight, sample_weight)
        x, y, sample_weight = (as_host_or_backend(d) for d in (x, y, sample_weight))
        num_samples(x, y, sample_weight)
        if validation_data is None and validation_split:
            (x, y, sample_weight), validation_data = split_validation(
                x, y, sample_weight, validation_split
            )
        elif validation_data is not None:
            validation_data = tuple(as_host_or_backend(d) for d in validation_data)
            if len(validation_data) == 2:
                validation_data = validation_data + (None,)
            num_samples(*validation_data)
        batches = ArrayBatches(x, y, sample_weight, batch_size or 32, shuffle=bool(shuffle))
        self._distributed = _data_parallel(distributed)
        if self._distributed is not None:  # this rank's share of each batch; only rank 0 prints
            batches = self._distributed.shard(batches)
            callbacks = self._distributed.callbacks(callbacks)
            verbose = verbose if self._distributed.is_main else 0
        steps = len(batches) if steps_per_epoch is None else min(steps_per_epoch, len(batches))
        if verbose == "auto":
            verbose = 1
        history = callbacks_module.History()
        callback_list = list(callbacks or [])
        if verbose:
            callback_list.append(callbacks_module.ProgbarLogger(verbose))
        callback_list.append(history)
        cbs = callbacks_module.CallbackList(
            callback_list, model=self, params={"epochs": epochs, "steps": steps, "verbose": verbose}
        )
        self._prepare_for(x)
        self.stop_training = False
        self.history = history
        cbs.on_train_begin()
        if self._distributed is not None:  # rank 0's weights and random state everywhere
            self._distributed.on_train_begin(self)
        for epoch in range(initial_epoch, epochs):
            self._reset_metrics_if_ready()
            cbs.on_epoch_begin(epoch)
            for step, (bx, by, bw) in enumerate(batches):
                if step >= steps:
                    break
                cbs.on_train_batch_begin(step)
                loss = self.train_step(bx, by, bw)
                loss_value = float(loss.item())
                if self._distributed is None:
                    logs = self._logs()
                else:  # the global batch loss and running metrics, summed over ranks
                    loss_value, logs = self._distributed.batch_logs(self, loss_value)
                cbs.on_train_batch_end(step, logs)
                if not math.isfinite(loss_value):
                    if self.stop_training:
                        break
                    raise NonFiniteLossError(
                        f"fit: the loss became {loss_value} at epoch {epoch + 1}, batch "
                        f"{step + 1} (running logs {logs}). Lower the learning rate, check the "
                        "data for NaN/inf, or pass callbacks=[TerminateOnNaN()] to stop without "
                        "an error."
                    )
                if self.stop_training:
                    break
            if self._distributed is None:
                epoch_logs = self._logs()
            else:  # summed over ranks; non-trainable weights made identical
                epoch_logs = self._distributed.epoch_logs(self)
            if validation_data is not None and (epoch + 1) % validation_freq == 0:
                val_logs = self._evaluate_batches(
                    ArrayBatches(
                        *validation_data, batch_size=validation_batch_size or batch_size or 32
                    ),
                    cbs,
                )
                epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
            cbs.on_epoch_end(epoch, epoch_logs)
            if self.stop_training:
                break
        cbs.on_train_end()
        self._distributed = None
        return history

    def _evaluate_batches(self, batches, cbs):
        self._reset_metrics_if_ready()
        cbs.on_test_begin()
        for step, (bx, by, bw) in enumerate(batches):
            cbs.on_test_batch_begin(step)
            self.test_step(bx, by, bw)
            cbs.on_test_batch_end(step)
        logs = self._logs()
        cbs.on_test_end(logs)
        return logs

    def evaluate(
        self,
        x=None,
        y=None,
        batch_size=None,
        verbose="auto",
        sample_weight=None,
        callbacks=None,
        return_dict=False,
    ):
        """Loss and metrics over ``(x, y)``: ``[loss, *metrics]`` or a float without metrics."""
        self._check_compiled("evaluate")
        x, y, sample_weight = (as_host_or_backend(d) for d in (x, y, sample_weight))
        batches = ArrayBatches(x, y, sample_weight, batch_size or 32)
        self._prepare_for(x)
        cbs = callbacks_module.CallbackList(callbacks, model=self)
        logs = self._evaluate_batches(batches, cbs)
        if verbose and verbose != "auto":
            print(callbacks_module._format_logs(logs))
        return self._result(return_dict) if not return_dict else logs

    def predict(self, x, batch_size=None, verbose="auto", callbacks=None):
        """Outputs for ``x`` as arrays of the current backend (a list for several outputs)."""
        x = as_host_or_backend(x)
        batches = ArrayBatches(x, None, None, batch_size or 32)
        self._prepare_for(x)
        cbs = callbacks_module.CallbackList(callbacks, model=self)
        cbs.on_predict_begin()
        outputs = []
        with no_grad():
            for step, (bx, _, _) in enumerate(batches):
                cbs.on_predict_batch_begin(step)
                outputs.append(_values(self(bx, training=False)))
                cbs.on_predict_batch_end(step)
        cbs.on_predict_end()
        if not outputs:
            raise ValueError("predict: x has no samples")
        return _concat_outputs(outputs)


def _data_parallel(distributed):
    """``fit``'s ``distributed=`` as a DataParallel hook, or None (dlx.distributed loads lazily)."""
    if distributed is None or distributed is False:
        return None
    from ..distributed import DataParallel

    return DataParallel.from_argument(distributed)


def _values(outputs):
    if isinstance(outputs, dict):
        return {k: _values(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return [o.value for o in outputs]
    return outputs.value if isinstance(outputs, Tensor) else outputs


def _concat_outputs(outputs):
    from ..backends import backend_of

    first = outputs[0]
    if isinstance(first, dict):
        return {k: _concat_outputs([o[k] for o in outputs]) for k in first}
    if isinstance(first, list):
        return [_concat_outputs([o[i] for o in outputs]) for i in range(len(first))]
    xp = backend_of(first).xp
    return xp.concat(outputs, axis=0) if len(outputs) > 1 else first
