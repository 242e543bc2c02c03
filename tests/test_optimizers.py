"""Optimizers follow Keras 3's update rules step for step; clipping, weight decay, schedules."""

import numpy as np
import pytest

import dlx
from dlx import optimizers
from dlx.optimizers import schedules

rng = np.random.default_rng(2)
W0 = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)]
GRADS = [[rng.normal(size=w.shape).astype(np.float32) * 3 for w in W0] for _ in range(5)]

CONFIGS = [
    ("SGD", {"learning_rate": 0.1}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}),
    ("Adam", {"learning_rate": 0.01}),
    ("Adam", {"learning_rate": 0.01, "amsgrad": True}),
    ("AdamW", {"learning_rate": 0.01, "weight_decay": 0.1}),
    ("RMSprop", {"learning_rate": 0.01}),
    ("RMSprop", {"learning_rate": 0.01, "momentum": 0.5}),
    ("RMSprop", {"learning_rate": 0.01, "momentum": 0.5, "centered": True}),
    ("Adagrad", {"learning_rate": 0.1}),
    ("Adam", {"learning_rate": 0.01, "clipnorm": 1.0}),
    ("SGD", {"learning_rate": 0.1, "clipvalue": 0.5}),
    ("SGD", {"learning_rate": 0.1, "global_clipnorm": 2.0}),
    ("SGD", {"learning_rate": 0.1, "weight_decay": 0.05}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, kw in CONFIGS]


def run_dlx(name, kwargs, kernels=True):
    dlx.backends.set_kernels_enabled(kernels)
    variables = [dlx.Variable(w.copy(), name=f"w{i}") for i, w in enumerate(W0)]
    optimizer = getattr(optimizers, name)(**kwargs)
    for grads in GRADS:
        optimizer.apply_gradients(zip([dlx.asarray(g) for g in grads], variables))
    return [dlx.to_numpy(v.value) for v in variables]


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_updates_match_keras(keras, config):
    name, kwargs = config
    dlx.set_backend("numpy")
    variables = [keras.Variable(w.copy()) for w in W0]
    optimizer = getattr(keras.optimizers, name)(**kwargs)
    for grads in GRADS:
        optimizer.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads], variables))
    expected = [keras.ops.convert_to_numpy(v) for v in variables]
    for got, want in zip(run_dlx(name, kwargs), expected):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_same_updates_on_every_backend_and_kernel_path(backend, config):
    name, kwargs = config
    got = run_dlx(name, kwargs, kernels=True)
    dlx.set_backend("numpy")
    generic = run_dlx(name, kwargs, kernels=False)
    for a, b in zip(got, generic):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_adam_matches_its_formula():
    w, g = W0[0].astype(np.float64), GRADS[0][0].astype(np.float64)
    v = dlx.Variable(w.copy())
    opt = optimizers.Adam(learning_rate=0.1, beta_1=0.8, beta_2=0.9, epsilon=1e-3)
    opt.apply_gradients([(dlx.asarray(g), v)])
    m1, v1 = 0.2 * g, 0.1 * g * g
    alpha = 0.1 * np.sqrt(1 - 0.9) / (1 - 0.8)
    np.testing.assert_allclose(
        dlx.to_numpy(v.value), w - alpha * m1 / (np.sqrt(v1) + 1e-3), rtol=1e-12
    )


def test_adam_default_epsilon_is_keras():
    assert optimizers.Adam().epsilon == 1e-7


def test_schedules():
    exp = schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    assert np.isclose(exp(10), 0.05) and np.isclose(exp(5), 0.1 * 0.5**0.5)
    step = schedules.StepDecay(0.1, step_size=10, drop_rate=0.5)
    assert step(9) == 0.1 and np.isclose(step(10), 0.05) and np.isclose(step(25), 0.025)
    pieces = schedules.PiecewiseConstantDecay([5, 10], [1.0, 0.5, 0.1])
    assert [pieces(s) for s in (0, 5, 6, 11)] == [1.0, 1.0, 0.5, 0.1]
    assert np.isclose(schedules.CosineDecay(1.0, 10)(10), 0.0)
    assert np.isclose(schedules.InverseTimeDecay(1.0, 1, 1.0)(1), 0.5)


