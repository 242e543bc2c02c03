"""Quick smoke runs of the functional-API examples (the full runs are the examples themselves)."""

import importlib.util
import pathlib

import numpy as np

import dlx

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"dlx_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_autoencoder_example_smoke():
    dlx.set_backend("numpy")
    error, baseline, history = _load("autoencoder").main(epochs=2, verbose=False)
    assert np.isfinite(error) and len(history.history["val_loss"]) == 2
    assert error < 0.2 and baseline > 0


def test_transformer_classifier_example_smoke():
    dlx.set_backend("numpy")
    module = _load("transformer_classifier")
    model = module.build(blocks=1)
    assert model.predict(np.zeros((3, 8, 8), np.float32), verbose=0).shape == (3, 10)
    names = [type(layer).__name__ for layer in model.layers]
    for expected in ("MultiHeadAttention", "LayerNormalization", "Add", "PositionalEmbedding"):
        assert expected in names
    accuracy, history = module.main(epochs=1, verbose=False)
    assert 0.0 <= accuracy <= 1.0 and len(history.history["loss"]) == 1
