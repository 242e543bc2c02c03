"""BatchNormalization, LayerNormalization, GroupNormalization and their fused ops:
float64 gradient checks, PyTorch/Keras references, training vs inference, the moving
statistics update rule, save/reload and bad input."""

import numpy as np
import pytest
from helpers import check_gradients, check_layer_gradients

import dlx
from dlx import layers, ops

rng = np.random.default_rng(7)


def _np_norm(x, axes, eps, gamma=None, beta=None, feature_axes=None):
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if feature_axes is not None:
        shape = [s if i in feature_axes else 1 for i, s in enumerate(x.shape)]
        if gamma is not None:
            y = y * gamma.reshape(shape)
        if beta is not None:
            y = y + beta.reshape(shape)
    return y


# -- ops: gradients ------------------------------------------------------------------
@pytest.mark.parametrize("axis", [-1, 1, [1, 2]])
def test_batch_normalization_op_gradients(backend, axis):
    x = rng.normal(size=(4, 3, 2)) * 2 + 1
    shape = tuple(x.shape[a] for a in np.atleast_1d(axis))
    gamma, beta = rng.normal(size=shape), rng.normal(size=shape)
    check_gradients(lambda x, g, b: ops.batch_normalization(x, g, b, axis=axis), [x, gamma, beta])


def test_batch_normalization_op_with_given_statistics_gradients(backend):
    x = rng.normal(size=(5, 3))
    mean, var = dlx.asarray(rng.normal(size=3)), dlx.asarray(rng.random(3) + 0.5)
    gamma, beta = rng.normal(size=3), rng.normal(size=3)
    check_gradients(
        lambda x, g, b: ops.batch_normalization(x, g, b, mean=mean, variance=var), [x, gamma, beta]
    )


@pytest.mark.parametrize("axis", [-1, [1, 2]])
def test_layer_normalization_op_gradients(backend, axis):
    x = rng.normal(size=(3, 2, 4))
    shape = tuple(x.shape[a] for a in np.atleast_1d(axis))
    gamma, beta = rng.normal(size=shape), rng.normal(size=shape)
    check_gradients(lambda x, g, b: ops.layer_normalization(x, g, b, axis=axis), [x, gamma, beta])
    check_gradients(lambda x: ops.layer_normalization(x, axis=axis), [x])  # no gamma/beta


@pytest.mark.parametrize("axis", [-1, 1])
def test_group_normalization_op_gradients(backend, axis):
    x = rng.normal(size=(2, 4, 3, 4))
    gamma, beta = rng.normal(size=4), rng.normal(size=4)
    check_gradients(
        lambda x, g, b: ops.group_normalization(x, g, b, groups=2, axis=axis), [x, gamma, beta]
    )


def test_normalization_op_values_match_numpy(backend):
    x = rng.normal(size=(6, 5, 4)).astype(np.float32)
    g, b = rng.normal(size=4).astype(np.float32), rng.normal(size=4).astype(np.float32)
    bn = dlx.to_numpy(ops.batch_normalization(dlx.Tensor(x), dlx.asarray(g), dlx.asarray(b)))
    np.testing.assert_allclose(bn, _np_norm(x, (0, 1), 1e-3, g, b, (2,)), rtol=1e-4, atol=1e-5)
    ln = dlx.to_numpy(ops.layer_normalization(dlx.Tensor(x), dlx.asarray(g), dlx.asarray(b)))
    np.testing.assert_allclose(ln, _np_norm(x, (2,), 1e-3, g, b, (2,)), rtol=1e-4, atol=1e-5)
    gn = dlx.to_numpy(ops.group_normalization(dlx.Tensor(x), groups=2))
    grouped = x.reshape(6, 5, 2, 2)
    expected = _np_norm(grouped, (1, 3), 1e-3).reshape(x.shape)
    np.testing.assert_allclose(gn, expected, rtol=1e-4, atol=1e-5)


# -- layers: gradients ------------------------------------------------------------------
@pytest.mark.parametrize("training", [True, False])
def test_batch_normalization_layer_gradients(backend, training):
    layer = layers.BatchNormalization(dtype="float64", momentum=0.5)
    x = rng.normal(size=(6, 3))
    layer(x)
    layer.moving_mean.assign(rng.normal(size=3))
    layer.moving_variance.assign(rng.random(3) + 0.5)
    check_layer_gradients(layer, x, training=training)


def test_batch_normalization_channels_first_gradients(backend):
    layer = layers.BatchNormalization(axis=1, dtype="float64")
    check_layer_gradients(layer, rng.normal(size=(2, 3, 2, 2)), training=True)
    assert layer.gamma.shape == (3,)


