"""Losses with Keras 3 names, arguments and formulas.

A loss object is called as ``loss(y_true, y_pred, sample_weight=None)`` and
returns a scalar Tensor: the per-sample losses (averaged over the last axis
where Keras does) reduced by ``reduction`` (default ``"sum_over_batch_size"``,
i.e. the mean). Probability-space cross-entropies clip predictions to
``[epsilon, 1 - epsilon]`` as Keras does; ``from_logits=True`` uses fused,
overflow-free forms.
"""

from . import ops
from .autograd import Tensor, as_backend_array
from .config import epsilon
from .ops.losses import check_label_range

REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "none", None)


def _as_target(y_true, like):
    """Targets as a constant array of ``like``'s dtype, on ``like``'s backend."""
    value = y_true.value if isinstance(y_true, Tensor) else as_backend_array(y_true)
    xp = like.xp
    if value.dtype != like.dtype:
        value = xp.astype(value, like.dtype)
    return value


def _constant(array):
    # a Tensor, so that arithmetic with Tensors works whichever side it is on
    # (array_api_strict arrays refuse unknown right-hand operands instead of deferring)
    return Tensor(array)


def _check_same_shape(name, y_true, y_pred):
    if tuple(y_true.shape) != tuple(y_pred.shape):
        true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
        if true_shape == pred_shape[:-1] + (1,) or true_shape + (1,) == pred_shape:
            return
        raise ValueError(
            f"{name}: y_true of shape {tuple(y_true.shape)} does not match y_pred of shape "
            f"{tuple(y_pred.shape)}"
        )


def _align(xp, y_true, y_pred):
    """Give ``y_true`` the shape of ``y_pred`` when they differ only by a trailing 1."""
    if tuple(y_true.shape) != tuple(y_pred.shape):
        y_true = xp.reshape(y_true, tuple(y_pred.shape))
    return y_true


# -- per-sample loss functions (Tensor in, Tensor of shape y_pred.shape[:-1] out) --
def mean_squared_error(y_true, y_pred):
    y_pred = _tensor(y_pred)
    t = _align(y_pred.xp, _as_target(y_true, y_pred), y_pred)
    return ops.mean(ops.square(y_pred - t), axis=-1)


def mean_absolute_error(y_true, y_pred):
    y_pred = _tensor(y_pred)
    t = _align(y_pred.xp, _as_target(y_true, y_pred), y_pred)
    return ops.mean(ops.abs(y_pred - t), axis=-1)


def huber(y_true, y_pred, delta=1.0):
    y_pred = _tensor(y_pred)
    t = _align(y_pred.xp, _as_target(y_true, y_pred), y_pred)
    error = y_pred - t
    abs_error = ops.abs(error)
    quadratic = ops.minimum(abs_error, delta)
    linear = abs_error - quadratic
    return ops.mean(0.5 * ops.square(quadratic) + delta * linear, axis=-1)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0):
    y_pred = _tensor(y_pred)
    t = _align(y_pred.xp, _as_target(y_true, y_pred), y_pred)
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        return ops.mean(ops.sigmoid_cross_entropy(y_pred, t), axis=-1)
    eps = epsilon()
    p = ops.clip(y_pred, eps, 1.0 - eps)
    t = _constant(t)
    bce = -(t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p))
    return ops.mean(bce, axis=-1)


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    y_pred = _tensor(y_pred)
    t = _as_target(y_true, y_pred)
    if tuple(t.shape) != tuple(y_pred.shape):
        raise ValueError(
            f"categorical_crossentropy: y_true of shape {tuple(t.shape)} must match y_pred of "
            f"shape {tuple(y_pred.shape)} (one-hot targets); for integer labels use "
            "sparse_categorical_crossentropy"
        )
    if label_smoothing:
        classes = y_pred.shape[axis]
        t = t * (1.0 - label_smoothing) + label_smoothing / classes
    if from_logits:
        return ops.softmax_cross_entropy(y_pred, t, axis=axis)
    eps = epsilon()
    p = y_pred / ops.sum(y_pred, axis=axis, keepdims=True)
    p = ops.clip(p, eps, 1.0 - eps)
    return -ops.sum(_constant(t) * ops.log(p), axis=axis)


