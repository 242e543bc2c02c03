"""What every collective engine offers, and how gradients travel in buckets.

Data flow of one all-reduce of many arrays (gradients, weights):

1. :func:`plan_buckets` groups the arrays, in order, into buckets of one
   backend and one dtype holding at most ``bucket_bytes`` each (an array larger
   than that gets a bucket of its own).
2. :func:`pack` flattens the arrays of a bucket into ONE contiguous 1-D array
   with the backend's own ``xp`` (``concat`` of reshaped arrays): one
   collective call per bucket instead of one per tensor.
3. The engine reduces (or broadcasts) that buffer: MPI on host memory
   (:mod:`.mpi`), NCCL on GPU memory (:mod:`.nccl`).
4. :func:`unpack` slices the reduced buffer back into arrays of the original
   shapes (views of the buffer where the namespace allows it).

Nothing here imports NumPy or CuPy: buffers are arrays of whatever backend
owns the gradients, handled through their Array API namespace.
"""

import math

from ..backends import backend_of

DEFAULT_BUCKET_BYTES = 4 * 2**20  # 4 MiB: big enough to amortise latency, small to overlap later


class Communicator:
    """The collectives dlx needs. ``rank``/``size`` identify this process in the job.

    Array methods take and return 1-D contiguous arrays of a backend; they may
    work in place and return the same array, or return a new one (callers use
    the return value). Float methods move a few host numbers (metric sums).
    """

    rank = 0
    size = 1
    local_rank = 0
    engine = "none"

    def __init__(self):
        self.stats = {"allreduce_seconds": 0.0, "allreduce_calls": 0, "allreduce_bytes": 0}

    def reset_stats(self):
        for key in self.stats:
            self.stats[key] = 0 if isinstance(self.stats[key], int) else 0.0

    # -- arrays ----------------------------------------------------------------------
    def allreduce_array(self, flat):
        """The element-wise sum of ``flat`` over all ranks."""
        raise NotImplementedError

    def broadcast_array(self, flat, root=0):
        """Rank ``root``'s ``flat`` on every rank."""
        raise NotImplementedError

    # -- host values ----------------------------------------------------------------
    def allreduce_floats(self, values):
        """Sums over ranks of a list of Python floats (metric totals and counts)."""
        raise NotImplementedError

    def broadcast_object(self, obj, root=0):
        raise NotImplementedError

    def allgather_object(self, obj):
        raise NotImplementedError

    def barrier(self):
        raise NotImplementedError

    def abort(self, code=1):
        raise SystemExit(code)


class SingleProcess(Communicator):
    """The world of one process: every collective is the identity (no MPI needed)."""

    engine = "single"

    def allreduce_array(self, flat):
        return flat

    def broadcast_array(self, flat, root=0):
        return flat

    def allreduce_floats(self, values):
        return [float(v) for v in values]

    def broadcast_object(self, obj, root=0):
        return obj

    def allgather_object(self, obj):
        return [obj]

    def barrier(self):
        pass


# -- buckets ----------------------------------------------------------------------------
def itemsize(xp, dtype):
    """Bytes per element of ``dtype`` (floating, integer or bool) in namespace ``xp``."""
    try:
        return xp.finfo(dtype).bits // 8
    except (TypeError, ValueError):
        pass
    try:
        return xp.iinfo(dtype).bits // 8
    except (TypeError, ValueError):
        return 1  # bool


def plan_buckets(arrays, bucket_bytes=DEFAULT_BUCKET_BYTES):
    """Index lists: consecutive arrays of one backend and dtype, at most ``bucket_bytes`` each."""
    buckets, current, key, used = [], [], None, 0
    for i, a in enumerate(arrays):
        backend = backend_of(a)
        nbytes = math.prod(a.shape) * itemsize(backend.xp, a.dtype)
        this_key = (backend.name, str(a.dtype))
        if current and (this_key != key or used + nbytes > bucket_bytes):
            buckets.append(current)
            current, used = [], 0
        current.append(i)
        key, used = this_key, used + nbytes
    if current:
        buckets.append(current)
    return buckets


def pack(arrays):
    """One contiguous 1-D array holding ``arrays`` (same backend and dtype) one after another."""
    xp = backend_of(arrays[0]).xp
    flat = [xp.reshape(a, (-1,)) for a in arrays]
    return xp.concat(flat) if len(flat) > 1 else xp.asarray(flat[0], copy=True)


def unpack(flat, shapes):
    """Arrays of ``shapes`` sliced from ``flat`` in order (the inverse of :func:`pack`)."""
    xp = backend_of(flat).xp
    out, offset = [], 0
    for shape in shapes:
        n = math.prod(shape)
        out.append(xp.reshape(flat[offset : offset + n], tuple(shape)))
        offset += n
    return out
