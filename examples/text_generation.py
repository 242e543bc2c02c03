"""A character-level LSTM learns a short story and writes more of it (many-to-many).

The text (examples/data/lighthouse.txt, written for this repository) is cut
into windows of ``seq_len`` characters; for every position the model predicts
the next character: Embedding -> LSTM(return_sequences=True) -> Dense over the
vocabulary at every time step. The loss is printed per epoch and falls from
about ln(vocabulary) ~ 3.4; then the model samples new text from a seed.

    python examples/text_generation.py
    python examples/text_generation.py --epochs 40 --units 256
"""

import argparse
import pathlib

import numpy as np

import dlx
from dlx import layers, losses

TEXT = pathlib.Path(__file__).parent / "data" / "lighthouse.txt"


def load_text(path=TEXT):
    text = path.read_text(encoding="utf-8")
    vocab = sorted(set(text))
    return text, vocab


def make_windows(encoded, seq_len, stride):
    """Inputs ``(n, seq_len)`` and next-character targets ``(n, seq_len)``."""
    starts = np.arange(0, len(encoded) - seq_len - 1, stride)
    x = np.stack([encoded[s : s + seq_len] for s in starts])
    y = np.stack([encoded[s + 1 : s + seq_len + 1] for s in starts])
    return x, y


def build_model(vocab_size, units=128, embedding=32):
    return dlx.Sequential(
        [
            layers.Input((None,), dtype="int32"),
            layers.Embedding(vocab_size, embedding),
            layers.LSTM(units, return_sequences=True),
            layers.Dense(vocab_size),
        ]
    )


def sample(model, seed, vocab, length=200, temperature=0.5, window=64, rng=None):
    """Extend ``seed`` by ``length`` characters drawn from the model's softmax."""
    rng = rng or np.random.default_rng(0)
    index = {c: i for i, c in enumerate(vocab)}
    out = list(seed)
    for _ in range(length):
        context = np.array([[index[c] for c in out[-window:]]])
        logits = dlx.to_numpy(model.predict_on_batch(context))[0, -1].astype(np.float64)
        p = np.exp((logits - logits.max()) / temperature)
        out.append(vocab[rng.choice(len(vocab), p=p / p.sum())])
    return "".join(out)


def main(epochs=15, units=128, seq_len=64, batch_size=32, verbose=1, sample_length=300):
    dlx.set_seed(0)
    text, vocab = load_text()
    encoded = np.array([vocab.index(c) for c in text], dtype=np.int64)
    x, y = make_windows(encoded, seq_len, stride=3)
    model = build_model(len(vocab), units)
    model.compile(
        optimizer=dlx.optimizers.Adam(5e-3),
        loss=losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    if verbose:
        print(f"{len(text)} characters, vocabulary of {len(vocab)}, {len(x)} windows of {seq_len}")
    history = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose)
    losses_per_epoch = history.history["loss"]
    if verbose:
        print("loss per epoch:", " ".join(f"{v:.3f}" for v in losses_per_epoch))
    generated = sample(model, "the keeper ", vocab, length=sample_length) if sample_length else ""
    if verbose and generated:
        print("--- sample (temperature 0.5) ---")
        print(generated)
    return losses_per_epoch, generated


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=64)
    args = parser.parse_args()
    main(args.epochs, args.units, args.seq_len)
