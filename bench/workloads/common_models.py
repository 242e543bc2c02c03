"""More models people train on a CPU, beyond the four of WORKLOADS.md: each is one Adam step
(AdamW for ``mlp_layernorm``) on fixed random data, dlx against the same model in PyTorch.

    python bench/compare.py mlp_bn_dropout embed_gru cnn_bn mlp_softmax_cce conv1d_text \
        mlp_layernorm cnn_gap_dropout

| name | model | batch |
|---|---|---|
| ``mlp_bn_dropout`` | Dense(512) BN ReLU Dropout(0.2) Dense(256) BN ReLU Dropout Dense(10) | 128 |
| ``embed_gru`` | Embedding(5000, 64) on 50 tokens, GRU(64), Dense(2) | 64 |
| ``cnn_bn`` | Conv2D(32, 3) BN ReLU MaxPool, Conv2D(64, 3) BN ReLU MaxPool, Dense(10) | 64 |
| ``mlp_softmax_cce`` | Dense(128, tanh), Dense(10, softmax), categorical cross-entropy | 128 |
| ``conv1d_text`` | Embedding(5000, 64), 100 tokens, Conv1D(64, 5, relu), GlobalMax, sigmoid | 64 |
| ``mlp_layernorm`` | (Dense(256) LayerNorm GELU) x 2, Dense(10) | 128 |
| ``cnn_gap_dropout`` | 32x32x3: Conv2D(32, 3) MaxPool Conv2D(64, 3) GAP Dropout Dense | 64 |

They are not targets, only a watch on what the contract's workloads leave out: each
found a kernel missing the first time it was run (2026-12-03), see bench/RESULTS.md.
``batch`` is the size used whatever ``compare.py`` passes, so the rows stay comparable.
"""

import numpy as np

from . import torch_step_of

BATCHES = {
    "mlp_bn_dropout": 128,
    "embed_gru": 64,
    "cnn_bn": 64,
    "mlp_softmax_cce": 128,
    "conv1d_text": 64,
    "mlp_layernorm": 128,
    "cnn_gap_dropout": 64,
}


def _rng(seed):
    return np.random.default_rng(seed)


def _data(name):
    """Inputs and labels (integer class labels; one-hot or float where the loss wants them)."""
    batch = BATCHES[name]
    if name in ("mlp_bn_dropout", "mlp_softmax_cce"):
        return _rng(0).random((batch, 784), dtype=np.float32), _rng(1).integers(0, 10, batch)
    if name == "embed_gru":
        return _rng(0).integers(0, 5000, (batch, 50)), _rng(1).integers(0, 2, batch)
    if name == "cnn_bn":
        return _rng(0).random((batch, 28, 28, 1), dtype=np.float32), _rng(1).integers(0, 10, batch)
    if name == "conv1d_text":
        return _rng(0).integers(0, 5000, (batch, 100)), _rng(1).integers(0, 2, batch)
    if name == "mlp_layernorm":
        return _rng(0).random((batch, 256), dtype=np.float32), _rng(1).integers(0, 10, batch)
    return _rng(0).random((batch, 32, 32, 3), dtype=np.float32), _rng(1).integers(0, 10, batch)


