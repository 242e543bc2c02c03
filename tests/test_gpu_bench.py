"""bench/gpu_bench.py runs end to end without a GPU (``--dry-run``: the ``cuda_emulation``
backend, the same CUDA sources compiled by g++, torch on the CPU).

Checked: every workload and kernel row comes out with positive times; the custom path
really launches dlx's CUDA kernels (as many as the fused designs imply) and the
generic path launches none; the kernel rows agree with the generic ops and with
torch; a dry run writes nothing; without CuPy the script stops with exit status 2
and a message, not a traceback; ``--write`` puts its entry in the GPU section.
"""

import contextlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dlx

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_bench.py"
WORKLOAD_BATCHES = {"mlp_train": 128, "cnn_train": 64, "lstm_train": 64, "cnn_infer256": 256}
STEPS = 28  # lstm_train: 28 time steps, two LSTM layers


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torch_present():
    return importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def gpu_bench():
    return _load_script()


@pytest.fixture(scope="module")
def dry_run(gpu_bench):
    """One ``--dry-run`` of the script: (its returned rows, its stdout, the kernel tables
    before and after, RESULTS.md before)."""
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("the cuda_emulation backend needs g++ (or $CXX)")
    with _current_backend_kept():
        backend = dlx.set_backend("cuda_emulation")
        table_before = dict(backend.kernels)
        results_before = Path(gpu_bench.RESULTS_PATH).read_bytes()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            outcome = gpu_bench.main(["--dry-run"])
        table_after = dict(dlx.get_backend().kernels)
    return outcome, out.getvalue(), (table_before, table_after), results_before


@contextlib.contextmanager
def _current_backend_kept():
    """Put the current backend and the kernel switch back afterwards (the script sets both)."""
    previous, enabled = dlx.get_backend().name, dlx.backends.kernels_enabled()
    try:
        yield
    finally:
        dlx.set_backend(previous)
        dlx.backends.set_kernels_enabled(enabled)


def _expected_kernel_ops():
    ops = []
    for layer in ("conv1", "conv2"):
        ops += [f"conv2d {part} ({layer})" for part in ("forward", "input-grad", "weight-grad")]
    for layer in ("pool1", "pool2"):
        for kind in ("max", "avg"):
            ops += [f"{kind}_pool2d {part} ({layer})" for part in ("forward", "backward")]
    return ops + [f"{cell}_sequence fwd+bwd" for cell in ("rnn", "lstm", "gru")]


def test_every_workload_row_with_positive_times(dry_run, gpu_bench):
    rows = dry_run[0]["workloads"]
    assert [r["workload"] for r in rows] == list(WORKLOAD_BATCHES)
    for row in rows:
        assert "error" not in row, row
        scale = gpu_bench.DRY_RUN_SETTINGS["batch_scale"]
        assert row["batch"] == max(1, round(WORKLOAD_BATCHES[row["workload"]] * scale))
        assert row["custom"] > 0 and row["generic"] > 0
        if _torch_present():
            assert row["torch"] > 0
        else:
            assert row["torch"] is None


def test_custom_path_launches_the_cuda_kernels_and_generic_none(dry_run):
    rows = {r["workload"]: r for r in dry_run[0]["workloads"]}
    for row in rows.values():
        assert row["launches"]["generic"] == {}, row["workload"]
    cnn = rows["cnn_train"]["launches"]["custom"]
    # two convolutions with fused bias + ReLU, two max pools forward and backward
    assert cnn["im2col<float>"] == 2 and cnn["bias_act<float>"] == 2
    assert cnn["max_pool_forward<float>"] == 2 and cnn["max_pool_backward<float>"] == 2
    infer = rows["cnn_infer256"]["launches"]["custom"]
    assert infer["max_pool_forward<float>"] == 2 and "max_pool_backward<float>" not in infer
    lstm = rows["lstm_train"]["launches"]["custom"]
    # one fused kernel per time step and layer, each way
    assert lstm == {"lstm_forward_step<float>": 2 * STEPS, "lstm_backward_step<float>": 2 * STEPS}


def test_every_kernel_row_agrees_with_the_generic_op_and_torch(dry_run):
    rows = dry_run[0]["kernels"]
    assert [r["op"] for r in rows] == _expected_kernel_ops()
    for row in rows:
        assert "error" not in row, row
        assert row["custom"] > 0 and row["generic"] > 0, row["op"]
        assert row["diff_generic"] <= 1e-5, row["op"]  # float32, the tolerance
        if _torch_present():
            assert row["torch"] > 0, row["op"]
        if "sequence" in row["op"]:
            # one fused kernel per step forward and one backward (GRU with reset_after)
            assert sum(row["launches"].values()) == 2 * STEPS, row
            continue  # torch's recurrent layers include the input projection: no diff
        if "weight-grad" in row["op"]:
            assert row["launches"] == {}  # columns kept by the forward: one cuBLAS product
        else:
            assert sum(row["launches"].values()) >= 1, row
        if _torch_present():
            assert row["diff_torch"] <= 1e-5, row["op"]


