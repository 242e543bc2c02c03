"""Quick smoke runs of the sequence examples (the full runs are in their docstrings)."""

import importlib.util
import pathlib

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sequence_classification_example_learns():
    accuracy = _load("sequence_classification").main(epochs=3, verbose=0)
    assert accuracy > 0.6  # the full 25 epochs reach about 0.97


def test_text_generation_example_loss_falls_and_samples():
    module = _load("text_generation")
    losses, text = module.main(epochs=2, units=32, seq_len=16, verbose=0, sample_length=20)
    assert losses[1] < losses[0] < 3.6
    assert text.startswith("the keeper ") and len(text) == len("the keeper ") + 20