def _dlx_model(name):
    from dlx import layers as L

    if name == "mlp_bn_dropout":
        return [
            L.Dense(512, input_shape=(784,)),
            L.BatchNormalization(),
            L.Activation("relu"),
            L.Dropout(0.2),
            L.Dense(256),
            L.BatchNormalization(),
            L.Activation("relu"),
            L.Dropout(0.2),
            L.Dense(10),
        ]
    if name == "embed_gru":
        return [L.Embedding(5000, 64, input_shape=(50,)), L.GRU(64), L.Dense(2)]
    if name == "cnn_bn":
        return [
            L.Conv2D(32, 3, input_shape=(28, 28, 1)),
            L.BatchNormalization(),
            L.Activation("relu"),
            L.MaxPooling2D(2),
            L.Conv2D(64, 3),
            L.BatchNormalization(),
            L.Activation("relu"),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(10),
        ]
    if name == "mlp_softmax_cce":
        return [L.Dense(128, activation="tanh", input_shape=(784,)), L.Dense(10, "softmax")]
    if name == "conv1d_text":
        return [
            L.Embedding(5000, 64, input_shape=(100,)),
            L.Conv1D(64, 5, activation="relu"),
            L.GlobalMaxPooling1D(),
            L.Dense(1, activation="sigmoid"),
        ]
    if name == "mlp_layernorm":
        return [
            L.Dense(256, input_shape=(256,)),
            L.LayerNormalization(),
            L.Activation("gelu"),
            L.Dense(256),
            L.LayerNormalization(),
            L.Activation("gelu"),
            L.Dense(10),
        ]
    return [
        L.Conv2D(32, 3, padding="same", activation="relu", input_shape=(32, 32, 3)),
        L.MaxPooling2D(2),
        L.Conv2D(64, 3, padding="same", activation="relu"),
        L.GlobalAveragePooling2D(),
        L.Dropout(0.3),
        L.Dense(10),
    ]


def _torch_model(name):
    import torch
    from torch import nn

    if name == "mlp_bn_dropout":
        return nn.Sequential(
            nn.Linear(784, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(512, 256),
            nn.BatchNorm1d(256),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(256, 10),
        )
    if name == "embed_gru":

        class EmbedGRU(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed, self.gru = nn.Embedding(5000, 64), nn.GRU(64, 64, batch_first=True)
                self.out = nn.Linear(64, 2)

            def forward(self, x):
                return self.out(self.gru(self.embed(x))[1][0])

        return EmbedGRU()
    if name == "cnn_bn":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(1600, 10),
        )
    if name == "mlp_softmax_cce":  # softmax folded into the loss, as PyTorch users write it
        return nn.Sequential(nn.Linear(784, 128), nn.Tanh(), nn.Linear(128, 10))
    if name == "conv1d_text":

        class Conv1DText(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed, self.conv = nn.Embedding(5000, 64), nn.Conv1d(64, 64, 5)
                self.out = nn.Linear(64, 1)

            def forward(self, x):
                h = torch.relu(self.conv(self.embed(x).transpose(1, 2)))
                return torch.sigmoid(self.out(h.amax(dim=2)))[:, 0]

        return Conv1DText()
    if name == "mlp_layernorm":
        return nn.Sequential(
            nn.Linear(256, 256),
            nn.LayerNorm(256, eps=1e-3),
            nn.GELU(),
            nn.Linear(256, 256),
            nn.LayerNorm(256, eps=1e-3),
            nn.GELU(),
            nn.Linear(256, 10),
        )
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(64, 10),
    )


def _dlx_builder(name):
    def build(batch=None):
        import dlx
        from dlx import losses

        dlx.set_seed(0)
        model = dlx.Sequential(_dlx_model(name))
        x, y = _data(name)
        if name == "mlp_softmax_cce":
            loss, y = "categorical_crossentropy", np.eye(10, dtype=np.float32)[y]
        elif name == "conv1d_text":
            loss, y = "binary_crossentropy", y.astype(np.float32)[:, None]
        else:
            loss = losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer="adamw" if name == "mlp_layernorm" else "adam", loss=loss)
        x, y = dlx.asarray(x), dlx.asarray(y)
        return lambda: model.train_on_batch(x, y)

    return build


def _torch_builder(name):
    def build(batch=None, device="cpu"):
        import torch

        torch.manual_seed(0)
        model = _torch_model(name).to(device)
        x, y = _data(name)
        if x.ndim == 4:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # NCHW, PyTorch's layout
        x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        if name == "conv1d_text":
            y, loss_fn = y.float(), torch.nn.functional.binary_cross_entropy
        else:
            loss_fn = torch.nn.functional.cross_entropy
        if name == "mlp_layernorm":  # Keras's AdamW decays weights by 0.004
            optimizer = torch.optim.AdamW(model.parameters(), 1e-3, eps=1e-7, weight_decay=0.004)
        else:
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)

        return torch_step_of(model, optimizer, loss_fn, x, y)

    return build


WORKLOADS = {name: (_dlx_builder(name), _torch_builder(name)) for name in BATCHES}
