"""Where one mlp_train step's time goes on NumPy: the kernel-table calls, and the rest.

    python bench/profile_mlp.py                  # kernels timed inside real steps
    python bench/profile_mlp.py --python-only    # the step with every heavy kernel faked

The first form wraps the kernel-table entries that a Dense/Adam/softmax step calls
(``linear_forward``, ``linear_backward``, ``adam_update_many`` and the sparse softmax
cross-entropy, forward and backward), runs the mlp_train step of WORKLOADS.md, and
prints per step the median of each against the whole step; "the rest" is Python
(layers, autograd, optimizer bookkeeping) and allocation.

``--python-only`` replaces the Dense kernels by ones that hand back the arrays of a
real first call and Adam by a no-op, so what is left to time is the framework's own
overhead per step (the loss kernels still run: they are a few microseconds).
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from workloads.mlp import dlx_step  # noqa: E402

TIMED = (
    "linear_forward",
    "linear_backward",
    "adam_update_many",
    "sparse_softmax_cross_entropy",
    "sparse_softmax_cross_entropy_backward",
)


def _kernel_table():
    import dlx

    dlx.set_backend("numpy")
    backend = dlx.get_backend()
    backend.kernel("linear_forward")  # the table is filled on first use
    return backend.kernels


def _timed(table, totals):
    for name in TIMED:
        real = table.get(name)
        if real is None:
            continue

        def wrapper(*args, _real=real, _name=name, **kwargs):
            start = time.perf_counter()
            try:
                return _real(*args, **kwargs)
            finally:
                totals[_name] = totals.get(_name, 0.0) + time.perf_counter() - start

        table[name] = wrapper


def _faked(table):
    for name in ("linear_forward", "linear_backward"):
        real, results = table.get(name), {}
        if real is None:  # DLX_KERNELS=numpy: the generic Dense, not faked
            continue

        def replay(*args, _real=real, _results=results):
            key = tuple(getattr(a, "shape", a) for a in args)
            if key not in _results:
                _results[key] = _real(*args)
            return _results[key]

        table[name] = replay
    table["adam_update_many"] = lambda *args, **kwargs: None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python-only", action="store_true")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    table = _kernel_table()
    totals = {}
    if args.python_only:
        _faked(table)
    else:
        _timed(table, totals)
    step = dlx_step(128)
    for _ in range(50):
        step()
    rounds = []
    for _ in range(args.rounds):
        totals.clear()
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        rounds.append((statistics.median(times), {k: v / args.steps for k, v in totals.items()}))
    step_ms = statistics.median(r[0] for r in rounds) * 1e3
    if args.python_only:
        print(f"mlp_train step with the Dense kernels and Adam faked: {step_ms:.3f} ms (median)")
        return
    print(f"mlp_train step: {step_ms:.3f} ms (median of {args.rounds} rounds' medians)")
    kernels = 0.0
    for name in TIMED:
        values = [r[1][name] for r in rounds if name in r[1]]
        if values:
            ms = statistics.median(values) * 1e3
            kernels += ms
            print(f"  {name:40s} {ms:.3f} ms")
    print(f"  {'the rest (Python, allocation)':40s} {step_ms - kernels:.3f} ms")


if __name__ == "__main__":
    main()
