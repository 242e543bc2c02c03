"""Metrics (Keras names): stateful averages updated batch by batch.

``update_state(y_true, y_pred, sample_weight=None)`` accumulates on the device
(no host sync per batch); ``result()`` returns a Python float.
"""

import math

from .autograd import Tensor, as_backend_array, no_grad
from .backends import backend_of
from .losses import _snake


def _arrays(y_true, y_pred):
    pred = y_pred.value if isinstance(y_pred, Tensor) else as_backend_array(y_pred)
    true = y_true.value if isinstance(y_true, Tensor) else as_backend_array(y_true)
    return true, pred


class Metric:
    def __init__(self, name=None):
        self.name = name or _snake(type(self).__name__)
        self.reset_state()

    def reset_state(self):
        self.total = 0.0
        self.count = 0.0

    def update_state(self, y_true, y_pred, sample_weight=None):
        raise NotImplementedError

    def result(self):
        count = float(self.count)
        return float(self.total) / count if count else 0.0

    def _accumulate(self, values, sample_weight=None):
        """Add per-sample ``values`` (weighted by ``sample_weight``) to the running sums."""
        xp = backend_of(values).xp
        if sample_weight is not None:
            w = as_backend_array(sample_weight)
            w = xp.astype(xp.reshape(w, values.shape), values.dtype)
            values = values * w
            count = xp.sum(w, dtype=xp.float64)
        else:
            count = math.prod(values.shape)
        self.total = self.total + xp.sum(values, dtype=xp.float64)
        self.count = self.count + count

    def get_config(self):
        return {"name": self.name}


class Mean(Metric):
    """Running mean of the values given to ``update_state(values)``."""

    def update_state(self, values, sample_weight=None):
        if isinstance(values, Tensor):
            values = values.value
        values = as_backend_array(values)
        if values.ndim == 0 and (sample_weight is None or isinstance(sample_weight, (int, float))):
            # the common case (a batch loss weighted by the batch size): no array bookkeeping
            weight = 1 if sample_weight is None else sample_weight
            self.total = self.total + values * weight
            self.count = self.count + weight
            return
        xp = backend_of(values).xp
        self._accumulate(
            xp.reshape(values, (-1,)) if values.ndim else xp.reshape(values, (1,)), sample_weight
        )


class MeanMetricWrapper(Metric):
    """Mean over samples of ``fn(y_true, y_pred)`` (per-sample values on arrays)."""

    fn = None

    def update_state(self, y_true, y_pred, sample_weight=None):
        with no_grad():
            true, pred = _arrays(y_true, y_pred)
            values = type(self).fn(true, pred)
        self._accumulate(values, sample_weight)


def _xp(a):
    return backend_of(a).xp


def binary_accuracy(y_true, y_pred, threshold=0.5):
    xp = _xp(y_pred)
    y_true = xp.reshape(y_true, y_pred.shape) if y_true.shape != y_pred.shape else y_true
    hits = xp.astype(y_pred > threshold, y_pred.dtype) == xp.astype(y_true, y_pred.dtype)
    return xp.mean(xp.astype(hits, y_pred.dtype), axis=-1)


def categorical_accuracy(y_true, y_pred):
    xp = _xp(y_pred)
    return xp.astype(xp.argmax(y_true, axis=-1) == xp.argmax(y_pred, axis=-1), y_pred.dtype)


def sparse_categorical_accuracy(y_true, y_pred):
    xp = _xp(y_pred)
    labels = y_true
    if labels.ndim == y_pred.ndim:
        labels = xp.squeeze(labels, axis=-1)
    labels = xp.astype(labels, xp.int64)
    return xp.astype(xp.argmax(y_pred, axis=-1) == labels, y_pred.dtype)


def mean_absolute_error(y_true, y_pred):
    xp = _xp(y_pred)
    y_true = xp.astype(xp.reshape(y_true, y_pred.shape), y_pred.dtype)
    return xp.mean(xp.abs(y_pred - y_true), axis=-1)


def mean_squared_error(y_true, y_pred):
    xp = _xp(y_pred)
    y_true = xp.astype(xp.reshape(y_true, y_pred.shape), y_pred.dtype)
    return xp.mean((y_pred - y_true) ** 2, axis=-1)


class BinaryAccuracy(MeanMetricWrapper):
    fn = staticmethod(binary_accuracy)


class CategoricalAccuracy(MeanMetricWrapper):
    fn = staticmethod(categorical_accuracy)


class SparseCategoricalAccuracy(MeanMetricWrapper):
    fn = staticmethod(sparse_categorical_accuracy)


class MeanAbsoluteError(MeanMetricWrapper):
    fn = staticmethod(mean_absolute_error)


class MeanSquaredError(MeanMetricWrapper):
    fn = staticmethod(mean_squared_error)


ALIASES = {
    "binary_accuracy": BinaryAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
}


def get(identifier, loss=None):
    """A Metric from a name (``"accuracy"`` picks the variant that fits ``loss``, as Keras does)."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if isinstance(identifier, str):
        if identifier in ("accuracy", "acc"):
            loss_name = getattr(loss, "name", "") or ""
            if "sparse_categorical" in loss_name or type(loss).__name__.startswith("Sparse"):
                cls = SparseCategoricalAccuracy
            elif "categorical" in loss_name or type(loss).__name__.startswith("Categorical"):
                cls = CategoricalAccuracy
            else:
                cls = BinaryAccuracy
            return cls(name=identifier)
        if identifier in ALIASES:
            return ALIASES[identifier](name=identifier)
    elif callable(identifier):
        wrapper = type(
            getattr(identifier, "__name__", "metric"),
            (MeanMetricWrapper,),
            {"fn": staticmethod(identifier)},
        )
        return wrapper(name=getattr(identifier, "__name__", "metric"))
    raise ValueError(
        f"Unknown metric {identifier!r}; choose 'accuracy' or one of {sorted(ALIASES)}, or pass a "
        "callable."
    )
