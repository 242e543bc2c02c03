"""MPI through mpi4py: collectives on host memory (the NumPy and array_api_strict backends).

Data flow of :meth:`MPICommunicator.allreduce_array`: the packed bucket (one
contiguous 1-D backend array, see :mod:`.base`) is viewed as host
memory with ``backend.to_numpy`` (no copy for the ``numpy`` backend, a copy
for the others), summed over ranks with ONE in-place ``MPI_Allreduce``, and
handed back as an array of the same backend.

mpi4py is imported only by :func:`import_mpi`, which :func:`dlx.distributed.init`
calls: importing dlx (or dlx.distributed) never loads MPI. Small host values
(metric sums) travel in a stdlib ``array('d')`` buffer, so this module needs no
NumPy import of its own.
"""

import array
import os
import sys
import time
import traceback

from ..backends import backend_of
from .base import Communicator

# environment variables that MPI launchers set in the processes they start
LAUNCHER_VARIABLES = (
    "PMI_RANK",
    "PMI_SIZE",
    "PMIX_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "MPI_LOCALNRANKS",
    "HYDI_CONTROL_FD",
    "MV2_COMM_WORLD_SIZE",
    "SLURM_STEP_NUM_TASKS",
)

INSTALL_HINT = 'pip install "dlx[distributed]"  (installs mpi4py and the mpich runtime from PyPI)'


def launched_by_mpi():
    """True when an MPI launcher (``mpiexec``/``srun``) started this process."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def import_mpi():
    """``mpi4py.MPI``, or None when mpi4py is missing and no launcher started us.

    Raises ImportError (with the install command) when a launcher started this
    process but mpi4py is missing: running on would train N separate models.
    """
    try:
        from mpi4py import MPI
    except ImportError as error:
        if launched_by_mpi():
            raise ImportError(
                f"dlx.distributed: this process was started by an MPI launcher but mpi4py is "
                f"not installed; {INSTALL_HINT}"
            ) from error
        return None
    return MPI


class MPICommunicator(Communicator):
    """Collectives of ``MPI.COMM_WORLD`` (or ``comm``) on host buffers."""

    engine = "mpi"

    def __init__(self, MPI, comm=None):
        super().__init__()
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        # ranks on this node (for picking a GPU per process)
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()

    def allreduce_array(self, flat):
        if self.size == 1:
            return flat
        backend = backend_of(flat)
        start = time.perf_counter()
        host = backend.to_numpy(flat)
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        result = flat if host is flat else backend.asarray(host)
        self.stats["allreduce_seconds"] += time.perf_counter() - start
        self.stats["allreduce_calls"] += 1
        self.stats["allreduce_bytes"] += host.nbytes
        return result

    def broadcast_array(self, flat, root=0):
        if self.size == 1:
            return flat
        backend = backend_of(flat)
        host = backend.to_numpy(flat)
        self.comm.Bcast(host, root=root)
        return flat if host is flat else backend.asarray(host)

    def allreduce_floats(self, values):
        if self.size == 1:
            return [float(v) for v in values]
        start = time.perf_counter()
        buffer = array.array("d", (float(v) for v in values))
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        self.stats["allreduce_seconds"] += time.perf_counter() - start
        return list(buffer)

    def broadcast_object(self, obj, root=0):
        return self.comm.bcast(obj, root=root)

    def allgather_object(self, obj):
        return self.comm.allgather(obj)

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code=1):
        self.comm.Abort(code)


def install_abort_on_error(communicator):
    """Make an uncaught exception on any rank print its traceback and end the whole job.

    Without this, the other ranks would wait forever in their next collective.
    (``mpiexec -n N python -m mpi4py script.py`` does the same for any script.)
    """
    previous = sys.excepthook

    def excepthook(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            return previous(kind, value, tb)
        sys.stderr.write(
            f"dlx.distributed: rank {communicator.rank} of {communicator.size} failed:\n"
            + "".join(traceback.format_exception(kind, value, tb))
        )
        sys.stderr.flush()
        sys.stdout.flush()
        # MPI_Abort can end mpiexec's output forwarding before it has passed on what was just
        # written (seen once in a full test run on a busy machine): give it a moment
        time.sleep(0.2)
        communicator.abort(1)

    sys.excepthook = excepthook
