"""Data-parallel training over several processes: MPI on the CPU, NCCL on GPUs.

Launch one process per CPU socket or GPU with an MPI launcher::

    mpiexec -n 2 python train.py              # mpiexec comes with `pip install "dlx[distributed]"`

and in ``train.py``::

    import dlx
    import dlx.distributed as dist

    dist.init()                                # reads rank/size from the launcher
    dlx.set_seed(0)                            # rank 0's seed and weights are what count
    model = ...; model.compile(...)
    model.fit(x, y, batch_size=64, distributed=True)   # 64 = the global batch

What happens (see :class:`DataParallel` for the per-step data flow): every
rank holds the full model and the full data set; the weights and the host
random state are broadcast from rank 0 when ``fit`` starts; every epoch all
ranks draw the same shuffle and each takes its contiguous share of every
global batch; after ``backward()`` the gradients are summed over ranks
(weighted by shard size, so the result is the gradient of the global batch)
in a few large buckets - MPI ``Allreduce`` on host memory, NCCL ``allReduce``
on GPU memory - and every rank applies the same update, so weights stay
identical. Metric sums are added over ranks, so the progress bar and
``History`` show global values; only rank 0 prints and writes checkpoints.

Custom training loops use :func:`allreduce_gradients` between
``loss.backward()`` and ``optimizer.apply_gradients``, :func:`shard` to take
this rank's share of a global batch and :func:`broadcast_weights` once at the
start.

Without mpi4py, and when no launcher started the process, everything works
as a world of one process. mpi4py is imported by :func:`init` only, never by
``import dlx``. After ``init`` an uncaught exception on any rank prints its
traceback and aborts the whole job (``MPI_Abort``) instead of leaving the
other ranks waiting forever.
"""

from ..autograd import Tensor, no_grad
from ..backends import backend_of, get_backend
from .base import DEFAULT_BUCKET_BYTES, Communicator, SingleProcess, pack, plan_buckets, unpack

_COMM = None

__all__ = [
    "Communicator",
    "DataParallel",
    "allreduce_arrays",
    "allreduce_gradients",
    "average_variables",
    "barrier",
    "broadcast_variables",
    "broadcast_weights",
    "check_weights_identical",
    "communicator",
    "init",
    "is_initialized",
    "is_main_process",
    "local_rank",
    "rank",
    "shard",
    "world_size",
]


def init(engine="auto", abort_on_error=True):
    """Join the job started by the MPI launcher; returns the :class:`Communicator`.

    ``engine``: ``"auto"`` (NCCL for arrays of the cupy backend, MPI otherwise),
    ``"mpi"`` (host MPI for everything) or ``"nccl"``. Calling it again returns
    the same communicator. On the cupy backend it first makes GPU
    ``local_rank % count`` current, so call it before building the model.
    ``abort_on_error`` installs the hook that ends the whole job when a rank
    raises.
    """
    global _COMM
    if engine not in ("auto", "mpi", "nccl"):
        raise ValueError(
            f"dlx.distributed.init: engine must be 'auto', 'mpi' or 'nccl', got {engine!r}"
        )
    if _COMM is not None:
        return _COMM
    from . import mpi

    MPI = mpi.import_mpi()
    if MPI is None:
        if engine == "nccl":
            raise ImportError(
                f"dlx.distributed.init(engine='nccl') needs mpi4py; {mpi.INSTALL_HINT}"
            )
        _COMM = SingleProcess()
        return _COMM
    host = mpi.MPICommunicator(MPI)
    backend = get_backend()
    use_nccl = engine == "nccl" or (engine == "auto" and backend.name == "cupy" and host.size > 1)
    if use_nccl:
        if backend.name != "cupy":
            raise ValueError(
                f"dlx.distributed.init(engine='nccl') needs the cupy backend; the current "
                f"backend is {backend.name!r} (dlx.set_backend('cupy') first)"
            )
        from . import nccl

        nccl.select_device(backend, host.local_rank)
        _COMM = nccl.NCCLCommunicator(host, backend)
    else:
        _COMM = host
    if abort_on_error and _COMM.size > 1:
        mpi.install_abort_on_error(_COMM)
    return _COMM


