"""GPU benchmark of issue 6: dlx on the cupy backend, custom CUDA kernels vs the generic
Array API path vs PyTorch CUDA (cuDNN), in one process.

    python bench/gpu_bench.py                  # print both tables
    python bench/gpu_bench.py --write          # ... and add them to bench/RESULTS.md
    python bench/gpu_bench.py cnn_train --part workloads --repeats 50
    python bench/gpu_bench.py --dry-run        # CPU check of this script (see below)

Part 1, workloads: the four workloads of ``shared/WORKLOADS.md`` (``bench/workloads``)
at batch x8, each run three ways -- dlx with the cupy kernel table (custom kernels),
dlx with ``dlx.backends.set_kernels_enabled(False)`` (generic Array API code on
CuPy), and PyTorch on CUDA when ``torch`` with CUDA is importable. Every timed step
is followed by a device synchronisation (``get_backend().synchronize()``,
``torch.cuda.synchronize()``); the kernels are compiled first
(``dlx.backends.warmup()``); each path is timed in interleaved rounds and the
median of per-round medians is reported (``bench/compare.py``'s ``median_time``).

Part 2, kernels alone: each kernel-table method called directly, as the ops of
``dlx.ops`` call it (``get_backend().kernel("conv").forward(...)`` etc., contracts in
``dlx/ops/convolution.py``, ``pooling.py``, ``recurrent.py``), against the generic
primitive of ``dlx.ops`` the op would run instead (``conv_forward``,
``conv_input_grad``, ``conv_weight_grad``, ``pool_forward``, ``pool_backward``,
``recurrent.GENERIC``) on the same arrays, and against ``torch.nn.functional`` /
``torch.nn.grad`` / the ATen pooling backward ops on CUDA. No autograd on either dlx
side. Shapes are the ``cnn_train`` layers' and the ``lstm_train`` sequence's at the
same batch. Inputs are made on the dlx backend and handed to torch by DLPack
(``torch.from_dlpack``: no copy on the GPU); dlx keeps channels_last, torch gets
NCHW copies (its native layout). Weight gradients take the columns the forward
kept, as in training. The torch recurrent rows run ``torch.nn.LSTM`` etc., which
include the input projection (cuDNN fuses it); the dlx rows start from the
projected input. Each row also gives the largest difference of the custom result
from the generic (and torch) result, relative to the largest magnitude.

Both float32 at full precision: TF32 is switched off for torch (``--torch-tf32``
allows it) and CuPy does not use it unless ``CUPY_TF32=1``. ``cudnn.benchmark``
is on for torch.

The "launches" columns count CUDA kernel launches of dlx's own kernels in one
untimed step, by running it once through a copy of the kernel table whose
compiled kernels are wrapped in counters (the timed runs use the backend's table
as it is): the custom path must launch them, the generic path never.

``--dry-run`` runs the same code on the ``cuda_emulation`` backend (NumPy arrays,
the same CUDA sources compiled by g++, needs g++), with batches /32, three steps,
torch on the CPU, and writes nothing: a check of this script, not a measurement.
Without ``--dry-run`` and without CuPy or a CUDA device it exits with status 2 and
says which is missing.
"""

import argparse
import collections
import contextlib
import datetime
import os
import platform
import statistics
import sys
import traceback

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

import compare  # noqa: E402
from dlx.backends import BackendUnavailableError, set_kernels_enabled  # noqa: E402
from workloads import all_workloads  # noqa: E402

import dlx  # noqa: E402

RESULTS_PATH = os.path.join(BENCH_DIR, "RESULTS.md")
RESULTS_SECTION = "## GPU (issue 6)"
EXIT_UNAVAILABLE = 2

GPU_SETTINGS = dict(backend="cupy", batch_scale=8.0, repeats=100, warmup=10, rounds=5)
DRY_RUN_SETTINGS = dict(backend="cuda_emulation", batch_scale=1 / 32, repeats=3, warmup=1, rounds=1)