def _sparse_labels(y_true, y_pred):
    """Integer labels of shape ``y_pred.shape[:-1]``, checked against the number of classes."""
    xp = y_pred.xp
    labels = y_true.value if isinstance(y_true, Tensor) else as_backend_array(y_true)
    expected = tuple(y_pred.shape[:-1])
    if tuple(labels.shape) == expected + (1,):
        labels = xp.reshape(labels, expected)
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"sparse_categorical_crossentropy: labels of shape {tuple(labels.shape)} do not match "
            f"predictions of shape {tuple(y_pred.shape)} (expected labels of shape {expected})"
        )
    if xp.isdtype(labels.dtype, "real floating"):
        labels = xp.astype(labels, xp.int64)
    return labels


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None):
    y_pred = _tensor(y_pred)
    xp = y_pred.xp
    labels = _sparse_labels(y_true, y_pred)
    classes = y_pred.shape[-1]
    valid = None
    if ignore_class is not None:
        valid = labels != ignore_class
        labels = xp.where(valid, labels, xp.zeros_like(labels))
    check_label_range(xp, labels, classes, name="sparse_categorical_crossentropy")
    if from_logits:
        loss = ops.sparse_softmax_cross_entropy(y_pred, labels)
    else:
        eps = epsilon()
        p = ops.clip(y_pred / ops.sum(y_pred, axis=-1, keepdims=True), eps, 1.0 - eps)
        one_hot = xp.astype(
            labels[..., None] == xp.arange(classes, device=labels.device), y_pred.dtype
        )
        loss = -ops.sum(_constant(one_hot) * ops.log(p), axis=-1)
    if valid is not None:
        loss = loss * _constant(xp.astype(valid, y_pred.dtype))
    return loss


def kl_divergence(y_true, y_pred):
    y_pred = _tensor(y_pred)
    t = ops.clip(_tensor(_align(y_pred.xp, _as_target(y_true, y_pred), y_pred)), epsilon(), 1.0)
    p = ops.clip(y_pred, epsilon(), 1.0)
    return ops.sum(t * ops.log(t / p), axis=-1)


def log_cosh(y_true, y_pred):
    y_pred = _tensor(y_pred)
    t = _align(y_pred.xp, _as_target(y_true, y_pred), y_pred)
    d = y_pred - t
    # log(cosh(d)) = d + softplus(-2d) - log 2, stable for large |d|
    return ops.mean(d + ops.softplus(-2.0 * d) - 0.6931471805599453, axis=-1)


def hinge(y_true, y_pred):
    y_pred = _tensor(y_pred)
    t = _align(y_pred.xp, _as_target(y_true, y_pred), y_pred)
    xp = y_pred.xp
    t = _constant(xp.where(t == 0, -1.0, t))  # {0, 1} labels become {-1, 1}
    return ops.mean(ops.maximum(1.0 - t * y_pred, 0.0), axis=-1)


def _tensor(x):
    return x if isinstance(x, Tensor) else Tensor(as_backend_array(x))


# -- loss objects ----------------------------------------------------------------
class Loss:
    """Base loss: ``call(y_true, y_pred)`` gives per-sample losses, ``__call__`` reduces."""

    def __init__(self, reduction="sum_over_batch_size", name=None):
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__}: unknown reduction {reduction!r}; use one of {REDUCTIONS}"
            )
        self.reduction = reduction
        self.name = name or _snake(type(self).__name__)

    def call(self, y_true, y_pred):
        raise NotImplementedError

    def __call__(self, y_true, y_pred, sample_weight=None):
        losses = self.call(y_true, y_pred)
        if sample_weight is not None:
            w = _as_target(sample_weight, losses)
            while w.ndim < losses.ndim:
                w = w[..., None]
            losses = losses * _constant(w)
        if self.reduction in ("none", None):
            return losses
        total = ops.sum(losses)
        if self.reduction == "sum":
            return total
        count = 1
        for s in losses.shape:
            count *= s
        return total / max(count, 1)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}