def is_initialized():
    return _COMM is not None


def communicator():
    """The job's :class:`Communicator` (:func:`init` is called on first use)."""
    return _COMM if _COMM is not None else init()


def rank():
    """This process's index in the job, 0 .. world_size() - 1."""
    return communicator().rank


def world_size():
    """The number of processes in the job."""
    return communicator().size


def local_rank():
    """This process's index among the processes on its machine (picks its GPU)."""
    return communicator().local_rank


def is_main_process():
    """True on rank 0, the rank that prints and writes files."""
    return communicator().rank == 0


def barrier():
    """Wait until every rank arrives here."""
    communicator().barrier()


def _variables(variables):
    variables = list(variables)
    for i, v in enumerate(variables):
        if not isinstance(v, Tensor):
            raise TypeError(f"expected Variables/Tensors, got {type(v).__name__} at position {i}")
    return variables


def _check_layout(comm, what, arrays, cache):
    """Collectively check that every rank passes arrays of the same shapes and dtypes.

    Done once per layout (``cache`` remembers the layouts already checked), so
    a mismatch is a clear error naming the ranks instead of a hang or silently
    mixed buffers. (Not caught: a rank that goes back to a layout checked before
    while another moves on to a new one.)
    """
    layout = tuple((tuple(a.shape), str(a.dtype)) for a in arrays)
    if comm.size == 1 or layout in cache:
        return
    layouts = comm.allgather_object(layout)
    for r, other in enumerate(layouts):
        if other != layouts[0]:
            first = next(
                (i for i, (a, b) in enumerate(zip(layouts[0], other)) if a != b),
                min(len(other), len(layouts[0])),
            )
            mine = layouts[0][first] if first < len(layouts[0]) else "nothing"
            theirs = other[first] if first < len(other) else "nothing"
            raise ValueError(
                f"dlx.distributed {what}: rank 0 has {len(layouts[0])} arrays, rank {r} has "
                f"{len(other)}; array {first} is {mine} on rank 0 but {theirs} on rank {r} "
                f"(shape, dtype); every rank must run the same model"
            )
    cache.add(layout)


_LAYOUTS_CHECKED = set()


def allreduce_arrays(arrays, scale=None, bucket_bytes=DEFAULT_BUCKET_BYTES, comm=None):
    """Sums over ranks of ``arrays`` (each first multiplied by ``scale``), in buckets.

    Data flow: arrays -> per-bucket ``pack`` (xp.concat of flattened arrays)
    -> optional in-place scale -> one engine all-reduce per bucket -> ``unpack``
    (slices of the reduced buffer). Returns new arrays; the inputs are not changed.
    """
    comm = comm or communicator()
    arrays = list(arrays)
    if not arrays:
        return []
    _check_layout(comm, "all-reduce", arrays, _LAYOUTS_CHECKED)
    out = [None] * len(arrays)
    for bucket in plan_buckets(arrays, bucket_bytes):
        flat = pack([arrays[i] for i in bucket])
        if scale is not None and scale != 1:
            flat *= scale
        flat = comm.allreduce_array(flat)
        for i, piece in zip(bucket, unpack(flat, [arrays[i].shape for i in bucket])):
            out[i] = piece
    return out


def allreduce_gradients(
    variables, average=True, scale=None, bucket_bytes=DEFAULT_BUCKET_BYTES, comm=None
):
    """Replace ``v.grad`` of every variable by its sum (or mean) over all ranks.

    For custom training loops, between ``loss.backward()`` and
    ``optimizer.apply_gradients``. ``average=True`` divides by the world size
    (right when every rank's loss is a mean over an equal share of the global
    batch); ``scale`` overrides that factor (e.g. ``local_batch / global_batch``
    for unequal shares). Variables whose ``grad`` is None are skipped (they must
    be the same on every rank). Gradients travel in contiguous buckets of about
    ``bucket_bytes``, not one call per tensor. ``comm``: a communicator other
    than the job's. Returns the variables whose gradients were reduced.
    """
    comm = comm or communicator()
    variables = [v for v in _variables(variables) if v.grad is not None]
    if comm.size == 1 and scale in (None, 1):
        return variables
    if scale is None:
        scale = 1.0 / comm.size if average else 1.0
    reduced = allreduce_arrays([v.grad for v in variables], scale, bucket_bytes, comm)
    for v, g in zip(variables, reduced):
        v.grad = g
    return variables


