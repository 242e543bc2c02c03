"""Data-parallel scaling of ``mlp_train`` and ``cnn_train`` from 1 to N MPI processes.

    python bench/distributed_scaling.py                    # mlp_train, cnn_train; 1 and 2 processes
    python bench/distributed_scaling.py mlp_train --processes 1 2 --steps 40 --repeats 5

Strong scaling: the GLOBAL batch is fixed (128 for mlp_train, 64 for
cnn_train, as in WORKLOADS.md), so with N processes each trains on batch/N
rows and the gradients are averaged over the N ranks. Each configuration runs
``mpiexec -n N python bench/distributed_scaling.py --worker ...``; the worker
times ``model.fit(..., distributed=True)`` over ``steps`` global batches (the
real training path: sharding, bucketed gradient all-reduce, per-step metric
sums) ``repeats`` times and reports the median time per global step and the
share of it spent inside all-reduce calls (MPI time, including waiting for the
slower rank), and separately the all-reduce alone (the same gradient bytes
after a barrier, so without waiting). Rows: 1 process with 1 BLAS thread (the
baseline), optionally (``--threaded-baseline``) 1 process with one thread per
core, and N processes with 1 thread each. Configurations alternate in
``--rounds`` rounds and the medians are reported, as load on a shared machine
changes.
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
GLOBAL_BATCH = {"mlp_train": 128, "cnn_train": 64}


def _model(name):
    import dlx
    from dlx import layers, losses

    sys.path.insert(0, str(HERE))
    if name == "cnn_train":
        from workloads.cnn import _dlx_model

        model = _dlx_model()
        shape = (28, 28, 1)
    else:
        dlx.set_seed(0)
        model = dlx.Sequential(
            [
                layers.Dense(512, activation="relu", input_shape=(784,)),
                layers.Dense(256, activation="relu"),
                layers.Dense(10),
            ]
        )
        shape = (784,)
    model.compile(optimizer="adam", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, shape


def worker(name, steps, repeats):
    import numpy as np

    import dlx.distributed as dist

    comm = dist.init()
    model, shape = _model(name)
    batch = GLOBAL_BATCH[name]
    rng = np.random.default_rng(0)
    x = rng.random((steps * batch, *shape), dtype=np.float32)
    y = rng.integers(0, 10, steps * batch)
    fit = dict(batch_size=batch, epochs=1, verbose=0, shuffle=False, distributed=True)
    model.fit(x[: 3 * batch], y[: 3 * batch], **fit)  # warm-up (and weight broadcast)
    per_step, shares = [], []
    for _ in range(repeats):
        comm.barrier()
        comm.reset_stats()
        start = time.perf_counter()
        model.fit(x, y, **fit)
        elapsed = time.perf_counter() - start
        per_step.append(elapsed / steps)
        shares.append(comm.stats["allreduce_seconds"] / elapsed)
    calls, nbytes = comm.stats["allreduce_calls"], comm.stats["allreduce_bytes"]  # last repeat
    # the all-reduce alone: the gradient bytes of one step, after a barrier (no waiting for
    # a slower rank), through the same bucketed path
    grads = [w.value for w in model.trainable_weights]
    pure = []
    for _ in range(30):
        comm.barrier()
        start = time.perf_counter()
        dist.allreduce_arrays(grads, 1.0 / comm.size, comm=comm)
        pure.append(time.perf_counter() - start)
    result = {
        "rank": comm.rank,
        "allreduce_only_ms": statistics.median(pure) * 1e3 if comm.size > 1 else 0.0,
        "step_ms": statistics.median(per_step) * 1e3,
        "allreduce_share": statistics.median(shares),
        "allreduce_calls_per_step": calls / steps,
        "allreduce_mb_per_step": nbytes / steps / 2**20,
    }
    everyone = comm.allgather_object(result)
    if comm.rank == 0:
        print("RESULT " + json.dumps(everyone), flush=True)


def launch(name, processes, threads, steps, repeats):
    here = pathlib.Path(sys.executable).parent
    mpiexec = shutil.which("mpiexec", path=str(here)) or shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit('mpiexec not found: pip install -e ".[distributed]"')
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    command = [
        mpiexec,
        "-n",
        str(processes),
        sys.executable,
        str(pathlib.Path(__file__).resolve()),
        "--worker",
        name,
        "--steps",
        str(steps),
        "--repeats",
        str(repeats),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", default=list(GLOBAL_BATCH))
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threaded-baseline",
        action="store_true",
        help="also run 1 process with one BLAS thread per core",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.steps, args.repeats)
    cores = os.cpu_count()
    print(
        f"# {cores} cores, load average {os.getloadavg()[0]:.1f}; global batch fixed; "
        f"median over {args.rounds} interleaved rounds of {args.repeats} x {args.steps} steps"
    )
    print(
        "| workload | processes x threads | batch per rank | ms / global step | speed-up "
        "| samples/s | all-reduce share (incl. wait) | all-reduce alone, ms (share) "
        "| buckets, MB / step |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.names:
        batch = GLOBAL_BATCH[name]
        configs = list(
            dict.fromkeys(
                [(1, 1)]
                + ([(1, cores)] if args.threaded_baseline else [])
                + [(n, 1) for n in args.processes if n > 1]
            )
        )
        runs = {config: [] for config in configs}
        for _ in range(args.rounds):  # rounds alternate, so load changes hit every config alike
            for processes, threads in configs:
                ranks = launch(name, processes, threads, args.steps, args.repeats)
                runs[(processes, threads)].append(ranks)
        base = None
        for (processes, threads), rounds in runs.items():
            step_ms = statistics.median(max(r["step_ms"] for r in ranks) for ranks in rounds)
            share = statistics.median(
                statistics.mean(r["allreduce_share"] for r in ranks) for ranks in rounds
            )
            alone = statistics.median(
                statistics.mean(r["allreduce_only_ms"] for r in ranks) for ranks in rounds
            )
            base = base or step_ms
            calls = rounds[0][0]["allreduce_calls_per_step"]
            mb = rounds[0][0]["allreduce_mb_per_step"]
            print(
                f"| {name} | {processes} x {threads} | {batch // processes} | {step_ms:.2f} "
                f"| {base / step_ms:.2f} | {batch / step_ms * 1e3:.0f} | {share * 100:.1f}% "
                f"| {alone:.2f} ({alone / step_ms * 100:.1f}%) | {calls:.0f}, {mb:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
