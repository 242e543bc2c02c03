"""Losses: values and gradients against Keras 3, stability for extreme logits, bad labels."""

import numpy as np
import pytest
from helpers import check_gradients

import dlx
from dlx import losses

rng = np.random.default_rng(1)
LOGITS = rng.normal(size=(6, 4)) * 3
PROBS = np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True)
SPARSE = np.array([0, 3, 1, 2, 3, 0])
ONE_HOT = np.eye(4)[SPARSE]
BINARY = (rng.random((6, 4)) > 0.5).astype(np.float64)
SIGMOIDS = 1 / (1 + np.exp(-LOGITS))
REGRESSION = rng.normal(size=(6, 4))

CASES = [
    # (dlx loss, keras class name, kwargs, y_true, y_pred)
    ("mean_squared_error", "MeanSquaredError", {}, REGRESSION, LOGITS),
    ("mean_absolute_error", "MeanAbsoluteError", {}, REGRESSION, LOGITS),
    ("huber", "Huber", {"delta": 0.7}, REGRESSION, LOGITS),
    ("binary_crossentropy", "BinaryCrossentropy", {}, BINARY, SIGMOIDS),
    ("binary_crossentropy", "BinaryCrossentropy", {"from_logits": True}, BINARY, LOGITS),
    ("binary_crossentropy", "BinaryCrossentropy", {"label_smoothing": 0.1}, BINARY, SIGMOIDS),
    ("categorical_crossentropy", "CategoricalCrossentropy", {}, ONE_HOT, PROBS),
    ("categorical_crossentropy", "CategoricalCrossentropy", {"from_logits": True}, ONE_HOT, LOGITS),
    (
        "categorical_crossentropy",
        "CategoricalCrossentropy",
        {"label_smoothing": 0.2, "from_logits": True},
        ONE_HOT,
        LOGITS,
    ),
    ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy", {}, SPARSE, PROBS),
    (
        "sparse_categorical_crossentropy",
        "SparseCategoricalCrossentropy",
        {"from_logits": True},
        SPARSE,
        LOGITS,
    ),
    ("kl_divergence", "KLDivergence", {}, PROBS[::-1].copy(), PROBS),
    ("log_cosh", "LogCosh", {}, REGRESSION, LOGITS),
    ("hinge", "Hinge", {}, BINARY, LOGITS),
]
IDS = [f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[2].items())}" for c in CASES]


def _dlx_loss(name, kwargs):
    cls = type(losses.get(name))
    return cls(**kwargs)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_loss_value_and_gradient_match_keras(keras, case):
    import torch

    name, keras_name, kwargs, y_true, y_pred = case
    loss = _dlx_loss(name, kwargs)
    pred = dlx.Tensor(y_pred.astype(np.float32), requires_grad=True)
    value = loss(y_true, pred)
    value.backward()

    reference = getattr(keras.losses, keras_name)(**kwargs)
    torch_pred = torch.tensor(y_pred.astype(np.float32), requires_grad=True)
    expected = reference(torch.tensor(y_true), torch_pred)
    expected.backward()
    np.testing.assert_allclose(value.item(), float(expected.detach()), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        dlx.to_numpy(pred.grad), torch_pred.grad.numpy(), rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_loss_gradients_finite_differences(backend, case):
    name, _, kwargs, y_true, y_pred = case
    loss = _dlx_loss(name, kwargs)
    if name == "mean_absolute_error" or name == "hinge":
        y_pred = y_pred + 0.05  # keep away from the kinks
    check_gradients(lambda p: loss(y_true, p), [y_pred], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "loss, y_true",
    [
        (losses.BinaryCrossentropy(from_logits=True), np.array([[1.0, 0.0, 1.0, 0.0]])),
        (losses.CategoricalCrossentropy(from_logits=True), np.array([[0.0, 1.0, 0.0, 0.0]])),
        (losses.SparseCategoricalCrossentropy(from_logits=True), np.array([1])),
    ],
    ids=["binary", "categorical", "sparse"],
)
def test_extreme_logits_give_finite_loss_and_gradient(backend, loss, y_true):
    logits = dlx.Tensor(np.array([[1e4, -1e4, -1e4, 1e4]], dtype=np.float32), requires_grad=True)
    value = loss(y_true, logits)
    value.backward()
    assert np.isfinite(value.item())
    assert np.all(np.isfinite(dlx.to_numpy(logits.grad)))
    assert value.item() > 1e3  # confidently wrong logits cost a lot, but not inf


def test_reductions(backend):
    y, p = REGRESSION, LOGITS
    per_sample = ((p - y) ** 2).mean(-1)
    assert np.isclose(losses.MeanSquaredError(reduction="sum")(y, p).item(), per_sample.sum())
    none = losses.MeanSquaredError(reduction="none")(y, p)
    np.testing.assert_allclose(dlx.to_numpy(none), per_sample)
    weights = np.arange(6.0)
    weighted = losses.MeanSquaredError()(y, p, sample_weight=weights).item()
    assert np.isclose(weighted, (per_sample * weights).mean())


def test_sparse_labels_out_of_range_are_named(backend):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\].*\[0, 7\]"):
        losses.SparseCategoricalCrossentropy()(np.array([0, 7]), PROBS[:2])


def test_sparse_labels_of_wrong_shape_are_named(backend):
    with pytest.raises(ValueError, match=r"labels of shape \(3,\).*predictions of shape \(2, 4\)"):
        losses.SparseCategoricalCrossentropy()(np.array([0, 1, 2]), PROBS[:2])


def test_categorical_with_integer_labels_points_to_sparse(backend):
    with pytest.raises(ValueError, match="sparse_categorical_crossentropy"):
        losses.CategoricalCrossentropy()(SPARSE, PROBS)


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match="Unknown loss 'mean_square_error'.*mean_squared_error"):
        losses.get("mean_square_error")


def test_loss_from_a_function():
    loss = losses.get(lambda t, p: dlx.ops.mean(dlx.ops.abs(p - t), axis=-1))
    assert np.isclose(loss(REGRESSION, LOGITS).item(), np.abs(LOGITS - REGRESSION).mean())


def test_numpy_sparse_cross_entropy_kernel_equals_generic():
    logits = rng.normal(size=(2, 5, 7)) * 4
    labels = rng.integers(0, 7, (2, 5))
    results = []
    for kernels in (True, False):
        dlx.backends.set_kernels_enabled(kernels)
        x = dlx.Tensor(logits, requires_grad=True)
        loss = dlx.ops.sparse_softmax_cross_entropy(x, dlx.asarray(labels))
        (loss * dlx.asarray(np.arange(10.0).reshape(2, 5))).sum().backward()
        results.append((dlx.to_numpy(loss), dlx.to_numpy(x.grad)))
    dlx.backends.set_kernels_enabled(True)
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12, atol=1e-14)