def broadcast_variables(variables, root=0, comm=None):
    """Give every rank rank ``root``'s values of ``variables`` (in place of each Variable)."""
    comm = comm or communicator()
    variables = _variables(variables)
    if comm.size == 1 or not variables:
        return
    arrays = [v.value for v in variables]
    _check_layout(comm, "broadcast", arrays, _LAYOUTS_CHECKED)
    with no_grad():
        for bucket in plan_buckets(arrays):
            flat = comm.broadcast_array(pack([arrays[i] for i in bucket]), root)
            for i, piece in zip(bucket, unpack(flat, [arrays[i].shape for i in bucket])):
                variables[i].value = piece


def broadcast_weights(model, root=0, comm=None):
    """Every weight of ``model`` (trainable or not) set to rank ``root``'s values."""
    broadcast_variables(model.weights, root, comm)


def average_variables(variables, comm=None):
    """Replace each floating-point variable by its mean over ranks (e.g. BatchNorm statistics)."""
    comm = comm or communicator()
    variables = [v for v in _variables(variables) if _is_floating(v.value)]
    if comm.size == 1 or not variables:
        return
    reduced = allreduce_arrays([v.value for v in variables], 1.0 / comm.size, comm=comm)
    for v, value in zip(variables, reduced):
        v.value = value


def _is_floating(array):
    xp = backend_of(array).xp
    return xp.isdtype(array.dtype, "real floating")


def check_weights_identical(model_or_variables, atol=0.0):
    """Raise ValueError naming the weight and the ranks when ranks hold different weights.

    Compares a per-weight checksum (sum and sum of squares, on the host) and,
    where they differ, the largest absolute difference to rank 0's values.
    """
    comm = communicator()
    variables = list(getattr(model_or_variables, "weights", model_or_variables))
    if comm.size == 1:
        return
    sums = [_checksum(v.value) for v in variables]
    everyone = comm.allgather_object(sums)
    bad = []
    for r, other in enumerate(everyone):
        for i, (a, b) in enumerate(zip(everyone[0], other)):
            if abs(a[0] - b[0]) > atol or abs(a[1] - b[1]) > atol:
                bad.append(
                    f"weight {i} ({getattr(variables[i], 'name', None)!r}, "
                    f"shape {variables[i].shape}): rank 0 sum {a[0]!r}, rank {r} sum {b[0]!r}"
                )
    if bad:
        raise ValueError("dlx.distributed: ranks hold different weights: " + "; ".join(bad[:5]))


def _checksum(array):
    xp = backend_of(array).xp
    wide = xp.astype(array, xp.float64) if xp.isdtype(array.dtype, "real floating") else array
    return float(xp.sum(wide)), float(xp.sum(wide * wide))


def shard(data, index=None, count=None):
    """This rank's contiguous share of the rows of ``data`` (an array or list/dict of arrays).

    ``index``/``count`` default to this rank and the world size. Rank r of W
    gets rows ``[r * n // W, (r + 1) * n // W)``, so the shards of all ranks,
    in rank order, are the global batch again.
    """
    from ..data.batching import num_samples, take_samples

    if index is None or count is None:
        comm = communicator()
        index = comm.rank if index is None else index
        count = comm.size if count is None else count
    r, w = index, count
    n = num_samples(data, names=("data",))
    return take_samples(data, slice(n * r // w, n * (r + 1) // w))


from .data_parallel import DataParallel  # noqa: E402
