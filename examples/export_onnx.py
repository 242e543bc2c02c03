"""Train a small CNN on the 8x8 digits, export it to ONNX and serve it with ONNX Runtime.

Shows the interop features: ``dlx.onnx.export`` (checked here against
``model.predict``), and a PyTorch tensor fed straight to ``model.predict`` through
DLPack when torch is installed.

    pip install -e ".[onnx,examples]"
    python examples/export_onnx.py [model.onnx]
"""

import os
import sys
import tempfile

import numpy as np

import dlx
from dlx import layers


def build():
    return dlx.Sequential(
        [
            layers.Input((8, 8, 1)),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dropout(0.2),
            layers.Dense(10, activation="softmax"),
        ]
    )


def main(path=None, epochs=8, verbose=True, seed=0):
    import onnxruntime as ort

    dlx.set_seed(seed)
    (x_train, y_train), (x_test, y_test) = dlx.data.load_digits()
    model = build()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)

    path = path or os.path.join(tempfile.mkdtemp(), "digits_cnn.onnx")
    dlx.onnx.export(model, path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    probs = session.run(None, {input_name: x_test.astype(np.float32)})[0]
    expected = dlx.to_numpy(model.predict(x_test, verbose=0))
    max_diff = float(np.max(np.abs(probs - expected)))
    onnx_accuracy = float(np.mean(probs.argmax(axis=1) == y_test))
    if verbose:
        print(f"dlx test accuracy {accuracy:.3f}; ONNX Runtime accuracy {onnx_accuracy:.3f}")
        print(f"wrote {path} ({os.path.getsize(path)} bytes); max |onnx - dlx| = {max_diff:.2e}")
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:  # a torch tensor goes in without a copy (DLPack)
        from_torch = dlx.to_numpy(model.predict(torch.from_numpy(x_test[:4]), verbose=0))
        if verbose:
            print("predict on a torch tensor:", from_torch.argmax(axis=1), "labels", y_test[:4])
    return accuracy, onnx_accuracy, max_diff


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
