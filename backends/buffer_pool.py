"""Reusable NumPy buffers for kernels whose large arrays live from one call to the next.

A training step allocates the same large arrays every time (the saved states of a
recurrent loop, its gradients). Fresh ``np.empty`` arrays of more than a few
hundred KiB come from new pages of memory, and touching those pages for the
first time costs a page fault each: about 2,500 faults, a few milliseconds of
system time, per ``lstm_train`` step. :func:`pooled` hands out a kept buffer of
the asked shape instead, but only one that nothing references any more: a
buffer is free when the pool's own list holds its only reference (every view
of an array, e.g. an output slice a caller kept, holds a reference to it), so a
buffer that escaped into a caller's hands is never handed out again while it
is alive.

The buffers come uninitialised (previous contents); callers write every element.
"""

import math
import sys
import threading

import numpy as np

POOL_BYTES = 64 << 20  # at most this much memory kept for reuse
MIN_BYTES = 64 << 10  # smaller arrays come cheaply from the allocator's free lists

_POOL = {}  # (shape, dtype.str) -> list of arrays
_LOCK = threading.Lock()
_KEPT = [0]  # bytes held by the pool


def _references(buffers, index):
    return sys.getrefcount(buffers[index])


# the count _references reports for an array that only the pool's list holds
_FREE = _references([np.empty(1)], 0)


def pooled(shape, dtype):
    """An uninitialised array of ``shape``/``dtype``: a free kept buffer when there is one."""
    dtype = np.dtype(dtype)
    shape = tuple(shape)
    nbytes = dtype.itemsize * math.prod(shape)
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    key = (shape, dtype.str)
    with _LOCK:
        buffers = _POOL.get(key)
        if buffers is None:
            buffers = _POOL[key] = []
        for index in range(len(buffers)):
            if _references(buffers, index) == _FREE:
                return buffers[index]
        buffer = np.empty(shape, dtype)
        if _KEPT[0] + nbytes > POOL_BYTES:
            _evict(nbytes)
        if _KEPT[0] + nbytes <= POOL_BYTES:
            buffers.append(buffer)
            _KEPT[0] += nbytes
        return buffer


def _evict(nbytes):
    """Drop free buffers (any shape) until ``nbytes`` more fit under ``POOL_BYTES``."""
    for key in list(_POOL):
        buffers = _POOL[key]
        for index in range(len(buffers) - 1, -1, -1):
            if _KEPT[0] + nbytes <= POOL_BYTES:
                return
            if _references(buffers, index) == _FREE:
                _KEPT[0] -= buffers.pop(index).nbytes
        if not buffers:
            del _POOL[key]


def clear():
    """Forget every kept buffer (arrays still in use stay valid)."""
    with _LOCK:
        _POOL.clear()
        _KEPT[0] = 0


def kept_bytes():
    """Bytes of memory the pool holds (free or in use)."""
    return _KEPT[0]
