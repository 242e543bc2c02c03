"""The compiled softmax cross-entropy (backends/cpu_losses.py, backends/cpu/losses.cpp).

It must give what the NumPy kernel gives (to float32 rounding: its exponential is a
polynomial of a few ulp), agree with a float64 reference, pass NaN and inf as the
NumPy kernel does, reject labels outside ``[0, classes)`` before using them, split
over the pool without changing a bit, and fall back where it cannot run.
"""

import shutil

import numpy as np
import pytest
from dlx.backends import cpu_kernels, cpu_library, cpu_losses, numpy_kernels
from helpers import check_gradients, count_compiled_calls

import dlx
from dlx import losses, ops

needs_compiler = pytest.mark.skipif(
    shutil.which(cpu_library.compiler_name()) is None, reason="no C++ compiler on this machine"
)
pytestmark = needs_compiler


@pytest.fixture
def calls(monkeypatch):
    """The compiled kernels on, and a Counter of the losses.cpp functions that ran."""
    yield count_compiled_calls(monkeypatch, "losses")
    monkeypatch.undo()
    cpu_kernels.forget()


def _reference(logits, labels):
    """Per-sample loss and softmax in float64."""
    x = logits.astype(np.float64).reshape(-1, logits.shape[-1])
    shifted = x - x.max(1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(1))
    y = labels.reshape(-1)
    loss = log_z - shifted[np.arange(len(y)), y]
    softmax = np.exp(shifted - log_z[:, None])
    return loss.reshape(labels.shape), softmax.reshape(logits.shape)


SHAPES = [(128, 10), (1, 10), (7, 1), (3, 5, 7), (64, 16), (33, 100), (300, 1000)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_backward_match_numpy_and_float64(calls, dtype, shape):
    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    logits = (rng.standard_normal(shape) * 6).astype(dtype)
    labels = rng.integers(0, shape[-1], shape[:-1])
    loss, softmax = cpu_losses.sparse_softmax_cross_entropy(logits, labels)
    want_loss, want_softmax = numpy_kernels.sparse_softmax_cross_entropy(logits, labels)
    assert loss.dtype == softmax.dtype == dtype
    assert loss.shape == labels.shape and softmax.shape == logits.shape
    tolerance = (
        {"rtol": 2e-6, "atol": 2e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-14}
    )
    np.testing.assert_allclose(loss, want_loss, **tolerance)
    np.testing.assert_allclose(softmax, want_softmax, rtol=tolerance["rtol"], atol=1e-7)
    reference_loss, reference_softmax = _reference(logits, labels)
    np.testing.assert_allclose(loss, reference_loss, **tolerance)
    np.testing.assert_allclose(softmax, reference_softmax, rtol=tolerance["rtol"], atol=1e-7)
    for g in (rng.random(labels.shape).astype(dtype), dtype(0.25) / 3):  # per sample, or a mean's
        grad = cpu_losses.sparse_softmax_cross_entropy_backward(g, softmax, labels)
        want = numpy_kernels.sparse_softmax_cross_entropy_backward(g, softmax, labels)
        assert grad.dtype == dtype and grad.shape == logits.shape
        np.testing.assert_allclose(grad, want, rtol=1e-6 if dtype == np.float32 else 1e-15)
    assert calls == {"sparse_softmax_cross_entropy": 1, "sparse_softmax_cross_entropy_backward": 2}


def test_int32_labels(calls):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((20, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 20).astype(np.int32)
    loss, softmax = cpu_losses.sparse_softmax_cross_entropy(logits, labels)
    want_loss, want_softmax = numpy_kernels.sparse_softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(loss, want_loss, rtol=2e-6)
    assert calls["sparse_softmax_cross_entropy"] == 1


def test_nan_and_inf_pass_as_in_numpy(calls):
    logits = np.array(
        [[0.0, 1.0, 2.0], [np.nan, 1.0, 2.0], [0.0, np.inf, 1.0], [-np.inf, 0.0, 1.0]], np.float32
    )
    labels = np.array([0, 1, 0, 2])
    with np.errstate(invalid="ignore"):
        want_loss, want_softmax = numpy_kernels.sparse_softmax_cross_entropy(logits, labels)
    loss, softmax = cpu_losses.sparse_softmax_cross_entropy(logits, labels)
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(want_loss))
    np.testing.assert_array_equal(np.isnan(softmax), np.isnan(want_softmax))
    finite = ~np.isnan(want_softmax)
    np.testing.assert_allclose(softmax[finite], want_softmax[finite], rtol=2e-6, atol=1e-7)
    assert loss[3] == pytest.approx(want_loss[3], rel=2e-6)  # -inf logit: probability 0


@pytest.mark.parametrize("bad", [-1, 10, 2**40])
def test_labels_out_of_range_raise_before_use(calls, bad):
    logits = np.zeros((6, 10), np.float32)
    labels = np.array([0, 1, bad, 3, 4, 5])
    with pytest.raises(ValueError, match=rf"labels must lie in \[0, 9\].*got labels in \[.*{bad}"):
        cpu_losses.sparse_softmax_cross_entropy(logits, labels)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):  # the NumPy kernel too
        numpy_kernels.sparse_softmax_cross_entropy(logits, labels)


def test_split_over_the_pool_changes_no_bit(calls):
    # 4096 rows of 1000 classes are parts for several threads; row by row is one part each
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((4096, 1000)).astype(np.float32)
    labels = rng.integers(0, 1000, 4096)
    loss, softmax = cpu_losses.sparse_softmax_cross_entropy(logits, labels)
    for rows in (slice(0, 1), slice(1000, 1017), slice(4095, 4096)):
        part_loss, part_softmax = cpu_losses.sparse_softmax_cross_entropy(
            np.ascontiguousarray(logits[rows]), labels[rows]
        )
        np.testing.assert_array_equal(part_loss, loss[rows])
        np.testing.assert_array_equal(part_softmax, softmax[rows])


def test_falls_back_where_it_cannot_run(calls):
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((10, 8))
    labels = rng.integers(0, 8, 10)
    strided = logits[:, ::2]  # not contiguous
    loss, _ = cpu_losses.sparse_softmax_cross_entropy(strided, labels % 4)
    np.testing.assert_allclose(loss, _reference(strided, labels % 4)[0], rtol=1e-13)
    half = logits.astype(np.float16)  # no compiled float16
    loss, _ = cpu_losses.sparse_softmax_cross_entropy(half, labels)
    assert loss.dtype == np.float16
    assert calls["sparse_softmax_cross_entropy"] == 0


def test_the_op_and_the_loss_use_it_and_check_gradients(calls):
    dlx.set_backend("numpy")
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((12, 5)) * 3
    labels = dlx.asarray(rng.integers(0, 5, 12))
    for mean in (True, False):
        check_gradients(
            lambda x, mean=mean: ops.sparse_softmax_cross_entropy(x, labels, mean=mean), [logits]
        )
    assert calls["sparse_softmax_cross_entropy"] > 0
    assert calls["sparse_softmax_cross_entropy_backward"] > 0
    loss_fn = losses.SparseCategoricalCrossentropy(from_logits=True)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\].*got labels in \[0, 5\]"):
        loss_fn(np.array([0, 5, 1]), rng.standard_normal((3, 5)))


def test_generic_path_checks_the_labels_too():
    dlx.set_backend("array_api_strict")
    logits = dlx.asarray(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\].*got labels in \[-2, 1\]"):
        ops.sparse_softmax_cross_entropy(logits, dlx.asarray(np.array([0, -2, 1])))
