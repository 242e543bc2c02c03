"""NumPy fast paths registered in the numpy backend's kernel table.

Each computes what the generic op computes, but with ``out=`` arguments and
reused scratch buffers: on a 2-core CPU the cost of the small elementwise
steps of training is dominated by allocating and first-touching temporaries.
Large elementwise work (the optimizer step over all weights) can be shared among
``$DLX_KERNEL_THREADS`` threads (:func:`run_shared`; one by default).
"""

import itertools
import math
import os
import threading

import numpy as np

from .thread_pools import thread_pool as shared_thread_pool

KERNELS = {}
_SCRATCH = {}


def scratch(shape, dtype, slot=0):
    """A reusable uninitialised buffer (one per shape, dtype and slot)."""
    key = (tuple(shape), np.dtype(dtype).str, slot)
    buffer = _SCRATCH.get(key)
    if buffer is None:
        buffer = _SCRATCH[key] = np.empty(shape, dtype)
    return buffer


def worker_threads():
    """How many threads elementwise kernels may use: ``$DLX_KERNEL_THREADS``, default 1.

    Splitting the optimizer step over two threads halves it when measured alone,
    but inside a training step it ran slower (mlp_train median 3.5 -> 3.3 ms,
    cnn_train 13.3 -> 13.1 ms with one thread, 2026-12-02): after each two-thread
    matrix product OpenBLAS keeps its second thread spinning on the other core,
    and a kernel thread has to share that core with it. Machines with more cores
    than BLAS threads can ask for more.
    """
    try:
        return max(1, int(os.environ.get("DLX_KERNEL_THREADS", "1")))
    except ValueError:
        raise ValueError(
            f"DLX_KERNEL_THREADS must be a positive integer, got "
            f"{os.environ['DLX_KERNEL_THREADS']!r}"
        ) from None


def thread_pool():
    """The pool that shares elementwise work: one thread fewer than CPUs (the caller works too)."""
    return shared_thread_pool("kernel", max(1, (os.cpu_count() or 1) - 1))


def adam_update(w, g, m, v, alpha, beta_1, beta_2, epsilon, t=None):
    """In place: ``m += (g - m)(1 - b1)``; ``v += (g^2 - v)(1 - b2)``;
    ``w -= alpha m / (sqrt(v) + eps)``. ``t``: scratch of ``w``'s shape and dtype."""
    if t is None:
        t = scratch(w.shape, w.dtype)
    np.subtract(g, m, out=t)
    t *= 1 - beta_1
    m += t
    np.multiply(g, g, out=t)
    t -= v
    t *= 1 - beta_2
    v += t
    np.sqrt(v, out=t)
    t += epsilon
    np.divide(m, t, out=t)
    t *= alpha
    w -= t


KERNELS["adam_update"] = adam_update

# Below this many elements per thread, handing work to a thread costs more than it saves.
MIN_ELEMENTS_PER_THREAD = 1 << 16


# Adam's moments lose their subnormal values every this many steps (see flush_subnormals).
FLUSH_SUBNORMALS_EVERY = 64
_adam_steps = itertools.count(1)


def flush_subnormals(a):
    """Set the subnormal elements of ``a`` to zero, in place.

    Why: a moment that only decays (Adam's ``m`` of a unit whose gradient stays zero
    shrinks by ``beta_1`` per step) turns subnormal after some hundreds of steps, and
    arithmetic on subnormal numbers takes a slow microcode path on many x86 CPUs: a
    step can get several times slower from then on. The compiled optimizers set the
    CPU's flush-to-zero flags; NumPy cannot, so its Adam calls this every
    ``FLUSH_SUBNORMALS_EVERY`` steps (a subnormal moment moves no weight by a
    representable amount anyway).
    """
    np.copyto(a, 0, where=np.abs(a) < np.finfo(a.dtype).tiny)


def adam_update_many(weights, grads, ms, vs, alpha, beta_1, beta_2, epsilon):
    """:func:`adam_update` on every ``(w, g, m, v)`` of the lists, in one go; every
    ``FLUSH_SUBNORMALS_EVERY`` calls the moments are flushed (:func:`flush_subnormals`).

    The update is elementwise, so the elements of all variables are laid end to
    end (as flat views), cut into equal pieces and shared among as many threads
    as the BLAS uses (NumPy releases the GIL inside ufunc loops). Every element
    gets the same arithmetic however the work is cut, so results are
    bit-identical to the one-thread path.
    """
    _adam_update_all(weights, grads, ms, vs, alpha, beta_1, beta_2, epsilon)
    if next(_adam_steps) % FLUSH_SUBNORMALS_EVERY == 0:
        for m, v in zip(ms, vs):
            flush_subnormals(m)
            flush_subnormals(v)


