"""cnn_train / cnn_infer256: Conv2D(32, 3x3, relu) -> MaxPooling2D(2) -> Conv2D(64, 3x3, relu)
-> MaxPooling2D(2) -> Flatten -> Dense(64, relu) -> Dense(10); softmax cross-entropy.

``cnn_train``: one Adam step on a batch of 64; ``cnn_infer256``: a forward pass
on 256 images (28, 28, 1). PyTorch runs the same model in NCHW (its native layout).
"""

import numpy as np

from . import torch_step_of


def _data(batch):
    rng = np.random.default_rng(0)
    return rng.random((batch, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, batch)


def _dlx_model():
    import dlx
    from dlx import layers

    dlx.set_seed(0)
    return dlx.Sequential(
        [
            layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(10),
        ]
    )


def _torch_model():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(64 * 5 * 5, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )


def dlx_train_step(batch=64):
    import dlx
    from dlx import losses

    model = _dlx_model()
    model.compile(optimizer="adam", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(batch)
    x, y = dlx.asarray(x), dlx.asarray(y)
    return lambda: model.train_on_batch(x, y)


def torch_train_step(batch=64, device="cpu"):
    import torch

    model = _torch_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = _data(batch)
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
    y = torch.from_numpy(y).to(device)

    return torch_step_of(model, optimizer, loss_fn, x, y)


def dlx_infer_step(batch=256):
    import dlx

    model = _dlx_model()
    x, _ = _data(batch)
    x = dlx.asarray(x)
    return lambda: model.predict_on_batch(x)


def torch_infer_step(batch=256, device="cpu"):
    import torch

    model = _torch_model().to(device).eval()
    x, _ = _data(batch)
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)

    def step():
        with torch.no_grad():
            return model(x)

    return step


WORKLOADS = {
    "cnn_train": (dlx_train_step, torch_train_step),
    "cnn_infer256": (dlx_infer_step, torch_infer_step),
}