def test_schedule_is_used_where_a_float_is():
    v = dlx.Variable(np.zeros(1))
    opt = optimizers.SGD(learning_rate=schedules.StepDecay(1.0, step_size=1, drop_rate=0.5))
    for _ in range(3):
        opt.apply_gradients([(dlx.asarray(np.ones(1)), v)])
    np.testing.assert_allclose(dlx.to_numpy(v.value), [-(1 + 0.5 + 0.25)])
    assert opt.iterations == 3 and np.isclose(opt.learning_rate, 0.125)


def test_schedule_matches_keras(keras):
    ours = schedules.ExponentialDecay(0.1, 7, 0.3, staircase=True)
    theirs = keras.optimizers.schedules.ExponentialDecay(0.1, 7, 0.3, staircase=True)
    for step in (0, 6, 7, 20):
        assert np.isclose(ours(step), float(theirs(step)))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="Unknown optimizer 'adamm'.*adam"):
        optimizers.get("adamm")
    with pytest.raises(ValueError, match="learning_rate"):
        optimizers.SGD(learning_rate=-1)
    with pytest.raises(ValueError, match="beta_1"):
        optimizers.Adam(beta_1=1.5)
    with pytest.raises(ValueError, match="at most one of clipnorm"):
        optimizers.SGD(clipnorm=1.0, clipvalue=1.0)
    v = dlx.Variable(np.zeros((2, 2)), name="w")
    with pytest.raises(ValueError, match=r"gradient of shape \(3,\).*'w' of shape \(2, 2\)"):
        optimizers.SGD().apply_gradients([(dlx.asarray(np.ones(3)), v)])


def test_none_gradients_are_skipped():
    v = dlx.Variable(np.ones(2))
    optimizers.Adam().apply_gradients([(None, v)])
    np.testing.assert_array_equal(dlx.to_numpy(v.value), [1.0, 1.0])


def test_numpy_adam_flushes_subnormal_moments_every_so_many_steps(monkeypatch):
    # without a compiler Adam runs on NumPy, which cannot set the CPU's flush-to-zero flags:
    # a decaying moment would stay subnormal (slow arithmetic) for hundreds of steps
    import itertools

    from dlx.backends import numpy_kernels

    monkeypatch.setattr(numpy_kernels, "_adam_steps", itertools.count(1))
    every = numpy_kernels.FLUSH_SUBNORMALS_EVERY
    tiny = np.finfo(np.float32).tiny
    n = 1 << 17  # large enough for the threaded path
    w, g = np.zeros(n, np.float32), np.zeros(n, np.float32)
    g[::2] = 1e-3  # these units learn; the others only decay
    m = np.full(n, 1e-39, np.float32)  # subnormal already
    v = np.full(n, 1e-30, np.float32)
    m_plain, v_plain, w_plain = m.copy(), v.copy(), w.copy()
    for step in range(1, every + 1):
        numpy_kernels.adam_update_many([w], [g], [m], [v], 1e-3, 0.9, 0.999, 1e-7)
        numpy_kernels._adam_update_all([w_plain], [g], [m_plain], [v_plain], 1e-3, 0.9, 0.999, 1e-7)
        if step < every:
            np.testing.assert_array_equal(m, m_plain)
    subnormal = (m_plain != 0) & (np.abs(m_plain) < tiny)
    assert subnormal.any(), "the test's moments never became subnormal"
    assert not np.any(m[subnormal]), "subnormal moments were not flushed"
    np.testing.assert_array_equal(m[~subnormal], m_plain[~subnormal])  # the rest untouched
    np.testing.assert_array_equal(v, v_plain)  # v = 1e-30 decays only to ~9e-31: normal
    np.testing.assert_array_equal(w, w_plain)
    flushed = np.array([1e-39, -1e-40, tiny, -tiny, 0.0, 1.0, np.nan], np.float32)
    numpy_kernels.flush_subnormals(flushed)
    np.testing.assert_array_equal(flushed[:6], [0, 0, tiny, -tiny, 0, 1])
    assert np.isnan(flushed[6])
