"""dlx.distributed without an MPI job: buckets, sharding, the fit hook in a world of one.

These run everywhere (no mpi4py needed); tests/test_distributed_mpi.py runs 2 real ranks.
"""

import subprocess
import sys
import warnings

import numpy as np
import pytest

import dlx
import dlx.distributed as dist
from dlx import callbacks, layers, losses
from dlx.data.batching import ArrayBatches
from dlx.distributed.base import SingleProcess, pack, plan_buckets, unpack
from dlx.distributed.data_parallel import DataParallel, ShardedBatches


class FakeRank(SingleProcess):
    """Rank ``rank`` of ``size`` whose collectives are the identity (for set-up logic only)."""

    def __init__(self, rank, size):
        super().__init__()
        self.rank, self.size = rank, size


def test_importing_dlx_does_not_import_mpi4py():
    code = (
        "import sys, dlx, dlx.distributed, dlx.distributed.mpi, dlx.distributed.nccl; "
        "assert 'mpi4py' not in sys.modules and 'cupy' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pack_unpack_round_trip(backend):
    xp = backend.xp
    arrays = [
        backend.asarray(np.arange(6.0).reshape(2, 3), "float32"),
        backend.asarray(np.asarray([7.0]), "float32"),
        backend.asarray(np.arange(8.0).reshape(2, 2, 2), "float32"),
    ]
    flat = pack(arrays)
    assert tuple(flat.shape) == (15,)
    for a, b in zip(arrays, unpack(flat, [a.shape for a in arrays])):
        assert tuple(b.shape) == tuple(a.shape)
        assert bool(xp.all(a == b))


def test_buckets_split_by_size_and_dtype(backend):
    f32 = [backend.asarray(np.zeros(n), "float32") for n in (100, 100, 300, 10)]
    f64 = backend.asarray(np.zeros(4), "float64")
    # 400 bytes per 100 float32; a 1000-byte bucket holds the first two, 300 needs its own
    assert plan_buckets(f32, bucket_bytes=1000) == [[0, 1], [2], [3]]
    assert plan_buckets(f32[:2] + [f64] + f32[2:], bucket_bytes=10**6) == [[0, 1], [2], [3, 4]]


def test_shards_of_all_ranks_are_the_global_batches():
    x = np.arange(21.0).reshape(21, 1)
    dlx.set_seed(3)
    expected = [bx[:, 0].tolist() for bx, _, _ in ArrayBatches(x, batch_size=8, shuffle=True)]
    got = []
    for rank in range(3):
        dlx.set_seed(3)
        sharded = ShardedBatches(ArrayBatches(x, batch_size=8, shuffle=True), rank, 3)
        got.append([(bx[:, 0].tolist(), sharded.scale) for bx, _, _ in sharded])
    for step, batch in enumerate(expected):
        parts = [got[rank][step] for rank in range(3)]
        assert sum((p[0] for p in parts), []) == batch
        assert sum(p[1] for p in parts) == pytest.approx(1.0)
        assert [p[1] for p in parts] == [len(p[0]) / len(batch) for p in parts]


def test_ranks_other_than_zero_fork_their_random_stream_after_the_shuffle():
    x = np.arange(10.0).reshape(10, 1)
    draws = {}
    for rank in (0, 1, 2):
        dlx.set_seed(5)
        next(iter(ShardedBatches(ArrayBatches(x, batch_size=6, shuffle=True), rank, 3)))
        draws[rank] = dlx.backends.permutation(50).tolist()
    dlx.set_seed(5)
    dlx.backends.permutation(10)  # the shuffle one process draws
    alone = dlx.backends.permutation(50).tolist()
    assert draws[0] == alone  # rank 0 continues the common stream
    assert len({tuple(d) for d in draws.values()}) == 3  # the others have their own


def test_a_last_batch_smaller_than_the_world_is_skipped_and_tiny_batches_refused():
    x = np.zeros((17, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sharded = ShardedBatches(ArrayBatches(x, batch_size=8), 0, 2)
    assert len(sharded) == 2 and "last batch of 1 samples" in str(caught[0].message)
    with pytest.raises(ValueError, match=r"batch_size=2 is smaller than the world size 4"):
        ShardedBatches(ArrayBatches(x, batch_size=2), 0, 4)
    with pytest.raises(ValueError, match=r"3 samples cannot be shared by 4 ranks"):
        ShardedBatches(ArrayBatches(x[:3], batch_size=8), 0, 4)


def _model():
    dlx.set_seed(0)
    model = dlx.Sequential([layers.Dense(8, activation="relu", input_shape=(5,)), layers.Dense(3)])
    model.compile(
        "adam", loss=losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    return model


def test_fit_in_a_world_of_one_equals_plain_fit(backend):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 5)).astype("float32"), rng.integers(0, 3, 30)
    plain = _model()
    h1 = plain.fit(x, y, batch_size=8, epochs=2, verbose=0)
    data_parallel = _model()
    h2 = data_parallel.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        distributed=DataParallel(communicator=SingleProcess()),
    )
    for a, b in zip(plain.get_weights(), data_parallel.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert h1.history == h2.history
    assert data_parallel._distributed is None  # the hook is gone after fit


def test_only_rank_zero_keeps_printing_and_file_writing_callbacks():
    class ModelCheckpoint(callbacks.Callback):
        pass

    class Quiet(callbacks.Callback):
        main_process_only = True

    stop = callbacks.EarlyStopping(monitor="loss")
    given = [ModelCheckpoint(), Quiet(), stop, callbacks.ProgbarLogger()]
    assert DataParallel(communicator=FakeRank(0, 2)).callbacks(given) == given
    assert DataParallel(communicator=FakeRank(1, 2)).callbacks(given) == [stop]


def test_fit_distributed_argument_is_checked():
    model = _model()
    with pytest.raises(
        TypeError, match=r"distributed must be True, False or a .*DataParallel, got 'yes'"
    ):
        model.fit(np.zeros((4, 5)), np.zeros(4), distributed="yes", verbose=0)


def test_helpers_in_a_world_of_one():
    comm = SingleProcess()
    model = _model()
    x = np.ones((4, 5), dtype="float32")
    loss = (model(x) * 1.0).sum()
    loss.backward()
    before = [dlx.to_numpy(w.grad) for w in model.trainable_weights]
    dist.allreduce_gradients(model.trainable_weights, comm=comm)  # mean over one rank
    for b, w in zip(before, model.trainable_weights):
        np.testing.assert_array_equal(dlx.to_numpy(w.grad), b)
    dist.allreduce_gradients(model.trainable_weights, scale=0.5, comm=comm)
    for b, w in zip(before, model.trainable_weights):
        np.testing.assert_array_equal(dlx.to_numpy(w.grad), b * 0.5)
    dist.broadcast_weights(model, comm=comm)
    assert dist.shard(np.arange(10), index=1, count=3).tolist() == [3, 4, 5]
    assert dist.shard({"a": np.arange(4)}, index=1, count=2)["a"].tolist() == [2, 3]


def test_init_names_a_bad_engine():
    with pytest.raises(ValueError, match=r"engine must be 'auto', 'mpi' or 'nccl', got 'gloo'"):
        dist.init(engine="gloo")
