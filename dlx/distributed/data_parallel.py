"""``fit(..., distributed=True)``: the hook that makes one training loop data-parallel.

``fit`` creates one :class:`DataParallel` per call (or takes the one given as
``distributed=``) and calls it at five points; everything else in the loop is
unchanged:

1. ``shard(batches)`` - wraps the epoch's :class:`~dlx.data.batching.ArrayBatches`.
   Every rank draws the SAME permutation from the host generator (its state is
   rank 0's, see 3.; ranks other than 0 then fork to a stream of their own, so
   Dropout masks differ between shards) and takes its contiguous share of each
   global batch of ``batch_size`` rows: rank r of W gets rows
   ``[r*B//W, (r+1)*B//W)`` of a batch of B. A last batch with fewer rows than
   ranks is dropped (so no rank runs an empty step); a ragged last batch gives
   unequal shares, weighted below.
2. ``callbacks(list)`` / ``verbose`` - only rank 0 keeps the progress bar and
   the callbacks that write files (checkpoints, CSV logs); the others train silently.
3. ``on_train_begin(model)`` - broadcasts rank 0's weights and host random state.
4. ``reduce_gradients(variables)`` - called by ``train_step`` between
   ``backward()`` and ``apply_gradients``: each rank multiplies its gradients
   by ``local rows / global rows`` and they are summed over ranks in
   contiguous buckets. Each rank's loss is a mean over its shard, so the sum is
   exactly the gradient of the mean loss over the global batch (and layer
   penalties, the same on every rank, are counted once). Every rank then applies
   the same update: the weights stay identical with no further communication.
5. ``batch_logs(model, loss)`` / ``epoch_logs(model)`` - metric running sums
   (loss and metric totals and counts) are summed over ranks, so the progress
   bar, callbacks and ``History`` see the metrics of the global batches - the
   same numbers on every rank, so EarlyStopping etc. decide alike. At epoch end,
   non-trainable float weights (BatchNormalization moving statistics, updated
   from local shards) are averaged over ranks, so checkpoints and validation
   see identical weights everywhere, and every rank takes rank 0's random
   state again (for the next epoch's common shuffle); validation then runs on
   every rank on the full validation data.
"""

import hashlib
import warnings

from ..backends import get_backend, get_random_state, permutation, set_random_state
from ..data.batching import take_samples
from . import DEFAULT_BUCKET_BYTES, allreduce_gradients, average_variables, broadcast_weights
from . import communicator as get_communicator

# callbacks that write files or print: kept on rank 0 only
MAIN_PROCESS_ONLY = {
    "ProgbarLogger",
    "ModelCheckpoint",
    "CSVLogger",
    "TensorBoard",
    "BackupAndRestore",
}


def _derived(value, rank):
    """A 128-bit number from ``value`` and ``rank`` (a new generator state per rank)."""
    digest = hashlib.sha256(f"dlx.distributed:{value}:{rank}".encode()).digest()
    return int.from_bytes(digest[:16], "little")


def fork_random_state(rank):
    """Give rank ``rank`` > 0 its own host random stream, derived from the common one.

    Every rank draws the epoch's shuffle from the same state; afterwards the
    random layers (Dropout, noise) should draw different masks for different
    shards, so ranks other than 0 move to a state hashed from the common state
    and their rank (rank 0 keeps the common stream, as one process would).
    :meth:`DataParallel.epoch_logs` makes the streams common again (rank 0's).
    """
    if rank == 0:
        return
    state = get_random_state()
    state["state"]["state"] = _derived(state["state"]["state"], rank)
    set_random_state(state)


class ShardedBatches:
    """This rank's share of every global batch of an ``ArrayBatches`` (see the module docstring)."""

    def __init__(self, batches, rank, size):
        if batches.batch_size < size:
            raise ValueError(
                f"fit(distributed=True): batch_size={batches.batch_size} is smaller than the "
                f"world size {size}; batch_size is the global batch and each of the {size} ranks "
                f"needs at least one row of it"
            )
        if batches.n < size:
            raise ValueError(
                f"fit(distributed=True): {batches.n} samples cannot be shared by {size} ranks; "
                f"every rank needs at least one sample of each batch"
            )
        self.batches, self.rank, self.size = batches, rank, size
        self.n, self.batch_size = batches.n, batches.batch_size
        self.scale = 1.0  # local rows / global rows of the batch last yielded
        self.global_rows = 0
        full = len(batches)
        tail = self.n - (full - 1) * self.batch_size if full else 0
        self._len = full - 1 if full and tail < size else full
        if self._len < full and rank == 0:
            warnings.warn(
                f"fit(distributed=True): the last batch of {tail} samples (n={self.n}, "
                f"batch_size={self.batch_size}) has fewer rows than the {size} ranks and is "
                f"skipped",
                stacklevel=3,
            )

    def __len__(self):
        return self._len

    def __iter__(self):
        b = self.batches
        order = permutation(self.n) if b.shuffle else None  # the same draw as ArrayBatches
        fork_random_state(self.rank)  # own dropout masks per rank until epoch end
        for step in range(self._len):
            start, stop = step * self.batch_size, min((step + 1) * self.batch_size, self.n)
            rows = stop - start
            lo, hi = (
                start + rows * self.rank // self.size,
                start + rows * (self.rank + 1) // self.size,
            )
            index = order[lo:hi] if order is not None else slice(lo, hi)
            self.scale, self.global_rows = (hi - lo) / rows, rows
            yield (
                take_samples(b.x, index),
                take_samples(b.y, index),
                take_samples(b.sample_weight, index),
            )


