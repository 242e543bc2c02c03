"""The GAN of examples/gan.py: on fixed seeds, the discriminator step moves only the
discriminator and the generator step moves only the generator (freezing works)."""

import importlib.util
import pathlib

import numpy as np
import pytest

import dlx

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "gan.py"


@pytest.fixture(scope="module")
def gan_module():
    spec = importlib.util.spec_from_file_location("dlx_example_gan", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copies(weights):
    return [dlx.to_numpy(w.value).copy() for w in weights]


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def _changed(a, b):
    return all(not np.array_equal(x, y) for x, y in zip(a, b))


def _run(gan_module, real):
    dlx.set_seed(0)
    gan = gan_module.GAN(learning_rate=1e-2)
    g, d = gan.generator, gan.discriminator
    g(gan.noise(2))
    d(real[:2])
    g_before, d_before = _copies(g.trainable_weights), _copies(d.weights)

    d_loss = gan.discriminator_step(real)
    assert _same(g_before, _copies(g.trainable_weights)), "the D step changed the generator"
    assert _changed(d_before, _copies(d.weights)), "the D step left some D weight unchanged"
    assert all(w.grad is None for w in g.weights + d.weights)

    g_mid, d_mid = _copies(g.trainable_weights), _copies(d.weights)
    g_loss = gan.generator_step(len(real))
    assert _same(d_mid, _copies(d.weights)), "the G step changed the (frozen) discriminator"
    assert d.trainable and len(d.trainable_weights) == 6, "the discriminator was not unfrozen"
    assert _changed(g_mid, _copies(g.trainable_weights)), "the G step left a G weight unchanged"
    return d_loss, g_loss, _copies(g.weights) + _copies(d.weights)


def test_gan_steps_freeze_the_other_network(backend, gan_module):
    real = np.random.default_rng(0).random((16, 64)).astype(np.float32)
    first = _run(gan_module, real)
    second = _run(gan_module, real)
    assert first[:2] == second[:2]  # fixed seeds: identical losses and weights
    assert _same(first[2], second[2])
    assert all(np.isfinite(first[:2]))


def test_gan_example_smoke(gan_module, tmp_path):
    dlx.set_backend("numpy")
    out = tmp_path / "samples.png"
    gan, history, samples = gan_module.main(steps=3, batch_size=16, out=str(out), verbose=False)
    assert len(history) == 3 and samples.shape == (32, 8, 8)
    assert ((samples >= 0) & (samples <= 1)).all()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not out.exists()
    else:
        assert out.stat().st_size > 0
