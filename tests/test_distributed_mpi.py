"""Data-parallel training with 2 real MPI processes (``mpiexec -n 2`` from the ``mpich`` wheel).

Each test launches ``tests/distributed_scripts/train_mlp.py`` under mpiexec with
this interpreter, one BLAS/OpenMP thread per process (2 cores), and a timeout,
then compares what the ranks saved with a single-process run computed here.
Skipped with the reason where mpi4py or mpiexec is not installed
(``pip install -e ".[distributed]"``).
"""

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import dlx

SCRIPTS = pathlib.Path(__file__).resolve().parent / "distributed_scripts"
TIMEOUT = 60


def _mpiexec():
    here = pathlib.Path(sys.executable).parent
    return shutil.which("mpiexec", path=str(here)) or shutil.which("mpiexec")


def _skip_reason():
    if importlib.util.find_spec("mpi4py") is None:
        return 'mpi4py is not installed (pip install -e ".[distributed]" installs mpi4py and mpich)'
    if _mpiexec() is None:
        return "no mpiexec next to the interpreter or on PATH (the mpich wheel provides one)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def launch(mode, out_dir, n=2, backend="numpy"):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("DLX_BACKEND", None)
    command = [
        _mpiexec(),
        "-n",
        str(n),
        sys.executable,
        str(SCRIPTS / "train_mlp.py"),
        str(out_dir),
        mode,
        backend,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    return done, time.perf_counter() - start


@pytest.fixture(scope="module")
def script():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import train_mlp
    finally:
        sys.path.remove(str(SCRIPTS))
    return train_mlp


@pytest.fixture(scope="module", params=["numpy", "array_api_strict"])
def fit_run(request, tmp_path_factory):
    """The ranks' saved results of ``fit(distributed=True)`` on each host backend.

    (numpy: the all-reduce works in place on the gradient buffer; array_api_strict:
    through a host copy - the generic path.)"""
    out = tmp_path_factory.mktemp(f"mpi_fit_{request.param}")
    done, _ = launch("fit", out, backend=request.param)
    assert done.returncode == 0, done.stdout + done.stderr
    (out / "stdout.txt").write_text(done.stdout)
    return out, request.param


def _weights(path):
    saved = np.load(path)
    return [saved[f"arr_{i}"] for i in range(len([k for k in saved.files if k.startswith("arr_")]))]


def test_fit_on_two_ranks_equals_one_process_on_the_global_batches(fit_run, script):
    fit_run, backend = fit_run
    dlx.set_backend(backend)
    x, y = script.data()
    model = script.build()
    history = model.fit(x, y, batch_size=script.BATCH, epochs=script.EPOCHS, verbose=0)
    rank0 = np.load(fit_run / "fit_rank0.npz")
    for i, expected in enumerate(model.get_weights()):
        np.testing.assert_allclose(rank0[f"arr_{i}"], expected, rtol=1e-10, atol=1e-12)
    # metrics are summed over ranks: History shows the global numbers
    np.testing.assert_allclose(rank0["loss"], history.history["loss"], rtol=1e-10)
    np.testing.assert_allclose(rank0["accuracy"], history.history["accuracy"], rtol=1e-12)


def test_weights_and_history_are_identical_on_both_ranks(fit_run):
    fit_run, _ = fit_run
    for name in ("fit", "bn"):  # bn: BatchNorm statistics come from shards, then are averaged
        rank0, rank1 = (
            np.load(fit_run / f"{name}_rank0.npz"),
            np.load(fit_run / f"{name}_rank1.npz"),
        )
        assert rank0.files == rank1.files
        for key in rank0.files:
            np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=f"{name}: {key}")


def test_only_rank_zero_prints_the_progress(fit_run):
    fit_run, _ = fit_run
    stdout = (fit_run / "stdout.txt").read_text()
    assert stdout.count("Epoch 1/2") == 1 and stdout.count("Epoch 2/2") == 1, stdout


def test_custom_loop_allreduce_gradients_equals_one_process(tmp_path, script):
    done, _ = launch("custom", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    x, y = script.data()
    model = script.custom_loop(script.build(), x, y, steps=3)
    got = [_weights(tmp_path / f"custom_rank{r}.npz") for r in (0, 1)]
    for i, expected in enumerate(model.get_weights()):
        np.testing.assert_allclose(got[0][i], expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(got[0][i], got[1][i])


def test_a_failing_rank_ends_the_job_with_its_error(tmp_path):
    # rank 1 raises at its 2nd step of a 50-epoch fit; rank 0 would wait forever without the abort
    done, seconds = launch("fail", tmp_path)
    assert done.returncode != 0
    assert "deliberate failure on rank 1 at batch 1" in done.stderr
    assert "rank 1 of 2 failed" in done.stderr
    assert "rank 0 done" not in done.stdout
    assert seconds < TIMEOUT


def test_ranks_with_different_models_fail_with_a_clear_error(tmp_path):
    done, _ = launch("mismatch", tmp_path)
    assert done.returncode != 0
    assert "every rank must run the same model" in done.stderr
    expected = "array 0 is ((6, 16), 'float64') on rank 0 but ((6, 17), 'float64') on rank 1"
    assert expected in done.stderr