class DataParallel:
    """Data-parallel training strategy for ``fit`` (``fit(..., distributed=DataParallel())``).

    ``bucket_bytes``: the size of the contiguous gradient buffers reduced in
    one call. ``sync_non_trainable``: average float non-trainable weights
    (BatchNorm statistics) over ranks at every epoch end. ``communicator``: the
    :class:`~dlx.distributed.base.Communicator` to use (default: the job's, from
    :func:`dlx.distributed.init`).
    """

    def __init__(
        self, bucket_bytes=DEFAULT_BUCKET_BYTES, sync_non_trainable=True, communicator=None
    ):
        self.bucket_bytes = int(bucket_bytes)
        self.sync_non_trainable = sync_non_trainable
        self.comm = communicator
        self._sharded = None

    @classmethod
    def from_argument(cls, distributed):
        """``fit``'s ``distributed=``: None/False -> None, True -> a default strategy, or itself."""
        if distributed is None or distributed is False:
            return None
        if distributed is True:
            return cls()
        if isinstance(distributed, cls):
            return distributed
        raise TypeError(
            f"fit: distributed must be True, False or a dlx.distributed.DataParallel, "
            f"got {distributed!r}"
        )

    # -- 1. and 2.: set-up ----------------------------------------------------------
    @property
    def is_main(self):
        return self._comm().rank == 0

    def _comm(self):
        if self.comm is None:
            self.comm = get_communicator()
        return self.comm

    def shard(self, batches):
        comm = self._comm()
        self._sharded = ShardedBatches(batches, comm.rank, comm.size)
        return self._sharded

    def callbacks(self, callbacks):
        callbacks = list(callbacks or [])
        if self.is_main:
            return callbacks
        return [
            cb
            for cb in callbacks
            if type(cb).__name__ not in MAIN_PROCESS_ONLY
            and not getattr(cb, "main_process_only", False)
        ]

    # -- 3. -----------------------------------------------------------------------------
    def on_train_begin(self, model):
        comm = self._comm()
        if comm.size == 1:
            return
        common = comm.broadcast_object(get_random_state(), root=0)
        set_random_state(common)
        if comm.rank > 0:  # a device generator (cupy dropout) of its own per rank
            get_backend().seed(_derived(common["state"]["state"], comm.rank) % 2**63)
        broadcast_weights(model, root=0, comm=comm)

    # -- 4. -----------------------------------------------------------------------------
    def reduce_gradients(self, variables):
        comm = self._comm()
        scale = self._sharded.scale if self._sharded is not None else 1.0 / comm.size
        if comm.size > 1:
            allreduce_gradients(variables, scale=scale, bucket_bytes=self.bucket_bytes, comm=comm)

    # -- 5. -----------------------------------------------------------------------------
    @staticmethod
    def _trackers(model):
        """(name, metric) in the order of ``model._logs()``."""
        out = [("loss", model._loss_tracker)]
        out += [(t.name, t) for t in model._output_loss_trackers]
        out += [(m.name, m) for _, m in model._metrics]
        return out

    def _global_logs(self, model, extra=()):
        trackers = self._trackers(model)
        values = []
        for _, metric in trackers:
            if hasattr(metric, "total") and hasattr(metric, "count"):
                values += [float(metric.total), float(metric.count)]
            else:  # a metric without additive state: average its result
                values += [float(metric.result()), 1.0]
        sums = self._comm().allreduce_floats(values + list(extra))
        logs = {}
        for i, (name, _) in enumerate(trackers):
            total, count = sums[2 * i], sums[2 * i + 1]
            logs[name] = total / count if count else 0.0
        return logs, sums[2 * len(trackers) :]

    def batch_logs(self, model, loss_value):
        """(the global batch loss, global running logs) after one training step."""
        if self._comm().size == 1:
            return loss_value, model._logs()
        scale = self._sharded.scale if self._sharded is not None else 1.0 / self._comm().size
        logs, (loss,) = self._global_logs(model, [loss_value * scale])
        return loss, logs

    def epoch_logs(self, model):
        """Global epoch logs; also makes non-trainable weights identical on every rank."""
        if self._comm().size == 1:
            return model._logs()
        if self.sync_non_trainable:
            average_variables(model.non_trainable_weights, self._comm())
        set_random_state(self._comm().broadcast_object(get_random_state(), root=0))
        return self._global_logs(model)[0]
