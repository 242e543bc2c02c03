"""Batching of host arrays for ``fit``/``evaluate``/``predict`` (the host boundary).

``x`` and ``y`` may be one array or a list/tuple/dict of arrays with the same
number of samples. Batches are sliced on the host and handed to the model,
which moves them to the current backend. Shuffling draws one permutation per
pass from the global seeded generator (``dlx.set_seed``), so runs repeat
exactly. With ``prefetch=n`` a background thread slices the next ``n`` batches
and moves them to the current backend's device while the model computes on the
current one (the default ``"auto"`` does so on GPU backends only, where the
copy to the device is worth hiding).
"""

import math
import queue
import threading

import numpy as np

from ..backends import backend_of, get_backend, permutation


def _structure_map(fn, data):
    if data is None:
        return None
    if isinstance(data, dict):
        return {k: fn(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(fn(v) for v in data)
    return fn(data)


def _leaves(data):
    if data is None:
        return []
    if isinstance(data, dict):
        return list(data.values())
    if isinstance(data, (list, tuple)):
        return list(data)
    return [data]


def as_host_or_backend(data):
    """Lists become NumPy arrays; arrays of any backend stay as they are."""

    def convert(a):
        if isinstance(a, (list, tuple)) or np.isscalar(a):
            return np.asarray(a)
        if hasattr(a, "__dlpack__") and not isinstance(a, np.ndarray) and not _owned(a):
            return get_backend().from_dlpack(a)  # torch/JAX/... arrays, zero-copy
        return a

    return _structure_map(convert, data)


def _owned(a):
    from ..backends.registry import _owner_or_none

    return _owner_or_none(a) is not None


def num_samples(*datas, names=("x", "y", "sample_weight")):
    """The common number of samples; raises ValueError naming the arrays when they differ."""
    counts = {}
    for name, data in zip(names, datas):
        for i, leaf in enumerate(_leaves(data)):
            label = name if len(_leaves(data)) == 1 else f"{name}[{i}]"
            if not hasattr(leaf, "shape") or len(leaf.shape) == 0:
                raise ValueError(
                    f"{label} must be an array with a batch axis, got {type(leaf).__name__}"
                )
            counts[label] = leaf.shape[0]
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{k} has {v}" for k, v in counts.items())
        raise ValueError(
            f"Data cardinality is ambiguous: all arrays need the same number of samples; {detail}."
        )
    return next(iter(counts.values())) if counts else 0


def _take(a, index):
    if isinstance(a, np.ndarray):
        return a[index]
    xp = backend_of(a).xp
    if isinstance(index, slice):
        return a[index.start : index.stop, ...]
    return xp.take(a, xp.asarray(index, device=a.device), axis=0)


def take_samples(data, index):
    """Rows ``index`` (slice or integer array) of every array in ``data``."""
    return _structure_map(lambda a: _take(a, index), data)


def split_validation(x, y, sample_weight, fraction):
    """Keras's ``validation_split``: the last ``fraction`` of samples (before shuffling)."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation_split must be in (0, 1), got {fraction}")
    n = num_samples(x, y, sample_weight)
    split = int(n * (1 - fraction))
    if split == 0 or split == n:
        raise ValueError(
            f"validation_split={fraction} of {n} samples leaves an empty training or validation set"
        )
    train = slice(0, split)
    val = slice(split, n)
    return (
        (take_samples(x, train), take_samples(y, train), take_samples(sample_weight, train)),
        (take_samples(x, val), take_samples(y, val), take_samples(sample_weight, val)),
    )


class ArrayBatches:
    """Iterates ``(x, y, sample_weight)`` batches; reshuffles on every pass when ``shuffle``.

    Args:
        batch_size: samples per batch (the last batch may be smaller unless
            ``drop_remainder``).
        shuffle: draw a new order from the global seeded generator on every pass.
        drop_remainder: leave out a last, smaller batch.
        prefetch: how many batches a background thread prepares ahead on the current
            backend (0: none, in the caller's thread; ``"auto"``: 2 on GPU backends, else 0).
    """

    def __init__(
        self,
        x,
        y=None,
        sample_weight=None,
        batch_size=32,
        shuffle=False,
        drop_remainder=False,
        prefetch="auto",
    ):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if prefetch != "auto" and (
            not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0
        ):
            raise ValueError(f"prefetch must be 'auto' or a non-negative integer, got {prefetch!r}")
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self.n = num_samples(x, y, sample_weight)
        self.batch_size, self.shuffle, self.drop_remainder = batch_size, shuffle, drop_remainder
        self.prefetch = prefetch

    def __len__(self):
        if self.drop_remainder:
            return self.n // self.batch_size
        return math.ceil(self.n / self.batch_size)

    def _prefetch_depth(self):
        if self.prefetch == "auto":
            # worth a thread only where batches must be copied to a separate device memory
            return 2 if get_backend().name == "cupy" else 0
        return self.prefetch

    def _batch(self, order, b):
        start, stop = b * self.batch_size, min((b + 1) * self.batch_size, self.n)
        index = order[start:stop] if order is not None else slice(start, stop)
        return (
            take_samples(self.x, index),
            take_samples(self.y, index),
            take_samples(self.sample_weight, index),
        )

    def __iter__(self):
        # the order is drawn here, in the caller's thread, so the random stream is the
        # same with and without prefetching
        order = permutation(self.n) if self.shuffle else None
        depth = self._prefetch_depth()
        if depth:
            return self._prefetched(order, depth)
        return (self._batch(order, b) for b in range(len(self)))

    def _prefetched(self, order, depth):
        backend = get_backend()
        slots = queue.Queue(maxsize=depth)
        stop = threading.Event()
        done = object()

        def to_device(batch):
            return tuple(
                _structure_map(lambda a: a if backend.owns(a) else backend.asarray(a), part)
                for part in batch
            )

        def put(item):
            while not stop.is_set():
                try:
                    slots.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work():
            try:
                for b in range(len(self)):
                    if not put(("batch", to_device(self._batch(order, b)))):
                        return
                put(("end", done))
            except BaseException as error:  # handed to the consumer, raised there
                put(("error", error))

        worker = threading.Thread(target=work, name="dlx-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                kind, item = slots.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise item
                yield item
        finally:
            stop.set()
            worker.join(timeout=5)


def batches(
    x, y=None, sample_weight=None, batch_size=32, shuffle=False, drop_remainder=False, prefetch=0
):
    """Batches of host arrays for custom training loops: an iterable of
    ``(x, y, sample_weight)`` tuples (see :class:`ArrayBatches`), re-iterable once per epoch."""
    x, y, sample_weight = (as_host_or_backend(d) for d in (x, y, sample_weight))
    return ArrayBatches(
        x,
        y,
        sample_weight,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_remainder=drop_remainder,
        prefetch=prefetch,
    )


def class_weights_to_sample_weights(y, class_weight, sample_weight=None):
    """Per-sample weights from ``class_weight = {class: weight}`` (one-hot or integer ``y``)."""
    labels = np.asarray(y)
    if labels.ndim > 1 and labels.shape[-1] > 1:
        labels = labels.argmax(axis=-1)
    labels = labels.reshape(-1).astype(int)
    weights = np.asarray([class_weight.get(int(c), 1.0) for c in labels], dtype=np.float32)
    if sample_weight is not None:
        weights = weights * np.asarray(sample_weight, dtype=np.float32)
    return weights