def test_tables_printed_and_nothing_written(dry_run, gpu_bench):
    outcome, stdout, (table_before, table_after), results_before = dry_run
    lines = stdout.splitlines()
    for columns in (gpu_bench.WORKLOAD_COLUMNS, gpu_bench.KERNEL_COLUMNS):
        assert gpu_bench.table_header(columns)[0] in lines
    for row in outcome["workloads"]:
        assert any(line.startswith(f"| {row['workload']} | {row['batch']} |") for line in lines)
    for row in outcome["kernels"]:
        assert any(line.startswith(f"| {row['op']} |") for line in lines)
    assert Path(gpu_bench.RESULTS_PATH).read_bytes() == results_before
    # the launch counter put the backend's own kernel objects back
    assert table_after.keys() == table_before.keys()
    assert all(table_after[k] is table_before[k] for k in table_before)


def test_write_is_refused_with_dry_run(gpu_bench, capsys):
    with pytest.raises(SystemExit) as stop:
        gpu_bench.main(["--dry-run", "--write"])
    assert stop.value.code == 2
    assert "--write" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_without_cupy_a_clear_message_and_exit_status():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--part", "kernels"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "DLX_BACKEND": "numpy"},
    )
    assert result.returncode == 2, result.stderr
    assert "CuPy" in result.stderr and "--dry-run" in result.stderr
    assert "Traceback" not in result.stderr
    assert "| op |" not in result.stdout  # stopped before measuring anything


def test_results_entry_goes_to_the_gpu_section(dry_run, gpu_bench, tmp_path):
    outcome = dry_run[0]
    environment = ["NVIDIA Test GPU, CUDA runtime 12.8", "torch 2.13.0"]
    entry = gpu_bench.results_entry(
        environment, "python bench/gpu_bench.py --write", outcome["workloads"], outcome["kernels"]
    )
    assert "NVIDIA Test GPU" in entry.splitlines()[0]
    path = tmp_path / "RESULTS.md"
    path.write_text(
        "# Results\n\n## CPU\n\ncpu text\n\n## GPU (issue 6)\n\nhow to run\n\n## Later\n\nx\n"
    )
    gpu_bench.add_to_results(str(path), entry)
    gpu_bench.add_to_results(str(path), entry.replace("NVIDIA Test GPU", "Second GPU"))
    text = path.read_text()
    how, first, second, later = (
        text.index("how to run"),
        text.index("NVIDIA Test GPU"),
        text.index("Second GPU"),
        text.index("## Later"),
    )
    assert how < first < second < later
    assert text.count("| cnn_train |") == 2 and text.count("| lstm_sequence fwd+bwd |") == 2
    bare = tmp_path / "bare.md"
    bare.write_text("# Results\n\n## CPU\n\ncpu text\n")
    gpu_bench.add_to_results(str(bare), entry)
    bare_text = bare.read_text()
    assert bare_text.index("cpu text") < bare_text.index(gpu_bench.RESULTS_SECTION)
    assert bare_text.index(gpu_bench.RESULTS_SECTION) < bare_text.index("NVIDIA Test GPU")


def test_interleaved_medians_runs_every_step_in_every_round(gpu_bench):
    calls = {"a": 0, "b": 0}
    steps = {name: (lambda name=name: calls.__setitem__(name, calls[name] + 1)) for name in calls}
    times = gpu_bench.interleaved_medians(steps, repeats=12, warmup=2, rounds=3)
    assert set(times) == {"a", "b"} and all(t >= 0 for t in times.values())
    assert calls == {"a": 3 * (2 + 4), "b": 3 * (2 + 4)}


def _cupy_backend_available():
    try:
        with _current_backend_kept():
            dlx.set_backend("cupy")
    except dlx.backends.BackendUnavailableError:
        return False
    return True


@pytest.mark.skipif(not _cupy_backend_available(), reason="needs CuPy and a CUDA device")
def test_small_run_on_the_gpu(gpu_bench):
    """On a GPU machine: the real path (cupy, torch on CUDA if present), tiny and short."""
    argv = ["--part", "kernels", "--batch-scale", "0.0625", "--repeats", "3"]
    argv += ["--warmup", "1", "--rounds", "1"]
    with _current_backend_kept(), contextlib.redirect_stdout(io.StringIO()):
        outcome = gpu_bench.main(argv)
    assert not outcome["environment"][0].startswith("dry run")
    rows = outcome["kernels"]
    assert [r["op"] for r in rows] == _expected_kernel_ops()
    for row in rows:
        assert "error" not in row, row
        assert row["custom"] > 0 and row["generic"] > 0, row["op"]
        assert row["diff_generic"] <= 1e-4, row["op"]  # cuBLAS may sum in another order
        if "sequence" in row["op"]:
            assert sum(row["launches"].values()) == 2 * STEPS, row
