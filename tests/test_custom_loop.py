"""Custom training loops as in the design's autograd section: ``loss.backward()``, ``.grad``,
``optimizer.apply_gradients``, gradient accumulation, ``zero_grad``, trainable flags on
layers and (sub-)models, and equality with ``fit``."""

import numpy as np

import dlx
from dlx import layers, losses, optimizers

rng = np.random.default_rng(4)


def _model():
    return dlx.Sequential(
        [
            layers.Dense(6, activation="tanh", input_shape=(3,)),
            layers.LayerNormalization(),
            layers.Dense(2),
        ]
    )


def test_design_snippet_backward_grad_apply_gradients(backend):
    layer = layers.Dense(4)
    x = dlx.Tensor(rng.normal(size=(5, 3)).astype(np.float32), requires_grad=True)
    g = rng.normal(size=(5, 4)).astype(np.float32)
    y = layer(x)
    loss = (y * dlx.asarray(g)).sum()
    loss.backward()
    kernel = dlx.to_numpy(layer.kernel.value).copy()
    np.testing.assert_allclose(dlx.to_numpy(x.grad), g @ kernel.T, rtol=1e-5, atol=1e-6)
    ws = layer.trainable_weights
    v = ws[0]
    np.testing.assert_allclose(
        dlx.to_numpy(v.grad), dlx.to_numpy(x.value).T @ g, rtol=1e-5, atol=1e-5
    )
    opt = optimizers.SGD(0.1)
    opt.apply_gradients(zip([w.grad for w in ws], ws))
    np.testing.assert_allclose(
        dlx.to_numpy(v.value), kernel - 0.1 * dlx.to_numpy(v.grad), rtol=1e-5, atol=1e-6
    )


def test_gradients_accumulate_until_cleared(backend):
    model = _model()
    x = rng.normal(size=(4, 3)).astype(np.float32)
    model(x).sum().backward()
    first = [dlx.to_numpy(w.grad).copy() for w in model.trainable_weights]
    model(x).sum().backward()
    for f, w in zip(first, model.trainable_weights):
        np.testing.assert_allclose(dlx.to_numpy(w.grad), 2 * f, rtol=1e-5, atol=1e-6)
    model.zero_grad()
    assert all(w.grad is None for w in model.weights)
    model(x).sum().backward()
    for f, w in zip(first, model.trainable_weights):
        np.testing.assert_allclose(dlx.to_numpy(w.grad), f, rtol=1e-5, atol=1e-6)


def test_custom_loop_equals_fit(backend):
    x = rng.normal(size=(16, 3)).astype(np.float32)
    y = rng.normal(size=(16, 2)).astype(np.float32)
    dlx.set_seed(3)
    fitted = _model()
    fitted.compile(optimizer=optimizers.Adam(0.01), loss="mse")
    fitted.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    dlx.set_seed(3)
    model = _model()
    opt, mse = optimizers.Adam(0.01), losses.MeanSquaredError()
    for _ in range(3):
        loss = mse(y, model(x, training=True))
        model.zero_grad()
        loss.backward()
        ws = model.trainable_weights
        opt.apply_gradients(zip([w.grad for w in ws], ws))
    for a, b in zip(fitted.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_trainable_flags_on_layers_and_models(backend):
    model = _model()
    x = rng.normal(size=(4, 3)).astype(np.float32)
    model(x)
    first = model.layers[0]
    first.trainable = False
    assert len(model.trainable_weights) == 4
    assert all(not w.requires_grad for w in first.weights)
    model(x).sum().backward()
    assert all(w.grad is None for w in first.weights)
    assert all(w.grad is not None for w in model.trainable_weights)
    model.zero_grad()
    model.trainable = False
    assert model.trainable_weights == [] and len(model.non_trainable_weights) == 6
    out = model(dlx.Tensor(x, requires_grad=True))
    out.sum().backward()  # the input still gets a gradient through frozen layers
    assert all(w.grad is None for w in model.weights)
    model.trainable = True
    assert len(model.trainable_weights) == 6


def test_frozen_sub_model_in_custom_loop(backend):
    dlx.set_seed(0)
    encoder = dlx.Sequential([layers.Dense(4, input_shape=(3,))], name="encoder")
    head = layers.Dense(1)
    inp = layers.Input((3,))
    model = dlx.Model(inp, head(encoder(inp)))
    encoder.trainable = False
    before = [w.copy() for w in encoder.get_weights()]
    head_before = [w.copy() for w in head.get_weights()]
    opt = optimizers.SGD(0.1)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    for _ in range(2):
        model.zero_grad()
        loss = (model(x, training=True) ** 2).mean()
        loss.backward()
        ws = model.trainable_weights
        opt.apply_gradients(zip([w.grad for w in ws], ws))
    for a, b in zip(before, encoder.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(head_before[0], head.get_weights()[0])


def test_optimizer_minimize_and_no_grad(backend):
    layer = layers.Dense(1)
    x = rng.normal(size=(8, 2)).astype(np.float32)
    with dlx.no_grad():
        out = layer(x)
    assert not out.requires_grad
    opt = optimizers.SGD(0.05)
    start = float(((layer(x) - 1.0) ** 2).mean().item())
    for _ in range(20):
        opt.minimize(((layer(x) - 1.0) ** 2).mean(), layer.trainable_weights)
    assert float(((layer(x) - 1.0) ** 2).mean().item()) < start
    assert all(w.grad is None for w in layer.weights)
