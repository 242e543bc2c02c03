"""Run under ``mpiexec -n 2``: data-parallel fit and custom loop, float64; saves what each rank has.

    mpiexec -n 2 python train_mlp.py OUT_DIR MODE [BACKEND]

MODE ``fit``: ``model.fit(..., distributed=True)`` on a fixed data set (and a BatchNorm model).
MODE ``custom``: a custom loop with ``dist.shard`` + ``dist.allreduce_gradients``.
MODE ``fail``: rank 1 raises during the second training step (the job must end).
MODE ``mismatch``: rank 1 builds a different model (a clear error must end the job).
The pytest side (tests/test_distributed_mpi.py) imports :func:`build` and
:func:`data` to compute the single-process reference on the concatenated batches.
"""

import os
import sys

import numpy as np

import dlx
from dlx import callbacks, layers, losses, optimizers

N, BATCH, EPOCHS = 44, 8, 2  # 6 batches per epoch, the last one ragged (4 rows: 2 + 2)


def data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(N, 6))
    y = rng.integers(0, 3, N)
    return x, y


def build(hidden=16, batchnorm=False):
    """A small float64 MLP; with ``batchnorm`` its statistics come from each rank's shard."""
    dlx.set_floatx("float64")
    dlx.set_seed(0)
    model = dlx.Sequential(
        [layers.Dense(hidden, activation="relu", input_shape=(6,))]
        + ([layers.BatchNormalization()] if batchnorm else [])
        + [layers.Dense(3)]
    )
    model.compile(
        optimizer=optimizers.Adam(0.01),
        loss=losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def custom_loop(model, x, y, steps, shard=None, allreduce=None):
    """Plain SGD-by-Adam steps on consecutive global batches of BATCH rows."""
    loss_fn = losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = optimizers.Adam(0.01)
    for step in range(steps):
        bx, by = x[step * BATCH : (step + 1) * BATCH], y[step * BATCH : (step + 1) * BATCH]
        if shard is not None:
            bx, by = shard(bx), shard(by)
        loss = loss_fn(by, model(bx, training=True))
        model.zero_grad()
        loss.backward()
        if allreduce is not None:
            allreduce(model.trainable_weights)
        opt.apply_gradients([(w.grad, w) for w in model.trainable_weights])
    return model


def main(out_dir, mode, backend="numpy"):
    import dlx.distributed as dist

    dlx.set_backend(backend)
    dist.init()
    rank = dist.rank()
    x, y = data()
    if mode == "fit":
        model = build()
        # verbose=2: one line per epoch, from rank 0 only
        history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, distributed=True, verbose=2)
        dist.check_weights_identical(model)
        np.savez(
            os.path.join(out_dir, f"fit_rank{rank}.npz"),
            *model.get_weights(),
            loss=np.asarray(history.history["loss"]),
            accuracy=np.asarray(history.history["accuracy"]),
        )
        # BatchNorm: per-shard statistics, yet identical weights on every rank after fit
        model = build(batchnorm=True)
        model.fit(x, y, batch_size=BATCH, epochs=1, distributed=True, verbose=0)
        np.savez(os.path.join(out_dir, f"bn_rank{rank}.npz"), *model.get_weights())
    elif mode == "custom":
        model = build()
        dist.broadcast_weights(model)
        custom_loop(model, x, y, steps=3, shard=dist.shard, allreduce=dist.allreduce_gradients)
        np.savez(os.path.join(out_dir, f"custom_rank{rank}.npz"), *model.get_weights())
    elif mode == "fail":
        model = build()

        def maybe_fail(batch, logs):
            if rank == 1 and batch == 1:
                raise RuntimeError("deliberate failure on rank 1 at batch 1")

        cb = callbacks.LambdaCallback(on_train_batch_end=maybe_fail)
        model.fit(x, y, batch_size=BATCH, epochs=50, distributed=True, verbose=0, callbacks=[cb])
    elif mode == "mismatch":
        model = build(hidden=16 if rank == 0 else 17)
        model.fit(x, y, batch_size=BATCH, epochs=1, distributed=True, verbose=0)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(f"rank {rank} done", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