def _adam_update_all(weights, grads, ms, vs, alpha, beta_1, beta_2, epsilon):
    total = sum(w.size for w in weights)
    workers = min(worker_threads(), total // MIN_ELEMENTS_PER_THREAD)
    if workers <= 1:
        for w, g, m, v in zip(weights, grads, ms, vs):
            adam_update(w, g, m, v, alpha, beta_1, beta_2, epsilon)
        return
    segments, total = [], 0
    for w, g, m, v in zip(weights, grads, ms, vs):
        if not (_flat_view_ok(w) and _flat_view_ok(m) and _flat_view_ok(v)):
            adam_update(w, g, m, v, alpha, beta_1, beta_2, epsilon)
            continue
        segments.append((w.reshape(-1), np.reshape(g, -1), m.reshape(-1), v.reshape(-1)))
        total += w.size
    args = (alpha, beta_1, beta_2, epsilon)
    # two pieces per thread, so that one thread can take over from another the OS runs late
    pieces = _shares(segments, total, 2 * workers)
    run_shared(lambda piece: _adam_share(piece, args), pieces, helpers=workers - 1)


def run_shared(task, pieces, helpers):
    """``task(piece)`` for every piece, on this thread and up to ``helpers`` pool threads.

    Threads claim pieces one at a time, so a helper that the OS starts late (a
    busy machine) costs nothing: this thread carries on with the pieces left.
    Returns once every piece is done; re-raises the first exception of a task.
    """
    if helpers <= 0 or len(pieces) <= 1:
        for piece in pieces:
            task(piece)
        return
    work = _SharedWork(task, pieces)
    pool = thread_pool()
    for _ in range(min(helpers, len(pieces) - 1)):
        pool.submit(work.run)
    work.run()
    work.wait()


class _SharedWork:
    def __init__(self, task, pieces):
        self.task, self.pieces = task, pieces
        self.claims = itertools.count()  # next() on it is atomic under the GIL
        self.left = len(pieces)
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.error = None

    def run(self):
        for i in self.claims:
            if i >= len(self.pieces):
                return
            try:
                self.task(self.pieces[i])
            except BaseException as error:  # handed to the waiting caller
                self.error = self.error or error
            with self.lock:
                self.left -= 1
                if not self.left:
                    self.finished.set()

    def wait(self):
        self.finished.wait()
        if self.error is not None:
            raise self.error


def _flat_view_ok(a):
    """Whether ``a.reshape(-1)`` is a view (so in-place updates of it reach ``a``)."""
    return type(a) is np.ndarray and a.flags.c_contiguous


def _adam_share(segments, args):
    slot = ("adam", threading.get_ident())  # a scratch per thread: shares run at once
    for w, g, m, v in segments:
        t = scratch((w.size,), w.dtype, slot=slot)
        adam_update(w, g, m, v, *args, t=t)


def _shares(segments, total, workers):
    """``segments`` (tuples of equally long 1-D arrays) cut into ``workers`` runs of
    about ``total / workers`` elements each, splitting a segment where a run ends."""
    if workers <= 1:
        return [segments]
    size = -(-total // workers)
    shares, current, room = [], [], size
    for segment in segments:
        start, n = 0, segment[0].size
        while start < n:
            take = min(room, n - start)
            current.append(tuple(a[start : start + take] for a in segment))
            start, room = start + take, room - take
            if room == 0:
                shares.append(current)
                current, room = [], size
    if current:
        shares.append(current)
    return shares


KERNELS["adam_update_many"] = adam_update_many


def relu_inplace(y):
    """``maximum(y, 0)`` written into ``y`` (a fresh array nobody else holds)."""
    return np.maximum(y, 0, out=y)


_UNSIGNED = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


def relu_grad(g, y):
    """``where(y > 0, g, 0)``: the gradient through a ReLU whose output is ``y``.

    ``np.where`` branches per element, and on a ReLU's half-zero mask the branch
    guesses fail half the time (0.22 ms for a 128 x 512 batch, against 0.02 ms
    here). Here the mask becomes words of all ones or all zeros that are ANDed
    with ``g``'s bits: the same values ``where`` gives, NaN and inf included.
    """
    unsigned = _UNSIGNED.get(g.dtype)
    if unsigned is None or y.shape != g.shape:
        return np.where(y > 0, g, g.dtype.type(0))
    mask = (y > 0).astype(unsigned)
    np.negative(mask, out=mask)  # 1 -> all ones
    np.bitwise_and(g.view(unsigned), mask, out=mask)
    return mask.view(g.dtype)


KERNELS["relu_inplace"] = relu_inplace
KERNELS["relu_grad"] = relu_grad


def label_range_error(labels, classes):
    """The error for integer ``labels`` not all in ``[0, classes)`` (the sparse cross-entropy
    kernels check, since they index with the labels)."""
    low, high = int(labels.min()), int(labels.max())
    return ValueError(
        f"sparse_softmax_cross_entropy: labels must lie in [0, {classes - 1}] for predictions "
        f"with {classes} classes, got labels in [{low}, {high}]"
    )


def sparse_softmax_cross_entropy(logits, labels):
    """Per-sample ``-log_softmax(logits)[label]`` ``(...)`` and the softmax ``(..., classes)``;
    a label outside ``[0, classes)`` raises ValueError."""
    classes = logits.shape[-1]
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise label_range_error(labels, classes)
    flat = logits.reshape(-1, classes)
    shifted = flat - np.maximum.reduce(flat, axis=1, keepdims=True)
    probabilities = np.exp(shifted)
    sums = np.add.reduce(probabilities, axis=1, keepdims=True)
    picked = shifted[np.arange(flat.shape[0]), labels.reshape(-1)]
    loss = np.log(sums[:, 0]) - picked
    probabilities /= sums
    return loss.reshape(labels.shape), probabilities.reshape(logits.shape)


def sparse_softmax_cross_entropy_backward(g, probabilities, labels):
    """``g[..., None] * (softmax - one_hot(labels))`` without building the one-hot matrix."""
    grad = probabilities.copy()
    flat = grad.reshape(-1, grad.shape[-1])
    flat[np.arange(flat.shape[0]), labels.reshape(-1)] -= 1
    grad *= g[..., None]
    return grad


KERNELS["sparse_softmax_cross_entropy"] = sparse_softmax_cross_entropy
KERNELS["sparse_softmax_cross_entropy_backward"] = sparse_softmax_cross_entropy_backward


def take_backward(g, indices, input_shape, axis):
    """The gradient of ``take(x, indices, axis)`` for ``x`` of ``input_shape``: ``g`` (``x``'s
    shape with ``axis`` replaced by ``indices.shape``) added into zeros at ``indices`` along
    ``axis``; repeated indices add up, in their order in ``indices``.

    The generic op builds a one-hot ``(len(indices), input_shape[axis])`` matrix and
    multiplies: for an Embedding of 5000 words and a batch of 64 x 50 tokens, a 64 MB
    matrix and 33 ms. Here the rows of ``g`` are sorted by index and summed per index
    (``np.add.reduceat``): about 1 ms.
    """
    n = input_shape[axis]
    rest = input_shape[:axis] + input_shape[axis + 1 :]
    flat = indices.reshape(-1).astype(np.intp, copy=False)
    flat = np.where(flat < 0, flat + n, flat)  # as take reads negative indices
    k = indices.ndim
    width = math.prod(rest)
    rows = np.moveaxis(g, tuple(range(axis, axis + k)), tuple(range(k))).reshape(flat.size, width)
    out = np.zeros((n, width), g.dtype)
    if flat.size:
        order = np.argsort(flat, kind="stable")
        ordered = flat[order]
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        out[ordered[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    return np.ascontiguousarray(np.moveaxis(out.reshape((n,) + rest), 0, axis))


KERNELS["take_backward"] = take_backward


# kernels of the op families, each in a module of its own
from .numpy_conv import CONV_KERNELS  # noqa: E402

KERNELS.update(CONV_KERNELS)

from .numpy_rnn import RNN_KERNELS  # noqa: E402

KERNELS.update(RNN_KERNELS)
