"""mlp_train: Dense(512, relu) -> Dense(256, relu) -> Dense(10), softmax cross-entropy,
batch 128."""

import numpy as np

from . import torch_step_of


def _data(batch):
    rng = np.random.default_rng(0)
    return rng.random((batch, 784), dtype=np.float32), rng.integers(0, 10, batch)


def dlx_step(batch=128):
    import dlx
    from dlx import layers, losses

    dlx.set_seed(0)
    model = dlx.Sequential(
        [
            layers.Dense(512, activation="relu", input_shape=(784,)),
            layers.Dense(256, activation="relu"),
            layers.Dense(10),
        ]
    )
    model.compile(optimizer="adam", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(batch)
    x, y = dlx.asarray(x), dlx.asarray(y)
    return lambda: model.train_on_batch(x, y)


def torch_step(batch=128, device="cpu"):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = _data(batch)
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    return torch_step_of(model, optimizer, loss_fn, x, y)


WORKLOADS = {"mlp_train": (dlx_step, torch_step)}
