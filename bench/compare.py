"""Side-by-side step times of dlx and PyTorch on the CPU, in one process.

    python bench/compare.py                 # every workload
    python bench/compare.py mlp_train       # some of them
    python bench/compare.py --repeats 200

Prints the median step time of each (after warm-up) and the ratio dlx / PyTorch
(lower is better), then the lowest and highest ratio of the five rounds (each round's
dlx median over the PyTorch round beside it), which shows how much the machine's load
moved while it measured. PyTorch runs with as many threads as NumPy's BLAS (2 here).

Both run with glibc's allocator in the same state: before anything else the
script allocates and frees one 24 MiB block, which raises glibc's dynamic mmap
threshold to that size (its maximum is 32 MiB), so later large allocations come
from the heap instead of fresh mmap'd (page-faulting) memory. Without that, whichever framework ran
first decided the state for the other: PyTorch's LSTM step took 10.2 ms in a
fresh process and 6.5 ms after any large free (2026-12-02), which is what made
its times jump between runs. ``--no-settle-allocator`` leaves it alone.

``--busy-core`` measures with a second process spinning on one core, as on a shared
machine or CI runner.
"""

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from workloads import all_workloads, common_models  # noqa: E402

BATCHES = {"mlp_train": 128, "cnn_train": 64, "lstm_train": 64, "cnn_infer256": 256}
MORE_BATCHES = common_models.BATCHES  # models beyond WORKLOADS.md, run when named


def settle_allocator():
    """Allocate, touch and free one 24 MiB block (see the module docstring)."""
    import numpy as np

    block = np.ones(24 * 2**20 // 8)
    del block


class BusyCore:
    """``with BusyCore():`` keeps one core busy with a second process spinning, as on a shared
    machine (``--busy-core``): how each framework copes when a core it counts on is taken."""

    def __enter__(self):
        import subprocess

        self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()


def median_time(step, repeats, warmup):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_rounds(dlx_step, torch_step, repeats, warmup, rounds=5):
    """The median step time of each round, ``(dlx_times, torch_times)``, measured in
    alternating rounds so load changes hit both alike (``torch_times`` empty without it)."""
    dlx_times, torch_times = [], []
    for _ in range(rounds):
        dlx_times.append(median_time(dlx_step, max(repeats // rounds, 3), warmup))
        if torch_step is not None:
            torch_times.append(median_time(torch_step, max(repeats // rounds, 3), warmup))
    return dlx_times, torch_times


def interleaved(dlx_step, torch_step, repeats, warmup, rounds=5):
    """Median of each over :func:`interleaved_rounds`."""
    dlx_times, torch_times = interleaved_rounds(dlx_step, torch_step, repeats, warmup, rounds)
    return statistics.median(dlx_times), (statistics.median(torch_times) if torch_times else None)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-settle-allocator", dest="settle", action="store_false")
    parser.add_argument(
        "--busy-core",
        action="store_true",
        help="measure with one core kept busy by another process",
    )
    args = parser.parse_args(argv)
    if args.settle:
        settle_allocator()
    workloads = all_workloads()
    names = args.names or [n for n in BATCHES if n in workloads]
    try:
        import threadpoolctl
        import torch

        threads = (
            max(info["num_threads"] for info in threadpoolctl.threadpool_info()) or os.cpu_count()
        )
        torch.set_num_threads(threads)
        torch_version = torch.__version__
    except ImportError:
        torch, torch_version, threads = None, "not installed", None
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch_version} ({threads} threads), allocator "
        f"{'settled' if args.settle else 'as found'}"
        f"{', one core busy' if args.busy_core else ''}"
    )
    print("| workload | batch | dlx ms | torch ms | dlx / torch | rounds' ratios |")
    print("|---|---|---|---|---|---|")
    for name in names:
        dlx_builder, torch_builder = workloads[name]
        batch = BATCHES.get(name, MORE_BATCHES.get(name, 64))
        dlx_step = dlx_builder(batch)
        torch_step = torch_builder(batch) if torch is not None else None
        with BusyCore() if args.busy_core else contextlib.nullcontext():
            dlx_times, torch_times = interleaved_rounds(
                dlx_step, torch_step, args.repeats, args.warmup
            )
        t_dlx = statistics.median(dlx_times)
        ratio = torch_ms = spread = "-"
        if torch_times:
            t_torch = statistics.median(torch_times)
            ratio, torch_ms = f"{t_dlx / t_torch:.2f}", f"{t_torch * 1e3:.2f}"
            # each round's dlx time over the torch round beside it: how much the load moved
            paired = [d / t for d, t in zip(dlx_times, torch_times)]
            spread = f"{min(paired):.2f}-{max(paired):.2f}"
        print(
            f"| {name} | {batch} | {t_dlx * 1e3:.2f} | {torch_ms} | {ratio} | {spread} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
