"""Fused, numerically stable loss math on logits (per-sample values, no reduction).

The probability-space losses in :mod:`dlx.losses` are composed from clip/log ops
as Keras computes them; these fused forms handle ``from_logits=True``.
"""

from ..autograd import Function, Tensor


def _one_hot(xp, labels, classes, dtype):
    return xp.astype(labels[..., None] == xp.arange(classes, device=labels.device), dtype)


class SoftmaxCrossEntropy(Function):
    """``-sum(y * log_softmax(logits), axis)``; y are (soft) one-hot targets, no gradient."""

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, logits, targets):
        xp = self.xp
        shifted = logits - xp.max(logits, axis=self.axis, keepdims=True)
        log_z = xp.log(xp.sum(xp.exp(shifted), axis=self.axis, keepdims=True))
        log_p = shifted - log_z
        self.log_p, self.targets = log_p, targets
        return -xp.sum(targets * log_p, axis=self.axis)

    def backward(self, g):
        xp = self.xp
        g = xp.expand_dims(g, axis=self.axis)
        t = self.targets
        return g * (xp.exp(self.log_p) * xp.sum(t, axis=self.axis, keepdims=True) - t), None


def check_label_range(xp, labels, classes, name="sparse_softmax_cross_entropy"):
    """Raise a ValueError naming ``name`` unless every integer label is in ``[0, classes)``."""
    low, high = (int(xp.min(labels)), int(xp.max(labels))) if labels.size else (0, 0)
    if low < 0 or high >= classes:
        raise ValueError(
            f"{name}: labels must lie in [0, {classes - 1}] for predictions with {classes} "
            f"classes, got labels in [{low}, {high}]"
        )


class SparseSoftmaxCrossEntropy(Function):
    """``-log_softmax(logits)[label]`` over the last axis; labels are integers ``(...)`` in
    ``[0, classes)`` (else ValueError).

    With ``mean=True`` the op returns the mean over all samples (a scalar), which
    saves the two reduction nodes of the common training loss.
    """

    def __init__(self, mean=False):
        self.mean = mean

    def forward(self, logits, labels):
        loss = self._per_sample(logits, labels)
        if not self.mean:
            return loss
        self.count = loss.size if loss.size else 1
        return self.xp.sum(loss) / self.count

    def backward(self, g):
        if self.mean:  # a 0-d gradient: g[..., None] below broadcasts it over every sample
            g = g / self.count
        return self._per_sample_backward(g)

    def _per_sample(self, logits, labels):
        xp = self.xp
        kernel = self.backend.kernel("sparse_softmax_cross_entropy")
        if kernel is not None:  # it checks the labels itself
            loss, self.probabilities = kernel(logits, labels)
            self.labels = labels
            return loss
        check_label_range(xp, labels, logits.shape[-1])
        shifted = logits - xp.max(logits, axis=-1, keepdims=True)
        e = xp.exp(shifted)
        sum_e = xp.sum(e, axis=-1, keepdims=True)
        one_hot = _one_hot(xp, labels, logits.shape[-1], logits.dtype)
        self.probabilities, self.labels = e / sum_e, labels
        return xp.squeeze(xp.log(sum_e), axis=-1) - xp.sum(one_hot * shifted, axis=-1)

    def _per_sample_backward(self, g):
        xp = self.xp
        kernel = self.backend.kernel("sparse_softmax_cross_entropy_backward")
        if kernel is not None:
            return kernel(g, self.probabilities, self.labels), None
        p = self.probabilities
        one_hot = _one_hot(xp, self.labels, p.shape[-1], p.dtype)
        return g[..., None] * (p - one_hot), None


class SigmoidCrossEntropy(Function):
    """Binary cross-entropy on logits: ``max(x, 0) - x*y + log(1 + exp(-|x|))``."""

    def forward(self, logits, targets):
        xp = self.xp
        self.logits, self.targets = logits, targets
        return xp.maximum(logits, 0.0) - logits * targets + xp.log1p(xp.exp(-xp.abs(logits)))

    def backward(self, g):
        xp = self.xp
        x = self.logits
        z = xp.exp(-xp.abs(x))
        sig = xp.where(x >= 0, 1 / (1 + z), z / (1 + z))
        return g * (sig - self.targets), None


def softmax_cross_entropy(logits, targets, axis=-1):
    return SoftmaxCrossEntropy(axis)(logits, targets)


def sparse_softmax_cross_entropy(logits, labels, mean=False):
    """Per-sample losses ``(...)`` for logits ``(..., classes)`` and integer labels ``(...)``,
    or their mean when ``mean``."""
    if isinstance(labels, Tensor):
        labels = labels.value
    return SparseSoftmaxCrossEntropy(mean)(logits, labels)


def sigmoid_cross_entropy(logits, targets):
    return SigmoidCrossEntropy()(logits, targets)
