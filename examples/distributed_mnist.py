"""Data-parallel training of a digits classifier on several processes (MPI) or GPUs (NCCL).

    pip install -e ".[distributed]"                       # mpi4py + the MPICH runtime
    mpiexec -n 2 python -m mpi4py examples/distributed_mnist.py
    mpiexec -n 2 python -m mpi4py examples/distributed_mnist.py --mnist --epochs 3
    DLX_BACKEND=cupy mpiexec -n 4 python -m mpi4py examples/distributed_mnist.py --mnist

Every rank runs this same script. ``--batch-size`` is the global batch: each of
the N ranks trains on its share (batch / N rows), the gradients are averaged
over ranks after every backward pass, and all ranks apply the same update, so
the result is the model one process would train with the same global batch.
Only rank 0 prints the progress bar and writes the checkpoint (``--save``).
Without ``--mnist`` it uses scikit-learn's bundled 8x8 digits (no download);
``--mnist`` downloads MNIST once on rank 0 while the other ranks wait.
``python -m mpi4py`` makes any uncaught error end the whole job (dlx installs
the same guard in ``dlx.distributed.init()``), so a failing rank never leaves
the others waiting.
"""

import argparse
import os

# one BLAS thread per process: N processes share the machine's cores
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import dlx  # noqa: E402
import dlx.distributed as dist  # noqa: E402
from dlx import callbacks, layers  # noqa: E402


def load(mnist):
    if not mnist:
        return dlx.data.load_digits(image_shape=(64,))
    if dist.is_main_process():  # download once; the others read the cache afterwards
        dlx.data.load_mnist(normalize=True, image_shape=(784,))
    dist.barrier()
    return dlx.data.load_mnist(normalize=True, image_shape=(784,))


def build_model(features):
    return dlx.Sequential(
        [
            layers.Input((features,)),
            layers.Dense(256, activation="relu"),
            layers.Dense(128, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ]
    )


def main(epochs=20, batch_size=64, mnist=False, save=None):
    dist.init()  # rank and world size from mpiexec; picks the GPU on the cupy backend
    dlx.set_seed(0)  # rank 0's seed decides: fit broadcasts its weights and shuffles
    (x_train, y_train), (x_test, y_test) = load(mnist)
    model = build_model(x_train.shape[1])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    if dist.is_main_process():
        print(
            f"{dist.world_size()} ranks, global batch {batch_size} "
            f"({batch_size // dist.world_size()} per rank), backend {dlx.get_backend().name}"
        )
    extra = [callbacks.ModelCheckpoint(save)] if save else []  # written by rank 0 only
    model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        distributed=True,
        verbose=2,
        callbacks=extra,
    )
    dist.check_weights_identical(model)  # every rank ends with the same weights
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    if dist.is_main_process():
        print(f"test loss {loss:.4f} - test accuracy {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--mnist", action="store_true", help="MNIST 28x28 (downloaded) instead of 8x8 digits"
    )
    parser.add_argument("--save", help="checkpoint path written by rank 0 after every epoch")
    args = parser.parse_args()
    main(args.epochs, args.batch_size, args.mnist, args.save)