def test_layer_normalization_layer_gradients(backend):
    layer = layers.LayerNormalization(dtype="float64")
    layer(np.zeros((1, 3, 4)))
    layer.gamma.assign(rng.normal(size=4))
    layer.beta.assign(rng.normal(size=4))
    check_layer_gradients(layer, rng.normal(size=(2, 3, 4)))


def test_group_normalization_layer_gradients(backend):
    layer = layers.GroupNormalization(groups=2, dtype="float64")
    layer(np.zeros((1, 3, 4)))
    layer.gamma.assign(rng.normal(size=4))
    check_layer_gradients(layer, rng.normal(size=(2, 3, 4)))
    instance = layers.GroupNormalization(groups=-1, dtype="float64", center=False)
    check_layer_gradients(instance, rng.normal(size=(2, 3, 2)))
    assert [w.shape for w in instance.weights] == [(2,)]


# -- BatchNormalization behaviour --------------------------------------------------------
def test_batch_normalization_weights_layout(backend):
    layer = layers.BatchNormalization()
    layer(np.zeros((2, 5), np.float32))
    names = [w.name.split("/")[-1] for w in layer.weights]
    assert names == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert [w.shape for w in layer.weights] == [(5,)] * 4
    assert len(layer.trainable_weights) == 2
    assert [w.name for w in layer.non_trainable_weights] == [
        layer.moving_mean.name,
        layer.moving_variance.name,
    ]
    g, b, mm, mv = layer.get_weights()
    np.testing.assert_array_equal(g, 1)
    np.testing.assert_array_equal(mm, 0)
    np.testing.assert_array_equal(mv, 1)


def test_batch_normalization_training_vs_inference(backend):
    layer = layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    x = (rng.normal(size=(16, 3)) * 3 + 5).astype(np.float32)
    y_train = dlx.to_numpy(layer(x, training=True))
    np.testing.assert_allclose(y_train, _np_norm(x, (0,), 1e-3), rtol=1e-4, atol=1e-4)
    # inference uses the moving statistics: one update from (0, 1)
    mean, var = x.mean(0), x.var(0)
    np.testing.assert_allclose(dlx.to_numpy(layer.moving_mean.value), 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(
        dlx.to_numpy(layer.moving_variance.value), 0.9 + 0.1 * var, rtol=1e-5
    )
    y_infer = dlx.to_numpy(layer(x, training=False))
    expected = (x - 0.1 * mean) / np.sqrt(0.9 + 0.1 * var + 1e-3)
    np.testing.assert_allclose(y_infer, expected, rtol=1e-4, atol=1e-4)
    # inference leaves the moving statistics alone
    before = [w.copy() for w in layer.get_weights()]
    layer(x)
    for a, b in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_batch_normalization_moving_statistics_update_rule(backend):
    momentum = 0.8
    layer = layers.BatchNormalization(axis=[1, 2], momentum=momentum, dtype="float64")
    batches = [rng.normal(size=(8, 2, 3)) * (i + 1) + i for i in range(3)]
    mm, mv = np.zeros((2, 3)), np.ones((2, 3))
    for x in batches:
        layer(x, training=True)
        mm = mm * momentum + x.mean(0) * (1 - momentum)
        mv = mv * momentum + x.var(0) * (1 - momentum)  # biased batch variance, as Keras
    np.testing.assert_allclose(dlx.to_numpy(layer.moving_mean.value), mm, rtol=1e-12)
    np.testing.assert_allclose(dlx.to_numpy(layer.moving_variance.value), mv, rtol=1e-12)
    assert layer.moving_mean.grad is None


def test_frozen_batch_normalization_runs_in_inference_mode(backend):
    layer = layers.BatchNormalization()
    x = rng.normal(size=(8, 3)).astype(np.float32) + 2
    layer.trainable = False
    y = dlx.to_numpy(layer(x, training=True))
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-3), rtol=1e-5)
    np.testing.assert_array_equal(dlx.to_numpy(layer.moving_mean.value), 0)


def test_batch_normalization_in_fit_updates_moving_statistics(backend):
    dlx.set_seed(0)
    model = dlx.Sequential(
        [layers.Dense(4, input_shape=(3,)), layers.BatchNormalization(), layers.Dense(1)]
    )
    model.compile(optimizer="sgd", loss="mse")
    x = rng.normal(size=(32, 3)).astype(np.float32)
    model.fit(x, x[:, :1], epochs=1, batch_size=16, verbose=0)
    bn = model.layers[1]
    assert not np.allclose(dlx.to_numpy(bn.moving_mean.value), 0)
    assert len(model.trainable_weights) == 6 and len(model.weights) == 8


