"""Keras 3 itself as the reference for sequence semantics: masks carried forward,
``go_backwards`` output order, GRU ``reset_after=False`` (no PyTorch equivalent),
Bidirectional merges and states.

Keras runs in a subprocess (``KERAS_BACKEND=torch``) on the same weights and
inputs; the test is skipped when keras or torch is not installed.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import to_host

import dlx
from dlx import layers

CASES = [
    ("LSTM", {"units": 4, "return_sequences": True}, None),
    ("LSTM", {"units": 4, "return_sequences": True, "go_backwards": True}, "mask"),
    ("LSTM", {"units": 4, "return_state": True}, "mask"),
    ("GRU", {"units": 4, "return_sequences": True}, "mask"),
    ("GRU", {"units": 4, "return_sequences": True, "reset_after": False}, None),
    (
        "GRU",
        {"units": 4, "return_sequences": True, "reset_after": False, "go_backwards": True},
        "mask",
    ),
    ("SimpleRNN", {"units": 4, "return_sequences": True, "go_backwards": True}, "mask"),
    ("GRU", {"units": 4, "zero_output_for_mask": True, "go_backwards": True}, "mask"),
    ("LSTM", {"units": 4, "zero_output_for_mask": True, "return_sequences": True}, "mask"),
    (
        "LSTM",
        {
            "units": 3,
            "return_sequences": True,
            "activation": "relu",
            "recurrent_activation": "hard_sigmoid",
        },
        None,
    ),
]
for _mode in ["concat", "sum", "mul", "ave"]:
    CASES.append(
        (
            "Bidirectional",
            {"merge_mode": _mode, "layer": ("LSTM", {"units": 3, "return_sequences": True})},
            "mask",
        )
    )
CASES.append(
    (
        "Bidirectional",
        {"merge_mode": "concat", "layer": ("GRU", {"units": 3, "return_state": True})},
        "mask",
    )
)

SCRIPT = r"""
import json, sys
import numpy as np
import keras
data = np.load(sys.argv[1], allow_pickle=False)
cases = json.loads(str(data["cases"]))
out = {}
for k, (cls, kwargs, masked) in enumerate(cases):
    if cls == "Bidirectional":
        inner_cls, inner_kwargs = kwargs.pop("layer")
        inner = getattr(keras.layers, inner_cls)(**inner_kwargs)
        layer = keras.layers.Bidirectional(inner, **kwargs)
    else:
        layer = getattr(keras.layers, cls)(**kwargs)
    x = data[f"x{k}"]
    mask = data[f"m{k}"] if masked else None
    layer(x)
    layer.set_weights([data[f"w{k}_{i}"] for i in range(int(data[f"n{k}"]))])
    y = layer(x, mask=mask)
    ys = y if isinstance(y, (list, tuple)) else [y]
    for i, v in enumerate(ys):
        out[f"y{k}_{i}"] = keras.ops.convert_to_numpy(v)
    out[f"c{k}"] = np.array(len(ys))
np.savez(sys.argv[2], **out)
"""


def _make(cls, kwargs):
    kwargs = dict(kwargs)
    if cls == "Bidirectional":
        inner_cls, inner_kwargs = kwargs.pop("layer")
        return layers.Bidirectional(getattr(layers, inner_cls)(**inner_kwargs), **kwargs)
    return getattr(layers, cls)(**kwargs)


def test_matches_keras(tmp_path):
    for module in ("keras", "torch"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    dlx.set_backend("numpy")
    dlx.set_seed(0)
    rng = np.random.default_rng(0)
    mask = np.array([[1, 1, 0, 1, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
    arrays, expected = {}, []
    for k, (cls, kwargs, masked) in enumerate(CASES):
        x = rng.standard_normal((3, 5, 2)).astype("float32")
        layer = _make(cls, kwargs)
        layer(x)
        weights = [w + rng.normal(0, 0.3, w.shape).astype("float32") for w in layer.get_weights()]
        layer.set_weights(weights)
        y = layer(x, mask=dlx.asarray(mask) if masked else None)
        expected.append([to_host(v) for v in (y if isinstance(y, list) else [y])])
        arrays.update({f"x{k}": x, f"m{k}": mask, f"n{k}": np.array(len(weights))})
        arrays.update({f"w{k}_{i}": w for i, w in enumerate(weights)})
    arrays["cases"] = np.array(json.dumps(CASES))
    np.savez(tmp_path / "in.npz", **arrays)
    (tmp_path / "ref.py").write_text(SCRIPT)
    env = {**os.environ, "KERAS_BACKEND": "torch", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "ref.py"),
            str(tmp_path / "in.npz"),
            str(tmp_path / "out.npz"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ref = np.load(tmp_path / "out.npz")
    for k, (case, outs) in enumerate(zip(CASES, expected)):
        assert int(ref[f"c{k}"]) == len(outs), case
        for i, value in enumerate(outs):
            np.testing.assert_allclose(
                value, ref[f"y{k}_{i}"], rtol=1e-4, atol=1e-5, err_msg=f"case {case}, output {i}"
            )
