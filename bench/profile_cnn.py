"""Per-primitive times of one cnn_train step on NumPy, against their matrix products alone.

    python bench/profile_cnn.py                # BLAS threads as they are
    python bench/profile_cnn.py --threads 1    # one BLAS thread (steadier on a busy machine)
    python bench/profile_cnn.py --infer        # the cnn_infer256 forward instead

Wraps every method of the numpy backend's conv/pool kernels (the compiled ones,
or the NumPy ones with DLX_KERNELS=numpy), runs the cnn_train step of
WORKLOADS.md (or with ``--infer`` the cnn_infer256 forward), and prints per
step: the median and minimum time of each primitive (per layer), the page
faults inside it, the kernels' total against the whole step, and the time of
the bare matrix products of the same shapes.
What the kernels leave out (Dense layers, loss, Adam, autograd) is the gap
between their total and the step.
"""

import argparse
import collections
import os
import resource
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from workloads.cnn import dlx_infer_step, dlx_train_step  # noqa: E402


def _faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _instrument(times, faults):
    """Wrap the kernel methods so each call adds its time and page faults under a label
    (a call made inside another wrapped one counts only in the outer one)."""
    import dlx

    dlx.set_backend("numpy")
    backend = dlx.get_backend()  # its table: the compiled kernels where they exist
    conv, pool = backend.kernel("conv"), backend.kernel("pool")
    depth = [0]
    labels = {
        (conv, "forward"): lambda a: f"conv forward       C_in={a[0].shape[-1]}",
        (conv, "input_grad"): lambda a: f"conv input grad    C_in={a[3][-1]}",
        (conv, "weight_grad"): lambda a: f"conv weight grad   C_in={a[0].shape[-1]}",
        (conv, "weight_and_bias_grad"): lambda a: f"conv weight+bias   C_in={a[0].shape[-1]}",
        (conv, "bias_grad"): lambda a: f"conv bias grad     F={a[0].shape[-1]}",
        (conv, "relu_grad"): lambda a: f"relu backward      {a[0].shape[1:]}",
        (pool, "forward"): lambda a: f"max pool forward   {a[0].shape[1:]}",
        (pool, "backward"): lambda a: f"max pool backward  {a[2][1:]}",
        (pool, "backward_relu"): lambda a: f"pool+relu backward {a[2][1:]}",
    }
    for (obj, name), label in labels.items():
        method = getattr(obj, name, None)
        if method is None:
            continue

        def timed(*args, _method=method, _label=label):
            if depth[0]:
                return _method(*args)
            depth[0] += 1
            f0, t0 = _faults(), time.perf_counter()
            try:
                result = _method(*args)
            finally:
                depth[0] -= 1
            key = _label(args)
            times[key].append(time.perf_counter() - t0)
            faults[key] += _faults() - f0
            return result

        setattr(obj, name, timed)


def _products(repeats):
    """Minimum time of each bare matrix product of the step (float32, fresh operands)."""
    rng = np.random.default_rng(0)
    shapes = {
        "conv1 forward  (43264x10)(10x32)": ((43264, 10), (10, 32)),
        "conv1 weight   (9x43264)(43264x32)": ((9, 43264), (43264, 32)),
        "conv2 forward  (7744x288)(288x64)": ((7744, 288), (288, 64)),
        "conv2 weight   (288x7744)(7744x64)": ((288, 7744), (7744, 64)),
        "conv2 input    9 x (6400x64)(64x32)": ((6400, 64), (64, 32)),
    }
    out = {}
    for name, (a_shape, b_shape) in shapes.items():
        a = rng.random(a_shape, dtype=np.float32)
        b = rng.random(b_shape, dtype=np.float32)
        count = 9 if name.startswith("conv2 input") else 1
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(count):
                a @ b
            best = min(best, time.perf_counter() - t0)
        out[name] = best
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads (default: as is)")
    parser.add_argument("--infer", action="store_true", help="profile cnn_infer256's forward")
    args = parser.parse_args(argv)
    limit = None
    if args.threads is not None:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(args.threads, "blas")
    times, faults = collections.defaultdict(list), collections.defaultdict(int)
    step = dlx_infer_step(256) if args.infer else dlx_train_step(64)
    for _ in range(10):
        step()
    _instrument(times, faults)
    steps, f0 = [], _faults()
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        steps.append(time.perf_counter() - t0)
    step_faults = (_faults() - f0) / args.steps
    n = args.steps
    print("| primitive | median ms/step | min ms/step | page faults/step |")
    print("|---|---|---|---|")
    total_med = total_min = 0.0
    for key in sorted(times):
        calls = len(times[key]) / n
        med, low = statistics.median(times[key]) * calls, min(times[key]) * calls
        total_med, total_min = total_med + med, total_min + low
        print(f"| {key} | {med * 1e3:.2f} | {low * 1e3:.2f} | {faults[key] / n:.0f} |")
    print(f"| kernels together | {total_med * 1e3:.2f} | {total_min * 1e3:.2f} | |")
    print(
        f"| whole step | {statistics.median(steps) * 1e3:.2f} | {min(steps) * 1e3:.2f} "
        f"| {step_faults:.0f} |"
    )
    print("\nbare matrix products (min ms):")
    for name, seconds in _products(20).items():
        print(f"  {name}: {seconds * 1e3:.2f}")
    if limit is not None:
        limit.restore_original_limits()


if __name__ == "__main__":
    main()