def _bn_model():
    inp = layers.Input((4, 4, 2))
    h = layers.BatchNormalization(momentum=0.5)(inp)
    h = layers.Reshape((32,))(h)
    out = layers.Dense(3)(layers.LayerNormalization()(h))
    return dlx.Model(inp, out)


def test_batch_normalization_model_reloads_to_identical_predictions(backend):
    dlx.set_seed(1)
    model = _bn_model()
    model.compile(optimizer="adam", loss="mse")
    x = rng.normal(size=(16, 4, 4, 2)).astype(np.float32) * 2 + 1
    model.fit(x, rng.normal(size=(16, 3)).astype(np.float32), epochs=2, batch_size=8, verbose=0)
    expected = dlx.to_numpy(model.predict(x, verbose=0))
    weights = model.get_weights()
    assert len(weights) == 8  # moving statistics are saved with the rest
    dlx.set_seed(2)
    fresh = _bn_model()
    fresh.set_weights(weights)
    np.testing.assert_array_equal(dlx.to_numpy(fresh.predict(x, verbose=0)), expected)


def test_batch_normalization_model_save_load(backend, tmp_path):
    if not hasattr(dlx, "load_model") or not hasattr(dlx.Model, "save"):
        pytest.skip("dlx.load_model / Model.save are not available yet")
    dlx.set_seed(1)
    model = _bn_model()
    model.compile(optimizer="adam", loss="mse")
    x = rng.normal(size=(16, 4, 4, 2)).astype(np.float32) * 2 + 1
    model.fit(x, rng.normal(size=(16, 3)).astype(np.float32), epochs=2, batch_size=8, verbose=0)
    expected = dlx.to_numpy(model.predict(x, verbose=0))
    path = tmp_path / "bn_model.dlx"
    model.save(str(path))
    loaded = dlx.load_model(str(path))
    np.testing.assert_array_equal(dlx.to_numpy(loaded.predict(x, verbose=0)), expected)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_normalization_layers_get_config_roundtrip(backend):
    for layer in (
        layers.BatchNormalization(axis=1, momentum=0.9, epsilon=1e-5, center=False),
        layers.LayerNormalization(axis=[1, 2], epsilon=1e-6, scale=False),
        layers.GroupNormalization(groups=4, epsilon=1e-4),
    ):
        config = layer.get_config()
        clone = type(layer).from_config({**config, "name": config["name"] + "_clone"})
        for key, value in config.items():
            if key != "name":
                assert clone.get_config()[key] == value, key


# -- references --------------------------------------------------------------------------
def test_layer_and_batch_norm_match_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.normal(size=(6, 5, 4))
    g, b = rng.normal(size=4), rng.normal(size=4)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, g, b))
    xd, gd, bd = (dlx.Tensor(a, requires_grad=True) for a in (x, g, b))
    r = rng.normal(size=x.shape)
    # layer norm
    yt = F.layer_norm(xt, (4,), gt, bt, eps=1e-3)
    yd = ops.layer_normalization(xd, gd, bd, epsilon=1e-3)
    (yt * torch.tensor(r)).sum().backward()
    (yd * r).sum().backward()
    np.testing.assert_allclose(dlx.to_numpy(yd), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    for ours, theirs in ((xd, xt), (gd, gt), (bd, bt)):
        np.testing.assert_allclose(
            dlx.to_numpy(ours.grad), theirs.grad.numpy(), rtol=1e-9, atol=1e-10
        )
    # batch norm, channels at axis 1 as torch wants it
    xc = rng.normal(size=(6, 4, 3)) * 2 + 1
    for training in (True, False):
        xt = torch.tensor(xc, requires_grad=True)
        gt, bt = torch.tensor(g, requires_grad=True), torch.tensor(b, requires_grad=True)
        rm, rv = torch.tensor(rng.normal(size=4)), torch.tensor(rng.random(4) + 0.5)
        yt = F.batch_norm(xt, rm.clone(), rv.clone(), gt, bt, training=training, eps=1e-3)
        xd, gd, bd = (dlx.Tensor(a, requires_grad=True) for a in (xc, g, b))
        stats = (
            {}
            if training
            else {"mean": dlx.asarray(rm.numpy()), "variance": dlx.asarray(rv.numpy())}
        )
        yd = ops.batch_normalization(xd, gd, bd, axis=1, epsilon=1e-3, **stats)
        rr = rng.normal(size=xc.shape)
        (yt * torch.tensor(rr)).sum().backward()
        (yd * rr).sum().backward()
        np.testing.assert_allclose(dlx.to_numpy(yd), yt.detach().numpy(), rtol=1e-9, atol=1e-10)
        for ours, theirs in ((xd, xt), (gd, gt), (bd, bt)):
            np.testing.assert_allclose(
                dlx.to_numpy(ours.grad), theirs.grad.numpy(), rtol=1e-8, atol=1e-9
            )


def test_group_norm_matches_torch():
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(2, 6, 5))  # channels at axis 1, as torch wants
    g, b = rng.normal(size=6), rng.normal(size=6)
    yt = torch.nn.functional.group_norm(
        torch.tensor(x), 3, torch.tensor(g), torch.tensor(b), eps=1e-3
    )
    yd = ops.group_normalization(dlx.Tensor(x), dlx.asarray(g), dlx.asarray(b), groups=3, axis=1)
    np.testing.assert_allclose(dlx.to_numpy(yd), yt.numpy(), rtol=1e-10, atol=1e-12)