def _fn_loss(fn, **defaults):
    class _Loss(Loss):
        def __init__(self, reduction="sum_over_batch_size", name=None, **kwargs):
            unknown = set(kwargs) - set(defaults)
            if unknown:
                raise TypeError(f"{type(self).__name__}: unexpected argument(s) {sorted(unknown)}")
            super().__init__(reduction, name)
            self.options = {**defaults, **kwargs}

        def call(self, y_true, y_pred):
            return fn(y_true, y_pred, **self.options)

        def get_config(self):
            return {**super().get_config(), **self.options}

    return _Loss


class MeanSquaredError(_fn_loss(mean_squared_error)):
    pass


class MeanAbsoluteError(_fn_loss(mean_absolute_error)):
    pass


class Huber(_fn_loss(huber, delta=1.0)):
    pass


class BinaryCrossentropy(_fn_loss(binary_crossentropy, from_logits=False, label_smoothing=0.0)):
    pass


class CategoricalCrossentropy(
    _fn_loss(categorical_crossentropy, from_logits=False, label_smoothing=0.0, axis=-1)
):
    pass


class SparseCategoricalCrossentropy(
    _fn_loss(sparse_categorical_crossentropy, from_logits=False, ignore_class=None)
):
    def __call__(self, y_true, y_pred, sample_weight=None):
        options = self.options
        if (
            options["from_logits"]
            and options["ignore_class"] is None
            and sample_weight is None
            and self.reduction == "sum_over_batch_size"
        ):
            # the usual training loss as one fused node
            y_pred = _tensor(y_pred)
            labels = _sparse_labels(y_true, y_pred)  # the op checks the label range
            return ops.sparse_softmax_cross_entropy(y_pred, labels, mean=True)
        return super().__call__(y_true, y_pred, sample_weight)


class KLDivergence(_fn_loss(kl_divergence)):
    pass


class LogCosh(_fn_loss(log_cosh)):
    pass


class Hinge(_fn_loss(hinge)):
    pass


mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error

ALIASES = {
    "mean_squared_error": MeanSquaredError,
    "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
    "mae": MeanAbsoluteError,
    "huber": Huber,
    "huber_loss": Huber,
    "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "kl_divergence": KLDivergence,
    "kld": KLDivergence,
    "log_cosh": LogCosh,
    "hinge": Hinge,
}
_FUNCTIONS = {
    mean_squared_error: MeanSquaredError,
    mean_absolute_error: MeanAbsoluteError,
    huber: Huber,
    binary_crossentropy: BinaryCrossentropy,
    categorical_crossentropy: CategoricalCrossentropy,
    sparse_categorical_crossentropy: SparseCategoricalCrossentropy,
    kl_divergence: KLDivergence,
    log_cosh: LogCosh,
    hinge: Hinge,
}


class LossFunctionWrapper(Loss):
    """Wraps a user function ``fn(y_true, y_pred) -> per-sample losses``."""

    def __init__(self, fn, reduction="sum_over_batch_size", name=None):
        super().__init__(reduction, name or getattr(fn, "__name__", "loss"))
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)


def get(identifier):
    """A Loss object from a name, a Loss instance, a class or a function."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, str):
        key = _snake(identifier) if identifier not in ALIASES else identifier
        if key in ALIASES:
            loss = ALIASES[key]()
            loss.name = identifier
            return loss
    elif isinstance(identifier, dict):
        cls = ALIASES[_snake(identifier["class_name"])]
        config = dict(identifier.get("config", {}))
        return cls(**config)
    elif callable(identifier):
        if identifier in _FUNCTIONS:
            return _FUNCTIONS[identifier]()
        return LossFunctionWrapper(identifier)
    raise ValueError(
        f"Unknown loss {identifier!r}; choose one of {sorted(ALIASES)} or pass a callable."
    )


def serialize(loss):
    for name, cls in ALIASES.items():
        if type(loss) is cls:
            config = loss.get_config()
            return {"class_name": name, "config": config}
    raise ValueError(f"cannot serialize loss {loss!r} (only built-in losses are saved by name)")


def _snake(name):
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