# ---------------------------------------------------------------------------
# timing


def synced(step, synchronize):
    """``step`` followed by a wait for the device, so a timing covers the queued work."""

    def run():
        step()
        synchronize()

    return run


def interleaved_medians(steps, repeats, warmup, rounds):
    """``{name: seconds}``: ``compare.interleaved`` for any number of steps -- each step
    timed by ``compare.median_time`` once per round, rounds alternating, median of rounds."""
    times = {name: [] for name in steps}
    per_round = max(repeats // rounds, 3)
    for _ in range(rounds):
        for name, step in steps.items():
            times[name].append(compare.median_time(step, per_round, warmup))
    return {name: statistics.median(values) for name, values in times.items()}


def without_kernels(step):
    """``step`` run with every kernel table off (the generic Array API path)."""

    def run():
        set_kernels_enabled(False)
        try:
            return step()
        finally:
            set_kernels_enabled(True)

    return run


# ---------------------------------------------------------------------------
# counting launches of dlx's CUDA kernels


class _CountingModule:
    """A compiled module whose kernels count their launches into ``counts[name]``."""

    def __init__(self, module, counts):
        self.module, self.counts = module, counts

    def get_function(self, name_expression):
        function = self.module.get_function(name_expression)
        counts = self.counts

        def launch(grid, block, args, *rest, **options):
            counts[name_expression] += 1
            return function(grid, block, args, *rest, **options)

        return launch


class LaunchCounter:
    """Swaps the backend's CUDA kernel table for an equal one whose launches are counted.

    ``with LaunchCounter(backend) as counter: step()`` then ``counter.counts`` is
    ``{kernel name expression: launches}``; the original table is restored on exit.
    """

    def __init__(self, backend):
        self.backend = backend
        self.counts = collections.Counter()

    def __enter__(self):
        from dlx.backends.cuda_modules import load_module
        from dlx.backends.cupy_kernels import cuda_kernels

        emulate = self.backend.name == "cuda_emulation"
        xp_module = np if emulate else self.backend.cupy

        def load(source, name_expressions):
            module = load_module(source, name_expressions, emulate=emulate)
            return _CountingModule(module, self.counts)

        self._original = dict(self.backend.kernels)
        self.backend.kernels.update(cuda_kernels(xp_module, load))
        return self

    def __exit__(self, *exc):
        self.backend.kernels.clear()
        self.backend.kernels.update(self._original)
        return False


# ---------------------------------------------------------------------------
# environment


class Torch:
    """PyTorch for the reference column: the module and its device, or why it is absent."""

    def __init__(self, dry_run, tf32):
        self.module, self.device, self.absent = None, None, None
        try:
            import torch
        except ImportError:
            self.absent = "torch not installed"
            return
        if dry_run:
            self.module, self.device = torch, "cpu"
            return
        if not torch.cuda.is_available():
            self.absent = f"torch {torch.__version__} has no CUDA device"
            return
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        self.module, self.device = torch, "cuda"

    def synchronize(self):
        if self.device == "cuda":
            self.module.cuda.synchronize()

    def describe(self):
        if self.module is None:
            return self.absent
        torch = self.module
        text = f"torch {torch.__version__}"
        if self.device == "cuda":
            cudnn = torch.backends.cudnn.version()
            tf32 = "on" if torch.backends.cudnn.allow_tf32 else "off"
            text += f" (CUDA {torch.version.cuda}, cuDNN {cudnn}, TF32 {tf32})"
        else:
            text += " on the CPU"
        return text


def describe_backend(backend):
    """One line naming the device and the versions that matter."""
    if backend.name != "cupy":
        return (
            f"dry run: backend {backend.name} on {platform.machine()} "
            f"({os.cpu_count()} cores), CUDA kernels compiled by g++ -- not GPU figures"
        )
    cupy = backend.cupy
    runtime = cupy.cuda.runtime
    name = runtime.getDeviceProperties(0)["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    return (
        f"{name}, CUDA runtime {_cuda_version(runtime.runtimeGetVersion())}, "
        f"driver {_cuda_version(runtime.driverGetVersion())}, CuPy {cupy.__version__}"
    )


def _cuda_version(code):
    return f"{code // 1000}.{code % 1000 // 10}"


def select_backend(name):
    """Make ``name`` current; exit with a clear message when it cannot run here."""
    try:
        backend = dlx.set_backend(name)
    except BackendUnavailableError as error:
        hint = (
            "Run with --dry-run to check this script on the CPU (cuda_emulation backend)."
            if name == "cupy"
            else ""
        )
        print(f"gpu_bench: {error}\n{hint}".rstrip(), file=sys.stderr)
        raise SystemExit(EXIT_UNAVAILABLE) from None
    set_kernels_enabled(True)
    return backend


# ---------------------------------------------------------------------------
# part 1: workloads


def scaled_batch(name, scale):
    return max(1, round(compare.BATCHES.get(name, 64) * scale))


def bench_workload(name, batch, backend, torch, settings):
    """One row: custom, generic and torch step times (seconds) and launches per step."""
    dlx_builder, torch_builder = all_workloads()[name]
    sync = backend.synchronize
    custom = synced(dlx_builder(batch), sync)
    generic = synced(without_kernels(dlx_builder(batch)), sync)
    steps = {"custom": custom, "generic": generic}
    if torch.module is not None:
        steps["torch"] = synced(torch_builder(batch, device=torch.device), torch.synchronize)
    launches = {}
    for path in ("custom", "generic"):
        with LaunchCounter(backend) as counter:
            steps[path]()
        launches[path] = dict(counter.counts)
    times = interleaved_medians(steps, settings["repeats"], settings["warmup"], settings["rounds"])
    return {
        "workload": name,
        "batch": batch,
        "custom": times["custom"],
        "generic": times["generic"],
        "torch": times.get("torch"),
        "launches": launches,
    }


# ---------------------------------------------------------------------------
# part 2: kernels alone


class KernelCase:
    """One kernel-table method against the generic primitive and torch's counterpart.

    ``custom()``, ``generic()``, ``torch()`` run the operation and return its result
    (an array, or a tuple of arrays) in dlx's layout; torch's is brought back to that
    layout (and to the host) by ``torch_result``.
    """

    def __init__(self, op, shape, custom, generic, torch=None, torch_result=None):
        self.op, self.shape = op, shape
        self.custom, self.generic = custom, generic
        self.torch, self.torch_result = torch, torch_result


def _host(values):
    values = values if isinstance(values, tuple) else (values,)
    return [np.asarray(dlx.to_numpy(v), dtype=np.float64) for v in values]


def relative_difference(actual, expected):
    """Largest ``|actual - expected|`` over the largest ``|expected|`` (arrays or tuples)."""
    worst = 0.0
    for a, e in zip(_host(actual), _host(expected), strict=True):
        if a.shape != e.shape:
            raise ValueError(f"shapes differ: {a.shape} vs {e.shape}")
        scale = float(np.max(np.abs(e))) if e.size else 0.0
        worst = max(worst, float(np.max(np.abs(a - e))) / (scale or 1.0) if a.size else 0.0)
    return worst


def _table_kernel(backend, name):
    """The backend's kernel-table entry, looked up per call (so LaunchCounter sees it)."""
    kernel = backend.kernel(name)
    if kernel is None:
        raise RuntimeError(f"the {backend.name} backend has no {name!r} kernel enabled")
    return kernel


def _handled(result, what):
    if result is None:
        raise RuntimeError(f"{what}: the kernel returned None (fell back to the generic path)")
    return result


def conv_cases(backend, torch, batch, rng):
    """Forward, input and weight gradient of the two cnn_train convolutions."""
    from dlx.ops import convolution as conv_ops

    xp = backend.xp
    cases = []
    layers = (("conv1", (28, 28, 1), 32), ("conv2", (13, 13, 32), 64))
    geometry = ((1, 1), (1, 1), ((0, 0), (0, 0)), 1)
    for layer, (height, width, channels), filters in layers:
        x_shape = (batch, height, width, channels)
        w_shape = (3, 3, channels, filters)
        g_shape = (batch, height - 2, width - 2, filters)
        x = backend.asarray(rng.standard_normal(x_shape), "float32")
        w = backend.asarray(rng.standard_normal(w_shape) * 0.2, "float32")
        b = backend.asarray(rng.standard_normal(filters) * 0.1, "float32")
        g = backend.asarray(rng.standard_normal(g_shape), "float32")
        kept = _handled(
            _table_kernel(backend, "conv").forward(x, w, b, geometry, True, True), "conv"
        )[1]
        generic_cols = conv_ops.conv_forward(xp, x, w, b, geometry, True)[1]
        shape = f"x {x_shape}, w {w_shape}"

        def forward(x=x, w=w, b=b):
            result = _table_kernel(backend, "conv").forward(x, w, b, geometry, True, True)
            return _handled(result, "conv.forward")[0]

        def input_grad(g=g, w=w, x_shape=x_shape):
            result = _table_kernel(backend, "conv").input_grad(g, w, geometry, x_shape)
            return _handled(result, "conv.input_grad")

        def weight_grad(x=x, g=g, w_shape=w_shape, kept=kept):
            result = _table_kernel(backend, "conv").weight_grad(x, g, geometry, w_shape, kept)
            return _handled(result, "conv.weight_grad")

        generic = {
            "forward": lambda x=x, w=w, b=b: conv_ops.conv_forward(xp, x, w, b, geometry, True)[0],
            "input-grad": lambda g=g, w=w, s=x_shape: conv_ops.conv_input_grad(
                xp, g, w, geometry, s
            ),
            "weight-grad": lambda x=x, g=g, s=w_shape, c=generic_cols: conv_ops.conv_weight_grad(
                xp, x, g, geometry, s, c
            ),
        }
        reference = {}
        if torch.module is not None:
            reference = _torch_conv(torch.module, x, w, b, g)
        for part, custom in (
            ("forward", forward),
            ("input-grad", input_grad),
            ("weight-grad", weight_grad),
        ):
            run, result = reference.get(part, (None, None))
            cases.append(
                KernelCase(f"conv2d {part} ({layer})", shape, custom, generic[part], run, result)
            )
    return cases


def _nchw(torch, array):
    """A channels_last dlx array as a contiguous NCHW torch tensor (DLPack, then a copy)."""
    return torch.from_dlpack(array).permute(0, 3, 1, 2).contiguous()


def _nhwc(tensor):
    return tensor.permute(0, 2, 3, 1)


def _torch_conv(torch, x, w, b, g):
    """``{part: (run, result)}``: cuDNN conv forward (+ ReLU) and both gradients."""
    functional = torch.nn.functional
    tx, tg = _nchw(torch, x), _nchw(torch, g)
    tw = torch.from_dlpack(w).permute(3, 2, 0, 1).contiguous()  # (F, C, kh, kw)
    tb = torch.from_dlpack(b)
    return {
        "forward": (lambda: functional.relu(functional.conv2d(tx, tw, tb)), _nhwc),
        "input-grad": (
            lambda: torch.nn.grad.conv2d_input(tuple(tx.shape), tw, tg),
            _nhwc,
        ),
        "weight-grad": (
            lambda: torch.nn.grad.conv2d_weight(tx, tuple(tw.shape), tg),
            lambda t: t.permute(2, 3, 1, 0),  # back to (kh, kw, C, F)
        ),
    }


def pool_cases(backend, torch, batch, rng):
    """Max and average 2x2 pooling, forward and backward, at the two cnn_train pools."""
    from dlx.ops import pooling as pool_ops

    xp = backend.xp
    cases = []
    size, pads = (2, 2), ((0, 0), (0, 0))
    for layer, (height, width, channels) in (("pool1", (26, 26, 32)), ("pool2", (11, 11, 64))):
        x_shape = (batch, height, width, channels)
        x = backend.asarray(rng.standard_normal(x_shape), "float32")
        g_shape = (batch, height // 2, width // 2, channels)
        g = backend.asarray(rng.standard_normal(g_shape), "float32")
        for kind in ("max", "avg"):
            args = (kind, size, size, pads)
            saved = _handled(_table_kernel(backend, "pool").forward(x, *args, True), "pool")[1]
            generic_saved = pool_ops.pool_forward(xp, x, *args)[1]

            def forward(x=x, args=args):
                result = _table_kernel(backend, "pool").forward(x, *args, True)
                return _handled(result, "pool.forward")[0]

            def backward(g=g, saved=saved, x_shape=x_shape, args=args):
                result = _table_kernel(backend, "pool").backward(g, saved, x_shape, *args)
                return _handled(result, "pool.backward")

            generic_forward = lambda x=x, args=args: pool_ops.pool_forward(xp, x, *args)[0]  # noqa: E731
            generic_backward = lambda g=g, s=generic_saved, shape=x_shape, args=args: (  # noqa: E731
                pool_ops.pool_backward(xp, g, s, shape, *args)
            )
            reference = {}
            if torch.module is not None:
                reference = _torch_pool(torch.module, kind, x, g)
            shape = f"x {x_shape}"
            for part, custom, generic in (
                ("forward", forward, generic_forward),
                ("backward", backward, generic_backward),
            ):
                run, result = reference.get(part, (None, None))
                cases.append(
                    KernelCase(
                        f"{kind}_pool2d {part} ({layer})", shape, custom, generic, run, result
                    )
                )
    return cases


def _torch_pool(torch, kind, x, g):
    """``{part: (run, result)}`` of torch's 2x2 pooling on CUDA (NCHW)."""
    functional, aten = torch.nn.functional, torch.ops.aten
    tx, tg = _nchw(torch, x), _nchw(torch, g)
    if kind == "max":
        _, indices = functional.max_pool2d(tx, 2, return_indices=True)
        return {
            "forward": (lambda: functional.max_pool2d(tx, 2, return_indices=True)[0], _nhwc),
            "backward": (
                lambda: aten.max_pool2d_with_indices_backward(
                    tg, tx, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
                ),
                _nhwc,
            ),
        }
    return {
        "forward": (lambda: functional.avg_pool2d(tx, 2), _nhwc),
        "backward": (
            lambda: aten.avg_pool2d_backward(tg, tx, [2, 2], [2, 2], [0, 0], False, True, None),
            _nhwc,
        ),
    }


RECURRENT_CELLS = (("rnn", 1, "RNN"), ("lstm", 4, "LSTM"), ("gru", 3, "GRU"))


def recurrent_cases(backend, torch, batch, rng, steps=28, features=28, units=64):
    """One sequence forward + backward per cell at the lstm_train shape (time-major)."""
    from dlx.ops import recurrent

    cases = []
    for cell, gates, torch_name in RECURRENT_CELLS:
        spec = recurrent.SequenceSpec(cell, return_sequences=True, reset_after=True)
        xproj = backend.asarray(rng.standard_normal((steps, batch, gates * units)), "float32")
        U = backend.asarray(rng.standard_normal((units, gates * units)) * 0.1, "float32")
        rbias = None
        if cell == "gru":
            rbias = backend.asarray(rng.standard_normal(gates * units) * 0.1, "float32")
        h0 = backend.asarray(np.zeros((batch, units)), "float32")
        c0 = h0 if cell == "lstm" else None
        d_seq = backend.asarray(rng.standard_normal((steps, batch, units)), "float32")
        d_h = backend.asarray(np.zeros((batch, units)), "float32")
        d_c = d_h if cell == "lstm" else None

        custom, generic = _sequence_runs(backend, spec, xproj, U, rbias, h0, c0, d_seq, d_h, d_c)
        run = None
        if torch.module is not None:
            run = _torch_recurrent(torch.module, torch_name, d_seq, batch, steps, features, units)
        shape = f"T {steps}, B {batch}, units {units}"
        cases.append(KernelCase(f"{cell}_sequence fwd+bwd", shape, custom, generic, run))
    return cases


def _sequence_runs(backend, spec, xproj, U, rbias, h0, c0, d_seq, d_h, d_c):
    """``(custom, generic)``: forward + backward of one sequence through the kernel table's
    ``<cell>_sequence`` and through ``recurrent.GENERIC``; each returns ``(dxproj, dU)``."""
    from dlx.ops import recurrent

    xp = backend.xp
    needs = (True, True, rbias is not None, False, False)  # as a layer asks (h0 constant)

    def custom():
        kernel = _table_kernel(backend, f"{spec.cell}_sequence")
        result = _handled(kernel.forward(spec, xproj, U, rbias, h0, c0), f"{spec.cell}_sequence")
        return tuple(kernel.backward(spec, result[1], d_seq, d_h, d_c, needs)[:2])

    def generic():
        impl = recurrent.GENERIC[spec.cell]
        saved = impl.forward(xp, spec, xproj, U, rbias, h0, c0)[1]
        return tuple(impl.backward(xp, spec, saved, U, d_seq, d_h, d_c, needs)[:2])

    return custom, generic


def _torch_recurrent(torch, name, d_seq, batch, steps, features, units):
    """torch.nn.<name> (cuDNN on CUDA) forward + backward to the input and weights;
    includes the input projection from ``features`` inputs, which cuDNN fuses."""
    torch.manual_seed(0)
    tg = torch.from_dlpack(d_seq).transpose(0, 1).contiguous()  # (B, T, u)
    layer = getattr(torch.nn, name)(features, units, batch_first=True).to(tg.device)
    x = torch.randn(batch, steps, features, device=tg.device, requires_grad=True)
    params = [x] + list(layer.parameters())

    def run():
        out = layer(x)[0]
        return torch.autograd.grad(out, params, tg)

    return run


def bench_kernels(backend, torch, settings, batch_cnn, batch_rnn):
    """Rows of part 2: times (seconds), differences and launches per call."""
    rng = np.random.default_rng(0)
    cases = (
        conv_cases(backend, torch, batch_cnn, rng)
        + pool_cases(backend, torch, batch_cnn, rng)
        + recurrent_cases(backend, torch, batch_rnn, rng)
    )
    rows = []
    for case in cases:
        row = {"op": case.op, "shape": case.shape}
        try:
            row.update(_bench_case(case, backend, torch, settings))
        except Exception as error:  # one broken row must not cost the others on a GPU lease
            row["error"] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
        rows.append(row)
        print_row(KERNEL_COLUMNS, format_kernel_row(row))
    return rows


def _bench_case(case, backend, torch, settings):
    with LaunchCounter(backend) as counter:
        custom = case.custom()
        backend.synchronize()
    result = {"launches": dict(counter.counts)}
    result["diff_generic"] = relative_difference(custom, case.generic())
    if case.torch is not None and case.torch_result is not None:
        reference = case.torch_result(case.torch()).contiguous()
        result["diff_torch"] = relative_difference(custom, backend.from_dlpack(reference))
    steps = {
        "custom": synced(case.custom, backend.synchronize),
        "generic": synced(case.generic, backend.synchronize),
    }
    if case.torch is not None:
        steps["torch"] = synced(case.torch, torch.synchronize)
    times = interleaved_medians(steps, settings["repeats"], settings["warmup"], settings["rounds"])
    result.update(custom=times["custom"], generic=times["generic"], torch=times.get("torch"))
    return result


# ---------------------------------------------------------------------------
# tables

WORKLOAD_COLUMNS = (
    "workload",
    "batch",
    "dlx-custom ms",
    "dlx-generic ms",
    "torch ms",
    "custom / torch",
    "custom / generic",
    "launches / step (custom, generic)",
)
KERNEL_COLUMNS = (
    "op",
    "shape",
    "custom ms",
    "generic ms",
    "torch ms",
    "custom / generic",
    "custom / torch",
    "max rel. diff vs generic",
    "vs torch",
    "launches",
)


def _ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def _ratio(a, b):
    return "-" if a is None or b is None or b <= 0 else f"{a / b:.2f}"


def _diff(value):
    return "-" if value is None else f"{value:.1e}"


def _launches(counts):
    return sum(counts.values()) if counts is not None else "-"


def format_workload_row(row):
    if "error" in row:
        return [row["workload"], row["batch"], "error: " + row["error"]] + [""] * 5
    launches = row["launches"]
    return [
        row["workload"],
        row["batch"],
        _ms(row["custom"]),
        _ms(row["generic"]),
        _ms(row["torch"]),
        _ratio(row["custom"], row["torch"]),
        _ratio(row["custom"], row["generic"]),
        f"{_launches(launches['custom'])}, {_launches(launches['generic'])}",
    ]


def format_kernel_row(row):
    if "error" in row:
        return [row["op"], row["shape"], "error: " + row["error"]] + [""] * 7
    return [
        row["op"],
        row["shape"],
        _ms(row["custom"]),
        _ms(row["generic"]),
        _ms(row["torch"]),
        _ratio(row["custom"], row["generic"]),
        _ratio(row["custom"], row["torch"]),
        _diff(row["diff_generic"]),
        _diff(row.get("diff_torch")),
        _launches(row["launches"]),
    ]


def table_header(columns):
    return [f"| {' | '.join(columns)} |", "|" + "---|" * len(columns)]


def table_line(cells):
    return f"| {' | '.join(str(c) for c in cells)} |"


def print_row(columns, cells):
    del columns  # the header was printed with the first row
    print(table_line(cells), flush=True)


def markdown_tables(workload_rows, kernel_rows):
    """The two tables as Markdown lines (those that were run)."""
    lines = []
    if workload_rows:
        lines += ["Workloads (one training step, or a forward pass for cnn_infer256):", ""]
        lines += table_header(WORKLOAD_COLUMNS)
        lines += [table_line(format_workload_row(r)) for r in workload_rows]
        lines.append("")
    if kernel_rows:
        lines += ["Kernels alone (kernel-table method vs generic dlx.ops primitive vs torch):", ""]
        lines += table_header(KERNEL_COLUMNS)
        lines += [table_line(format_kernel_row(r)) for r in kernel_rows]
        lines.append("")
    return lines


def results_entry(environment, command, workload_rows, kernel_rows, when=None):
    """The Markdown text one run adds to RESULTS.md."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    lines = [f"### {when:%Y-%m-%d %H:%M} UTC, {environment[0].split(',')[0]}", ""]
    lines += [f"Command: `{command}`", ""]
    lines += [f"- {line}" for line in environment] + [""]
    lines += markdown_tables(workload_rows, kernel_rows)
    return "\n".join(lines)


def add_to_results(path, entry):
    """Put ``entry`` at the end of the ``## GPU (issue 6)`` section of ``path`` (the
    section is created at the end of the file when missing)."""
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Benchmark results\n"
    lines = text.rstrip("\n").split("\n")
    try:
        start = lines.index(RESULTS_SECTION)
    except ValueError:
        lines += ["", RESULTS_SECTION]
        start = len(lines) - 1
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    lines[end:end] = [""] + entry.rstrip("\n").split("\n") + ([""] if end < len(lines) else [])
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------
# command line


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help="workloads to run (default: all four)")
    parser.add_argument("--dry-run", action="store_true", help="CPU check: cuda_emulation backend")
    parser.add_argument("--write", action="store_true", help="add the tables to RESULTS.md")
    parser.add_argument("--results", default=RESULTS_PATH, help="file --write adds to")
    parser.add_argument("--part", choices=("all", "workloads", "kernels"), default="all")
    parser.add_argument("--batch-scale", type=float, help="times the WORKLOADS.md batch")
    parser.add_argument("--repeats", type=int, help="timed steps per path (over all rounds)")
    parser.add_argument("--warmup", type=int, help="untimed steps before each round")
    parser.add_argument("--rounds", type=int, help="interleaved rounds")
    parser.add_argument("--torch-tf32", action="store_true", help="let torch use TF32")
    args = parser.parse_args(argv)
    if args.write and args.dry_run:
        parser.error("--write records GPU figures; a --dry-run writes nothing")
    unknown = sorted(set(args.names) - set(compare.BATCHES))
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {list(compare.BATCHES)}")
    settings = dict(DRY_RUN_SETTINGS if args.dry_run else GPU_SETTINGS)
    for key in ("batch_scale", "repeats", "warmup", "rounds"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if settings["warmup"] < 1:
        parser.error("--warmup must be at least 1 (it also drains the device queue)")
    return args, settings


def main(argv=None):
    """Run the benchmark; returns ``{"workloads": rows, "kernels": rows, "environment": lines}``."""
    args, settings = parse_args(sys.argv[1:] if argv is None else argv)
    with _one_host_thread() if args.dry_run else contextlib.nullcontext():
        return _run(args, settings, argv)


@contextlib.contextmanager
def _one_host_thread():
    """One BLAS and one torch thread during a dry run (tiny products on a shared machine
    are slower with more); the previous settings are restored afterwards."""
    with contextlib.ExitStack() as stack:
        try:
            import threadpoolctl

            stack.enter_context(threadpoolctl.threadpool_limits(1))
        except ImportError:
            pass
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            stack.callback(torch.set_num_threads, threads)
        yield


def _run(args, settings, argv):
    backend = select_backend(settings["backend"])
    torch = Torch(args.dry_run, args.torch_tf32)
    compiled = dlx.backends.warmup()
    environment = [
        describe_backend(backend),
        torch.describe() if torch.module is not None else f"no torch column: {torch.absent}",
        f"dlx kernels compiled up front: {sum(compiled.values())} in {len(compiled)} sources; "
        f"batch x{settings['batch_scale']:g}, {settings['repeats']} steps in "
        f"{settings['rounds']} rounds, warm-up {settings['warmup']}",
    ]
    for line in environment:
        print(f"# {line}")
    print()
    workload_rows, kernel_rows = [], []
    if args.part in ("all", "workloads"):
        for line in table_header(WORKLOAD_COLUMNS):
            print(line)
        for name in args.names or list(compare.BATCHES):
            batch = scaled_batch(name, settings["batch_scale"])
            try:
                row = bench_workload(name, batch, backend, torch, settings)
            except Exception as error:
                row = {
                    "workload": name,
                    "batch": batch,
                    "error": f"{type(error).__name__}: {error}",
                }
                traceback.print_exc()
            workload_rows.append(row)
            print_row(WORKLOAD_COLUMNS, format_workload_row(row))
        print()
    if args.part in ("all", "kernels"):
        for line in table_header(KERNEL_COLUMNS):
            print(line)
        kernel_rows = bench_kernels(
            backend,
            torch,
            settings,
            scaled_batch("cnn_train", settings["batch_scale"]),
            scaled_batch("lstm_train", settings["batch_scale"]),
        )
        print()
    if args.write:
        command = "python bench/gpu_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
        entry = results_entry(environment, command.strip(), workload_rows, kernel_rows)
        add_to_results(args.results, entry)
        print(f"# added to {args.results}")
    failed = [r for r in workload_rows + kernel_rows if "error" in r]
    if failed:
        print(f"# {len(failed)} row(s) failed", file=sys.stderr)
    return {"workloads": workload_rows, "kernels": kernel_rows, "environment": environment}


if __name__ == "__main__":
    outcome = main()
    failures = any("error" in r for r in outcome["workloads"] + outcome["kernels"])
    sys.exit(1 if failures else 0)
