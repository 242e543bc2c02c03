"""Training you can watch and trust: callbacks, crash-safe checkpoints, exact resume, plots.

    python examples/callbacks_and_checkpoints.py               # writes into ./dlx_run/
    python examples/callbacks_and_checkpoints.py --out /tmp/run --epochs 30

Trains a small MLP on scikit-learn's bundled 8x8 digits (no download) with
- ``ModelCheckpoint`` keeping the best model (by validation loss) in ``best.dlx``
  and the latest epoch in ``last.dlx`` (each written to a temporary file,
  fsynced and renamed: a crash never leaves a torn checkpoint);
- ``EarlyStopping(restore_best_weights=True)``, ``ReduceLROnPlateau`` and a
  ``CSVLogger`` whose ``log.csv`` any spreadsheet or the csv module reads.

Then it shows that training interrupted after a few epochs and resumed from
``last.dlx`` (weights, Adam moments and step count, epoch and random stream
restored) ends with weights identical to an uninterrupted run, and draws the
loss/accuracy curves into ``curves.png`` (needs matplotlib: ``pip install "dlx[plot]"``).
"""

import argparse
import csv
import os

import numpy as np

import dlx
from dlx import callbacks, layers


def build():
    model = dlx.Sequential(
        [
            layers.Dense(64, activation="relu", input_shape=(64,)),
            layers.Dropout(0.2),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=dlx.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train_with_callbacks(out, data, epochs, verbose=2):
    (x_train, y_train), (x_test, y_test) = data
    dlx.set_seed(0)
    model = build()
    history = model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=32,
        validation_split=0.2,
        verbose=verbose,
        callbacks=[
            callbacks.ModelCheckpoint(
                os.path.join(out, "best.dlx"), monitor="val_loss", save_best_only=True
            ),
            callbacks.ModelCheckpoint(os.path.join(out, "last.dlx")),
            callbacks.EarlyStopping(monitor="val_loss", patience=4, restore_best_weights=True),
            callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2),
            callbacks.CSVLogger(os.path.join(out, "log.csv")),
        ],
    )
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    best = dlx.load_model(os.path.join(out, "best.dlx"))
    print(
        f"test accuracy {accuracy:.3f} (best checkpoint from epoch {best.initial_epoch}: "
        f"{best.evaluate(x_test, y_test, verbose=0)[1]:.3f})"
    )
    with open(os.path.join(out, "log.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    print(f"log.csv: {len(rows)} rows, columns {list(rows[0])}")
    try:
        history.plot(os.path.join(out, "curves.png"))
        print(f"curves: {os.path.join(out, 'curves.png')}")
    except ImportError as error:
        print(f"no plot: {error}")
    return history


def resume_equals_uninterrupted(out, data, epochs=6, stop_after=3):
    (x_train, y_train), _ = data
    fit = dict(batch_size=32, validation_split=0.2, verbose=0)

    dlx.set_seed(1)
    uninterrupted = build()
    uninterrupted.fit(x_train, y_train, epochs=epochs, **fit)

    dlx.set_seed(1)
    crashed = build()
    path = os.path.join(out, "resume.dlx")
    crashed.fit(
        x_train, y_train, epochs=stop_after, callbacks=[callbacks.ModelCheckpoint(path)], **fit
    )
    del crashed  # ... the process dies here; a new one starts:

    dlx.set_seed(12345)
    resumed = dlx.load_model(path)
    resumed.fit(x_train, y_train, epochs=epochs, initial_epoch=resumed.initial_epoch, **fit)
    same = all(
        np.array_equal(a, b) for a, b in zip(uninterrupted.get_weights(), resumed.get_weights())
    )
    print(
        f"resumed at epoch {stop_after} of {epochs}: weights identical to the uninterrupted "
        f"run: {same}"
    )
    return same


def main(out="dlx_run", epochs=25, verbose=2):
    os.makedirs(out, exist_ok=True)
    data = dlx.data.load_digits(image_shape=(64,))
    history = train_with_callbacks(out, data, epochs, verbose)
    same = resume_equals_uninterrupted(out, data)
    return history, same


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="dlx_run", help="folder for checkpoints, log and plot")
    parser.add_argument("--epochs", type=int, default=25)
    args = parser.parse_args()
    main(args.out, args.epochs)
