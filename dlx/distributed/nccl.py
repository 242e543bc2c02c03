"""NCCL through ``cupy.cuda.nccl``: collectives on GPU memory (the cupy backend).

UNTESTED ON A GPU: written against CuPy's documented API and exercised only
by review; the CPU test suite runs the MPI engine.

Set-up (once, collectively): MPI gives every process its rank; rank 0 draws an
NCCL unique id with ``nccl.get_unique_id()`` and broadcasts it over MPI; each
rank creates ``nccl.NcclCommunicator(size, uid, rank)`` on the GPU it uses
(``local_rank % device count``, chosen by :func:`select_device`).

Data flow of :meth:`NCCLCommunicator.allreduce_array`: the packed bucket (one
contiguous 1-D CuPy array, see :mod:`.base`) is summed in place by
``allReduce(ptr, ptr, count, dtype, NCCL_SUM, stream)`` on the current CUDA
stream, so it is ordered after the backward kernels that produced the
gradients and before the optimizer kernels that read them; no host copy and no
synchronisation. Host values (metric sums) and objects still go through MPI.

CuPy is reached through the cupy backend object (``backend.cupy``), never
imported here.
"""

import time

from ..backends import backend_of
from .base import Communicator

_NCCL_DTYPES = {
    "float16": "NCCL_FLOAT16",
    "float32": "NCCL_FLOAT32",
    "float64": "NCCL_FLOAT64",
    "int32": "NCCL_INT32",
    "int64": "NCCL_INT64",
    "uint8": "NCCL_UINT8",
    "int8": "NCCL_INT8",
}


def select_device(backend, local_rank):
    """Make GPU ``local_rank % count`` current for this process and for ``backend``.

    Must run before the model creates its weights (``dlx.distributed.init()``
    does it first thing when the current backend is cupy).
    """
    cupy = backend.cupy
    count = cupy.cuda.runtime.getDeviceCount()
    device = cupy.cuda.Device(local_rank % count)
    device.use()
    backend.device = device
    return device


class NCCLCommunicator(Communicator):
    """NCCL all-reduce/broadcast on device buffers; everything else through ``mpi``."""

    engine = "nccl"

    def __init__(self, mpi, backend):
        super().__init__()
        self.mpi, self.backend = mpi, backend
        self.rank, self.size, self.local_rank = mpi.rank, mpi.size, mpi.local_rank
        self.nccl = backend.cupy.cuda.nccl
        uid = self.nccl.get_unique_id() if mpi.rank == 0 else None
        uid = mpi.broadcast_object(uid, root=0)
        self.comm = self.nccl.NcclCommunicator(mpi.size, uid, mpi.rank)

    def _dtype(self, flat):
        name = str(flat.dtype)
        if name not in _NCCL_DTYPES:
            raise TypeError(
                f"NCCL all-reduce: dtype {name} is not supported; use one of {sorted(_NCCL_DTYPES)}"
            )
        return getattr(self.nccl, _NCCL_DTYPES[name])

    def _is_device(self, flat):
        return backend_of(flat) is self.backend

    def allreduce_array(self, flat):
        if self.size == 1:
            return flat
        if not self._is_device(flat):  # host arrays (e.g. a NumPy model on a GPU job)
            return self.mpi.allreduce_array(flat)
        start = time.perf_counter()
        stream = self.backend.cupy.cuda.get_current_stream()
        count = flat.size
        self.comm.allReduce(
            flat.data.ptr, flat.data.ptr, count, self._dtype(flat), self.nccl.NCCL_SUM, stream.ptr
        )
        self.stats["allreduce_seconds"] += time.perf_counter() - start  # launch time only
        self.stats["allreduce_calls"] += 1
        self.stats["allreduce_bytes"] += flat.nbytes
        return flat

    def broadcast_array(self, flat, root=0):
        if self.size == 1:
            return flat
        if not self._is_device(flat):
            return self.mpi.broadcast_array(flat, root)
        stream = self.backend.cupy.cuda.get_current_stream()
        self.comm.bcast(flat.data.ptr, flat.size, self._dtype(flat), root, stream.ptr)
        return flat

    def allreduce_floats(self, values):
        return self.mpi.allreduce_floats(values)

    def broadcast_object(self, obj, root=0):
        return self.mpi.broadcast_object(obj, root)

    def allgather_object(self, obj):
        return self.mpi.allgather_object(obj)

    def barrier(self):
        self.backend.cupy.cuda.get_current_stream().synchronize()
        self.mpi.barrier()

    def abort(self, code=1):
        self.mpi.abort(code)