def test_normalization_layers_match_keras(keras):
    x = (rng.normal(size=(8, 3, 4)) * 2 + 1).astype(np.float32)
    cases = [
        (layers.BatchNormalization(momentum=0.7), keras.layers.BatchNormalization(momentum=0.7)),
        (layers.LayerNormalization(), keras.layers.LayerNormalization()),
        (layers.GroupNormalization(groups=2), keras.layers.GroupNormalization(groups=2)),
    ]
    for ours, theirs in cases:
        ours(x)
        theirs.build(x.shape)
        weights = [
            w + rng.normal(size=w.shape).astype(np.float32) * 0.1 for w in ours.get_weights()
        ]
        if isinstance(ours, layers.BatchNormalization):
            weights[3] = np.abs(weights[3]) + 0.5
        ours.set_weights(weights)
        theirs.set_weights(weights)
        for training in (False, True):
            y = dlx.to_numpy(ours(x, training=training))
            yk = keras.ops.convert_to_numpy(theirs(x, training=training))
            np.testing.assert_allclose(y, yk, rtol=1e-4, atol=1e-4, err_msg=type(ours).__name__)
        for a, b in zip(ours.get_weights(), theirs.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=type(ours).__name__)


# -- bad input ---------------------------------------------------------------------------
def test_normalization_bad_arguments_name_the_layer():
    with pytest.raises(ValueError, match="momentum"):
        layers.BatchNormalization(momentum=1.5, name="bn_bad")
    with pytest.raises(ValueError, match="'gn_bad'.*groups"):
        layers.GroupNormalization(groups=0, name="gn_bad")
    with pytest.raises(TypeError, match="'ln_bad'.*axis"):
        layers.LayerNormalization(axis="last", name="ln_bad")


def test_normalization_bad_shapes_name_layer_and_shapes(backend):
    gn = layers.GroupNormalization(groups=3, name="gn_shape")
    with pytest.raises(ValueError, match=r"gn_shape.*4 channels.*\(2, 4\).*3"):
        gn(np.zeros((2, 4), np.float32))
    bn = layers.BatchNormalization(axis=3, name="bn_axis")
    with pytest.raises(ValueError, match=r"bn_axis.*axis 3.*\(2, 4\)"):
        bn(np.zeros((2, 4), np.float32))
    ln = layers.LayerNormalization(name="ln_shape")
    ln(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"ln_shape.*\(2, 5\)"):
        ln(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"gamma has shape \(3,\).*\(2, 4\)"):
        ops.layer_normalization(dlx.Tensor(np.zeros((2, 4))), dlx.asarray(np.ones(3)))


def test_symbolic_call_with_training_true_leaves_moving_statistics(backend):
    # output shapes of symbolic calls are found by running the layer on zeros: that run
    # must not count as a batch, even when the graph asks for training=True
    x = layers.Input((3,))
    bn = layers.BatchNormalization()
    y = bn(x, training=True)
    inner_in = layers.Input((3,))
    inner = dlx.Model(inner_in, layers.BatchNormalization(name="inner_bn")(inner_in))
    model = dlx.Model(x, inner(y, training=True))
    for layer in (bn, inner.get_layer("inner_bn")):
        np.testing.assert_array_equal(dlx.to_numpy(layer.moving_mean.value), 0)
        np.testing.assert_array_equal(dlx.to_numpy(layer.moving_variance.value), 1)
    data = rng.normal(size=(8, 3)).astype(np.float32) + 3
    model(data)  # the recorded training=True is replayed on real data
    assert not np.allclose(dlx.to_numpy(bn.moving_mean.value), 0)
