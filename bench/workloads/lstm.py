"""lstm_train: LSTM(64, return_sequences=True) -> LSTM(64) -> Dense(10), softmax cross-entropy,
batch 64, input (28, 28): 28 steps of 28 features."""

import numpy as np

from . import torch_step_of


def _data(batch):
    rng = np.random.default_rng(0)
    return rng.random((batch, 28, 28), dtype=np.float32), rng.integers(0, 10, batch)


def dlx_step(batch=64):
    import dlx
    from dlx import layers, losses

    dlx.set_seed(0)
    model = dlx.Sequential(
        [
            layers.LSTM(64, return_sequences=True, input_shape=(28, 28)),
            layers.LSTM(64),
            layers.Dense(10),
        ]
    )
    model.compile(optimizer="adam", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(batch)
    x, y = dlx.asarray(x), dlx.asarray(y)
    return lambda: model.train_on_batch(x, y)


def torch_step(batch=64, device="cpu"):
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm1 = torch.nn.LSTM(28, 64, batch_first=True)
            self.lstm2 = torch.nn.LSTM(64, 64, batch_first=True)
            self.dense = torch.nn.Linear(64, 10)

        def forward(self, x):
            y, _ = self.lstm1(x)
            _, (h, _) = self.lstm2(y)
            return self.dense(h[-1])

    torch.manual_seed(0)
    model = Net().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = _data(batch)
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    return torch_step_of(model, optimizer, loss_fn, x, y)


WORKLOADS = {"lstm_train": (dlx_step, torch_step)}
